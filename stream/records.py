"""The records that flow through a partition: inputs (events, labels) and outputs.

Inputs carry where they came from (topic, partition, offset) and their original bytes, so
that anything rejected later, even deep in the learner, can still be dead-lettered with the
exact bytes that were received.

>>> e = Event(id="a1", features={"x": 1.0}, ts=1000, partition=0, offset=7)
>>> p = Prediction(id=e.id, prediction=True, proba={False: 0.2, True: 0.8}, generation=0,
...                updates=3, partition=0, offset=7, event_ts=1000, scored_at=5)
>>> p.model, p.to_wire()["model"]
(ModelVersion(generation=0, updates=3), {'generation': 0, 'updates': 3})
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["DriftReport", "Event", "Label", "ModelVersion", "Prediction", "Rejection"]


class ModelVersion(NamedTuple):
    """Which model state served or changed: ``generation`` changes when a drift policy
    replaces the model, ``updates`` counts the learn steps of that generation.

    On the wire (predictions, drift reports, summaries) it is a JSON object:

    >>> ModelVersion(1, 9).to_wire()
    {'generation': 1, 'updates': 9}
    >>> ModelVersion.from_wire({"generation": 1, "updates": 9})
    ModelVersion(generation=1, updates=9)
    """

    generation: int
    updates: int

    def to_wire(self) -> dict[str, int]:
        return {"generation": self.generation, "updates": self.updates}

    @classmethod
    def from_wire(cls, wire: dict) -> ModelVersion:
        return cls(wire["generation"], wire["updates"])


@dataclass(slots=True)
class Event:
    """Features to score, keyed by a unique id; ``ts`` is the event time (ms)."""

    id: str
    features: dict[str, Any]
    ts: int
    topic: str = ""
    partition: int = 0
    offset: int = -1
    raw: bytes | None = None


@dataclass(slots=True)
class Label:
    """The true outcome of the event with the same id, revealed at event time ``ts``."""

    id: str
    label: Any
    ts: int
    topic: str = ""
    partition: int = 0
    offset: int = -1
    raw: bytes | None = None


@dataclass(slots=True)
class Prediction:
    """What the worker served for one event, with the model version that served it."""

    id: str
    prediction: Any
    proba: dict | None
    generation: int
    updates: int
    partition: int
    offset: int
    event_ts: int
    scored_at: int

    @property
    def model(self) -> ModelVersion:
        return ModelVersion(self.generation, self.updates)

    def row(self, labels_offset: int | None = None) -> tuple:
        """The prediction as a plain tuple, its fields then ``labels_offset``: tuples pickle
        fast (the model process hands predictions over so); `wire_of_row` encodes one."""
        return (
            self.id,
            self.prediction,
            self.proba,
            self.generation,
            self.updates,
            self.partition,
            self.offset,
            self.event_ts,
            self.scored_at,
            labels_offset,
        )

    @classmethod
    def wire_of_row(cls, row: tuple) -> dict:
        """`to_wire` of the prediction a `row` holds."""
        return cls(*row[:-1]).to_wire(row[-1])

    def to_wire(self, labels_offset: int | None = None) -> dict:
        """``labels_offset``: the partition's next unprocessed label offset when the event was
        scored; it records the event's place among the labels, for replay."""
        out = {
            "id": self.id,
            "prediction": self.prediction,
            "model": {"generation": self.generation, "updates": self.updates},
            "partition": self.partition,
            "offset": self.offset,
            "event_ts": self.event_ts,
            "scored_at": self.scored_at,
        }
        if labels_offset is not None:
            out["labels_offset"] = labels_offset
        if self.proba is not None:
            # JSON object keys are strings; class labels may be bools or ints.
            out["proba"] = {_key(k): v for k, v in self.proba.items()}
        return out


