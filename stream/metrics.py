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

from typing import Any

from river import metrics, utils


class MetricSet:
    """All metrics of one learner for one task (``classification`` or ``regression``)."""

    def __init__(self, task: str, window: int = 1000):
        self.task = task
        self.window = window
        self.n_labels = 0
        self.n_scored = 0
        self.last_label: Any = None
        self._metrics: dict[str, metrics.base.Metric] | None = None
        self._baseline: metrics.base.Metric | None = None

    def _create(self, y: Any) -> dict[str, metrics.base.Metric]:
        # Which F1 and log-loss flavour fits depends on the labels, known at the first one.
        w = self.window
        if self.task == "regression":
            kinds = {"mae": metrics.MAE, "rmse": metrics.RMSE, "r2": metrics.R2}
            base_kind = metrics.MAE
        else:
            binary = isinstance(y, bool)  # other classes may be many: macro-F1, cross-entropy
            kinds = {
                "accuracy": metrics.Accuracy,
                "f1": metrics.F1 if binary else metrics.MacroF1,
                "log_loss": metrics.LogLoss if binary else metrics.CrossEntropy,
            }
            base_kind = metrics.Accuracy
        out = {name: kind() for name, kind in kinds.items()}
        out.update({f"rolling_{name}": utils.Rolling(kind, window_size=w)
                    for name, kind in kinds.items()})
        self._baseline = base_kind()
        return out

    def update(self, y: Any, y_pred: Any, proba: dict | None) -> None:
        """Account one label against what was served for its event."""
        if self._metrics is None:
            self._metrics = self._create(y)
        m = self._metrics
        self.n_labels += 1
        if self.last_label is not None:
            self._baseline.update(y, self.last_label)
        self.last_label = y
        if y_pred is None or y_pred == {}:
            return
        self.n_scored += 1
        for name, metric in m.items():
            if name.endswith("log_loss"):
                if proba:
                    metric.update(y, proba)
            else:
                metric.update(y, y_pred)

    def report(self) -> dict[str, float | int]:
        """Current values, keyed by metric name; counts included."""
        out: dict[str, float | int] = {"n_labels": self.n_labels, "n_scored": self.n_scored}
        for name, metric in (self._metrics or {}).items():
            out[name] = metric.get()
        if self._baseline is not None:
            out["baseline_" + self.primary] = self._baseline.get()
        return out

    @property
    def primary(self) -> str:
        """The headline metric: accuracy for classifiers, MAE for regressors."""
        return "accuracy" if self.task == "classification" else "mae"
