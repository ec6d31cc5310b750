"""One partition's way from input records to outputs and checkpoint snapshots.

Event-time merge, learner, outputs: what the worker does to a partition between parsing its
records (`codec.parse_records`) and encoding its predictions, both done by the worker's I/O
process. The worker runs this in its model process (`consumers.model_process`): parsed
records in, outputs out; snapshots go into the store once their outputs are acknowledged.

`run` returns the outputs (`stream.outputs`) in the order they were made: runs of
`Predictions` (rows, which the worker's I/O process encodes), encoded `DriftNotice` and
`DeadLetter` records, and each `StateSnapshot` at the record boundary where it was taken
(every output before it is reflected in its state, none after it).

>>> from driftstream.stream.codec import parse_records
>>> from driftstream.stream.learner import LearnerConfig
>>> pipe = PartitionPipeline(Learner(LearnerConfig(model="lr")), ("ev", "lb"), [0, 0])
>>> pipe.push(EVENTS, parse_records([(0, 1000, b'{"id": "a", "ts": 5, "features": {"x": 1}}')],
...                                 "event"))
>>> pipe.push(LABELS, parse_records([(0, 1000, b'{"id": "a", "ts": 9, "label": true}')], "label"))
>>> pipe.set_caught_up(EVENTS, True); pipe.set_caught_up(LABELS, True)
>>> [type(output).__name__ for output in pipe.run(now_ms=0)]
['Predictions']
>>> pipe.next_offset, pipe.since_checkpoint, pipe.learner.n_labels
([1, 1], 2, 1)
>>> snap = pipe.snapshot("shutdown")
>>> snap.offsets, snap.model, pipe.since_checkpoint
([1, 1], ModelVersion(generation=0, updates=1), 0)
"""

from __future__ import annotations

from driftstream.stream.codec import ParsedRecord, decode_records, encode
from driftstream.stream.learner import Learner
from driftstream.stream.merge import EVENTS, LABELS, EventTimeMerge
from driftstream.stream.outputs import DeadLetter, DriftNotice, Output, Predictions, StateSnapshot
from driftstream.stream.records import DriftReport, Prediction, Rejection

__all__ = ["EVENTS", "LABELS", "PartitionPipeline", "StateSnapshot"]


class PartitionPipeline:
    """Decode → merge → learner → outputs, for one partition.

    ``records`` pushed are an input's records in offset order, parsed (`codec.parse_records`);
    those below ``next_offset`` (already reflected in the learner) are skipped. Every
    ``checkpoint_every`` processed records a snapshot is taken in the output stream.

    ``serialize(learner)`` makes a periodic snapshot's state: the pickled bytes (default), the
    name of a file that another process is writing it to, or None to try again at the next
    record (a large state is still being written).
    """

    def __init__(
        self,
        learner: Learner,
        topics: tuple[str, str],
        offsets: list[int],
        idle_ms: int | None = None,
        now_ms: int = 0,
        checkpoint_every: int = 10_000,
        serialize=Learner.to_bytes,
    ):
        self.learner = learner
        self.partition = learner.partition
        self.topics = topics
        self.next_offset = list(offsets)
        self.last_ts = [0, 0]  # newest event time pushed, per stream
        self.merge = EventTimeMerge(idle_ms, now_ms)
        self.checkpoint_every = checkpoint_every
        self.serialize = serialize
        self.since_checkpoint = 0
        self.n_processed = 0  # records taken from the merge, in all
        self.late_counted = 0  # merge.n_late already added to learner.n_late
        self.drift_records: list[dict] = []
        self.model_events: list[dict] = []

    def push(self, stream: int, records: list[ParsedRecord], now_ms: int = 0) -> None:
        kind = "event" if stream == EVENTS else "label"
        batch, self.last_ts[stream] = decode_records(
            records,
            kind,
            self.topics[stream],
            self.partition,
            self.last_ts[stream],
            self.next_offset[stream],
        )
        self.merge.push(stream, batch, now_ms)

    def set_caught_up(self, stream: int, caught_up: bool) -> None:
        self.merge.set_caught_up(stream, caught_up)

    def queued(self, stream: int) -> int:
        return len(self.merge.queues[stream])

    def run(self, now_ms: int) -> list[Output]:
        """Process every record whose event-time place is settled; return the outputs."""
        learner = self.learner
        offsets = self.next_offset
        every = self.checkpoint_every
        out: list[Output] = []
        served = None  # the records of the run of predictions being made, if one is
        for stream, item in self.merge.pop_ready(now_ms):
            if item.__class__ is Rejection:
                learner.count_rejection(item.reason)
                self._rejection(item, out)
                served = None
            else:
                if stream == EVENTS:
                    results = learner.process_event(item, now_ms)
                else:
                    results = learner.process_label(item)
                for result in results:
                    cls = result.__class__
                    if cls is Prediction:
                        if served is None:
                            served = []
                            out.append(Predictions(served))
                        served.append(result.row(offsets[LABELS]))
                    elif cls is Rejection:
                        self._rejection(result, out)
                        served = None
                    elif cls is DriftReport:
                        self._drift(result, out)
                        served = None
            offsets[stream] = item.offset + 1
            self.n_processed += 1
            self.since_checkpoint += 1
            if self.since_checkpoint >= every:
                self.checkpoint("periodic", out)
                served = None
        self._count_late()
        return out

    def _count_late(self) -> None:
        """Move the merge's late count into the learner, so checkpoints keep it."""
        if self.merge.n_late != self.late_counted:
            self.learner.n_late += self.merge.n_late - self.late_counted
            self.late_counted = self.merge.n_late

    def checkpoint(self, reason: str, out: list[Output]) -> None:
        """Append a `StateSnapshot`: a periodic one's state made by ``serialize`` (none yet if
        that says later), any other's (revoke, shutdown) pickled here and now."""
        self._count_late()
        state = self.serialize(self.learner) if reason == "periodic" else self.learner.to_bytes()
        if state is not None:
            out.append(self.snapshot(reason, state))

    def snapshot(self, reason: str, state: bytes | str | None = None) -> StateSnapshot:
        """The learner's state now, with the offsets it reflects (pickled here unless
        ``state`` is given: bytes, or the file another process writes them to)."""
        self._count_late()
        learner = self.learner
        if state is None:
            state = learner.to_bytes()
        in_file = isinstance(state, str)
        snap = StateSnapshot(
            reason,
            None if in_file else state,
            list(self.next_offset),
            learner.version,
            learner.summary(),
            self.drift_records,
            self.model_events,
            state if in_file else None,
        )
        self.drift_records, self.model_events = [], []
        self.since_checkpoint = 0
        return snap

    def _rejection(self, item: Rejection, out: list[Output]) -> None:
        out.append(
            DeadLetter(
                item.id.encode() if item.id is not None else None,
                encode(item.to_wire()),
                item.topic,
                item.offset,
                item.reason,
                item.detail,
                self.learner.version,
            )
        )

    def _drift(self, report: DriftReport, out: list[Output]) -> None:
        wire = report.to_wire()
        self.drift_records.append(wire)
        if report.model_after.generation != report.model_before.generation:
            self.model_events.append(
                {
                    **report.model_after.to_wire(),
                    "reason": report.action,
                    "event_ts": report.event_ts,
                }
            )
        out.append(DriftNotice(encode(wire), report))
