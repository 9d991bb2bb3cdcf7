"""Worker N of a shared config: its own SIP port, HTTP port and RTP slice; layouts that clash."""

from __future__ import annotations

import itertools

import pytest

from gateway.config import Config, HttpConfig, LimitsConfig, RtpConfig, SipConfig
from gateway.workers import problems, worker_config

BASE = Config(sip=SipConfig(port=5071), http=HttpConfig(listen="127.0.0.1:9090"),
              rtp=RtpConfig(port_min=10000, port_max=10999), limits=LimitsConfig(max_calls=50))


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_workers_never_overlap(count: int) -> None:
    configs = [worker_config(BASE, n, count) for n in range(1, count + 1)]
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
    assert problems(BASE, count) == []


def test_worker_one_of_one_is_the_config_itself() -> None:
    assert worker_config(BASE, 1, 1) == BASE
    with pytest.raises(ValueError):
        worker_config(BASE, 3, 2)


def test_ephemeral_http_port_stays_ephemeral() -> None:
    cfg = Config(http=HttpConfig(listen="127.0.0.1:0"))
    assert worker_config(cfg, 2, 2).http.listen == "127.0.0.1:0"


@pytest.mark.parametrize(("config", "count", "expected"), [
    (BASE, 30, ["rtp.port_min/port_max: split over 30 workers each gets 32 ports (16 calls), "
                "fewer than limits.max_calls = 50 — widen the range to at least 3000 ports or "
                "lower limits.max_calls"]),
    (Config(sip=SipConfig(port=9089), http=HttpConfig(listen="127.0.0.1:9090"),
            limits=LimitsConfig(max_calls=10)), 2,
     ["http.listen: worker HTTP ports 9090-9091 overlap the SIP ports 9089-9090 — move one "
      "of them"]),
    (Config(sip=SipConfig(port=10500), limits=LimitsConfig(max_calls=10)), 2,
     ["sip.port: ports 10500-10501 of 2 workers overlap the RTP range 10000-10999 — move them "
      "outside it"]),
    (Config(sip=SipConfig(port=65535), limits=LimitsConfig(max_calls=10)), 2,
     ["sip.port: 2 workers need ports 65535-65536, past 65535 — use a lower sip.port"]),
])
def test_layouts_that_cannot_run_are_reported(config: Config, count: int,
                                              expected: list[str]) -> None:
    assert problems(config, count) == expected
