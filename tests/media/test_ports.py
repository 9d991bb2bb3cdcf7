import pytest

from gateway.clock import FakeClock
from gateway.media.ports import PortPool, PortsExhausted


def test_even_ports_only_and_exhaustion() -> None:
    pool = PortPool(41001, 41009, quarantine_s=5.0, clock=FakeClock())
    ports = [pool.acquire() for _ in range(4)]
    assert ports == [41002, 41004, 41006, 41008]
    assert pool.free_count == 0
    with pytest.raises(PortsExhausted) as info:
        pool.acquire()
    assert info.value.outcome.disposition.status == 503


def test_quarantine_keeps_released_port_out_of_use() -> None:
    clock = FakeClock()
    pool = PortPool(41000, 41002, quarantine_s=5.0, clock=clock)
    a = pool.acquire()
    b = pool.acquire()
    pool.release(a)
    pool.release(a)  # idempotent
    assert pool.free_count == 0
    with pytest.raises(PortsExhausted):
        pool.acquire()
    clock.advance(4.9)
    with pytest.raises(PortsExhausted):
        pool.acquire()
    clock.advance(0.2)
    assert pool.acquire() == a
    pool.release(b)
    assert pool.in_use_count == 1


def test_reuse_order_prefers_longest_free() -> None:
    clock = FakeClock()
    pool = PortPool(41000, 41006, quarantine_s=1.0, clock=clock)
    first = pool.acquire()
    pool.release(first)
    clock.advance(2)
    # The released port goes to the back: fresh ports are used first.
    assert pool.acquire() != first


@pytest.mark.parametrize(("lo", "hi"), [(0, 10), (10, 5), (41001, 41001)])
def test_bad_ranges(lo: int, hi: int) -> None:
    with pytest.raises(ValueError):
        PortPool(lo, hi, 1.0, FakeClock())
