"""The driftstream worker measured: 1 partition (with and without its model process), and
2 worker processes on 4 partitions; the lr worker alternating with the Kafka I/O ceilings.

The 1-partition worker runs in a child process (`worker_child`) that times it from inside;
the 4-partition run starts two ``driftstream run`` processes as a user would and times them
from the predictions they wrote.
"""

from __future__ import annotations

import cProfile
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.ceilings import measure_kafka_ceiling, measure_naive_peer
from bench.load import (
    Env,
    cli_worker_args,
    load_topics,
    read_keys_and_times,
    start_child,
    stop_children,
)
from bench.offline import measure_river_inprocess
from bench.procs import child_args, last_json_line, proc_cpu_s, vm_hwm_mb, wait_child, wait_children
from bench.report import fmt
from bench.runs import attempt, log, lookup, median_run
from driftstream.transport import KafkaSettings, topic_names

__all__ = [
    "STALL_S",
    "WorkerStalled",
    "measure_throughputs",
    "measure_worker_1p",
    "measure_worker_4p",
    "stall_report",
    "worker_child",
]


def measure_worker_1p(
    env: Env,
    model: str,
    profile_path: Path | None = None,
    model_process: bool = True,
    profile_io: bool = False,
    store: Callable[[str], dict] | None = None,
    checkpoint_every: int | None = None,
    learner: dict | None = None,
) -> dict:
    """driftstream worker on 1 partition, events and labels already in the topics.

    A child process (fresh interpreter, ``python -m bench.child worker``) runs
    ``consumers.worker.Worker`` with default WorkerOptions (checkpoint every 100k records,
    poll 100 ms, 500 records/poll, its model process; ``model_process=False`` or a
    profile: everything in one process) and ``exit_when_idle=1``, fresh state, group join with
    ``fast_group_timeouts``. The worker's probe timestamps the first poll that returned
    records (after the group join) and, from ``on_tick``, flushes the
    producer once all 2n records are processed: timed = first records -> every prediction
    acknowledged by the broker. The final checkpoint at shutdown and the idle wait are not
    timed; the checkpoints during the run (one per 100k records) are. Also reported: the
    same window as seen on the predictions topic (first to last prediction CreateTime),
    CPU seconds of the worker (its I/O process, that process's main thread alone -- the rest
    is kafka-python's producer/heartbeat threads -- and its model process), of the broker,
    and the worker's peak RSS (VmHWM of both processes, sampled from /proc).

    ``store(prefix)``: another checkpoint store than a fresh SQLite file, as ``{"spec",
    "key", "s3_options"}`` for `open_store` (`bench.state_stores --worker`);
    ``checkpoint_every``: instead of WorkerOptions' default; ``learner``: LearnerConfig
    fields other than the model (e.g. ``{"data_drift": False}``).
    """
    prefix = env.prefix(f"w1-{model}{'' if model_process else '-inproc'}")
    load = load_topics(env, prefix, env.samples, 1)
    env.loaded[f"1p-{model}"] = prefix
    n = len(env.samples)
    spec = {
        "bootstrap": env.settings.bootstrap_servers,
        "client": env.settings.client,
        "prefix": prefix,
        "model": model,
        "state": str(env.tmp / f"{prefix}sqlite"),
        "n": n,
        "profile": str(profile_path) if profile_path else None,
        "model_process": model_process and (not profile_path or profile_io),
        "store": None if store is None else store(prefix),
        "checkpoint_every": checkpoint_every,
        "learner": learner or {},
    }
    broker_cpu0 = proc_cpu_s(env.broker_pid)
    proc, out, err = start_child(env, child_args("worker", spec), f"worker1p-{model}")
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


def alternating_rounds(samples: list, arms: dict[str, tuple[Env, dict]], repeats: int) -> list:
    """``repeats`` rounds of the 1-partition lr worker once per arm (its Env and keyword
    arguments of `measure_worker_1p`, e.g. ``{"learner": {"data_drift": False}}`` or
    ``{"model_process": False}``), the arms' order swapped each round, River's in-process
    loop first in each: a shared machine drifts between rounds, so arms are compared within
    one. Per round:
    ``{"river": events/s, arm: the worker's result, ...}``."""
    rounds = []
    for i in range(repeats):
        row = {"river": measure_river_inprocess(samples, "lr")["events_per_s"]}
        for arm in list(arms)[:: 1 if i % 2 == 0 else -1]:
            env, options = arms[arm]
            log(f"round {i + 1}: worker, 1 partition, lr, {arm}")
            try:
                row[arm] = measure_worker_1p(env, "lr", **options)
            finally:
                stop_children(env)
            log(f"  {fmt(row[arm]['events_per_s'])} events/s")
        rounds.append(row)
    return rounds


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
                "position": w.kafka.consumer.position(topic, p),
                "highwater": w.kafka.consumer.highwater(topic, p),
                "next_offset": task.next_offset[stream],
            }
    fetcher = getattr(getattr(w.kafka.consumer, "_consumer", None), "_fetcher", None)
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


@dataclass
class Window:
    """What the timed worker saw of its measured window: first records -> last flush."""

    started: float = 0.0  # the worker's run() called (before its group join)
    t_first: float | None = None
    t_end: float | None = None
    cpu_first: float = 0.0
    thr_first: float = 0.0
    cpu_end: float = 0.0
    thr_end: float = 0.0
    model_cpu_first: float = 0.0
    model_cpu_end: float = 0.0
    model_hwm: float | None = None
    polls_with_records: int = 0
    records_pushed: int = 0


