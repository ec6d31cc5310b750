"""The worker against the real embedded broker: same predictions as River, bad input, drift."""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import pickle

import pytest
from river import stream as river_stream

from driftstream.consumers import reader
from driftstream.consumers.worker import Worker, WorkerOptions
from driftstream.demo import DemoOptions, run_demo
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import river_delay, synthetic
from driftstream.state.checkpoints import StateStore
from driftstream.state.sqlite_store import SqliteCheckpointStore
from driftstream.state.store import open_store
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.models import build_model
from driftstream.stream.records import MAX_RAW_BYTES
from driftstream.transport import Admin, Producer, TopicError, topic_names
from tests.support import create_topics, read_all, wait_until

pytestmark = pytest.mark.broker


def run_worker(
    settings, prefix: str, state, config: LearnerConfig, model_process: bool = True
) -> Worker:
    worker = Worker(
        settings,
        config,
        str(state),
        WorkerOptions(
            group=f"{prefix}g",
            topic_prefix=prefix,
            exit_when_idle=1.5,
            checkpoint_every=1000,
            model_process=model_process,
        ),
    )
    assert worker.run() == 0
    return worker


def river_predictions(samples) -> dict:
    """What River's own prequential loop predicts for each event (lr, same label delays)."""
    dataset, moment, delay = river_delay(samples)
    model = build_model("lr")
    expected = {}
    for i, x, y in river_stream.simulate_qa(dataset, moment, delay):
        if y is None:
            expected[samples[i].id] = model.predict_one(x)
        else:
            model.learn_one(x, y)
    return expected


@pytest.mark.parametrize("model_process", [True, False], ids=["model-process", "in-process"])
def test_predictions_equal_simulate_qa(kafka_settings, unique_prefix, tmp_path, model_process):
    samples = list(
        synthetic("sea", n=4000, seed=5, drift_at=[2000], label_delay="100", start_ts=1_000_000)
    )
    topics = create_topics(kafka_settings, unique_prefix)
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, samples)
    publisher.close()

    run_worker(
        kafka_settings,
        unique_prefix,
        tmp_path / "s.sqlite",
        LearnerConfig(model="lr", drift_policy="none"),
        model_process,
    )

    served = {p["id"]: p["prediction"] for p in read_all(kafka_settings, topics["predictions"])}
    expected = river_predictions(samples)
    assert len(served) == len(samples)
    assert served == expected


def test_bad_input_goes_to_deadletter_once(kafka_settings, unique_prefix, tmp_path):
    topics = create_topics(kafka_settings, unique_prefix)
    good = list(synthetic("sea", n=600, seed=1, label_delay="10", start_ts=0))
    bad_events = [
        b"\xff\xfe garbage",
        b"[1, 2, 3]",
        b'{"features": {"a": 1}}',
        b'{"id": "b1", "features": {"a": [1]}}',
        b'{"id": "b2", "features": {"a": NaN}}',
        b'{"id": 7, "features": {}}',
        b"",
        b'{"id": "b3", "features": {"a": 1}, "ts": 150000000}',
    ]  # 1.7 days ahead
    bad_labels = [
        b"not json",
        b'{"id": "nobody", "label": true, "ts": -5000}',
        b'{"id": "e5", "label": true, "ts": 200}',  # duplicate: e5 is labelled at 15
        b'{"id": "e6", "label": {"x": 1}, "ts": 200}',
        b'{"label": false}',
    ]
    expected_reasons = sorted(
        [
            "not_json",
            "not_object",
            "missing_id",
            "wrong_type",
            "non_finite",
            "bad_id",
            "empty",
            "bad_timestamp",
            "not_json",
            "unknown_id",
            "duplicate_label",
            "wrong_label_type",
            "missing_id",
        ]
    )
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, good[:300])
    raw = Producer(kafka_settings)
    for value in bad_events:
        raw.send(topics["events"], value, partition=0, timestamp_ms=150)
    for value in bad_labels:
        raw.send(topics["labels"], value, partition=0, timestamp_ms=150)
    raw.flush()
    publish_samples(publisher, good[300:])
    publisher.close()
    raw.close()

    run_worker(
        kafka_settings,
        unique_prefix,
        tmp_path / "s.sqlite",
        LearnerConfig(model="lr", drift_policy="none", data_drift=False),
    )

    dead = read_all(kafka_settings, topics["deadletter"])
    assert sorted(d["reason"] for d in dead) == expected_reasons
    assert len({(d["source"]["topic"], d["source"]["offset"]) for d in dead}) == len(dead)
    assert all(d["detail"] for d in dead)
    predictions = read_all(kafka_settings, topics["predictions"])
    assert sorted(p["id"] for p in predictions) == sorted(s.id for s in good)
    store = StateStore(str(tmp_path / "s.sqlite"))
    learner = Learner.from_bytes(store.latest(0).state)
    store.close()
    assert learner.n_events == len(good) and learner.n_labels == len(good)
    assert sum(learner.rejected.values()) == len(dead)


