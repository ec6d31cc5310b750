"""The learner of one partition: joins, bounds, bad input, drift reports and policies."""

from __future__ import annotations

import copy
import gc
import itertools
import pickle
import random
import re
from collections import Counter

import orjson
import pytest
from river import metrics
from river.datasets import synth

from driftstream.stream.codec import REASONS
from driftstream.stream.data_monitor import DataAlarm, DataMonitor
from driftstream.stream.drift import DataDriftMonitor, ErrorMonitor
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.metrics import HELD_UPDATES, MetricSet
from driftstream.stream.offline import run_offline
from driftstream.stream.records import (
    DriftReport,
    Event,
    Label,
    ModelVersion,
    Prediction,
    Rejection,
)


def config(**kw) -> LearnerConfig:
    kw.setdefault("data_drift", False)
    return LearnerConfig(**kw)


def of(outs, kind):
    return [o for o in outs if isinstance(o, kind)]


def reasons(outs) -> list[str]:
    return [o.reason for o in of(outs, Rejection)]


def sea(n: int, seed: int = 7, noise: float = 0.1) -> list[tuple[dict, bool]]:
    return list(itertools.islice(synth.SEA(variant=0, noise=noise, seed=seed), n))


def flipped(n: int = 5000, at: int = 3000, seed: int = 7) -> list[tuple[dict, bool]]:
    """SEA whose labels flip at ``at``: the strongest sudden concept drift."""
    return [(x, y if i < at else not y) for i, (x, y) in enumerate(sea(n, seed))]


def zero_delay(dataset):
    events = [Event(f"e{i}", dict(x), ts=i, offset=i) for i, (x, _) in enumerate(dataset)]
    labels = [Label(f"e{i}", y, ts=i) for i, (_, y) in enumerate(dataset)]
    return events, labels


def run(dataset, **kw):
    return run_offline(*zero_delay(dataset), config(**kw))


# -- joins and their bounds -------------------------------------------------------------------


def test_pending_ttl_expiry_then_late_label():
    learner = Learner(config(pending_ttl=10))
    assert of(learner.process_event(Event("a", {"x": 1.0, "gone": None}, ts=0)), Prediction)
    assert of(learner.process_event(Event("b", {"x": 2.0}, ts=10)), Prediction)  # 10 - 0 <= ttl
    outs = learner.process_event(Event("c", {"x": 3.0}, ts=11))
    expired = of(outs, Rejection)
    assert [r.reason for r in expired] == ["join_expired"]
    r = expired[0]
    assert r.id == "a" and "pending_ttl=10" in r.detail
    assert orjson.loads(r.raw) == {"id": "a", "features": {"x": 1.0}, "ts": 0}
    assert of(outs, Prediction)[0].id == "c"
    assert set(learner.pending) == {"b", "c"}

    assert reasons(learner.process_label(Label("a", True, ts=12))) == ["label_past_ttl"]
    assert learner.process_label(Label("b", True, ts=12)) == []  # 12 - 10 <= ttl: joins
    assert learner.n_labels == 1
    # a label whose own arrival moves the clock past its event's TTL expires it, then is late
    outs = learner.process_label(Label("c", False, ts=22))
    assert [(r.reason, r.id) for r in of(outs, Rejection)] == [
        ("join_expired", "c"),
        ("label_past_ttl", "c"),
    ]
    assert learner.rejected == {"join_expired": 2, "label_past_ttl": 2}


def test_max_pending_evicts_oldest():
    learner = Learner(config(max_pending=2))
    outs = []
    for i in range(4):
        outs += learner.process_event(Event(f"e{i}", {"x": float(i)}, ts=i))
    assert [(r.reason, r.id) for r in of(outs, Rejection)] == [
        ("join_expired", "e0"),
        ("join_expired", "e1"),
    ]
    assert "max_pending" in of(outs, Rejection)[0].detail
    assert len(of(outs, Prediction)) == 4
    assert list(learner.pending) == ["e2", "e3"]
    assert reasons(learner.process_label(Label("e0", True, ts=5))) == ["label_past_ttl"]
    assert learner.process_label(Label("e3", True, ts=5)) == []


def fifo_learner() -> tuple[Learner, list]:
    """A learner with ids in all four oldest-first containers, some remembered ids evicted."""
    learner = Learner(config(remember_ids=3, pending_ttl=50))
    outs = []
    for i in range(8):
        outs += learner.process_event(Event(f"e{i}", {"x": float(i)}, ts=i))
        outs += learner.process_label(Label(f"e{i}", i % 2 == 0, ts=i))
    outs += learner.process_event(Event("\ud800", {"x": 1.0}, ts=9))  # no JSON can hold it
    outs += learner.process_label(Label("\ud800", True, ts=9))
    outs += learner.process_event(Event("old", {"x": 1.0}, ts=10))
    outs += learner.process_event(Event("new", {"x": 2.0}, ts=70))  # "old" expires
    outs += learner.process_label(Label("early", True, ts=70))
    return learner, outs


def containers(learner: Learner) -> dict[str, list]:
    return {
        name: list(getattr(learner, name)) for name in ("pending", "early", "joined", "expired")
    }


def test_remembered_ids_are_bounded_oldest_first_and_survive_a_checkpoint():
    learner, _ = fifo_learner()
    assert containers(learner) == {
        "pending": ["new"],
        "early": ["early"],
        "joined": ["e6", "e7", "\ud800"],
        "expired": ["old"],
    }
    assert reasons(learner.process_label(Label("e7", True, ts=71))) == ["duplicate_label"]
    assert learner.process_label(Label("e1", True, ts=71)) == []  # forgotten: waits as early
    assert reasons(learner.process_label(Label("old", True, ts=71))) == ["label_past_ttl"]

    fresh, _ = fifo_learner()
    restored = Learner.from_bytes(fresh.to_bytes())
    assert containers(restored) == containers(fresh)
    # Checkpoints from before: plain dicts, ids pickled one by one; remembered ids as a JSON
    # object ({"id": null, ...}, oldest first)
    old = fresh.__dict__.copy()
    old.update({name: dict(getattr(fresh, name)) for name in ("pending", "early")})
    old.update({name: dict.fromkeys(getattr(fresh, name)) for name in ("joined", "expired")})
    from_old = Learner.__new__(Learner)
    from_old.__setstate__(old)
    assert containers(from_old) == containers(fresh)
    as_object = old | {"expired": orjson.dumps(dict.fromkeys(fresh.expired))}
    from_object = Learner.__new__(Learner)
    from_object.__setstate__(as_object)
    assert containers(from_object) == containers(fresh)
    after = [
        Label("e7", True, ts=71),
        Label("e1", True, ts=71),
        Label("old", True, ts=71),
        Label("new", False, ts=72),
    ]
    assert learner.process_label(after[-1]) == []
    for twin in (restored, from_old):
        got = [reasons(twin.process_label(lb)) for lb in after]
        assert got == [["duplicate_label"], [], ["label_past_ttl"], []]
        assert containers(twin) == containers(learner)
        assert twin.canonical_bytes() == learner.canonical_bytes()


