"""The core against River itself: same predictions, same metrics, to the last digit."""

from __future__ import annotations

import itertools
import random

import pytest
from river import drift, evaluate, metrics, stream
from river.datasets import synth

from driftstream.consumers.worker import Worker, WorkerOptions
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import river_delay, synthetic
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.models import build_model
from driftstream.stream.offline import run_offline
from driftstream.stream.records import Event, Label, Prediction
from driftstream.transport import CLIENTS, KafkaSettings
from tests.support import create_topics, read_all

N = 3000


def sea_with_drift(n: int = N, seed: int = 7) -> list[tuple[dict, bool]]:
    """SEA whose concept switches abruptly at n/2, with 10 % label noise."""
    first = synth.SEA(variant=0, noise=0.1, seed=seed)
    second = synth.SEA(variant=3, noise=0.1, seed=seed + 1)
    half = n // 2
    return list(itertools.islice(first, half)) + list(itertools.islice(second, n - half))


def as_records(dataset, delays: list[int]) -> tuple[list[Event], list[Label]]:
    """Events at ts=i, labels at ts=i+delay, written in the order River reveals them."""
    events = [Event(f"e{i}", dict(x), ts=i, offset=i) for i, (x, _) in enumerate(dataset)]
    order = sorted(range(len(dataset)), key=lambda i: (i + delays[i], i))
    labels = [Label(f"e{i}", dataset[i][1], ts=i + delays[i]) for i in order]
    return events, labels


def river_predictions(dataset, model, delays: list[int]) -> list:
    """Predictions River's `simulate_qa` loop serves, in event order."""
    it = iter(delays)
    preds, served = {}, [None] * len(dataset)
    for i, x, y in stream.simulate_qa(dataset, moment=None, delay=lambda x, y: next(it)):
        if y is None:
            preds[i] = served[i] = model.predict_one(x)
        else:
            preds.pop(i)
            model.learn_one(x, y)
    return served


def river_score(dataset, spec: str, metric, delays: list[int]) -> float:
    it = iter(delays)
    result = evaluate.progressive_val_score(
        dataset, build_model(spec), metric, delay=lambda x, y: next(it)
    )
    return result.get()


def learner_run(dataset, delays, **config) -> tuple[Learner, list]:
    events, labels = as_records(dataset, delays)
    config.setdefault("data_drift", False)
    learner, outputs = run_offline(events, labels, LearnerConfig(**config))
    preds = [o.prediction for o in outputs if isinstance(o, Prediction)]
    return learner, preds


DELAYS = {
    "zero": lambda n: [0] * n,
    "constant-100": lambda n: [100] * n,
    "random": lambda n: [random.Random(3).randint(0, 300) for _ in range(n)],
}


@pytest.mark.parametrize("delay_kind", DELAYS)
@pytest.mark.parametrize("spec", ["lr", "ht", "gnb"])
def test_predictions_and_metrics_equal_river(spec, delay_kind):
    dataset = sea_with_drift()
    delays = DELAYS[delay_kind](len(dataset))
    learner, preds = learner_run(dataset, delays, model=spec, drift_policy="none")

    assert preds == river_predictions(dataset, build_model(spec), delays)
    report = learner.metrics.report()
    assert report["accuracy"] == river_score(dataset, spec, metrics.Accuracy(), delays)
    assert report["f1"] == river_score(dataset, spec, metrics.F1(), delays)
    assert report["log_loss"] == river_score(dataset, spec, metrics.LogLoss(), delays)
    assert learner.n_labels == len(dataset)


def test_zero_delay_equals_river_fast_path():
    """``delay=None`` takes another code path in River; the result must be the same."""
    dataset = sea_with_drift()
    learner, _ = learner_run(dataset, [0] * len(dataset), model="lr", drift_policy="none")
    expected = evaluate.progressive_val_score(dataset, build_model("lr"), metrics.Accuracy())
    assert learner.metrics.report()["accuracy"] == expected.get()


def test_regression_equals_river():
    dataset = list(itertools.islice(synth.Friedman(seed=1), 2000))
    delays = [50] * len(dataset)
    learner, preds = learner_run(dataset, delays, model="linreg", drift_policy="none")
    assert preds == river_predictions(dataset, build_model("linreg"), delays)
    assert learner.metrics.report()["mae"] == river_score(dataset, "linreg", metrics.MAE(), delays)


