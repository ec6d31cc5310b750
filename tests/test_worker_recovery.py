"""Crash recovery of the worker, end to end: CLI worker processes against the real broker.

The worker's promise (DESIGN.md, "Exactly-once effect on state"): after kill -9 at any point
and a restart (or a takeover by another group member), the final state equals that of an
uninterrupted run, and every re-emitted prediction is identical to the first one. Both tests
compare with an in-process reference (`tests.reference`: the same merge and learner).
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from driftstream.producers.sources import synthetic
from driftstream.state.checkpoints import StateStore
from driftstream.stream.learner import Learner
from driftstream.transport import CLIENTS, KafkaSettings, topic_names
from tests.reference import cli_config, dedupe, reference
from tests.support import (
    DEADLINE_S,
    START_TS,
    create_topics,
    progress,
    publish,
    read_all,
    run_argv,
    start_cli,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


@pytest.fixture(params=CLIENTS)
def kafka_settings(broker, request: pytest.FixtureRequest) -> KafkaSettings:
    """Both tests run with each Kafka client behind the adapter (workers get
    ``--kafka-client``; the test's own reads and writes use the same client)."""
    return KafkaSettings(broker.bootstrap, fast_group_timeouts=True, client=request.param)


# -- helpers ---------------------------------------------------------------------------


def worker_argv(
    settings: KafkaSettings,
    prefix: str,
    group: str,
    state: Path,
    checkpoint_every: int,
    exit_when_idle: float | None = None,
) -> list[str]:
    argv = run_argv(
        settings,
        prefix,
        state,
        "--checkpoint-every",
        str(checkpoint_every),
        "--model",
        "lr",
        "--drift-policy",
        "reset",
        "--log-level",
        "INFO",
        group=group,
    )
    if exit_when_idle is not None:
        argv += ["--exit-when-idle", str(exit_when_idle)]
    return argv


def start_worker(argv: list[str], log: Path, kill_at: str | None = None) -> subprocess.Popen:
    return start_cli(argv, log, env=None if kill_at is None else {"DRIFTSTREAM_KILL_AT": kill_at})


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=DEADLINE_S)


ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\]")


def assignment(log: Path) -> tuple[set[int] | None, int]:
    """The worker's newest logged assignment and the log position just after it."""
    text = log.read_text(errors="replace") if log.exists() else ""
    matches = list(ASSIGNED.finditer(text))
    last = matches[-1] if matches else None
    if last is None:
        return None, 0
    return {int(p) for p in last.group(1).split(",") if p.strip()}, last.end()


# -- tests ---------------------------------------------------------------------------


def test_kill9_at_random_moments_gives_the_uninterrupted_result(
    kafka_settings: KafkaSettings, unique_prefix: str, tmp_path: Path
):
    n = 6000
    samples = list(
        synthetic("sea", n, seed=1, drift_at=[3000], label_delay="100", start_ts=START_TS)
    )
    create_topics(kafka_settings, unique_prefix, 1)
    assert publish(kafka_settings, unique_prefix, samples, 1) == {"events": n, "labels": n}
    state = tmp_path / "state.sqlite"
    group = unique_prefix + "group"
    argv = worker_argv(kafka_settings, unique_prefix, group, state, checkpoint_every=300)
    total = 2 * n  # input records: events + labels
    rng = random.Random(20240607)

    runs = ["random", "random", "checkpoint:2", "random", "final"]
    seen = []  # checkpointed progress before each run
    procs: list[subprocess.Popen] = []
    try:
        for i, kind in enumerate(runs):
            log = tmp_path / f"worker-{i}.log"
            before = progress(state, 0)
            seen.append(before)
            if kind == "final":
                procs.append(proc := start_worker(argv + ["--exit-when-idle", "2"], log))
                assert proc.wait(timeout=DEADLINE_S) == 0, tail(log)
            elif kind.startswith("checkpoint:"):
                procs.append(proc := start_worker(argv, log, kill_at=kind))
                assert proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL, tail(log)
            else:
                # Kill once the worker has checkpointed a random amount of progress, then a
                # random moment later (between checkpoints: mid-batch, mid-flush, ...).
                target = min(before + rng.randint(1200, 2400), total - 3000)
                procs.append(proc := start_worker(argv, log))
                wait_until(
                    lambda: progress(state, 0) >= target,
                    f"progress {target}",
                    watch=[(proc, log)],
                    step=0.005,
                )
                time.sleep(rng.uniform(0.0, 0.03))  # a random kill moment, not a synchronisation
                kill9(proc)
            assert progress(state, 0) >= before
            if i:
                assert "partition 0: restored checkpoint" in log.read_text(), tail(log)
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill9(proc)
    print("checkpointed progress before each run:", seen)
    assert seen[-1] < total, "the kills should all have hit the worker mid-stream"
    assert progress(state, 0) == total

    config = cli_config(argv)
    ref_learner, ref_predictions = reference(samples, config)
    assert ref_learner.version.generation >= 1, "the reference should reset on the drift"

    # (a) every event has exactly one distinct prediction, that of the uninterrupted run.
    wires = read_all(kafka_settings, topic_names(unique_prefix)["predictions"])
    got, duplicates = dedupe(wires)
    assert len(got) == n
    assert got == ref_predictions
    assert duplicates > 0, "the kill inside a checkpoint must have re-emitted predictions"

    # (b) the final checkpoint holds exactly the reference learner's state.
    with StateStore(state) as store:
        checkpoint = store.latest(0)
    final = Learner.from_bytes(checkpoint.state)
    assert checkpoint.offsets == {
        topic_names(unique_prefix)["events"]: n,
        topic_names(unique_prefix)["labels"]: n,
    }
    assert Learner.canonical_bytes(final) == Learner.canonical_bytes(ref_learner)

    # (c) no label lost, none learned twice.
    assert final.n_labels == ref_learner.n_labels == n
    assert final.n_events == n and not final.pending


