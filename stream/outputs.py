"""What a partition's pipeline hands the worker: encoded outputs and checkpoint snapshots.

A pipeline run returns a list of these in the order they were made, and the worker sends them
in that order. A `StateSnapshot` stands at a record boundary: every output before it is
reflected in its state and none after it, so the worker has everything before it
acknowledged by Kafka before it saves the snapshot.

Predictions come in runs (`Predictions`), each holding the predictions that go to the
predictions topic together: one object per run of consecutive predictions, not one per event.
They stay plain tuples, which pickle four times faster than `Prediction` objects, until the
worker's I/O process encodes them (`Predictions.encoded`): the model process bounds the
worker, and encoding was ~7 % of its work.

>>> import orjson
>>> from driftstream.stream.records import ModelVersion, Prediction
>>> served = Prediction("a", True, {False: 0.2, True: 0.8}, 0, 3, 0, 7, 1000, 5)
>>> outputs = [Predictions([served.row(labels_offset=4)]),
...            DeadLetter(None, b"{}", "events", 7, "not_json", "", ModelVersion(0, 1))]
>>> [type(o).__name__ for o in outputs], outputs[1].reason
(['Predictions', 'DeadLetter'], 'not_json')
>>> [(key, orjson.loads(value)["labels_offset"]) for key, value in outputs[0].encoded()]
[(b'a', 4)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from driftstream.stream.codec import encode
from driftstream.stream.records import DriftReport, ModelVersion, Prediction

__all__ = ["DeadLetter", "DriftNotice", "Output", "Predictions", "StateSnapshot"]


class Predictions(NamedTuple):
    """Consecutive predictions for the predictions topic, as rows (`Prediction.row`)."""

    rows: list[tuple]

    def encoded(self) -> list[tuple[bytes, bytes]]:
        """The (key, value) records for the predictions topic: the id, the wire JSON."""
        return [(row[0].encode(), encode(Prediction.wire_of_row(row))) for row in self.rows]


class DriftNotice(NamedTuple):
    """A drift report for the drift topic: its encoded record and the report itself."""

    value: bytes
    report: DriftReport


class DeadLetter(NamedTuple):
    """A rejected record for the dead-letter topic, with what the worker logs of it."""

    key: bytes | None  # the record's id, when it had one
    value: bytes  # the encoded dead letter (its reason, source and original bytes)
    topic: str  # where the record came from ("" for an expired pending join)
    offset: int
    reason: str
    detail: str
    model: ModelVersion  # the version serving when the record was rejected


@dataclass
class StateSnapshot:
    """A learner's state with the input offsets it reflects: one checkpoint to save."""

    reason: str  # periodic, revoke, shutdown
    state: bytes | None  # the pickled learner, or None when it is written to state_file
    offsets: list[int]  # next offset to process, per input stream
    model: ModelVersion
    summary: dict
    drift_records: list[dict] = field(default_factory=list)  # since the previous snapshot
    model_events: list[dict] = field(default_factory=list)  # generation changes since then
    state_file: str | None = None  # where another process writes the state (see the pipeline)


Output = Predictions | DriftNotice | DeadLetter | StateSnapshot
