"""--model-processes: partitions spread over several model processes answer as one would.

The pool against the in-process model (same requests, same answers), then the worker through
the real broker: 2 partitions in 2 model processes predict what River's own loop predicts,
and a worker killed with -9 and restarted ends in the uninterrupted run's state.
"""

from __future__ import annotations

import signal

import orjson
import pytest

from driftstream.consumers.model_messages import (
    ClosePartitions,
    OpenPartition,
    ProcessBatch,
    Push,
)
from driftstream.consumers.model_pool import ModelPool
from driftstream.consumers.model_process import LocalModel, ModelProcessError
from driftstream.consumers.worker import Worker, WorkerOptions
from driftstream.producers.sources import synthetic
from driftstream.state.checkpoints import StateStore
from driftstream.stream.learner import Learner, LearnerConfig
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
from tests.test_model_process import answers, comparable, requests
from tests.test_worker import river_predictions

# -- the pool, without Kafka -------------------------------------------------------------


def test_a_pool_of_two_processes_answers_as_the_local_model():
    reqs = requests()  # opens partitions 0 and 1, three batches, a snapshot of 1
    local = answers(LocalModel(), reqs)
    pool = ModelPool(2)
    try:
        remote = answers(pool, reqs)
        assert pool.home == {0: 0, 1: 1}  # one partition in each process
        assert len(set(pool.pids)) == 2
    finally:
        pool.close()
    assert [comparable(a) for a in remote] == [comparable(a) for a in local]


def test_partitions_stay_in_their_process_until_closed():
    pool = ModelPool(2, make=LocalModel)

    def open_(p):
        pool.submit(OpenPartition(p, None, LearnerConfig(), ("ev", "lb"), [0, 0], None, 0, 10))
        return pool.collect()

    for p in (0, 1, 2):
        open_(p)
    assert pool.home == {0: 0, 1: 1, 2: 0}
    open_(1)  # a rewind reopens it where it lives (no second copy elsewhere)
    assert pool.home == {0: 0, 1: 1, 2: 0}
    pool.submit(ClosePartitions([0, 2]))
    assert pool.collect() is None
    open_(3)  # the least loaded process now: 0
    assert pool.home == {1: 1, 3: 0}
    pool.submit(ProcessBatch(0))
    assert sorted(pool.collect().progress) == [1, 3]
    assert [sorted(m.host.pipelines) for m in pool.models] == [[3], [1]]


def test_a_failure_in_one_process_is_reported_and_the_pool_stays_in_step():
    pool = ModelPool(2)
    try:
        for p in (0, 1):
            pool.submit(OpenPartition(p, None, LearnerConfig(), ("ev", "lb"), [0, 0], None, 0, 9))
            pool.collect()
        pool.submit(ProcessBatch(0, [Push(0, 7, [])]))  # no input stream 7: fails in process 0
        pool.submit(ProcessBatch(0, want_summary=True))  # in flight behind it
        with pytest.raises(ModelProcessError, match="(?s)Traceback.*Error"):
            pool.collect()
        # The next answer is the next batch's from both processes, not process 1's older one.
        progress = pool.collect().progress
        assert sorted(progress) == [0, 1]
        assert all(progress[p].summary is not None for p in (0, 1))
    finally:
        pool.close()


def test_a_dead_process_of_the_pool_is_reported():
    pool = ModelPool(2)
    try:
        pool.models[1].process.kill()
        with pytest.raises(ModelProcessError, match="exited"):
            pool.submit(ProcessBatch(0))
            pool.collect()
    finally:
        pool.close()


def test_model_processes_needs_the_model_process():
    with pytest.raises(ValueError, match="--model-processes 2"):
        options = WorkerOptions(model_process=False, model_processes=2)
        Worker(None, LearnerConfig(), ":memory:", options)


# -- the worker, through the broker -------------------------------------------------------