def test_remembered_ids_are_not_walked_by_the_garbage_collector():
    # 100,000 remembered ids in an OrderedDict made each full collection cost 5-15 ms
    learner = Learner(config(remember_ids=1000))
    for i in range(3000):
        learner.process_event(Event(f"e{i}", {"x": float(i % 7)}, ts=i))
        learner.process_label(Label(f"e{i}", i % 2 == 0, ts=i))
    assert len(learner.joined) == 1000
    assert "e2999" in learner.joined and "e1999" not in learner.joined
    gc.collect()
    for ids in (learner.joined, learner.expired):
        dicts = [r for r in gc.get_referents(ids) if isinstance(r, dict)]
        assert len(dicts) == 2 and not any(gc.is_tracked(d) for d in dicts)


def test_early_labels_equal_in_order():
    """Labels stamped just before their events (clock skew) give what in-order labels give."""
    dataset = sea(1500)
    events = [Event(f"e{i}", dict(x), ts=2 * i) for i, (x, _) in enumerate(dataset)]
    early = [Label(f"e{i}", y, ts=2 * i - 1) for i, (_, y) in enumerate(dataset)]
    in_order = [Label(f"e{i}", y, ts=2 * i + 1) for i, (_, y) in enumerate(dataset)]
    cfg = config(model="lr", drift_policy="reset")
    a, outs_a = run_offline(events, early, cfg)
    b, outs_b = run_offline(events, in_order, cfg)

    def key(outs):
        return [
            (o.id, o.prediction, o.proba, o.generation, o.updates) for o in of(outs, Prediction)
        ]

    assert key(outs_a) == key(outs_b)
    assert a.metrics.report() == b.metrics.report()
    assert a.version == b.version and a.n_labels == b.n_labels == len(dataset)
    assert not of(outs_a, Rejection) and not a.early and not a.pending


def test_early_label_is_applied_right_after_its_event():
    learner = Learner(config())
    assert learner.process_label(Label("a", True, ts=0)) == []
    assert list(learner.early) == ["a"]
    outs = learner.process_event(Event("a", {"x": 1.0}, ts=3))
    assert [type(o) for o in outs] == [Prediction]
    assert outs[0].updates == 0  # scored before it learned from its own label
    assert learner.version.updates == 1 and not learner.early and not learner.pending


def test_early_label_without_event_expires_after_wait():
    learner = Learner(config(early_label_wait=100))
    learner.process_label(Label("ghost", True, ts=0))
    assert learner.process_event(Event("a", {"x": 1.0}, ts=100))[0].id == "a"  # 100 <= wait
    outs = learner.process_event(Event("b", {"x": 1.0}, ts=101))
    assert [(r.reason, r.id) for r in of(outs, Rejection)] == [("unknown_id", "ghost")]
    assert "early_label_wait=100" in of(outs, Rejection)[0].detail
    assert not learner.early
    # only events expire early labels: a later label does not
    learner.process_label(Label("ghost2", True, ts=200))
    assert reasons(learner.process_label(Label("ghost3", True, ts=301))) == []
    assert reasons(learner.process_event(Event("c", {"x": 1.0}, ts=301))) == ["unknown_id"]
    assert list(learner.early) == ["ghost3"]


def test_a_burst_of_labels_ahead_of_their_events_waits_for_them():
    """Labels released far ahead of the events (an events input that looked caught up while
    its records were still on the way; failed the demo under load) all join their events."""
    learner = Learner(config(early_label_wait=100))
    for i in range(1000):
        assert learner.process_label(Label(f"e{i}", i % 2 == 0, ts=i + 10)) == []
    outs = [o for i in range(1000) for o in learner.process_event(Event(f"e{i}", {"x": i}, ts=i))]
    assert not of(outs, Rejection) and len(of(outs, Prediction)) == 1000
    assert not learner.early and learner.n_labels == 1000


def test_early_label_buffer_full():
    learner = Learner(config(max_early_labels=2, early_label_wait=10**9))
    assert learner.process_label(Label("u0", True, ts=0)) == []
    assert learner.process_label(Label("u1", True, ts=1)) == []
    outs = learner.process_label(Label("u2", True, ts=2))
    assert [(r.reason, r.id) for r in of(outs, Rejection)] == [("unknown_id", "u0")]
    assert "buffer full" in outs[0].detail
    assert list(learner.early) == ["u1", "u2"]


def test_duplicate_labels():
    learner = Learner(config())
    learner.process_event(Event("a", {"x": 1.0}, ts=0))
    assert learner.process_label(Label("a", True, ts=1)) == []
    outs = learner.process_label(Label("a", False, ts=2, topic="labels", offset=9, raw=b"dup"))
    assert reasons(outs) == ["duplicate_label"]
    r = outs[0]
    assert (r.topic, r.offset, r.raw, r.id) == ("labels", 9, b"dup", "a")
    # a second label while the first still waits for its event
    learner.process_label(Label("b", True, ts=3))
    assert reasons(learner.process_label(Label("b", True, ts=3))) == ["duplicate_label"]
    assert learner.n_labels == 1 and learner.version.updates == 1


def test_duplicate_event():
    learner = Learner(config())
    assert of(learner.process_event(Event("a", {"x": 1.0}, ts=0, offset=4)), Prediction)
    outs = learner.process_event(Event("a", {"x": 5.0}, ts=1, offset=3, raw=b"again"))
    assert reasons(outs) == ["duplicate_event"] and not of(outs, Prediction)
    assert outs[0].raw == b"again" and outs[0].offset == 3
    assert "first received at offset 4" in outs[0].detail
    assert learner.pending["a"].x == {"x": 1.0}  # the first one stays
    assert learner.n_events == 1