def test_a_bad_record_near_the_size_limit_is_dead_lettered_and_the_stream_goes_on(
    kafka_settings, unique_prefix, tmp_path
):
    """Its dead letter (raw bytes in base64) would exceed Kafka's 1 MB message limit whole;
    it used to fail every send, the partition going back to its checkpoint for good."""
    topics = create_topics(kafka_settings, unique_prefix)
    good = list(synthetic("sea", n=300, seed=1, label_delay="10", start_ts=0))
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, good[:150])
    raw = Producer(kafka_settings)
    raw.send(topics["events"], b"x" * 900_000, partition=0, timestamp_ms=150)
    raw.flush()
    raw.close()
    publish_samples(publisher, good[150:])
    publisher.close()

    run_worker(
        kafka_settings,
        unique_prefix,
        tmp_path / "s.sqlite",
        LearnerConfig(model="lr", drift_policy="none", data_drift=False),
    )

    [dead] = read_all(kafka_settings, topics["deadletter"])
    assert dead["reason"] == "not_json" and dead["raw_bytes"] == 900_000
    assert base64.b64decode(dead["raw"]) == b"x" * MAX_RAW_BYTES
    predictions = read_all(kafka_settings, topics["predictions"])
    assert sorted(p["id"] for p in predictions) == sorted(s.id for s in good)


def test_missing_output_topics_stop_the_worker_at_start_with_their_names(
    kafka_settings, unique_prefix, tmp_path
):
    """Not a wait on metadata, nor (Tansu, or Kafka's auto-create) topics of another layout."""
    topics = topic_names(unique_prefix)
    Admin(kafka_settings).create_topics(
        [topics["events"], topics["labels"], topics["predictions"], topics["metrics"]], 1
    )
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, list(synthetic("sea", n=50, seed=1, label_delay="5")))
    publisher.close()
    worker = Worker(
        kafka_settings,
        LearnerConfig(model="lr"),
        str(tmp_path / "s.sqlite"),
        WorkerOptions(group=f"{unique_prefix}g", topic_prefix=unique_prefix, exit_when_idle=1.5),
    )
    with pytest.raises(
        TopicError,
        match=r"output topics \[.*deadletter.*drift.*\] do not "
        "exist; create them first",
    ):
        worker.run()
    assert reader.read_topic(kafka_settings, topics["predictions"]) == []


def test_demo_detects_the_drift(kafka_settings, tmp_path):
    out = io.StringIO()
    summary = run_demo(
        DemoOptions(
            n=8000,
            drift_at=4000,
            state=str(tmp_path / "d.sqlite"),
            plot=str(tmp_path / "demo.png"),
            report=str(tmp_path / "demo-report.html"),
        ),
        kafka_settings,
        out,
    )
    assert summary["predictions"] == 8000
    assert summary["detection_delay"] is not None and summary["detection_delay"] < 3000
    assert summary["replay_first_mismatch"] is None and summary["replayed"] == 8000
    assert "all 8000 served predictions reproduced exactly" in out.getvalue()
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_checkpoint_retention_and_model_versions(kafka_settings, unique_prefix, tmp_path):
    create_topics(kafka_settings, unique_prefix)
    samples = list(synthetic("sea", n=6000, seed=2, label_delay="20", start_ts=0))
    # Labels flip at 3000: the window policy must replace the model at least once.
    samples = [s if i < 3000 else dataclasses.replace(s, y=not s.y) for i, s in enumerate(samples)]
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, samples)
    publisher.close()
    state = tmp_path / "s.sqlite"
    worker = Worker(
        kafka_settings,
        LearnerConfig(model="lr", drift_policy="window"),
        str(state),
        WorkerOptions(
            group=f"{unique_prefix}g",
            topic_prefix=unique_prefix,
            exit_when_idle=1.5,
            checkpoint_every=400,
            keep_checkpoints=2,
        ),
    )
    assert worker.run() == 0
    store = StateStore(str(state))
    kept = store.checkpoints(0)
    versions = store.model_versions(0)
    final = store.latest(0)
    store.close()
    assert final.version >= 20  # about 12000 records / 400
    generations = {c["generation"] for c in kept}
    assert len(kept) <= 2 + len(generations)
    assert final.generation >= 1
    assert [v["generation"] for v in versions] == list(range(1, final.generation + 1))
    assert all(v["reason"].startswith("retrained") for v in versions)