def _key(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"
    return str(k)


@dataclass(slots=True)
class DriftReport:
    """A detected change and what the drift policy did about it.

    ``kind`` is ``concept`` (ADWIN on the served error, or the ``act_when`` threshold: the
    ``detector`` names its trigger), ``challenger`` (the challenger policy's verdict) or
    ``data`` (a data-monitor alarm). On the wire, a data alarm's test figures stand at the top
    level, as the drift topic's consumers read them:

    >>> report = DriftReport("data", 0, 1000, 5000, {"test": "ks", "statistic": 0.2,
    ...     "p_value": 1e-9, "effect": 0.2, "reference": {"n": 2000}, "live": {"n": 2000}},
    ...     "reported", ModelVersion(0, 9), ModelVersion(0, 9), "x")
    >>> wire = report.to_wire()
    >>> wire["kind"], wire["test"], wire["feature"], wire["p_value"], "detector" in wire
    ('data', 'ks', 'x', 1e-09, False)
    """

    kind: str
    partition: int
    event_ts: int
    n_seen: int
    detector: dict
    action: str
    model_before: ModelVersion
    model_after: ModelVersion
    feature: str | None = None
    id: str | None = None  # the label (concept) or event (data) that triggered the detection

    def to_wire(self) -> dict:
        if self.kind == "data":
            return self._data_wire()
        out = {
            "kind": self.kind,
            "partition": self.partition,
            "event_ts": self.event_ts,
            "n_seen": self.n_seen,
            "detector": self.detector,
            "action": self.action,
            "model_before": self.model_before.to_wire(),
            "model_after": self.model_after.to_wire(),
        }
        if self.feature is not None:
            out["feature"] = self.feature
        if self.id is not None:
            out["id"] = self.id
        return out

    def _data_wire(self) -> dict:
        figures = self.detector
        out: dict = {"kind": "data", "test": figures["test"]}
        if self.feature is not None:
            out["feature"] = self.feature
        out["statistic"] = figures["statistic"]
        if figures.get("p_value") is not None:
            out["p_value"] = figures["p_value"]
        out.update(
            {
                "effect": figures["effect"],
                "reference": figures["reference"],
                "live": figures["live"],
                "partition": self.partition,
                "event_ts": self.event_ts,
                "n_seen": self.n_seen,
                "action": self.action,
                "model_before": self.model_before.to_wire(),
                "model_after": self.model_after.to_wire(),
            }
        )
        if self.id is not None:
            out["id"] = self.id
        return out


MAX_RAW_BYTES = 256 * 1024  # of a rejected record's bytes copied into its dead letter
MAX_DETAIL_CHARS = 500  # a detail quotes input (a feature name, say): keep logs and letters small


@dataclass(slots=True)
class Rejection:
    """A record that could not be used, with the reason; becomes a dead-letter record.

    A dead letter must fit in one Kafka message (1 MB by default) whatever the input was: its
    ``raw`` holds at most the first MAX_RAW_BYTES of the record (``raw_bytes`` gives the whole
    size; ``source`` says where the rest is) and its detail at most MAX_DETAIL_CHARS.

    >>> wire = Rejection("not_json", "x" * 600, "events", 0, 9, b"{" * 300_000).to_wire()
    >>> len(wire["detail"]), wire["raw_bytes"], len(base64.b64decode(wire["raw"]))
    (500, 300000, 262144)
    """

    reason: str
    detail: str
    topic: str = ""
    partition: int = 0
    offset: int = -1
    raw: bytes | None = None
    id: str | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.detail) > MAX_DETAIL_CHARS:
            self.detail = self.detail[: MAX_DETAIL_CHARS - 1] + "…"

    def to_wire(self) -> dict:
        out = {
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "reason": self.reason,
            "detail": self.detail,
            "raw": None,
        }
        if self.raw is not None:
            out["raw"] = base64.b64encode(self.raw[:MAX_RAW_BYTES]).decode("ascii")
            if len(self.raw) > MAX_RAW_BYTES:
                out["raw_bytes"] = len(self.raw)
        if self.id is not None:
            out["id"] = self.id
        return out
