"""A worker whose s3:// checkpoint store goes away for 10 s and comes back, end to end.

A `driftstream run` process checkpoints to a real S3 server (SeaweedFS, with its data kept on
disk across the restart). While the server is stopped the worker must report unhealthy on
/healthz with the reason, commit no offset past its last saved checkpoint, and retry with
back-off; once the server is back it must recover by itself, and its final state and every
prediction must equal an uninterrupted run's (`tests.reference`).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from driftstream.broker import free_port
from driftstream.producers.sources import synthetic
from driftstream.state.s3_store import S3CheckpointStore
from driftstream.state.safe_pickle import load_learner
from driftstream.transport import Consumer, KafkaSettings
from tests.reference import cli_config, dedupe, reference
from tests.seaweedfs import SeaweedS3
from tests.support import (
    DEADLINE_S,
    START_TS,
    create_topics,
    http_get,
    publish,
    read_all,
    run_argv,
    start_cli,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

KEY = "outage test key, 32 bytes long.."
OUTAGE_S = 10.0


def log_events(log: Path, name: str) -> list[dict]:
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [orjson.loads(x) for x in text.split("\n")[:-1] if x.startswith("{")]
    return [x for x in lines if x.get("event") == name]


def test_an_s3_store_away_for_10_s_leaves_the_state_of_an_uninterrupted_run(
    kafka_settings: KafkaSettings, unique_prefix: str, tmp_path: Path
):
    n = 3000
    samples = list(
        synthetic("sea", n, seed=11, drift_at=[2000], label_delay="100", start_ts=START_TS)
    )
    topics = create_topics(kafka_settings, unique_prefix, 1)
    publish(kafka_settings, unique_prefix, samples, 1)
    server = SeaweedS3(tmp_path / "weed").start()
    spec = f"s3://{server.bucket}/outage/{unique_prefix.rstrip('.')}"
    env = {
        "DRIFTSTREAM_STATE_KEY": KEY,
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_DEFAULT_REGION": server.region,
    }
    port = free_port()
    argv = run_argv(
        kafka_settings,
        unique_prefix,
        spec,
        "--checkpoint-every",
        "300",
        "--checkpoint-interval",
        "1",
        "--model",
        "lr",
        "--drift-policy",
        "reset",
        "--metrics-port",
        str(port),
    )
    log = tmp_path / "worker.log"
    proc = start_cli(argv, log, env=env)
    watched = [(proc, log)]

    def health() -> tuple[int | None, dict]:
        status, body = http_get(f"http://127.0.0.1:{port}/healthz")
        return status, orjson.loads(body) if body else {}

    def saved() -> int:
        done = log_events(log, "checkpoint")
        return sum(done[-1]["offsets"].values()) if done else 0

    group = Consumer(kafka_settings, group_id=unique_prefix + "group")
    try:
        wait_until(lambda: saved(), "a first checkpoint", watch=watched, step=0.005)
        # Mid-stream: the worker is held while the server goes down (kill: no grace period).
        proc.send_signal(signal.SIGSTOP)
        try:
            server.kill()
            stopped = time.monotonic()
        finally:
            proc.send_signal(signal.SIGCONT)
        wait_until(lambda: health()[0] == 503, "/healthz to report the outage", watch=watched)
        last_saved = saved()
        assert last_saved < 2 * n
        problems = health()[1]["problems"]
        assert any(p.startswith("checkpoint store unavailable for") for p in problems), problems
        assert any(spec in p for p in problems), problems
        # The outage lasts OUTAGE_S: the scenario's length, not a synchronisation.
        time.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))
        assert health()[0] == 503
        committed = [group.committed(t, 0) for t in (topics["events"], topics["labels"])]
        assert saved() == last_saved  # nothing saved meanwhile,
        assert sum(c or 0 for c in committed) <= last_saved, committed  # nor committed
        assert proc.poll() is None

        server.start()  # same ports, same data
        wait_until(
            lambda: saved() == 2 * n and health()[0] == 200,
            "the worker to recover and checkpoint everything",
            timeout=2 * DEADLINE_S,
            watch=watched,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0, tail(log)
        store = S3CheckpointStore(
            server.bucket, spec.split("/", 3)[3] + "/", KEY.encode(), server.client_options()
        )
        checkpoint = store.latest(0)
        store.close()
    finally:
        group.close()
        if proc.poll() is None:
            proc.kill()
        server.stop()

    unavailable = log_events(log, "store_unavailable")
    assert unavailable and all(e["level"] == "WARNING" for e in unavailable)
    assert server.secret_key not in log.read_text()
    assert log_events(log, "store_recovered"), tail(log)

    config = cli_config(argv)
    ref_learner, ref_predictions = reference(samples, config)
    got, again = dedupe(read_all(kafka_settings, topics["predictions"]))
    assert got == ref_predictions
    assert again > 0  # what was processed since the last saved checkpoint came again
    assert checkpoint.offsets == {topics["events"]: n, topics["labels"]: n}
    assert load_learner(checkpoint.state).canonical_bytes() == ref_learner.canonical_bytes()
