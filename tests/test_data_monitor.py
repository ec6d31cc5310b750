"""The data-drift monitor: each test fires on its own shift and not on stationary data; the
statistics equal scipy.stats'; the alarm gate (BH, floors, persistence, cooldown, no repeat);
pickling, bounded memory, pinned and rebuilt references."""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
import warnings

import numpy as np
import orjson
import pytest
from scipy import stats

from driftstream.stream import data_tests
from driftstream.stream.alarm_gate import AlarmGate
from driftstream.stream.data_monitor import DataAlarm, DataMonitor, DataMonitorOptions
from driftstream.stream.data_tests import Finding
from driftstream.stream.data_windows import Columns
from driftstream.stream.schema import FeatureSchema

CHANGE = 8000
COLOURS = ("red", "green", "blue")


def stream(n: int, change: str | None = None, at: int = CHANGE, seed: int = 0):
    """(features, label): x, z ~ N(0, 1), c a colour, y = [x + z + noise > 0]; ``change``
    alters it from event ``at`` on."""
    rng = random.Random(seed)
    for i in range(n):
        after = change is not None and i >= at
        x, z, c, noise = rng.gauss(0, 1), rng.gauss(0, 1), rng.choice(COLOURS), rng.gauss(0, 0.5)
        if after and change == "mean":
            x += 0.5
        elif after and change == "variance":
            x *= 2**0.5
        elif after and change == "covariate":
            x += 1.0
        elif after and change == "out_of_range" and rng.random() < 0.05:
            x = 100.0
        if after and change == "category" and rng.random() < 0.05:
            c = "violet"
        y = (-x if after and change == "flip" else x) + z + noise > 0
        if after and change == "prior":  # P(Y) moves, the features do not
            y = rng.random() < 0.7
        features = {"x": x, "z": z, "c": c}
        if after and change == "missing" and rng.random() < 0.05:
            features["x"] = None
        yield features, y


def run(monitor: DataMonitor, rows) -> list[DataAlarm]:
    alarms = []
    for x, y in rows:
        alarms += monitor.observe_event(x)
        alarms += monitor.observe_label(x, y)
    return alarms


def fired(alarms: list[DataAlarm]) -> set[tuple[str, str | None]]:
    return {(a.test, a.feature) for a in alarms}


@pytest.mark.parametrize(
    "change, expected",
    [
        ("mean", {("ks", "x"), ("t", "x")}),
        ("variance", {("ks", "x")}),
        ("missing", {("missing", "x")}),
        ("category", {("chi2", "c")}),
        ("out_of_range", {("out_of_range", "x")}),
        ("flip", {("correlation", "x")}),
        ("prior", {("label", None)}),
    ],
)
def test_each_test_fires_on_its_own_shift_and_only_after_it(change, expected):
    alarms = run(DataMonitor(), stream(20_000, change))
    assert expected <= fired(alarms), fired(alarms)
    assert all(a.n_seen > CHANGE for a in alarms)
    # z's distribution never changes (its correlation with y does when P(Y|X) changes)
    assert not {f for f in fired(alarms) if f[1] == "z" and f[0] != "correlation"}


def test_unchanged_things_stay_quiet_on_their_shifts():
    """A variance change leaves the mean alone, a correlation flip leaves P(Y) alone."""
    assert ("t", "x") not in fired(run(DataMonitor(), stream(20_000, "variance")))
    assert ("label", None) not in fired(run(DataMonitor(), stream(20_000, "flip")))


def test_domain_classifier_tells_a_covariate_shift():
    monitor = DataMonitor()
    alarms = run(monitor, stream(30_000, "covariate"))
    domain = [a for a in alarms if a.test == "domain"]
    assert domain and domain[0].n_seen > CHANGE
    assert domain[0].live["auc"] >= 0.6 and domain[0].effect >= 0.1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_alarm_on_stationary_data(seed):
    monitor = DataMonitor()
    assert run(monitor, stream(40_000, seed=seed)) == []
    assert monitor.checks > 30  # it did check: event and label checks


