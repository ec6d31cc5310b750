"""Unit tests of the worker's observability parts (no broker): log formats and secret
masking, rate-limited dead-letter warnings, the metrics and health endpoints."""

from __future__ import annotations

import io
import logging
import socket
import sys

import orjson
import pytest

from driftstream.consumers.observability import (
    DeadLetterLog,
    MetricsServer,
    PartitionSnapshot,
    Snapshot,
    WorkerMetrics,
    fields,
)
from driftstream.logs import JsonFormatter, TextFormatter, setup
from driftstream.stream.records import DriftReport, ModelVersion
from tests.support import http_get, metric_samples


def record(msg: str, *args, level: int = logging.INFO, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("driftstream.test", level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


# -- logs ------------------------------------------------------------------------------


def test_json_lines_carry_the_fields_and_keep_their_core_keys():
    line = JsonFormatter().format(
        record(
            "checkpoint partition=%d",
            3,
            **fields(
                event="checkpoint",
                partition=3,
                offsets={"events": 7},
                msg="not this",
                partitions={1: {"model": {"generation": 0}}},
            ),
        )
    )
    out = orjson.loads(line)
    assert out["msg"] == "checkpoint partition=3" and out["level"] == "INFO"
    assert out["event"] == "checkpoint" and out["offsets"] == {"events": 7}
    assert out["partitions"] == {"1": {"model": {"generation": 0}}}  # int keys are fine
    assert out["ts"].endswith("+00:00") and "\n" not in line


def test_secrets_are_masked_in_text_json_and_exceptions():
    secret = 'pa"ss\\word'  # quotes and backslashes change under JSON escaping
    try:
        raise RuntimeError(f"login failed for {secret}")
    except RuntimeError:
        rec = record(
            "connecting with %s", secret, exc_info=sys.exc_info(), fields={"password": secret}
        )
    for formatter in (JsonFormatter([secret]), TextFormatter([secret])):
        text = formatter.format(rec)
        assert secret not in text and orjson.dumps(secret).decode()[1:-1] not in text
        assert "***" in text and "RuntimeError" in text


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    root = logging.getLogger()
    level = root.level
    other = logging.NullHandler()  # not driftstream's: setup() keeps it
    root.addHandler(other)
    handlers = []
    try:
        for stream, is_json in ((io.StringIO(), True), (Tty(), False)):
            handlers.append(handler := setup("INFO", "auto", stream=stream))
            logging.getLogger("driftstream.test").info("hello %s", "there")
            handler.flush()
            line = stream.getvalue().strip().splitlines()[-1]
            assert line.startswith("{") is is_json, line
            assert "hello there" in line
        # The second setup replaced the first one's handler, and kept the others.
        assert handlers[0] not in root.handlers and handlers[1] in root.handlers
        assert other in root.handlers
    finally:
        for h in [*handlers, other]:
            root.removeHandler(h)
        root.setLevel(level)
    with pytest.raises(ValueError, match="log format"):
        setup("INFO", "yaml")


def test_dead_letters_warn_at_most_once_per_reason_and_interval():
    now = [0.0]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("driftstream.test.deadletters")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    dead = DeadLetterLog(logger, interval=10.0, clock=lambda: now[0])
    try:
        for i in range(1000):  # 1000 bad records within 5 s, two reasons
            now[0] = i * 0.005
            dead.record(i % 2, "events", i, "not_json" if i % 3 else "empty", "bad", {"g": 0})
            dead.flush()
        now[0] = 10.1
        dead.flush()
        now[0] = 10.2
        dead.flush()  # nothing new: no further warning
    finally:
        logger.removeHandler(handler)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    debug = [x for x in lines if x["level"] == "DEBUG"]
    warnings = [x for x in lines if x["level"] == "WARNING"]
    assert len(debug) == 1000  # every one, with its partition and offset
    assert {d["event"] for d in debug} == {"dead_letter"}
    assert debug[5]["offset"] == 5 and debug[5]["partition"] == 1
    by_reason: dict[str, list] = {}
    for w in warnings:
        by_reason.setdefault(w["reason"], []).append(w)
    assert sorted(by_reason) == ["empty", "not_json"]
    for reason, ws in by_reason.items():
        assert [w["event"] for w in ws] == ["dead_letter", "dead_letter_summary"], reason
        total = sum(1 for i in range(1000) if ("not_json" if i % 3 else "empty") == reason)
        assert ws[1]["count"] == total - 1 and ws[1]["partitions"] == [0, 1]


# -- metrics and health ----------------------------------------------------------------


def summary(n_events: int, rejected: dict, metrics: dict) -> dict:
    return {
        "partition": 0,
        "model": {"generation": 2, "updates": 40},
        "n_events": n_events,
        "n_labels": 40,
        "late": 6,
        "pending": 3,
        "early_labels": 0,
        "clock": 0,
        "rejected": rejected,
        "drifts": {"concept": 2, "data": 1},
        "metrics": metrics,
    }


def test_metrics_and_healthz_serve_the_published_snapshot():
    metrics = WorkerMetrics({"consumer_group": "g", "events_topic": "ev", "labels_topic": "lb"})
    server = MetricsServer(metrics, "127.0.0.1", 0)
    try:
        status, body = http_get(server.url + "/healthz")
        assert status == 503 and orjson.loads(body)["problems"] == ["starting"]
        metrics.latency_seconds.labels("0").observe(0.02)
        metrics.publish(
            Snapshot(
                {
                    0: PartitionSnapshot(
                        summary(
                            43,
                            {"not_json": 2, "join_expired": 1},
                            {"rolling_accuracy": 0.75, "baseline_accuracy": 0.5},
                        ),
                        (5, None),
                        None,
                    ),
                    1: PartitionSnapshot(summary(7, {}, {"rolling_mae": 1.5}), (0, 0), 1.0, 12),
                },
                records_processed=99,
                problems=[],
                kafka_connected=True,
            )
        )
        status, body = http_get(server.url + "/healthz")
        assert status == 200 and orjson.loads(body) == {"status": "ok"}
        status, body = http_get(server.url + "/metrics")
        assert status == 200
        samples = metric_samples(body.decode())
        assert samples[("driftstream_events_scored_total", (("partition", "0"),))] == 43
        assert samples[("driftstream_labels_joined_total", (("partition", "1"),))] == 40
        assert (
            samples[
                ("driftstream_dead_letters_total", (("partition", "0"), ("reason", "not_json")))
            ]
            == 2
        )
        assert samples[("driftstream_expired_joins_total", (("partition", "0"),))] == 1
        assert samples[("driftstream_late_records_total", (("partition", "1"),))] == 6
        assert (
            samples[
                ("driftstream_drift_detections_total", (("kind", "concept"), ("partition", "0")))
            ]
            == 2
        )
        assert samples[("driftstream_pending_joins", (("partition", "0"),))] == 3
        assert samples[("driftstream_model_generation", (("partition", "1"),))] == 2
        assert (
            samples[("driftstream_rolling_metric", (("metric", "accuracy"), ("partition", "0")))]
            == 0.75
        )
        assert (
            samples[("driftstream_rolling_metric", (("metric", "mae"), ("partition", "1")))] == 1.5
        )
        lag = "driftstream_consumer_lag"
        assert samples[(lag, (("input", "events"), ("partition", "0")))] == 5
        assert (lag, (("input", "labels"), ("partition", "0"))) not in samples  # not known yet
        assert samples[("driftstream_checkpoint_age_seconds", (("partition", "1"),))] > 0
        assert ("driftstream_checkpoint_age_seconds", (("partition", "0"),)) not in samples
        saved_at = "driftstream_last_checkpoint_timestamp_seconds"
        assert samples[(saved_at, (("partition", "1"),))] == 1
        assert samples[("driftstream_records_since_checkpoint", (("partition", "1"),))] == 12
        assert samples[("driftstream_records_since_checkpoint", (("partition", "0"),))] == 0
        baseline = "driftstream_baseline_metric"
        assert samples[(baseline, (("metric", "accuracy"), ("partition", "0")))] == 0.5
        assert (baseline, (("metric", "mae"), ("partition", "1"))) not in samples  # none yet
        info = (("consumer_group", "g"), ("events_topic", "ev"), ("labels_topic", "lb"))
        assert samples[("driftstream_worker_info", info)] == 1
        assert samples[("driftstream_partitioner_mismatch", ())] == 0
        assert ("driftstream_unknown_id_label_share", ()) not in samples  # no labels seen
        assert samples[("driftstream_records_processed_total", ())] == 99
        assert samples[("driftstream_healthy", ())] == 1
        assert samples[("driftstream_processing_latency_seconds_count", (("partition", "0"),))] == 1
        # A warning (the partitioner check's) leaves the worker healthy, and is said.
        metrics.publish(
            Snapshot({}, 99, [], True, ["labels elsewhere"], 0.75, partitioner_mismatch=True)
        )
        status, body = http_get(server.url + "/healthz")
        assert status == 200
        assert orjson.loads(body) == {"status": "degraded", "warnings": ["labels elsewhere"]}
        samples = metric_samples(http_get(server.url + "/metrics")[1].decode())
        assert samples[("driftstream_partitioner_mismatch", ())] == 1
        assert samples[("driftstream_unknown_id_label_share", ())] == 0.75
        assert samples[("driftstream_healthy", ())] == 1
        metrics.publish(Snapshot({}, 99, ["Kafka unavailable for 3 s: x"], False, ["w"]))
        status, body = http_get(server.url + "/healthz")
        assert status == 503 and "Kafka unavailable" in orjson.loads(body)["problems"][0]
        assert orjson.loads(body)["warnings"] == ["w"]
        assert http_get(server.url + "/nothing")[0] == 404
    finally:
        server.close()


def test_data_drift_alarms_are_counted_by_partition_test_and_feature():
    class Report:
        def __init__(self, kind, wire):
            self.kind, self.partition, self._wire = kind, 2, wire

        def to_wire(self):
            return {"kind": self.kind, "partition": 2, **self._wire}

    metrics = WorkerMetrics()
    for statistic in (0.3, 0.4):
        wire = {"test": "ks", "feature": "x1", "statistic": statistic}
        metrics.drift_reported(Report("data", wire))
    metrics.drift_reported(Report("data", {"test": "chi2", "feature": "color"}))  # no statistic
    metrics.drift_reported(Report("concept", {"detector": {}}))  # not a data alarm
    samples = metric_samples(metrics.exposition().decode())
    ks = (("feature", "x1"), ("partition", "2"), ("test", "ks"))
    chi2 = (("feature", "color"), ("partition", "2"), ("test", "chi2"))
    assert samples[("driftstream_data_drift_alarms_total", ks)] == 2
    assert samples[("driftstream_data_drift_alarms_total", chi2)] == 1
    assert samples[("driftstream_data_drift_alarm_statistic", ks)] == 0.4
    assert ("driftstream_data_drift_alarm_statistic", chi2) not in samples
    assert samples[("driftstream_data_drift_last_alarm_timestamp_seconds", ks)] > 0
    assert len([k for k in samples if k[0] == "driftstream_data_drift_alarms_total"]) == 2


def test_a_learner_data_alarm_is_counted_with_its_test_and_feature():
    figures = {"test": "ks", "statistic": 0.2, "p_value": 1e-9, "effect": 0.2}
    figures |= {"reference": {"n": 2000}, "live": {"n": 2000}}
    version = ModelVersion(0, 9)
    report = DriftReport("data", 3, 1000, 5000, figures, "reported", version, version, "x1")
    metrics = WorkerMetrics()
    metrics.drift_reported(report)
    samples = metric_samples(metrics.exposition().decode())
    labels = (("feature", "x1"), ("partition", "3"), ("test", "ks"))
    assert samples[("driftstream_data_drift_alarms_total", labels)] == 1
    assert samples[("driftstream_data_drift_alarm_statistic", labels)] == 0.2


def test_data_drift_statistics_come_from_the_summary_and_never_break_a_scrape():
    metrics = WorkerMetrics()
    latest = [
        {"test": "ks", "feature": "x1", "statistic": 0.25},
        {"test": "label", "feature": None, "statistic": 3},
        "not a dict",
        {"test": "t", "feature": "x2", "statistic": None},
    ]
    parts = {
        0: PartitionSnapshot(summary(1, {}, {}) | {"data_drift": {"latest": latest}}, (0, 0), None),
        1: PartitionSnapshot(summary(1, {}, {}) | {"data_drift": "odd"}, (0, 0), None),
        2: PartitionSnapshot(summary(1, {}, {}) | {"data_drift": None}, (0, 0), None),
    }
    metrics.publish(Snapshot(parts, 3, [], True))
    samples = metric_samples(metrics.exposition().decode())
    stat = "driftstream_data_drift_statistic"
    assert {k: v for k, v in samples.items() if k[0] == stat} == {
        (stat, (("feature", "x1"), ("partition", "0"), ("test", "ks"))): 0.25,
        (stat, (("feature", ""), ("partition", "0"), ("test", "label"))): 3.0,
    }


def test_a_taken_metrics_port_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            MetricsServer(WorkerMetrics(), "127.0.0.1", port)