@pytest.mark.parametrize("spec", ["lr", "ht"])
def test_reset_policy_equals_drift_retraining_classifier(spec):
    # Labels flip at 3000: the strongest sudden drift, so ADWIN must fire.
    dataset = [(x, y if i < 3000 else not y) for i, (x, y) in enumerate(sea_with_drift(6000))]
    reference = drift.DriftRetrainingClassifier(
        build_model(spec), drift.ADWIN(), train_in_background=False
    )
    expected = [None] * len(dataset)
    for i, (x, y) in enumerate(dataset):
        expected[i] = reference.predict_one(x)
        reference.learn_one(x, y)

    learner, preds = learner_run(
        dataset,
        [0] * len(dataset),
        model=spec,
        drift_policy="reset",
        cooldown=0,
        act_on_decrease=True,
    )
    assert learner.drifts["concept"] >= 1, "the stream must make ADWIN fire for this to test much"
    assert learner.version.generation == learner.drifts["concept"]
    assert preds == expected


@pytest.mark.parametrize("policy", ["none", "reset", "window", "reweight"])
def test_checkpoint_restore_continues_exactly(policy):
    dataset = sea_with_drift()
    events, labels = as_records(dataset, [100] * len(dataset))
    config = LearnerConfig(model="lr", drift_policy=policy)
    _, uninterrupted = run_offline(events, labels, config)

    # Same records, split where the merge order puts the cut at event 1700.
    cut_ts = 1700
    first_e = [e for e in events if e.ts < cut_ts]
    first_l = [lb for lb in labels if lb.ts < cut_ts]
    learner, outputs = run_offline(first_e, first_l, config)
    restored = Learner.from_bytes(learner.to_bytes())
    assert restored.canonical_bytes() == learner.canonical_bytes()
    _, rest = run_offline(
        [e for e in events if e.ts >= cut_ts],
        [lb for lb in labels if lb.ts >= cut_ts],
        learner=restored,
    )

    def key(outs):
        return [
            (o.id, o.prediction, o.proba, o.generation, o.updates)
            for o in outs
            if isinstance(o, Prediction)
        ]

    assert key(outputs + rest) == key(uninterrupted)


@pytest.mark.broker
@pytest.mark.parametrize("client", CLIENTS)
def test_through_kafka_with_each_client_equals_river(client, broker, unique_prefix, tmp_path):
    """The worker on the real broker, with each Kafka client behind the adapter: every served
    prediction is River's (`simulate_qa` on the same data and label delays), and so is the
    prequential accuracy (`progressive_val_score`)."""
    settings = KafkaSettings(broker.bootstrap, fast_group_timeouts=True, client=client)
    samples = list(synthetic("sea", n=3000, seed=11, drift_at=[1500], label_delay="uniform:0:300"))
    topics = create_topics(settings, unique_prefix)
    publisher = EventPublisher(settings, unique_prefix)
    publish_samples(publisher, samples)
    publisher.close()
    worker = Worker(
        settings,
        LearnerConfig(model="lr", drift_policy="none"),
        str(tmp_path / "state.sqlite"),
        WorkerOptions(group=f"{unique_prefix}g", topic_prefix=unique_prefix, exit_when_idle=1.5),
    )
    assert worker.run() == 0

    served = {p["id"]: p["prediction"] for p in read_all(settings, topics["predictions"])}
    dataset, moment, delay = river_delay(samples)
    model, expected = build_model("lr"), {}
    for i, x, y in stream.simulate_qa(dataset, moment, delay):
        if y is None:
            expected[samples[i].id] = model.predict_one(x)
        else:
            model.learn_one(x, y)
    assert served == expected
    accuracy = metrics.Accuracy()
    for s, (_, y) in zip(samples, dataset):
        accuracy.update(y, served[s.id])
    river = evaluate.progressive_val_score(
        dataset, build_model("lr"), metrics.Accuracy(), moment=moment, delay=delay
    )
    assert accuracy.get() == river.get()
