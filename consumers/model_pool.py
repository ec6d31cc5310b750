"""Several model processes behind the one interface of a `ModelProcess` (``--model-processes``).

One model process runs every partition's pipeline on one core. A worker that owns several
partitions can spread them over N processes: each partition lives in exactly one of them
(its *home*, chosen when it is first opened: the process with the fewest partitions, lowest
index on a tie) and stays there until it is closed, so that a rewind's reopening replaces
the pipeline where it is instead of leaving a second copy elsewhere.

A request is split by home: `OpenPartition` goes to the partition's home, `ClosePartitions`
to the homes of its partitions, and each `ProcessBatch` to every process, with that
process's pushes, caught-up flags and snapshots only (a process with nothing new still runs
its pipelines, as one process does for every partition each batch). Each process answers
in order, so the pool's oldest request is answered once each process it went to has
answered; `collect` merges those answers into the one answer a single process would give.
Partitions never share state, so where a partition runs changes none of its outputs.

A model process that fails or dies raises `ModelProcessError`, as with one process.

>>> from driftstream.stream.learner import LearnerConfig
>>> from driftstream.consumers.model_process import LocalModel
>>> pool = ModelPool(2, make=LocalModel)
>>> for p in (0, 1, 2):
...     pool.submit(OpenPartition(p, None, LearnerConfig(), ("ev", "lb"), [0, 0], None, 0, 100))
...     _ = pool.collect()
>>> pool.home
{0: 0, 1: 1, 2: 0}
>>> pool.submit(ProcessBatch(0))
>>> sorted(pool.collect().progress)
[0, 1, 2]
"""

from __future__ import annotations

import collections
from multiprocessing.connection import wait

from driftstream.consumers.model_messages import (
    BatchAnswer,
    ClosePartitions,
    OpenPartition,
    ProcessBatch,
    Request,
)
from driftstream.consumers.model_process import ModelProcess, ModelProcessError

__all__ = ["ModelPool"]


class ModelPool:
    """``n`` model processes (made by ``make``), each partition in one of them."""

    def __init__(self, n: int, make=ModelProcess):
        if n < 1:
            raise ValueError(f"model processes: {n} (at least 1)")
        self.models = []
        try:
            for _ in range(n):
                self.models.append(make())
        except BaseException:
            self.close()
            raise
        self.home: dict[int, int] = {}  # partition -> index of the process it lives in
        # per request sent: its class and the processes it went to (in order)
        self._pending: collections.deque[tuple[type, list[int]]] = collections.deque()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def pids(self) -> list[int | None]:
        return [getattr(getattr(m, "process", None), "pid", None) for m in self.models]

    def submit(self, request: Request) -> None:
        cls = request.__class__
        if cls is ProcessBatch:
            parts = self._split(request)
        elif cls is OpenPartition:
            parts = {self._home_of(request.partition): request}
        elif cls is ClosePartitions:
            by_home: dict[int, list[int]] = {}
            for p in request.partitions:
                if p in self.home:
                    by_home.setdefault(self.home.pop(p), []).append(p)
            parts = {i: ClosePartitions(ps) for i, ps in sorted(by_home.items())}
        else:
            raise TypeError(f"not a model request: {request!r}")
        for i, part in parts.items():
            self.models[i].submit(part)
        self._pending.append((cls, list(parts)))

    def collect(self):
        """The answer to the oldest request (waits for every process it went to)."""
        cls, to = self._pending.popleft()
        answers, failure = [], None
        for i in to:  # every part's answer taken, even after a failure: the next ones stay in step
            try:
                answers.append(self.models[i].collect())
            except ModelProcessError as e:
                failure = failure or e
        if failure is not None:
            raise failure
        if cls is ProcessBatch:
            return _merge(answers)
        if cls is OpenPartition:
            return answers[0]
        return None

    def answered(self) -> bool:
        """Whether `collect` would return at once."""
        return bool(self._pending) and all(self.models[i].answered() for i in self._pending[0][1])

    def wait(self, timeout: float) -> None:
        """Until one of the processes the oldest request waits for answers, or ``timeout``."""
        if not self._pending:
            return
        conns = [getattr(self.models[i], "conn", None) for i in self._pending[0][1]]
        if all(c is not None for c in conns):
            wait([c for c in conns if not c.poll()] or conns[:1], timeout)

    def close(self) -> None:
        for model in self.models:
            model.close()
        self._pending.clear()

    def _home_of(self, p: int) -> int:
        """Partition p's process: where it already lives, else the least loaded."""
        if p not in self.home:
            load = collections.Counter(self.home.values())
            self.home[p] = min(range(len(self.models)), key=lambda i: (load[i], i))
        return self.home[p]

    def _split(self, batch: ProcessBatch) -> dict[int, ProcessBatch]:
        parts = {
            i: ProcessBatch(batch.now_ms, [], {}, [], batch.reason, batch.want_summary)
            for i in range(len(self.models))
        }
        home = self.home
        for push in batch.pushes:
            if push.partition in home:
                parts[home[push.partition]].pushes.append(push)
        for p, flags in batch.caught_up.items():
            if p in home:
                parts[home[p]].caught_up[p] = flags
        for p in batch.snapshot:
            if p in home:
                parts[home[p]].snapshot.append(p)
        return parts


def _merge(answers: list[BatchAnswer]) -> BatchAnswer:
    """One answer from each process's answer to its part of a batch."""
    if len(answers) == 1:
        return answers[0]
    merged = BatchAnswer({}, {}, min(a.started for a in answers), max(a.finished for a in answers))
    for a in answers:
        merged.progress.update(a.progress)
        merged.state_files.update(a.state_files)
    return merged
