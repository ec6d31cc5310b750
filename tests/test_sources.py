"""Tests for producers/sources.py: synthetic and file streams, label delays, arrival order."""

from __future__ import annotations

import random
import statistics

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import evaluate, linear_model, metrics, preprocessing, stream, tree
from river.datasets import synth

from driftstream.producers.sources import (
    STREAMS,
    ConstantDelay,
    ExpDelay,
    Sample,
    UniformDelay,
    arrival_order,
    event_record,
    file_samples,
    label_record,
    parse_delay,
    river_delay,
    synthetic,
)
from driftstream.stream.codec import decode_event, decode_label

PLAIN = (float, int, str, bool, type(None))


# ------------------------------------------------------------------------------ synthetic


def test_same_seed_same_samples_and_other_seed_differs():
    kw = dict(drift_at=[30], label_delay="exp:5", missing_labels=0.2)
    a = list(synthetic("agrawal", 60, seed=3, **kw))
    assert a == list(synthetic("agrawal", 60, seed=3, **kw))
    assert [s.x for s in a] != [s.x for s in synthetic("agrawal", 60, seed=4, **kw)]


def test_features_do_not_depend_on_delay_or_missing_labels():
    base = list(synthetic("sea", 200, seed=1))
    delayed = list(synthetic("sea", 200, seed=1, label_delay="uniform:0:50", missing_labels=0.5))
    assert [(s.x, s.y) for s in base] == [(s.x, s.y) for s in delayed]
    # Missing labels only blank out labels; the other labels keep their delays.
    full = list(synthetic("sea", 200, seed=1, label_delay="uniform:0:50"))
    assert all(d.label_ts in (None, f.label_ts) for d, f in zip(delayed, full))


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_stream_yields_plain_string_keyed_samples(name):
    kw = dict(seed=5, drift_at=[20], start_ts=1000, step=10, id_prefix="q")
    samples = list(synthetic(name, 40, **kw))
    assert [s.id for s in samples] == [f"q{i}" for i in range(40)]
    assert [s.ts for s in samples] == [1000 + 10 * i for i in range(40)]
    assert all(s.label_ts == s.ts for s in samples)
    for s in samples:
        assert all(isinstance(k, str) for k in s.x)
        assert all(isinstance(v, PLAIN) for v in s.x.values())
        # wire-ready: the worker's decoder takes both records as they are
        event = decode_event(orjson.dumps(event_record(s)), timestamp=-1)
        assert (event.id, event.features, event.ts) == (s.id, s.x, s.ts)
        label = decode_label(orjson.dumps(label_record(s)), timestamp=-1)
        assert (label.id, label.label, label.ts) == (s.id, s.y, s.label_ts)
    if STREAMS[name].task == "regression":
        assert all(isinstance(s.y, float) for s in samples)
    else:
        assert all(isinstance(s.y, (int, bool)) for s in samples)


def test_without_drift_the_stream_is_rivers_generator_with_that_seed():
    ours = list(synthetic("sea", 20, seed=11))
    river = list(synth.SEA(seed=11).take(20))
    assert [(s.x, s.y) for s in ours] == [({f"x{k}": v for k, v in x.items()}, y) for x, y in river]


def test_hyperplane_ignores_drift_at():
    assert list(synthetic("hyperplane", 50, drift_at=[10])) == list(synthetic("hyperplane", 50))


@pytest.mark.parametrize("name", ["sea", "agrawal"])
def test_drift_at_changes_the_concept(name):
    samples = list(synthetic(name, 6000, seed=7, drift_at=[4000]))
    model = tree.HoeffdingTreeClassifier()
    for s in samples[:3000]:
        model.learn_one(s.x, s.y)

    def accuracy(part):
        return sum(model.predict_one(s.x) == s.y for s in part) / len(part)

    held_out, after = accuracy(samples[3000:4000]), accuracy(samples[4000:])
    assert held_out > 0.9
    assert after < held_out - 0.05


