"""A partition's state follows it to another host, through the kafka: and s3:// stores.

`driftstream run` processes, each in a working directory of its own (hosts with no shared
disk), on 2 partitions: worker A serves the first half of each partition (the rest is not
published yet) and is stopped by SIGTERM; worker B takes both partitions and is killed (-9)
mid-way through the second half; worker C takes both and finishes. Each new owner must resume
each partition from the newest checkpoint its predecessor saved (re-emitting nothing after
the SIGTERM, at most ``--checkpoint-every`` predictions per partition after the kill), and
every prediction, and the final state, must equal an uninterrupted run's (`tests.reference`,
River's to the last digit). Real servers only: the
embedded Tansu broker and SeaweedFS's S3.

And a forged checkpoint planted in the kafka: store is refused by a worker's restore: it logs
the refusal, restores the newest genuine checkpoint (warning that another River version wrote
it), and the file the forged pickle would create never appears.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
import river

from driftstream.producers.sources import synthetic
from driftstream.state.kafka_store import KafkaCheckpointStore, create_checkpoint_topics
from driftstream.state.safe_pickle import load_learner
from driftstream.state.store import open_store
from driftstream.transport import KafkaSettings, topic_names
from tests.reference import cli_config, dedupe, publish_between, reference
from tests.support import (
    DEADLINE_S,
    START_TS,
    create_topics,
    read_all,
    run_argv,
    start_cli,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

KEY = "handover test key, 32 bytes long"
FORGER_KEY = b"the forger's own key, 32 bytes.."
N = 4000  # events, over PARTITIONS partitions
PARTITIONS = 2
CHECKPOINT_EVERY = 300  # input records (events + labels) per checkpoint


# -- helpers ---------------------------------------------------------------------------


class SharedStore:
    """A kafka: or s3:// store as the workers see it (spec and environment) and as this
    process reads it (`open`)."""

    def __init__(self, kind: str, spec: str, env: dict[str, str], options: dict):
        self.kind, self.spec, self.env, self.options = kind, spec, env, options

    def open(self, settings: KafkaSettings, prefix: str, key: bytes = KEY.encode()):
        return open_store(self.spec, settings, prefix, key, s3_options=self.options)


@pytest.fixture(params=[pytest.param("kafka"), pytest.param("s3")])
def shared(request, kafka_settings, unique_prefix) -> SharedStore:
    env = {"DRIFTSTREAM_STATE_KEY": KEY}
    if request.param == "kafka":
        create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS)
        return SharedStore("kafka", "kafka:", env, {})
    server = request.getfixturevalue("seaweedfs")
    env.update(
        AWS_ENDPOINT_URL=server.endpoint_url,
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_DEFAULT_REGION=server.region,
        AWS_CONFIG_FILE=os.devnull,  # nothing from this machine's ~/.aws
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    spec = f"s3://{server.bucket}/handover/{unique_prefix.rstrip('.')}"
    return SharedStore("s3", spec, env, server.client_options())


class Host:
    """A working directory of its own, with one worker's log (JSON lines)."""

    def __init__(self, root: Path, name: str):
        self.dir = root / name
        self.dir.mkdir()
        self.log = self.dir / "worker.log"

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        return start_cli(argv, self.log, env=env, cwd=self.dir)

    def events(self, name: str) -> list[dict]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = [orjson.loads(x) for x in text.split("\n")[:-1] if x.startswith("{")]
        return [x for x in lines if x.get("event") == name]

    def saved(self) -> dict[int, dict]:
        """Partition -> its newest checkpoint logged by this worker (version, offsets)."""
        return {c["partition"]: c for c in self.events("checkpoint")}


def argv_for(settings: KafkaSettings, prefix: str, spec: str, *extra: str) -> list[str]:
    return run_argv(
        settings,
        prefix,
        spec,
        "--checkpoint-every",
        str(CHECKPOINT_EVERY),
        "--model",
        "lr",
        "--drift-policy",
        "reset",
        *extra,
    )


