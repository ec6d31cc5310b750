"""The learner of one partition: score events, join delayed labels, learn, watch for drift.

Per label it does what `river.evaluate.progressive_val_score` and
`river.drift.DriftRetrainingClassifier` do, in their order: update the metrics with the
prediction that was served, feed the served error to ADWIN, apply the drift policy on a
detection, then learn. Its whole state pickles deterministically, so a checkpoint restored
mid-stream continues with exactly the predictions of an uninterrupted run.

A label is checked against the task and the partition's labels so far before it touches its
pending join, and an event is checked against the ids still pending or remembered before it
is scored: a bad label or a re-sent event is dead-lettered and changes nothing else. The data
monitor (`stream.data_monitor`) sees every scored event and every join; it only reports,
unless ``act_on_data_drift``. ``act_when`` (`stream.act_when`) applies the drift policy when a
rolling metric crosses a threshold.

>>> from driftstream.stream.records import Event, Label
>>> learner = Learner(LearnerConfig(model="lr"))
>>> [type(o).__name__ for o in learner.process_event(Event("a", {"x": 1.0}, ts=0))]
['Prediction']
>>> learner.process_label(Label("a", True, ts=5))
[]
>>> learner.version, learner.metrics.report()["n_labels"]
(ModelVersion(generation=0, updates=1), 1)
>>> [o.reason for o in learner.process_label(Label("a", True, ts=6))]
['duplicate_label']
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import pickle
import sys
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import orjson
from river import base

from driftstream.stream.act_when import ActWhen
from driftstream.stream.challenger import ChallengerOptions
from driftstream.stream.codec import InvalidRecord, check_label_type
from driftstream.stream.data_monitor import DataAlarm, DataMonitor, DataMonitorOptions
from driftstream.stream.drift import ErrorMonitor
from driftstream.stream.metrics import MetricSet
from driftstream.stream.models import build_model, task_of
from driftstream.stream.policies import ServedModel, error
from driftstream.stream.records import (
    DriftReport,
    Event,
    Label,
    ModelVersion,
    Prediction,
    Rejection,
)
from driftstream.stream.schema import FeatureSchema

__all__ = ["Learner", "LearnerConfig", "PendingJoin", "RecentIds"]


@dataclasses.dataclass
class LearnerConfig:
    """Everything that decides a learner's behaviour; stored with every checkpoint."""

    model: str = "lr"
    # the most robust policy in bench/results/policies.md (docs/design.md says why)
    drift_policy: str = "challenger"
    adwin_delta: float = 0.002
    cooldown: int = 0  # labels after a concept detection during which ADWIN alarms are ignored
    # ADWIN also fires when the error falls (e.g. while a young model learns); by default only
    # a rise makes the policy act. True acts on both, as river.drift.DriftRetrainingClassifier.
    act_on_decrease: bool = False
    window_buffer: int = 5000  # labelled samples kept for the window/reweight/challenger policies
    reweight_horizon: int = 1000  # labels after which reweight drops the worse model
    # challenger policy (stream/challenger.py, docs/design.md): labels before a challenge is
    # dropped, replaced models kept, the paired test's significance, pairs needed, labels
    # between tests, pairs tested
    challenger_horizon: int = ChallengerOptions.horizon
    kept_models: int = ChallengerOptions.keep
    challenger_alpha: float = ChallengerOptions.alpha
    challenger_min_n: int = ChallengerOptions.min_n
    challenger_fresh_min_n: int = ChallengerOptions.fresh_min_n
    challenger_test_every: int = ChallengerOptions.test_every
    challenger_window: int = ChallengerOptions.window
    max_pending: int = 1_000_000  # pending joins kept; the oldest is reported when over
    pending_ttl: int | None = None  # event-time units after which an unlabelled event expires
    max_early_labels: int = 10_000  # labels waiting for their event
    # classification: distinct labels kept; a label of a new class past this is rejected (an id
    # sent as a label made a Hoeffding tree 230 times slower and 270 MB larger in 5,000 labels)
    max_classes: int = 100
    early_label_wait: int = 1000  # event-time units the events may pass a waiting label
    remember_ids: int = 100_000  # joined/expired ids remembered to name late duplicates
    # data drift (stream/data_monitor.py): reference events, live window, events between checks
    data_drift: bool = True
    data_reference_size: int = DataMonitorOptions.reference_size
    data_window: int = DataMonitorOptions.window
    data_check_every: int = DataMonitorOptions.check_every
    act_on_data_drift: bool = False  # a data alarm applies the drift policy (else: reported)
    # a pinned reference for a fresh learner's data monitor, e.g. the training set:
    # {"rows": [features...], "labels": [...] | None, "source": {...}} (driftstream/reference.py)
    reference: dict | None = None
    # e.g. "accuracy<0.7", "mae>3": the drift policy acts when the metric over the newest
    # act_when_labels served predictions crosses the threshold (stream/act_when.py)
    act_when: str | None = None
    act_when_labels: int = 1000
    metric_window: int = 1000
    schema: dict | None = None

    def challenger_options(self) -> ChallengerOptions:
        return ChallengerOptions(
            horizon=self.challenger_horizon,
            keep=self.kept_models,
            alpha=self.challenger_alpha,
            min_n=self.challenger_min_n,
            fresh_min_n=self.challenger_fresh_min_n,
            test_every=self.challenger_test_every,
            window=self.challenger_window,
        )

    def data_monitor_options(self) -> DataMonitorOptions:
        return DataMonitorOptions(
            reference_size=self.data_reference_size,
            window=self.data_window,
            check_every=self.data_check_every,
        )

    def act_when_trigger(self) -> ActWhen | None:
        if self.act_when is None:
            return None
        return ActWhen.parse(self.act_when, self.act_when_labels)

    def __post_init__(self):
        self.challenger_options()  # raises on a bad value, naming it
        self.act_when_trigger()
        for name in ("data_reference_size", "data_window", "data_check_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("max_pending", "metric_window", "remember_ids", "max_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("cooldown", "window_buffer", "max_early_labels", "early_label_wait"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")


class PendingJoin(NamedTuple):
    """A scored event waiting for its label: what was served, to learn and measure with."""

    x: dict  # the features, as checked by the schema
    prediction: Any
    proba: dict | None
    per_model: list | None  # each model's prediction (reweight), to weigh them by error
    generation: int  # of the model that served it
    event_ts: int
    offset: int  # of the event, to name it when a duplicate comes


_pending_join = functools.partial(tuple.__new__, PendingJoin)  # from a plain tuple, in C


class Learner:
    """Model, detectors, metrics, pending joins and model version of one partition."""

    def __init__(self, config: LearnerConfig | None = None, partition: int = 0):
        self.config = config = config or LearnerConfig()
        self.partition = partition
        model = build_model(config.model)
        self.task = task_of(model)
        self.served = ServedModel(
            model,
            self.task,
            config.drift_policy,
            config.window_buffer,
            config.reweight_horizon,
            challenger=config.challenger_options(),
        )
        self.monitor = ErrorMonitor(config.adwin_delta, config.cooldown)
        self.trigger = config.act_when_trigger()
        if self.trigger is not None and self.trigger.task != self.task:
            raise ValueError(
                f"--act-when {config.act_when!r}: {self.trigger.metric} is a {self.trigger.task} "
                f"metric, the model {config.model!r} does {self.task}"
            )
        self.binary_only = _binary_only(model)
        self.metrics = MetricSet(self.task, config.metric_window)
        self.schema = FeatureSchema.from_dict(config.schema) if config.schema else FeatureSchema()
        self.data_monitor = _data_monitor(config)
        # Oldest first. OrderedDict, not dict: a dict whose oldest entries keep being removed
        # finds its first entry by skipping every removed one since its last resize (~50 µs
        # per label once 100,000 ids are remembered).
        self.pending: OrderedDict[str, PendingJoin] = OrderedDict()
        self.early: OrderedDict[str, Label] = OrderedDict()  # labels before their event
        self.joined = RecentIds(config.remember_ids)  # recent joins, to name duplicates
        self.expired = RecentIds(config.remember_ids)  # recently expired, for late labels
        self.clock = -(1 << 62)  # newest event time seen
        self.n_events = 0
        self.n_labels = 0
        self.rejected: dict[str, int] = {}
        self.drifts: dict[str, int] = {"concept": 0, "data": 0}
        self.label_delays: dict[int, int] = {}  # event-time delay (upper bound) -> labels
        self.classes: set = set()  # classification: the labels' classes seen
        self.n_late = 0  # records merged after the other input had passed their time

    def __getstate__(self) -> dict:
        # The remembered ids (100,000 by default) as one JSON array each: pickling them one by
        # one took ~20 ms, every checkpoint.
        state = self.__dict__.copy()
        for name in _REMEMBERED:
            state[name] = state[name].packed()
        # Pending joins as plain tuples: pickle takes those in C, a NamedTuple each by a call.
        state["pending"] = (list(self.pending), list(map(tuple, self.pending.values())))
        return state

    def __setstate__(self, state: dict) -> None:
        limit = state["config"].remember_ids
        for name in _REMEMBERED:
            state[name] = RecentIds.unpacked(state[name], limit)
        pending = state["pending"]
        if type(pending) is tuple:
            ids, joins = pending
        else:  # checkpoints from before pending joins were packed: a dict of tuples
            ids, joins = list(pending), list(pending.values())
        if joins and len(joins[0]) < len(PendingJoin._fields):  # from before offsets were kept
            joins = [(*join, -1) for join in joins]
        state["pending"] = OrderedDict(zip(ids, map(_pending_join, joins)))
        if type(state["early"]) is dict:  # checkpoints from before it was an OrderedDict
            state["early"] = OrderedDict(state["early"])
        state.setdefault("classes", set())  # checkpoints from before these: counted from here
        state.setdefault("n_late", 0)
        # checkpoints from before the data monitor, act_when and label checks
        state.setdefault("trigger", None)
        if "binary_only" not in state:
            state["binary_only"] = _binary_only(state["served"].prototype)
        if not isinstance(state.get("data_monitor"), DataMonitor | None):
            state["data_monitor"] = _data_monitor(state["config"])
        self.__dict__.update(state)

    @property
    def version(self) -> ModelVersion:
        return self.served.version

    # -- events ---------------------------------------------------------------------------

    def process_event(self, event: Event, scored_at: int = 0) -> list:
        """Score one event; returns its Prediction plus any drift reports or rejections."""
        out: list = []
        if event.ts > self.clock:
            self._advance(event.ts, out)
        if self.early:
            self._expire_early(event.ts, out)
        first = self._received(event.id)
        if first is not None:
            return self._reject(out, event, "duplicate_event", first)
        try:
            x = self.schema.check(event.features)
            pred, proba, per_model = self.served.predict(x)
        except InvalidRecord as e:
            return self._reject(out, event, e.reason, e.detail)
        except Exception as e:  # a model that cannot take this input must not stop the stream
            return self._reject(out, event, "model_error", f"{type(e).__name__}: {e}")
        self.n_events += 1
        served = self.served
        while self.pending and len(self.pending) >= self.config.max_pending:
            self._expire_oldest_pending(out, "max_pending reached")
        self.pending[event.id] = PendingJoin(
            x, pred, proba, per_model, served.generation, event.ts, event.offset
        )
        out.append(
            Prediction(
                event.id,
                pred,
                proba,
                served.generation,
                served.updates,
                self.partition,
                event.offset,
                event.ts,
                scored_at,
            )
        )
        if self.data_monitor is not None:
            alarms = self.data_monitor.observe_event(x)
            if alarms:
                self._data_alarms(alarms, event.ts, event.id, out)
        early = self.early.pop(event.id, None)
        if early is not None:
            self._join(early, out)
        return out

    def _received(self, event_id: str) -> str | None:
        """Why an event with this id is a duplicate (naming the first one's offset), or None."""
        join = self.pending.get(event_id)
        if join is not None:
            offset, state = join.offset, "still waits for its label"
        elif event_id in self.joined:
            offset, state = self.joined.get(event_id), "was labelled and learned"
        elif event_id in self.expired:
            offset, state = self.expired.get(event_id), "expired unlabelled"
        else:
            return None
        where = f"offset {offset}" if offset is not None and offset >= 0 else "an unknown offset"
        return f"id {event_id!r} was first received at {where} and {state}; not scored again"

    def _data_alarms(self, alarms: list[DataAlarm], ts: int, record_id: str, out: list) -> None:
        """Each alarm as a drift report; with ``act_on_data_drift`` the first one of a check
        applies the drift policy (the others of that check say so)."""
        acted_on = None  # the alarm of this check that made the policy act
        for alarm in alarms:
            before = self.served.version
            if not self.config.act_on_data_drift:
                action = "reported"
            elif acted_on is None:
                action = self._act(None)
                acted_on = f"{alarm.test} {alarm.feature or ''}".strip()
            else:
                action = f"none (the policy acted on the {acted_on} alarm of this check)"
            self.drifts["data"] += 1
            out.append(
                DriftReport(
                    "data",
                    self.partition,
                    ts,
                    alarm.n_seen,
                    _plain(
                        {
                            "test": alarm.test,
                            "statistic": alarm.statistic,
                            "p_value": alarm.p_value,
                            "effect": alarm.effect,
                            "reference": alarm.reference,
                            "live": alarm.live,
                        }
                    ),
                    action,
                    before,
                    self.served.version,
                    alarm.feature,
                    record_id,
                )
            )

    def _act(self, served_error: float | None) -> str:
        """Apply the drift policy; a replaced model gets a new data reference."""
        generation = self.served.generation
        action = self.served.on_drift(served_error)
        self._after_action(generation)
        return action

    def _after_action(self, generation: int) -> None:
        """The policy acted: act_when counts afresh; a new model, a new data reference."""
        if self.trigger is not None:
            self.trigger.restart()
        if self.served.generation != generation and self.data_monitor is not None:
            self.data_monitor.rebuild_reference()

    # -- labels ---------------------------------------------------------------------------

    def process_label(self, label: Label) -> list:
        """Join a label with its pending event, learn from it and watch for drift."""
        out: list = []
        if label.ts > self.clock:
            self._advance(label.ts, out)
        try:
            check_label_type(label.label, self.task)
        except InvalidRecord as e:
            return self._reject(out, label, e.reason, e.detail)
        if self.task == "classification" and label.label not in self.classes:
            unfit = self._unfit_label(label.label)
            if unfit is not None:
                return self._reject(out, label, "invalid_label", unfit)
            if len(self.classes) >= self.config.max_classes:
                return self._reject(
                    out,
                    label,
                    "too_many_classes",
                    f"label {str(label.label)[:40]!r} would be class {len(self.classes) + 1}; "
                    f"at most {self.config.max_classes} (--max-classes; an id sent as a label?)",
                )
            self.classes.add(label.label)
        if label.id in self.pending:
            self._join(label, out)
        elif label.id in self.joined or label.id in self.early:
            self._reject(out, label, "duplicate_label", f"id {label.id!r} already has a label")
        elif label.id in self.expired:
            self._reject(out, label, "label_past_ttl", f"event {label.id!r} expired unlabelled")
        else:
            if len(self.early) >= self.config.max_early_labels:
                if not self.early:  # no room at all: a label must match a pending event
                    return self._reject(out, label, "unknown_id", "no event with this id")
                oldest = next(iter(self.early))
                self._reject(
                    out,
                    self.early.pop(oldest),
                    "unknown_id",
                    "no event with this id; early-label buffer full",
                )
            self.early[label.id] = label
        return out

    def _unfit_label(self, y: Any) -> str | None:
        """Why a label of a new class cannot be this partition's, or None if it can.

        Checked before the join: a label that joined and then failed in ``learn_one`` had
        already counted in the metrics and ADWIN, and took the join from the true label.
        """
        shown = f"label {str(y)[:40]!r} ({y.__class__.__name__})"
        if self.binary_only and not (y.__class__ is bool or y in (0, 1)):
            return f"{shown} for a binary model ({self.binary_only}): labels are true/false or 0/1"
        kinds = {c.__class__ for c in self.classes}
        if kinds and y.__class__ not in kinds:
            so_far = ", ".join(sorted(repr(c)[:20] for c in self.classes)[:5])
            return f"{shown} does not fit the labels so far ({so_far}); wrong field or producer?"
        return None

    def _join(self, label: Label, out: list) -> None:
        x, pred, proba, per_model, generation, event_ts, offset = self.pending.pop(label.id)
        self.n_labels += 1
        delay = label.ts - event_ts  # histogram in powers of two: key = upper bound
        bucket = 0 if delay <= 0 else 1 << (delay - 1).bit_length()
        self.label_delays[bucket] = self.label_delays.get(bucket, 0) + 1
        self.joined.add(label.id, offset)
        y = label.label
        self.metrics.update(y, pred, proba)
        served = self.served
        err = None
        if pred is not None:
            err = error(self.task, y, pred)
            figures = self.monitor.update(err)
            if figures is None and self.trigger is not None:
                if served.challenge is not None:  # the policy is acting already
                    self.trigger.restart()
                else:
                    figures = self.trigger.update(y, pred, proba)
            if figures is not None:
                before = served.version
                rose = (
                    figures.get("trigger") == "act_when"
                    or figures["mean_before"] is None
                    or figures["mean_after"] > figures["mean_before"]
                )
                action = (
                    self._act(err) if rose or self.config.act_on_decrease else "none (error fell)"
                )
                self.drifts["concept"] += 1
                out.append(
                    DriftReport(
                        "concept",
                        self.partition,
                        label.ts,
                        self.n_labels,
                        figures,
                        action,
                        before,
                        served.version,
                        id=label.id,
                    )
                )
        if self.data_monitor is not None:
            alarms = self.data_monitor.observe_label(x, y)
            if alarms:
                self._data_alarms(alarms, label.ts, label.id, out)
        try:
            verdict = served.learn(
                x, y, per_model if generation == served.generation else None, err
            )
        except Exception as e:
            self._reject(out, label, "model_error", f"learn_one: {type(e).__name__}: {e}")
            return
        if verdict is not None:  # the challenger policy promoted or dropped a challenger
            self._after_action(verdict.before.generation)
            out.append(
                DriftReport(
                    "challenger",
                    self.partition,
                    label.ts,
                    self.n_labels,
                    verdict.evidence,
                    verdict.action,
                    verdict.before,
                    verdict.after,
                    id=label.id,
                )
            )

    # -- time and bounds ------------------------------------------------------------------

    def _advance(self, ts: int, out: list) -> None:
        """Move the event-time clock; expire the pending joins that are too old."""
        self.clock = ts
        ttl = self.config.pending_ttl
        if ttl is not None:
            pending = self.pending
            while pending:
                oldest = next(iter(pending))
                if ts - pending[oldest].event_ts <= ttl:
                    break
                self._expire_pending(oldest, out, f"no label within pending_ttl={ttl}")

    def _expire_early(self, event_ts: int, out: list) -> None:
        """Dead-letter the early labels whose event has not come although the events have
        passed their time by more than ``early_label_wait``.

        Only events move this clock: labels released in a burst ahead of the events (an events
        input that looked caught up, or was idle past ``--max-idle-ms``) must not expire each
        other before their events are read.
        """
        early = self.early
        wait = self.config.early_label_wait
        while early:
            oldest = next(iter(early))
            if event_ts - early[oldest].ts <= wait:
                break
            self._reject(
                out,
                early.pop(oldest),
                "unknown_id",
                f"no event with this id within early_label_wait={wait}",
            )

    def _expire_oldest_pending(self, out: list, why: str) -> None:
        self._expire_pending(next(iter(self.pending)), out, why)

    def _expire_pending(self, event_id: str, out: list, why: str) -> None:
        join = self.pending.pop(event_id)
        self.expired.add(event_id, join.offset)
        raw = orjson.dumps({"id": event_id, "features": join.x, "ts": join.event_ts})
        self.count_rejection("join_expired")
        out.append(Rejection("join_expired", why, "", self.partition, -1, raw, event_id))

    def _reject(self, out: list, record: Event | Label, reason: str, detail: str) -> list:
        self.count_rejection(reason)
        out.append(
            Rejection(
                reason, detail, record.topic, record.partition, record.offset, record.raw, record.id
            )
        )
        return out

    def count_rejection(self, reason: str) -> None:
        """Count a rejected record (also those rejected before reaching the learner)."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    # -- state ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state, for checkpoints (`from_bytes` restores it)."""
        return pickle.dumps(self, protocol=5)

    def canonical_bytes(self) -> bytes:
        """The state as bytes that depend only on its values: equal states, equal bytes.

        A plain pickle also records which equal strings happen to be one object (interning,
        River's ``__setstate__``), so two learners in the same state, one restored from a
        checkpoint, can pickle differently. Re-pickling with every string interned removes
        that; use this to compare states, `to_bytes` (faster) to store them.
        """
        raw = pickle.dumps(self, protocol=5)
        return pickle.dumps(_InterningUnpickler(io.BytesIO(raw)).load(), protocol=5)

    @staticmethod
    def from_bytes(data: bytes) -> Learner:
        learner = pickle.loads(data)
        if not isinstance(learner, Learner):
            raise TypeError(f"state holds a {type(learner).__name__}, not a Learner")
        return learner

    def summary(self) -> dict[str, Any]:
        """Counters and metrics for status, checkpoints and the metrics topic."""
        return {
            "partition": self.partition,
            "model": self.version.to_wire(),
            "n_events": self.n_events,
            "n_labels": self.n_labels,
            "late": self.n_late,
            "pending": len(self.pending),
            "early_labels": len(self.early),
            "clock": self.clock,
            "rejected": dict(self.rejected),
            "drifts": dict(self.drifts),
            "label_delays": {str(k): v for k, v in sorted(self.label_delays.items())},
            "metrics": self.metrics.report(),
            "data_drift": None if self.data_monitor is None else _data_summary(self.data_monitor),
        }


_REMEMBERED = ("joined", "expired")


def _data_monitor(config: LearnerConfig) -> DataMonitor | None:
    if not config.data_drift:
        return None
    schema = FeatureSchema.from_dict(config.schema) if config.schema else None
    monitor = DataMonitor(config.data_monitor_options(), schema)
    reference = getattr(config, "reference", None)  # configurations from before it: None
    if reference:
        monitor.pin_reference(reference["rows"], reference.get("labels"))
    return monitor


def _data_summary(monitor: DataMonitor) -> dict:
    """The monitor's summary, with its latest statistic per (test, feature) as a list."""
    latest = [
        {"test": test, "feature": feature, "statistic": statistic}
        for (test, feature), statistic in sorted(
            monitor.latest().items(), key=lambda item: (item[0][0], str(item[0][1] or ""))
        )
    ]
    return _plain({**monitor.summary(), "latest": latest})


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, for JSON (orjson refuses them).

    >>> import numpy as np
    >>> _plain({"a": [np.float64(0.5), np.int64(2)], "b": None})
    {'a': [0.5, 2], 'b': None}
    """
    cls = value.__class__
    if cls is dict:
        return {k: _plain(v) for k, v in value.items()}
    if cls is list or cls is tuple:
        return [_plain(v) for v in value]
    if cls.__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _binary_only(model) -> str | None:
    """The class name of a classifier that takes two classes only (River's ``_multiclass``
    is False: ``LogisticRegression``, ``Perceptron``, ...), else None."""
    while hasattr(model, "steps"):
        model = list(model.steps.values())[-1]
    if isinstance(model, base.Classifier) and not model._multiclass:
        return type(model).__name__
    return None


class RecentIds:
    """The newest ``limit`` ids, oldest first, each with a number (the offset of its event):
    a bounded, insertion-ordered map of strings to integers.

    Kept in two plain dicts of strings and numbers, which Python's cyclic garbage collector
    never looks into; it walks an OrderedDict entry by entry, and with 100,000 remembered ids
    each full collection in the model process took 5-15 ms of CPU, pausing scoring.

    >>> ids = RecentIds(limit=2)
    >>> for offset, i in enumerate(("a", "b", "c", "b")):
    ...     ids.add(i, offset)
    >>> "a" in ids, "c" in ids, list(ids), ids.get("b"), ids.get("a")
    (False, True, ['b', 'c'], 1, None)
    >>> list(RecentIds(2, ["a", "b", "c", "b"])), list(RecentIds(0, ["a"]))
    (['b', 'c'], [])
    >>> RecentIds.unpacked(ids.packed(), 2).get("c")
    2
    """

    __slots__ = ("limit", "_value", "_id", "_oldest")

    def __init__(self, limit: int, ids: Iterable[str] = (), values: Iterable[int] | None = None):
        self.limit = limit
        kept: dict[str, int] = {}
        for key, value in zip(ids, itertools.repeat(-1) if values is None else values):
            kept.setdefault(key, value)
        newest = list(kept)[max(0, len(kept) - limit) :]  # oldest first, as many as add() keeps
        self._value = {key: kept[key] for key in newest}  # id -> its number
        self._id = dict(enumerate(newest))  # the how-many-th added -> id, to find the oldest
        self._oldest = 0

    def add(self, key: str, value: int = -1) -> None:
        """Remember ``key`` with ``value`` (if new), forgetting the oldest beyond the limit."""
        if key in self._value:
            return
        n = self._oldest + len(self._value)
        self._value[key] = value
        self._id[n] = key
        if len(self._value) > self.limit:
            del self._value[self._id.pop(self._oldest)]
            self._oldest += 1

    def get(self, key: str) -> int | None:
        """The number remembered with ``key`` (-1: not known), None if it is not remembered."""
        return self._value.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._value

    def __iter__(self):
        return iter(self._value)  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._value)

    def packed(self) -> tuple[bytes | list, bytes]:
        """For a checkpoint: the ids as one JSON array, oldest first, and their numbers as
        64-bit differences from the one before, zlib-compressed: event offsets mostly grow
        by one, so 100,000 of them take ~4 KB instead of 800 KB (~5 ms more)."""
        values = np.fromiter(self._value.values(), np.int64, len(self._value))  # 2x array's
        numbers = zlib.compress(np.diff(values, prepend=0).tobytes(), 1)
        try:
            return orjson.dumps(list(self._value)), numbers
        except orjson.JSONEncodeError:  # an id no JSON can hold (lone surrogate): as a list
            return list(self._value), numbers

    @classmethod
    def unpacked(cls, packed: tuple | bytes | Iterable[str], limit: int) -> RecentIds:
        """From `packed`, or from an older checkpoint's ids alone: a JSON array or object, or
        an (Ordered)dict (numbers then unknown, -1)."""
        values = None
        if isinstance(packed, tuple):
            packed, numbers = packed
            values = np.cumsum(np.frombuffer(zlib.decompress(numbers), dtype=np.int64)).tolist()
        return cls(limit, orjson.loads(packed) if isinstance(packed, bytes) else packed, values)


class _InterningUnpickler(pickle._Unpickler):
    """Unpickles with every string interned, so equal strings become one object, and every
    numpy dtype as one object per value: an array restored from a checkpoint has a dtype of
    its own, one made since shares numpy's, and pickle writes a dtype once per object."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BytesIO):
        super().__init__(file)
        self._dtypes: dict = {}  # each dtype value -> the one object that stands for it

    def load_build(self) -> None:
        super().load_build()
        built = self.stack[-1]
        if isinstance(built, np.dtype):
            one = self._dtypes.setdefault(built, built)
            if one is not built:
                self.stack[-1] = one
                for key, value in self.memo.items():
                    if value is built:
                        self.memo[key] = one

    dispatch[pickle.BUILD[0]] = load_build


def _interning(code: int):
    load_string = pickle._Unpickler.dispatch[code]

    def load(self) -> None:
        load_string(self)
        self.stack[-1] = sys.intern(self.stack[-1])

    return load


for _op in (pickle.SHORT_BINUNICODE, pickle.BINUNICODE, pickle.BINUNICODE8, pickle.UNICODE):
    _InterningUnpickler.dispatch[_op[0]] = _interning(_op[0])