def test_friedman_drift_changes_the_regression_target():
    samples = list(synthetic("friedman", 5000, seed=7, drift_at=[4000]))
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    for s in samples[:3000]:
        model.learn_one(s.x, s.y)

    def mae(part):
        return sum(abs(model.predict_one(s.x) - s.y) for s in part) / len(part)

    assert mae(samples[4000:]) > 1.3 * mae(samples[3000:4000])


def test_bad_synthetic_arguments():
    with pytest.raises(ValueError, match="unknown synthetic stream"):
        synthetic("nope", 5)  # checked on call, not on first iteration
    with pytest.raises(ValueError, match="drift_at"):
        list(synthetic("sea", 5, drift_at=[3, 2]))
    with pytest.raises(ValueError, match="missing_labels"):
        list(synthetic("sea", 5, missing_labels=1.5))


# ------------------------------------------------------------------------------ delays


def test_parse_delay_kinds():
    assert parse_delay("100") == ConstantDelay(100)
    assert parse_delay("0") == ConstantDelay(0)
    assert parse_delay(7) == ConstantDelay(7)
    assert parse_delay("uniform:50:150") == UniformDelay(50, 150)
    assert parse_delay("exp:100") == ExpDelay(100.0)
    for spec in ["100", "uniform:50:150", "exp:100"]:
        assert str(parse_delay(spec)) == spec


@pytest.mark.parametrize(
    "spec", ["-1", "uniform:5:1", "uniform:-1:3", "exp:-2", "exp", "gauss:1", "", "1.5"]
)
def test_parse_delay_rejects_bad_specs(spec):
    with pytest.raises(ValueError, match="invalid label delay"):
        parse_delay(spec)


def test_delays_are_deterministic_non_negative_ints():
    for spec in ["0", "100", "uniform:50:150", "exp:100"]:
        delay = parse_delay(spec)
        a = [delay(r) for r in [random.Random(9)] for _ in range(500)]
        b = [delay(r) for r in [random.Random(9)] for _ in range(500)]
        assert a == b
        assert all(isinstance(d, int) and d >= 0 for d in a)


def test_uniform_and_exp_delay_distributions():
    rng = random.Random(0)
    uniform = [parse_delay("uniform:50:150")(rng) for _ in range(5000)]
    assert min(uniform) == 50 and max(uniform) == 150
    exp = [parse_delay("exp:100")(rng) for _ in range(5000)]
    assert 90 < statistics.mean(exp) < 110


def test_synthetic_delays_respect_spec():
    samples = list(synthetic("sine", 2000, label_delay="uniform:50:150", step=3))
    delays = [s.label_ts - s.ts for s in samples]
    assert min(delays) >= 50 and max(delays) <= 150
    assert len(set(delays)) > 50
    assert all(s.label_ts - s.ts == 100 for s in synthetic("sine", 50, label_delay="100"))


def test_missing_labels_fraction():
    samples = list(synthetic("stagger", 5000, missing_labels=0.3))
    missing = sum(s.label_ts is None for s in samples) / len(samples)
    assert 0.27 < missing < 0.33
    assert all(s.y is not None for s in samples)  # the label exists, it just never arrives


# ------------------------------------------------------------------------------ files


def _frame():
    return pd.DataFrame(
        {
            "id": ["007", "8", "9", "10"],
            "amount": [1.5, None, 3.0, 4.0],
            "count": pd.array([1, 2, None, 4], dtype="Int64"),
            "city": ["a", "b", None, "d"],
            "label": pd.array([1, None, 0, 1], dtype="Int64"),
        }
    )


def test_csv_without_timestamp(tmp_path):
    path = tmp_path / "data.csv"
    _frame().to_csv(path, index=False)
    samples = list(file_samples(str(path), "id", "label", label_delay=2))
    assert [s.id for s in samples] == ["007", "8", "9", "10"]
    assert [s.ts for s in samples] == [0, 1, 2, 3]
    assert [s.label_ts for s in samples] == [2, None, 4, 5]
    assert [s.y for s in samples] == [1, None, 0, 1]
    assert samples[0].x == {"amount": 1.5, "count": 1, "city": "a"}
    assert samples[1].x == {"amount": None, "count": 2, "city": "b"}
    assert samples[2].x == {"amount": 3.0, "count": None, "city": None}
    assert type(samples[0].x["count"]) is int and type(samples[0].y) is int


