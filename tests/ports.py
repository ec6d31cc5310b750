"""Loopback ports for servers that tests stop and start again on the same port.

A port from the kernel's ephemeral range (the one `driftstream.broker.free_port` gets) can
be taken while its server is down: every outgoing connection takes its source port from that
range, and a client retrying a dead port there can even connect to itself (TCP simultaneous
open) and hold it. The restarted server then fails with "address already in use". Ports
outside that range are only ever taken by a listener.

>>> port, = restartable_ports(1)
>>> lo, hi = _ephemeral_range()
>>> not lo <= port <= hi and port_is_free(port)
True
"""

from __future__ import annotations

import random

from driftstream.broker import port_is_free

__all__ = ["restartable_ports"]

_LOWEST = 10_000  # below: well-known and registered services
_DEFAULT_EPHEMERAL = (32768, 60999)  # Linux's default, when /proc cannot say


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(v) for v in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


def restartable_ports(count: int, twin_offset: int = 0) -> list[int]:
    """``count`` distinct free loopback ports outside the ephemeral range; with
    ``twin_offset``, each port's twin (port + offset, e.g. a gRPC listener) too."""
    lo, hi = _ephemeral_range()
    spans = [(_LOWEST, lo - 1 - twin_offset), (hi + 1, 65535 - twin_offset)]
    candidates = [p for a, b in spans if a <= b for p in range(a, b + 1)]
    if len(candidates) < 4 * count:
        raise RuntimeError(f"too few ports outside the ephemeral range {lo}-{hi}")
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < count:
        port = random.choice(candidates)
        twin = port + twin_offset
        if port in taken or twin in taken:
            continue
        if port_is_free(port) and (not twin_offset or port_is_free(twin)):
            chosen.append(port)
            taken.update((port, twin))
    return chosen
