"""Several workers on one host from one config: what worker N of `count` binds.

One worker is one Python process and one event loop, so a host with several cores runs several
workers behind a SIP load balancer (deploy/kamailio/). They share one config file; worker N
(1-based, the systemd instance of `orga-sip-gateway@N`) derives its own sockets from it:

- SIP:  `sip.port + N - 1` (the balancer's dispatcher list names these ports);
- HTTP: the port of `http.listen` + N - 1 (each worker its own /metrics and /ready);
- RTP:  the N-th of `count` equal, even-aligned slices of `rtp.port_min`-`rtp.port_max`.

`layout_problems` is what the config loader (and so `check-config` and `run`) reports for a
layout that cannot work: slices too small for `limits.max_calls`, ports past 65535, and any
overlap between the workers' SIP ports, HTTP ports and RTP slices. The rest of the file is
shared as is. `workers.count` is the number of workers; `run --worker N` picks one.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.config.schema import Config, HttpConfig, LimitsConfig, RtpConfig, SipConfig


def rtp_slice(rtp: RtpConfig, index: int, count: int) -> tuple[int, int]:
    """(port_min, port_max) of worker `index` (1-based) of `count`: even-aligned equal slices."""
    first = rtp.port_min + (rtp.port_min % 2)
    per_worker = ((rtp.port_max - first + 1) // count) & ~1
    low = first + (index - 1) * per_worker
    return low, low + per_worker - 1


def worker_config(config: Config, index: int) -> Config:
    """The config worker `index` (1-based) of `workers.count` runs with."""
    count = config.workers.count
    if not 1 <= index <= count:
        raise ValueError(f"worker {index} is not in 1..{count} (workers.count)")
    offset = index - 1
    host, port = config.http.host, config.http.port
    listen = config.http.listen if port == 0 else _hostport(host, port + offset)
    low, high = rtp_slice(config.rtp, index, count)
    return replace(
        config,
        sip=replace(config.sip, port=config.sip.port + offset),
        http=replace(config.http, listen=listen),
        rtp=replace(config.rtp, port_min=low, port_max=high),
    )


def layout_problems(sip: SipConfig, rtp: RtpConfig, http: HttpConfig, limits: LimitsConfig,
                    count: int) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for a worker layout that cannot run (empty when it can)."""
    if count <= 1:
        return []
    out: list[tuple[str, str, str]] = []
    sip_ports = range(sip.port, sip.port + count)
    http_ports = range(http.port, http.port + count) if http.port else range(0)
    if sip_ports[-1] > 65535:
        out.append(("sip.port", f"{count} workers need ports {sip_ports[0]}-{sip_ports[-1]}, "
                    "past 65535", "use a lower sip.port"))
    if http_ports and http_ports[-1] > 65535:
        out.append(("http.listen", f"{count} workers need ports {http_ports[0]}-"
                    f"{http_ports[-1]}, past 65535", "use a lower port"))
    low, high = rtp_slice(rtp, 1, count)
    calls = (high - low + 1) // 2
    if calls < limits.max_calls:
        out.append(("workers.count", f"{count} workers split the RTP range into "
                    f"{high - low + 1} ports each ({calls} calls), fewer than limits.max_calls "
                    f"= {limits.max_calls}", f"widen rtp.port_min-port_max to at least "
                    f"{2 * limits.max_calls * count} ports or lower limits.max_calls"))
    rtp_low, rtp_high = low, rtp_slice(rtp, count, count)[1]
    if set(sip_ports) & set(http_ports):
        out.append(("http.listen", f"the workers' HTTP ports {http_ports[0]}-{http_ports[-1]} "
                    f"overlap their SIP ports {sip_ports[0]}-{sip_ports[-1]}",
                    "move one of them"))
    for key, ports in (("sip.port", sip_ports), ("http.listen", http_ports)):
        if ports and ports[0] <= rtp_high and rtp_low <= ports[-1]:
            out.append((key, f"ports {ports[0]}-{ports[-1]} of {count} workers overlap the RTP "
                        f"range {rtp_low}-{rtp_high}", "move them outside it"))
    return out


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
