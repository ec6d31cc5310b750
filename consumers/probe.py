"""Watching a worker's hot path from inside: the hooks benchmarks and latency traces use.

Pass a `WorkerProbe` subclass to `Worker(..., probe=...)`; the worker calls it on its main
thread at two points of every loop, and not at all without one. A probe must be quick and must
not change what it is given: it runs in the measured path.

Times are `time.perf_counter()` seconds. On Linux that is the system-wide monotonic clock, so
the model process's times (`BatchAnswer.started`, `BatchAnswer.finished`) compare with the
worker's; add ``time.time() - time.perf_counter()`` to turn any of them into wall-clock time.

>>> class Counting(WorkerProbe):
...     records = 0
...     def polled(self, batches, at):
...         self.records += sum(len(records) for records in batches.values())
>>> probe = Counting()
>>> probe.polled({("events", 0): [object(), object()]}, at=0.0)
>>> probe.records
2
"""

from __future__ import annotations

from driftstream.consumers.model_messages import BatchAnswer
from driftstream.transport import Record

__all__ = ["WorkerProbe"]


class WorkerProbe:
    """Hooks called by the worker; each does nothing here: override the ones you need."""

    def polled(self, batches: dict[tuple[str, int], list[Record]], at: float) -> None:
        """A poll returned at ``at``: ``batches`` (records by (topic, partition); empty when
        nothing came) go to the model process next."""

    def answered(self, answer: BatchAnswer, polled_at: float) -> None:
        """The model process answered the batch of the poll that returned at ``polled_at``;
        the answer's outputs are sent next (``answer.started`` and ``answer.finished``: when
        the model process began and ended that batch)."""
