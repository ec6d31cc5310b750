"""Prequential and rolling metrics of the served predictions, plus a no-change baseline.

Metrics are updated exactly as `river.evaluate.progressive_val_score` does: with the
prediction that was served, skipped when the model had nothing to say (None or ``{}``).
The baseline predicts the last label seen, which real streams often make hard to beat.

>>> m = MetricSet("classification", window=2)
>>> for y, pred in [(True, True), (False, True), (True, True)]:
...     m.update(y, pred, {True: 0.6, False: 0.4})
>>> r = m.report()
>>> round(r["accuracy"], 4), r["rolling_accuracy"], round(r["baseline_accuracy"], 4)
(0.6667, 0.5, 0.0)
"""

from __future__ import annotations

import collections
from typing import Any

from river import metrics

# Updates are held and applied this many at a time, in order: River's metric code then runs in
# a loop of its own, which keeps it in the CPU's caches, and a classifier's confusion matrices
# take each distinct (label, prediction) pair once (each made the learner 2-3 µs an event
# cheaper in the worker's model process).
HELD_UPDATES = 500


class MetricSet:
    """All metrics of one learner for one task (``classification`` or ``regression``).

    Prequential metrics are updated per label, in batches (`HELD_UPDATES`). Rolling ones are
    computed when reported, from the last ``window`` served predictions: cheaper per label than
    River's `utils.Rolling` (which reverts and updates every metric on every label), and
    without its float drift.
    """

    def __init__(self, task: str, window: int = 1000):
        self.task = task
        self.window = window
        self.n_labels = 0
        self.n_scored = 0
        self.last_label: Any = None
        self.kinds: dict[str, type] | None = None  # name -> River metric class
        self._metrics: dict[str, metrics.base.Metric] = {}
        self._cm: metrics.ConfusionMatrix | None = None  # accuracy's and F1's, if shared
        self._baseline: metrics.base.Metric | None = None
        self._recent: collections.deque = collections.deque(maxlen=window)
        self._report: tuple[int, dict] = (-1, {})
        self._held: list[tuple] = []  # updates not applied yet: see HELD_UPDATES

    def __getstate__(self) -> dict:
        # The cached report depends on when it was asked for, not on the stream: leave it out,
        # so that equal streams give equal states.
        self.flush()
        return {**self.__dict__, "_report": (-1, {}), "_held": []}

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_held", [])
        state.setdefault("_cm", None)  # checkpoints from before the shared matrix: not shared
        self.__dict__.update(state)

    def _create(self, y: Any) -> None:
        # Which F1 and log-loss flavour fits depends on the labels, known at the first one.
        if self.task == "regression":
            self.kinds = {"mae": metrics.MAE, "rmse": metrics.RMSE, "r2": metrics.R2}
            self._baseline = metrics.MAE()
        else:
            binary = isinstance(y, bool)  # other classes may be many: macro-F1, cross-entropy
            self.kinds = {
                "accuracy": metrics.Accuracy,
                "f1": metrics.F1 if binary else metrics.MacroF1,
                "log_loss": metrics.LogLoss if binary else metrics.CrossEntropy,
            }
            self._baseline = metrics.Accuracy()
        self._metrics, self._cm = _build(self.kinds)

    def update(self, y: Any, y_pred: Any, proba: dict | None) -> None:
        """Account one label against what was served for its event."""
        held = self._held
        held.append((y, y_pred, proba))
        if len(held) >= HELD_UPDATES:
            self.flush()

    def flush(self) -> None:
        """Apply the held updates, in order (reading or saving the metrics does this)."""
        held, self._held = self._held, []
        if not held:
            return
        if self.kinds is None:
            self._create(held[0][0])
        if self._cm is None:  # regression, or a checkpoint from before sharing
            for y, y_pred, proba in held:
                self._apply(y, y_pred, proba)
            return
        # A confusion matrix only adds up counts: each (label, prediction) pair is added
        # once with its count, which gives the same matrix as adding them one by one.
        labels = [y for y, _, _ in held]
        previous = [self.last_label, *labels[:-1]]
        first = 0 if self.last_label is not None else 1  # no baseline for the first label
        _add_counts(self._baseline.cm, collections.Counter(zip(labels[first:], previous[first:])))
        self.last_label = labels[-1]
        self.n_labels += len(held)
        scored = [h for h in held if h[1] is not None and h[1] != {}]
        self.n_scored += len(scored)
        _add_counts(self._cm, collections.Counter((y, y_pred) for y, y_pred, _ in scored))
        log_loss = self._metrics["log_loss"]
        for y, _, proba in scored:
            if proba:
                log_loss.update(y, proba)
        self._recent.extend(scored)

    def _apply(self, y: Any, y_pred: Any, proba: dict | None) -> None:
        """One held update, metric by metric (`flush` has made the metrics)."""
        self.n_labels += 1
        if self.last_label is not None:
            self._baseline.update(y, self.last_label)
        self.last_label = y
        if y_pred is None or y_pred == {}:
            return
        self.n_scored += 1
        _update(self._metrics, self._cm, y, y_pred, proba)
        self._recent.append((y, y_pred, proba))

    def report(self) -> dict[str, float | int]:
        """Current values, keyed by metric name; counts included."""
        self.flush()
        if self._report[0] == self.n_labels:
            return dict(self._report[1])
        out: dict[str, float | int] = {"n_labels": self.n_labels, "n_scored": self.n_scored}
        for name, metric in self._metrics.items():
            out[name] = metric.get()
        if self.kinds is not None:
            rolling, cm = _build(self.kinds)
            for y, y_pred, proba in self._recent:
                _update(rolling, cm, y, y_pred, proba)
            out.update({f"rolling_{name}": m.get() for name, m in rolling.items()})
            out["baseline_" + self.primary] = self._baseline.get()
        self._report = (self.n_labels, out)
        return dict(out)

    @property
    def primary(self) -> str:
        """The headline metric: accuracy for classifiers, MAE for regressors."""
        return "accuracy" if self.task == "classification" else "mae"


def _build(kinds: dict[str, type]) -> tuple[dict, metrics.ConfusionMatrix | None]:
    """The metrics of ``kinds``, and for a classifier the confusion matrix that accuracy and
    F1 share (River's ``cm``): a label updates it once. Binary F1 reads only the counts of the
    positive class, True, which are the same whether other labels keep their value (as here)
    or become False (as in F1's own update)."""
    if "accuracy" not in kinds:
        return {name: kind() for name, kind in kinds.items()}, None
    cm = metrics.ConfusionMatrix()
    named = {name: kind() if name == "log_loss" else kind(cm=cm) for name, kind in kinds.items()}
    return named, cm


def _add_counts(cm: metrics.ConfusionMatrix, counts: collections.Counter) -> None:
    """Add ``(label, prediction)`` pairs, each ``counts`` times, as one update each."""
    for (y, y_pred), n in counts.items():
        cm.update(y, y_pred, float(n))
        cm.n_samples += n - 1


def _update(named: dict, cm, y: Any, y_pred: Any, proba: dict | None) -> None:
    if cm is not None:
        cm.update(y, y_pred)  # accuracy and F1
        if proba:
            named["log_loss"].update(y, proba)
        return
    for name, metric in named.items():  # regression, or a checkpoint from before sharing
        if name == "log_loss":
            if proba:
                metric.update(y, proba)
        else:
            metric.update(y, y_pred)
