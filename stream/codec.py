"""Wire format: decode and validate input records, encode outputs (orjson).

Decoding never raises anything but `InvalidRecord`, whose ``reason`` is one of `REASONS`;
callers turn it into a dead-letter record with the original bytes.

A worker decodes in two steps: its I/O process parses each record into a plain tuple
(`parse_records`), which pickles fast, and its model process, which bounds the worker, only
makes the `Event`, `Label` or `Rejection` objects from those (`decode_records`).

>>> decode_event(b'{"id": "a", "features": {"x": 1.5, "c": "red"}, "ts": 10}', timestamp=99)
Event(id='a', features={'x': 1.5, 'c': 'red'}, ts=10, topic='', partition=0, offset=-1, raw=None)
>>> decode_label(b'{"id": "a", "label": true}', timestamp=99).ts
99
>>> try:
...     decode_event(b'[1, 2]', timestamp=0)
... except InvalidRecord as e:
...     print(e.reason)
not_object
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from driftstream.stream.records import Event, Label, Rejection

# Every reason a record can be rejected for, with what it means.
REASONS = {
    "empty": "the message has no value (null or zero bytes)",
    "oversize": "the message is larger than the configured limit",
    "not_json": "the value is not valid JSON (or not UTF-8)",
    "non_finite": "the value contains NaN or Infinity, which JSON does not allow",
    "not_object": "the value is JSON but not an object",
    "missing_id": "the id is absent, null or empty",
    "bad_id": "the id is not a string, or is too long",
    "bad_features": "features is absent or not an object",
    "wrong_type": "a feature value is not a number, string, bool or null",
    "bad_timestamp": "ts is neither epoch-ms (int) nor an ISO-8601 string, or is more than a "
    "day after the record's Kafka timestamp",
    "missing_label": "the label is absent or null",
    "wrong_label_type": "the label's type does not fit the task",
    "invalid_label": "a label that does not fit the partition's labels so far (a string after "
    "true/false labels) or its binary model (not true/false or 0/1); checked before the join, "
    "so the true label that follows still joins",
    "missing_feature": "a feature the schema requires is absent",
    "extra_feature": "a feature the schema does not declare (schema says reject)",
    "too_many_features": "a new feature name past the schema's max_features (default 10,000)",
    "too_many_classes": "a label of a new class past max_classes (classification, default 100)",
    "unknown_id": "a label whose event was never seen",
    "duplicate_label": "a second label for an id that was already joined",
    "duplicate_event": "an event whose id is still waiting for its label or was recently "
    "labelled or expired (a producer's retry): not scored again; the detail names the first "
    "one's offset",
    "label_past_ttl": "a label whose event expired before the label arrived",
    "join_expired": "an event whose label did not arrive in time (report, not bad input)",
    "model_error": "the model raised on this record (e.g. a string into a linear model)",
}

MAX_ID_LENGTH = 256
DEFAULT_MAX_BYTES = 1 << 20
_DAY_MS = 86_400_000
MAX_TS_AHEAD_MS = _DAY_MS  # an event time more than a day after the Kafka timestamp is bad


class InvalidRecord(Exception):
    """A record that cannot be used; ``reason`` is a key of `REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_event(value: bytes | None, timestamp: int, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    """Parse an event message; ``timestamp`` (the Kafka record's, -1 if none) is used when
    ``ts`` is absent, and bounds it (`_get_ts`)."""
    return Event(*_parse_event(value, timestamp, max_bytes))


def decode_label(value: bytes | None, timestamp: int, max_bytes: int = DEFAULT_MAX_BYTES) -> Label:
    """Parse a label message; the label's type is checked against the task later."""
    return Label(*_parse_label(value, timestamp, max_bytes))


# (offset, value, id, features or label, ts); a bad record's: (offset, value, None, reason, detail)
ParsedRecord = tuple


def parse_records(
    records: Iterable[tuple[int, int, bytes | None]], kind: str
) -> list[ParsedRecord]:
    """Parse and check ``(offset, timestamp, value)`` records of one input (``kind``: event or
    label) into plain tuples for `decode_records`: ``(offset, value, id, features or label,
    ts)``, or ``(offset, value, None, reason, detail)`` for a record that cannot be used.

    >>> [record[2:] for record in parse_records([(7, 99, b'{"id": "a", "label": 1}'),
    ...                                           (8, 99, b"[1]")], "label")]
    [('a', 1, 99), (None, 'not_object', 'value is an array')]
    """
    parse = _parse_event if kind == "event" else _parse_label
    out = []
    for offset, timestamp, value in records:
        try:
            out.append((offset, value, *parse(value, timestamp)))
        except InvalidRecord as e:
            out.append((offset, value, None, e.reason, e.detail))
    return out


def decode_records(
    records: list[ParsedRecord],
    kind: str,
    topic: str,
    partition: int,
    last_ts: int,
    start_offset: int = 0,
) -> tuple[list[tuple[int, Any]], int]:
    """One partition's parsed records (`parse_records`) as items for the merge.

    Returns ``(ts, Event | Label | Rejection)`` pairs for the records at or after
    ``start_offset``, and the stream's newest event time. A bad record becomes a `Rejection`
    placed at the stream's current time (``last_ts``), so it keeps its place in the stream and
    input offsets advance without gaps.
    """
    make = Event if kind == "event" else Label
    out = []
    for offset, value, record_id, payload, ts in records:
        if offset < start_offset:
            continue
        if record_id is None:  # payload, ts: the reason and the detail
            item = Rejection(payload, ts, topic, partition, offset, value)
        else:
            item = make(record_id, payload, ts, topic, partition, offset, value)
            last_ts = ts
        out.append((last_ts, item))
    return out, last_ts


def _parse_event(value: bytes | None, timestamp: int, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple:
    obj = _load_object(value, max_bytes)
    event_id = _get_id(obj)
    features = obj.get("features")
    if not isinstance(features, dict):
        raise InvalidRecord(
            "bad_features", f"features is {_type_name(features)}, expected an object"
        )
    for name, v in features.items():
        if v is None or v.__class__ in _SCALARS:
            continue
        raise InvalidRecord("wrong_type", f"feature {name!r} is {_type_name(v)}")
    return event_id, features, _get_ts(obj, timestamp)


def _parse_label(value: bytes | None, timestamp: int, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple:
    obj = _load_object(value, max_bytes)
    label_id = _get_id(obj)
    label = obj.get("label")
    if label is None:
        raise InvalidRecord("missing_label", "label is absent or null")
    if label.__class__ not in _SCALARS:
        raise InvalidRecord("wrong_label_type", f"label is {_type_name(label)}")
    return label_id, label, _get_ts(obj, timestamp)


def check_label_type(label: Any, task: str) -> None:
    """Classification takes str, bool or int classes; regression takes numbers (not bools)."""
    cls = label.__class__
    if task == "classification":
        if cls is float:
            raise InvalidRecord("wrong_label_type", f"float label {label!r} for a classifier")
    elif cls is bool or cls is str:
        raise InvalidRecord("wrong_label_type", f"{_type_name(label)} label for a regressor")


def encode(obj: dict) -> bytes:
    """Encode an output record; non-str keys (class labels) are allowed."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


_SCALARS = frozenset({int, float, str, bool})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _load_object(value: bytes | None, max_bytes: int) -> dict:
    if not value:
        raise InvalidRecord("empty", "no value")
    if len(value) > max_bytes:
        raise InvalidRecord("oversize", f"{len(value)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        # Decide by what stands where parsing stopped, not by a search of the whole value
        # (a string "NaN" in an otherwise broken message is not_json, not non_finite).
        doc = e.doc if isinstance(e.doc, str) else ""
        if doc.startswith(("NaN", "Infinity"), e.pos) or "infinity" in str(e):
            raise InvalidRecord("non_finite", str(e)) from None
        raise InvalidRecord("not_json", str(e)) from None
    if not isinstance(obj, dict):
        raise InvalidRecord("not_object", f"value is {_type_name(obj)}")
    return obj


def _get_id(obj: dict) -> str:
    rid = obj.get("id")
    if rid is None or rid == "":
        raise InvalidRecord("missing_id", "id is absent, null or empty")
    if not isinstance(rid, str):
        raise InvalidRecord("bad_id", f"id is {_type_name(rid)}, expected a string")
    if len(rid) > MAX_ID_LENGTH:
        raise InvalidRecord("bad_id", f"id is {len(rid)} characters > {MAX_ID_LENGTH}")
    return rid


def _get_ts(obj: dict, kafka_ts: int) -> int:
    """The record's event time: its ``ts`` (epoch ms or ISO-8601), else the Kafka timestamp.

    A ``ts`` more than MAX_TS_AHEAD_MS after the Kafka timestamp is rejected: one such record
    (a timestamp in microseconds, say) would move its partition's event-time clock years ahead
    for good, and every later label would then miss its event. ``kafka_ts`` < 0 (Kafka's "no
    timestamp") skips the check.
    """
    ts = obj.get("ts")
    if ts is None:
        return kafka_ts
    cls = ts.__class__
    if cls is float and math.isfinite(ts):
        ts = int(ts)
    elif cls is str:
        try:
            parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRecord("bad_timestamp", f"ts {ts[:40]!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        # Exact integer arithmetic: int(timestamp() * 1000) is one ms short for ~1 % of
        # millisecond timestamps (float rounding), e.g. 1987-03-12T00:11:34.550Z.
        ts = (parsed - _EPOCH) // _ONE_MS
    elif cls is not int:
        raise InvalidRecord("bad_timestamp", f"ts is {_type_name(ts)}")
    if ts - kafka_ts > MAX_TS_AHEAD_MS and kafka_ts >= 0:
        raise InvalidRecord(
            "bad_timestamp",
            f"ts {ts} is {(ts - kafka_ts) / _DAY_MS:,.1f} "
            f"days after the record's Kafka timestamp {kafka_ts} (more than "
            f"{MAX_TS_AHEAD_MS / _DAY_MS:g} day(s); microseconds instead of "
            "milliseconds?)",
        )
    return ts


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a bool",
        int: "an integer",
        float: "a number",
    }.get(type(v), type(v).__name__)