def test_restored_state_keeps_its_configuration(kafka_settings, unique_prefix, tmp_path, caplog):
    create_topics(kafka_settings, unique_prefix)
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, synthetic("sea", n=500, seed=1, label_delay="10", start_ts=0))
    publisher.close()
    state = tmp_path / "s.sqlite"
    run_worker(kafka_settings, unique_prefix, state, LearnerConfig(model="lr"))
    run_worker(kafka_settings, unique_prefix, state, LearnerConfig(model="gnb"))
    assert "its checkpoint was made with model 'lr'" in caplog.text
    with StateStore(str(state)) as store:
        assert Learner.from_bytes(store.latest(0).state).config.model == "lr"


class _CreatesFile:
    """Unpickling this opens (creates) a file: what a planted checkpoint would carry."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_state_the_allow_list_refuses_is_skipped_for_the_checkpoint_before(
    kafka_settings, unique_prefix, tmp_path, caplog
):
    """The second wall, in the worker: a checkpoint that verifies (here an SQLite file without
    a key) still cannot run code, because the model process unpickles through the allow-list;
    the worker logs the refusal and restores the checkpoint before it."""
    create_topics(kafka_settings, unique_prefix)
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, synthetic("sea", n=300, seed=2, label_delay="10", start_ts=0))
    publisher.close()
    state = tmp_path / "s.sqlite"
    run_worker(kafka_settings, unique_prefix, state, LearnerConfig(model="lr"))
    target = tmp_path / "created-by-unpickling"
    with open_store(str(state)) as store:
        genuine = store.latest(0)
        planted = store.save_checkpoint(
            0, pickle.dumps(_CreatesFile(target)), genuine.offsets, genuine.model_version
        )
    with caplog.at_level(logging.INFO, logger="driftstream.worker"):
        run_worker(kafka_settings, unique_prefix, state, LearnerConfig(model="lr"))
    assert not target.exists()
    assert f"partition 0: checkpoint {planted} refused when unpickled (ForbiddenPickle" in (
        caplog.text
    )
    assert f"partition 0: restored checkpoint {genuine.version}," in caplog.text
    # It went on from there: nothing was predicted twice.
    assert len(read_all(kafka_settings, topic_names(unique_prefix)["predictions"])) == 300


def test_paused_inputs_resume_and_finish(kafka_settings, unique_prefix, tmp_path, monkeypatch):
    """A small queue bound makes the worker pause and resume the labels input.

    With kafka-python 3.0.12 alone this stalled for good at the first resume (records fetched
    while paused were parked and never handed back); `Consumer.poll` works around it.
    """
    import driftstream.consumers.flow_control as flow_control

    monkeypatch.setattr(flow_control, "PAUSE_ABOVE", 2000)
    monkeypatch.setattr(flow_control, "RESUME_BELOW", 500)
    topics = create_topics(kafka_settings, unique_prefix)
    samples = list(synthetic("sea", n=20000, seed=4, label_delay="100", start_ts=0))
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, samples)
    publisher.close()
    run_worker(
        kafka_settings,
        unique_prefix,
        tmp_path / "s.sqlite",
        LearnerConfig(model="lr", drift_policy="none", data_drift=False),
    )
    served = {p["id"] for p in read_all(kafka_settings, topics["predictions"])}
    assert served == {s.id for s in samples}


def test_checkpoints_written_by_a_fork_are_saved_whole(
    kafka_settings, unique_prefix, tmp_path, monkeypatch, ended_pid
):
    """Every periodic state forked off (limit 1 pending join): same predictions as River,
    each saved state reflects exactly its offsets, and no state file is left behind, not even
    one that a killed worker's model process left before this worker started."""
    monkeypatch.setattr("driftstream.consumers.model_process.FORK_STATE_ABOVE", 1)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spool))
    (spool / f"driftstream-state-pid{ended_pid}-0-left.pickle").write_bytes(b"old")
    from driftstream.consumers.checkpointing import Checkpointer

    from_files = []  # checkpoints saved from a state file
    checkpoint = Checkpointer.save

    def spy(checkpointer, task, snap):
        saved = checkpoint(checkpointer, task, snap)
        if saved and snap.state_file is not None:
            from_files.append(snap.state_file)
        return saved

    monkeypatch.setattr(Checkpointer, "save", spy)
    samples = list(synthetic("sea", n=4000, seed=8, label_delay="100", start_ts=1_000_000))
    topics = create_topics(kafka_settings, unique_prefix)
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, samples)
    publisher.close()
    state = tmp_path / "s.sqlite"
    run_worker(kafka_settings, unique_prefix, state, LearnerConfig(model="lr", drift_policy="none"))

    served = {p["id"]: p["prediction"] for p in read_all(kafka_settings, topics["predictions"])}
    expected = river_predictions(samples)
    assert served == expected
    with StateStore(state) as store:
        saved = store.checkpoints(0)
        assert len(saved) >= 2
        for meta in saved:
            cp = store.get(0, meta["version"])
            learner = Learner.from_bytes(cp.state)
            assert learner.n_events == cp.offsets[topics["events"]]
            assert learner.n_labels == cp.offsets[topics["labels"]]
    assert from_files  # some (not all: postponed or superseded by a newer one)
    assert not list(spool.iterdir())