def test_survivor_takes_over_the_partitions_of_a_killed_worker(
    kafka_settings: KafkaSettings, unique_prefix: str, tmp_path: Path
):
    n, partitions = 32000, 4
    samples = list(
        synthetic("sea", n, seed=1, drift_at=[8000], label_delay="100", start_ts=START_TS)
    )
    create_topics(kafka_settings, unique_prefix, partitions)
    assert publish(kafka_settings, unique_prefix, samples, partitions) == {"events": n, "labels": n}
    state = tmp_path / "state.sqlite"
    group = unique_prefix + "group"
    # No --exit-when-idle: the survivor may finish its own partitions before the victim is
    # killed and the group notices; it is stopped (SIGTERM) once everything is checkpointed.
    argv = worker_argv(kafka_settings, unique_prefix, group, state, checkpoint_every=200)
    rng = random.Random(977)

    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    procs = [start_worker(argv, log) for log in logs]
    watched = list(zip(procs, logs))
    try:

        def both_own_partitions() -> bool:
            mine = [assignment(log)[0] for log in logs]
            return all(mine) and not (mine[0] & mine[1])

        wait_until(both_own_partitions, "both workers to own partitions", watch=watched)
        # The victim: the worker with more work left (the first to join may have worked
        # through much of the other's partitions before the rebalance).
        checkpointed = [sum(progress(state, p) for p in assignment(log)[0]) for log in logs]
        victim = 0 if checkpointed[0] < checkpointed[1] else 1
        survivor = 1 - victim
        victim_parts, _ = assignment(logs[victim])
        # Kill early, while the victim still has work: once its partitions have a checkpoint
        # (the survivor's may come later, if it joined later).
        wait_until(
            lambda: all(progress(state, p) for p in victim_parts),
            "checkpoints of the victim's partitions",
            watch=watched,
            step=0.005,
        )
        time.sleep(rng.uniform(0.0, 0.02))  # a random kill moment, not a synchronisation
        kill9(procs[victim])
        left = {p: progress(state, p) for p in victim_parts}
        per_partition = 2 * n // partitions  # events + labels, a multiple of checkpoint_every
        assert any(done < per_partition for done in left.values()), (
            f"the victim should have died with work left: {left}"
        )
        wait_until(
            lambda: all(progress(state, p) == per_partition for p in range(partitions)),
            "every partition checkpointed to its end",
            watch=[watched[survivor]],
        )
        procs[survivor].send_signal(signal.SIGTERM)
        assert procs[survivor].wait(timeout=DEADLINE_S) == 0, tail(logs[survivor])
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill9(proc)

    survivor_log = logs[survivor].read_text()
    assert assignment(logs[survivor])[0] == set(range(partitions)), tail(logs[survivor])
    for p in victim_parts:
        assert f"partition {p}: restored checkpoint" in survivor_log, tail(logs[survivor])

    config = cli_config(argv)
    wires = read_all(kafka_settings, topic_names(unique_prefix)["predictions"])
    topics = topic_names(unique_prefix)
    with StateStore(state) as store:
        assert store.partitions() == list(range(partitions))
        for p in range(partitions):
            part_samples = samples[p::partitions]
            ref_learner, ref_predictions = reference(part_samples, config, partition=p)
            got, _ = dedupe([w for w in wires if w["partition"] == p])
            assert got == ref_predictions, f"partition {p}"
            checkpoint = store.latest(p)
            assert checkpoint.offsets == {
                topics["events"]: len(part_samples),
                topics["labels"]: len(part_samples),
            }
            final = Learner.from_bytes(checkpoint.state)
            assert final.n_labels == ref_learner.n_labels == len(part_samples), f"partition {p}"
            assert Learner.canonical_bytes(final) == Learner.canonical_bytes(ref_learner), (
                f"partition {p}"
            )
