"""What the dashboard shows, kept in memory: fed by the topic reader, read by the web server.

The reader thread hands it the decoded records of the metrics, drift, dead-letter and
predictions topics and the lag it measured; the server asks for `view` (everything the page
draws) or `summary` (the figures of ``/api/summary``). Memory is bounded whatever the topics
hold: a fixed number of metric points per partition, of drift markers, alerts and recent dead
letters; everything else is counters. One lock guards it; `version` grows with every change,
so the server pushes a new view only when there is one.

>>> m = DashboardModel()
>>> m.add_metrics(0, {"partition": 0, "n_events": 10, "n_labels": 8, "pending": 2,
...     "clock": 1000, "model": {"generation": 0, "updates": 8},
...     "metrics": {"rolling_accuracy": 0.75, "baseline_accuracy": 0.5}}, timestamp=5)
>>> m.add_drift({"kind": "concept", "partition": 0, "event_ts": 900, "n_seen": 7,
...     "action": "reset", "model_before": {"generation": 0, "updates": 7},
...     "model_after": {"generation": 1, "updates": 0}})
>>> row = m.summary()["partitions"][0]
>>> row["events"], row["rolling"], row["baseline"], row["generation"], row["drifts"]
(10, 0.75, 0.5, 1, {'concept_acted': 1, 'concept_reported': 0, 'data': 0})
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DashboardModel", "partitioner_diagnosis"]

MAX_POINTS = 2_000  # metric points kept per partition (one per metrics record)
MAX_DRIFTS = 500  # drift markers kept (newest)
MAX_ALERTS = 30  # alerts listed (newest first)
MAX_DEAD_RECENT = 20  # dead letters listed (newest first)
MAX_LAG_POINTS = 600  # lag samples kept (every few seconds: about half an hour)
PRIMARY = ("accuracy", "mae")  # headline metric by task, as stream.metrics.MetricSet.primary

# The partitioner diagnosis, with the worker's thresholds (consumers/partitioner_check.py):
# of at least UNKNOWN_ID_MIN labels, a share of UNKNOWN_ID_SHARE dead-lettered as unknown_id,
# on more than one partition (with one partition, every producer picks the same).
UNKNOWN_ID_SHARE = 0.2
UNKNOWN_ID_MIN = 100


def _acted(record: dict) -> bool:
    """A drift the policy acted on (replaced or changed the model), not only reported."""
    action = str(record.get("action", "none"))
    return not (action.startswith("none") or action == "reported")


def partitioner_diagnosis(unknown_ids: dict[int, int], labels_joined: int) -> str | None:
    """The likely cause when many labels name events their partition never saw.

    >>> partitioner_diagnosis({0: 300, 1: 280}, labels_joined=400) is not None
    True
    >>> partitioner_diagnosis({0: 300}, labels_joined=400) is None  # one partition
    True
    >>> partitioner_diagnosis({0: 3, 1: 2}, labels_joined=4000) is None
    True
    """
    unknown = sum(unknown_ids.values())
    spread = sum(1 for n in unknown_ids.values() if n > 0)
    total = unknown + labels_joined
    if spread < 2 or total < UNKNOWN_ID_MIN or unknown < UNKNOWN_ID_SHARE * total:
        return None
    return (
        f"{unknown:,} of {total:,} labels ({unknown / total:.0%}) were dead-lettered as "
        f"unknown_id on {spread} partitions: the likely cause is producers with different "
        "partitioners (librdkafka's default, crc32, for one input and murmur2, as kafka-python "
        "and Java clients use, for the other), which put an event and its label on different "
        "partitions. librdkafka clients: set partitioner=murmur2_random."
    )


@dataclass
class _Partition:
    points: deque = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    latest: dict = field(default_factory=dict)  # newest metrics record
    generation: int | None = None
    drifts: Counter = field(default_factory=Counter)
    dead: Counter = field(default_factory=Counter)  # dead letters by reason (topic)
    predictions: int = 0
    predicted: Counter = field(default_factory=Counter)  # recent predicted values
    lag: dict = field(default_factory=lambda: {"events": None, "labels": None})


class DashboardModel:
    """The dashboard's in-memory picture of the topics (thread-safe, bounded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.version = 0
        self._parts: dict[int, _Partition] = {}
        self._drifts: deque = deque(maxlen=MAX_DRIFTS)
        self._alerts: deque = deque(maxlen=MAX_ALERTS)
        self._features: dict[tuple[str, str], dict] = {}
        self._dead_recent: deque = deque(maxlen=MAX_DEAD_RECENT)
        self._lag_points: deque = deque(maxlen=MAX_LAG_POINTS)
        self.source: dict[str, Any] = {}  # topics, group, broker: shown in the page header
        self.problem: str | None = None  # e.g. a topic that does not exist yet

    def _part(self, p: int) -> _Partition:
        part = self._parts.get(p)
        if part is None:
            part = self._parts[p] = _Partition()
        return part

    def _changed(self) -> None:
        self.version += 1

    # -- fed by the reader ----------------------------------------------------------------

    def add_metrics(self, partition: int, record: dict, timestamp: int | None = None) -> None:
        """A metrics-topic record: the worker's summary of a partition at a checkpoint."""
        with self._lock:
            part = self._part(partition)
            metrics = record.get("metrics") or {}
            name = _primary(metrics)
            model = record.get("model") or {}
            part.points.append(
                {
                    "clock": record.get("clock"),
                    "at": timestamp,
                    "rolling": metrics.get(f"rolling_{name}") if name else None,
                    "baseline": metrics.get(f"baseline_{name}") if name else None,
                    "generation": model.get("generation"),
                    "pending": record.get("pending"),
                    "n_events": record.get("n_events"),
                    "n_labels": record.get("n_labels"),
                }
            )
            part.latest = record
            if model.get("generation") is not None:
                part.generation = max(part.generation or 0, model["generation"])
            self._changed()

    def add_drift(self, record: dict) -> None:
        """A drift-topic record: concept (ADWIN on the error) or data (a feature's test)."""
        with self._lock:
            p = int(record.get("partition", 0))
            part = self._part(p)
            kind = record.get("kind", "concept")
            acted = _acted(record)
            if kind == "data":
                part.drifts["data"] += 1
                key = (str(record.get("test", "?")), str(record.get("feature") or "-"))
                feat = self._features.get(key)
                if feat is None:
                    feat = self._features[key] = {
                        "test": key[0],
                        "feature": key[1],
                        "alarms": 0,
                        "partitions": [],
                    }
                feat["alarms"] += 1
                feat.update(
                    statistic=record.get("statistic"),
                    p_value=record.get("p_value"),
                    effect=record.get("effect"),
                    event_ts=record.get("event_ts"),
                    action=record.get("action"),
                )
                if p not in feat["partitions"]:
                    feat["partitions"] = sorted([*feat["partitions"], p])
            elif kind == "concept":
                part.drifts["concept_acted" if acted else "concept_reported"] += 1
            # kind "challenger": a challenge's decision; its model change shows in generations
            after = (record.get("model_after") or {}).get("generation")
            if after is not None:
                part.generation = max(part.generation or 0, after)
            marker = {
                "partition": p,
                "kind": kind,
                "event_ts": record.get("event_ts"),
                "acted": acted,
                "action": record.get("action"),
                "feature": record.get("feature"),
                "test": record.get("test"),
                "n_seen": record.get("n_seen"),
                "generation": after,
            }
            self._drifts.append(marker)
            self._alerts.appendleft({**marker, "text": _alert_text(record, acted)})
            self._changed()

    def add_dead_letter(self, partition: int, record: dict) -> None:
        with self._lock:
            source = record.get("source") or {}
            p = source.get("partition", partition)
            p = partition if p is None else int(p)
            reason = str(record.get("reason", "?"))
            self._part(p).dead[reason] += 1
            self._dead_recent.appendleft(
                {
                    "partition": p,
                    "reason": reason,
                    "detail": str(record.get("detail", ""))[:200],
                    "topic": source.get("topic"),
                    "offset": source.get("offset"),
                }
            )
            self._changed()

    def add_predictions(self, partition: int, records: list[dict], end_offset: int) -> None:
        """Predictions read; ``end_offset``: the topic partition's end (its total count)."""
        with self._lock:
            part = self._part(partition)
            part.predictions = max(part.predictions, end_offset)
            for r in records:
                part.predicted[_label(r.get("prediction"))] += 1
            if sum(part.predicted.values()) > 100_000:  # keep it recent and small
                part.predicted = Counter({k: v // 2 for k, v in part.predicted.items()})
            self._changed()

    def set_lag(self, lags: dict[int, dict], at_ms: int) -> None:
        """Consumer lag per partition: {p: {"events": n, "labels": n}} (None: unknown)."""
        with self._lock:
            for p, lag in lags.items():
                self._part(p).lag = dict(lag)
            total = {
                k: (
                    sum(v[k] for v in lags.values())
                    if lags and all(v[k] is not None for v in lags.values())
                    else None
                )
                for k in ("events", "labels")
            }
            self._lag_points.append({"at": at_ms, **total})
            self._changed()

    def set_problem(self, problem: str | None) -> None:
        with self._lock:
            if problem != self.problem:
                self.problem = problem
                self._changed()

    # -- read by the server ---------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What the page shows, as figures: per partition and overall (``/api/summary``)."""
        with self._lock:
            return self._summary()

    def _summary(self) -> dict[str, Any]:
        rows = []
        metric = None
        for p, part in sorted(self._parts.items()):
            latest = part.latest
            metrics = latest.get("metrics") or {}
            name = _primary(metrics)
            metric = metric or name
            rejected = Counter(latest.get("rejected") or {})
            # The worker's own counts (metrics records) and the dead-letter topic's: the
            # larger of each, as either may be read from later than the other started.
            dead = {r: max(rejected.get(r, 0), part.dead.get(r, 0)) for r in rejected | part.dead}
            rows.append(
                {
                    "partition": p,
                    "events": latest.get("n_events"),
                    "labels": latest.get("n_labels"),
                    "pending": latest.get("pending"),
                    "metric": name,
                    "rolling": metrics.get(f"rolling_{name}") if name else None,
                    "baseline": metrics.get(f"baseline_{name}") if name else None,
                    "drifts": {
                        k: part.drifts.get(k, 0)
                        for k in ("concept_acted", "concept_reported", "data")
                    },
                    "generation": part.generation,
                    "model": latest.get("model"),
                    "lag": dict(part.lag),
                    "dead_letters": dict(sorted(dead.items())),
                    "predictions": part.predictions,
                    "label_delays": latest.get("label_delays") or {},
                    "clock": latest.get("clock"),
                    "points": len(part.points),
                }
            )
        overall = _overall(rows, metric)
        unknown = {r["partition"]: r["dead_letters"].get("unknown_id", 0) for r in rows}
        diagnosis = partitioner_diagnosis(unknown, overall["labels"] or 0)
        return {
            "version": self.version,
            "source": self.source,
            "problem": self.problem,
            "metric": metric,
            "overall": overall,
            "partitions": rows,
            "diagnosis": diagnosis,
        }

    def view(self) -> dict[str, Any]:
        """Everything the page draws: `summary` plus the series behind the charts."""
        with self._lock:
            out = self._summary()
            out["series"] = {str(p): list(part.points) for p, part in sorted(self._parts.items())}
            out["drifts"] = list(self._drifts)
            out["alerts"] = list(self._alerts)
            out["features"] = self._feature_rows()
            out["dead_recent"] = list(self._dead_recent)
            out["lag_history"] = list(self._lag_points)
            out["predicted"] = {
                str(p): dict(part.predicted.most_common(20))
                for p, part in sorted(self._parts.items())
            }
            return out

    def _feature_rows(self) -> list[dict]:
        """Per (test, feature): the monitors' latest statistic (the largest over partitions,
        from the newest metrics records), its p-value and effect where the monitor ranks it
        among its largest, whether an alarm is active, and the drift topic's alarms."""
        rows: dict[tuple[str, str], dict] = {}

        def row(test: Any, feature: Any) -> dict:
            key = (str(test), str(feature or "-"))
            if key not in rows:
                rows[key] = {
                    "test": key[0],
                    "feature": key[1],
                    "statistic": None,
                    "p_value": None,
                    "effect": None,
                    "active": False,
                    "alarms": 0,
                    "partitions": [],
                    "action": None,
                }
            return rows[key]

        for _, part in sorted(self._parts.items()):
            monitor = part.latest.get("data_drift") or {}
            for item in monitor.get("latest") or []:
                r = row(item.get("test"), item.get("feature"))
                stat = item.get("statistic")
                if isinstance(stat, int | float):
                    r["statistic"] = stat if r["statistic"] is None else max(stat, r["statistic"])
            for item in monitor.get("largest") or []:
                r = row(item.get("test"), item.get("feature"))
                r["p_value"], r["effect"] = item.get("p_value"), item.get("effect")
            for item in monitor.get("active") or []:
                row(item.get("test"), item.get("feature"))["active"] = True
        for alarm in self._features.values():
            r = row(alarm["test"], alarm["feature"])
            r["alarms"], r["partitions"], r["action"] = (
                alarm["alarms"],
                alarm["partitions"],
                alarm.get("action"),
            )
            for k in ("statistic", "p_value", "effect"):
                if r[k] is None:
                    r[k] = alarm.get(k)
        return sorted(
            rows.values(),
            key=lambda r: (-r["alarms"], -abs(r["effect"] or 0), r["test"], r["feature"]),
        )


def _primary(metrics: dict) -> str | None:
    for name in PRIMARY:
        if f"rolling_{name}" in metrics:
            return name
    return None


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _alert_text(record: dict, acted: bool) -> str:
    p = record.get("partition")
    if record.get("kind") == "data":
        what = f"data drift: {record.get('test', '?')} on {record.get('feature') or 'the inputs'}"
        stat = record.get("statistic")
        if isinstance(stat, int | float):
            what += f", statistic {stat:.3g}"
        pv = record.get("p_value")
        if isinstance(pv, int | float):
            what += f", p={pv:.2g}"
    elif record.get("kind") == "challenger":
        what = "challenger decision"
    else:
        what = "concept drift (ADWIN on the error)"
    verb = "acted on" if acted else "reported"
    return f"partition {p}: {what}; {verb} ({record.get('action')})"


def _overall(rows: list[dict], metric: str | None) -> dict[str, Any]:
    def total(key: str) -> int | None:
        values = [r[key] for r in rows if r[key] is not None]
        return sum(values) if values else None

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return sum(values) / len(values) if values else None

    def lag(kind: str) -> int | None:
        values = [r["lag"].get(kind) for r in rows]
        return sum(values) if values and all(v is not None for v in values) else None

    dead: Counter = Counter()
    drifts: Counter = Counter()
    delays: Counter = Counter()
    for r in rows:
        dead.update(r["dead_letters"])
        drifts.update(r["drifts"])
        delays.update({k: v for k, v in r["label_delays"].items()})
    gens = [r["generation"] for r in rows if r["generation"] is not None]
    return {
        "partitions": len(rows),
        "events": total("events"),
        "labels": total("labels"),
        "pending": total("pending"),
        "predictions": total("predictions"),
        "metric": metric,
        "rolling": mean("rolling"),  # the mean of the partitions' equal-sized windows
        "baseline": mean("baseline"),
        "drifts": {k: drifts.get(k, 0) for k in ("concept_acted", "concept_reported", "data")},
        "generation": max(gens) if gens else None,
        "lag": {"events": lag("events"), "labels": lag("labels")},
        "dead_letters": dict(sorted(dead.items())),
        "label_delays": dict(sorted(delays.items(), key=lambda kv: int(kv[0]))),
    }