def test_a_probe_sees_every_poll_and_every_answer(kafka_settings, unique_prefix, tmp_path):
    """The worker's public hooks: every record polled, every prediction in an answer before
    it is sent, and the model process's batch times on the poll's clock."""
    from driftstream.consumers.probe import WorkerProbe
    from driftstream.stream.outputs import Predictions

    class Recording(WorkerProbe):
        def __init__(self):
            self.polled_records, self.predicted, self.times = 0, set(), []

        def polled(self, batches, at):
            self.polled_records += sum(len(records) for records in batches.values())

        def answered(self, answer, polled_at):
            self.times.append((polled_at, answer.started, answer.finished))
            for progress in answer.progress.values():
                for output in progress.outputs:
                    if isinstance(output, Predictions):
                        self.predicted.update(row[0] for row in output.rows)

    samples = list(synthetic("sea", n=400, seed=3, label_delay="20", start_ts=0))
    create_topics(kafka_settings, unique_prefix)
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, samples)
    publisher.close()
    probe = Recording()
    worker = Worker(
        kafka_settings,
        LearnerConfig(model="lr"),
        str(tmp_path / "s.sqlite"),
        WorkerOptions(group=f"{unique_prefix}g", topic_prefix=unique_prefix, exit_when_idle=1.5),
        probe=probe,
    )
    assert worker.run() == 0
    assert probe.polled_records >= 2 * len(samples)  # more only if a rebalance re-read some
    assert probe.predicted == {s.id for s in samples}
    assert probe.times and all(polled <= start <= end for polled, start, end in probe.times)