def test_an_event_resent_after_its_join_or_expiry_is_not_scored_again():
    """An at-least-once producer's retry may come after the first one was labelled."""
    learner = Learner(config(pending_ttl=10))
    learner.process_event(Event("a", {"x": 1.0}, ts=0, offset=0))
    learner.process_label(Label("a", True, ts=1))
    learner.process_event(Event("b", {"x": 1.0}, ts=2, offset=1))
    learner.process_event(Event("c", {"x": 1.0}, ts=20, offset=2))  # b expires
    state = learner.canonical_bytes()
    for twin in (learner, Learner.from_bytes(learner.to_bytes())):  # a checkpoint keeps it
        joined = twin.process_event(Event("a", {"x": 9.0}, ts=21, offset=7))
        expired = twin.process_event(Event("b", {"x": 9.0}, ts=21, offset=8))
        assert reasons(joined) == reasons(expired) == ["duplicate_event"]
        assert not of(joined + expired, Prediction)
        assert "offset 0 and was labelled" in joined[0].detail
        assert "offset 1 and expired" in expired[0].detail
        assert twin.n_events == 3 and twin.n_labels == 1 and twin.version.updates == 1
    assert Learner.from_bytes(state).canonical_bytes() == state


def test_a_label_that_does_not_fit_is_rejected_before_the_join():
    """It used to join, count in the metrics and ADWIN, fail in learn_one (model_error), and
    take the join from the true label that came next (duplicate_label)."""
    learner = Learner(config(model="lr"))
    for i in range(20):
        learner.process_event(Event(f"e{i}", {"x": float(i % 2)}, ts=i))
        learner.process_label(Label(f"e{i}", i % 2 == 0, ts=i))
    learner.process_event(Event("z", {"x": 1.0}, ts=30))
    before = (learner.metrics.report(), learner.monitor.n_seen, learner.version, learner.classes)
    outs = learner.process_label(Label("z", "oops", ts=31, offset=5, raw=b"bad"))
    assert reasons(outs) == ["invalid_label"] and outs[0].offset == 5 and outs[0].raw == b"bad"
    assert "binary model (LogisticRegression)" in outs[0].detail
    assert "z" in learner.pending
    assert (learner.metrics.report(), learner.monitor.n_seen, learner.version) == before[:3]
    assert learner.classes == before[3] == {True, False}
    assert learner.process_label(Label("z", True, ts=32)) == []  # the true label joins
    assert learner.n_labels == 21 and learner.version.updates == 21
    assert learner.rejected == {"invalid_label": 1}
    # 0/1 are the same classes as false/true; 2 is none of a binary model's
    assert learner.process_event(Event("y", {"x": 1.0}, ts=33))
    assert reasons(learner.process_label(Label("y", 2, ts=34))) == ["invalid_label"]
    assert learner.process_label(Label("y", 1, ts=35)) == []


@pytest.mark.parametrize(
    ("labels", "bad"), [(["a", "b"], 3), (["a", "b"], True), ([True, False], "yes"), ([1, 2], "1")]
)
def test_a_multiclass_label_of_another_type_is_invalid(labels, bad):
    learner = Learner(config(model="gnb"))
    for i, y in enumerate(labels):
        learner.process_event(Event(f"e{i}", {"x": float(i)}, ts=i))
        learner.process_label(Label(f"e{i}", y, ts=i))
    learner.process_event(Event("z", {"x": 1.0}, ts=9))
    outs = learner.process_label(Label("z", bad, ts=9))
    assert reasons(outs) == ["invalid_label"] and "does not fit the labels so far" in outs[0].detail
    assert learner.process_label(Label("z", labels[0], ts=9)) == []
    assert learner.n_labels == len(labels) + 1


def test_wrong_label_type_classification():
    learner = Learner(config(model="lr"))
    learner.process_event(Event("a", {"x": 1.0}, ts=0))
    assert reasons(learner.process_label(Label("a", 0.5, ts=1))) == ["wrong_label_type"]
    assert "a" in learner.pending  # the event still waits for a usable label
    assert learner.process_label(Label("a", True, ts=2)) == []
    assert learner.n_labels == 1


@pytest.mark.parametrize("bad", [True, "1.5"])
def test_wrong_label_type_regression(bad):
    learner = Learner(config(model="linreg"))
    learner.process_event(Event("a", {"x": 1.0}, ts=0))
    assert reasons(learner.process_label(Label("a", bad, ts=1))) == ["wrong_label_type"]
    assert learner.process_label(Label("a", 1.5, ts=2)) == []


def test_schema_rejection_in_learner():
    learner = Learner(config(schema={"features": {"x": "number"}, "extra": "reject"}))
    assert reasons(learner.process_event(Event("a", {"x": "1"}, ts=0))) == ["wrong_type"]
    assert reasons(learner.process_event(Event("b", {"x": 1, "y": 2}, ts=0))) == ["extra_feature"]
    assert of(learner.process_event(Event("c", {"x": 1}, ts=0)), Prediction)


def test_string_feature_into_linear_model_is_model_error_and_stream_continues():
    learner = Learner(config(model="lr"))
    outs = []
    for i in range(5):
        outs += learner.process_event(Event(f"n{i}", {"x": float(i)}, ts=i))
        outs += learner.process_label(Label(f"n{i}", i % 2 == 0, ts=i))
    outs = learner.process_event(Event("s", {"x": 1.0, "colour": "red"}, ts=10, raw=b"s"))
    outs += learner.process_label(Label("s", True, ts=10, raw=b"ls"))
    errors = [r for r in of(outs, Rejection) if r.reason == "model_error"]
    assert len(errors) == 1 and "TypeError" in errors[0].detail and errors[0].id == "s"
    before = learner.version.updates
    outs = learner.process_event(Event("n9", {"x": 2.0}, ts=11))
    outs += learner.process_label(Label("n9", True, ts=11))
    assert of(outs, Prediction) and not of(outs, Rejection)
    assert learner.version.updates == before + 1
    assert learner.rejected == {"model_error": 1}