def assert_like_an_uninterrupted_run(
    settings, prefix, store, samples, config, partitions: int
) -> dict[int, int]:
    """Every prediction and every final state equal the reference's; returns the number of
    predictions emitted again, per partition."""
    topics = topic_names(prefix)
    wires = read_all(settings, topics["predictions"])
    again = {}
    for p in range(partitions):
        part = samples[p::partitions]
        ref_learner, ref_predictions = reference(part, config, partition=p)
        got, again[p] = dedupe([w for w in wires if w["partition"] == p])
        assert got == ref_predictions, f"partition {p}"
        checkpoint = store.latest(p)
        assert checkpoint.offsets == {topics["events"]: len(part), topics["labels"]: len(part)}
        final = load_learner(checkpoint.state)
        assert final.canonical_bytes() == ref_learner.canonical_bytes(), f"partition {p}"
    return again


# -- tests -----------------------------------------------------------------------------


def test_partitions_move_to_other_hosts_by_sigterm_then_by_kill9(
    shared, kafka_settings, unique_prefix, tmp_path
):
    samples = list(
        synthetic("sea", N, seed=5, drift_at=[N // 2], label_delay="100", start_ts=START_TS)
    )
    half = START_TS + N // 2
    first_half = {s.id for s in samples if s.ts < half}
    topics = create_topics(kafka_settings, unique_prefix, PARTITIONS)
    argv = argv_for(kafka_settings, unique_prefix, shared.spec)
    a, b, c = (Host(tmp_path, f"host-{name}") for name in "abc")

    # A serves the first half of each partition (the rest is not published yet) and is
    # stopped by SIGTERM: its final checkpoint reflects all it read.
    publish_between(kafka_settings, unique_prefix, samples, PARTITIONS, START_TS, half)
    proc = a.start(argv, shared.env)
    try:
        wait_until(
            lambda: len(read_all(kafka_settings, topics["predictions"])) >= len(first_half),
            "predictions of the first half",
            watch=[(proc, a.log)],
            step=0.2,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0, tail(a.log)
    finally:
        if proc.poll() is None:
            proc.kill()
    by_a = a.saved()
    for p in range(PARTITIONS):
        part = [s for s in samples[p::PARTITIONS] if s.ts < half]
        labels = sum(1 for s in part if s.label_ts < half)
        assert by_a[p]["reason"] == "shutdown", tail(a.log)
        assert by_a[p]["offsets"] == {topics["events"]: len(part), topics["labels"]: labels}

    # B takes both partitions and dies by kill -9 at its 4th checkpoint (its outputs
    # flushed, the state not saved), mid-way through the second half.
    publish_between(kafka_settings, unique_prefix, samples, PARTITIONS, half, START_TS + 2 * N)
    proc = b.start(argv, {**shared.env, "DRIFTSTREAM_KILL_AT": "checkpoint:4"})
    assert proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL, tail(b.log)
    # What B saved is what the store holds: a periodic checkpoint is logged once its write is
    # confirmed, so the kill may have come between the newest write and its log line.
    with shared.open(kafka_settings, unique_prefix) as store:
        newest = {p: store.latest(p) for p in range(PARTITIONS)}
    by_b = {
        p: {"checkpoint": cp.version, "offsets": cp.offsets}
        for p, cp in newest.items()
        if cp.version > by_a[p]["checkpoint"]
    }
    assert by_b and all(sum(cp["offsets"].values()) < 2 * N // PARTITIONS for cp in by_b.values())
    logged = b.saved()
    assert all(logged[p]["checkpoint"] <= by_b[p]["checkpoint"] for p in logged), tail(b.log)

    # C takes both and finishes.
    proc = c.start(argv + ["--exit-when-idle", "1"], shared.env)
    assert proc.wait(timeout=DEADLINE_S) == 0, tail(c.log)

    # Each new owner resumed from the newest checkpoint the previous one saved.
    for before, after in ((by_a, b), (by_b, c)):
        restored = {r["partition"]: r for r in after.events("restore")}
        assert sorted(restored) == list(range(PARTITIONS)), tail(after.log)
        for p in range(PARTITIONS):
            saved = before.get(p) or by_a[p]  # B may have saved none of a partition
            assert restored[p]["checkpoint"] == saved["checkpoint"], tail(after.log)
            assert restored[p]["offsets"] == saved["offsets"]

    with shared.open(kafka_settings, unique_prefix) as store:
        assert {r["store"] for h in (b, c) for r in h.events("restore")} == {store.name}
        again = assert_like_an_uninterrupted_run(
            kafka_settings, unique_prefix, store, samples, cli_config(argv), PARTITIONS
        )
    # After the SIGTERM nothing came again; after the kill, at most two checkpoints' worth
    # (the newest checkpoint may still have been being written).
    wires = read_all(kafka_settings, topics["predictions"])
    assert sum(1 for w in wires if w["id"] in first_half) == len(first_half)
    assert all(n <= 2 * CHECKPOINT_EVERY for n in again.values()) and sum(again.values()) > 0, again
    # Nothing of the state was kept on any host, and no secret reached a log.
    for host in (a, b, c):
        assert sorted(f.name for f in host.dir.iterdir()) == ["worker.log"]
        text = host.log.read_text()
        assert KEY not in text
        assert shared.kind != "s3" or shared.env["AWS_SECRET_ACCESS_KEY"] not in text


class _CreatesFile:
    """Unpickling this opens (creates) a file: what a forged checkpoint would carry."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_forged_checkpoint_is_refused_by_the_restoring_worker(
    kafka_settings, unique_prefix, tmp_path, monkeypatch
):
    n = 800
    samples = list(synthetic("sea", n, seed=9, label_delay="50", start_ts=START_TS))
    half = START_TS + n // 2  # records before it first, the rest once the worker stopped
    create_topics(kafka_settings, unique_prefix, 1)
    create_checkpoint_topics(kafka_settings, unique_prefix, 1)
    publish_between(kafka_settings, unique_prefix, samples, 1, START_TS, half)
    argv = argv_for(kafka_settings, unique_prefix, "kafka:", "--exit-when-idle", "1")
    env = {"DRIFTSTREAM_STATE_KEY": KEY}
    first, second = Host(tmp_path, "host-a"), Host(tmp_path, "host-b")
    proc = first.start(argv, env)
    assert proc.wait(timeout=DEADLINE_S) == 0, tail(first.log)

    # A genuine checkpoint written by another River version, then a forged one above it.
    store = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY.encode())
    newest = store.latest(0)
    with monkeypatch.context() as patch:
        patch.setattr(river, "__version__", "0.0.1")
        genuine = store.save_checkpoint(
            0, newest.state, newest.offsets, newest.model_version, info=newest.info
        )
    target = tmp_path / "created-by-unpickling"
    forger = KafkaCheckpointStore(kafka_settings, unique_prefix, FORGER_KEY)
    forged = forger.save_checkpoint(
        0, pickle.dumps(_CreatesFile(target)), newest.offsets, newest.model_version
    )
    forger.close()
    assert forged == genuine + 1

    publish_between(kafka_settings, unique_prefix, samples, 1, half, START_TS + 2 * n)
    proc = second.start(argv, env)
    assert proc.wait(timeout=DEADLINE_S) == 0, tail(second.log)
    assert not target.exists()
    text = second.log.read_text()
    assert f"partition 0: checkpoint {forged} (" in text and "signature does not verify" in text
    assert f"partition 0: restored checkpoint {genuine}," in text
    warning = f"checkpoint {genuine} of partition 0 was written with River 0.0.1; this is River "
    assert warning + river.__version__ in text
    [restore] = second.events("restore")
    assert restore["written_by"]["river"] == "0.0.1"

    config = cli_config(argv)
    again = assert_like_an_uninterrupted_run(
        kafka_settings, unique_prefix, store, samples, config, 1
    )
    assert again == {0: 0}
    store.close()
    assert not target.exists()
