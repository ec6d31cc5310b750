"""What a worker tells operators: Prometheus metrics, a health check, rate-limited warnings.

The worker's main loop owns every learner; the HTTP server answers in its own thread. So the
loop hands over a `Snapshot` (plain numbers, rebuilt once per loop iteration, swapped in under
a lock) and a scrape reads only that, never a learner. The counters are the learners' own
totals (`Learner.summary`), so the per-record path does no metrics work at all; the two
histograms are observed once per batch and once per checkpoint.

Counters are per partition and count from the partition's first record: they are part of the
checkpointed learner, so they survive restarts and follow the partition to another worker (a
rewind to a checkpoint can lower them; Prometheus treats that as a counter reset). The
data-drift alarm series are the exception: they are counted here, as the worker publishes the
alarms (their test and feature are labels), so they start from zero in each process.

`driftstream_worker_info` carries the consumer group and the input topics, for alert rules to
join on (deploy/prometheus/alerts.yml); the metric names are the ones those rules use, and
tests/test_alerts.py checks that each name the rules use is exported here.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("driftstream.observability")

INPUTS = ("events", "labels")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CHECKPOINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured fields (top-level keys of a JSON log line)."""
    return {"fields": values}


@dataclass
class PartitionSnapshot:
    """One partition as the last loop iteration saw it."""

    summary: dict[str, Any]  # Learner.summary()
    lag: tuple[int | None, int | None]  # events, labels: high-water mark - position
    checkpoint_at: float | None  # wall-clock seconds of the checkpoint the state builds on
    since_checkpoint: int = 0  # records processed since that checkpoint


@dataclass
class Snapshot:
    """The whole worker as the last loop iteration saw it; `problems` empty means healthy."""

    partitions: dict[int, PartitionSnapshot] = field(default_factory=dict)
    records_processed: int = 0
    problems: list[str] = field(default_factory=lambda: ["starting"])
    kafka_connected: bool = False
    warnings: list[str] = field(default_factory=list)  # /healthz says them; still healthy
    unknown_id_share: float | None = None  # of the labels received (PartitionerCheck)
    partitioner_mismatch: bool = False  # PartitionerCheck's diagnosis holds


