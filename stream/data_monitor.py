"""Data drift: each input compared with the data the current model learned from.

Per partition, a reference sample (the first ``reference_size`` events after start or after a
model replacement, or pinned rows such as a training set) and a live window of the last
``window`` events. Every ``check_every`` events the monitor compares them:

- numeric features: Kolmogorov-Smirnov (``ks``) and Welch's t-test on means (``t``);
- categorical features (str, bool): chi-square on category frequencies (``chi2``), new
  categories counted;
- every feature: missing-value rate (``missing``) and out-of-range rate (``out_of_range``:
  outside the reference's central quantiles, or outside ``schema.ranges`` when declared);
- all features at once: a domain classifier (``domain``), a River logistic regression learning
  to tell reference rows from live rows; its rolling ROC AUC is the score (0.5: cannot tell).

Every ``check_every`` labels (``observe_label``), with the labelled reference and live windows:
each numeric feature's correlation with the label (``correlation``, Fisher z) and the label
distribution (``label``: chi-square for classes, KS for a numeric target).

`driftstream.stream.alarm_gate.AlarmGate` turns failing tests into alarms (multiple-testing
control, effect floors, persistence, cooldown, no repeat). The work per event is one append;
the statistics run at check time on numpy columns (`driftstream.stream.data_windows`), and
the domain classifier learns from ``domain_sample`` rows of each side per check. The monitor
is deterministic (its only randomness is a seeded ``random.Random`` kept in its state) and
picklable, so a checkpoint or a replay carries on with the same alarms.

>>> import random
>>> rng = random.Random(1)
>>> monitor = DataMonitor(DataMonitorOptions(reference_size=500, window=500, check_every=250))
>>> alarms = []
>>> for i in range(6000):
...     shift = 0.0 if i < 3000 else 1.0
...     alarms += monitor.observe_event({"x": rng.gauss(shift, 1), "y": rng.gauss(0, 1)})
>>> sorted({(a.test, a.feature) for a in alarms})
[('domain', None), ('ks', 'x'), ('out_of_range', 'x'), ('t', 'x')]
>>> all(a.n_seen > 3000 for a in alarms)
True
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import numpy as np
from river import linear_model, metrics, optim

from driftstream.stream import data_tests
from driftstream.stream.alarm_gate import AlarmGate
from driftstream.stream.data_tests import Finding
from driftstream.stream.data_windows import Columns, kinds_of
from driftstream.stream.schema import FeatureSchema

__all__ = ["DataAlarm", "DataMonitor", "DataMonitorOptions"]

TESTS = ("ks", "t", "chi2", "missing", "out_of_range", "correlation", "label", "domain")
_MIN_VALUES = 30  # non-missing values on each side below which a feature is not tested
_MAX_CLASSES = 20  # more distinct integer labels than this: a numeric target (KS)


@dataclasses.dataclass(frozen=True)
class DataMonitorOptions:
    """How the data-drift monitor samples and when it alarms (defaults: docs/design.md,
    "Data drift")."""

    reference_size: int = 2000  # R: events in the reference sample
    window: int = 2000  # W: events in the live window
    check_every: int = 2000  # k: events (and labels) between checks
    alpha: float = 0.01  # Benjamini-Hochberg level across the tests of one check
    persistence: int = 2  # m: consecutive failing checks before an alarm
    cooldown: int = 20_000  # events after an alarm before the same (test, feature) again
    ks_floor: float = 0.07  # Kolmogorov-Smirnov D
    t_floor: float = 0.2  # Cohen's d
    chi2_floor: float = 0.1  # Cramer's V
    missing_floor: float = 0.02  # missing-rate difference
    out_of_range_floor: float = 0.02  # out-of-range-rate difference
    correlation_floor: float = 0.1  # change in Pearson r
    label_floor: float = 0.1  # Cramer's V (classes) or KS D (numeric target)
    domain_floor: float = 0.1  # ROC AUC - 0.5
    range_quantile: float = 0.005  # out of range: below this reference quantile or above 1 - it
    domain_sample: int = 32  # rows of each side the domain classifier learns per check
    domain_window: int = 512  # rows scored in the domain classifier's rolling ROC AUC
    seed: int = 0

    def __post_init__(self):
        for name in ("reference_size", "window", "check_every", "persistence"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer")
        if self.reference_size < _MIN_VALUES or self.window < _MIN_VALUES:
            raise ValueError(f"reference_size and window must be at least {_MIN_VALUES}")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be between 0 and 1")
        if not 0 <= self.range_quantile < 0.5:
            raise ValueError("range_quantile must be in [0, 0.5)")
        if self.cooldown < 0 or self.domain_sample < 1 or self.domain_window < 2:
            raise ValueError("cooldown >= 0, domain_sample >= 1 and domain_window >= 2")

    def floors(self) -> dict[str, float]:
        return {test: getattr(self, f"{test}_floor") for test in TESTS}


@dataclasses.dataclass(frozen=True)
class DataAlarm:
    """One data-drift alarm: which test on which feature, how big, against what."""

    test: str
    feature: str | None
    statistic: float
    p_value: float | None
    effect: float
    reference: dict
    live: dict
    n_seen: int


class _Domain:
    """The domain classifier: learns reference (False) vs live (True) rows. Each check's rows
    are all scored before it learns any of them (progressive validation by batch): scoring
    each row right after learning the previous one would bias the AUC below 0.5 (the row just
    learned, of the other side, pulls the next score its way; 0.45 on STAGGER)."""

    def __init__(self, window: int):
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
        self.auc = metrics.RollingROCAUC(window_size=window)
        self.window = window
        self.scored = 0

    def learn(self, pairs: list[tuple[dict, dict]]) -> None:
        model, auc = self.model, self.auc
        rows = [(x, y) for pair in pairs for x, y in zip(pair, (False, True))]
        for x, y in rows:
            auc.update(y, model.predict_proba_one(x).get(True, 0.5))
        for x, y in rows:
            model.learn_one(x, y)
        self.scored += len(rows)

    def finding(self) -> Finding | None:
        if self.scored < self.window:
            return None
        n = self.window // 2  # both sides equally (rows are scored in pairs)
        auc = float(self.auc.get())
        z, p = data_tests.domain_auc(auc, n, self.window - n)
        return Finding("domain", None, auc, p, auc - 0.5)


@dataclasses.dataclass(frozen=True, slots=True)
class _Side:
    """One side (reference or live) of a numeric feature, for the tests: ``values`` sorted,
    without the missing ones."""

    rows: int
    missing: int
    n: int
    values: np.ndarray
    mean: float
    var: float
    out: int  # values outside the feature's range

    @classmethod
    def of(cls, column: np.ndarray, bounds: tuple[float, float] | None) -> _Side:
        values = np.sort(column[~np.isnan(column)])
        n = len(values)
        out = 0
        if n and bounds is not None:
            lo, hi = bounds  # values are sorted: count below lo and above hi
            out = int(
                np.searchsorted(values, lo, "left") + n - np.searchsorted(values, hi, "right")
            )
        return cls(
            rows=len(column),
            missing=len(column) - n,
            n=n,
            values=values,
            mean=float(values.mean()) if n else math.nan,
            var=float(values.var(ddof=1)) if n > 1 else math.nan,
            out=out,
        )


class DataMonitor:
    """Reference and live windows of one partition's events, tested every k events."""

    def __init__(
        self,
        options: DataMonitorOptions = DataMonitorOptions(),
        schema: FeatureSchema | None = None,
    ):
        self.options = options
        self.schema = schema
        self.gate = AlarmGate(
            options.floors(), options.alpha, options.persistence, options.cooldown
        )
        self.rng = random.Random(options.seed)
        self.n_seen = 0
        self.n_labels = 0
        self.checks = 0
        self.alarms = 0
        self.pinned = False
        self._latest: dict[tuple[str, str | None], Finding] = {}
        self._reset()

    # -- per event / label: one append ------------------------------------------------------

    def observe_event(self, features: dict) -> list[DataAlarm]:
        """Feed one event's features (after scoring); return the alarms of a check, if one ran."""
        self.n_seen += 1
        live = self._live
        if live is None:
            self._reference_rows.append(features)
            if len(self._reference_rows) >= self.options.reference_size:
                self._freeze_reference()
            return []
        live.pending.append(features)
        self._since_check += 1
        if self._since_check < self.options.check_every:
            return []
        self._since_check = 0
        live.flush()
        if live.size < self.options.window:
            return []
        with np.errstate(all="ignore"):  # inf or huge values: NaN figures, not warnings
            return self._check_events()

    def observe_label(self, features: dict, y: Any) -> list[DataAlarm]:
        """Feed one joined label with its event's features; return the alarms of a label check."""
        self.n_labels += 1
        live = self._label_live
        if live is None:
            if len(self._label_rows) < self.options.reference_size:
                self._label_rows.append((features, y))
            self._freeze_labels()
            return []
        live.pending.append(features)
        live.pending_labels.append(y)
        self._since_label_check += 1
        if self._since_label_check < self.options.check_every:
            return []
        self._since_label_check = 0
        live.flush()
        if live.size < self.options.window:
            return []
        with np.errstate(all="ignore"):
            return self._check_labels()

    # -- references ---------------------------------------------------------------------------

    def rebuild_reference(self) -> None:
        """Start a new reference: the next ``reference_size`` events (and labels) after a
        model replacement, since the new model learns from them."""
        self.pinned = False
        self._reset()

    def pin_reference(self, rows: list[dict], labels: list | None = None) -> None:
        """Use ``rows`` (with their ``labels``, if given) as the reference, e.g. the training
        set: at most ``reference_size`` of them, drawn at random (seeded) when there are more.
        The live window starts empty."""
        if len(rows) < _MIN_VALUES:
            raise ValueError(f"a pinned reference needs at least {_MIN_VALUES} rows")
        if labels is not None and len(labels) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
        keep = range(len(rows))
        if len(rows) > self.options.reference_size:
            keep = sorted(self.rng.sample(keep, self.options.reference_size))
        self._reset()
        self.pinned = True
        self._reference_rows = [rows[i] for i in keep]
        self._freeze_reference()
        if labels is not None:
            self._label_rows = [(rows[i], labels[i]) for i in keep]
            self._freeze_labels(force=True)

    def _reset(self) -> None:
        self._reference_rows: list[dict] = []
        self._reference: Columns | None = None
        self._live: Columns | None = None
        self._label_rows: list[tuple[dict, Any]] = []
        self._label_reference: Columns | None = None
        self._label_live: Columns | None = None
        self._label_kind: str | None = None
        self._since_check = 0
        self._since_label_check = 0
        self._ranges: dict[str, tuple[float, float]] = {}
        self._stats: dict[str, _Side] | None = None
        self._label_stats: dict | None = None
        self._domain = _Domain(self.options.domain_window)
        self._latest.clear()
        self.gate.reset()

    def _freeze_reference(self) -> None:
        rows = self._reference_rows
        kinds = kinds_of(rows, self.schema.types if self.schema is not None else None)
        reference = Columns(kinds, len(rows))
        reference.pending = list(rows)
        reference.flush()
        self._reference, self._reference_rows = reference, []
        self._live = Columns(kinds, self.options.window)
        declared = getattr(self.schema, "ranges", None) or {}
        q = self.options.range_quantile
        for name in reference.numbers:
            values = reference.number(name)
            values = values[~np.isnan(values)]
            if name in declared:
                lo, hi = declared[name]
                self._ranges[name] = (float(lo), float(hi))
            elif len(values):
                with np.errstate(all="ignore"):
                    lo, hi = np.quantile(values, [q, 1 - q])
                self._ranges[name] = (float(lo), float(hi))
        self._freeze_labels()

    def _freeze_labels(self, force: bool = False) -> None:
        rows = self._label_rows
        if self._reference is None or not rows:
            return
        if not force and len(rows) < self.options.reference_size:
            return
        self._label_kind = _label_kind([y for _, y in rows])
        numeric = {n: k for n, k in self._reference.kinds.items() if k == "number"}
        reference = Columns(numeric, len(rows), labelled=True)
        reference.pending = [x for x, _ in rows]
        reference.pending_labels = [y for _, y in rows]
        reference.flush()
        self._label_reference, self._label_rows = reference, []
        self._label_live = Columns(numeric, self.options.window, labelled=True)

    # -- checks -------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        for window in (self._live, self._label_live):
            if window is not None:
                window.flush()  # columns pickle smaller than dicts; the layout is the same
        state = self.__dict__.copy()
        state["_stats"] = state["_label_stats"] = None  # derived from the reference: rebuilt
        return state

    def _reference_stats(self) -> dict[str, _Side]:
        """Each numeric feature's reference side, computed once per reference."""
        if self._stats is None:
            reference = self._reference
            self._stats = {
                name: _Side.of(reference.number(name), self._ranges.get(name))
                for name in reference.numbers
            }
        return self._stats

    def _check_events(self) -> list[DataAlarm]:
        reference, live = self._reference, self._live
        findings: list[Finding] = []
        if reference.numbers:
            findings += self._numeric_findings(live)
        for name in reference.categories:
            findings += self._categorical_findings(
                reference.category(name), live.category(name), name
            )
        self._learn_domain(reference, live)
        domain = self._domain.finding()
        if domain is not None:
            findings.append(domain)
        return self._gate(findings)

    def _numeric_findings(self, live: Columns) -> list[Finding]:
        stats = self._reference_stats()
        names = list(stats)
        refs = list(stats.values())
        nows = [_Side.of(live.number(name), self._ranges.get(name)) for name in names]
        findings = []
        column = np.array
        findings += _rate_findings("missing", names, refs, nows, "missing", "rows")
        tested = [i for i, (r, s) in enumerate(zip(refs, nows)) if min(r.n, s.n) >= _MIN_VALUES]
        if not tested:
            return findings
        refs = [refs[i] for i in tested]
        nows = [nows[i] for i in tested]
        names = [names[i] for i in tested]
        for name, r, s in zip(names, refs, nows):
            d, p_ks = data_tests.ks(r.values, s.values)
            findings.append(Finding("ks", name, d, p_ks, d))
        t, p, d = data_tests.welch(
            column([r.mean for r in refs]),
            column([r.var for r in refs]),
            column([r.n for r in refs], dtype=float),
            column([s.mean for s in nows]),
            column([s.var for s in nows]),
            column([s.n for s in nows], dtype=float),
        )
        findings += [
            Finding("t", n, float(a), float(b), float(c)) for n, a, b, c in zip(names, t, p, d)
        ]
        findings += _rate_findings("out_of_range", names, refs, nows, "out", "n")
        return findings

    def _categorical_findings(self, ref: np.ndarray, now: np.ndarray, name: str) -> list[Finding]:
        ref_missing, now_missing = _is_none(ref), _is_none(now)
        chi2, p, diff = data_tests.proportions(
            np.array([ref_missing.sum()]), len(ref), np.array([now_missing.sum()]), len(now)
        )
        findings = [Finding("missing", name, float(chi2[0]), float(p[0]), float(diff[0]))]
        a, b = ref[~ref_missing], now[~now_missing]
        if len(a) >= _MIN_VALUES and len(b) >= _MIN_VALUES:
            stat, p_chi2, v, _ = data_tests.categorical(a, b)
            findings.append(Finding("chi2", name, stat, p_chi2, v))
        return findings

    def _learn_domain(self, reference: Columns, live: Columns) -> None:
        """Teach the domain classifier ``domain_sample`` pairs of rows drawn at random."""
        scale = {
            name: (side.mean, math.sqrt(side.var))
            for name, side in self._reference_stats().items()
            if side.n > 1 and side.var > 0
        }
        rng = self.rng
        draws = [
            (rng.randrange(reference.size), rng.randrange(live.size))
            for _ in range(self.options.domain_sample)
        ]
        pairs = list(
            zip(
                _domain_rows(reference, [r for r, _ in draws], scale),
                _domain_rows(live, [w for _, w in draws], scale),
            )
        )
        self._domain.learn(pairs)

    def _label_reference_stats(self) -> dict:
        """The labelled reference's side of the label tests, computed once per reference."""
        if self._label_stats is None:
            reference = self._label_reference
            stats: dict[str, Any] = {"codes": None, "r": {}}
            if self._label_kind == "classes":
                stats["text"] = reference.text_labels()
                classes = np.unique(stats["text"])
                if len(classes) == 2:  # binary: the correlation with the second class
                    stats["positive"] = classes[1]
                    stats["codes"] = (stats["text"] == classes[1]).astype(float)
            else:
                stats["codes"] = y = reference.number_labels()
                stats["sorted"] = np.sort(y[~np.isnan(y)])
            if stats["codes"] is not None:
                stats["r"] = _pearsons(reference, stats["codes"])
            self._label_stats = stats
        return self._label_stats

    def _check_labels(self) -> list[DataAlarm]:
        live = self._label_live
        stats = self._label_reference_stats()
        findings = []
        if self._label_kind == "classes":
            text = live.text_labels()
            stat, p, v, _ = data_tests.categorical(stats["text"], text)
            findings.append(Finding("label", None, stat, p, v))
            codes = (text == stats["positive"]).astype(float) if "positive" in stats else None
        else:
            codes = live.number_labels()
            y = codes[~np.isnan(codes)]
            if len(stats["sorted"]) >= _MIN_VALUES and len(y) >= _MIN_VALUES:
                stat, p = data_tests.ks(stats["sorted"], y)
                findings.append(Finding("label", None, stat, p, stat))
        if codes is not None:
            now = _pearsons(live, codes)
            for name, (r1, m1) in stats["r"].items():
                r2, m2 = now[name]
                if r1 is None or r2 is None:
                    continue
                z, p, delta = data_tests.correlation(r1, m1, r2, m2)
                findings.append(Finding("correlation", name, r2, p, delta))
        return self._gate(findings)

    def _gate(self, findings: list[Finding]) -> list[DataAlarm]:
        self.checks += 1
        latest = self._latest
        for finding in findings:
            latest[(finding.test, finding.feature)] = finding
        fired = self.gate.update(findings, self.n_seen)
        self.alarms += len(fired)
        return [self._alarm(f) for f in fired]

    # -- reporting ----------------------------------------------------------------------------

    def latest(self) -> dict[tuple[str, str | None], float]:
        """The latest statistic of each (test, feature), for gauges."""
        return {key: f.statistic for key, f in self._latest.items()}

    def summary(self) -> dict:
        """A small JSON-able summary for status and explain."""
        floors = self.options.floors()
        ranked = sorted(
            self._latest.values(),
            key=lambda f: (-abs(f.effect) / floors[f.test], f.test, str(f.feature)),
        )
        return {
            "n_seen": self.n_seen,
            "n_labels": self.n_labels,
            "reference": {
                "events": self._reference.size if self._reference else len(self._reference_rows),
                "labels": self._label_reference.size
                if self._label_reference
                else len(self._label_rows),
                "complete": self._reference is not None,
                "pinned": self.pinned,
            },
            "live": {
                "events": self._live.size if self._live else 0,
                "labels": self._label_live.size if self._label_live else 0,
            },
            "checks": self.checks,
            "alarms": self.alarms,
            "active": [{"test": t, "feature": f} for t, f in self.gate.latched()],
            "largest": [
                {
                    "test": f.test,
                    "feature": f.feature,
                    "statistic": _finite(round(f.statistic, 6)),
                    "p_value": _finite(float(f"{f.p_value:.3g}")),
                    "effect": _finite(round(f.effect, 6)),
                }
                for f in ranked[:5]
            ],
        }

    def _alarm(self, finding: Finding) -> DataAlarm:
        reference, live = self._describe(finding)
        return DataAlarm(
            test=finding.test,
            feature=finding.feature,
            statistic=float(finding.statistic),
            p_value=float(finding.p_value),
            effect=float(finding.effect),
            reference=reference,
            live=live,
            n_seen=self.n_seen,
        )

    def _describe(self, finding: Finding) -> tuple[dict, dict]:
        """Summaries of the two windows for one alarm (built only when it fires)."""
        test, name = finding.test, finding.feature
        if test == "domain":
            return {"n": self._reference.size}, {
                "n": self._live.size,
                "auc": round(finding.statistic, 4),
                "scored": self._domain.window,
            }
        if test == "label":
            sides = self._label_reference, self._label_live
            if self._label_kind == "classes":
                return tuple(_frequencies(c.text_labels()) for c in sides)
            return tuple(_numeric_summary(c.number_labels()) for c in sides)
        if test == "correlation":
            return tuple(
                {"n": int(cols.size), "r": round(float(r), 4)}
                for cols, r in (
                    (self._label_reference, finding.statistic - finding.effect),
                    (self._label_live, finding.statistic),
                )
            )
        sides = self._reference, self._live
        if test == "chi2":
            return _frequencies(sides[0].category(name)), _frequencies(
                sides[1].category(name), new_against=sides[0].category(name)
            )
        if test == "missing":
            values = [c.number(name) if name in c.numbers else c.category(name) for c in sides]
            return tuple({"n": len(v), "rate": round(float(_missing(v).mean()), 4)} for v in values)
        if test == "out_of_range":
            lo, hi = self._ranges[name]
            out = []
            for cols in sides:
                v = cols.number(name)
                v = v[~np.isnan(v)]
                rate = float(np.count_nonzero((v < lo) | (v > hi)) / len(v))
                out.append({"n": len(v), "rate": round(rate, 4), "range": [lo, hi]})
            return tuple(out)
        return tuple(_numeric_summary(c.number(name)) for c in sides)


