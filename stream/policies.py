"""Drift policies: what happens to the served model when ADWIN detects a concept change.

- ``reset``: a fresh clone replaces the model (River's `DriftRetrainingClassifier` with
  ``train_in_background=False``).
- ``window``: a fresh clone trained on the labelled samples inside ADWIN's post-change window
  (kept in a bounded buffer) replaces the model, so it starts from recent data, not from zero.
- ``reweight``: the old model stays, a new one (trained like ``window``) joins it, and their
  predictions are blended by recent error; after ``horizon`` labels the worse one is dropped.
- ``challenger``: the model keeps serving; a fresh clone trained like ``window``, and the
  last replaced models (kept, frozen), learn or wait beside it and replace it only when a paired
  test on the same labels says they are better (`driftstream.stream.challenger`); a concept
  that comes back gets its old model back.
- ``none``: detect and report only.

>>> from river import linear_model
>>> served = ServedModel(linear_model.LogisticRegression(), "classification", "window", 100)
>>> for i in range(50):
...     served.learn({"x": float(i % 2)}, i % 2 == 1, None, 0.0 if i < 40 else 1.0)
>>> served.on_drift(served_error=1.0)
'retrained on 10 samples since the change'
>>> served.generation, served.updates
(1, 10)
"""

from __future__ import annotations

import collections
import math
from typing import Any

from river import base

from driftstream.stream.challenger import Challenge, ChallengerOptions, KeptModel, Verdict
from driftstream.stream.records import ModelVersion

POLICIES = ("reset", "window", "reweight", "challenger", "none")