class WorkerMetrics:
    """The worker's Prometheus registry (its own, not the global one) and health state.

    ``info``: labels of `driftstream_worker_info` (the consumer group, the input topics).
    """

    def __init__(self, info: dict[str, str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.info = dict(info or {})
        drift_labels = ["partition", "test", "feature"]
        self.data_drift_alarms = Counter(
            "driftstream_data_drift_alarms",
            "Data-drift alarms published by this process, by test and feature",
            drift_labels,
            registry=self.registry,
        )
        self.data_drift_alarm_time = Gauge(
            "driftstream_data_drift_last_alarm_timestamp_seconds",
            "Wall-clock time this process published the newest data-drift alarm",
            drift_labels,
            registry=self.registry,
        )
        self.data_drift_alarm_statistic = Gauge(
            "driftstream_data_drift_alarm_statistic",
            "The test statistic of the newest data-drift alarm",
            drift_labels,
            registry=self.registry,
        )
        self.checkpoint_seconds = Histogram(
            "driftstream_checkpoint_duration_seconds",
            "Time to flush outputs and save one partition's checkpoint",
            ["partition"],
            buckets=CHECKPOINT_BUCKETS,
            registry=self.registry,
        )
        self.latency_seconds = Histogram(
            "driftstream_processing_latency_seconds",
            "Per batch: time from the poll's return to the last output handed to the producer",
            ["partition"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self.registry.register(_SnapshotCollector(self.snapshot, self.info))

    def publish(self, snapshot: Snapshot) -> None:
        """Called by the worker's loop: make this what scrapes and health checks see."""
        with self._lock:
            self._snapshot = snapshot

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def drift_reported(self, report: Any) -> None:
        """Called by the worker's loop for each drift report it publishes (a `DriftReport`):
        counts data-drift alarms by (partition, test, feature)."""
        if report.kind != "data":
            return
        wire = report.to_wire()
        labels = (
            str(report.partition),
            str(wire.get("test") or "adwin"),  # reports without a test: the old ADWIN monitor
            str(wire.get("feature") or ""),
        )
        self.data_drift_alarms.labels(*labels).inc()
        self.data_drift_alarm_time.labels(*labels).set(time.time())
        statistic = wire.get("statistic")
        if isinstance(statistic, int | float):
            self.data_drift_alarm_statistic.labels(*labels).set(statistic)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class _SnapshotCollector:
    """Turns the latest snapshot into metric families at scrape time."""

    def __init__(self, snapshot: Callable[[], Snapshot], info: dict[str, str]):
        self._snapshot = snapshot
        self._info = info

    def collect(self):
        snap = self._snapshot()
        now = time.time()

        def family(kind, name, doc, labels=("partition",)):
            return kind(name, doc, labels=list(labels))

        events = family(CounterMetricFamily, "driftstream_events_scored", "Events scored")
        labels = family(
            CounterMetricFamily,
            "driftstream_labels_joined",
            "Labels joined with their event and learned from",
        )
        dead = family(
            CounterMetricFamily,
            "driftstream_dead_letters",
            "Records sent to the dead-letter topic, by reason",
            ("partition", "reason"),
        )
        late = family(
            CounterMetricFamily,
            "driftstream_late_records",
            "Records that arrived after the other input had passed their event "
            "time; their order depended on arrival (predictions record it)",
        )
        expired = family(
            CounterMetricFamily,
            "driftstream_expired_joins",
            "Events whose label never came in time (also a dead-letter reason)",
        )
        drifts = family(
            CounterMetricFamily,
            "driftstream_drift_detections",
            "Drift detections, by kind (concept or data)",
            ("partition", "kind"),
        )
        pending = family(
            GaugeMetricFamily, "driftstream_pending_joins", "Scored events waiting for their label"
        )
        generation = family(
            GaugeMetricFamily,
            "driftstream_model_generation",
            "Model generation (changes when a drift policy replaces the model)",
        )
        updates = family(
            GaugeMetricFamily,
            "driftstream_model_updates",
            "Learn steps of the current model version",
        )
        rolling = family(
            GaugeMetricFamily,
            "driftstream_rolling_metric",
            "Rolling metric of the served predictions (accuracy or MAE)",
            ("partition", "metric"),
        )
        baseline = family(
            GaugeMetricFamily,
            "driftstream_baseline_metric",
            "The no-change baseline's metric (it predicts the last label seen), since the "
            "partition's first label",
            ("partition", "metric"),
        )
        lag = family(
            GaugeMetricFamily,
            "driftstream_consumer_lag",
            "Records not yet fetched: high-water mark minus position",
            ("partition", "input"),
        )
        age = family(
            GaugeMetricFamily,
            "driftstream_checkpoint_age_seconds",
            "Seconds since the checkpoint that the partition's state builds on",
        )
        saved_at = family(
            GaugeMetricFamily,
            "driftstream_last_checkpoint_timestamp_seconds",
            "Wall-clock time of the checkpoint that the partition's state builds on",
        )
        unsaved = family(
            GaugeMetricFamily,
            "driftstream_records_since_checkpoint",
            "Input records processed since that checkpoint (replayed after a crash)",
        )
        data_statistic = family(
            GaugeMetricFamily,
            "driftstream_data_drift_statistic",
            "Latest statistic of each data-drift monitor's test, by feature",
            ("partition", "test", "feature"),
        )
        for p, part in sorted(snap.partitions.items()):
            s, key = part.summary, str(p)
            events.add_metric([key], s["n_events"])
            labels.add_metric([key], s["n_labels"])
            for reason, n in sorted(s["rejected"].items()):
                dead.add_metric([key, reason], n)
            late.add_metric([key], s["late"])
            expired.add_metric([key], s["rejected"].get("join_expired", 0))
            for kind, n in sorted(s["drifts"].items()):
                drifts.add_metric([key, kind], n)
            pending.add_metric([key], s["pending"])
            generation.add_metric([key], s["model"]["generation"])
            updates.add_metric([key], s["model"]["updates"])
            for name in ("accuracy", "mae"):
                value = s["metrics"].get("rolling_" + name)
                if value is not None:
                    rolling.add_metric([key, name], value)
                value = s["metrics"].get("baseline_" + name)
                if value is not None:
                    baseline.add_metric([key, name], value)
            for test, feature, value in _data_statistics(s):
                data_statistic.add_metric([key, test, feature], value)
            for stream, value in zip(INPUTS, part.lag):
                if value is not None:
                    lag.add_metric([key, stream], value)
            if part.checkpoint_at is not None:
                age.add_metric([key], max(0.0, now - part.checkpoint_at))
                saved_at.add_metric([key], part.checkpoint_at)
            unsaved.add_metric([key], part.since_checkpoint)
        yield from (
            events,
            labels,
            dead,
            late,
            expired,
            drifts,
            pending,
            generation,
            updates,
            rolling,
            baseline,
            lag,
            age,
            saved_at,
            unsaved,
            data_statistic,
        )
        yield CounterMetricFamily(
            "driftstream_records_processed",
            "Input records processed by this worker process",
            value=snap.records_processed,
        )
        yield GaugeMetricFamily(
            "driftstream_assigned_partitions",
            "Partitions this worker owns",
            value=len(snap.partitions),
        )
        yield GaugeMetricFamily(
            "driftstream_kafka_connected",
            "1 while the broker (group coordinator) is reachable",
            value=int(snap.kafka_connected),
        )
        yield GaugeMetricFamily(
            "driftstream_healthy", "1 when /healthz answers 200", value=int(not snap.problems)
        )
        share = GaugeMetricFamily(
            "driftstream_unknown_id_label_share",
            "Share of the labels received in the last minute that were dead-lettered as "
            "unknown_id (no event with their id on their partition)",
        )
        if snap.unknown_id_share is not None:
            share.add_metric([], snap.unknown_id_share)
        yield share
        yield GaugeMetricFamily(
            "driftstream_partitioner_mismatch",
            "1 while unknown_id labels point to producers with different partitioners",
            value=int(snap.partitioner_mismatch),
        )
        info = GaugeMetricFamily(
            "driftstream_worker_info",
            "Always 1; its labels name the consumer group and input topics, to join on",
            labels=sorted(self._info),
        )
        info.add_metric([self._info[k] for k in sorted(self._info)], 1)
        yield info


def _data_statistics(summary: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(test, feature, statistic) of the data-drift monitors in a learner summary: its
    ``data_drift`` part's ``latest`` list of {test, feature, statistic} (none when the
    monitors are off, or in older summaries). Never raises: a scrape must not fail on it."""
    part = summary.get("data_drift")
    latest = part.get("latest") if isinstance(part, dict) else None
    out = []
    for item in latest if isinstance(latest, list) else ():
        value = item.get("statistic") if isinstance(item, dict) else None
        if isinstance(value, int | float):
            out.append((str(item.get("test")), str(item.get("feature") or ""), float(value)))
    return out


class MetricsServer:
    """Serves GET /metrics (Prometheus text) and /healthz (200, or 503 and the problems)."""

    def __init__(self, metrics: WorkerMetrics, host: str = "127.0.0.1", port: int = 0):
        handler = type("Handler", (_Handler,), {"metrics": metrics})
        try:
            self._server = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from None
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="driftstream-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    metrics: WorkerMetrics

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            snap = self.metrics.snapshot()
            if snap.problems:
                body: dict[str, Any] = {"status": "unavailable", "problems": snap.problems}
            else:
                body = {"status": "degraded" if snap.warnings else "ok"}
            if snap.warnings:  # the worker works, but something upstream looks wrong
                body["warnings"] = snap.warnings
            self._reply(
                503 if snap.problems else 200, orjson.dumps(body) + b"\n", "application/json"
            )
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        log.debug("http %s", format % args)


class DeadLetterLog:
    """Each dead letter at DEBUG; per reason at most one WARNING per ``interval`` seconds.

    Bad input can come by the million. The first of a reason is a warning at once; the ones
    after it within the interval are only counted, and the next warning says how many there
    were. Nothing is hidden: every dead letter is on the dead-letter topic and in the metrics.
    ``watch(partition, reason)`` is told of each one (the worker's `PartitionerCheck`).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        watch: Callable[[int, str], None] | None = None,
    ):
        self.log = logger
        self.interval = interval
        self.clock = clock
        self.watch = watch
        # reason -> [time of the last warning, dead letters since, partitions since]
        self._reasons: dict[str, list] = {}

    def record(
        self, partition: int, topic: str, offset: int, reason: str, detail: str, model: dict
    ) -> None:
        if self.watch is not None:
            self.watch(partition, reason)
        extra = fields(
            event="dead_letter",
            partition=partition,
            topic=topic,
            offset=offset,
            reason=reason,
            model=model,
        )
        self.log.debug(
            "dead letter partition=%d topic=%s offset=%d reason=%s: %s",
            partition,
            topic,
            offset,
            reason,
            detail,
            extra=extra,
        )
        now = self.clock()
        state = self._reasons.get(reason)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            state[2].add(partition)
            return
        earlier = state[1] if state is not None else 0
        extra["fields"]["suppressed"] = earlier
        self.log.warning(
            "dead letter partition=%d topic=%s offset=%d reason=%s: %s%s",
            partition,
            topic,
            offset,
            reason,
            detail,
            f" (and {earlier} more with this reason before it)" if earlier else "",
            extra=extra,
        )
        self._reasons[reason] = [now, 0, set()]

    def flush(self, force: bool = False) -> None:
        """Warn about the dead letters counted but not reported, once their interval is over
        (or now, with ``force``, e.g. at shutdown)."""
        now = self.clock()
        for reason, state in self._reasons.items():
            if state[1] and (force or now - state[0] >= self.interval):
                self.log.warning(
                    "%d more dead letters with reason=%s in the last %.0f s (partitions %s)",
                    state[1],
                    reason,
                    now - state[0],
                    sorted(state[2]),
                    extra=fields(
                        event="dead_letter_summary",
                        reason=reason,
                        count=state[1],
                        partitions=sorted(state[2]),
                    ),
                )
                self._reasons[reason] = [now, 0, set()]