def test_declared_ranges_replace_the_reference_quantiles():
    schema = FeatureSchema({"x": "number", "z": "number", "c": "str"})
    schema.ranges = {"x": (-0.5, 0.5)}  # most of N(0, 1) is out: the reference too
    monitor = DataMonitor(schema=schema)
    alarms = run(monitor, stream(20_000, "out_of_range"))
    out = [a for a in alarms if a.test == "out_of_range"]
    assert out == []  # 5 % more outside a range most values are already outside: no alarm
    assert monitor._ranges["x"] == (-0.5, 0.5)


def test_statistics_equal_scipys():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=700), rng.normal(0.2, 1.3, size=900)
    d, p = data_tests.ks(np.sort(a), b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=0.25) and p >= ref.pvalue  # limiting: a bit above
    t, p, effect = data_tests.welch(
        *(np.array([v]) for v in (a.mean(), a.var(ddof=1), len(a), b.mean(), b.var(ddof=1), len(b)))
    )
    ref = stats.ttest_ind(a, b[: len(b)], equal_var=False)
    assert -t[0] == pytest.approx(ref.statistic, rel=1e-9)
    assert p[0] == pytest.approx(ref.pvalue, rel=1e-6)
    chi2, p, diff = data_tests.proportions(np.array([30]), np.array([1000]), np.array([55]), 900)
    ref = stats.chi2_contingency([[30, 970], [55, 845]], correction=False)
    assert chi2[0] == pytest.approx(ref.statistic) and p[0] == pytest.approx(ref.pvalue)
    x, y = (
        rng.choice(["a", "b", "c"], 800),
        rng.choice(["a", "b", "c", "d"], 600, p=[0.3, 0.3, 0.3, 0.1]),
    )
    chi2, p, v, new = data_tests.categorical(x, y)
    table = [[np.sum(x == c) for c in "abcd"], [np.sum(y == c) for c in "abcd"]]
    ref = stats.chi2_contingency(table, correction=False)
    assert chi2 == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert v == pytest.approx(stats.contingency.association(table, method="cramer"))
    assert new == ["d"]
    live, reference = rng.normal(0.3, 1, 300), rng.normal(0, 1, 400)
    auc = np.mean(live[:, None] > reference[None, :])
    z, p = data_tests.domain_auc(auc, 300, 400)
    ref = stats.mannwhitneyu(
        live, reference, use_continuity=False, alternative="greater", method="asymptotic"
    )
    assert p == pytest.approx(ref.pvalue, rel=1e-6)


def test_correlation_change_is_fishers_z():
    z, p, delta = data_tests.correlation(0.5, 1003, 0.4, 1003)
    expected = (np.arctanh(0.4) - np.arctanh(0.5)) / np.sqrt(2 / 1000)
    assert z == pytest.approx(expected) and delta == pytest.approx(-0.1)
    assert p == pytest.approx(2 * stats.norm.sf(abs(expected)))


def _finding(p: float, effect: float = 0.5, feature: str = "x") -> Finding:
    return Finding("ks", feature, effect, p, effect)


def test_gate_controls_the_false_discovery_rate_across_a_check():
    gate = AlarmGate({"ks": 0.1}, alpha=0.01, persistence=1, cooldown=0)
    alone = gate.failing([_finding(0.004)])
    crowd = gate.failing([_finding(0.004)] + [_finding(0.9, feature=f"f{i}") for i in range(9)])
    assert alone == [True]
    assert crowd[0] is False  # BH: 0.004 x 10 / 1 = 0.04 > 0.01


