"""Replay, explain and republish against a real run on the embedded broker."""

from __future__ import annotations

import dataclasses
import signal

import orjson
import pandas as pd
import pytest
from kafka.errors import KafkaTimeoutError

from driftstream.cli import main
from driftstream.consumers.reader import read_range
from driftstream.consumers.worker import Worker, WorkerOptions
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import synthetic
from driftstream.state.checkpoints import StateStore
from driftstream.stream.learner import LearnerConfig
from driftstream.transport import CLIENTS, Admin, Producer, topic_names
from tests.support import create_topics, publish, run_argv, start_cli, tail, wait_until

pytestmark = pytest.mark.broker


@pytest.fixture(params=CLIENTS)
def live_run(kafka_settings, unique_prefix, tmp_path, request):
    """A finished 2-partition run with a sudden drift, window policy, frequent checkpoints;
    once with each Kafka client (the worker's, and the commands' run on it)."""
    kafka_settings = dataclasses.replace(kafka_settings, client=request.param)
    create_topics(kafka_settings, unique_prefix, 2)
    publish(
        kafka_settings,
        unique_prefix,
        synthetic("sea", n=8000, seed=3, drift_at=[4000], label_delay="100", start_ts=0),
        partitions=2,
    )
    state = str(tmp_path / "state.sqlite")
    worker = Worker(
        kafka_settings,
        LearnerConfig(model="lr", drift_policy="window"),
        state,
        WorkerOptions(
            group=f"{unique_prefix}g",
            topic_prefix=unique_prefix,
            exit_when_idle=1.5,
            checkpoint_every=1000,
        ),
    )
    assert worker.run() == 0
    return kafka_settings, unique_prefix, state, tmp_path


def cli(settings, prefix, *args) -> int:
    return main(
        [
            *args,
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            prefix,
            "--kafka-client",
            settings.client,
        ]
    )


def replay(settings, prefix, state, partition: int, *args) -> int:
    """`driftstream replay` of one partition (no report or plot unless ``args`` ask)."""
    return cli(settings, prefix, "replay", "--partition", str(partition), "--state", state, *args)


def test_replay_verify_reproduces_every_prediction(live_run, capsys):
    settings, prefix, state, tmp = live_run
    with StateStore(state) as store:
        assert any(d["record"]["kind"] == "concept" for d in store.drift_log())
    for p in (0, 1):
        out = str(tmp / f"p{p}.csv")
        plot = str(tmp / f"p{p}.png")
        assert replay(settings, prefix, state, p, "--verify", "--out", out, "--plot", plot) == 0
        assert "verified: all 4000 replayed predictions" in capsys.readouterr().out
        assert (tmp / f"p{p}.png").stat().st_size > 10_000
        frame = pd.read_csv(out)
        assert len(frame) == 4000 and frame["match"].all()
        assert (frame["drift"].fillna("") != "").any()

    # A middle range starts from an intermediate checkpoint and still matches exactly.
    middle = ("--from-offset", "2500", "--to-offset", "3200", "--out", str(tmp / "mid.parquet"))
    assert replay(settings, prefix, state, 0, "--verify", *middle) == 0
    text = capsys.readouterr().out
    assert "from checkpoint" in text and "verified: all 700 replayed predictions" in text


def test_verify_fails_on_a_tampered_prediction(live_run, capsys):
    settings, prefix, state, _ = live_run
    topics = topic_names(prefix)
    served = [orjson.loads(r.value) for r in read_range(settings, topics["predictions"], 1)]
    # Same inputs under another prefix, with a predictions topic where one served value lies.
    tampered = prefix + "t."
    create_topics(settings, tampered, 2)
    for role in ("events", "labels"):
        assert (
            cli(
                settings,
                prefix,
                "republish",
                "--from-topic",
                topics[role],
                "--to-topic",
                topic_names(tampered)[role],
            )
            == 0
        )
    producer = Producer(settings)
    for i, p in enumerate(served):
        if i == 123:
            p = {**p, "prediction": not p["prediction"]}
        producer.send(topic_names(tampered)["predictions"], orjson.dumps(p), partition=1)
    producer.flush()
    producer.close()
    capsys.readouterr()
    assert replay(settings, tampered, state, 1, "--verify") == 1
    err = capsys.readouterr().err
    assert f"MISMATCH at event {served[123]['id']}" in err


def test_republish_keeps_keys_timestamps_and_partitions(live_run):
    settings, prefix, _, _ = live_run
    topics = topic_names(prefix)
    copy = prefix + "copy."
    Admin(settings).create_topics([copy + "events"], 2)
    assert (
        cli(
            settings,
            prefix,
            "republish",
            "--from-topic",
            topics["events"],
            "--to-topic",
            copy + "events",
            "--from-offset",
            "10",
            "--to-offset",
            "50",
        )
        == 0
    )
    for p in (0, 1):
        original = read_range(settings, topics["events"], p, 10, 50)
        copied = read_range(settings, copy + "events", p)
        assert [(r.key, r.value, r.timestamp) for r in copied] == [
            (r.key, r.value, r.timestamp) for r in original
        ]


