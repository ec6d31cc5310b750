"""Operating a worker, end to end: CLI worker processes against real brokers.

Metrics match what was produced; SIGTERM saves a checkpoint the next start resumes from
exactly; a second SIGTERM exits at once; no secret reaches a log; and a broker that goes
away (losing all its data) and comes back is survived without losing state.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from driftstream.broker import EmbeddedBroker, free_port
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import synthetic
from driftstream.state.checkpoints import StateStore
from driftstream.stream.learner import Learner
from driftstream.transport import KafkaSettings, Producer
from tests.ports import restartable_ports
from tests.support import (
    DEADLINE_S,
    START_TS,
    checkpoints,
    create_topics,
    http_get,
    metric_samples,
    progress,
    publish,
    read_all,
    run_argv,
    start_cli,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


# -- helpers ---------------------------------------------------------------------------


class Worker:
    """A `driftstream run` process with its metrics port and its log (JSON lines)."""

    def __init__(
        self,
        settings: KafkaSettings,
        prefix: str,
        state: Path,
        log: Path,
        *extra: str,
        env: dict[str, str] | None = None,
    ):
        self.port = free_port()
        self.log = log
        argv = run_argv(
            settings,
            prefix,
            state,
            "--model",
            "lr",
            "--drift-policy",
            "reset",
            "--metrics-port",
            str(self.port),
            *extra,
        )
        self.proc = start_cli(argv, log, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[dict]:
        """The log's JSON lines (all lines are JSON: stderr is a file, --log-format auto)."""
        complete = self.text().split("\n")[:-1]  # the last one may be half written
        return [orjson.loads(line) for line in complete if line.startswith("{")]

    def crashed(self) -> bool:
        """An uncaught exception: a plain-text traceback among the JSON lines (a library's
        logged exception is inside a JSON line)."""
        return any(line.startswith("Traceback") for line in self.text().splitlines())

    def events(self, name: str) -> list[dict]:
        return [x for x in self.lines() if x.get("event") == name]

    def get(self, path: str) -> tuple[int | None, bytes]:
        return http_get(f"http://127.0.0.1:{self.port}{path}")

    def health(self) -> int | None:
        return self.get("/healthz")[0]

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, body = self.get("/metrics")
        return metric_samples(body.decode()) if status == 200 else {}

    def total(self, name: str, **labels: str) -> float:
        """Sum of a metric over the series whose labels include ``labels``."""
        return sum(
            v
            for (n, ls), v in self.metrics().items()
            if n == name and set(labels.items()) <= set(ls)
        )

    def wait(self, cond: Callable[[], object], what: str, timeout: float = DEADLINE_S) -> None:
        wait_until(cond, what, timeout, watch=[(self.proc, self.log)])

    def exit_code(self, timeout: float = DEADLINE_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running after {timeout} s\n{self.tail()}")

    def tail(self) -> str:
        return tail(self.log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- tests -----------------------------------------------------------------------------


def test_metrics_count_what_was_produced(kafka_settings, unique_prefix, tmp_path):
    n, partitions = 2000, 2
    topics = create_topics(kafka_settings, unique_prefix, partitions)
    samples = list(synthetic("sea", n, seed=3, label_delay="20", start_ts=START_TS))
    publish(kafka_settings, unique_prefix, samples[:1000], partitions)
    bad_events = [b"not json", b"{also not json", b'{"features": {"x": 1}}', b"[1, 2]"]
    raw = Producer(kafka_settings)
    for value in bad_events:
        raw.send(topics["events"], value, partition=0, timestamp_ms=START_TS + 500)
    raw.send(topics["labels"], b"\xff\xfe", partition=1, timestamp_ms=START_TS + 500)
    raw.flush()
    raw.close()
    publish(kafka_settings, unique_prefix, samples[1000:], partitions)

    worker = Worker(
        kafka_settings,
        unique_prefix,
        tmp_path / "s.sqlite",
        tmp_path / "worker.log",
        "--checkpoint-every",
        "500",
    )
    try:
        worker.wait(
            lambda: (
                worker.total("driftstream_events_scored_total") == n
                and worker.total("driftstream_labels_joined_total") == n
                and worker.total("driftstream_dead_letters_total") == 5
            ),
            "every record to be counted",
        )
        m = worker.metrics()
        for p in range(partitions):
            part = str(p)
            expected = len(samples[p::partitions])
            assert m[("driftstream_events_scored_total", (("partition", part),))] == expected
            assert m[("driftstream_labels_joined_total", (("partition", part),))] == expected
            assert m[("driftstream_pending_joins", (("partition", part),))] == 0
            for stream in ("events", "labels"):
                assert (
                    m[("driftstream_consumer_lag", (("input", stream), ("partition", part)))] == 0
                )
            assert (
                m[("driftstream_rolling_metric", (("metric", "accuracy"), ("partition", part)))]
                > 0.5
            )
            assert m[("driftstream_processing_latency_seconds_count", (("partition", part),))] > 0
            assert m[("driftstream_checkpoint_duration_seconds_count", (("partition", part),))] >= 1
        dead = {
            (dict(ls)["partition"], dict(ls)["reason"]): v
            for (name, ls), v in m.items()
            if name == "driftstream_dead_letters_total"
        }
        assert dead == {
            ("0", "not_json"): 2,
            ("0", "missing_id"): 1,
            ("0", "not_object"): 1,
            ("1", "not_json"): 1,
        }
        assert m[("driftstream_expired_joins_total", (("partition", "0"),))] == 0
        assert m[("driftstream_records_processed_total", ())] == 2 * n + 5
        assert m[("driftstream_assigned_partitions", ())] == partitions
        assert m[("driftstream_healthy", ())] == 1 and worker.health() == 200
        # At INFO the log has no line per dead letter, only warnings per reason (rate-limited).
        warned = [x for x in worker.lines() if x.get("event") == "dead_letter"]
        assert {x["reason"] for x in warned} == {"missing_id", "not_json", "not_object"}
        assert all({"partition", "offset", "topic", "model"} <= set(x) for x in warned)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.exit_code() == 0, worker.tail()
    finally:
        worker.kill()


def test_sigterm_saves_a_checkpoint_that_the_next_start_resumes_from(
    kafka_settings, unique_prefix, tmp_path
):
    n = 6000
    topics = create_topics(kafka_settings, unique_prefix, 1)
    samples = list(synthetic("sea", n, seed=4, label_delay="50", start_ts=START_TS))
    state = tmp_path / "s.sqlite"
    # No periodic checkpoint: the only one of the first run is the one SIGTERM makes.
    args = ("--checkpoint-every", "1000000", "--checkpoint-interval", "3600")

    first = Worker(kafka_settings, unique_prefix, state, tmp_path / "first.log", *args)
    publisher = EventPublisher(kafka_settings, unique_prefix)
    # Events keep coming (paced, 3 s in all) while the first run is stopped.
    feeding = threading.Thread(
        target=publish_samples, args=(publisher, samples), kwargs={"rate": 2000}
    )
    try:
        first.wait(lambda: first.health() == 200, "the first run to join")
        feeding.start()
        first.wait(
            lambda: first.total("driftstream_events_scored_total") >= 500,
            "the first run to be under way",
        )
        first.proc.send_signal(signal.SIGTERM)
        assert first.exit_code() == 0, first.tail()
    finally:
        first.kill()
        if feeding.is_alive():
            feeding.join()
        publisher.close()
    saved = checkpoints(state)
    assert len(saved) == 1, saved
    reached = saved[0]["offsets"]
    assert 500 <= reached[topics["events"]] < n, reached  # stopped mid-stream
    [final] = [x for x in first.events("checkpoint") if x["reason"] == "shutdown"]
    assert final["offsets"] == reached and final["partition"] == 0 and "model" in final

    second = Worker(
        kafka_settings,
        unique_prefix,
        state,
        tmp_path / "second.log",
        *args,
        "--exit-when-idle",
        "1.5",
    )
    try:
        assert second.exit_code() == 0, second.tail()
    finally:
        second.kill()
    [restored] = [x for x in second.events("restore") if x["partition"] == 0]
    assert restored["checkpoint"] == 1 and restored["offsets"] == reached, restored

    # Nothing processed twice: each prediction id once across both runs, none missing.
    ids = [p["id"] for p in read_all(kafka_settings, topics["predictions"])]
    assert len(ids) == len(set(ids)) == n
    with StateStore(state) as store:
        learner = Learner.from_bytes(store.latest(0).state)
    assert learner.n_events == learner.n_labels == n


def test_a_second_sigterm_exits_at_once(kafka_settings, unique_prefix, tmp_path):
    create_topics(kafka_settings, unique_prefix, 1)
    worker = Worker(
        kafka_settings,
        unique_prefix,
        tmp_path / "s.sqlite",
        tmp_path / "worker.log",
        env={"DRIFTSTREAM_KILL_AT": "shutdown:hang"},
    )
    try:
        worker.wait(lambda: worker.health() == 200, "the worker to be healthy")
        worker.proc.send_signal(signal.SIGTERM)
        # The test hook blocks the graceful shutdown, as a stuck broker call would.
        worker.wait(lambda: worker.events("fault_point"), "the shutdown to hang")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.exit_code() == 1
    finally:
        worker.kill()
    text = worker.text()
    assert "second SIGTERM: exiting at once" in text and not worker.crashed()


def test_no_secret_in_logs_or_errors(broker, unique_prefix, tmp_path):
    # Tansu offers no SASL, so the client never gets past the handshake: the worker retries
    # for the connect timeout (10 s), then exits with a one-line error. At DEBUG level every
    # kafka-python detail is logged too.
    secret = "s3cr3t-Pa55word"
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    create_topics(settings, unique_prefix, 1)
    sasl = (
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "PLAIN",
        "--sasl-username",
        "worker",
        "--log-level",
        "DEBUG",
    )
    workers = [
        Worker(
            settings,
            unique_prefix,
            tmp_path / "s.sqlite",
            tmp_path / f"{fmt}.log",
            *sasl,
            "--log-format",
            fmt,
            env={"KAFKA_SASL_PASSWORD": secret},
        )
        for fmt in ("json", "text")
    ]
    try:
        for w in workers:
            wait_until(
                lambda: w.health() is not None or w.proc.poll() is not None, "the metrics server"
            )
            assert w.health() in (503, None)  # 503 while not connected (or already gone)
        for w in workers:
            assert w.exit_code() == 2, w.tail()
    finally:
        for w in workers:
            w.kill()
    for w in workers:
        text = w.text()
        assert "sasl_plain_password='***'" in text  # the settings are logged, masked
        last = text.strip().splitlines()[-1]  # a one-line error, not a stack trace
        assert last.startswith("driftstream run: error: Kafka unavailable at " + broker.bootstrap)
        assert secret not in text
        assert len(text.splitlines()) > 50  # DEBUG really was on


def test_worker_survives_a_broker_that_loses_everything(unique_prefix, tmp_path):
    n, first_part = 1000, 600
    samples = list(synthetic("sea", n, seed=6, label_delay="10", start_ts=START_TS))
    state = tmp_path / "s.sqlite"
    (port,) = restartable_ports(1)  # taken again by the restart below
    broker = EmbeddedBroker(port, log_path=tmp_path / "tansu.log")
    broker.start()
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, fast_group_timeouts=True)
    worker = None
    try:
        topics = create_topics(settings, unique_prefix, 1)
        publish(settings, unique_prefix, samples[:first_part], 1)
        worker = Worker(
            settings,
            unique_prefix,
            state,
            tmp_path / "worker.log",
            "--checkpoint-every",
            "300",
            "--exit-when-idle",
            "3",
        )
        worker.wait(lambda: progress(state) == 2 * first_part, "the first part checkpointed")
        worker.wait(lambda: worker.health() == 200, "a healthy worker")

        broker.kill()  # as a crash: memory storage, so every topic and offset is gone
        worker.wait(lambda: worker.health() == 503, "/healthz to report the outage")
        assert worker.events("kafka_unavailable")

        # Tansu creates a missing topic (4 partitions) on any metadata request, whatever the
        # client asks: hold the worker still until the topics exist again.
        worker.proc.send_signal(signal.SIGSTOP)
        try:
            broker.start()  # same port, empty
            create_topics(settings, unique_prefix, 1)
            publish(settings, unique_prefix, samples[:300], 1)  # the log ends before the checkpoint
        finally:
            worker.proc.send_signal(signal.SIGCONT)
        worker.wait(lambda: worker.events("kafka_recovered"), "the worker to reconnect")
        worker.wait(lambda: worker.events("log_behind_checkpoint"), "the log-behind error")
        behind = worker.events("log_behind_checkpoint")[0]
        assert behind["level"] == "ERROR" and behind["partition"] == 0
        assert behind["log_end"] == 300 and behind["offsets"][behind["topic"]] == first_part
        worker.wait(
            lambda: b"before the checkpoint" in worker.get("/healthz")[1],
            "/healthz to name the log that is behind",
        )
        assert worker.health() == 503

        publish(settings, unique_prefix, samples[300:], 1)  # the same records, then the rest
        worker.wait(lambda: worker.health() == 200, "/healthz to recover")
        assert worker.exit_code() == 0, worker.tail()

        # State kept: the new broker got predictions for exactly the events after the
        # checkpoint (none of the first part again, none missing), each learned once.
        predicted = [p["id"] for p in read_all(settings, topics["predictions"])]
        assert sorted(predicted) == sorted(s.id for s in samples[first_part:])
        with StateStore(state) as store:
            checkpoint = store.latest(0)
        assert checkpoint.offsets == {topics["events"]: n, topics["labels"]: n}
        learner = Learner.from_bytes(checkpoint.state)
        assert learner.n_events == learner.n_labels == n
        assert not worker.crashed()
    finally:
        if worker is not None:
            worker.kill()
        broker.stop()