def test_gate_effect_floor_persistence_cooldown_and_no_repeat():
    gate = AlarmGate({"ks": 0.1}, alpha=0.01, persistence=2, cooldown=5000)
    tiny = [_finding(1e-12, effect=0.05)]
    assert gate.update(tiny, 1) == [] and gate.update(tiny, 2) == []  # significant, too small
    shift, calm = [_finding(1e-9)], [_finding(0.5, effect=0.01)]
    assert gate.update(shift, 1000) == []
    assert gate.update(calm, 2000) == []  # streak broken
    assert gate.update(shift, 3000) == []
    assert len(gate.update(shift, 4000)) == 1  # two in a row
    assert gate.update(shift, 5000) == [] and gate.update(shift, 6000) == []  # latched
    assert gate.latched() == [("ks", "x")]
    gate.update(calm, 7000), gate.update(calm, 8000)  # recovered
    assert gate.latched() == []
    assert gate.update(shift, 8500) == [] and gate.update(shift, 8600) == []  # cooldown to 9000
    assert len(gate.update(shift, 9100)) == 1
    gate.reset()
    assert gate.update(shift, 9200) == [] and len(gate.update(shift, 9300)) == 1


def test_pickle_round_trip_gives_the_same_alarms():
    rows = list(stream(24_000, "covariate"))
    monitor = DataMonitor()
    first = run(monitor, rows[:9000])
    copy = pickle.loads(pickle.dumps(monitor))
    rest, rest_copy = run(monitor, rows[9000:]), run(copy, rows[9000:])
    assert rest == rest_copy and rest  # the same alarms, and there are some
    again = DataMonitor()
    assert run(again, rows) == first + rest  # deterministic


def test_columns_layout_does_not_depend_on_when_they_are_flushed():
    rows = [{"x": float(i), "c": str(i % 3)} for i in range(23)]
    at_once, in_pieces = (Columns({"x": "number", "c": "category"}, 5) for _ in range(2))
    at_once.pending = list(rows)
    at_once.flush()
    for start in range(0, 23, 4):
        in_pieces.pending = rows[start : start + 4]
        in_pieces.flush()
    assert at_once.number("x").tolist() == in_pieces.number("x").tolist()
    assert at_once.category("c").tolist() == in_pieces.category("c").tolist()
    assert sorted(at_once.number("x").tolist()) == [18.0, 19.0, 20.0, 21.0, 22.0]


def test_memory_is_bounded():
    monitor = DataMonitor()
    rows = stream(60_000)
    run(monitor, (next(rows) for _ in range(20_000)))
    early = len(pickle.dumps(monitor))
    run(monitor, rows)
    assert len(pickle.dumps(monitor)) <= early * 1.05
    summary = monitor.summary()
    assert summary["live"] == {"events": 2000, "labels": 2000}
    assert summary["reference"]["events"] == 2000


def test_pinned_reference_is_used_at_once_and_capped():
    rng = random.Random(5)
    training = [{"x": rng.gauss(1.0, 1), "z": rng.gauss(0, 1), "c": "red"} for _ in range(5000)]
    monitor = DataMonitor()
    monitor.pin_reference(training, labels=[True] * 5000)
    assert monitor.summary()["reference"] == {
        "events": 2000,
        "labels": 2000,
        "complete": True,
        "pinned": True,
    }
    alarms = run(monitor, stream(6000))  # live x is N(0, 1), the training set's N(1, 1)
    assert {("ks", "x"), ("t", "x")} <= fired(alarms)
    assert min(a.n_seen for a in alarms) <= 4000  # no reference to wait for
    with pytest.raises(ValueError, match="labels"):
        monitor.pin_reference(training, labels=[True])


def test_rebuilt_reference_accepts_the_new_data_and_can_alarm_again():
    monitor = DataMonitor()
    rows = list(stream(40_000, "mean"))
    alarms = run(monitor, rows[:16_000])
    assert ("ks", "x") in fired(alarms)
    monitor.rebuild_reference()  # the model was replaced: the shifted data is the new normal
    assert monitor.summary()["reference"]["complete"] is False
    assert monitor.summary()["active"] == []
    assert run(monitor, rows[16_000:]) == []
    back = [(dict(x, x=x["x"] - 0.5), y) for x, y in rows[:14_000]]  # and back again
    assert ("ks", "x") in fired(run(monitor, back))


