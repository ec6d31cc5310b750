"""The Kafka I/O ceiling and the naive peer: the worker's client without the worker.

The ceiling reads both inputs and writes one prediction-sized record per event with the
worker's own client and settings, no model and no decode: what Kafka I/O alone allows. Its
live loop (`io_loop_child`) takes the latency runs' load the same way. The naive peer is the
loop a user would write by hand with the same client: decode, predict, learn, produce and a
synchronous commit per record.
"""

from __future__ import annotations

import gc
import sys
import time

import orjson

from bench.load import FETCH_MAX_WAIT_MS, MAX_POLL_RECORDS, Env, create_topics, load_topics
from driftstream.producers.sources import event_record
from driftstream.transport import Consumer, KafkaSettings, Producer, topic_names

__all__ = [
    "ceiling_clients",
    "io_loop_child",
    "measure_kafka_ceiling",
    "measure_naive_peer",
    "prediction_sized_payload",
]


def prediction_sized_payload(env: Env) -> bytes:
    """A real lr prediction record, encoded: what the ceiling and naive peer write per event."""
    from driftstream.stream.codec import decode_event, encode
    from driftstream.stream.learner import Learner, LearnerConfig

    learner = Learner(LearnerConfig(model="lr"))
    s = env.samples[0]
    ev = decode_event(orjson.dumps(event_record(s)), -1)
    ev.offset = 123456
    pred = learner.process_event(ev, int(time.time() * 1000))[0]
    return encode(pred.to_wire())


