"""Wire format: decoding never raises anything but InvalidRecord, and says why."""

from __future__ import annotations

import ast
import base64
import importlib
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftstream.stream.codec import (
    MAX_ID_LENGTH,
    MAX_TS_AHEAD_MS,
    REASONS,
    InvalidRecord,
    check_label_type,
    decode_event,
    decode_label,
    decode_records,
    encode,
    parse_records,
)
from driftstream.stream.records import Event, Label, Prediction, Rejection
from tests.support import PACKAGES, REPO

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODERS = [decode_event, decode_label]


def reason_of(decoder, value, **kw) -> str:
    with pytest.raises(InvalidRecord) as info:
        decoder(value, timestamp=0, **kw)
    e = info.value
    assert e.reason in REASONS
    assert isinstance(e.detail, str) and e.detail
    return e.reason


def decode_or_reject(decoder, value: bytes | None, max_bytes: int = 1 << 20):
    """Decode; any exception other than a well-formed InvalidRecord fails the test."""
    try:
        return decoder(value, timestamp=123, max_bytes=max_bytes)
    except InvalidRecord as e:
        assert e.reason in REASONS, e.reason
        assert isinstance(e.detail, str) and e.detail, e
        return e


# -- strategies -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
timestamps = st.one_of(
    st.none(),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.datetimes(
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        )
    ).map(lambda d: d.isoformat()),
    st.text(max_size=30),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=300), json_values),
        "features": st.one_of(
            st.dictionaries(st.text(max_size=8), json_values, max_size=5), json_values
        ),
        "label": json_values,
        "ts": timestamps,
    },
)
valid_features = st.dictionaries(
    st.text(max_size=10),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    max_size=6,
)
valid_ids = st.text(min_size=1, max_size=MAX_ID_LENGTH)


# -- properties -----------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_invalid_record(value):
    for decoder in DECODERS:
        decode_or_reject(decoder, value)


@FAST
@given(json_values)
def test_arbitrary_json_values_only_raise_invalid_record(obj):
    value = orjson.dumps(obj)
    for decoder in DECODERS:
        decode_or_reject(decoder, value)


@FAST
@given(record_like)
def test_record_shaped_objects_only_raise_invalid_record(obj):
    value = orjson.dumps(obj)
    for decoder in DECODERS:
        out = decode_or_reject(decoder, value)
        if not isinstance(out, InvalidRecord):
            assert isinstance(out.id, str) and 0 < len(out.id) <= MAX_ID_LENGTH
            assert isinstance(out.ts, int)


@FAST
@given(valid_ids, valid_features, st.booleans(), st.data())
def test_mutated_valid_records_only_raise_invalid_record(rid, features, label, data):
    value = bytearray(orjson.dumps({"id": rid, "features": features, "label": label, "ts": 5}))
    ops = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["flip", "drop", "insert", "cut"]),
                st.integers(0, 10_000),
                st.integers(0, 255),
            ),
            min_size=1,
            max_size=5,
        )
    )
    for op, pos, byte in ops:
        if not value:
            break
        i = pos % len(value)
        if op == "flip":
            value[i] = byte
        elif op == "drop":
            del value[i]
        elif op == "insert":
            value.insert(i, byte)
        else:
            del value[i:]
    for decoder in DECODERS:
        decode_or_reject(decoder, bytes(value), max_bytes=len(value) + 1)


@FAST
@given(valid_ids, valid_features, st.integers(min_value=-(2**62), max_value=2**62))
def test_valid_event_round_trips(rid, features, ts):
    value = orjson.dumps({"id": rid, "features": features, "ts": ts})
    e = decode_event(value, timestamp=-1)  # Kafka's "no timestamp": any ts is taken
    assert (e.id, e.features, e.ts) == (rid, features, ts)
    # ts defaults to the Kafka record's timestamp
    e = decode_event(orjson.dumps({"id": rid, "features": features}), timestamp=77)
    assert e.ts == 77