def test_summary_is_json_and_counters_add_up():
    rng = random.Random(5)
    learner = Learner(
        LearnerConfig(
            model="lr",
            pending_ttl=50,
            max_early_labels=5,
            early_label_wait=20,
            data_drift=True,
        )
    )
    learner.data_monitor = ScriptedMonitor(alarm_every=700)
    counts = Counter()
    assert orjson.loads(orjson.dumps(learner.summary()))["n_events"] == 0
    for i in range(3000):
        shift = 10.0 if i >= 1500 else 0.0
        records = [Event(f"e{i}", {"x": rng.random() + shift, "c": rng.choice("ab")}, ts=i)]
        roll = rng.random()
        if roll < 0.8:
            records.append(Label(f"e{i}", rng.random() < 0.5, ts=i))
        elif roll < 0.84:
            records.append(Label(f"e{i}", 0.5, ts=i))  # wrong type
        elif roll < 0.85:
            records.append(Label(f"e{i}", "yes", ts=i))  # not a class of this binary model
        elif roll < 0.9:
            records.append(Label(f"nobody{i}", True, ts=i))  # unknown id
        if rng.random() < 0.05:
            records.append(Label(f"e{i}", True, ts=i))  # duplicate
        if rng.random() < 0.05:
            records.append(Event(f"e{i}", {"x": 1.0}, ts=i))  # duplicate event
        for rec in records:
            outs = (
                learner.process_event(rec) if isinstance(rec, Event) else learner.process_label(rec)
            )
            for o in outs:
                counts[type(o).__name__] += 1
                if isinstance(o, Rejection):
                    counts["r:" + o.reason] += 1
                elif isinstance(o, DriftReport):
                    counts["d:" + o.kind] += 1
    summary = orjson.loads(orjson.dumps(learner.summary()))
    assert summary["n_events"] == counts["Prediction"]
    assert sum(summary["rejected"].values()) == counts["Rejection"]
    assert summary["rejected"] == {k[2:]: v for k, v in counts.items() if k.startswith("r:")}
    assert set(summary["rejected"]) <= set(REASONS)
    assert {
        "wrong_label_type",
        "invalid_label",
        "unknown_id",
        "duplicate_label",
        "duplicate_event",
        "join_expired",
    } <= set(summary["rejected"])
    assert summary["drifts"] == {"concept": counts["d:concept"], "data": counts["d:data"]}
    assert summary["drifts"]["data"] >= 1
    assert summary["n_labels"] == summary["metrics"]["n_labels"] == learner.metrics.n_labels
    assert summary["pending"] == len(learner.pending) and summary["clock"] == 2999
    assert summary["model"] == learner.version.to_wire()
    assert summary["data_drift"]["latest"] == [{"test": "ks", "feature": "x", "statistic": 0.5}]


# -- drift ------------------------------------------------------------------------------------


def test_data_drift_report_names_the_feature():
    """With the real monitor: a mean jump of 5 widths in one feature, the others steady."""
    rng = random.Random(1)
    learner = Learner(
        LearnerConfig(
            model="gnb",
            data_drift=True,
            data_reference_size=500,
            data_window=500,
            data_check_every=100,
        )
    )
    reports = []
    for i in range(4000):
        x = {
            "jumps": rng.random() + (5.0 if i >= 1500 else 0.0),
            "steady": rng.random(),
            "colour": rng.choice("rgb"),
            "flag": rng.random() < 0.5,
        }
        reports += of(learner.process_event(Event(f"e{i}", x, ts=i)), DriftReport)
    assert reports, "a mean jump of 5 standard widths must be detected"
    assert {(r.feature or r.detector["test"]) for r in reports} == {"jumps", "domain"}
    r = reports[0]
    assert r.kind == "data" and r.action == "reported" and r.n_seen >= 1500
    assert r.feature == "jumps" and {"ks", "t"} <= {r.detector["test"] for r in reports}
    assert r.model_before == r.model_after
    wire = orjson.loads(orjson.dumps(r.to_wire()))
    assert wire["feature"] == "jumps" and wire["kind"] == "data"
    assert {"test", "statistic", "effect", "reference", "live", "n_seen"} <= set(wire)
    assert learner.drifts["data"] == len(reports)
    latest = orjson.loads(orjson.dumps(learner.summary()))["data_drift"]["latest"]
    ks = {f["feature"]: f["statistic"] for f in latest if f["test"] == "ks"}
    assert set(ks) == {"jumps", "steady"} and ks["jumps"] > 0.9 > 0.2 > ks["steady"]


class ScriptedMonitor(DataMonitor):
    """A data monitor that alarms on the feature ``x`` every ``alarm_every`` events and
    records what the learner asked of it (the statistics are tests/test_data_monitor.py's)."""

    def __init__(self, alarm_every: int, per_check: int = 1):
        self.alarm_every = alarm_every
        self.per_check = per_check
        self.n_seen = 0
        self.labels = 0
        self.rebuilt: list[int] = []

    def observe_event(self, features):
        self.n_seen += 1
        if self.n_seen % self.alarm_every:
            return []
        return [
            DataAlarm(test, "x", 0.5, 1e-6, 0.5, {"n": 10}, {"n": 10}, self.n_seen)
            for test in ("ks", "t")[: self.per_check]
        ]

    def observe_label(self, features, y):
        self.labels += 1
        return []

    def rebuild_reference(self):
        self.rebuilt.append(self.n_seen)

    def latest(self):
        return {("ks", "x"): 0.5}

    def summary(self):
        return {"n_seen": self.n_seen}


def test_data_alarms_are_reported_and_change_no_prediction():
    dataset = sea(3000)
    plain, plain_outs = run(dataset, model="lr", drift_policy="reset")
    learner = Learner(config(model="lr", drift_policy="reset", data_drift=True))
    learner.data_monitor = monitor = ScriptedMonitor(alarm_every=1000, per_check=2)
    learner, outs = run_offline(*zero_delay(dataset), learner=learner)
    served = [(p.id, p.prediction, p.proba, p.model) for p in of(outs, Prediction)]
    assert served == [(p.id, p.prediction, p.proba, p.model) for p in of(plain_outs, Prediction)]
    data = [r for r in of(outs, DriftReport) if r.kind == "data"]
    assert [(r.n_seen, r.detector["test"], r.action) for r in data] == [
        (n, test, "reported") for n in (1000, 2000, 3000) for test in ("ks", "t")
    ]
    wire = orjson.loads(orjson.dumps(data[0].to_wire()))
    assert wire == {
        "kind": "data",
        "test": "ks",
        "feature": "x",
        "statistic": 0.5,
        "p_value": 1e-6,
        "effect": 0.5,
        "reference": {"n": 10},
        "live": {"n": 10},
        "partition": 0,
        "event_ts": 999,
        "n_seen": 1000,
        "action": "reported",
        "model_before": wire["model_before"],
        "model_after": wire["model_before"],
        "id": "e999",
    }
    assert monitor.labels == 3000 and learner.drifts["data"] == 6


def test_act_on_data_drift_applies_the_policy_once_per_check_and_rebuilds_the_reference():
    learner = Learner(
        config(model="lr", drift_policy="reset", data_drift=True, act_on_data_drift=True)
    )
    learner.data_monitor = monitor = ScriptedMonitor(alarm_every=1000, per_check=2)
    learner, outs = run_offline(*zero_delay(sea(2500)), learner=learner)
    data = [r for r in of(outs, DriftReport) if r.kind == "data"]
    assert [(r.detector["test"], r.action) for r in data] == [
        ("ks", "reset"),
        ("t", "none (the policy acted on the ks x alarm of this check)"),
    ] * 2
    assert [r.model_after.generation for r in data] == [1, 1, 2, 2]
    assert monitor.rebuilt == [1000, 2000] and learner.version.generation == 2