def test_csv_with_iso_timestamps(tmp_path):
    path = tmp_path / "data.csv"
    frame = _frame().assign(
        at=[
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:01.5Z",
            "2024-01-01T01:00:00+01:00",
            "2024-01-01 00:00:02",
        ]
    )
    frame.to_csv(path, index=False)
    samples = list(file_samples(str(path), "id", "label", timestamp_column="at", label_delay=1000))
    t0 = 1704067200000  # 2024-01-01T00:00:00Z in epoch-ms; naive times are UTC
    assert [s.ts for s in samples] == [t0, t0 + 1500, t0, t0 + 2000]
    assert [s.label_ts for s in samples] == [t0 + 1000, None, t0 + 1000, t0 + 3000]
    assert "at" not in samples[0].x


def test_ndjson_with_numeric_timestamps(tmp_path):
    rows = [
        {"id": 1, "timestamp": 100, "v": 0.5, "tag": "x", "label": "yes"},
        {"id": 2, "timestamp": 105, "v": None, "tag": "y", "label": ""},
        {"id": 3, "timestamp": 110, "v": 2.5, "label": "no"},
    ]
    for suffix in [".ndjson", ".jsonl"]:
        path = tmp_path / f"data{suffix}"
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
        samples = list(
            file_samples(str(path), "id", "label", timestamp_column="timestamp", label_delay=7)
        )
        assert [s.id for s in samples] == ["1", "2", "3"]
        assert [(s.ts, s.label_ts, s.y) for s in samples] == [
            (100, 107, "yes"),
            (105, None, None),
            (110, 117, "no"),
        ]
        assert [s.x for s in samples] == [
            {"v": 0.5, "tag": "x"},
            {"v": None, "tag": "y"},
            {"v": 2.5, "tag": None},
        ]


def test_parquet_with_datetime_column(tmp_path):
    path = tmp_path / "data.parquet"
    at = ["2024-01-01", "2024-01-01 00:00:00.25", "2024-01-02", "2024-01-02"]
    frame = _frame().assign(at=pd.to_datetime(at, format="ISO8601"))  # naive: taken as UTC
    frame.to_parquet(path, index=False)
    samples = list(file_samples(str(path), "id", "label", timestamp_column="at"))
    t0 = 1704067200000
    assert [s.ts for s in samples] == [t0, t0 + 250, t0 + 86_400_000, t0 + 86_400_000]
    assert [s.label_ts for s in samples] == [t0, None, t0 + 86_400_000, t0 + 86_400_000]
    assert samples[1].x == {"amount": None, "count": 2, "city": "b"}
    assert all(isinstance(v, PLAIN) for s in samples for v in s.x.values())


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "data.csv"
    _frame().to_csv(path, index=False)
    expected = r"missing column\(s\) \['target'\].*available columns: \['id', 'amount'"
    with pytest.raises(ValueError, match=expected):
        file_samples(str(path), "id", "target")
    with pytest.raises(ValueError, match=r"\['when'\]"):
        list(file_samples(str(path), "id", "label", timestamp_column="when"))


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    expected = r"unsupported file type '\.xlsx'.*\.csv.*\.jsonl.*\.ndjson.*\.parquet"
    with pytest.raises(ValueError, match=expected):
        list(file_samples(str(path), "id", "label"))


# ------------------------------------------------------------------------------ records, order


def test_wire_records():
    s = Sample("e1", {"a": 1.0}, 0, 10, 12)
    assert event_record(s) == {"id": "e1", "features": {"a": 1.0}, "ts": 10}
    assert label_record(s) == {"id": "e1", "label": 0, "ts": 12}
    with pytest.raises(ValueError):
        label_record(Sample("e2", {}, 0, 10, None))