@FAST
@given(
    valid_ids,
    st.one_of(
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    st.integers(min_value=0, max_value=2**62),
)
def test_valid_label_round_trips(rid, label, ts):
    lb = decode_label(orjson.dumps({"id": rid, "label": label, "ts": ts}), timestamp=-1)
    assert (lb.id, lb.label, lb.ts) == (rid, label, ts)
    assert type(lb.label) is type(label)


@FAST
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(-14 * 60 + 1, 14 * 60 - 1),
)
def test_iso_timestamp_is_exact_epoch_ms(moment, offset_minutes):
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    tz = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(tzinfo=tz)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected = (aware - epoch) // timedelta(milliseconds=1)
    value = orjson.dumps({"id": "a", "features": {}, "ts": aware.isoformat()})
    assert decode_event(value, timestamp=-1).ts == expected


def test_iso_millisecond_rounding_regression():
    # int(datetime.timestamp() * 1000) gives ...549 here.
    value = b'{"id": "a", "features": {}, "ts": "1987-03-12T00:11:34.550Z"}'
    assert decode_event(value, timestamp=-1).ts == 542506294550


# -- each reason ----------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("value", [None, b""])
def test_empty(decoder, value):
    assert reason_of(decoder, value) == "empty"


@pytest.mark.parametrize("decoder", DECODERS)
def test_oversize(decoder):
    value = orjson.dumps({"id": "a", "features": {"x": "y" * 100}, "label": 1})
    assert reason_of(decoder, value, max_bytes=50) == "oversize"
    assert decoder(value, timestamp=0, max_bytes=len(value)).id == "a"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    "value",
    [
        b"{",
        b"not json",
        b"\xff\xfe{}",
        b'{"id": "a",}',
        b'{"id": "NaN", "features": {',
        b'"\\ud800"',
    ],
)
def test_not_json(decoder, value):
    assert reason_of(decoder, value) == "not_json"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_non_finite(decoder, literal):
    value = b'{"id": "a", "features": {"x": ' + literal + b'}, "label": ' + literal + b"}"
    assert reason_of(decoder, value) == "non_finite"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("value", [b"[1, 2]", b"1", b'"s"', b"true", b"null"])
def test_not_object(decoder, value):
    assert reason_of(decoder, value) == "not_object"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("obj", [{}, {"id": None}, {"id": ""}])
def test_missing_id(decoder, obj):
    obj = {**obj, "features": {}, "label": 1}
    assert reason_of(decoder, orjson.dumps(obj)) == "missing_id"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("rid", [1, 1.5, True, ["a"], {"a": 1}, "x" * (MAX_ID_LENGTH + 1)])
def test_bad_id(decoder, rid):
    assert reason_of(decoder, orjson.dumps({"id": rid, "features": {}, "label": 1})) == "bad_id"


def test_id_at_max_length_is_fine():
    assert decode_event(orjson.dumps({"id": "x" * MAX_ID_LENGTH, "features": {}}), 0).id


@pytest.mark.parametrize("features", ["absent", None, [1, 2], "x", 3])
def test_bad_features(features):
    obj = {"id": "a"} if features == "absent" else {"id": "a", "features": features}
    assert reason_of(decode_event, orjson.dumps(obj)) == "bad_features"


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, []])
def test_feature_value_wrong_type(value):
    obj = {"id": "a", "features": {"ok": 1, "bad": value}}
    assert reason_of(decode_event, orjson.dumps(obj)) == "wrong_type"


