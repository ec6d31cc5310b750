"""Throughput, latency and memory of the worker, against River in-process and Kafka's own limit.

One run, one embedded Tansu broker (started here, loopback only), the same data and the same
model specs everywhere: ``synthetic("sea", n, drift_at=[n // 2], label_delay="100")`` (labels
revealed 100 event-time units = 100 events later), models ``lr`` and ``ht``, learner defaults
(drift policy ``reset``, data-drift monitoring on), as ``driftstream run`` would use them.

Measured (each in its own ``measure_*`` function, whose docstring says exactly what it times):

- River in-process: ``river.stream.simulate_qa`` prequential loop, no Kafka. The limit.
- driftstream learner offline: ``stream.offline.run_offline`` (merge + learner), no Kafka,
  plus the wire codec alone. Together with River this splits the worker's cost into model,
  driftstream core, codec and Kafka.
- Kafka I/O ceiling: the same client (``producers.kafka_client``) and settings, reading both
  input topics and writing one prediction-sized record per event, no model, no decode; once
  with kafka-python's own ``send`` per record (the client's API), once with
  ``Producer.send_batch`` per poll (how the worker writes its predictions).
- driftstream worker, 1 partition (a child process running ``consumers.worker.Worker``):
  first poll that returns records -> every prediction acknowledged (producer flush).
- driftstream, 4 partitions and 2 ``driftstream run`` processes: first to last prediction
  CreateTime on the predictions topic, and launch -> both exited.
- naive peer: the hand-written loop (decode, predict/learn with a dict of pending ids,
  produce, commit each record's offset), same client.
- latency: event publish -> prediction publish (both CreateTimes, matched by id) at a steady
  offered rate of half the measured 1-partition maximum, a quarter of it, and 100 events/s;
  the load generator (`LoadPublisher`) writes whole record batches every 10 ms so that it
  takes little of the 2 cores, and stamps each record with its scheduled time. At half the
  maximum the Kafka I/O ceiling's loop (no model) takes the same load too, its runs
  alternating with the worker's: the client's and broker's own latency at that rate; and
  both take the load once more in 5 ms batches: Tansu's fetch cost grows with the batches a
  partition holds (``LOAD_TICK_S``). Each latency run has a fresh broker (Tansu keeps every
  record in memory; one that served the throughput phases gave ~40 % higher p99).
- memory: peak RSS of the worker processes, and bytes per pending join of a learner holding
  1 million scored events whose labels never arrive.

Usage::

    .venv/bin/python bench/throughput.py [--json] [--n N] [--quick] [--profile]

``--quick``: n=10k, short latency phases, 100k pending joins (a fast check, ~1 min).
``--profile``: only the 1-partition worker measurement (lr unless ``--profile-model``), run
under cProfile from its first record to its last flush; prints the top 25 functions by
cumulative and by own time. Its events/s is slowed by the profiler and is not a result.
With ``--json`` the last line of stdout is one JSON object (``events_per_s``, ``p99_ms``,
``ratio_vs_river``, ``ratio_vs_ceiling``, ``ratio_vs_naive`` for lr on 1 partition, then
everything else). Progress goes to stderr.

A 1-partition worker that processes nothing for 30 s is stopped and reported (WorkerStalled,
with its queues, pause flags, positions and kafka-python's parked fetch data); a failed
measurement is listed under the table and the others still run.

The machine may be shared: wall-clock figures are noisy when other work runs (back-to-back
runs of the same worker here differ by up to 30 %). So the lr worker and the Kafka ceiling
are measured ``--repeats`` times (default 3), alternating, and the latency at half the
maximum as often; the tables show the median run, and the list of every run follows them.
The lr worker / ceiling ratio is the median of the back-to-back pairs' ratios (each pair
sees the same host speed; the ratio of the two medians is printed beside it).
Every other figure is one run. CPU seconds of the worker (whole process and its main thread)
and of the broker are reported beside the wall-clock rates because they are steadier.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import gc
import io
import json
import os
import platform
import pstats
import re
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

import orjson  # noqa: E402
from kafka.protocol.producer import ProduceRequest, ProduceResponse  # noqa: E402
from kafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402

from driftstream.consumers.model_process import FORK_STATE_ABOVE  # noqa: E402
from driftstream.consumers.worker import WorkerOptions  # noqa: E402
from driftstream.producers.sources import Sample, event_record, label_record, synthetic  # noqa: E402
from driftstream.transport.kafka_client import (  # noqa: E402
    Admin,
    Consumer,
    KafkaSettings,
    Producer,
    topic_names,
)

LABEL_DELAY = 100
MODELS = ("lr", "ht")
# The worker's client settings: the ceiling and the naive peer use them too.
MAX_POLL_RECORDS = WorkerOptions.max_poll_records
FETCH_MAX_WAIT_MS = WorkerOptions.fetch_max_wait_ms
PYTHON = sys.executable


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_samples(n: int, seed: int = 42) -> list[Sample]:
    """The bench's data: SEA, one sudden drift at n // 2, labels delayed by 100."""
    return list(
        synthetic(
            "sea",
            n,
            seed=seed,
            drift_at=[n // 2],
            label_delay=str(LABEL_DELAY),
            start_ts=1_700_000_000_000,
        )
    )


# =============================================================================================
# Broker plumbing
# =============================================================================================


@dataclass
class Env:
    """What every Kafka measurement needs."""

    settings: KafkaSettings | None  # None: a measurement without Kafka
    broker_pid: int | None
    tmp: Path
    samples: list[Sample]
    children: list = field(default_factory=list)  # Popen objects we started (for cleanup)
    loaded: dict = field(default_factory=dict)  # "1p-lr" -> topic prefix of a filled topic set

    def prefix(self, what: str) -> str:
        return f"b-{what}-{uuid.uuid4().hex[:6]}."


@contextlib.contextmanager
def broker_env(tmp: Path, samples: list[Sample]):
    """A fresh embedded broker and the `Env` to measure with it; stops both after."""
    from driftstream.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=tmp / "tansu.log")
    env = None
    try:
        broker.start()
        pid = broker._proc.pid if broker._proc is not None else None  # for its CPU time only
        env = Env(KafkaSettings(broker.bootstrap, fast_group_timeouts=True), pid, tmp, samples)
        yield env
    finally:
        if env is not None:
            stop_children(env)
        broker.stop()


def stop_children(env: Env) -> None:
    """Kill the child processes a measurement left running (after a failure)."""
    for proc in env.children:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()


def create_topics(
    settings: KafkaSettings, prefix: str, partitions: int, extra: tuple[str, ...] = ()
) -> dict[str, str]:
    topics = topic_names(prefix)
    admin = Admin(settings)
    try:
        admin.create_topics(list(topics.values()) + [prefix + e for e in extra], partitions)
    finally:
        admin.close()
    return topics


def load_topics(env: Env, prefix: str, samples: list[Sample], partitions: int) -> dict:
    """Create a topic set and fill events and labels the way `publish_samples` does.

    Same records, keys, explicit timestamps (event ts / label reveal ts) and order as
    ``producers.publisher.publish_samples`` (labels sent once their reveal time is reached,
    partition = position % partitions), but pre-encoded and without per-record validation,
    so that loading is only as slow as the client. Returns the produce rate seen.
    """
    topics = create_topics(env.settings, prefix, partitions)
    ev_topic, lb_topic = topics["events"], topics["labels"]
    producer = Producer(env.settings, client_id="bench-loader")
    labels = sorted(range(len(samples)), key=lambda i: samples[i].label_ts)  # stable: ties
    start = time.perf_counter()
    j = 0
    for i, s in enumerate(samples):
        while j < len(labels) and samples[labels[j]].label_ts <= s.ts:
            k = labels[j]
            producer.send(
                lb_topic,
                orjson.dumps(label_record(samples[k])),
                samples[k].id.encode(),
                k % partitions,
                samples[k].label_ts,
            )
            j += 1
        producer.send(ev_topic, orjson.dumps(event_record(s)), s.id.encode(), i % partitions, s.ts)
    for k in labels[j:]:
        producer.send(
            lb_topic,
            orjson.dumps(label_record(samples[k])),
            samples[k].id.encode(),
            k % partitions,
            samples[k].label_ts,
        )
    producer.flush()
    seconds = time.perf_counter() - start
    producer.close()
    return {
        "topics": topics,
        "messages": 2 * len(samples),
        "seconds": seconds,
        "msgs_per_s": 2 * len(samples) / seconds,
    }


