"""What an uninterrupted run gives, for the end-to-end tests to compare workers with.

`reference` runs a partition's samples through the same merge and learner in this process
(`run_offline`), with no Kafka and no checkpoint: its predictions are River's, to the last
digit (tests/test_equivalence.py), and its learner is the state an uninterrupted worker ends
with. `dedupe` checks that every prediction a worker emitted again equals the first one.

A test that must publish while a worker runs keeps that order with `publish_between`: all
records before a time, then (once the worker has caught up, or while it is stopped) all the
records after it. A worker that has merged every record before the time has done exactly
what the uninterrupted run did with them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import orjson

from driftstream.cli import build_parser, learner_config
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import Sample, arrival_order
from driftstream.stream.codec import encode
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.offline import run_offline
from driftstream.stream.records import Event, Label, Prediction
from driftstream.transport import KafkaSettings

__all__ = ["cli_config", "comparable", "dedupe", "publish_between", "reference"]


def cli_config(argv: list[str]) -> LearnerConfig:
    """The LearnerConfig the CLI builds from these `driftstream run` arguments."""
    return learner_config(build_parser().parse_args(argv))


def comparable(wire: dict) -> dict:
    """A prediction as it travels, without the wall-clock field."""
    return {k: v for k, v in wire.items() if k != "scored_at"}


def reference(samples: list[Sample], config: LearnerConfig, partition: int = 0):
    """Uninterrupted in-process run over one partition's samples: (learner, {id: wire})."""
    events_s, labels_s = arrival_order(samples)
    events = [Event(s.id, s.x, s.ts, partition=partition, offset=i) for i, s in enumerate(events_s)]
    labels = [Label(s.id, s.y, s.label_ts, partition=partition) for s in labels_s]
    learner, outputs = run_offline(events, labels, learner=Learner(config, partition=partition))
    # labels are in event-time order, and go first at equal times: those before the event
    label_times = [lb.ts for lb in labels]
    predictions = {
        o.id: comparable(
            orjson.loads(encode(o.to_wire(bisect.bisect_right(label_times, o.event_ts))))
        )
        for o in outputs
        if isinstance(o, Prediction)
    }
    return learner, predictions


def dedupe(predictions: list[dict]) -> tuple[dict[str, dict], int]:
    """First prediction per id; every re-emitted one must be identical. Returns (firsts, dups)."""
    first: dict[str, dict] = {}
    duplicates = 0
    for wire in predictions:
        wire = comparable(wire)
        seen = first.setdefault(wire["id"], wire)
        if seen is not wire:
            duplicates += 1
            assert wire == seen, f"re-emitted prediction differs: {seen} then {wire}"
    return first, duplicates


class _Between:
    """An `EventPublisher` that sends only the records whose time is in [start, end)."""

    def __init__(self, publisher: EventPublisher, start: int, end: int):
        self.publisher, self.start, self.end = publisher, start, end
        self.sent = 0

    def publish_event(self, *args, ts: int, **kwargs) -> None:
        if self.start <= ts < self.end:
            self.publisher.publish_event(*args, ts=ts, **kwargs)
            self.sent += 1

    def publish_label(self, *args, ts: int, **kwargs) -> None:
        if self.start <= ts < self.end:
            self.publisher.publish_label(*args, ts=ts, **kwargs)
            self.sent += 1

    def flush(self) -> None:
        self.publisher.flush()


def publish_between(
    settings: KafkaSettings,
    prefix: str,
    samples: Iterable[Sample],
    partitions: int,
    start: int,
    end: int,
) -> int:
    """Publish, as `publish_samples` would (sample i to partition i % partitions), only the
    events and labels whose event time is in [start, end); returns how many were sent."""
    publisher = EventPublisher(settings, prefix)
    try:
        window = _Between(publisher, start, end)
        publish_samples(window, samples, partitions=partitions)
        return window.sent
    finally:
        publisher.close()