def _river_answer_order(samples, constant_delay=None):
    """Indices in the order simulate_qa reveals their answers, timing given by index keys."""
    dataset = [({"i": k}, s.y) for k, s in enumerate(samples)]
    moment = lambda x: samples[x["i"]].ts  # noqa: E731
    delay = (
        constant_delay
        if constant_delay is not None
        else (lambda x, y: samples[x["i"]].label_ts - samples[x["i"]].ts)
    )
    return [i for i, x, y in stream.simulate_qa(dataset, moment, delay) if y is not None]


@pytest.mark.parametrize("spec", ["0", "3", "uniform:0:20", "exp:10"])
def test_arrival_order_matches_simulate_qa(spec):
    samples = list(synthetic("sea", 500, seed=2, label_delay=spec, step=2))
    events, labels = arrival_order(samples)
    assert events == samples
    position = {s.id: k for k, s in enumerate(samples)}
    assert [position[s.id] for s in labels] == _river_answer_order(samples)
    if spec in ("0", "3"):  # River's own constant-delay path (no sorting) agrees too
        assert [position[s.id] for s in labels] == _river_answer_order(samples, int(spec))


def test_arrival_order_skips_labels_that_never_arrive():
    samples = list(synthetic("sea", 300, label_delay="uniform:0:9", missing_labels=0.4))
    _, labels = arrival_order(samples)
    assert {s.id for s in labels} == {s.id for s in samples if s.label_ts is not None}
    assert [s.label_ts for s in labels] == sorted(s.label_ts for s in labels)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6)), max_size=30))
def test_arrival_order_matches_simulate_qa_with_ties(steps_and_delays):
    ts, samples = 0, []
    for k, (gap, d) in enumerate(steps_and_delays):
        ts += gap
        samples.append(Sample(f"e{k}", {}, k % 2, ts, ts + d))
    _, labels = arrival_order(samples)
    assert [int(s.id[1:]) for s in labels] == _river_answer_order(samples)


def _replay(samples, model, metric):
    """Prequential evaluation from the two arrival-ordered streams, as one partition's worker.

    Merge order: by time; at equal times a label goes before an event that comes later in the
    input, but never before its own event (a zero-delay label follows its event). Like River,
    a missing prediction (None or {}) is not scored.
    """
    events, labels = arrival_order(samples)
    position = {s.id: k for k, s in enumerate(events)}
    merged = sorted(
        [(s.label_ts, position[s.id], 1, s) for s in labels]
        + [(s.ts, k, 0, s) for k, s in enumerate(events)],
        key=lambda r: r[:3],
    )
    pending = {}
    for _, _, kind, s in merged:
        if kind == 0:
            pending[s.id] = model.predict_one(s.x)
        else:
            y_pred = pending.pop(s.id)
            if y_pred is not None and y_pred != {}:
                metric.update(s.y, y_pred)
            model.learn_one(s.x, s.y)
    return metric


@pytest.mark.parametrize("spec", ["0", "25", "exp:15"])
def test_river_delay_round_trips(spec):
    samples = list(synthetic("agrawal", 1500, seed=4, drift_at=[700], label_delay=spec, step=5))
    dataset, moment, delay = river_delay(samples)
    assert [(x, y) for x, y in dataset] == [(s.x, s.y) for s in samples]
    assert [moment(x) for x, _ in dataset] == [s.ts for s in samples]
    assert [delay(x, y) for x, y in dataset] == [s.label_ts - s.ts for s in samples]
    assert all(x is not s.x for (x, _), s in zip(dataset, samples))  # fresh dicts

    river = evaluate.progressive_val_score(
        dataset, tree.HoeffdingTreeClassifier(), metrics.Accuracy(), moment=moment, delay=delay
    )
    ours = _replay(samples, tree.HoeffdingTreeClassifier(), metrics.Accuracy())
    assert ours.get() == river.get()
    assert ours.cm.total_weight == river.cm.total_weight > 0.99 * len(samples)


def test_river_delay_rejects_labels_that_never_arrive():
    samples = list(synthetic("sea", 100, missing_labels=0.5))
    with pytest.raises(ValueError, match="never arrives"):
        river_delay(samples)
    _, moment, _ = river_delay(samples[:0])
    with pytest.raises(KeyError):
        moment({})