def ceiling_clients(settings: KafkaSettings, client_id: str) -> tuple[Consumer, Producer]:
    """The Kafka I/O ceiling's consumer and producer: the worker's client and settings."""
    consumer = Consumer(
        settings,
        client_id=client_id,
        max_poll_records=MAX_POLL_RECORDS,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    return consumer, Producer(settings, client_id=client_id)


def measure_kafka_ceiling(env: Env, topics: dict[str, str], n: int, batched: bool = False) -> dict:
    """Kafka I/O ceiling with the worker's client and settings, no model, no decode.

    One ``producers.kafka_client.Consumer`` (max_poll_records and fetch_max_wait_ms of
    ``WorkerOptions``, as the worker) assigned (no group join) to partition 0 of the events
    and labels topics, from the beginning; one ``Producer`` (acks=all, linger 5 ms, as the
    worker). Loop: ``poll(100)``; for each record from the events topic, ``send`` a fixed
    pre-encoded prediction-sized value (a real lr prediction, ~200 bytes) keyed by the
    record's Kafka key (the event id, so no JSON decode) to a separate output topic,
    partition 0; labels are only counted. Timed: first poll returning records -> ``flush()``
    returns after n events and n labels were read. events/s = n / seconds. Also: consume-only
    (both topics, nothing produced) and produce-only (n prediction-sized sends + flush) rates.
    ``batched``: the predictions of each poll go in one ``send_batch``, as the worker's do
    (no consume-only and produce-only runs then).
    """
    settings = env.settings
    payload = prediction_sized_payload(env)
    prefix = topics["events"][: -len("events")]
    out_topic = prefix + "ceiling"
    create_topics(settings, prefix, 1, extra=("ceiling", "ceiling2"))
    tps = [(topics["events"], 0), (topics["labels"], 0)]

    def consume(produce: bool, target: str) -> tuple[float, float, float]:
        consumer, producer = ceiling_clients(settings, "bench-ceiling")
        try:
            consumer.assign(tps)
            consumer.seek_to_beginning(tps)
            ev_topic = topics["events"]
            n_ev = n_lb = 0
            first = None
            cpu0 = thr0 = 0.0
            deadline = time.monotonic() + 600
            while (n_ev < n or n_lb < n) and time.monotonic() < deadline:
                records = consumer.poll(100)
                if records and first is None:
                    first = time.perf_counter()
                    cpu0, thr0 = time.process_time(), time.thread_time()
                if batched:
                    keys = [r.key for r in records if r.topic == ev_topic]
                    n_ev += len(keys)
                    n_lb += len(records) - len(keys)
                    if keys:
                        producer.send_batch(target, 0, [(key, payload) for key in keys])
                    continue
                for r in records:
                    if r.topic == ev_topic:
                        n_ev += 1
                        if produce:
                            producer.send(target, payload, r.key, 0)
                    else:
                        n_lb += 1
            producer.flush()
            end = time.perf_counter()
            if n_ev < n or n_lb < n:
                raise TimeoutError(f"ceiling read only {n_ev} events, {n_lb} labels")
            return end - first, time.process_time() - cpu0, time.thread_time() - thr0
        finally:
            consumer.close()
            producer.close()

    seconds, cpu, main_cpu = consume(True, out_topic)
    result = {
        "events": n,
        "seconds": seconds,
        "events_per_s": n / seconds,
        "cpu_s": cpu,
        "main_thread_cpu_s": main_cpu,
        "payload_bytes": len(payload),
    }
    if batched:
        return result
    c_seconds, c_cpu, _ = consume(False, out_topic)
    producer = Producer(settings, client_id="bench-ceiling")
    key = b"e1234567"
    start, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        producer.send(prefix + "ceiling2", payload, key, 0)
    producer.flush()
    p_seconds, p_cpu = time.perf_counter() - start, time.process_time() - cpu0
    producer.close()
    return {
        **result,
        "consume_only_records_per_s": 2 * n / c_seconds,
        "consume_only_cpu_s": c_cpu,
        "produce_only_msgs_per_s": n / p_seconds,
        "produce_only_cpu_s": p_cpu,
    }


def io_loop_child(spec: dict, on_poll=None) -> int:
    """Child process of measure_latency(subject="ceiling"): the Kafka I/O ceiling's loop
    (`measure_kafka_ceiling`), live: read events and labels, send one prediction-sized record
    per event, keyed by the event's key, each poll's in one ``send_batch`` as the worker does.
    Exits once nothing came for 5 s after records did. ``on_poll(records, at)``, if given, is
    told each poll's records and when it returned (`time.perf_counter`), for traces."""
    settings = KafkaSettings(
        spec["bootstrap"], fast_group_timeouts=True, client=spec.get("client", "kafka-python")
    )
    topics = topic_names(spec["prefix"])
    payload = bytes.fromhex(spec["payload"])
    consumer, producer = ceiling_clients(settings, "bench-io-loop")
    gc.freeze()  # as the worker does after start-up
    try:
        consumer.assign([(topics["events"], 0), (topics["labels"], 0)])
        print("assigned partitions [0]", file=sys.stderr, flush=True)
        events, target = topics["events"], topics["predictions"]
        last = None
        while last is None or time.monotonic() - last < 5.0:
            records = consumer.poll(100)
            if on_poll is not None:
                on_poll(records, time.perf_counter())
            if records:
                last = time.monotonic()
            batch = [(r.key, payload) for r in records if r.topic == events]
            if batch:
                producer.send_batch(target, 0, batch)
        producer.flush()
    finally:
        consumer.close()
        producer.close()
    return 0


def measure_naive_peer(env: Env, model: str, n: int) -> dict:
    """The loop a user would write by hand with the same client (no merge, no checkpoints).

    ``Consumer`` in a group (subscribe to events + labels, 5000 records/poll), one
    ``Producer``; for each polled record in poll order: ``orjson.loads``; an event is
    predicted with ``model.predict_one(features)``, its features stored in a dict by id, and
    ``{"id", "prediction"}`` produced (keyed by id); a label pops its features and calls
    ``learn_one``. Records come in poll order (a poll's worth of one partition, then of the
    other), so a label may come before its event: it then waits in a second dict and
    the event learns it right after predicting (the same model work, not River's order). Then
    ``consumer.commit({(topic, partition): offset + 1})``, a synchronous commit per record.
    Timed: first poll returning records -> flush after all n events and n labels.
    Uses its own topics with the first ``n`` samples (n may be smaller than the others').
    """
    from driftstream.stream.models import build_model

    samples = env.samples[:n]
    prefix = env.prefix(f"naive-{model}")
    topics = load_topics(env, prefix, samples, 1)["topics"]
    m = build_model(model)
    consumer = Consumer(
        env.settings,
        group_id=prefix + "g",
        client_id="bench-naive",
        max_poll_records=MAX_POLL_RECORDS,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    producer = Producer(env.settings, client_id="bench-naive")
    ev_topic, out_topic = topics["events"], topics["predictions"]
    pending: dict[str, dict] = {}  # event read, label not yet
    early: dict[str, object] = {}  # label read, event not yet (no merge: poll order)
    n_ev = n_lb = label_first = 0
    first = None
    cpu0 = 0.0
    try:
        consumer.subscribe([topics["events"], topics["labels"]])
        deadline = time.monotonic() + 900
        while (n_ev < n or n_lb < n) and time.monotonic() < deadline:
            for r in consumer.poll(100):
                if first is None:
                    first, cpu0 = time.perf_counter(), time.process_time()
                obj = orjson.loads(r.value)
                if r.topic == ev_topic:
                    x = obj["features"]
                    y_pred = m.predict_one(x)
                    producer.send(
                        out_topic, orjson.dumps({"id": obj["id"], "prediction": y_pred}), r.key, 0
                    )
                    if obj["id"] in early:
                        m.learn_one(x, early.pop(obj["id"]))
                    else:
                        pending[obj["id"]] = x
                    n_ev += 1
                else:
                    x = pending.pop(obj["id"], None)
                    if x is None:
                        early[obj["id"]] = obj["label"]
                        label_first += 1
                    else:
                        m.learn_one(x, obj["label"])
                    n_lb += 1
                consumer.commit({(r.topic, r.partition): r.offset + 1})
        producer.flush()
        seconds = time.perf_counter() - first
        cpu = time.process_time() - cpu0
    finally:
        consumer.close()
        producer.close()
    if n_ev < n or n_lb < n:
        raise TimeoutError(f"naive peer processed only {n_ev} events, {n_lb} labels")
    return {
        "model": model,
        "events": n,
        "seconds": seconds,
        "events_per_s": n / seconds,
        "cpu_s": cpu,
        "labels_before_event": label_first,
        "commits": 2 * n,
        "commit_ms_upper_bound": seconds / (2 * n) * 1000,
    }