def test_republish_copies_big_records_and_headers(kafka_settings, unique_prefix):
    """The source broker took it, so the copy must not stop at kafka-python's 1 MB default;
    headers (the kafka: checkpoint store's chunks carry theirs there) are copied too."""
    source, target = unique_prefix + "big", unique_prefix + "big.copy"
    Admin(kafka_settings).create_topics([source, target], 1)
    producer = Producer(kafka_settings, max_request_size=4 << 20)
    values = [b"small", b"y" * 1_500_000, b"after"]
    headers = [[], [("chunk", b"0"), ("sha256", b"ab")], [("chunk", b"1")]]
    for value, header in zip(values, headers):
        producer.send(source, value, partition=0, headers=header)
    producer.flush()
    producer.close()
    assert cli(kafka_settings, "", "republish", "--from-topic", source, "--to-topic", target) == 0
    copied = read_range(kafka_settings, target, 0)
    assert [(r.value, r.headers) for r in copied] == list(zip(values, headers))


def test_a_kafka_error_mid_command_is_one_line(monkeypatch, capsys):
    from driftstream.consumers import republish

    def broker_gone(*args, **kwargs):
        raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")

    monkeypatch.setattr(republish, "republish", broker_gone)
    assert (
        main(
            [
                "republish",
                "--from-topic",
                "a",
                "--to-topic",
                "b",
                "--bootstrap-servers",
                "127.0.0.1:9",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "driftstream republish: error: KafkaTimeoutError: Failed to update metadata "
        "after 60.0 secs."
    ]


def test_replay_with_another_policy_compares(live_run, capsys):
    settings, prefix, state, tmp = live_run
    with StateStore(state) as store:
        acted = [p for p in (0, 1) if store.latest(p).generation > 0]
    assert acted, "the live window policy must have replaced a model in some partition"
    other = ("--model", "lr", "--drift-policy", "none", "--json", "--out", str(tmp / "none.csv"))
    assert replay(settings, prefix, state, acted[0], *other) == 0
    s = orjson.loads(capsys.readouterr().out)
    assert s["policy"] == "none" and s["events"] == 4000
    assert s["live"] is not None and s["replay"] is not None
    assert s["live_detections"] >= 1 and s["replay_detections"] >= 1
    assert s["mismatches"] > 0  # the live run used `window`, which acted on the drift


def test_explain_before_and_after_a_crash(kafka_settings, unique_prefix, tmp_path, capsys):
    topics = create_topics(kafka_settings, unique_prefix)
    publish(
        kafka_settings,
        unique_prefix,
        synthetic("sea", n=3000, seed=9, drift_at=[1500], label_delay="50", start_ts=0),
    )
    state = str(tmp_path / "s.sqlite")
    argv = run_argv(
        kafka_settings,
        unique_prefix,
        state,
        "--checkpoint-every",
        "500",
        "--log-level",
        "WARNING",
    )
    log = tmp_path / "worker.log"
    crashed = start_cli(argv, log, env={"DRIFTSTREAM_KILL_AT": "checkpoint:4"})
    assert crashed.wait(timeout=120) == -signal.SIGKILL, tail(log)
    with StateStore(state) as store:
        before_crash = store.latest(0).offsets[topics["events"]]
    assert 0 < before_crash < 3000
    resumed = start_cli([*argv, "--exit-when-idle", "1.5"], log)
    assert resumed.wait(timeout=120) == 0, tail(log)
    capsys.readouterr()
    for event_id in ("e10", f"e{before_crash - 3}", f"e{before_crash + 300}", "e2990"):
        assert cli(kafka_settings, unique_prefix, "explain", event_id, "--state", state) == 0
        text = capsys.readouterr().out
        assert "MATCHES EXACTLY" in text and f"event {event_id} " in text


def test_replay_follows_the_live_order_when_labels_came_late(
    kafka_settings, unique_prefix, tmp_path, capsys
):
    """A caught-up worker scores events at once; labels that reach it afterwards with earlier
    times are processed late. Replay must follow that order, not event time, to reproduce
    what was served."""
    topics = create_topics(kafka_settings, unique_prefix)
    samples = list(synthetic("sea", n=600, seed=5, label_delay="0", start_ts=0))
    publisher = EventPublisher(kafka_settings, unique_prefix)
    for s in samples[:300]:
        publisher.publish_event(s.id, s.x, ts=s.ts)
    publisher.flush()
    state = str(tmp_path / "s.sqlite")
    argv = run_argv(
        kafka_settings, unique_prefix, state, "--log-level", "WARNING", "--exit-when-idle", "5"
    )
    log = tmp_path / "worker.log"
    worker = start_cli(argv, log)
    try:
        wait_until(
            lambda: len(read_range(kafka_settings, topics["predictions"], 0)) >= 300,
            "the first 300 events to be scored",
            watch=[(worker, log)],
            step=0.2,
        )
        for s in samples[:300]:  # their labels, all older than the last event scored
            publisher.publish_label(s.id, s.y, ts=s.label_ts)
        publisher.flush()
        publish_samples(publisher, samples[300:])
        publisher.close()
        assert worker.wait(timeout=120) == 0, tail(log)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    served = [orjson.loads(r.value) for r in read_range(kafka_settings, topics["predictions"], 0)]
    assert len(served) == 600
    assert served[299]["model"]["updates"] == 0 and served[299]["labels_offset"] == 0
    assert served[599]["labels_offset"] >= 300 and served[599]["model"]["updates"] >= 300
    capsys.readouterr()
    assert cli(kafka_settings, unique_prefix, "status", "--state", state, "--json") == 0
    [row] = orjson.loads(capsys.readouterr().out)
    assert row["late"] >= 300 and row["events_lag"] == row["labels_lag"] == 0
    assert cli(kafka_settings, unique_prefix, "status", "--state", state) == 0
    header, line, data_line = capsys.readouterr().out.splitlines()
    assert data_line.startswith("   0 data drift: 0 checks")  # 600 events: reference not full
    assert line.split()[header.split().index("late") - 2] == str(row["late"])
    capsys.readouterr()
    assert replay(kafka_settings, unique_prefix, state, 0, "--verify") == 0
    assert "verified: all 600 replayed predictions" in capsys.readouterr().out
    for event_id in ("e1", "e299", "e450"):
        assert cli(kafka_settings, unique_prefix, "explain", event_id, "--state", state) == 0
        assert "MATCHES EXACTLY" in capsys.readouterr().out


def test_replay_verify_reproduces_a_run_whose_policy_acted_on_act_when_and_data_drift(
    kafka_settings, unique_prefix, tmp_path, capsys
):
    """Acting triggers change the model mid-stream; checkpoints carry their state (the
    act_when window, the data monitor's reference), so replay from any of them agrees."""
    create_topics(kafka_settings, unique_prefix)
    publish(
        kafka_settings,
        unique_prefix,
        synthetic("agrawal", n=4000, seed=3, drift_at=[2000], label_delay="100", start_ts=0),
    )
    state = str(tmp_path / "state.sqlite")
    config = LearnerConfig(
        model="ht",
        drift_policy="reset",
        act_when="accuracy<0.8",
        act_when_labels=300,
        act_on_data_drift=True,
        data_reference_size=500,
        data_window=500,
        data_check_every=250,
    )
    options = WorkerOptions(
        group=f"{unique_prefix}g",
        topic_prefix=unique_prefix,
        exit_when_idle=1.5,
        checkpoint_every=700,
    )
    assert Worker(kafka_settings, config, state, options).run() == 0
    with StateStore(state) as store:
        drifts = [d["record"] for d in store.drift_log(0)]
    acted = [d for d in drifts if d["model_after"] != d["model_before"]]
    assert any(d["detector"].get("trigger") == "act_when" for d in acted if "detector" in d)
    capsys.readouterr()
    assert replay(kafka_settings, unique_prefix, state, 0, "--verify") == 0
    assert "verified: all 4000 replayed predictions" in capsys.readouterr().out
    middle = ("--from-offset", "2500", "--to-offset", "3300")
    assert replay(kafka_settings, unique_prefix, state, 0, "--verify", *middle) == 0
    text = capsys.readouterr().out
    assert "from checkpoint" in text and "verified: all 800 replayed predictions" in text

    assert cli(kafka_settings, unique_prefix, "status", "--state", state, "--json") == 0
    [row] = orjson.loads(capsys.readouterr().out)
    with StateStore(state) as store:  # what the newest checkpoint says, as the learner said it
        assert row["data_drift"] == orjson.loads(orjson.dumps(store.latest(0).info["data_drift"]))
    assert row["data_drift"]["n_seen"] == 4000 and "latest" in row["data_drift"]
    assert cli(kafka_settings, unique_prefix, "status", "--state", state) == 0
    data_line = capsys.readouterr().out.splitlines()[2]
    checks = row["data_drift"]["checks"]
    assert data_line.startswith(f"   0 data drift: {checks} checks, ") and checks >= 10
    assert cli(kafka_settings, unique_prefix, "explain", "e2990", "--state", state) == 0
    text = capsys.readouterr().out
    assert "MATCHES EXACTLY" in text and "data drift when it was scored: " in text
