"""Concept-change detection with ADWIN on the served-error stream.

(Data drift, the inputs compared with the model's reference data, is `stream.data_monitor`.)

Each detection comes with the detector's figures, so that an operator reading the drift topic
can see how big the change was: window widths and means before and after the cut.

>>> monitor = ErrorMonitor(delta=0.002, cooldown=0)
>>> hits = [i for i in range(2000) if monitor.update(0.0 if i < 1000 else 1.0)]
>>> hits[0] > 1000, monitor.n_detections >= 1
(True, True)
"""

from __future__ import annotations

from river import drift


class ErrorMonitor:
    """ADWIN on a stream of errors, with a cooldown against double firing on one change.

    ``cooldown`` is a number of updates after a detection during which further detections are
    ignored (counted in ``n_suppressed``). With ``cooldown=0`` this is plain ADWIN, as used by
    `river.drift.DriftRetrainingClassifier`.
    """

    def __init__(self, delta: float = 0.002, cooldown: int = 0):
        self.delta = delta
        self.cooldown = cooldown
        self.adwin = drift.ADWIN(delta=delta)
        self.n_seen = 0
        self.n_detections = 0
        self.n_suppressed = 0
        self._quiet_until = 0
        # River's ADWIN only shrinks its window on a detection, and starts afresh on the update
        # after one: so its window is exactly the values since the last detection. Counting
        # them here gives the "before" figures without asking ADWIN on every update.
        self._width = 0
        self._total = 0.0

    def update(self, value: float) -> dict | None:
        """Feed one value; return the detector's figures when a change is detected."""
        adwin = self.adwin
        adwin.update(value)
        self.n_seen += 1
        self._width += 1
        self._total += value
        if not adwin.drift_detected:
            return None
        width_before, total_before = self._width, self._total
        self._width, self._total = 0, 0.0
        if self.n_seen < self._quiet_until:
            self.n_suppressed += 1
            return None
        self.n_detections += 1
        self._quiet_until = self.n_seen + self.cooldown
        width_after = int(adwin.width)
        dropped = width_before - width_after
        return {
            "name": "ADWIN",
            "delta": self.delta,
            "width_before": width_before,
            "width_after": width_after,
            "mean_before": (total_before - adwin.total) / dropped if dropped else None,
            "mean_after": adwin.estimation,
        }


class DataDriftMonitor:
    """Only so that checkpoints from before `driftstream.stream.data_monitor` still load.

    It was ADWIN on each numeric feature's values: on real streams it fired on every small
    wobble of a mean and flooded operators with reports. A restored learner replaces it with
    a `DataMonitor` (`Learner.__setstate__`).
    """