def test_feature_values_of_every_scalar_type_and_null_pass():
    features = {"i": 1, "f": 1.5, "s": "red", "b": False, "n": None}
    assert decode_event(orjson.dumps({"id": "a", "features": features}), 0).features == features


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("ts", [True, False, [1], {"t": 1}, "yesterday", "2021-13-01", ""])
def test_bad_timestamp(decoder, ts):
    obj = {"id": "a", "features": {}, "label": 1, "ts": ts}
    assert reason_of(decoder, orjson.dumps(obj)) == "bad_timestamp"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    "ts, expected",
    [
        ("2021-01-01T00:00:00Z", 1609459200000),
        ("2021-01-01T00:00:00.250Z", 1609459200250),
        ("2021-01-01T01:00:00+01:00", 1609459200000),
        ("2020-12-31T19:00:00-05:00", 1609459200000),
        ("2021-01-01T00:00:00", 1609459200000),  # naive: UTC
        ("1969-12-31T23:59:59.999Z", -1),
        (1609459200123, 1609459200123),  # epoch ms
        (0, 0),
        (1609459200123.9, 1609459200123),
    ],
)
def test_timestamps(decoder, ts, expected):
    obj = {"id": "a", "features": {}, "label": 1, "ts": ts}
    assert decoder(orjson.dumps(obj), timestamp=1609459200000).ts == expected


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_ts_more_than_a_day_after_the_kafka_timestamp_is_rejected(decoder):
    kafka_ts = 1_700_000_000_000

    def ts_of(ts, timestamp=kafka_ts):
        obj = {"id": "a", "features": {}, "label": 1, "ts": ts}
        return decoder(orjson.dumps(obj), timestamp=timestamp).ts

    assert ts_of(kafka_ts + MAX_TS_AHEAD_MS) == kafka_ts + MAX_TS_AHEAD_MS  # clock skew
    assert ts_of(0) == 0  # the past is the merge's business (late records)
    for ahead in (kafka_ts * 1000, kafka_ts + MAX_TS_AHEAD_MS + 1, "2100-01-01T00:00:00Z"):
        with pytest.raises(InvalidRecord, match="days after the record's Kafka timestamp") as e:
            ts_of(ahead)
        assert e.value.reason == "bad_timestamp"
    assert ts_of(kafka_ts * 1000, timestamp=-1) == kafka_ts * 1000  # no Kafka timestamp


@pytest.mark.parametrize("obj", [{"id": "a"}, {"id": "a", "label": None}])
def test_missing_label(obj):
    assert reason_of(decode_label, orjson.dumps(obj)) == "missing_label"


@pytest.mark.parametrize("label", [{"y": 1}, [1], []])
def test_label_not_scalar(label):
    assert reason_of(decode_label, orjson.dumps({"id": "a", "label": label})) == "wrong_label_type"


@pytest.mark.parametrize(
    "task, label, fits",
    [
        ("classification", True, True),
        ("classification", 0, True),
        ("classification", 3, True),
        ("classification", "cat", True),
        ("classification", 0.5, False),
        ("regression", 1, True),
        ("regression", 2.5, True),
        ("regression", -3, True),
        ("regression", True, False),
        ("regression", False, False),
        ("regression", "2.5", False),
    ],
)
def test_label_type_fits_the_task(task, label, fits):
    try:
        check_label_type(label, task)
    except InvalidRecord as e:
        assert e.reason == "wrong_label_type" and e.detail
        assert not fits, f"{label!r} refused for {task}: {e.detail}"
    else:
        assert fits, f"{label!r} taken for {task}"


# Where a dead-letter reason enters the code: raised with InvalidRecord, or given to a
# Rejection, to the learner's _reject or to count_rejection (its ``reason`` parameter).
REASON_TAKERS = ("InvalidRecord", "Rejection", "_reject", "count_rejection")


def _sources() -> dict[str, ast.Module]:
    """Every module of the installed package, parsed: {"package:file": tree}."""
    trees = {}
    for package in PACKAGES:
        for path in sorted(Path(importlib.import_module(package).__path__[0]).glob("*.py")):
            trees[f"{package}:{path.name}"] = ast.parse(path.read_text(), str(path))
    return trees


def _reason_position(node: ast.FunctionDef | ast.ClassDef) -> int:
    """Position of ``reason`` among a function's arguments (self excluded), a class's
    __init__ arguments or its fields (a dataclass)."""
    if isinstance(node, ast.ClassDef):
        init = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        if init:
            node = init[0]
        else:
            fields = [n.target.id for n in node.body if isinstance(n, ast.AnnAssign)]
            return fields.index("reason")
    names = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg != "self"]
    return names.index("reason")