def test_a_model_replaced_on_a_concept_drift_gets_a_new_data_reference():
    learner = Learner(config(model="lr", drift_policy="reset", data_drift=True))
    learner.data_monitor = monitor = ScriptedMonitor(alarm_every=10**9)
    learner, outs = run_offline(*zero_delay(flipped(4000)), learner=learner)
    replaced = [r for r in of(outs, DriftReport) if r.model_after != r.model_before]
    assert replaced and len(monitor.rebuilt) == learner.version.generation == len(
        {r.model_after.generation for r in replaced}
    )


def test_monitors_on_or_off_serve_the_same_predictions():
    """The real data monitor only watches: replay --verify relies on it."""
    dataset = flipped(3000)
    _, off = run(dataset, model="lr", drift_policy="window")
    _, on = run(dataset, model="lr", drift_policy="window", data_drift=True, data_check_every=50)
    key = [(p.id, p.prediction, p.proba, p.model) for p in of(on, Prediction)]
    assert key == [(p.id, p.prediction, p.proba, p.model) for p in of(off, Prediction)]


class _Silent:
    """An error monitor that never fires: to see act_when alone."""

    n_seen = 0

    def update(self, value):
        return None


def test_act_when_applies_the_policy_when_the_rolling_metric_crosses():
    learner = Learner(config(model="lr", drift_policy="reset", act_when="accuracy<0.7"))
    learner.monitor = _Silent()
    learner, outs = run_offline(*zero_delay(flipped(6000, at=3000)), learner=learner)
    [report] = of(outs, DriftReport)
    d = report.detector
    assert (d["trigger"], d["metric"], d["op"], d["threshold"]) == (
        "act_when",
        "accuracy",
        "<",
        0.7,
    )
    assert d["value"] < 0.7 and d["labels"] == 1000
    assert report.kind == "concept" and report.action == "reset"
    assert 3000 < report.n_seen < 3000 + 1000  # after the flip, before a whole window of it
    assert report.model_after.generation == 1 and learner.drifts["concept"] == 1


def test_act_when_does_not_repeat_before_n_new_labels():
    learner = Learner(
        config(model="lr", drift_policy="none", act_when="accuracy<0.7", act_when_labels=200)
    )
    learner.monitor = _Silent()
    learner, outs = run_offline(*zero_delay(flipped(4000, at=2000)), learner=learner)
    fired = [r.n_seen for r in of(outs, DriftReport)]
    assert fired and fired[0] > 2000
    assert all(b - a >= 400 for a, b in itertools.pairwise(fired))  # 200 skipped, 200 judged
    assert len(fired) >= 2  # policy none: while the model stays bad, the trigger says so again


