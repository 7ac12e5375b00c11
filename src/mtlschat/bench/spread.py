"""How many load processes and loopback source addresses a number of receivers needs.

Two limits of one machine cap the connections one load process can open to one server:

* its open-file limit (every socket is a descriptor; the hard limit may be far below what a big
  run needs, and only root may raise it, when it can at all), so receivers are spread over enough
  worker processes that each stays under it;
* the ephemeral port range: a TCP connection is (source address, source port, server address,
  server port), so one source address reaches one server with at most as many connections as the
  range has ports (~28,000 by default). Loopback is all of 127.0.0.0/8, so receivers are spread
  over 127.0.0.2, 127.0.0.3, ... (bound before connecting, with ``IP_BIND_ADDRESS_NO_PORT`` so
  the port is still chosen by ``connect`` for the 4-tuple, not reserved by ``bind``).
"""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path

FD_MARGIN = 64  # descriptors a worker keeps for itself: pipes, the selector, libraries
PORT_SHARE = 0.8  # of the ephemeral range one source may use (TIME_WAIT of earlier runs)
_FIRST_SOURCE = ipaddress.IPv4Address("127.0.0.2")
_DEFAULT_RANGE = (32768, 60999)


def ephemeral_ports() -> int:
    """How many ports the kernel's ephemeral range has (``ip_local_port_range``)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = _DEFAULT_RANGE
    return max(1, high - low + 1)


def is_loopback_v4(host: str) -> bool:
    """Whether ``host`` is an IPv4 loopback address (where 127.0.0.2.. are usable sources)."""
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:  # a name: it may resolve to ::1, which 127.0.0.2 cannot reach
        return False


def sources_needed(receivers: int, ports: int | None = None) -> int:
    """Source addresses that keep each under :data:`PORT_SHARE` of the ephemeral range."""
    per_source = max(1, int((ports or ephemeral_ports()) * PORT_SHARE))
    return math.ceil(receivers / per_source)


def source_addresses(count: int) -> tuple[str, ...]:
    """``count`` loopback source addresses: 127.0.0.2, 127.0.0.3, ..."""
    return tuple(str(_FIRST_SOURCE + i) for i in range(count))


def choose_sources(receivers: int, asked: int, host: str) -> tuple[str, ...]:
    """The source addresses for a run: ``asked`` of them, or (0) as many as ``receivers`` need.

    An empty tuple means "let the kernel choose" (one address), which is what a run that fits
    in one port range, or a server that is not on IPv4 loopback, gets when none were asked for.
    """
    if asked:
        return source_addresses(asked)
    if not is_loopback_v4(host):
        return ()
    needed = sources_needed(receivers)
    return source_addresses(needed) if needed > 1 else ()


def worker_count(receivers: int, asked: int, fd_limit: int) -> int:
    """At least ``asked`` processes, and enough that none holds more sockets than ``fd_limit``
    allows (less :data:`FD_MARGIN`); never more than one per receiver.
    """
    per_worker = max(1, fd_limit - FD_MARGIN)
    return max(1, min(receivers, max(asked, math.ceil(receivers / per_worker))))
