"""Worker N of a shared config: its own SIP port, HTTP port and RTP slice; layouts that clash."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from gateway.config import (
    Config,
    ConfigError,
    HttpConfig,
    LimitsConfig,
    RtpConfig,
    SipConfig,
    WorkersConfig,
    parse_config,
)
from gateway.workers import worker_config

BASE = Config(sip=SipConfig(port=5071), http=HttpConfig(listen="127.0.0.1:9090"),
              rtp=RtpConfig(port_min=10000, port_max=10999), limits=LimitsConfig(max_calls=50))
ENV = {"ORGA_API_KEY": "sk_orga_ai_test"}


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_workers_never_overlap(count: int) -> None:
    base = replace(BASE, workers=WorkersConfig(count=count))
    configs = [worker_config(base, n) for n in range(1, count + 1)]
    assert [c.sip.port for c in configs] == list(range(5071, 5071 + count))
    assert [c.http.port for c in configs] == list(range(9090, 9090 + count))
    for a, b in itertools.combinations(configs, 2):
        assert a.rtp.port_max < b.rtp.port_min  # disjoint, in order
    for c in configs:
        assert c.rtp.port_min % 2 == 0 and (c.rtp.port_max - c.rtp.port_min + 1) % 2 == 0
        assert BASE.rtp.port_min <= c.rtp.port_min and c.rtp.port_max <= BASE.rtp.port_max
        assert c.rtp.call_capacity == ((1000 // count) & ~1) // 2  # 1000 ports, even slices
        assert (c.orga, c.limits, c.trunks, c.routes) == (BASE.orga, BASE.limits, BASE.trunks,
                                                          BASE.routes)


def test_worker_one_of_one_is_the_config_itself() -> None:
    assert worker_config(BASE, 1) == BASE
    with pytest.raises(ValueError, match=r"workers\.count"):
        worker_config(BASE, 2)


def test_ephemeral_http_port_stays_ephemeral() -> None:
    cfg = Config(http=HttpConfig(listen="127.0.0.1:0"), workers=WorkersConfig(count=2))
    assert worker_config(cfg, 2).http.listen == "127.0.0.1:0"


def problems(raw: dict[str, Any]) -> list[str]:
    try:
        parse_config(raw, ENV)
    except ConfigError as exc:
        return list(exc.problems)
    return []


@pytest.mark.parametrize(("raw", "expected"), [
    ({"workers": {"count": 4}, "sip": {"port": 5071}}, []),
    ({"workers": {"count": 30}},
     ["workers.count: 30 workers split the RTP range into 32 ports each (16 calls), fewer than "
      "limits.max_calls = 50 — widen rtp.port_min-port_max to at least 3000 ports or lower "
      "limits.max_calls"]),
    ({"workers": {"count": 2}, "sip": {"port": 9089}, "limits": {"max_calls": 10}},
     ["http.listen: the workers' HTTP ports 9090-9091 overlap their SIP ports 9089-9090 — move "
      "one of them"]),
    ({"workers": {"count": 2}, "sip": {"port": 9999}, "limits": {"max_calls": 10}},
     ["sip.port: ports 9999-10000 of 2 workers overlap the RTP range 10000-10999 — move them "
      "outside it"]),
    ({"workers": {"count": 2}, "sip": {"port": 65535}, "limits": {"max_calls": 10}},
     ["sip.port: 2 workers need ports 65535-65536, past 65535 — use a lower sip.port"]),
    ({"workers": {"count": 0}}, ["workers.count: 0 is out of range — use a value from 1 to 64"]),
])
def test_check_config_reports_layouts_that_cannot_run(raw: dict[str, Any],
                                                      expected: list[str]) -> None:
    assert problems(raw) == expected
