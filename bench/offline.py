"""The worker's references without Kafka: River alone, driftstream's learner alone, the codec.

Together with the Kafka I/O ceiling (`bench.ceilings`) these split the worker's cost into
model, driftstream core, codec and Kafka: River's own prequential loop is the limit, the
learner offline adds the event-time merge, pending joins, metrics and drift monitoring, and
the codec is what decoding and encoding the wire records costs per event.
"""

from __future__ import annotations

import gc
import time

import orjson

from driftstream.producers.sources import Sample, event_record, label_record

__all__ = ["measure_codec", "measure_learner_offline", "measure_river_inprocess"]


def measure_river_inprocess(samples: list[Sample], model: str) -> dict:
    """River alone, in this process: the limit.

    ``river.stream.simulate_qa`` over the samples with their event times and label delays
    (``producers.sources.river_delay``): ``predict_one`` at each question, ``learn_one`` at
    each answer, model ``build_model(model)`` (same spec as the worker). Timed: the loop only
    (dataset built before). events/s = n / seconds.
    """
    from river import stream as river_stream

    from driftstream.producers.sources import river_delay
    from driftstream.stream.models import build_model

    dataset, moment, delay = river_delay(samples)
    m = build_model(model)
    gc.collect()
    start = time.perf_counter()
    cpu = time.process_time()
    for _, x, y in river_stream.simulate_qa(dataset, moment, delay):
        if y is None:
            m.predict_one(x)
        else:
            m.learn_one(x, y)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    return {
        "events": len(samples),
        "seconds": seconds,
        "cpu_s": cpu,
        "events_per_s": len(samples) / seconds,
    }


def measure_learner_offline(samples: list[Sample], model: str) -> dict:
    """driftstream's core without Kafka: ``stream.offline.run_offline`` (event-time merge +
    Learner with the default LearnerConfig: schema check, predict_proba, pending join,
    metrics, served-error ADWIN, data-drift monitoring, challenger policy, learn).

    Inputs are Event/Label objects decoded beforehand from the wire bytes (as the worker
    holds them); outputs (Prediction objects) are collected but not encoded. Timed: the
    run_offline call. events/s = n / seconds.
    """
    from driftstream.stream.codec import decode_event, decode_label
    from driftstream.stream.learner import LearnerConfig
    from driftstream.stream.offline import run_offline

    events = [decode_event(orjson.dumps(event_record(s)), -1) for s in samples]
    labels = sorted((s for s in samples if s.label_ts is not None), key=lambda s: s.label_ts)
    labels = [decode_label(orjson.dumps(label_record(s)), -1) for s in labels]
    gc.collect()
    start = time.perf_counter()
    cpu = time.process_time()
    learner, outputs = run_offline(events, labels, LearnerConfig(model=model))
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    assert learner.n_events == len(samples), learner.summary()
    return {
        "events": len(samples),
        "seconds": seconds,
        "cpu_s": cpu,
        "events_per_s": len(samples) / seconds,
        "outputs": len(outputs),
    }


def measure_codec(samples: list[Sample], model: str = "lr") -> dict:
    """The wire codec alone, per event: ``decode_event`` of the event bytes + ``decode_label``
    of the label bytes + ``Prediction.to_wire`` and ``encode`` of one prediction (as the
    worker's ``_send``), for every sample. Predictions are real ones from run_offline.
    Reported as microseconds per event for each part.
    """
    from driftstream.stream.codec import decode_event, decode_label, encode
    from driftstream.stream.learner import LearnerConfig
    from driftstream.stream.offline import run_offline
    from driftstream.stream.records import Prediction

    ev_bytes = [orjson.dumps(event_record(s)) for s in samples]
    lb_bytes = [orjson.dumps(label_record(s)) for s in samples]
    n = len(samples)
    out: dict[str, float] = {}
    t = time.perf_counter()
    events = [decode_event(b, -1) for b in ev_bytes]
    out["decode_event_us"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for b in lb_bytes:
        decode_label(b, -1)
    out["decode_label_us"] = (time.perf_counter() - t) / n * 1e6
    few = min(n, 5000)
    _, outs = run_offline(events[:few], [], LearnerConfig(model=model))
    preds = [o for o in outs if o.__class__ is Prediction]
    t = time.perf_counter()
    for _ in range(max(1, n // len(preds))):
        for p in preds:
            encode(p.to_wire())
    out["encode_prediction_us"] = (
        (time.perf_counter() - t) / (max(1, n // len(preds)) * len(preds)) * 1e6
    )
    out["prediction_bytes"] = sum(len(encode(p.to_wire())) for p in preds) / len(preds)
    out["event_bytes"] = sum(map(len, ev_bytes)) / n
    out["label_bytes"] = sum(map(len, lb_bytes)) / n
    out["total_us"] = out["decode_event_us"] + out["decode_label_us"] + out["encode_prediction_us"]
    return out
