"""The Prometheus alert rules (deploy/prometheus/alerts.yml) and the mixed-partitioner
diagnosis they alert on.

promtool (Debian's `prometheus` package, installed by .ci/setup) checks the rules and the
scrape config and runs their unit tests (alerts_test.yml): every alert has a case where it
fires and one where it does not. The metric names the rules use, and the series the unit
tests feed them, must be ones a worker exports: read from the worker's own metrics code fed a
full snapshot, and from a real worker's /metrics through Kafka. That worker is given events
published with kafka-python's default partitioner (murmur2) and labels on the partition
librdkafka's default one would pick (crc32), and must say the likely cause in its log, on
/healthz and in its metrics within 30 s; a real Prometheus (Debian's, beside promtool)
scraping it evaluates every rule without an error and holds the mismatch alert pending.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import yaml

from driftstream.broker import free_port
from driftstream.consumers.observability import PartitionSnapshot, Snapshot, WorkerMetrics
from driftstream.consumers.partitioner_check import PartitionerCheck
from driftstream.consumers.reader import read_topic
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import synthetic
from driftstream.transport import KafkaSettings
from tests.support import (
    REPO,
    START_TS,
    create_topics,
    http_get,
    metric_samples,
    run_argv,
    start_cli,
    tail,
    wait_until,
)

PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
ALERTS = {rule["alert"]: rule for group in RULES for rule in group["rules"]}
UNIT_TESTS = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself, per target
# Exported only once a data-drift alarm was published (a real worker of the Kafka test has none).
AFTER_AN_ALARM = {
    "driftstream_data_drift_alarms_total",
    "driftstream_data_drift_last_alarm_timestamp_seconds",
    "driftstream_data_drift_alarm_statistic",
}


def tool(name: str) -> str:
    exe = shutil.which(name)
    assert exe, (
        f"{name} not found on PATH: install Debian's prometheus package "
        "(`apt-get install prometheus`, as .ci/setup does)"
    )
    return exe


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120)


def start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen, str, Path]:
    """A real Prometheus scraping ``target`` (host:port) as job driftstream every second and
    evaluating alerts.yml every second; (process, its URL, its log)."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS / "alerts.yml")],
        "scrape_configs": [{"job_name": "driftstream", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "prometheus.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={address}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://{address}", log


def rule_metrics() -> set[str]:
    """Metric names the rules' expressions use (PromQL functions and keywords left out)."""
    names: set[str] = set()
    for rule in ALERTS.values():
        names |= set(re.findall(r"\b(?:driftstream_[a-z_]+|up)\b", rule["expr"]))
    return names


# -- promtool ----------------------------------------------------------------------------


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    done = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout
    done = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: one alert expected at the wrong time is reported."""
    text = (PROMETHEUS / "alerts_test.yml").read_text()
    assert text.count("eval_time: 9m  # below for 9 minutes") == 1
    broken = text.replace("eval_time: 9m  # below for 9 minutes", "eval_time: 12m  # (broken)")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "alerts_test.yml").write_text(broken)
    done = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert done.returncode != 0
    assert "DriftstreamBelowNoChangeBaseline" in done.stdout + done.stderr


def test_every_alert_fires_in_one_case_and_not_in_another() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in UNIT_TESTS["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    # A firing case lists exactly what fires: the other partitions or workers in its series
    # must not.
    assert fires == set(ALERTS) and quiet == set(ALERTS)


def test_every_alert_can_be_routed_grouped_and_read() -> None:
    for name, rule in ALERTS.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["for"] != "0m", name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["labels"]["service"] == "driftstream", name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        # Per-partition alerts name the pipeline and aggregate over workers (a partition
        # moves between them): one alert per partition, whichever worker owns it.
        if re.search(r"\bpartition\b", rule["expr"]):
            assert re.search(r"(max|sum) by \(job, consumer_group, partition\b", rule["expr"]), name
    expected = {
        "DriftstreamConceptDriftActedOn",
        "DriftstreamBelowNoChangeBaseline",
        "DriftstreamConsumerLagGrowing",
        "DriftstreamDeadLetterRateHigh",
        "DriftstreamWorkerUnhealthy",
        "DriftstreamCheckpointTooOld",
        "DriftstreamDataDriftAlarm",
    }
    assert expected <= set(ALERTS)


# -- metric names --------------------------------------------------------------------------


@dataclass
class _DataAlarm:
    """A data-drift report as the worker hands it to its metrics (`DriftReport` shape)."""

    partition: int
    kind: str = "data"
    wire: dict = field(default_factory=dict)

    def to_wire(self) -> dict:
        return {"kind": self.kind, "partition": self.partition, **self.wire}


def exported() -> dict[str, set[str]]:
    """Every sample name a worker's metrics code exports, with its label names, when each
    part of the snapshot is filled."""
    metrics = WorkerMetrics({"consumer_group": "g", "events_topic": "e", "labels_topic": "l"})
    summary = {
        "model": {"generation": 1, "updates": 5},
        "n_events": 10,
        "n_labels": 8,
        "late": 0,
        "pending": 2,
        "rejected": {"unknown_id": 1},
        "drifts": {"concept": 1},
        "metrics": {"rolling_accuracy": 0.8, "baseline_accuracy": 0.6},
        "data_drift": {"latest": [{"test": "ks", "feature": "x1", "statistic": 0.3}]},
    }
    metrics.publish(
        Snapshot(
            {0: PartitionSnapshot(summary, (3, 4), 1.0, 7)},
            records_processed=18,
            problems=[],
            kafka_connected=True,
            unknown_id_share=0.5,
            partitioner_mismatch=True,
        )
    )
    metrics.latency_seconds.labels("0").observe(0.01)
    metrics.checkpoint_seconds.labels("0").observe(0.01)
    metrics.drift_reported(_DataAlarm(0, wire={"test": "ks", "feature": "x1", "statistic": 0.4}))
    names: dict[str, set[str]] = {}
    for name, labels in metric_samples(metrics.exposition().decode()):
        names.setdefault(name, set()).update(k for k, _ in labels)
    return names


def test_every_metric_the_rules_use_is_exported() -> None:
    used = rule_metrics()
    assert len(used) >= 12, used  # the pattern finds them
    missing = used - set(exported()) - PROMETHEUS_OWN
    assert not missing, f"rules use metrics no worker exports: {sorted(missing)}"


def test_the_unit_tests_feed_series_as_a_worker_exports_them() -> None:
    """Names and label names of every input series are those of the worker's export (plus
    job and instance, which Prometheus adds), so the tests exercise real series."""
    names = exported()
    for case in UNIT_TESTS["tests"]:
        for item in case["input_series"]:
            name, labels = re.fullmatch(r"(\w+)\{(.*)\}", item["series"]).groups()
            keys = set(re.findall(r"(\w+)=", labels))
            assert {"job", "instance"} <= keys, item
            if name in PROMETHEUS_OWN:
                continue
            assert name in names, f"{name}: not exported by a worker"
            assert keys - {"job", "instance"} == names[name], (name, keys)


# -- the diagnosis itself (no broker) --------------------------------------------------------


def test_the_partitioner_check_needs_a_large_share_many_unknowns_and_partitions() -> None:
    now = [100.0]

    def run(labels: dict[int, int], unknown: dict[int, int], n_partitions: int = 4):
        check = PartitionerCheck(clock=lambda: now[0])
        for p, n in labels.items():
            check.labels_received(p, n)
        for p, n in unknown.items():
            for _ in range(n):
                check.dead_letter(p, "unknown_id")
                check.dead_letter(p, "not_json")  # other reasons do not count
        return check.update(lambda: n_partitions), check

    found, check = run({0: 500, 1: 500}, {0: 300, 1: 300})
    assert found is not None and found.partitions == [0, 1] and check.share == 0.6
    assert "partitioner=murmur2_random" in check.warning and "600 of 1000" in check.warning
    assert run({0: 500, 1: 500}, {0: 50, 1: 50})[0] is None  # 10 %: a healthy stream's noise
    assert run({0: 100, 1: 100}, {0: 40, 1: 40})[0] is None  # too few to judge (80 < 100)
    assert run({0: 500, 1: 500}, {0: 300})[0] is None  # one partition of two: another cause
    assert run({0: 500}, {0: 300})[0] is not None  # the worker owns one partition of four
    assert run({0: 500, 1: 500}, {0: 300, 1: 300}, n_partitions=1)[0] is None  # clients agree


def test_the_diagnosis_is_said_once_and_ends_when_labels_meet_their_events() -> None:
    now = [0.0]
    lines: list[str] = []

    class Log:
        def warning(self, fmt, *args, **kw):
            lines.append("WARNING " + fmt % args)

        def info(self, fmt, *args, **kw):
            lines.append("INFO " + fmt % args)

    check = PartitionerCheck(Log(), clock=lambda: now[0])
    for second in range(120):  # 2 minutes of mismatched labels: one warning
        now[0] = float(second)
        for p in (0, 1):
            check.labels_received(p, 10)
            for _ in range(6):
                check.dead_letter(p, "unknown_id")
        check.update(lambda: 2)
    assert [line.split()[0] for line in lines] == ["WARNING"] and check.active
    for second in range(120, 240):  # fixed: labels meet their events again
        now[0] = float(second)
        for p in (0, 1):
            check.labels_received(p, 10)
        check.update(lambda: 2)
    assert [line.split()[0] for line in lines] == ["WARNING", "INFO"] and not check.active
    assert check.share == 0.0


# -- through Kafka ---------------------------------------------------------------------------


class CrcLabelPublisher(EventPublisher):
    """Events by kafka-python's default partitioner (murmur2 of the key); labels on the
    partition librdkafka's default partitioner picks for the key: crc32(key) % N."""

    def __init__(self, settings: KafkaSettings, prefix: str, partitions: int):
        super().__init__(settings, prefix)
        self.partitions = partitions

    def publish_label(self, id, label, key=None, ts=None, partition=None):
        crc = zlib.crc32((key or id).encode()) % self.partitions
        return super().publish_label(id, label, key, ts, crc)


@pytest.mark.broker
@pytest.mark.e2e
def test_labels_from_a_crc32_producer_are_diagnosed_within_30_s(
    kafka_settings: KafkaSettings, unique_prefix: str, tmp_path: Path
) -> None:
    n, partitions = 4000, 4
    topics = create_topics(kafka_settings, unique_prefix, partitions)
    port = free_port()
    log = tmp_path / "worker.log"
    argv = run_argv(
        kafka_settings,
        unique_prefix,
        tmp_path / "state.sqlite",
        "--metrics-port",
        str(port),
        "--checkpoint-interval",
        "1",
    )
    proc = start_cli(argv, log)
    watched = [(proc, log)]

    def health() -> tuple[int | None, dict]:
        status, body = http_get(f"http://127.0.0.1:{port}/healthz")
        return status, orjson.loads(body) if status else {}

    def diagnosed() -> list[dict]:
        text = log.read_text(errors="replace")
        lines = [orjson.loads(x) for x in text.split("\n")[:-1] if x.startswith("{")]
        return [x for x in lines if x.get("event") == "partitioner_mismatch"]

    prometheus = None
    try:
        wait_until(lambda: health()[0] == 200, "the worker to own its partitions", watch=watched)
        prometheus, url, prometheus_log = start_prometheus(tmp_path, f"127.0.0.1:{port}")
        watched.append((prometheus, prometheus_log))
        publisher = CrcLabelPublisher(kafka_settings, unique_prefix, partitions)
        try:
            sent = publish_samples(
                publisher, synthetic("sea", n, label_delay="5", start_ts=START_TS)
            )
        finally:
            publisher.close()
        assert sent == {"events": n, "labels": n}
        # The setup is what it claims: most events are not where crc32 puts their labels.
        events = list(read_topic(kafka_settings, topics["events"]))
        assert len(events) == n
        apart = sum(r.partition != zlib.crc32(r.key) % partitions for r in events)
        assert apart > n / 2, apart

        wait_until(diagnosed, "the diagnosis in the worker's log", 30, watch=watched)
        (line,) = diagnosed()
        assert line["level"] == "WARNING"
        assert "different partitioners" in line["msg"]
        assert "partitioner=murmur2_random" in line["msg"]
        assert len(line["partitions"]) > 1 and line["unknown_id"] >= 100
        status, body = health()
        assert status == 200 and body["status"] == "degraded", body  # working, but warned
        assert any("different partitioners" in w for w in body["warnings"]), body

        def scrape() -> dict[tuple[str, tuple], float]:
            status, body = http_get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200, (status, body[:2000])
            return metric_samples(body.decode())

        samples = scrape()
        assert samples[("driftstream_partitioner_mismatch", ())] == 1
        assert samples[("driftstream_unknown_id_label_share", ())] >= 0.2
        # The rules join on the worker's info series for the pipeline's name.
        info = (
            ("consumer_group", unique_prefix + "group"),
            ("events_topic", topics["events"]),
            ("labels_topic", topics["labels"]),
        )
        assert samples[("driftstream_worker_info", info)] == 1

        # A real worker's scrape has every metric the rules use (bar those an alarm makes;
        # the checkpoint time once a checkpoint was saved).
        def missing() -> set[str]:
            scraped = {name for name, _ in scrape()}
            return rule_metrics() - scraped - PROMETHEUS_OWN - AFTER_AN_ALARM

        wait_until(lambda: not missing(), "every metric the rules use", watch=watched)

        # A real Prometheus scraping this worker evaluates every rule without an error (a
        # join that matches many-to-many would be one), and the mismatch alert is pending.
        def api(path: str) -> dict:
            status, body = http_get(url + path)
            return orjson.loads(body)["data"] if status == 200 else {}

        def labels_alert() -> list[dict]:
            alerts = api("/api/v1/alerts").get("alerts", [])
            return [
                a
                for a in alerts
                if a["labels"]["alertname"] == "DriftstreamLabelsOnOtherPartitions"
            ]

        def rules() -> list[dict]:
            groups = api("/api/v1/rules").get("groups", [])
            return [
                r
                for g in groups
                for r in g["rules"]
                if not r.get("lastEvaluation", "0001").startswith("0001")  # evaluated
            ]

        wait_until(labels_alert, "Prometheus to see the mismatch alert", watch=watched)
        (alert,) = labels_alert()
        assert alert["state"] == "pending"  # for: 2m
        assert alert["labels"]["consumer_group"] == unique_prefix + "group"
        wait_until(lambda: len(rules()) == len(ALERTS), "every rule evaluated", watch=watched)
        assert {r["name"]: r["health"] for r in rules()} == {name: "ok" for name in ALERTS}
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, tail(log)
    assert len(diagnosed()) == 1  # once per occurrence, not per label