@pytest.mark.broker
def test_two_partitions_in_two_model_processes_predict_as_river(
    kafka_settings, unique_prefix, tmp_path, caplog
):
    n = 4000
    samples = list(
        synthetic("sea", n=n, seed=5, drift_at=[2000], label_delay="100", start_ts=1_000_000)
    )
    topics = create_topics(kafka_settings, unique_prefix, 2)
    assert publish(kafka_settings, unique_prefix, samples, 2) == {"events": n, "labels": n}
    worker = Worker(
        kafka_settings,
        LearnerConfig(model="lr", drift_policy="none"),
        str(tmp_path / "s.sqlite"),
        WorkerOptions(
            group=f"{unique_prefix}g",
            topic_prefix=unique_prefix,
            exit_when_idle=1.5,
            checkpoint_every=1000,
            model_processes=2,
        ),
    )
    with caplog.at_level("INFO", logger="driftstream.worker"):
        assert worker.run() == 0

    # Each partition was opened in its own model process.
    homes = {
        r.fields["partition"]: r.fields["model_pid"]
        for r in caplog.records
        if getattr(r, "fields", {}).get("event") == "restore"
    }
    assert sorted(homes) == [0, 1]
    assert len(worker.model_pids) == 2 and set(homes.values()) == set(worker.model_pids)

    served = read_all(kafka_settings, topics["predictions"])
    assert len(served) == n
    for p in (0, 1):
        got = {w["id"]: w["prediction"] for w in served if w["partition"] == p}
        assert got == river_predictions(samples[p::2]), f"partition {p}"


@pytest.fixture(params=CLIENTS)
def any_client(broker, request: pytest.FixtureRequest) -> KafkaSettings:
    """The kill test runs with each Kafka client behind the adapter."""
    return KafkaSettings(broker.bootstrap, fast_group_timeouts=True, client=request.param)


@pytest.mark.broker
@pytest.mark.e2e
def test_kill9_and_restart_with_two_model_processes_gives_the_uninterrupted_result(
    any_client, unique_prefix, tmp_path
):
    kafka_settings = any_client
    n, partitions = 8000, 2
    samples = list(
        synthetic("sea", n, seed=1, drift_at=[4000], label_delay="100", start_ts=START_TS)
    )
    create_topics(kafka_settings, unique_prefix, partitions)
    assert publish(kafka_settings, unique_prefix, samples, partitions) == {"events": n, "labels": n}
    state = tmp_path / "state.sqlite"
    argv = run_argv(
        kafka_settings,
        unique_prefix,
        state,
        "--checkpoint-every",
        "300",
        "--model",
        "lr",
        "--drift-policy",
        "reset",
        "--model-processes",
        "2",
        "--log-format",
        "json",
    )
    per_partition = 2 * n // partitions  # events + labels
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    proc = start_cli(argv, first_log)
    try:
        wait_until(
            lambda: all(progress(state, p) >= 1200 for p in range(partitions)),
            "both partitions checkpointed",
            watch=[(proc, first_log)],
            step=0.005,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE_S)
        left = [progress(state, p) for p in range(partitions)]
        assert any(done < per_partition for done in left), f"killed with no work left: {left}"
        proc = start_cli(argv + ["--exit-when-idle", "2"], second_log)
        assert proc.wait(timeout=DEADLINE_S * 3) == 0, tail(second_log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    for log in (first_log, second_log):
        lines = [orjson.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        pids = next(x["pids"] for x in lines if x.get("event") == "model_processes")
        homes = {x["partition"]: x["model_pid"] for x in lines if x.get("event") == "restore"}
        assert len(set(pids)) == 2 and set(homes.values()) == set(pids), tail(log)
    assert "partition 1: restored checkpoint" in second_log.read_text(), tail(second_log)

    config = cli_config(argv)
    wires = read_all(kafka_settings, topic_names(unique_prefix)["predictions"])
    topics = topic_names(unique_prefix)
    with StateStore(state) as store:
        for p in range(partitions):
            part = samples[p::partitions]
            ref_learner, ref_predictions = reference(part, config, partition=p)
            got, _ = dedupe([w for w in wires if w["partition"] == p])
            assert got == ref_predictions, f"partition {p}"
            checkpoint = store.latest(p)
            assert checkpoint.offsets == {topics["events"]: len(part), topics["labels"]: len(part)}
            final = Learner.from_bytes(checkpoint.state)
            assert Learner.canonical_bytes(final) == Learner.canonical_bytes(ref_learner), p