def emitted_reasons() -> dict[str, list[str]]:
    """Every literal reason the code can reject a record with: {reason: [where]}."""
    trees = _sources()
    positions: dict[str, set[int]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in REASON_TAKERS:
                positions.setdefault(node.name, set()).add(_reason_position(node))
    assert set(positions) == set(REASON_TAKERS), "a reason taker was renamed: update the test"
    assert all(len(p) == 1 for p in positions.values()), positions
    position = {name: p.pop() for name, p in positions.items()}
    found: dict[str, list[str]] = {}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if callee not in position:
                continue
            given = [k.value for k in node.keywords if k.arg == "reason"]
            if not given and len(node.args) > position[callee]:
                given = [node.args[position[callee]]]
            for arg in given:  # a name or attribute passes on a reason made elsewhere
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.setdefault(arg.value, []).append(f"{name}:{node.lineno}")
    return found


def test_every_reason_the_code_can_emit_is_documented():
    emitted = emitted_reasons()
    undocumented = {r: where for r, where in emitted.items() if r not in REASONS}
    assert not undocumented, f"reasons emitted but missing from REASONS: {undocumented}"
    never = set(REASONS) - set(emitted)
    assert not never, f"REASONS lists reasons no code emits: {sorted(never)}"
    blank = [r for r, text in REASONS.items() if not (isinstance(text, str) and text.strip())]
    assert not blank, f"REASONS without a description: {blank}"
    # Users find them: the README (or docs/) lists each one, or points to REASONS.
    docs = "\n".join(p.read_text() for p in [REPO / "README.md", *REPO.glob("docs/**/*.md")])
    assert "REASONS" in docs or all(f"`{r}`" in docs for r in REASONS), (
        "README.md and docs/ neither list the dead-letter reasons nor point to REASONS"
    )


# -- outputs --------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=300))
def test_rejection_raw_base64_round_trip(raw):
    r = Rejection("not_json", "x", "events", 3, 42, raw, "id1")
    wire = orjson.loads(encode(r.to_wire()))
    assert base64.b64decode(wire["raw"]) == raw
    assert wire["source"] == {"topic": "events", "partition": 3, "offset": 42}
    assert wire["reason"] == "not_json" and wire["id"] == "id1"


def test_rejection_without_raw_or_id():
    wire = Rejection("join_expired", "ttl").to_wire()
    assert wire["raw"] is None and "id" not in wire


@pytest.mark.parametrize(
    "proba, keys",
    [
        ({False: 0.25, True: 0.75}, {"false": 0.25, "true": 0.75}),
        ({0: 0.1, 1: 0.2, 2: 0.7}, {"0": 0.1, "1": 0.2, "2": 0.7}),
        ({"cat": 1.0}, {"cat": 1.0}),
    ],
)
def test_prediction_wire_class_keys(proba, keys):
    p = Prediction("a", max(proba, key=proba.get), proba, 1, 9, 0, 5, 10, 11)
    wire = orjson.loads(encode(p.to_wire()))
    assert wire["proba"] == keys
    assert wire["model"] == {"generation": 1, "updates": 9}
    assert wire["prediction"] == p.prediction


def test_prediction_without_proba():
    wire = Prediction("a", 2.5, None, 0, 0, 0, 0, 0, 0).to_wire()
    assert "proba" not in wire and wire["prediction"] == 2.5


def test_decoded_records_are_event_and_label():
    assert isinstance(decode_event(b'{"id":"a","features":{}}', 0), Event)
    assert isinstance(decode_label(b'{"id":"a","label":1}', 0), Label)


valid_records = st.builds(
    lambda rid, features, label: orjson.dumps({"id": rid, "features": features, "label": label}),
    valid_ids,
    valid_features,
    st.booleans(),
)


@FAST
@given(
    st.lists(st.one_of(valid_records, record_like.map(orjson.dumps), st.binary(max_size=40))),
    st.sampled_from(["event", "label"]),
    st.integers(0, 12),
)
def test_parsed_then_decoded_records_are_the_records_decoded_one_by_one(values, kind, start):
    """What the worker's two processes do (parse, then decode) gives what decoding each record
    does: the same items, a bad record a `Rejection` at the stream's time so far, the records
    below ``start`` skipped."""
    decoder = decode_event if kind == "event" else decode_label
    records = [(offset, 1000 + offset, value) for offset, value in enumerate(values)]
    expected, last_ts = [], -1
    for offset, timestamp, value in records[start:]:
        try:
            item = decoder(value, timestamp)
        except InvalidRecord as e:
            item = Rejection(e.reason, e.detail, "t", 3, offset, value)
        else:
            item.topic, item.partition, item.offset, item.raw = "t", 3, offset, value
            last_ts = item.ts
        expected.append((last_ts, item))
    got, got_last = decode_records(parse_records(records, kind), kind, "t", 3, -1, start)
    assert got == expected and got_last == last_ts


def test_random_garbage_smoke():
    rng = random.Random(0)
    for _ in range(2000):
        value = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        for decoder in DECODERS:
            decode_or_reject(decoder, value)