def _finite(value: float) -> float | None:
    """A figure for JSON: None for NaN or infinity (not JSON)."""
    return value if math.isfinite(value) else None


def _domain_rows(
    columns: Columns, index: list[int], scale: dict[str, tuple[float, float]]
) -> list[dict]:
    """Rows ``index`` for the domain classifier: numeric features standardised by the
    reference (missing ones left out), categories one-hot as ``name=value``."""
    where = np.array(index)
    rows: list[dict] = [{} for _ in index]
    for name, (mean, sd) in scale.items():
        for x, v in zip(rows, ((columns.numbers[name][where] - mean) / sd).tolist()):
            if v == v:  # not NaN
                x[name] = v
    for name, column in columns.categories.items():
        for x, value in zip(rows, column[where].tolist()):
            if value is not None:
                x[f"{name}={value}"] = 1.0
    return rows


def _label_kind(labels: list) -> str:
    """``classes`` for str, bool and few distinct integers; ``numeric`` otherwise."""
    values = [y for y in labels if y is not None]
    if all(isinstance(y, (str, bool)) for y in values):
        return "classes"
    if all(isinstance(y, int) for y in values) and len(set(values)) <= _MAX_CLASSES:
        return "classes"
    return "numeric"


def _pearsons(columns: Columns, y: np.ndarray) -> dict[str, tuple[float | None, int]]:
    """Pearson r (and the pairs counted) of each numeric feature with ``y``: all at once when
    nothing is missing (the usual case), else feature by feature."""
    names = list(columns.numbers)
    if not names:
        return {}
    x = np.stack([columns.number(name) for name in names])
    if len(y) < _MIN_VALUES or np.isnan(x).any() or np.isnan(y).any():
        return {name: _pearson(row, y) for name, row in zip(names, x)}
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    scale = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc @ yc) / scale
    return {
        name: (float(min(1.0, max(-1.0, v))) if s > 0 else None, len(y))
        for name, v, s in zip(names, r, scale)
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float | None, int]:
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < _MIN_VALUES or x.std() == 0 or y.std() == 0:
        return None, len(x)
    return float(np.corrcoef(x, y)[0, 1]), len(x)