@pytest.mark.parametrize("change", ["mean", "category", "out_of_range", "flip", "missing"])
def test_alarms_and_summary_are_plain_python_for_orjson(change):
    """orjson refuses numpy scalars: every figure must be a Python number."""
    monitor = DataMonitor()
    alarms = run(monitor, stream(16_000, change))
    assert alarms
    for alarm in alarms:
        orjson.dumps(dataclasses.asdict(alarm))
    orjson.dumps(monitor.summary())
    assert {type(v) for v in monitor.latest().values()} == {float}


def test_latest_and_summary_are_small_and_json():
    monitor = DataMonitor()
    alarms = run(monitor, stream(16_000, "mean"))
    latest = monitor.latest()
    assert latest[("ks", "x")] > latest[("ks", "z")]
    summary = json.loads(json.dumps(monitor.summary()))
    assert summary["alarms"] == len(alarms) > 0
    assert {"test": "ks", "feature": "x"} in summary["active"]
    assert summary["largest"][0]["feature"] == "x"
    alarm = next(a for a in alarms if a.test == "ks")
    json.dumps(alarm.reference), json.dumps(alarm.live)
    assert alarm.live["mean"] - alarm.reference["mean"] == pytest.approx(0.5, abs=0.15)


@pytest.mark.parametrize(
    "bad",
    [{"window": 0}, {"alpha": 1.5}, {"reference_size": 10}, {"range_quantile": 0.5}],
)
def test_options_are_checked(bad):
    with pytest.raises(ValueError):
        DataMonitorOptions(**bad)


def test_numeric_target_gets_ks_and_correlation():
    rng = random.Random(4)
    rows = []
    for i in range(20_000):
        x = rng.gauss(0, 1)
        y = 2 * x + rng.gauss(0, 1) + (1.5 if i >= CHANGE else 0.0)  # P(Y) moves, r does not
        rows.append(({"x": x}, y))
    monitor = DataMonitor()
    alarms = run(monitor, rows)
    assert fired(alarms) == {("label", None)}
    assert ("correlation", "x") in monitor.latest()
    label = alarms[0]
    assert label.live["mean"] - label.reference["mean"] == pytest.approx(1.5, abs=0.3)


def test_infinite_and_huge_values_are_no_crash_and_no_warning():
    rng = random.Random(8)
    monitor = DataMonitor(DataMonitorOptions(reference_size=100, window=100, check_every=50))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(3000):
            x = {"x": rng.gauss(0, 1), "z": rng.gauss(0, 1)}
            if i >= 1500:
                x["x"] = 1e308 if i % 2 else float("inf")
            monitor.observe_event(x)
            monitor.observe_label(x, rng.random() < 0.5)
    assert monitor.latest()[("ks", "x")] == 1.0  # every live value above every reference one
    summary = monitor.summary()
    assert {"test": "ks", "feature": "x"} in summary["active"]
    orjson.dumps(summary)


def test_gate_takes_a_nan_p_value_as_not_significant():
    gate = AlarmGate({"ks": 0.1, "t": 0.2}, alpha=0.01, persistence=1, cooldown=0)
    assert gate.failing([Finding("t", "x", 0.0, float("nan"), 0.5), _finding(1e-9)]) == [
        False,
        True,
    ]


def test_odd_inputs_are_no_crash():
    """Multi-class text labels, a bool feature, a string where numbers were, a feature that
    appears only later, an empty event."""
    rng = random.Random(6)
    monitor = DataMonitor(DataMonitorOptions(reference_size=100, window=100, check_every=50))
    for i in range(2000):
        x = {"x": rng.gauss(0, 1), "on": rng.random() < 0.5}
        if i % 97 == 0:
            x["x"] = "oops"
        if i > 500:
            x["late"] = 1.0
        if i % 211 == 0:
            x = {}
        monitor.observe_event(x)
        monitor.observe_label(x, rng.choice(["cat", "dog", "bird"]))
    assert ("label", None) in monitor.latest() and ("chi2", "on") in monitor.latest()
    assert not any(test == "correlation" for test, _ in monitor.latest())  # three classes
    assert "late" not in {feature for _, feature in monitor.latest()}
    json.dumps(monitor.summary())