def read_keys_and_times(
    settings: KafkaSettings, topic: str, expect: int | None = None, timeout: float = 120
) -> list[tuple[bytes, int, int]]:
    """(key, CreateTime ms, partition) of every record of a topic, read to its high-water mark."""
    consumer = Consumer(settings, max_poll_records=MAX_POLL_RECORDS)
    try:
        tps = [(topic, p) for p in consumer.partitions_for(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(tps)
        out: list[tuple[bytes, int, int]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out.extend((r.key, r.timestamp, r.partition) for r in consumer.poll(200))
            done = all(
                (h := consumer.highwater(t, p)) is not None and consumer.position(t, p) >= h
                for t, p in tps
            )
            if done and (expect is None or len(out) >= expect):
                return out
        raise TimeoutError(
            f"could not read {topic} to its end within {timeout} s ({len(out)} records)"
        )
    finally:
        consumer.close()


def proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process, from /proc (None if unavailable)."""
    if pid is None:
        return None
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak RSS (VmHWM) of a live process, in MB, from /proc (None once it has exited).

    Used instead of rusage's ru_maxrss, which on Linux also counts the parent's RSS at
    fork/exec time (it keeps the pre-exec hiwater), so every child would show the bench's.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def child_pids(pid: int) -> list[int]:
    """Direct children of a live process (the worker's model process)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def tree_hwm_mb(pid: int | str = "self") -> float | None:
    """VmHWM of a process plus its direct children's: the worker with its model process
    (an upper bound: pages the fork still shares are counted twice)."""
    own = vm_hwm_mb(pid)
    if own is None:
        return None
    pid = os.getpid() if pid == "self" else pid
    return own + sum(vm_hwm_mb(c) or 0 for c in child_pids(pid))


def wait_children(
    procs: list[subprocess.Popen], timeout: float
) -> list[tuple[int, resource.struct_rusage, float | None]]:
    """Wait for children with os.wait4 (each one's own CPU rusage), sampling their VmHWM
    every 20 ms while they run (peak RSS, with their own children's); kill them on timeout.
    Returns (exit code, rusage, peak RSS MB) per child."""
    deadline = time.monotonic() + timeout
    peaks: list[float | None] = [None] * len(procs)
    done: dict[int, tuple] = {}
    while len(done) < len(procs):
        for k, proc in enumerate(procs):
            if k in done:
                continue
            hwm = tree_hwm_mb(proc.pid)
            if hwm is not None:
                peaks[k] = hwm if peaks[k] is None else max(peaks[k], hwm)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                done[k] = (proc.returncode, usage, peaks[k])
        if len(done) == len(procs):
            break
        if time.monotonic() > deadline:
            for k, proc in enumerate(procs):
                if k not in done:
                    proc.kill()
                    _, status, _ = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
            raise TimeoutError(f"children did not finish within {timeout} s")
        time.sleep(0.02)
    return [done[k] for k in range(len(procs))]


def wait_child(
    proc: subprocess.Popen, timeout: float
) -> tuple[int, resource.struct_rusage, float | None]:
    return wait_children([proc], timeout)[0]


def start_child(env: Env, args: list[str], name: str) -> tuple[subprocess.Popen, Path, Path]:
    out, err = env.tmp / f"{name}.out", env.tmp / f"{name}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    env.children.append(proc)
    return proc, out, err


def last_json_line(path: Path) -> dict:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON result in {path}")
    return json.loads(lines[-1])


def cli_worker_args(env: Env, prefix: str, model: str, state: Path, idle: float) -> list[str]:
    return [
        PYTHON,
        "-m",
        "driftstream.cli",
        "run",
        "--bootstrap-servers",
        env.settings.bootstrap_servers,
        "--topic-prefix",
        prefix,
        "--group",
        f"{prefix}g",
        "--state",
        str(state),
        "--model",
        model,
        "--fast-group-timeouts",
        "--exit-when-idle",
        str(idle),
        "--log-level",
        "INFO",
    ]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


# =============================================================================================
# Measurements without Kafka
# =============================================================================================


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
    Learner with default LearnerConfig: predict_proba, pending join, metrics, served-error
    ADWIN, data-drift ADWIN per numeric feature, reset policy, learn).

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


# =============================================================================================
# Kafka measurements
# =============================================================================================


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


def measure_worker_1p(
    env: Env,
    model: str,
    profile_path: Path | None = None,
    model_process: bool = True,
    profile_io: bool = False,
) -> dict:
    """driftstream worker on 1 partition, events and labels already in the topics.

    A child process (fresh interpreter, ``bench/throughput.py --_child worker``) runs
    ``consumers.worker.Worker`` with default WorkerOptions (checkpoint every 100k records,
    poll 100 ms, 500 records/poll, its model process; ``model_process=False`` or a
    profile: everything in one process) and ``exit_when_idle=1``, fresh state, group join with
    ``fast_group_timeouts``. A Worker subclass timestamps the first ``_push`` (= the first
    poll that returned records, after the group join) and, from ``on_tick``, flushes the
    producer once all 2n records are processed: timed = first records -> every prediction
    acknowledged by the broker. The final checkpoint at shutdown and the idle wait are not
    timed; the checkpoints during the run (one per 100k records) are. Also reported: the
    same window as seen on the predictions topic (first to last prediction CreateTime),
    CPU seconds of the worker (its I/O process, that process's main thread alone -- the rest
    is kafka-python's producer/heartbeat threads -- and its model process), of the broker,
    and the worker's peak RSS (VmHWM of both processes, sampled from /proc).
    """
    prefix = env.prefix(f"w1-{model}{'' if model_process else '-inproc'}")
    load = load_topics(env, prefix, env.samples, 1)
    env.loaded[f"1p-{model}"] = prefix
    n = len(env.samples)
    spec = {
        "bootstrap": env.settings.bootstrap_servers,
        "prefix": prefix,
        "model": model,
        "state": str(env.tmp / f"{prefix}sqlite"),
        "n": n,
        "profile": str(profile_path) if profile_path else None,
        "model_process": model_process and (not profile_path or profile_io),
    }
    broker_cpu0 = proc_cpu_s(env.broker_pid)
    proc, out, err = start_child(
        env, [PYTHON, __file__, "--_child", "worker", json.dumps(spec)], f"worker1p-{model}"
    )
    code, usage, peak = wait_child(proc, timeout=120 + n / 500)
    broker_cpu = (proc_cpu_s(env.broker_pid) or 0) - (broker_cpu0 or 0)
    if code != 0:
        stalled = [ln for ln in err.read_text().splitlines() if ln.startswith('{"stalled"')]
        if stalled:
            raise WorkerStalled(
                f"1-partition worker ({model}) made no progress for {STALL_S:.0f} s: {stalled[-1]}"
            )
        raise RuntimeError(f"1-partition worker exited {code}: {err.read_text()[-3000:]}")
    res = last_json_line(out)
    preds = read_keys_and_times(env.settings, load["topics"]["predictions"], expect=n)
    stamps = [ts for _, ts, _ in preds]
    span = (max(stamps) - min(stamps)) / 1000
    res.update(
        {
            "model": model,
            "partitions": 1,
            "prefix": prefix,
            "load_msgs_per_s": load["msgs_per_s"],
            "predictions": len(preds),
            "unique_predictions": len({k for k, _, _ in preds}),
            "pred_ts_span_s": span,
            "pred_ts_events_per_s": n / span if span > 0 else None,
            "peak_rss_mb": max(peak or 0, res.get("self_peak_rss_mb") or 0),
            "process_cpu_s_total": usage.ru_utime + usage.ru_stime,
            "broker_cpu_s_whole_run": broker_cpu,
        }
    )
    return res


STALL_S = 30.0  # a 1-partition worker that processes nothing for this long has stalled


class WorkerStalled(RuntimeError):
    """The worker stopped making progress with records left to process."""


def stall_report(w, expected: int) -> dict:
    """What a stalled worker looks like: per input, merge queue, pause flag, position,
    high-water mark, and kafka-python's parked fetch data (private fields, diagnosis only)."""
    out: dict = {"n_processed": w.n_processed, "expected": expected, "partitions": {}}
    for p, task in w.tasks.items():
        for stream, topic in enumerate(w.inputs):
            out["partitions"][f"{topic}[{p}]"] = {
                "queued": task.queued[stream],
                "caught_up": task.caught_up[stream],
                "paused_by_worker": (topic, p) in task.paused,
                "position": w.consumer.position(topic, p),
                "highwater": w.consumer.highwater(topic, p),
                "next_offset": task.next_offset[stream],
            }
    fetcher = getattr(getattr(w.consumer, "_consumer", None), "_fetcher", None)
    if fetcher is not None:
        current = getattr(fetcher, "_next_partition_records", None)
        out["kafka_python_fetcher"] = {
            "next_partition_records": None
            if current is None
            else f"{current.topic_partition.topic}[{current.topic_partition.partition}] "
            f"{'non-empty' if current else 'exhausted'}",
            "parked_partition_records": [
                f"{tp.topic}[{tp.partition}]"
                for tp in getattr(fetcher, "_paused_partition_records", {})
            ],
            "parked_completed_fetches": [
                f"{tp.topic}[{tp.partition}]"
                for tp in getattr(fetcher, "_paused_completed_fetches", {})
            ],
        }
    return out


def _child_worker(spec: dict) -> int:
    """Child process of measure_worker_1p: one Worker, timed from inside."""
    from driftstream.consumers.worker import Worker, WorkerOptions
    from driftstream.stream.learner import LearnerConfig

    n = spec["n"]
    profiler = cProfile.Profile() if spec.get("profile") else None

    class TimedWorker(Worker):
        t_first = t_end = None
        cpu_first = thr_first = cpu_end = thr_end = 0.0
        model_cpu_first = model_cpu_end = 0.0
        model_hwm = None
        polls_with_records = 0
        records_pushed = 0

        def _submit(self, batches, now_ms, polled_at, *args):
            if batches:
                if self.t_first is None:
                    self.t_first = time.perf_counter()
                    self.cpu_first, self.thr_first = time.process_time(), time.thread_time()
                    self.model_cpu_first = proc_cpu_s(self.model_pid()) or 0.0
                    if profiler is not None:
                        profiler.enable()
                self.polls_with_records += 1
                self.records_pushed += sum(len(recs) for recs in batches.values())
            super()._submit(batches, now_ms, polled_at, *args)

        def model_pid(self):
            process = getattr(self.model, "process", None)
            return process.pid if process is not None else None

    progress = {"n": -1, "at": time.monotonic()}

    def on_tick(w: TimedWorker) -> None:
        if w.t_end is None and w.n_processed >= 2 * n:
            w.producer.flush()
            w.t_end = time.perf_counter()
            w.cpu_end, w.thr_end = time.process_time(), time.thread_time()
            w.model_cpu_end = proc_cpu_s(w.model_pid()) or 0.0
            w.model_hwm = vm_hwm_mb(w.model_pid()) if w.model_pid() else None
            if profiler is not None:
                profiler.disable()
        if w.n_processed != progress["n"]:
            progress["n"], progress["at"] = w.n_processed, time.monotonic()
        elif (
            w.t_first is not None
            and w.t_end is None
            and time.monotonic() - progress["at"] > STALL_S
        ):
            print(json.dumps({"stalled": stall_report(w, 2 * n)}), file=sys.stderr, flush=True)
            w.stop()

    settings = KafkaSettings(spec["bootstrap"], fast_group_timeouts=True)
    worker = TimedWorker(
        settings,
        LearnerConfig(model=spec["model"]),
        spec["state"],
        WorkerOptions(
            group=spec["prefix"] + "g",
            topic_prefix=spec["prefix"],
            exit_when_idle=1.0,
            model_process=spec["model_process"],
        ),
    )
    started = time.perf_counter()
    code = worker.run(on_tick=on_tick)
    if worker.t_end is None:
        print(f"worker stopped after {worker.n_processed} of {2 * n} records", file=sys.stderr)
        return 2
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    seconds = worker.t_end - worker.t_first
    tasks = list(worker.tasks.values()) or []
    rejected = {}
    for t in tasks:
        for k, v in t.summary["rejected"].items():
            rejected[k] = rejected.get(k, 0) + v
    print(
        json.dumps(
            {
                "events": n,
                "seconds": seconds,
                "events_per_s": n / seconds,
                "join_s": worker.t_first - started,
                "cpu_s": worker.cpu_end
                - worker.cpu_first
                + worker.model_cpu_end
                - worker.model_cpu_first,
                "io_process_cpu_s": worker.cpu_end - worker.cpu_first,
                "main_thread_cpu_s": worker.thr_end - worker.thr_first,
                "model_process_cpu_s": worker.model_cpu_end - worker.model_cpu_first,
                "polls_with_records": worker.polls_with_records,
                "records_per_poll": worker.records_pushed / max(1, worker.polls_with_records),
                "rejected": rejected,
                "exit_code": code,
                "self_peak_rss_mb": (vm_hwm_mb() or 0) + (worker.model_hwm or 0),
                "profiled": profiler is not None,
            }
        )
    )
    return 0


def _child_io_loop(spec: dict) -> int:
    """Child process of measure_latency(subject="ceiling"): the Kafka I/O ceiling's loop
    (`measure_kafka_ceiling`), live: read events and labels, send one prediction-sized record
    per event, keyed by the event's key, each poll's in one ``send_batch`` as the worker does.
    Exits once nothing came for 5 s after records did."""
    settings = KafkaSettings(spec["bootstrap"], fast_group_timeouts=True)
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


def measure_worker_4p(env: Env, model: str) -> dict:
    """driftstream on 4 partitions with 2 worker processes (``python -m driftstream.cli run
    --exit-when-idle 2 --fast-group-timeouts``, one shared state file), data already in the
    topics (round-robin over the 4 partitions).

    Both processes are launched together. Reported: (a) events/s = n / (last - first
    prediction CreateTime on the predictions topic, all partitions): processing only, no
    interpreter start, join or idle exit, but including any rebalance while running;
    (b) wall time from launch to both processes exited (= from produce-complete, since the
    topics are filled first), which adds interpreter start, group join and the 2 s idle
    wait; (c) which partitions each worker was assigned, from their logs, and per worker
    (partitions of its first assignment) events / its own first-to-last prediction span,
    and how far apart the two started; peak RSS (VmHWM) and CPU (``os.wait4``) of each.
    """
    prefix = env.prefix(f"w4-{model}")
    load = load_topics(env, prefix, env.samples, 4)
    n = len(env.samples)
    state = env.tmp / f"{prefix}sqlite"
    broker_cpu0 = proc_cpu_s(env.broker_pid)
    launched = time.perf_counter()
    procs = [
        start_child(env, cli_worker_args(env, prefix, model, state, 2.0), f"worker4p-{model}-{k}")
        for k in range(2)
    ]
    results = []
    waited = wait_children([proc for proc, _, _ in procs], timeout=120 + n / 500)
    for (_proc, _out, err), (code, usage, peak) in zip(procs, waited):
        if code != 0:
            raise RuntimeError(f"4-partition worker exited {code}: {err.read_text()[-3000:]}")
        text = err.read_text()
        results.append(
            {
                "peak_rss_mb": peak,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "assignments": re.findall(r"assigned partitions (\[[^\]]*\])", text),
                "checkpoints": text.count("checkpoint partition="),
            }
        )
    wall = time.perf_counter() - launched
    broker_cpu = (proc_cpu_s(env.broker_pid) or 0) - (broker_cpu0 or 0)
    preds = read_keys_and_times(env.settings, load["topics"]["predictions"], expect=n)
    stamps = [ts for _, ts, _ in preds]
    span = (max(stamps) - min(stamps)) / 1000
    per_part: dict[int, list[int]] = {}
    for _, ts, p in preds:
        per_part.setdefault(p, []).append(ts)
    for d in results:  # per worker, by the partitions of its first assignment
        first = json.loads(d["assignments"][0]) if d["assignments"] else []
        stamps_w = [ts for p in first for ts in per_part.get(p, [])]
        if stamps_w:
            d["first_partitions"] = first
            d["events"] = len(stamps_w)
            d["first_pred_ms"], d["last_pred_ms"] = min(stamps_w), max(stamps_w)
            d["span_s"] = (max(stamps_w) - min(stamps_w)) / 1000
            d["events_per_s"] = len(stamps_w) / d["span_s"] if d["span_s"] > 0 else None
    starts = [d["first_pred_ms"] for d in results if "first_pred_ms" in d]
    disjoint = sum(len(d.get("first_partitions", [])) for d in results) == len(per_part)
    return {
        "model": model,
        "partitions": 4,
        "workers": 2,
        "events": n,
        "predictions": len(preds),
        "unique_predictions": len({k for k, _, _ in preds}),
        "pred_ts_span_s": span,
        "events_per_s": n / span if span > 0 else None,
        "launch_to_exit_s": wall,
        "launch_to_exit_events_per_s": n / wall,
        "per_partition_span_s": {p: (max(v) - min(v)) / 1000 for p, v in sorted(per_part.items())},
        "start_stagger_s": (max(starts) - min(starts)) / 1000 if len(starts) == 2 else None,
        "sum_of_worker_rates": (
            sum(d.get("events_per_s") or 0 for d in results)
            if disjoint and len(starts) == 2
            else None
        ),
        "workers_detail": results,
        "broker_cpu_s": broker_cpu,
    }


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


class LoadPublisher:
    """The latency run's load generator: one ProduceRequest (acks=all) per tick, holding one
    record batch per partition, on its own connection to the (single, embedded) broker.

    kafka-python's producer spends ~15 µs of CPU per record on Python bookkeeping; two records
    per event at half the worker's maximum took half a core of this 2-core machine from the
    worker it measures. Whole batches made with kafka-python's record builder and protocol
    classes cost ~3 µs per record. Responses come in order on the connection; a thread reads
    them and keeps any error.
    """

    VERSION = 3  # Produce v3: record batches (magic 2), not flexible; Kafka 4 and Tansu take it

    def __init__(self, bootstrap: str):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.topic_cls = ProduceRequest.TopicProduceData
        self.sent = self.acked = 0
        self.errors: list = []
        self.reader = threading.Thread(target=self._read, name="load-acks", daemon=True)
        self.reader.start()

    def send(self, batches: dict[str, list[tuple[int, bytes, bytes]]]) -> None:
        """Write ``{topic: [(timestamp_ms, key, value), ...]}`` to partition 0 of each topic."""
        topics = []
        for topic, records in batches.items():
            if not records:
                continue
            builder = DefaultRecordBatchBuilder(
                magic=2,
                compression_type=0,
                is_transactional=False,
                producer_id=-1,
                producer_epoch=-1,
                base_sequence=-1,
                batch_size=1 << 30,
            )
            for offset, (ts, key, value) in enumerate(records):
                builder.append(offset, ts, key, value, [])
            partition = self.topic_cls.PartitionProduceData(index=0, records=bytes(builder.build()))
            topics.append(self.topic_cls(name=topic, partition_data=[partition]))
        if not topics:
            return
        request = ProduceRequest(
            transactional_id=None, acks=-1, timeout_ms=30_000, topic_data=topics
        )
        self.sent += 1
        request.with_header(correlation_id=self.sent, client_id="bench-load")
        self.sock.sendall(request.encode(version=self.VERSION, header=True, framed=True))

    def wait_acked(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.errors or self.acked < self.sent:
            raise RuntimeError(
                f"load publisher: {self.acked} of {self.sent} requests "
                f"acknowledged, errors {self.errors[:5]}"
            )

    def close(self) -> None:
        self.sock.close()

    def _read(self) -> None:
        try:
            while True:
                (size,) = struct.unpack(">i", self._recv(4))
                response = ProduceResponse.decode(
                    self._recv(size), version=self.VERSION, header=True
                )
                self.errors += [
                    (t.name, p.index, p.error_code)
                    for t in response.responses
                    for p in t.partition_responses
                    if p.error_code
                ]
                self.acked += 1
        except (OSError, EOFError, struct.error) as e:
            if self.acked < self.sent:
                self.errors.append(f"connection: {e!r}")

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("broker closed the connection")
            buf += chunk
        return bytes(buf)


# The load generator sends what is due every tick, as a producer's linger would. Tansu's cost
# per batch a fetch returns grows with the batches the partition holds: at 5 ms batches the
# broker's CPU, and with it every consumer's latency, climbs second by second
# (`broker_growth.py`); at 10 ms it grows a third as fast. The headline is measured at 10 ms
# (the wait for a batch counts in the latency), the 5 ms load beside it.
LOAD_TICK_S = 0.010
SMALL_BATCHES_TICK_S = 0.005


def measure_latency(
    env: Env,
    rate: float,
    warmup_s: float,
    steady_s: float,
    model: str = "lr",
    subject: str = "worker",
    launcher: tuple[str, ...] = (),
    tick_s: float = LOAD_TICK_S,
) -> dict:
    """Event publish -> prediction publish at a steady offered rate, 1 partition, 1 worker.

    A ``driftstream run`` process (exit-when-idle 5) joins a fresh 1-partition topic set (with
    ``subject="ceiling"``: the Kafka I/O ceiling's loop, no model, `_child_io_loop`); a
    `LoadPublisher` thread here schedules event i at t0 + i / rate, with the label of event
    i - 100 right before it (label delay 100 events), and every ``tick_s`` sends what is due.
    Each record's CreateTime is its scheduled time (values without ``ts``, so that is also its
    event time): a tick sent late counts in the latency, as does the wait for the tick
    (like a producer's linger). Publishing starts once the worker has logged its
    partition assignment (so no join backlog) and lasts warmup_s + steady_s.
    Latency of an event = its prediction's CreateTime (set by the worker's kafka-python
    producer at ``send``, i.e. when the prediction was queued, before linger and ack) - the
    event's CreateTime, matched by id (record keys), over events scheduled in the steady
    window (after warmup_s). Both clocks are this machine's. The delivery part includes the
    worker's fetch: Tansu does not answer a waiting fetch when data arrives
    (kafka_client.Consumer), so a caught-up worker's fetch returns only when
    fetch_max_wait_ms (the worker's, 20 ms) expires. ``launcher``: arguments put between the
    Python interpreter and the measured program's own (`latency_trace.py` traces it so).
    """
    gc.collect()
    gc.freeze()  # the bench's own objects: keep the load generator's collector off them
    prefix = env.prefix(f"lat-{int(rate)}")
    topics = create_topics(env.settings, prefix, 1)
    state = env.tmp / f"{prefix}sqlite"
    if subject == "worker":
        args = cli_worker_args(env, prefix, model, state, 5.0)
    else:
        spec = {
            "bootstrap": env.settings.bootstrap_servers,
            "prefix": prefix,
            "payload": prediction_sized_payload(env).hex(),
        }
        args = [PYTHON, __file__, "--_child", "io-loop", json.dumps(spec)]
    args = [PYTHON, *launcher, *args[1:]]
    proc, _out, err = start_child(env, args, f"latency-{subject}-{int(rate)}")
    deadline = time.monotonic() + 90
    while "assigned partitions [0]" not in err.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"latency {subject} did not start: {err.read_text()[-2000:]}")
        time.sleep(0.05)
    samples = env.samples
    stop = threading.Event()
    sent = {"events": 0, "t0_ms": None, "t_end_ms": None, "max_delay_ms": 0.0}
    failure: list[BaseException] = []

    def label(k: int, ts: int) -> tuple[int, bytes, bytes]:
        value = orjson.dumps({"id": f"L{k}", "label": samples[k % len(samples)].y})
        return ts, f"L{k}".encode(), value

    def publish() -> None:
        publisher = LoadPublisher(env.settings.bootstrap_servers)
        try:
            t0 = time.perf_counter()
            t0_ms = sent["t0_ms"] = time.time_ns() // 1_000_000
            ms_per_event = 1000 / rate
            i = tick = 0
            while not stop.is_set():
                due = int((time.perf_counter() - t0) * rate) + 1
                events, labels = [], []
                for j in range(i, due):
                    ts = t0_ms + int(j * ms_per_event)
                    if j >= LABEL_DELAY:
                        labels.append(label(j - LABEL_DELAY, ts))
                    value = orjson.dumps({"id": f"L{j}", "features": samples[j % len(samples)].x})
                    events.append((ts, f"L{j}".encode(), value))
                if events:
                    publisher.send({topics["labels"]: labels, topics["events"]: events})
                    sent["max_delay_ms"] = max(
                        sent["max_delay_ms"], (time.perf_counter() - t0) * 1000 - i * ms_per_event
                    )
                    i = due
                tick += 1
                time.sleep(max(0.0, t0 + tick * tick_s - time.perf_counter()))
            sent["t_end_ms"] = t0_ms + int((i - 1) * ms_per_event)
            now_ms = time.time_ns() // 1_000_000
            publisher.send(
                {topics["labels"]: [label(k, now_ms) for k in range(max(0, i - LABEL_DELAY), i)]}
            )
            publisher.wait_acked(30)
            sent["events"] = i
        except BaseException as e:  # reported by the main thread
            failure.append(e)
        finally:
            publisher.close()

    broker_cpu0 = proc_cpu_s(env.broker_pid)
    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    watcher = Consumer(env.settings, client_id="bench-latency-watch")
    try:
        watcher.assign([(topics["predictions"], 0)])
        deadline = time.monotonic() + 90
        first_pred = None
        while first_pred is None and time.monotonic() < deadline and not failure:
            recs = watcher.poll(100)
            if recs:
                first_pred = min(r.timestamp for r in recs)
        if first_pred is None:
            raise TimeoutError(f"no prediction within 90 s: {err.read_text()[-2000:]}")
    finally:
        watcher.close()
    time.sleep(max(0.0, sent["t0_ms"] / 1000 + warmup_s - time.time()))
    model_pid = (child_pids(proc.pid) or [None])[0]
    cpu0 = [
        proc_cpu_s(proc.pid),
        proc_cpu_s(model_pid),
        proc_cpu_s(env.broker_pid),
        time.process_time(),
    ]
    # Tansu's fetches cost more as a partition grows: watch the broker second by second.
    broker_by_second, last = [], cpu0[2]
    for second in range(1, int(steady_s) + 1):
        time.sleep(max(0.0, sent["t0_ms"] / 1000 + warmup_s + second - time.time()))
        now = proc_cpu_s(env.broker_pid)
        broker_by_second.append(None if now is None or last is None else now - last)
        last = now
    time.sleep(max(0.0, sent["t0_ms"] / 1000 + warmup_s + steady_s - time.time()))
    cpu1 = [
        proc_cpu_s(proc.pid),
        proc_cpu_s(model_pid),
        proc_cpu_s(env.broker_pid),
        time.process_time(),
    ]
    steady_cpu = [
        None if a is None or b is None else (b - a) / steady_s for a, b in zip(cpu0, cpu1)
    ]
    stop.set()
    publisher.join(timeout=60)
    if failure:
        raise failure[0]
    code, usage, peak = wait_child(proc, timeout=120)
    broker_cpu = (proc_cpu_s(env.broker_pid) or 0) - (broker_cpu0 or 0)
    if code != 0:
        raise RuntimeError(f"latency {subject} exited {code}: {err.read_text()[-3000:]}")
    events = {k: ts for k, ts, _ in read_keys_and_times(env.settings, topics["events"])}
    preds = {k: ts for k, ts, _ in read_keys_and_times(env.settings, topics["predictions"])}
    lo, hi = sent["t0_ms"] + warmup_s * 1000, sent["t_end_ms"]
    window = [(ts, preds.get(k)) for k, ts in events.items() if lo <= ts <= hi]
    lat = sorted(p - e for e, p in window if p is not None)
    per_second: dict[int, list[int]] = {}
    for e, p in window:
        if p is not None:
            per_second.setdefault(int((e - lo) // 1000), []).append(p - e)
    p99_by_second = [percentile(sorted(v), 99) for _, v in sorted(per_second.items())]
    missing = sum(1 for _, p in window if p is None)
    wall = (sent["t_end_ms"] - sent["t0_ms"]) / 1000
    return {
        "topic_prefix": prefix,
        "state": str(state),
        "offered_events_per_s": rate,
        "achieved_events_per_s": sent["events"] / wall,
        "tick_ms": tick_s * 1000,
        "publisher_max_delay_ms": sent["max_delay_ms"],
        "events_published": sent["events"],
        "window_events": len(window),
        "window_s": (hi - lo) / 1000,
        "missing_predictions": missing,
        "first_prediction_after_s": (first_pred - sent["t0_ms"]) / 1000,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else None,
        "mean_ms": sum(lat) / len(lat) if lat else None,
        "p99_ms_by_second": p99_by_second,
        "broker_cpu_by_second": broker_by_second,
        "worker_peak_rss_mb": peak,
        "worker_cpu_s": usage.ru_utime + usage.ru_stime,
        "worker_wall_s": wall,
        "broker_cpu_s": broker_cpu,
        # CPU seconds per second of the steady window: how busy each part of the machine was
        "steady_cpu": dict(
            zip(("worker_io", "worker_model", "broker", "load_generator"), steady_cpu)
        ),
    }


def measure_pending_memory(env: Env, n_pending: int, model: str = "lr") -> dict:
    """Memory of a Learner holding ``n_pending`` pending joins (events scored, labels never
    arriving), alone in a child process (``--_child pending``).

    The child builds a Learner (default LearnerConfig, so max_pending = 1,000,000), feeds it
    ``n_pending`` events decoded from wire bytes with ``decode_event`` (SEA features, ids
    ``p0``, ``p1``, ...) through ``process_event`` and drops the outputs. RSS (``VmRSS``)
    is read after a warm-up of 1000 events and at the end, after ``gc.collect()``;
    bytes per pending join = difference / n_pending. The pending dict is bounded by
    ``LearnerConfig.max_pending`` (``--max-pending``, per partition; the oldest join is
    expired to the dead-letter topic as ``join_expired``) and by ``pending_ttl``
    (event-time, off by default). Also: size of the checkpoint blob (``to_bytes``) and how
    long pickling it takes, since each checkpoint pickles every pending join.
    """
    spec = {"n": n_pending, "model": model}
    proc, out, err = start_child(
        env, [PYTHON, __file__, "--_child", "pending", json.dumps(spec)], "pending"
    )
    code, usage, peak = wait_child(proc, timeout=900)
    if code != 0:
        raise RuntimeError(f"pending-memory child exited {code}: {err.read_text()[-3000:]}")
    res = last_json_line(out)
    res["child_peak_rss_mb"] = peak
    return res


def _rss_bytes(field_name: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _child_pending(spec: dict) -> int:
    """Child process of measure_pending_memory."""
    from driftstream.stream.codec import decode_event, decode_label
    from driftstream.stream.learner import Learner, LearnerConfig

    n = spec["n"]
    feats = [s.x for s in synthetic("sea", 1000, seed=7)]  # not the warm-up samples
    learner = Learner(LearnerConfig(model=spec["model"]))
    samples = list(synthetic("sea", 1000, seed=42))
    for i, smp in enumerate(samples):  # warm-up: model, detectors, schema; joined, not pending
        learner.process_event(
            decode_event(orjson.dumps({"id": f"w{i}", "features": smp.x, "ts": i}), i), 0
        )
        learner.process_label(
            decode_label(orjson.dumps({"id": f"w{i}", "label": smp.y, "ts": i}), i)
        )
    assert not learner.pending
    gc.collect()
    rss0 = _rss_bytes()
    start = time.perf_counter()
    dumps = orjson.dumps
    for i in range(n):
        learner.process_event(
            decode_event(
                dumps({"id": f"p{i}", "features": feats[i % 1000], "ts": 1000 + i}), 1000 + i
            ),
            0,
        )
    seconds = time.perf_counter() - start
    gc.collect()
    rss1 = _rss_bytes()
    hwm_before_pickle = _rss_bytes("VmHWM")
    t = time.perf_counter()
    blob = learner.to_bytes()
    pickle_s = time.perf_counter() - t
    hwm_after_pickle = _rss_bytes("VmHWM")
    # The worker's way (consumers.model_process): a fork writes the state; scoring stops
    # only for the fork itself.
    from driftstream.consumers.model_process import ModelHost

    spool = tempfile.mkdtemp(prefix="driftstream-bench-state-")
    tempfile.tempdir = spool
    host = ModelHost(fork_above=1)
    t = time.perf_counter()
    path = host._serialize(0, learner)
    fork_stall_s = time.perf_counter() - t
    pid, _ = host.writing[0]
    os.waitpid(pid, 0)
    fork_written_s = time.perf_counter() - t
    host.writing.clear()
    assert Path(path).stat().st_size == len(blob)
    shutil.rmtree(spool, ignore_errors=True)
    print(
        json.dumps(
            {
                "n": n,
                "pending": len(learner.pending),
                "expired": learner.rejected.get("join_expired", 0),
                "max_pending": learner.config.max_pending,
                "model": spec["model"],
                "rss_before_mb": rss0 / 2**20,
                "rss_after_mb": rss1 / 2**20,
                "bytes_per_pending": (rss1 - rss0) / n,
                "vm_hwm_mb": hwm_after_pickle / 2**20,
                "checkpoint_pickle_extra_peak_mb": (hwm_after_pickle - max(hwm_before_pickle, rss1))
                / 2**20,
                "checkpoint_bytes": len(blob),
                "checkpoint_bytes_per_pending": len(blob) / max(1, n),
                "checkpoint_pickle_s": pickle_s,
                "feed_seconds": seconds,
                "checkpoint_fork_stall_s": fork_stall_s,
                "checkpoint_fork_written_s": fork_written_s,
            }
        )
    )
    return 0


# =============================================================================================
# Report
# =============================================================================================


def fmt(v, spec: str = ",.0f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and v != v:
        return "nan"
    return format(v, spec)


def table(rows: list[list[str]], header: list[str], right_from: int = 1) -> str:
    all_rows = [header] + rows
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    out = []
    for k, r in enumerate(all_rows):
        out.append(
            "  ".join(
                c.rjust(w) if i >= right_from else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def report(res: dict) -> str:
    lines = [f"driftstream throughput bench — {res['title']}", ""]
    header = [
        "measurement",
        "model",
        "parts",
        "events",
        "seconds",
        "events/s",
        "CPU s",
        "CPU µs/event",
        "note",
    ]
    rows = []

    def row(name, model, parts, r, note="", cpu_key="cpu_s"):
        if not r:
            rows.append([name, model, parts, "", "", "FAILED", "", "", "see notes"])
            return
        cpu = r.get(cpu_key)
        rows.append(
            [
                name,
                model,
                parts,
                fmt(r["events"]),
                fmt(r["seconds"], ".2f"),
                fmt(r["events_per_s"]),
                fmt(cpu, ".2f"),
                fmt(cpu / r["events"] * 1e6 if cpu is not None else None, ".0f"),
                note,
            ]
        )

    for m in res["models"]:
        row("River in-process (simulate_qa)", m, "—", res["river"][m], "the limit")
    for m in res["models"]:
        row(
            "driftstream learner offline",
            m,
            "—",
            res["learner_offline"][m],
            "merge + learner, no Kafka, no codec",
        )
    c = res.get("ceiling")
    if c:
        row(
            "Kafka I/O ceiling: read 2, write 1",
            "—",
            "1",
            c,
            "no model, no decode; send() per record",
        )
        n = c["events"]
        rows.append(
            [
                "  consume only (event + label)",
                "—",
                "1",
                fmt(n),
                "",
                fmt(c["consume_only_records_per_s"] / 2),
                fmt(c["consume_only_cpu_s"], ".2f"),
                fmt(c["consume_only_cpu_s"] / n * 1e6, ".0f"),
                f"{fmt(c['consume_only_records_per_s'])} records/s",
            ]
        )
        rows.append(
            [
                "  produce only (1 prediction)",
                "—",
                "1",
                fmt(n),
                "",
                fmt(c["produce_only_msgs_per_s"]),
                fmt(c["produce_only_cpu_s"], ".2f"),
                fmt(c["produce_only_cpu_s"] / n * 1e6, ".0f"),
                f"{c['payload_bytes']} B values",
            ]
        )
    if res.get("ceiling_send_batch"):
        row(
            "Kafka I/O ceiling, send_batch per poll",
            "—",
            "1",
            res["ceiling_send_batch"],
            "as above, predictions written as the worker writes them",
        )
    for m in res["models"]:
        w = res.get("worker_1p", {}).get(m)
        row(
            "driftstream worker",
            m,
            "1",
            w,
            f"CPU s: I/O process {fmt(w['io_process_cpu_s'], '.2f')} (main thread "
            f"{fmt(w['main_thread_cpu_s'], '.2f')}), model process "
            f"{fmt(w['model_process_cpu_s'], '.2f')}"
            if w
            else "",
        )
    for m in res["models"]:
        w = res.get("worker_1p_inproc", {}).get(m)
        row(
            "  same, --model-process off",
            m,
            "1",
            w,
            f"one process; main thread {fmt(w['main_thread_cpu_s'], '.2f')} CPU s" if w else "",
        )
    for m in res["models"]:
        w = res.get("worker_4p", {}).get(m)
        if not w:
            rows.append(
                [
                    "driftstream, 2 workers (pred-ts span)",
                    m,
                    "4",
                    "",
                    "",
                    "FAILED",
                    "",
                    "",
                    "see notes",
                ]
            )
        else:
            rows.append(
                [
                    "driftstream, 2 workers (pred-ts span)",
                    m,
                    "4",
                    fmt(w["events"]),
                    fmt(w["pred_ts_span_s"], ".2f"),
                    fmt(w["events_per_s"]),
                    "",
                    "",
                    f"sum of per-worker rates {fmt(w['sum_of_worker_rates'])}/s; "
                    f"launch -> both exited {fmt(w['launch_to_exit_s'], '.1f')} s",
                ]
            )
    for m in res["models"]:
        r = res.get("naive", {}).get(m)
        row(
            "naive peer: commit per record",
            m,
            "1",
            r,
            f"{fmt(r['labels_before_event'])} labels read before their event" if r else "",
        )
    lines.append(table(rows, header, right_from=2))
    w4 = {m: w for m, w in res.get("worker_4p", {}).items() if w}
    if w4:
        lines += [
            "",
            "2 workers on 4 partitions, per worker (partitions of its first assignment;"
            " CPU and RSS of the whole process, start-up included)",
        ]
        rows = []
        for m, w in w4.items():
            for k, d in enumerate(w["workers_detail"]):
                rows.append(
                    [
                        m,
                        str(k),
                        " ".join(d["assignments"]),
                        fmt(d.get("events")),
                        fmt(d.get("span_s"), ".2f"),
                        fmt(d.get("events_per_s")),
                        fmt(d["cpu_s"], ".1f"),
                        fmt(d["peak_rss_mb"], ".0f"),
                        fmt(d["checkpoints"]),
                    ]
                )
            rows.append(
                [
                    m,
                    "",
                    f"start stagger {fmt(w['start_stagger_s'], '.2f')} s",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
        lines.append(
            table(
                rows,
                [
                    "model",
                    "worker",
                    "assignments",
                    "events",
                    "span s",
                    "events/s",
                    "CPU s",
                    "peak RSS MB",
                    "checkpoints",
                ],
                right_from=3,
            )
        )
    co = res.get("codec")
    if co:
        lines += [
            "",
            f"codec per event: decode event {co['decode_event_us']:.1f} µs + decode "
            f"label {co['decode_label_us']:.1f} µs + encode prediction "
            f"{co['encode_prediction_us']:.1f} µs = {co['total_us']:.1f} µs; sizes "
            f"event {co['event_bytes']:.0f} B, label {co['label_bytes']:.0f} B, "
            f"prediction {co['prediction_bytes']:.0f} B",
        ]
    lat = res.get("latency")
    if lat:
        lines += [
            "",
            "latency, event publish -> prediction publish (CreateTime to CreateTime), "
            "1 partition, 1 worker, lr",
        ]
        rows = []
        for name, r in lat.items():
            if not r:
                rows.append([name, "FAILED"] + [""] * 14)
                continue
            cpu = r["steady_cpu"]
            rows.append(
                [
                    name,
                    fmt(r["offered_events_per_s"]),
                    fmt(r["tick_ms"], ".0f"),
                    fmt(r["achieved_events_per_s"]),
                    fmt(r["window_s"], ".1f"),
                    fmt(r["window_events"]),
                    fmt(r["p50_ms"], ".0f"),
                    fmt(r["p95_ms"], ".0f"),
                    fmt(r["p99_ms"], ".0f"),
                    fmt(r["max_ms"], ".0f"),
                    fmt(r["missing_predictions"]),
                ]
                + [
                    fmt(None if cpu[k] is None else cpu[k] * 100, ".0f")
                    for k in ("worker_io", "worker_model", "broker", "load_generator")
                ]
                + [fmt(r["publisher_max_delay_ms"], ".0f")]
            )
        lines.append(
            table(
                rows,
                [
                    "load",
                    "offered ev/s",
                    "batch ms",
                    "achieved ev/s",
                    "window s",
                    "events",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "missing",
                    "I/O CPU %",
                    "model CPU %",
                    "broker CPU %",
                    "load CPU %",
                    "load delay ms",
                ],
            )
        )
        lines.append(
            "(CPU % over the steady window: worker I/O process, model process, "
            "broker, load generator; batch ms: the load generator sends what is due "
            "this often; load delay: the most a record waited past its "
            'scheduled time to be sent; "I/O ceiling": the Kafka I/O ceiling\'s '
            "loop, same client and settings, no model, under the same load, its runs "
            "alternating with the worker's: what the client and broker cost alone)"
        )
        for name, r in lat.items():
            if r and r.get("broker_cpu_by_second"):
                lines.append(
                    f"{name}, second by second: p99 ms "
                    + " ".join(fmt(v, ".0f") for v in r["p99_ms_by_second"])
                    + "; broker CPU % "
                    + " ".join(
                        fmt(None if v is None else v * 100, ".0f")
                        for v in r["broker_cpu_by_second"]
                    )
                )
    mem = res.get("memory", {})
    if mem:
        lines += ["", "memory"]
        rows = []
        for m in res["models"]:
            w = res.get("worker_1p", {}).get(m)
            if w:
                rows.append(
                    [
                        f"worker peak RSS, 1 partition, {m}",
                        fmt(w["peak_rss_mb"], ".0f"),
                        "MB",
                        "VmHWM, I/O process + model process",
                    ]
                )
            w = res.get("worker_4p", {}).get(m)
            if w:
                rss = " / ".join(fmt(d["peak_rss_mb"], ".0f") for d in w["workers_detail"])
                rows.append(
                    [
                        f"worker peak RSS, 4 partitions / 2 workers, {m}",
                        rss,
                        "MB",
                        "each worker (I/O + model process)",
                    ]
                )
        p = mem.get("pending")
        if p:
            rows.append(
                [
                    f"learner with {p['n']:,} pending joins ({p['model']})",
                    fmt(p["rss_after_mb"], ".0f"),
                    "MB",
                    f"RSS; {fmt(p['rss_before_mb'], '.0f')} MB before the joins",
                ]
            )
            rows.append(
                [
                    "  per pending join (RSS)",
                    fmt(p["bytes_per_pending"], ".0f"),
                    "bytes",
                    f"bounded by LearnerConfig.max_pending={p['max_pending']:,} "
                    "(--max-pending, per partition) and pending_ttl",
                ]
            )
            rows.append(
                [
                    "  per pending join (checkpoint blob)",
                    fmt(p["checkpoint_bytes_per_pending"], ".0f"),
                    "bytes",
                    f"blob {p['checkpoint_bytes'] / 2**20:.0f} MB, pickled in "
                    f"{p['checkpoint_pickle_s']:.2f} s, peak RSS "
                    f"+{p['checkpoint_pickle_extra_peak_mb']:.0f} MB while pickling",
                ]
            )
            if p.get("checkpoint_fork_stall_s") is not None:
                rows.append(
                    [
                        "  scoring paused per checkpoint",
                        fmt(p["checkpoint_fork_stall_s"] * 1000, ".0f"),
                        "ms",
                        f"the model process forks a writer (from {FORK_STATE_ABOVE:,} pending "
                        f"joins on); "
                        f"state written in {p['checkpoint_fork_written_s']:.2f} s meanwhile",
                    ]
                )
        lines.append(table(rows, ["what", "value", "unit", "note"], right_from=1))
    ratios = res.get("ratios", {})
    if ratios:
        lines += ["", "ratios (driftstream worker, 1 partition, events/s over ...)"]
        rows = [
            [
                m,
                fmt(r.get("vs_river"), ".2f"),
                fmt(r.get("vs_learner_offline"), ".2f"),
                fmt(r.get("vs_ceiling"), ".2f"),
                fmt(r.get("vs_ceiling_send_batch"), ".2f"),
                fmt(r.get("vs_naive"), ".2f"),
                fmt(r.get("4p_2w_vs_1p"), ".2f"),
            ]
            for m, r in ratios.items()
        ]
        lines.append(
            table(
                rows,
                [
                    "model",
                    "/ River",
                    "/ learner offline",
                    "/ Kafka ceiling",
                    "/ ceiling, send_batch",
                    "/ naive peer",
                    "4p-2w / 1p",
                ],
            )
        )
        if ratios.get("lr", {}).get("vs_ceiling_of_medians") is not None:
            lines.append(
                "(lr / Kafka ceilings: the median of the back-to-back pairs' ratios; "
                "median worker / median ceiling: "
                f"{ratios['lr']['vs_ceiling_of_medians']:.2f}, by send_batch: "
                f"{fmt(ratios['lr'].get('vs_ceiling_send_batch_of_medians'), '.2f')})"
            )
    reps = res.get("repeats", {})
    if len(reps.get("worker_1p_lr", [])) > 1:
        workers, ceilings = reps["worker_1p_lr"], reps["ceiling"]
        batched = reps.get("ceiling_send_batch", [])

        def latency_runs(key: str) -> str:
            return " · ".join(
                "FAILED" if r is None else f"{r['p50_ms']}/{r['p95_ms']}/{r['p99_ms']}"
                for r in reps.get(key, [])
            )

        lines += [
            "",
            "every run, in order (the tables above show the median):",
            f"  worker lr 1 partition, events/s: {' · '.join(map(fmt, workers))}",
            f"  Kafka I/O ceiling, events/s:     {' · '.join(map(fmt, ceilings))}",
            "  worker / ceiling, run by run:    "
            + " · ".join(fmt(_ratio(w, c), ".2f") for w, c in zip(workers, ceilings)),
            f"  ceiling by send_batch, events/s: {' · '.join(map(fmt, batched))}",
            "  worker / that, run by run:       "
            + " · ".join(fmt(_ratio(w, c), ".2f") for w, c in zip(workers, batched)),
            f"  latency at half max, p50/p95/p99 ms: {latency_runs('latency_half')}",
            "  the same, Kafka I/O ceiling's loop: " + latency_runs("latency_half_io_ceiling"),
        ]
    lines += ["", *res["notes"]]
    return "\n".join(lines)


# =============================================================================================
# Main
# =============================================================================================


def attempt(res: dict, name: str, fn, *args, **kwargs):
    """Run one measurement; on failure record the error under res["errors"] and go on."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # one failed measurement must not lose the others
        msg = f"{type(e).__name__}: {e}"
        log(f"  FAILED: {msg[:2000]}")
        res.setdefault("errors", {})[name] = msg
        return None


def median_run(runs: list[dict | None], key: str) -> dict | None:
    """The run with the median ``key`` (the lower one of two middles); failed runs skipped."""
    done = sorted((r for r in runs if r), key=lambda r: r[key])
    return done[(len(done) - 1) // 2] if done else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _get(d: dict | None, *keys):
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    return d


def measure_throughputs(
    res: dict, env: Env, models: list[str], repeats: int, n: int, naive_n: int
) -> None:
    """The Kafka throughput phases, on one broker: 1-partition worker (and the ceiling,
    alternating), the same in one process, 2 workers on 4 partitions, the naive peer."""
    res["worker_1p"] = {}
    res["worker_1p_inproc"] = {}
    res.setdefault("repeats", {})
    for m in models:
        # lr: worker and ceiling alternate `repeats` times; their medians are the result
        workers, ceilings, batched = [], [], []
        for _ in range(repeats if m == "lr" else 1):
            log(f"worker, 1 partition, {m} (loading {2 * n} records first)")
            workers.append(w := attempt(res, f"worker_1p-{m}", measure_worker_1p, env, m))
            log(f"  {fmt(_get(w, 'events_per_s'))} events/s")
            if m == "lr" and "1p-lr" in env.loaded:
                # The ceiling reads the worker's input topics again (reading is repeatable).
                log("Kafka I/O ceiling")
                ceilings.append(
                    c := attempt(
                        res,
                        "ceiling",
                        measure_kafka_ceiling,
                        env,
                        topic_names(env.loaded["1p-lr"]),
                        n,
                    )
                )
                log(f"  {fmt(_get(c, 'events_per_s'))} events/s")
                log("Kafka I/O ceiling, predictions by send_batch")
                batched.append(
                    c := attempt(
                        res,
                        "ceiling_send_batch",
                        measure_kafka_ceiling,
                        env,
                        topic_names(env.loaded["1p-lr"]),
                        n,
                        batched=True,
                    )
                )
                log(f"  {fmt(_get(c, 'events_per_s'))} events/s")
        res["worker_1p"][m] = median_run(workers, "events_per_s")
        if m == "lr":
            res["ceiling"] = median_run(ceilings, "events_per_s")
            res["ceiling_send_batch"] = median_run(batched, "events_per_s")
            res["repeats"]["worker_1p_lr"] = [_get(w, "events_per_s") for w in workers]
            res["repeats"]["ceiling"] = [_get(c, "events_per_s") for c in ceilings]
            res["repeats"]["ceiling_send_batch"] = [_get(c, "events_per_s") for c in batched]
        log(f"worker, 1 partition, {m}, in one process (--model-process off)")
        res["worker_1p_inproc"][m] = w = attempt(
            res, f"worker_1p_inproc-{m}", measure_worker_1p, env, m, model_process=False
        )
        log(f"  {fmt(_get(w, 'events_per_s'))} events/s")

    res["worker_4p"] = {}
    for m in models:
        log(f"2 workers, 4 partitions, {m}")
        res["worker_4p"][m] = w = attempt(res, f"worker_4p-{m}", measure_worker_4p, env, m)
        log(f"  {fmt(_get(w, 'events_per_s'))} events/s (pred-ts span)")

    res["naive"] = {}
    for m in models:
        log(f"naive peer {m}, n={naive_n}")
        res["naive"][m] = r = attempt(res, f"naive-{m}", measure_naive_peer, env, m, naive_n)
        log(f"  {fmt(_get(r, 'events_per_s'))} events/s")


def measure_latencies(
    res: dict, tmp: Path, samples: list[Sample], repeats: int, warmup_s: float, steady_s: float
) -> None:
    """Latency at half and a quarter of the 1-partition lr maximum, and at 100/s; at half,
    also of the Kafka I/O ceiling's loop, alternating with the worker's runs, and of both
    once with the load in 5 ms batches.

    Each run gets a broker of its own: Tansu keeps every record in memory, and on the broker
    that had served the throughput phases, p99 at half max came out ~40 % higher (107 vs
    74-76 ms, two runs each, same load and broker CPU).
    """
    res["latency"] = {}
    res.setdefault("repeats", {})
    rate = (
        round(
            (
                _get(res, "worker_1p", "lr", "events_per_s")
                or _get(res, "worker_4p", "lr", "sum_of_worker_rates")
                or 10_000
            )
            / 4
        )
        * 2
    )

    def run(
        name: str, offered: int, steady: float, subject: str = "worker", tick_s: float = LOAD_TICK_S
    ) -> dict | None:
        with broker_env(tmp, samples) as env:
            return attempt(
                res,
                name,
                measure_latency,
                env,
                offered,
                warmup_s,
                steady,
                subject=subject,
                tick_s=tick_s,
            )

    # What the client and broker alone cost in latency at that rate, under the same host speed
    runs, floors = [], []
    for _ in range(repeats):
        log(f"latency at {rate} events/s (half the 1-partition lr maximum)")
        runs.append(r := run("latency-half", rate, steady_s))
        log(f"  p50 {_get(r, 'p50_ms')} p99 {_get(r, 'p99_ms')} ms")
        log("  the same load through the Kafka I/O ceiling's loop (no model)")
        floors.append(r := run("latency-half-io-ceiling", rate, steady_s, subject="ceiling"))
        log(f"  p50 {_get(r, 'p50_ms')} p99 {_get(r, 'p99_ms')} ms")
    res["latency"]["half of max"] = median_run(runs, "p99_ms")
    res["latency"]["half, I/O ceiling"] = median_run(floors, "p99_ms")
    for key, rs in (("latency_half", runs), ("latency_half_io_ceiling", floors)):
        res["repeats"][key] = [
            None if r is None else {k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms")} for r in rs
        ]
    # The same rate in 5 ms batches: the broker's cost grows with the batches stored.
    for name, key, subject in (
        ("worker", "half, 5 ms batches", "worker"),
        ("the Kafka I/O ceiling's loop", "half, 5 ms batches, I/O ceiling", "ceiling"),
    ):
        log(f"latency at {rate} events/s in 5 ms batches, {name}")
        res["latency"][key] = r = run(
            f"latency-half-5ms-{subject}", rate, steady_s, subject, SMALL_BATCHES_TICK_S
        )
        log(f"  p50 {_get(r, 'p50_ms')} p99 {_get(r, 'p99_ms')} ms")
    log(f"latency at {rate // 2} events/s (a quarter of the maximum)")
    res["latency"]["quarter of max"] = r = run("latency-quarter", rate // 2, steady_s / 2)
    log(f"  p50 {_get(r, 'p50_ms')} p99 {_get(r, 'p99_ms')} ms")
    log("latency at 100 events/s")
    res["latency"]["low (100/s)"] = r = run("latency-low", 100, steady_s / 2)
    log(f"  p50 {_get(r, 'p50_ms')} p99 {_get(r, 'p99_ms')} ms")


def run_all(args: argparse.Namespace) -> dict:
    n = args.n
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    models = list(MODELS)
    naive_n = min(n, args.naive_n or (5_000 if quick else 20_000))
    n_pending = args.pending or (100_000 if quick else 1_000_000)
    warmup_s, steady_s = (2.0, 6.0) if quick else (5.0, 20.0)
    res: dict = {"n": n, "quick": quick, "models": models, "repeats_asked": repeats, "notes": []}
    started = time.perf_counter()
    log(f"building {n} samples")
    samples = make_samples(n)

    res["river"], res["learner_offline"] = {}, {}
    for m in models:
        log(f"River in-process {m}")
        res["river"][m] = r = attempt(res, f"river-{m}", measure_river_inprocess, samples, m)
        log(f"  {fmt(_get(r, 'events_per_s'))} events/s")
        log(f"learner offline {m}")
        res["learner_offline"][m] = r = attempt(
            res, f"learner-{m}", measure_learner_offline, samples, m
        )
        log(f"  {fmt(_get(r, 'events_per_s'))} events/s")
    log("codec")
    res["codec"] = attempt(res, "codec", measure_codec, samples)

    tmp = Path(tempfile.mkdtemp(prefix="driftstream-bench-"))
    try:
        with broker_env(tmp, samples) as env:
            log(f"broker at {env.settings.bootstrap_servers}")
            measure_throughputs(res, env, models, repeats, n, naive_n)
        measure_latencies(res, tmp, samples, repeats, warmup_s, steady_s)
        log(f"learner with {n_pending} pending joins")
        env = Env(None, None, tmp, samples)  # no Kafka: the Env only runs the child process
        try:
            res["memory"] = {
                "pending": attempt(res, "pending", measure_pending_memory, env, n_pending)
            }
        finally:
            stop_children(env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratios = {}
    for m in models:
        w = _get(res, "worker_1p", m, "events_per_s")
        ratios[m] = {
            "vs_river": _ratio(w, _get(res, "river", m, "events_per_s")),
            "vs_learner_offline": _ratio(w, _get(res, "learner_offline", m, "events_per_s")),
            "vs_ceiling": _ratio(w, _get(res, "ceiling", "events_per_s")),
            "vs_ceiling_send_batch": _ratio(w, _get(res, "ceiling_send_batch", "events_per_s")),
            "vs_naive": _ratio(w, _get(res, "naive", m, "events_per_s")),
            "4p_2w_vs_1p": _ratio(_get(res, "worker_4p", m, "events_per_s"), w),
        }
    # The lr worker and the ceiling run in back-to-back pairs: the median of the pairs'
    # ratios compares them at the same host speed, which drifts over minutes here.
    for key in ("ceiling", "ceiling_send_batch"):
        pairs = [
            _ratio(w, c)
            for w, c in zip(
                _get(res, "repeats", "worker_1p_lr") or [], _get(res, "repeats", key) or []
            )
        ]
        pairs = [r for r in pairs if r is not None]
        if "lr" in ratios and pairs:
            lr = ratios["lr"]
            lr[f"vs_{key}_of_medians"] = lr[f"vs_{key}"]
            lr[f"vs_{key}"] = statistics.median_low(pairs)  # as median_run: the lower middle
    res["ratios"] = ratios
    res["runtime_s"] = time.perf_counter() - started
    if naive_n < n:
        res["notes"].append(
            f"naive peer: first {naive_n:,} samples only (a synchronous commit "
            "per record makes it slow); its events/s is comparable, its n is not."
        )
    for name, msg in res.get("errors", {}).items():
        res["notes"].append(f"FAILED {name}: {msg[:400]}")
    return res


def run_profile(args: argparse.Namespace) -> dict:
    """--profile: only the 1-partition worker measurement, under cProfile."""
    samples = make_samples(args.n)
    tmp = Path(tempfile.mkdtemp(prefix="driftstream-bench-"))
    prof = tmp / "worker.prof"
    try:
        with broker_env(tmp, samples) as env:
            log(f"worker, 1 partition, {args.profile_model}, under cProfile")
            w = measure_worker_1p(
                env, args.profile_model, profile_path=prof, profile_io=args.profile_io
            )
        text = []
        for key, title in (("cumulative", "cumulative time"), ("tottime", "own (self) time")):
            buf = io.StringIO()
            stats = pstats.Stats(str(prof), stream=buf)
            stats.sort_stats(key).print_stats(25)
            body = buf.getvalue()
            body = body[body.find("   ncalls") :] if "   ncalls" in body else body
            text.append(f"top 25 by {title}:\n{_shorten_paths(body)}")
        stats = pstats.Stats(str(prof))
        w["profile_total_s"] = stats.total_tt
        w["profile_text"] = "\n".join(text)
        return w
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _shorten_paths(text: str) -> str:
    site = str(Path(re.__file__).parent)
    text = text.replace(str(ROOT) + "/", "")
    text = re.sub(r"\S*/site-packages/", "", text)
    return text.replace(site + "/", "")


def machine_line() -> str:
    import river

    try:
        import kafka

        kv = kafka.__version__
    except Exception:  # pragma: no cover
        kv = "?"
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load {load[0]:.1f} at start, Python "
        f"{platform.python_version()}, River {river.__version__}, kafka-python {kv}, "
        f"embedded Tansu on loopback"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None, help="events (default 100000; --quick 10000)")
    p.add_argument(
        "--quick", action="store_true", help="n=10k, short latency phases, 100k pending joins"
    )
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    p.add_argument(
        "--profile",
        action="store_true",
        help="only the 1-partition worker run, under cProfile; print top 25",
    )
    p.add_argument("--profile-model", default="lr", choices=MODELS)
    p.add_argument(
        "--profile-io",
        action="store_true",
        help="with --profile: keep the model process and profile the I/O process "
        "alone (default: everything in one process, --model-process off)",
    )
    p.add_argument(
        "--naive-n",
        type=int,
        default=None,
        help="events for the naive peer (default min(n, 20000); --quick 5000)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs of the lr worker, the ceiling and the half-maximum latency, "
        "whose medians are reported (default 3; --quick 1)",
    )
    p.add_argument(
        "--pending",
        type=int,
        default=None,
        help="pending joins for the memory figure (default 1000000; --quick 100000)",
    )
    p.add_argument("--_child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        kind, spec = args._child
        child = {"worker": _child_worker, "pending": _child_pending, "io-loop": _child_io_loop}
        return child[kind](json.loads(spec))
    if args.n is None:
        args.n = 10_000 if args.quick else 100_000
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        or "?"
    )
    if subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip():
        commit += " + uncommitted changes"
    title = (
        f"n={args.n:,} SEA events (drift at {args.n // 2:,}), labels delayed by "
        f"{LABEL_DELAY}; {machine_line()}; commit {commit}; "
        f"{datetime.date.today()}"
    )
    started = time.perf_counter()
    if args.profile:
        w = run_profile(args)
        print(f"driftstream worker profile — {title}")
        where = (
            "the I/O process (model process on)"
            if args.profile_io
            else "one process (--model-process off)"
        )
        print(
            f"1 partition, {args.profile_model}, {where}: {w['events_per_s']:,.0f} events/s "
            f"UNDER cProfile (not a result), {w['seconds']:.2f} s from first records to last "
            f"flush, main thread {w['main_thread_cpu_s']:.2f} CPU s, process "
            f"{w['io_process_cpu_s']:.2f} CPU s (cProfile sees the main thread only; "
            f"kafka-python's producer sender and heartbeat threads are the difference)"
        )
        print()
        print(w.pop("profile_text"))
        print(f"total runtime {time.perf_counter() - started:.0f} s")
        if args.json:
            print(json.dumps({"profile": w, "runtime_s": time.perf_counter() - started}))
        return 0
    res = run_all(args)
    res["title"] = title
    res["notes"] += [
        "Wall-clock figures are noisy on a machine shared with other work: the lr worker, the "
        f"ceiling and the latency at half max are medians of {res['repeats_asked']} runs, the "
        "rest one run. CPU s (process_time of the measured window; child processes: "
        "utime+stime) are steadier.",
        "worker 1p: first poll returning records -> producer.flush() after the last of 2n "
        "records; excludes group join, the final checkpoint and the idle exit.",
        "ceiling: same Consumer/Producer and settings, assign (no group), no decode, one "
        'prediction-sized send per event keyed by the record key; "send_batch": each '
        "poll's predictions in one Producer.send_batch, as the worker writes them (the "
        "latency runs' ceiling loop writes so too).",
        "latency: CreateTime(prediction, set at the worker's send) - CreateTime(event, its "
        "scheduled publish time; the load generator sends what is due every 10 ms, or 5 ms "
        "where the row says so), matched by "
        "id; Tansu does not answer a waiting fetch when data arrives, so an idle consumer sees "
        f"new records only after fetch_max_wait_ms ({FETCH_MAX_WAIT_MS}). The load generator "
        "runs on the same 2 cores; each latency run has a broker of its own.",
        f"total runtime {res['runtime_s']:.0f} s",
    ]
    print(report(res))
    if args.json:
        summary = {
            "events_per_s": _get(res, "worker_1p", "lr", "events_per_s"),
            "p99_ms": _get(res, "latency", "half of max", "p99_ms"),
            "p99_ms_io_ceiling": _get(res, "latency", "half, I/O ceiling", "p99_ms"),
            "p99_ms_5ms_batches": _get(res, "latency", "half, 5 ms batches", "p99_ms"),
            "p99_ms_5ms_batches_io_ceiling": _get(
                res, "latency", "half, 5 ms batches, I/O ceiling", "p99_ms"
            ),
            "ratio_vs_river": _get(res, "ratios", "lr", "vs_river"),
            "ratio_vs_ceiling": _get(res, "ratios", "lr", "vs_ceiling"),
            "ratio_vs_ceiling_send_batch": _get(res, "ratios", "lr", "vs_ceiling_send_batch"),
            "ratio_vs_naive": _get(res, "ratios", "lr", "vs_naive"),
        }
        summary.update({k: v for k, v in res.items() if k not in ("notes",)})
        summary["notes"] = res["notes"]
        print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
