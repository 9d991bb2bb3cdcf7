"""Several workers on one host from one config: what worker N of `count` binds.

One worker is one Python process and one event loop, so a host with several cores runs several
workers behind a SIP load balancer (deploy/kamailio/). They share one config file; worker N
(1-based, the systemd instance of `orga-sip-gateway@N`) derives its own sockets from it:

- SIP:  `sip.port + N - 1` (the balancer's dispatcher list names these ports);
- HTTP: the port of `http.listen` + N - 1 (each worker its own /metrics and /ready);
- RTP:  the N-th of `count` equal, even-aligned slices of `rtp.port_min`-`rtp.port_max`.

`problems(config, count)` is what `check-config` reports for a layout that cannot work: slices
too small for `limits.max_calls`, ports past 65535, and any overlap between one worker's SIP or
HTTP port and another's (or any RTP slice). Everything else in the config is shared as is.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.config import Config


def rtp_slice(config: Config, index: int, count: int) -> tuple[int, int]:
    """(port_min, port_max) of worker `index` (1-based) of `count`: even-aligned equal slices."""
    first = config.rtp.port_min + (config.rtp.port_min % 2)
    per_worker = ((config.rtp.port_max - first + 1) // count) & ~1
    low = first + (index - 1) * per_worker
    return low, low + per_worker - 1


def worker_config(config: Config, index: int, count: int) -> Config:
    """The config worker `index` (1-based) of `count` runs with."""
    if not 1 <= index <= count:
        raise ValueError(f"worker {index} is not in 1..{count}")
    offset = index - 1
    host, port = config.http.host, config.http.port
    listen = config.http.listen if port == 0 else _hostport(host, port + offset)
    low, high = rtp_slice(config, index, count)
    return replace(
        config,
        sip=replace(config.sip, port=config.sip.port + offset),
        http=replace(config.http, listen=listen),
        rtp=replace(config.rtp, port_min=low, port_max=high),
    )


def problems(config: Config, count: int) -> list[str]:
    """`key: problem — fix` for a worker layout that cannot run (empty when it can)."""
    if count <= 1:
        return []
    out: list[str] = []
    sip_ports = range(config.sip.port, config.sip.port + count)
    http_port = config.http.port
    http_ports = range(http_port, http_port + count) if http_port else range(0)
    if sip_ports[-1] > 65535:
        out.append(f"sip.port: {count} workers need ports {sip_ports[0]}-{sip_ports[-1]}, past "
                   "65535 — use a lower sip.port")
    if http_ports and http_ports[-1] > 65535:
        out.append(f"http.listen: {count} workers need ports {http_ports[0]}-{http_ports[-1]}, "
                   "past 65535 — use a lower port")
    low, high = rtp_slice(config, 1, count)
    calls = (high - low + 1) // 2
    if calls < config.limits.max_calls:
        out.append(f"rtp.port_min/port_max: split over {count} workers each gets {high - low + 1} "
                   f"ports ({calls} calls), fewer than limits.max_calls = "
                   f"{config.limits.max_calls} — widen the range to at least "
                   f"{2 * config.limits.max_calls * count} ports or lower limits.max_calls")
    rtp_low, rtp_high = rtp_slice(config, 1, count)[0], rtp_slice(config, count, count)[1]
    if set(sip_ports) & set(http_ports):
        out.append(f"http.listen: worker HTTP ports {http_ports[0]}-{http_ports[-1]} overlap the "
                   f"SIP ports {sip_ports[0]}-{sip_ports[-1]} — move one of them")
    for key, ports in (("sip.port", sip_ports), ("http.listen", http_ports)):
        if ports and ports[0] <= rtp_high and rtp_low <= ports[-1]:
            out.append(f"{key}: ports {ports[0]}-{ports[-1]} of {count} workers overlap the RTP "
                       f"range {rtp_low}-{rtp_high} — move them outside it")
    return out


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
