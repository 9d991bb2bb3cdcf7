import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sdnotify import SystemdNotifier, socket_address


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_no_socket_is_a_no_op() -> None:
    n = SystemdNotifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False


def test_ready_status_stopping_on_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert n.ready("0 active calls")
    assert sock.recv(4096) == b"READY=1\nSTATUS=0 active calls"
    assert n.status("3 active\ncalls")
    assert sock.recv(4096) == b"STATUS=3 active calls"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert not n.watchdog()  # no WATCHDOG_USEC: nothing sent
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"@orga-test-{uuid.uuid4().hex}"
    assert socket_address(name) == "\0" + name[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(socket_address(name))
    sock.settimeout(2)
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_watchdog_interval_and_pid() -> None:
    me = str(os.getpid())
    assert SystemdNotifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 15.0
    assert SystemdNotifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}
                           ).watchdog_interval_s == 15.0
    assert SystemdNotifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
                           ).watchdog_interval_s is None
    assert SystemdNotifier({"WATCHDOG_USEC": "junk"}).watchdog_interval_s is None


async def test_watchdog_loop_pings_with_status(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sock.setblocking(False)
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    task = asyncio.create_task(n.run_watchdog(lambda: "2 active calls"))
    loop = asyncio.get_running_loop()
    first = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
    second = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert first == second == b"WATCHDOG=1\nSTATUS=2 active calls"
    n.close()


def test_send_failure_is_logged_not_raised(tmp_path: Path) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.ready() is False
    n.close()