def test_act_when_regression_error_rises():
    rng = random.Random(3)
    data = [
        ({"x": x}, 2 * x + (0 if i < 1500 else 10)) for i in range(3000) for x in [rng.random()]
    ]
    learner = Learner(
        config(model="linreg", drift_policy="reset", act_when="mae>2", act_when_labels=20)
    )
    learner.monitor = _Silent()
    learner, outs = run_offline(*zero_delay(data), learner=learner)
    fired = of(outs, DriftReport)
    assert fired and fired[0].n_seen > 1500 and fired[0].detector["value"] > 2


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("accuracy=0.7", "expected METRIC<VALUE"),
        ("precision<0.7", "unknown metric 'precision'"),
        ("accuracy>0.7", "better when higher"),
        ("mae<3", "lower is better"),
        ("accuracy<0.7.1", "is not a number"),
    ],
)
def test_act_when_refuses_a_bad_expression(expression, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        config(act_when=expression)


def test_act_when_metric_must_fit_the_task():
    with pytest.raises(ValueError, match="mae is a regression metric"):
        Learner(config(model="lr", act_when="mae>3"))


def test_a_checkpoint_from_before_the_data_monitor_restores():
    """The old per-feature ADWIN monitor, 6-field pending joins, ids without offsets."""
    learner = Learner(config(model="lr", data_drift=True))
    learner.process_event(Event("a", {"x": 1.0}, ts=0))
    learner.process_event(Event("b", {"x": 1.0}, ts=0))
    learner.process_label(Label("b", True, ts=0))
    state = learner.__getstate__()
    ids, joins = state["pending"]
    state["pending"] = (ids, [join[:6] for join in joins])
    state["joined"] = state["joined"][0]  # the ids' JSON alone
    state["data_monitor"] = DataDriftMonitor()
    for name in ("trigger", "binary_only"):
        del state[name]
    old = Learner.__new__(Learner)
    old.__setstate__(state)
    assert isinstance(old.data_monitor, DataMonitor)
    assert old.trigger is None and old.binary_only == "LogisticRegression"
    assert old.pending["a"].offset == -1
    assert "an unknown offset" in old.process_event(Event("b", {"x": 1.0}, ts=1))[0].detail
    assert old.process_label(Label("a", False, ts=1)) == [] and old.n_labels == 2


def test_concept_drift_report_carries_detector_figures():
    learner, outs = run(flipped(4000), model="lr", drift_policy="reset")
    reports = of(outs, DriftReport)
    acted = [r for r in reports if r.action == "reset"]
    assert acted, "a label flip must make ADWIN fire"
    r = acted[0]
    assert r.kind == "concept" and r.feature is None and r.event_ts >= 3000
    d = r.detector
    assert d["name"] == "ADWIN" and d["delta"] == 0.002
    assert d["width_before"] > d["width_after"] > 0
    assert d["mean_after"] > d["mean_before"]  # the error rose
    assert r.model_before.generation == 0 and r.model_before.updates > 2900
    assert r.model_after == ModelVersion(generation=1, updates=0)
    for other in reports:
        if other.action.startswith("none"):  # detected, not acted on: same model
            assert other.model_before == other.model_after
    assert learner.drifts["concept"] == len(reports)
    assert learner.version.generation == len(acted)
    assert "feature" not in r.to_wire()


def test_window_policy_retrains_on_buffered_samples():
    learner, outs = run(flipped(4000), model="lr", drift_policy="window", window_buffer=50)
    acted = [r for r in of(outs, DriftReport) if r.action.startswith("retrained")]
    assert acted
    r = acted[0]
    n = r.model_after.updates
    assert r.model_after.generation == 1 and 0 < n <= 50
    assert r.action == f"retrained on {n} samples since the change"


def test_window_policy_retrains_on_the_samples_after_the_change():
    """Not on ADWIN's remaining window, which still holds mostly the old concept."""
    learner, outs = run(flipped(4000), model="lr", drift_policy="window")
    r = next(r for r in of(outs, DriftReport) if r.action.startswith("retrained"))
    post_change = (r.n_seen - 1) - 3000  # labels after the flip, before the current one
    assert r.detector["width_after"] - 1 > post_change + 20  # ADWIN's window is wider
    assert abs(r.model_after.updates - post_change) <= 10


@pytest.mark.xfail(
    strict=True,
    reason=(
        "window does not beat reset after a sudden label flip (SEA noise 0.1, flip at 3000, lr, "
        "accuracy on labels 3000-4999, seeds 1/7/42/3/5): reset .8485/.8625/.8565/.861/.867, "
        "window .8465/.863/.8575/.855/.863. ADWIN fires ~40 labels after the change with a "
        "post-cut window of 64-80, so about half of what window retrains on is the old concept."
    ),
)
def test_window_recovers_better_than_reset_after_flip():
    totals = {"reset": 0.0, "window": 0.0}
    for seed in (1, 7, 42):
        dataset = flipped(5000, 3000, seed)
        for policy in totals:
            _, outs = run(dataset, model="lr", drift_policy=policy)
            preds = {o.id: o.prediction for o in of(outs, Prediction)}
            totals[policy] += sum(preds[f"e{i}"] == dataset[i][1] for i in range(3000, 5000))
    assert totals["window"] > totals["reset"] + 0.005 * 2000 * 3


def test_reweight_keeps_two_models_then_drops_one():
    events, labels = zero_delay(flipped(5000))
    learner = Learner(config(model="lr", drift_policy="reweight", reweight_horizon=300))
    n_models = []
    drift_at = None
    for e, lb in zip(events, labels):
        learner.process_event(e)
        outs = learner.process_label(lb)
        if drift_at is None and any(r.action.startswith("added") for r in of(outs, DriftReport)):
            drift_at = len(n_models)
        n_models.append(len(learner.served.models))
    assert drift_at is not None and drift_at >= 3000
    assert set(n_models[:drift_at]) == {1}
    assert set(n_models[drift_at : drift_at + 299]) == {2}  # horizon counts learn steps
    assert n_models[drift_at + 300] == 1
    assert learner.version.generation == 1


def test_error_monitor_cooldown_suppresses_alarms():
    values = [float((i // 500) % 2) for i in range(4000)]  # the error flips every 500

    def detections(cooldown):
        monitor = ErrorMonitor(0.002, cooldown)
        hits = [i for i, v in enumerate(values) if monitor.update(v) is not None]
        return hits, monitor

    free, m0 = detections(0)
    quiet, m1 = detections(1500)
    assert len(free) >= 5 and m0.n_suppressed == 0
    assert quiet[0] == free[0]
    assert all(b - a >= 1500 for a, b in zip(quiet, quiet[1:]))
    assert len(quiet) < len(free) and m1.n_suppressed >= len(free) - len(quiet)
    assert m1.n_detections == len(quiet)


def test_learner_cooldown_suppresses_concept_reports():
    dataset = [(x, y if (i // 1000) % 2 == 0 else not y) for i, (x, y) in enumerate(sea(4000))]
    free, outs_free = run(dataset, model="gnb", cooldown=0)
    quiet, outs_quiet = run(dataset, model="gnb", cooldown=3000)
    assert free.drifts["concept"] >= 3
    concept = [r for r in of(outs_quiet, DriftReport) if r.kind == "concept"]
    assert quiet.drifts["concept"] == len(concept) < free.drifts["concept"]
    assert quiet.monitor.n_suppressed >= 1


# -- bugs for the lead ------------------------------------------------------------------------


def test_multiclass_metrics_do_not_depend_on_the_first_label():
    m = MetricSet("classification")
    f1, ce = metrics.MacroF1(), metrics.CrossEntropy()
    proba = {0: 0.2, 1: 0.3, 2: 0.5}
    for y, p in zip([1, 2, 0, 2, 1, 0, 2, 2], [1, 2, 2, 0, 1, 0, 2, 1]):
        m.update(y, p, proba)
        f1.update(y, p)
        ce.update(y, proba)
    report = m.report()
    assert report["f1"] == pytest.approx(f1.get())
    assert report["log_loss"] == pytest.approx(ce.get())


@pytest.mark.parametrize(
    "labels, preds",
    [
        ([True, False, 1, 0, 2, True, 2, False], [True, True, 0, 2, 1, False, 2, True]),
        (["a", "b", "c", "a", "b"], ["a", "c", "c", "b", "b"]),
    ],
    ids=["binary-with-odd-labels", "multiclass"],
)
def test_shared_confusion_matrix_equals_river_metrics_of_their_own(labels, preds):
    m = MetricSet("classification")
    binary = isinstance(labels[0], bool)
    own = {"accuracy": metrics.Accuracy(), "f1": metrics.F1() if binary else metrics.MacroF1()}
    for y, p in zip(labels, preds):
        m.update(y, p, None)
        for metric in own.values():
            metric.update(y, p)
    report = m.report()
    for name, metric in own.items():
        assert report[name] == metric.get()
        assert report["rolling_" + name] == metric.get()


def test_held_metric_updates_are_applied_in_order_when_read_or_saved():
    # Updates are applied HELD_UPDATES at a time; a report or a checkpoint in between must see
    # every label so far, and a restored set must go on exactly as River's own metrics.
    rng = random.Random(7)
    stream = [(rng.random() < 0.4, rng.random()) for _ in range(3 * HELD_UPDATES + 17)]
    m = MetricSet("classification")
    accuracy, log_loss = metrics.Accuracy(), metrics.LogLoss()
    for i, (y, p) in enumerate(stream):
        proba = {True: p, False: 1 - p}
        m.update(y, p > 0.5, proba)
        accuracy.update(y, p > 0.5)
        log_loss.update(y, proba)
        if i == HELD_UPDATES // 2:  # a checkpoint while updates are held
            m = pickle.loads(pickle.dumps(m))
        if i == 2 * HELD_UPDATES + 3:
            assert m.report()["n_labels"] == i + 1
    report = m.report()
    assert (report["n_labels"], report["accuracy"], report["log_loss"]) == (
        len(stream),
        accuracy.get(),
        log_loss.get(),
    )


@pytest.mark.parametrize("classes", [[True, False], ["a", "b", "c"]], ids=["binary", "multiclass"])
def test_held_updates_give_river_s_own_matrices_pickle_for_pickle(classes):
    """A flush adds each (label, prediction) pair once with its count: the shared and the
    baseline confusion matrices must be River's, updated one label at a time, to the byte
    (counts, sample numbers, key order), unscored predictions (None, {}) included."""
    rng = random.Random(11)
    m = MetricSet("classification")
    cm, baseline, log_loss = metrics.ConfusionMatrix(), metrics.ConfusionMatrix(), None
    last = None
    for i in range(2 * HELD_UPDATES + 123):
        y = rng.choice(classes)
        p = rng.choice([*classes, None, {}]) if i % 7 == 0 else rng.choice(classes)
        proba = {c: 1 / len(classes) for c in classes} if p not in (None, {}) else None
        m.update(y, p, proba)
        if last is not None:
            baseline.update(y, last)
        last = y
        if p not in (None, {}):
            cm.update(y, p)
            if log_loss is None:
                log_loss = metrics.LogLoss() if classes[0] is True else metrics.CrossEntropy()
            log_loss.update(y, proba)
        if i == HELD_UPDATES + 1:
            m = pickle.loads(pickle.dumps(m))  # a checkpoint while updates are held
    report = m.report()
    assert pickle.dumps(m._cm) == pickle.dumps(cm)
    assert pickle.dumps(m._baseline.cm) == pickle.dumps(baseline)
    assert report["log_loss"] == log_loss.get() and report["n_scored"] == cm.n_samples


def test_metrics_restored_from_before_the_shared_matrix_go_on_counting():
    m = MetricSet("classification")
    m.update(True, True, {True: 0.9, False: 0.1})
    state = copy.deepcopy(m.__getstate__())  # as a checkpoint holds it: nothing shared with m
    state["_metrics"] = {
        "accuracy": metrics.Accuracy(),
        "f1": metrics.F1(),
        "log_loss": metrics.LogLoss(),
    }  # each with its own matrix, as then
    for metric in state["_metrics"].values():
        metric.update(
            True, {True: 0.9, False: 0.1} if metric.__class__ is metrics.LogLoss else True
        )
    del state["_cm"]
    old = MetricSet.__new__(MetricSet)
    old.__setstate__(state)
    old.update(False, True, {True: 0.8, False: 0.2})
    m.update(False, True, {True: 0.8, False: 0.2})
    assert old.report() == m.report()


def test_zero_limits_are_refused_or_handled():
    with pytest.raises(ValueError, match="max_pending"):
        config(max_pending=0)
    learner = Learner(config(max_early_labels=0))
    out = learner.process_label(Label("a", True, ts=0))
    assert [o.reason for o in out] == ["unknown_id"]
    assert learner.process_event(Event("a", {"x": 1.0}, ts=0))[0].id == "a"


def test_state_does_not_depend_on_when_metrics_were_read():
    a, _ = run(flipped(600), model="lr")
    b, _ = run(flipped(600), model="lr")
    a.summary()  # a worker reads the metrics at every checkpoint and scrape
    assert a.canonical_bytes() == b.canonical_bytes()


def test_state_does_not_depend_on_when_the_data_monitor_was_read():
    """Also with River's int feature names (SEA's 0, 1, 2), which summary() sorts."""
    kw = {"data_drift": True, "data_reference_size": 100, "data_window": 100}
    learners = [Learner(config(model="lr", data_check_every=50, **kw)) for _ in range(2)]
    for i, (event, label) in enumerate(zip(*zero_delay(flipped(1500)))):
        for learner in learners:
            learner.process_event(event)
            learner.process_label(label)
        if i % 97 == 0:
            summary = orjson.loads(orjson.dumps(learners[0].summary()))
    assert {f["feature"] for f in summary["data_drift"]["latest"]} == {0, 1, 2, None}
    assert learners[0].canonical_bytes() == learners[1].canonical_bytes()


def test_labels_of_new_classes_stop_at_max_classes():
    """An id sent as a label made a Hoeffding tree 230 times slower: classes are bounded."""
    learner = Learner(config(model="ht", max_classes=2))
    out = []
    for i, y in enumerate(["a", "b", "c", "a", "d", "b"]):
        learner.process_event(Event(f"e{i}", {"x": float(i)}, ts=i))
        out += learner.process_label(Label(f"e{i}", y, ts=i))
    rejected = [o for o in out if isinstance(o, Rejection)]
    assert [(r.reason, r.id) for r in rejected] == [
        ("too_many_classes", "e2"),
        ("too_many_classes", "e4"),
    ]
    assert learner.n_labels == 4 and learner.classes == {"a", "b"}
    assert (
        Learner(config(model="linear_model.LinearRegression", max_classes=1)).task == "regression"
    )  # regression labels are numbers: no classes to bound


def test_a_checkpoint_from_before_max_classes_restores():
    learner = Learner(config(model="ht"))
    learner.process_event(Event("e0", {"x": 1.0}, ts=0))
    learner.process_label(Label("e0", "a", ts=0))
    del learner.classes, learner.n_late
    restored = Learner.from_bytes(learner.to_bytes())
    assert restored.classes == set() and restored.n_labels == 1 and restored.n_late == 0
    restored.process_event(Event("e1", {"x": 1.0}, ts=1))
    assert restored.process_label(Label("e1", "b", ts=1)) == [] and restored.classes == {"b"}


def test_late_records_are_counted_and_kept_by_checkpoints():
    """A label older than an event already scored (labels were caught up) is merged late: the
    learner counts it, so status and /metrics show that the order depended on arrival."""
    from driftstream.stream.codec import parse_records
    from driftstream.stream.pipeline import EVENTS, LABELS, PartitionPipeline

    pipe = PartitionPipeline(Learner(config(model="lr")), ("ev", "lb"), [0, 0])
    pipe.push(
        EVENTS, parse_records([(0, 1000, b'{"id": "a", "ts": 5, "features": {"x": 1}}')], "event")
    )
    pipe.set_caught_up(EVENTS, True)
    pipe.set_caught_up(LABELS, True)
    assert [type(output).__name__ for output in pipe.run(now_ms=0)] == ["Predictions"]
    pipe.push(LABELS, parse_records([(0, 1000, b'{"id": "a", "ts": 4, "label": true}')], "label"))
    pipe.push(
        EVENTS, parse_records([(1, 1000, b'{"id": "b", "ts": 6, "features": {"x": 1}}')], "event")
    )
    outputs = pipe.run(now_ms=0)
    assert pipe.learner.n_labels == 1 and pipe.learner.summary()["late"] == 1
    _, value = outputs[-1].encoded()[-1]
    assert orjson.loads(value)["labels_offset"] == 1  # b came after the label
    snap = pipe.snapshot("shutdown")
    assert snap.summary["late"] == 1 and Learner.from_bytes(snap.state).n_late == 1


def test_evaluate_lists_data_alarms_and_act_when_detections():
    from driftstream.evaluate import evaluate, format_table
    from driftstream.producers.sources import Sample

    rng = random.Random(2)
    shifted = [
        Sample(f"e{i}", {"x": rng.gauss(0, 1) + (3 if i >= 2000 else 0)}, rng.random() < 0.5, i, i)
        for i in range(4000)
    ]
    cfg = config(model="gnb", data_drift=True, data_reference_size=500, data_window=500)
    cfg.data_check_every = 100
    result = evaluate(shifted, cfg, [2000], after_window=1000)
    assert result.data_drifts == len(result.data_alarms) >= 1
    first = result.data_alarms[0]
    assert first["events_seen"] > 2000 and first["feature"] in ("x", None)
    report = orjson.loads(orjson.dumps(result.to_dict()))
    assert report["data_alarms"] == result.data_alarms
    assert f"{first['events_seen']} {first['test']}" in format_table(result)

    flips = [Sample(f"e{i}", x, y, i, i) for i, (x, y) in enumerate(flipped(5000, at=3000))]
    cfg = config(model="lr", drift_policy="reset", act_when="accuracy<0.7")
    cfg.adwin_delta = 1e-300  # ADWIN all but off: the threshold acts
    result = evaluate(flips, cfg, [3000], after_window=1000)
    assert [d["trigger"] for d in result.concept_drifts] == ["act_when"]
    assert 0 < result.detection_delay[3000] < 1000


def test_data_alarms_and_summary_with_numpy_figures_encode():
    """The monitor computes with numpy; its scalars must reach the drift topic as numbers."""
    import numpy as np

    from driftstream.stream.codec import encode

    class NumpyMonitor(ScriptedMonitor):
        def observe_event(self, features):
            self.n_seen += 1
            return [
                DataAlarm(
                    "t",
                    "x",
                    np.float64(3.5),
                    np.float64(1e-5),
                    np.float64(0.4),
                    {"mean": np.float64(0.1), "n": np.int64(50)},
                    {"mean": np.float64(0.6)},
                    self.n_seen,
                )
            ]

        def latest(self):
            return {("t", "x"): np.float64(3.5)}

    learner = Learner(config(data_drift=True))
    learner.data_monitor = NumpyMonitor(alarm_every=1)
    [report] = of(learner.process_event(Event("a", {"x": 1.0}, ts=0)), DriftReport)
    wire = orjson.loads(encode(report.to_wire()))
    assert (wire["statistic"], wire["p_value"], wire["reference"]) == (
        3.5,
        1e-5,
        {"mean": 0.1, "n": 50},
    )
    assert orjson.loads(encode(learner.summary()))["data_drift"]["latest"][0]["statistic"] == 3.5


def test_a_pinned_reference_is_what_live_events_are_compared_with():
    """A fresh learner pins LearnerConfig.reference (e.g. the training set): a stream unlike
    it alarms from its first window, where its own first events would be the reference."""
    rng = random.Random(4)
    training = [{"x": rng.gauss(0, 1)} for _ in range(500)]
    reference = {"rows": training, "labels": [r["x"] > 0 for r in training], "source": {}}
    options = {"data_drift": True, "data_reference_size": 500, "data_window": 300}
    pinned = Learner(config(model="gnb", data_check_every=100, reference=reference, **options))
    own = Learner(config(model="gnb", data_check_every=100, **options))
    assert pinned.summary()["data_drift"]["reference"]["pinned"]
    reports = {"pinned": [], "own": []}
    served = {"pinned": [], "own": []}
    for i in range(1500):
        x = {"x": rng.gauss(2, 1)}  # production is not like training
        for name, learner in (("pinned", pinned), ("own", own)):
            outs = learner.process_event(Event(f"e{i}", x, ts=i))
            outs += learner.process_label(Label(f"e{i}", x["x"] > 2, ts=i))
            reports[name] += of(outs, DriftReport)
            served[name] += [p.prediction for p in of(outs, Prediction)]
    assert reports["pinned"] and not reports["own"]
    assert reports["pinned"][0].n_seen <= 600 and reports["pinned"][0].feature in ("x", None)
    assert served["pinned"] == served["own"]  # reported only
    # a restored learner keeps the pinned rows (they are in its configuration and monitor)
    restored = Learner.from_bytes(pinned.to_bytes())
    assert restored.canonical_bytes() == pinned.canonical_bytes()


def test_a_covariate_shift_is_reported_as_data_drift_and_the_model_is_kept():
    """x's mean moves by 1 sd while P(y | x) stays: the monitors report it, and under the
    default policy the served model is never replaced (ADWIN may see the error rate move and
    start a challenge, which the fresh challenger cannot win)."""
    rng = random.Random(7)
    learner = Learner(LearnerConfig(model="lr"))
    outs, pending = [], []
    for i in range(30_000):
        x, z = rng.gauss(0, 1) + (1.0 if i >= 15_000 else 0.0), rng.gauss(0, 1)
        y = x + z + rng.gauss(0, 0.3) > 0
        outs += learner.process_event(Event(f"e{i}", {"x": x, "z": z}, ts=i))
        pending.append(Label(f"e{i}", y, ts=i + 100))
        if len(pending) > 100:
            outs += learner.process_label(pending.pop(0))
    data = {(r.detector["test"], r.action) for r in of(outs, DriftReport) if r.kind == "data"}
    assert {("ks", "reported"), ("t", "reported")} <= data
    assert min(r.n_seen for r in of(outs, DriftReport) if r.kind == "data") >= 15_000
    assert learner.version.generation == 0


def test_canonical_bytes_do_not_depend_on_which_arrays_came_from_a_checkpoint():
    """An array restored from a checkpoint has a numpy dtype object of its own, one made
    since shares numpy's: equal states must still give equal canonical bytes (a worker that
    took over a partition mid-stream is compared with an uninterrupted run so)."""
    import numpy as np

    learner = Learner(config(model="lr", data_drift=True))
    stream = synth.SEA(seed=3)
    for i, (x, y) in enumerate(stream.take(2500)):
        learner.process_event(Event(f"e{i}", x, i))
        learner.process_label(Label(f"e{i}", y, i))
    restored = Learner.from_bytes(learner.to_bytes())
    columns = restored.data_monitor._reference.numbers
    name = next(iter(columns))
    assert columns[name].dtype is not np.dtype(float)  # restored: a dtype object of its own
    columns[name] = np.array(columns[name].tolist())  # the same values in an array made now
    assert columns[name].dtype is np.dtype(float)
    assert Learner.canonical_bytes(restored) == Learner.canonical_bytes(learner)