class ServedModel:
    """The model (or, under ``reweight``, the models) that serve predictions.

    The version ``(generation, updates)`` changes when a policy replaces the model and on every
    learn step, so every prediction can say exactly which model state made it. Under
    ``challenger`` it also holds the kept models and the challenge under way, if any: they are
    part of the learner's state, in every checkpoint.
    """

    def __init__(
        self,
        model: base.Estimator,
        task: str,
        policy: str = "reset",
        buffer_size: int = 5000,
        horizon: int = 1000,
        ewma: float = 0.02,
        challenger: ChallengerOptions | None = None,
    ):
        if policy not in POLICIES:
            raise ValueError(f"drift policy {policy!r} is not one of {POLICIES}")
        self.prototype = model.clone()
        self.task = task
        self.policy = policy
        self.models: list[base.Estimator] = [model]
        self.errors: list[float] = [0.0]  # EWMA of each model's own error (reweight)
        self.horizon = horizon
        self.ewma = ewma
        self.since_drift = 0
        self.generation = 0
        self.updates = 0
        keep = buffer_size if policy in ("window", "reweight", "challenger") else 0
        self.buffer: collections.deque = collections.deque(maxlen=keep)
        self._fast_argmax = task == "classification" and _predict_is_argmax(model)
        self.options = challenger or ChallengerOptions()
        self.kept: collections.deque[KeptModel] = collections.deque(maxlen=self.options.keep)
        self.challenge: Challenge | None = None
        self.since_start = 0  # challenger: labels since the champion took over or a challenge

    def __setstate__(self, state: dict) -> None:
        if "options" not in state:  # checkpoints from before the challenger policy
            state["options"] = ChallengerOptions()
            state["kept"] = collections.deque(maxlen=state["options"].keep)
            state["challenge"] = None
            state["since_start"] = 0
        self.__dict__.update(state)

    @property
    def version(self) -> ModelVersion:
        return ModelVersion(self.generation, self.updates)

    def predict(self, x: dict) -> tuple[Any, dict | None, list | None]:
        """(prediction, class probabilities or None, per-model predictions or None)."""
        if len(self.models) == 1:
            pred, proba = self._predict_one(self.models[0], x)
            return pred, proba, None
        outputs = [self._predict_one(m, x) for m in self.models]
        weights = [1.0 / (e + 1e-6) for e in self.errors]
        if self.task == "classification":
            blend: dict = {}
            for (_, proba), w in zip(outputs, weights):
                for c, p in (proba or {}).items():
                    blend[c] = blend.get(c, 0.0) + w * p
            total = sum(blend.values())
            proba = {c: p / total for c, p in blend.items()} if total else {}
            pred = max(proba, key=proba.get) if proba else None
        else:
            pairs = [(p, w) for (p, _), w in zip(outputs, weights) if p is not None]
            proba = None
            pred = sum(p * w for p, w in pairs) / sum(w for _, w in pairs) if pairs else None
        return pred, proba, [p for p, _ in outputs]

    def _predict_one(self, model: base.Estimator, x: dict) -> tuple[Any, dict | None]:
        if self.task != "classification":
            return model.predict_one(x), None
        proba = model.predict_proba_one(x)
        if self._fast_argmax:  # same as River's Classifier.predict_one, without a second pass
            return (max(proba, key=proba.get) if proba else None), proba
        return model.predict_one(x), proba

    def learn(
        self, x: dict, y: Any, per_model: list | None, served_error: float | None
    ) -> Verdict | None:
        """Learn one label (all models under ``reweight``) and track each model's error.

        Under ``challenger``, during a challenge, returns the verdict when one is reached.
        """
        challenge = self.challenge
        if challenge is not None:
            champion = self.models[0]
            challenge.observe(x, y, self._predict_one(champion, x)[0], self._prediction)
            champion.learn_one(x, y)
            self.updates += 1
            challenge.learn(x, y)
            self.buffer.append((x, y, served_error))
            self.since_start += 1
            return self._judge(challenge)
        if per_model is not None and len(per_model) == len(self.models):
            a = self.ewma
            for i, p in enumerate(per_model):
                if p is not None:
                    self.errors[i] += a * (error(self.task, y, p) - self.errors[i])
        for model in self.models:
            model.learn_one(x, y)
        self.updates += 1
        self.since_start += 1
        if self.buffer.maxlen:
            self.buffer.append((x, y, served_error))
        if len(self.models) > 1:
            self.since_drift += 1
            if self.since_drift >= self.horizon:
                best = min(range(len(self.models)), key=self.errors.__getitem__)
                self.models = [self.models[best]]
                self.errors = [self.errors[best]]
        return None

    def on_drift(self, served_error: float) -> str:
        """Apply the policy after a concept-drift detection; return what was done.

        ADWIN only says that its window's mean changed, and after a detection its window still
        holds mostly old-concept data (it drops whole buckets). So ``window`` and ``reweight``
        locate the change in the buffered served errors themselves (`change_point`) and train
        the new model only on the samples after it; the current sample is learned next.
        """
        if self.policy == "none":
            return "none"
        fresh = self.prototype.clone()
        n = 0
        if self.buffer.maxlen:
            buffered = list(self.buffer)
            # challenger: the change is after the champion took over (or the last challenge
            # started); the buffer may hold older changes, which can be bigger ones
            searched = len(buffered)
            if self.policy == "challenger":
                searched = min(searched, self.since_start)
            errors = [e for _, _, e in buffered[len(buffered) - searched :]] + [served_error]
            n = searched - change_point(errors, rise=self.policy == "challenger")
            for x, y, _ in buffered[len(buffered) - n :] if n > 0 else ():
                fresh.learn_one(x, y)
        if self.policy == "challenger":
            return self._challenge(fresh, n)
        self.generation += 1
        self.updates = n
        if self.policy == "reweight":
            if len(self.models) > 1:  # keep the better of the two current ones
                best = min(range(len(self.models)), key=self.errors.__getitem__)
                self.models, self.errors = [self.models[best]], [self.errors[best]]
            self.models.append(fresh)
            self.errors.append(self.errors[0])
            self.since_drift = 0
            return f"added challenger trained on {n} samples since the change"
        self.models = [fresh]
        self.errors = [0.0]
        return "reset" if self.policy == "reset" else f"retrained on {n} samples since the change"

    # -- challenger -----------------------------------------------------------------------

    def _challenge(self, fresh: base.Estimator, n: int) -> str:
        """Start a challenge (or restart the one under way, keeping its snapshot)."""
        running = self.challenge
        if running is not None:  # the champion before the first detection is the one to keep
            snapshot = running.snapshot
        elif self.options.keep:
            snapshot = Challenge.take_snapshot(self.models[0], self.generation, self.updates)
        else:
            snapshot = None
        challenge = Challenge(self.task, self.options, fresh, n, snapshot, self.kept)
        challenge.replay_kept(self.buffer, self._prediction)
        self.challenge = challenge
        self.since_start = 0
        return (
            f"{'restarted' if running else 'started'} challenge: fresh challenger trained on "
            f"{n} samples since the change, {len(self.kept)} kept model(s)"
        )

    def _judge(self, challenge: Challenge) -> Verdict | None:
        decision = challenge.judge()
        if decision.outcome == "wait":
            return None
        self.challenge = None
        before = self.version
        candidate = decision.candidate
        details = {
            "challengers": challenge.challengers,
            "labels": challenge.labels,
            "alpha": challenge.alpha,
        }
        if decision.evidence is not None:
            details.update(decision.evidence.to_dict(), challenger=candidate.describe())
        if decision.outcome == "drop":
            ended = (
                "worse than the champion after"
                if challenge.labels < self.options.horizon
                else "none better within"
            )
            action = (
                f"dropped {challenge.challengers} challenger(s): {ended} {challenge.labels} labels"
            )
            left = decision.snapshot_left_behind
            if left is not None:  # the champion has left its concept: keep the old model
                self.kept.append(challenge.snapshot)
                details["snapshot_kept"] = left.to_dict()
                action += "; kept the champion as it was at the detection"
            return Verdict(action, details, before, before)
        replaced = challenge.snapshot
        if candidate.origin == "kept":
            for i, k in enumerate(self.kept):  # by identity: models need not define ==
                if k.model is candidate.model:
                    del self.kept[i]
                    break
        if replaced is not None:
            self.kept.append(replaced)
        self.models = [candidate.model]
        self.errors = [0.0]
        self.generation += 1
        self.updates = candidate.updates
        self.since_start = 0
        return Verdict(f"promoted {candidate.describe()}", details, before, self.version)

    def _prediction(self, model: base.Estimator, x: dict) -> Any:
        return self._predict_one(model, x)[0]


