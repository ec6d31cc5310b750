"""Faults a test injects into a worker: die or hang at a chosen point.

The worker takes a `FaultPlan` (none by default) and tells it whenever it reaches a fault
point; the plan decides whether to act there. Tests that run the worker in-process pass one;
the end-to-end tests that run ``driftstream run`` as a child process set
``DRIFTSTREAM_KILL_AT``, which only the command line reads (`FaultPlan.parse`):

- ``checkpoint:N``: SIGKILL at the Nth checkpoint, after its outputs were flushed and before
  its state was saved;
- ``shutdown`` (or ``shutdown:1``): SIGKILL as the graceful shutdown begins;
- ``POINT:hang``: block there until a signal ends the process.

Other points are other components' (the Kafka checkpoint store reads ``checkpoint-chunk:K``
itself): no fault in the worker.

>>> plan = FaultPlan.parse("checkpoint:3")
>>> plan.point, plan.nth, plan.hang
('checkpoint', 3, False)
>>> FaultPlan.parse("shutdown:hang").hang, FaultPlan.parse("").point
(True, None)
>>> FaultPlan.parse("checkpoint:x")
Traceback (most recent call last):
ValueError: DRIFTSTREAM_KILL_AT='checkpoint:x': after the point, a count from 1 or 'hang'
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

from driftstream.consumers.observability import fields

__all__ = ["FAULT_POINTS", "KILL_AT_ENV", "FaultPlan"]

log = logging.getLogger("driftstream.worker")

KILL_AT_ENV = "DRIFTSTREAM_KILL_AT"
FAULT_POINTS = ("checkpoint", "shutdown")


@dataclass
class FaultPlan:
    """Kill the process (SIGKILL) the ``nth`` time it reaches ``point``, or with ``hang``
    block there until a signal ends it. No ``point``: no fault."""

    point: str | None = None
    nth: int = 1
    hang: bool = False
    _reached: int = 0

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        """From ``POINT[:N|:hang]`` (the value of DRIFTSTREAM_KILL_AT); empty, or another
        component's point: no fault."""
        point, _, arg = (spec or "").partition(":")
        if point not in FAULT_POINTS:
            return cls()
        if arg == "hang":
            return cls(point, hang=True)
        if arg and not (arg.isdigit() and int(arg) >= 1):
            raise ValueError(f"{KILL_AT_ENV}={spec!r}: after the point, a count from 1 or 'hang'")
        return cls(point, int(arg or 1))

    def reached(self, point: str) -> None:
        """The worker is at ``point``: act if this is the planned place."""
        if point != self.point:
            return
        if self.hang:
            log.warning(
                "fault point %s: hanging until killed",
                point,
                extra=fields(event="fault_point", where=point),
            )
            while True:
                signal.pause()
        self._reached += 1
        if self._reached == self.nth:
            os.kill(os.getpid(), signal.SIGKILL)
