"""A bad label and re-sent events, through Kafka: dead-lettered, and nothing else changes.

Found as a new user: a string label for a binary model used to be joined first (metrics and
ADWIN polluted, then ``model_error``) and the true label after it was refused as
``duplicate_label``; an event re-sent by an at-least-once producer was scored twice.
"""

from __future__ import annotations

import base64

import orjson
import pytest
from river import stream as river_stream

from driftstream.consumers.worker import Worker, WorkerOptions
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import river_delay, synthetic
from driftstream.state.checkpoints import StateStore
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.models import build_model
from tests.support import create_topics, read_all

pytestmark = pytest.mark.broker

BAD_LABEL = "e150"  # gets a string label just before its true one
RESENT_PENDING = "e200"  # re-sent right after itself, while it waits for its label
RESENT_JOINED = "e100"  # re-sent long after its label was joined


class _Retrying:
    """An `EventPublisher` that also sends what a careless or retrying producer would."""

    def __init__(self, publisher: EventPublisher, samples):
        self.publisher = publisher
        self.by_id = {s.id: s for s in samples}

    def publish_event(self, event_id, features, ts, partition=None):
        if event_id == "e400":  # e100 was labelled at ~110: a late retry of it
            first = self.by_id[RESENT_JOINED]
            self.publisher.publish_event(first.id, first.x, ts=first.ts)
        self.publisher.publish_event(event_id, features, ts=ts, partition=partition)
        if event_id == RESENT_PENDING:
            self.publisher.publish_event(event_id, features, ts=ts, partition=partition)

    def publish_label(self, label_id, label, ts, partition=None):
        if label_id == BAD_LABEL:
            self.publisher.publish_label(label_id, "oops", ts=ts, partition=partition)
        self.publisher.publish_label(label_id, label, ts=ts, partition=partition)

    def flush(self) -> None:
        self.publisher.flush()


def river_predictions(samples) -> dict:
    """River's own prequential loop (``simulate_qa``, same delays) over the good records."""
    dataset, moment, delay = river_delay(samples)
    model = build_model("lr")
    expected = {}
    for i, x, y in river_stream.simulate_qa(dataset, moment, delay):
        if y is None:
            expected[samples[i].id] = model.predict_one(x)
        else:
            model.learn_one(x, y)
    return expected


def test_a_bad_label_and_resent_events_are_dead_lettered_and_change_nothing(
    kafka_settings, unique_prefix, tmp_path
):
    samples = list(synthetic("sea", n=1000, seed=3, label_delay="10", start_ts=0))
    topics = create_topics(kafka_settings, unique_prefix)
    publisher = EventPublisher(kafka_settings, unique_prefix)
    publish_samples(_Retrying(publisher, samples), samples)
    publisher.close()

    state = tmp_path / "s.sqlite"
    worker = Worker(
        kafka_settings,
        LearnerConfig(model="lr", drift_policy="none"),  # the data monitor on, as by default
        str(state),
        WorkerOptions(group=f"{unique_prefix}g", topic_prefix=unique_prefix, exit_when_idle=1.5),
    )
    assert worker.run() == 0

    dead = read_all(kafka_settings, topics["deadletter"])
    assert sorted((d["reason"], d["id"]) for d in dead) == [
        ("duplicate_event", RESENT_JOINED),
        ("duplicate_event", RESENT_PENDING),
        ("invalid_label", BAD_LABEL),
    ]
    by_id = {(d["reason"], d["id"]): d for d in dead}
    bad = by_id["invalid_label", BAD_LABEL]
    assert orjson.loads(base64.b64decode(bad["raw"]))["label"] == "oops"
    assert "binary model" in bad["detail"] and bad["source"]["topic"] == topics["labels"]
    events = read_all(kafka_settings, topics["events"])
    first_offset = {}
    for offset, record in enumerate(events):  # one partition: offsets count from 0
        first_offset.setdefault(record["id"], offset)
    for event_id in (RESENT_PENDING, RESENT_JOINED):
        letter = by_id["duplicate_event", event_id]
        assert f"first received at offset {first_offset[event_id]} " in letter["detail"]
        assert letter["source"]["offset"] > first_offset[event_id]

    predictions = read_all(kafka_settings, topics["predictions"])
    ids = [p["id"] for p in predictions]
    assert len(ids) == len(set(ids)) == len(samples)  # exactly one prediction per event id
    assert {p["id"]: p["prediction"] for p in predictions} == river_predictions(samples)

    store = StateStore(str(state))
    learner = Learner.from_bytes(store.latest(0).state)
    store.close()
    assert learner.n_events == learner.n_labels == len(samples)  # e150 joined its true label
    assert learner.version.updates == len(samples)
    assert learner.rejected == {"invalid_label": 1, "duplicate_event": 2}
    assert learner.metrics.report()["n_labels"] == len(samples)
