"""Latency: event publish -> prediction publish at a steady offered rate, 1 partition.

`measure_latency` runs one worker (or the Kafka I/O ceiling's loop) under the load generator
and matches every event with its prediction by id; `measure_latencies` is the bench's latency
phase: half and a quarter of the measured 1-partition maximum and 100 events/s, each run on a
broker of its own.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import orjson

from bench.ceilings import prediction_sized_payload
from bench.load import (
    LABEL_DELAY,
    LOAD_TICK_S,
    SMALL_BATCHES_TICK_S,
    Env,
    LoadPublisher,
    broker_env,
    cli_worker_args,
    create_topics,
    read_keys_and_times,
    start_child,
)
from bench.procs import PYTHON, child_args, child_pids, proc_cpu_s, wait_child
from bench.runs import attempt, log, lookup, median_run
from driftstream.producers.sources import Sample
from driftstream.transport import Consumer

__all__ = ["measure_latencies", "measure_latency", "percentile"]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


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
    ``subject="ceiling"``: the Kafka I/O ceiling's loop, no model, `io_loop_child`); a
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
    Python interpreter and the measured program's own (`bench.latency_trace` traces it so).
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
            "client": env.settings.client,
            "prefix": prefix,
            "payload": prediction_sized_payload(env).hex(),
        }
        args = child_args("io-loop", spec)
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
                lookup(res, "worker_1p", "lr", "events_per_s")
                or lookup(res, "worker_4p", "lr", "sum_of_worker_rates")
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
        log(f"  p50 {lookup(r, 'p50_ms')} p99 {lookup(r, 'p99_ms')} ms")
        log("  the same load through the Kafka I/O ceiling's loop (no model)")
        floors.append(r := run("latency-half-io-ceiling", rate, steady_s, subject="ceiling"))
        log(f"  p50 {lookup(r, 'p50_ms')} p99 {lookup(r, 'p99_ms')} ms")
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
        log(f"  p50 {lookup(r, 'p50_ms')} p99 {lookup(r, 'p99_ms')} ms")
    log(f"latency at {rate // 2} events/s (a quarter of the maximum)")
    res["latency"]["quarter of max"] = r = run("latency-quarter", rate // 2, steady_s / 2)
    log(f"  p50 {lookup(r, 'p50_ms')} p99 {lookup(r, 'p99_ms')} ms")
    log("latency at 100 events/s")
    res["latency"]["low (100/s)"] = r = run("latency-low", 100, steady_s / 2)
    log(f"  p50 {lookup(r, 'p50_ms')} p99 {lookup(r, 'p99_ms')} ms")
