"""Fault points for tests (``DRIFTSTREAM_KILL_AT``)."""

from __future__ import annotations

import logging
import os
import signal

from driftstream.consumers.observability import fields

__all__ = ["fault_point"]

log = logging.getLogger("driftstream.worker")

_faults = {"checkpoint": 0, "shutdown": 0}


def fault_point(name: str) -> None:
    """Test hooks, from ``DRIFTSTREAM_KILL_AT``: ``checkpoint:N`` kills the process (SIGKILL)
    at the Nth checkpoint, after its outputs were flushed and before its state was saved;
    ``shutdown:hang`` blocks the graceful shutdown until a signal ends the process."""
    spec = os.environ.get("DRIFTSTREAM_KILL_AT")
    if not spec:
        return
    where, _, arg = spec.partition(":")
    if where != name:
        return
    if arg == "hang":
        log.warning(
            "fault point %s: hanging until killed",
            name,
            extra=fields(event="fault_point", where=name),
        )
        while True:
            signal.pause()
    _faults[name] += 1
    if _faults[name] == int(arg or 1):
        os.kill(os.getpid(), signal.SIGKILL)