def _is_none(values: np.ndarray) -> np.ndarray:
    return np.equal(values, None)


def _missing(values: np.ndarray) -> np.ndarray:
    return np.isnan(values) if values.dtype.kind == "f" else _is_none(values)


def _numeric_summary(values: np.ndarray) -> dict:
    values = values[~np.isnan(values)]
    if not len(values):
        return {"n": 0}
    p05, p50, p95 = np.quantile(values, [0.05, 0.5, 0.95])
    return {
        "n": len(values),
        "mean": round(float(values.mean()), 6),
        "std": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 6),
        "p05": round(float(p05), 6),
        "p50": round(float(p50), 6),
        "p95": round(float(p95), 6),
    }


def _frequencies(values: np.ndarray, new_against: np.ndarray | None = None, top: int = 10) -> dict:
    values = values[~_is_none(values)]
    cats, counts = np.unique(values, return_counts=True) if len(values) else ([], [])
    order = sorted(zip(counts, cats), key=lambda c: (-c[0], str(c[1])))[:top]
    out = {
        "n": len(values),
        "frequencies": {str(c): round(int(k) / len(values), 4) for k, c in order},
    }
    if new_against is not None:
        seen = set(new_against[~_is_none(new_against)])
        out["new"] = sorted({str(c) for c in cats if c not in seen})[:top]
    return out


def _rate_findings(test: str, names: list, refs: list, nows: list, count: str, total: str) -> list:
    """One rate test per feature (``count`` of ``total`` on each side), in one vectorised call."""

    def column(sides: list, field: str) -> np.ndarray:
        return np.array([getattr(side, field) for side in sides], dtype=float)

    chi2, p, diff = data_tests.proportions(
        column(refs, count), column(refs, total), column(nows, count), column(nows, total)
    )
    return [
        Finding(test, n, float(c), float(q), float(d)) for n, c, q, d in zip(names, chi2, p, diff)
    ]
