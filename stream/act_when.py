"""The performance-threshold trigger: act when a rolling metric crosses a line.

Practitioners retrain when the served model's recent score falls below what they accept
(``accuracy<0.7``) or its error rises above it (``mae>3``), whatever a change detector says.
`ActWhen` keeps the metric over the last ``labels`` served predictions (`river.utils.Rolling`)
and fires when that window is full and past the threshold.

A model is judged only once it has learned ``labels`` labels: the predictions served for
those (a young model's) are skipped, at the start and after each action of the drift policy
(this trigger's or ADWIN's); while a challenge is under way it does not count at all. So it
cannot fire again before the policy's new model has had ``labels`` labels, and a fresh model
is never replaced for being young (with ``reset``, that would replace it for ever).

>>> trigger = ActWhen.parse("accuracy<0.7", labels=4)
>>> [trigger.update(y, True, None) for y in (True, False) * 2]  # the model's first 4: skipped
[None, None, None, None]
>>> [trigger.update(y, True, None) for y in (True, False, True)]  # window not full yet
[None, None, None]
>>> fired = trigger.update(False, True, None)
>>> fired["trigger"], fired["metric"], fired["op"], fired["threshold"], fired["value"]
('act_when', 'accuracy', '<', 0.7, 0.5)
>>> any(trigger.update(False, True, None) for _ in range(7))  # 4 skipped, 3 in the window
False
>>> ActWhen.parse("accuracy>0.7")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: --act-when 'accuracy>0.7': accuracy is better when higher: ... accuracy<VALUE
"""

from __future__ import annotations

import re
from typing import Any

from river import metrics, utils

__all__ = ["ActWhen", "METRICS"]

# name -> (task, higher is better)
METRICS = {
    "accuracy": ("classification", True),
    "f1": ("classification", True),
    "log_loss": ("classification", False),
    "mae": ("regression", False),
    "rmse": ("regression", False),
    "r2": ("regression", True),
}
_EXPRESSION = re.compile(r"^\s*([a-z_0-9]+)\s*([<>])\s*([-+0-9.eE]+)\s*$")


class ActWhen:
    """``metric op threshold`` over the newest ``labels`` served predictions."""

    def __init__(self, metric: str, op: str, threshold: float, labels: int = 1000):
        self.metric = metric
        self.op = op
        self.threshold = threshold
        self.labels = labels
        self._rolling: utils.Rolling | None = None  # made at the first label (binary or not)
        self._binary = False
        self._warmup = labels  # served predictions still to skip (a young model's)

    @classmethod
    def parse(cls, text: str, labels: int = 1000) -> ActWhen:
        """``METRIC<VALUE`` or ``METRIC>VALUE``; a ValueError that says what is wrong."""
        where = f"--act-when {text!r}"
        match = _EXPRESSION.match(text or "")
        if match is None:
            raise ValueError(
                f"{where}: expected METRIC<VALUE or METRIC>VALUE, e.g. accuracy<0.7 or mae>3"
            )
        name, op, raw = match.groups()
        if name not in METRICS:
            raise ValueError(f"{where}: unknown metric {name!r}; one of {', '.join(METRICS)}")
        try:
            threshold = float(raw)
        except ValueError:
            raise ValueError(f"{where}: {raw!r} is not a number") from None
        higher = METRICS[name][1]
        if higher and op == ">":
            raise ValueError(
                f"{where}: {name} is better when higher: act when it falls, {name}<VALUE"
            )
        if not higher and op == "<":
            raise ValueError(
                f"{where}: {name} is an error (lower is better): act when it rises, {name}>VALUE"
            )
        if labels < 1:
            raise ValueError(f"act_when_labels must be at least 1, not {labels}")
        return cls(name, op, threshold, labels)

    @property
    def task(self) -> str:
        return METRICS[self.metric][0]

    def restart(self) -> None:
        """The policy acted: skip the next ``labels`` labels, then fill a new window."""
        self._warmup = self.labels
        if self._rolling is not None and len(self._rolling.window):
            self._rolling = self._new_rolling()

    def update(self, y: Any, y_pred: Any, proba: dict | None) -> dict | None:
        """Account one served prediction; the trigger's figures when it fires."""
        if y_pred is None or y_pred == {}:
            return None  # as the metrics: nothing was served
        if self._warmup:
            self._warmup -= 1
            return None
        if self._rolling is None:
            self._binary = isinstance(y, bool)
            self._rolling = self._new_rolling()
        rolling = self._rolling
        if self.metric == "log_loss":
            if not proba:
                return None
            rolling.update(y, proba)
        else:
            rolling.update(y, y_pred)
        if len(rolling.window) < self.labels:
            return None
        value = rolling.get()
        if not (value < self.threshold if self.op == "<" else value > self.threshold):
            return None
        self.restart()
        return {
            "trigger": "act_when",
            "metric": self.metric,
            "op": self.op,
            "threshold": self.threshold,
            "value": value,
            "labels": self.labels,
        }

    def _new_rolling(self) -> utils.Rolling:
        kind = {
            "accuracy": metrics.Accuracy,
            "f1": metrics.F1 if self._binary else metrics.MacroF1,
            "log_loss": metrics.LogLoss if self._binary else metrics.CrossEntropy,
            "mae": metrics.MAE,
            "rmse": metrics.RMSE,
            "r2": metrics.R2,
        }[self.metric]
        return utils.Rolling(kind, window_size=self.labels)