def change_point(errors: list[float | None], min_size: int = 10, rise: bool = False) -> int:
    """Index at which the mean of ``errors`` changes most: where the newest segment starts.

    Maximises |mean(before) - mean(after)| * sqrt(n1 * n2 / n), the statistic ADWIN bounds,
    over every split leaving ``min_size`` values on each side; 0 if there are too few values.
    Unknown errors (None: no prediction was served) count as 0. With ``rise``, only where the
    mean goes up (a young model's falling error is no change of concept).

    >>> change_point([0.0] * 50 + [1.0] * 20)
    50
    >>> errors = [1.0] * 20 + [0.0] * 50 + [1.0] * 20  # learnt, then a new concept
    >>> change_point(errors), change_point(errors, rise=True)
    (20, 70)
    """
    n = len(errors)
    if n < 2 * min_size:
        return 0
    prefix = [0.0]
    for e in errors:
        prefix.append(prefix[-1] + (e or 0.0))
    total = prefix[-1]
    best_k, best = 0, -1.0
    for k in range(min_size, n - min_size + 1):
        n2 = n - k
        diff = (total - prefix[k]) / n2 - prefix[k] / k
        stat = (diff if rise else abs(diff)) * math.sqrt(k * n2 / n)
        if stat > best:
            best, best_k = stat, k
    return best_k


def error(task: str, y: Any, y_pred: Any) -> float:
    """Served error fed to ADWIN: 0/1 for classification, absolute error for regression."""
    if task == "classification":
        return 0.0 if y_pred == y else 1.0
    return abs(y - y_pred)


def _predict_is_argmax(model: base.Estimator) -> bool:
    """True when the model's ``predict_one`` is River's default argmax of probabilities."""
    from river import compose  # noqa: PLC0415 (keep the module import light)

    if isinstance(model, compose.Pipeline):
        model = list(model.steps.values())[-1]
    return type(model).predict_one is base.Classifier.predict_one