def run_timed_worker(spec: dict, profiler: cProfile.Profile | None):
    """Run one Worker until it is idle, timing from its first poll with records to the
    producer flush after the last of its 2n records; returns (worker, exit code, `Window`).

    The worker's probe (`WorkerProbe.polled`) sees the first poll that returned records and
    starts the profiler there; ``on_tick`` ends the window.
    """
    from driftstream.consumers.probe import WorkerProbe
    from driftstream.consumers.worker import Worker, WorkerOptions
    from driftstream.stream.learner import LearnerConfig

    n = spec["n"]
    window = Window()

    class Timing(WorkerProbe):
        def polled(self, batches, at):
            if not batches:
                return
            if window.t_first is None:
                window.t_first = time.perf_counter()
                window.cpu_first, window.thr_first = time.process_time(), time.thread_time()
                window.model_cpu_first = proc_cpu_s(worker.model_pid) or 0.0
                if profiler is not None:
                    profiler.enable()
            window.polls_with_records += 1
            window.records_pushed += sum(len(recs) for recs in batches.values())

    progress = {"n": -1, "at": time.monotonic()}

    def on_tick(w: Worker) -> None:
        if window.t_end is None and w.n_processed >= 2 * n:
            w.kafka.producer.flush()
            window.t_end = time.perf_counter()
            window.cpu_end, window.thr_end = time.process_time(), time.thread_time()
            window.model_cpu_end = proc_cpu_s(w.model_pid) or 0.0
            window.model_hwm = vm_hwm_mb(w.model_pid) if w.model_pid else None
            if profiler is not None:
                profiler.disable()
        if w.n_processed != progress["n"]:
            progress["n"], progress["at"] = w.n_processed, time.monotonic()
        elif (
            window.t_first is not None
            and window.t_end is None
            and time.monotonic() - progress["at"] > STALL_S
        ):
            print(json.dumps({"stalled": stall_report(w, 2 * n)}), file=sys.stderr, flush=True)
            w.stop()

    settings = KafkaSettings(
        spec["bootstrap"], fast_group_timeouts=True, client=spec.get("client", "kafka-python")
    )
    state = spec["state"]
    if spec.get("store"):
        from driftstream.state.store import open_store

        store = spec["store"]
        state = open_store(
            store["spec"],
            settings,
            spec["prefix"],
            store["key"].encode(),
            s3_options=store.get("s3_options"),
        )
    options = WorkerOptions(
        group=spec["prefix"] + "g",
        topic_prefix=spec["prefix"],
        exit_when_idle=1.0,
        model_process=spec["model_process"],
    )
    if spec.get("checkpoint_every"):
        options.checkpoint_every = spec["checkpoint_every"]
    worker = Worker(
        settings,
        LearnerConfig(model=spec["model"], **spec.get("learner", {})),
        state,
        options,
        probe=Timing(),
    )
    window.started = time.perf_counter()
    code = worker.run(on_tick=on_tick)
    return worker, code, window


def worker_child(spec: dict) -> int:
    """Child process of measure_worker_1p: one Worker, timed from inside; prints its result
    as one JSON line."""
    n = spec["n"]
    profiler = cProfile.Profile() if spec.get("profile") else None
    worker, code, window = run_timed_worker(spec, profiler)
    if window.t_end is None:
        print(f"worker stopped after {worker.n_processed} of {2 * n} records", file=sys.stderr)
        return 2
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    seconds = window.t_end - window.t_first
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
                "join_s": window.t_first - window.started,
                "cpu_s": window.cpu_end
                - window.cpu_first
                + window.model_cpu_end
                - window.model_cpu_first,
                "io_process_cpu_s": window.cpu_end - window.cpu_first,
                "main_thread_cpu_s": window.thr_end - window.thr_first,
                "model_process_cpu_s": window.model_cpu_end - window.model_cpu_first,
                "polls_with_records": window.polls_with_records,
                "records_per_poll": window.records_pushed / max(1, window.polls_with_records),
                "rejected": rejected,
                "exit_code": code,
                "self_peak_rss_mb": (vm_hwm_mb() or 0) + (window.model_hwm or 0),
                "profiled": profiler is not None,
            }
        )
    )
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
            log(f"  {fmt(lookup(w, 'events_per_s'))} events/s")
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
                log(f"  {fmt(lookup(c, 'events_per_s'))} events/s")
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
                log(f"  {fmt(lookup(c, 'events_per_s'))} events/s")
        res["worker_1p"][m] = median_run(workers, "events_per_s")
        if m == "lr":
            res["ceiling"] = median_run(ceilings, "events_per_s")
            res["ceiling_send_batch"] = median_run(batched, "events_per_s")
            res["repeats"]["worker_1p_lr"] = [lookup(w, "events_per_s") for w in workers]
            res["repeats"]["ceiling"] = [lookup(c, "events_per_s") for c in ceilings]
            res["repeats"]["ceiling_send_batch"] = [lookup(c, "events_per_s") for c in batched]
        log(f"worker, 1 partition, {m}, in one process (--model-process off)")
        res["worker_1p_inproc"][m] = w = attempt(
            res, f"worker_1p_inproc-{m}", measure_worker_1p, env, m, model_process=False
        )
        log(f"  {fmt(lookup(w, 'events_per_s'))} events/s")

    res["worker_4p"] = {}
    for m in models:
        log(f"2 workers, 4 partitions, {m}")
        res["worker_4p"][m] = w = attempt(res, f"worker_4p-{m}", measure_worker_4p, env, m)
        log(f"  {fmt(lookup(w, 'events_per_s'))} events/s (pred-ts span)")

    res["naive"] = {}
    for m in models:
        log(f"naive peer {m}, n={naive_n}")
        res["naive"][m] = r = attempt(res, f"naive-{m}", measure_naive_peer, env, m, naive_n)
        log(f"  {fmt(lookup(r, 'events_per_s'))} events/s")