def test_a_state_file_that_cannot_be_read_fails_that_checkpoint_only(tmp_path, monkeypatch, caplog):
    """A forked state file removed before the worker read it (a temporary-file cleaner, say)
    is logged as a failed checkpoint (the next one will be saved), not raised."""
    from driftstream.consumers.partition_task import PartitionTask
    from driftstream.stream.outputs import StateSnapshot
    from driftstream.stream.records import ModelVersion
    from driftstream.transport import KafkaSettings

    worker = Worker(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"), LearnerConfig(), str(tmp_path / "s.sqlite")
    )
    saved = []
    checkpoints = worker.checkpoints
    monkeypatch.setattr(checkpoints, "save", lambda task, snap: saved.append(snap))
    worker.tasks[0] = task = PartitionTask(0, [10, 5], {}, ModelVersion(0, 10))
    for name in ("gone", "written"):
        path = str(tmp_path / f"driftstream-state-pid1-0-{name}.pickle")
        snap = StateSnapshot("periodic", None, [10, 5], ModelVersion(0, 10), {}, state_file=path)
        assert checkpoints.take(task, snap)  # saved once its file is written
    assert saved == []
    (tmp_path / "driftstream-state-pid1-0-written.pickle").write_bytes(b"state")
    checkpoints.state_written(str(tmp_path / "driftstream-state-pid1-0-gone.pickle"), None)
    assert saved == [] and "its file could not be read" in caplog.text
    checkpoints.state_written(str(tmp_path / "driftstream-state-pid1-0-written.pickle"), None)
    assert [snap.state for snap in saved] == [b"state"]
    assert not list(tmp_path.glob("driftstream-state-*"))
    worker.store.close()


def test_a_commit_the_broker_never_answers_is_an_outage_at_once(tmp_path):
    """The broker going away during the commit after a checkpoint (kafka-python then blocks
    for its request timeout) is an outage as soon as the commit fails: an idle worker with
    ``--exit-when-idle`` must not take the silence after it for idleness and exit clean.
    A commit refused for another reason stays a warning (offsets are only a hint)."""
    from kafka.errors import CommitFailedError, KafkaTimeoutError

    from driftstream.transport import KafkaSettings

    class Coordinator:
        def __init__(self, error):
            self.error = error

        def connected(self):
            return True

        def commit(self, offsets):
            raise self.error

    worker = Worker(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"), LearnerConfig(), str(tmp_path / "s.sqlite")
    )
    worker.kafka.consumer = Coordinator(CommitFailedError("rebalancing"))
    worker.checkpoints._commit(0, {"events": 5, "labels": 4})
    assert worker.outage.ok
    worker.kafka.consumer = Coordinator(KafkaTimeoutError("no answer"))
    worker.checkpoints._commit(0, {"events": 5, "labels": 4})
    assert not worker.outage.kafka_ok and worker.outage.needs_rewind
    assert "offsets not committed: KafkaTimeoutError" in worker.outage.reason
    worker.store.close()


def test_predictions_go_on_while_a_periodic_checkpoint_is_being_written(
    kafka_settings, unique_prefix, tmp_path
):
    """The store's write of a periodic checkpoint runs beside the loop, which keeps sending.

    The first save waits, inside the store, until predictions for events past the ones the
    checkpoint reflects are on the topic; written on the loop's thread, none could be sent
    meanwhile and the wait would reach its deadline."""
    topics = create_topics(kafka_settings, unique_prefix)
    samples = list(synthetic("sea", n=3000, seed=3, label_delay="10", start_ts=0))
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(publisher, samples)
    publisher.close()
    seen_meanwhile: list[int] = []

    class GatedStore(SqliteCheckpointStore):
        def save_checkpoint(self, partition, state, offsets, *args, **kwargs):
            if not seen_meanwhile:
                scored = offsets[topics["events"]]
                try:
                    wait_until(
                        lambda: len(read_all(kafka_settings, topics["predictions"])) > scored,
                        "predictions past the checkpoint, sent during its write",
                        timeout=20,
                        step=0.1,
                    )
                    seen_meanwhile.append(len(read_all(kafka_settings, topics["predictions"])))
                except AssertionError:
                    seen_meanwhile.append(-1)
                seen_meanwhile.append(scored)
            return super().save_checkpoint(partition, state, offsets, *args, **kwargs)

    worker = Worker(
        kafka_settings,
        LearnerConfig(model="lr", drift_policy="none", data_drift=False),
        GatedStore(tmp_path / "s.sqlite"),
        WorkerOptions(
            group=f"{unique_prefix}g",
            topic_prefix=unique_prefix,
            exit_when_idle=1.5,
            checkpoint_every=1000,
        ),
    )
    assert worker.run() == 0
    sent, scored = seen_meanwhile
    assert sent > scored > 0, (sent, scored)
    assert len(read_all(kafka_settings, topics["predictions"])) == len(samples)
