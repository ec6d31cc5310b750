"""Throughput, latency and memory of the worker, against River in-process and Kafka's own limit.

One run, one embedded Tansu broker (started here, loopback only), the same data and the same
model specs everywhere: ``synthetic("sea", n, drift_at=[n // 2], label_delay="100")`` (labels
revealed 100 event-time units = 100 events later), models ``lr`` and ``ht``, learner defaults
(drift policy ``challenger``, data-drift monitoring on), as ``driftstream run`` would use them.

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

Each measurement lives in a module of its own (`bench.offline`, `bench.ceilings`,
`bench.worker_runs`, `bench.latency`, `bench.memory`); this one composes them and prints
`bench.report`'s tables.

Usage, from the repository root::

    .venv/bin/python -m bench.throughput [--json] [--n N] [--quick] [--profile]

``--quick``: n=10k, short latency phases, 100k pending joins (a fast check, ~1 min).
``--profile``: only the 1-partition worker measurement (lr unless ``--profile-model``), run
under cProfile from its first record to its last flush; prints the top 25 functions by
cumulative and by own time. Its events/s is slowed by the profiler and is not a result.
With ``--json`` the last line of stdout is one JSON object (``events_per_s``, ``p99_ms``,
``ratio_vs_river``, ``ratio_vs_ceiling``, ``ratio_vs_naive`` for lr on 1 partition, then
``confluent_events_per_s``, ``confluent_ratio_vs_river``, ``confluent_p99_ms``, then
everything else). Progress goes to stderr.

``--kafka-client``: every measurement above uses kafka-python; with ``both`` (the default
when confluent-kafka is installed) or ``confluent``, the 1-partition lr worker is measured
again with ``--kafka-client confluent`` (``--repeats`` runs on one broker, median), and its
latency at half of that maximum (``--repeats`` runs, a fresh broker each, median p99);
``confluent`` alone skips the kafka-python measurements. Alternating with those runs, the same
worker runs with `PLAIN_LEARNER` (``confluent_plain_*`` keys): what data-drift monitoring and
the challenger policy cost.

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
import dataclasses
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.latency import measure_latencies, measure_latency
from bench.load import Env, broker_env, make_samples, stop_children
from bench.memory import measure_pending_memory
from bench.offline import measure_codec, measure_learner_offline, measure_river_inprocess
from bench.profiling import profile_main
from bench.quix_peer import PEER_PYTHON, measure_peer_latency, measure_quix_peer
from bench.report import fmt, json_summary, report, run_notes, title
from bench.runs import attempt, log, lookup, median_run, ratio
from bench.worker_runs import alternating_rounds, measure_throughputs, measure_worker_1p

__all__ = ["MODELS", "main", "run_all"]

MODELS = ("lr", "ht")
# The learner without its two costliest defaults, data-drift monitoring and the challenger
# policy (``--no-data-drift --drift-policy reset``): the confluent worker is measured so too.
PLAIN_LEARNER = {"data_drift": False, "drift_policy": "reset"}


def run_all(args: argparse.Namespace) -> dict:
    """Every measurement, in order: without Kafka, the throughput phases on one broker, the
    latency phase (a broker per run), the pending joins; then the ratios."""
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
    _measure_offline(res, samples, models)

    tmp = Path(tempfile.mkdtemp(prefix="driftstream-bench-"))
    clients = res["kafka_client"] = args.kafka_client
    try:
        if clients in ("kafka-python", "both"):
            with broker_env(tmp, samples) as env:
                log(f"broker at {env.settings.bootstrap_servers}")
                measure_throughputs(res, env, models, repeats, n, naive_n)
            measure_latencies(res, tmp, samples, repeats, warmup_s, steady_s)
        if clients in ("confluent", "both"):
            _measure_confluent(res, tmp, samples, repeats, warmup_s, steady_s)
        if PEER_PYTHON.exists() and not args.no_peer:
            _measure_peer(res, tmp, samples, warmup_s, steady_s)
        else:
            res["notes"].append("Quix Streams peer not measured: run `bash bench/peer/setup`")
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

    res["ratios"] = _ratios(res, models)
    res["runtime_s"] = time.perf_counter() - started
    if naive_n < n:
        res["notes"].append(
            f"naive peer: first {naive_n:,} samples only (a synchronous commit "
            "per record makes it slow); its events/s is comparable, its n is not."
        )
    for name, msg in res.get("errors", {}).items():
        res["notes"].append(f"FAILED {name}: {msg[:400]}")
    return res


def _measure_offline(res: dict, samples: list, models: list[str]) -> None:
    """River in-process and the learner offline per model, then the codec."""
    res["river"], res["learner_offline"] = {}, {}
    for m in models:
        log(f"River in-process {m}")
        res["river"][m] = r = attempt(res, f"river-{m}", measure_river_inprocess, samples, m)
        log(f"  {fmt(lookup(r, 'events_per_s'))} events/s")
        log(f"learner offline {m}")
        res["learner_offline"][m] = r = attempt(
            res, f"learner-{m}", measure_learner_offline, samples, m
        )
        log(f"  {fmt(lookup(r, 'events_per_s'))} events/s")
    log("codec")
    res["codec"] = attempt(res, "codec", measure_codec, samples)


def _measure_confluent(
    res: dict, tmp: Path, samples: list, repeats: int, warmup_s: float, steady_s: float
) -> None:
    """The 1-partition lr worker with ``--kafka-client confluent``: ``repeats`` runs on one
    broker (median events/s), each beside a run with `PLAIN_LEARNER` (their order swapped
    each round), then the latency at half that maximum, ``repeats`` runs with a fresh broker
    each (median p99), as `measure_latencies` does for kafka-python."""
    out = res["confluent"] = {}
    runs: dict[str, list] = {"default": [], "plain": []}
    with broker_env(tmp, samples, client="confluent") as env:
        for i in range(repeats):
            for arm in ("default", "plain") if i % 2 == 0 else ("plain", "default"):
                log(f"worker, 1 partition, lr, --kafka-client confluent, {arm} learner")
                name = "confluent-worker_1p-lr" + ("" if arm == "default" else "-plain")
                learner = None if arm == "default" else PLAIN_LEARNER
                runs[arm].append(
                    w := attempt(res, name, measure_worker_1p, env, "lr", learner=learner)
                )
                log(f"  {fmt(lookup(w, 'events_per_s'))} events/s")
    river = lookup(res, "river", "lr", "events_per_s")
    for arm, suffix in (("default", ""), ("plain", "_plain")):
        out["worker_1p" + suffix] = median_run(runs[arm], "events_per_s")
        out["repeats" + suffix] = [lookup(w, "events_per_s") for w in runs[arm]]
        out["ratio_vs_river" + suffix] = ratio(
            lookup(out, "worker_1p" + suffix, "events_per_s"), river
        )
    rate = out["latency_rate"] = round((lookup(out, "worker_1p", "events_per_s") or 10_000) / 4) * 2
    latencies: dict[str, list] = {"worker": [], "ceiling": []}
    for _ in range(repeats):
        for subject in latencies:  # the I/O ceiling's loop on the same client: the floor
            log(f"latency at {rate} events/s (half the confluent maximum), confluent, {subject}")
            with broker_env(tmp, samples, client="confluent") as env:
                latencies[subject].append(
                    r := attempt(
                        res,
                        f"confluent-latency-half-{subject}",
                        measure_latency,
                        env,
                        rate,
                        warmup_s,
                        steady_s,
                        subject=subject,
                    )
                )
            log(f"  p50 {lookup(r, 'p50_ms')} p99 {lookup(r, 'p99_ms')} ms")
    out["latency_half"] = median_run(latencies["worker"], "p99_ms")
    out["latency_half_io_ceiling"] = median_run(latencies["ceiling"], "p99_ms")
    out["latency_repeats"] = [
        None if r is None else {k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms")}
        for r in latencies["worker"]
    ]


def _measure_peer(res: dict, tmp: Path, samples: list, warmup_s: float, steady_s: float) -> None:
    """The Quix Streams peer (`bench.quix_peer`, its own venv) once on these samples, then its
    latency at half that maximum on a fresh broker; `bench.quix_peer` alternates it with the
    worker over several rounds for the fuller comparison."""
    out = res["peer"] = {}
    with broker_env(tmp, samples) as env:
        log("Quix Streams peer, 1 partition, lr")
        out["run"] = r = attempt(res, "peer", measure_quix_peer, env)
        log(f"  {fmt(lookup(r, 'events_per_s'))} events/s")
    rate = out["latency_rate"] = round((lookup(r, "events_per_s") or 4_000) / 4) * 2
    log(f"latency at {rate} events/s (half the peer's maximum)")
    with broker_env(tmp, samples) as env:
        out["latency_half"] = r = attempt(
            res, "peer-latency-half", measure_peer_latency, env, rate, warmup_s, steady_s
        )
    log(f"  p50 {lookup(r, 'p50_ms')} p99 {lookup(r, 'p99_ms')} ms")


CLIENTS = ("kafka-python", "confluent")


def compare_clients(n: int, repeats: int) -> dict:
    """The 1-partition lr worker with each client in turn, on one broker, ``repeats`` rounds
    (the order swapped each round), and River's in-process loop in each round: each round's
    ratios compare runs a minute apart, which a busy shared machine needs (the full run
    measures the clients ten minutes apart). Reported: medians over rounds."""
    samples = make_samples(n)
    tmp = Path(tempfile.mkdtemp(prefix="driftstream-bench-"))
    try:
        with broker_env(tmp, samples) as env:
            settings = {c: dataclasses.replace(env.settings, client=c) for c in CLIENTS}
            arms = {c: (Env(settings[c], env.broker_pid, tmp, samples), {}) for c in CLIENTS}
            runs = alternating_rounds(samples, arms, repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rounds = [
        {
            "river": r["river"],
            **{c: r[c]["events_per_s"] for c in arms},
            **{f"{c}_io_cpu_us": 1e6 * r[c]["io_process_cpu_s"] / n for c in arms},
        }
        for r in runs
    ]
    med = statistics.median
    return {
        "n": n,
        "rounds": rounds,
        "river_events_per_s": med(r["river"] for r in rounds),
        **{
            f"{c}_{what}": med(f(r, c) for r in rounds)
            for c in ("kafka-python", "confluent")
            for what, f in (
                ("events_per_s", lambda r, c: r[c]),
                ("ratio_vs_river", lambda r, c: r[c] / r["river"]),
                ("io_cpu_us", lambda r, c: r[f"{c}_io_cpu_us"]),
            )
        },
    }


def confluent_summary(res: dict) -> dict:
    """The ``--json`` keys of the confluent measurements (None when not measured)."""
    return {
        "confluent_events_per_s": lookup(res, "confluent", "worker_1p", "events_per_s"),
        "confluent_ratio_vs_river": lookup(res, "confluent", "ratio_vs_river"),
        "confluent_p99_ms": lookup(res, "confluent", "latency_half", "p99_ms"),
        "confluent_plain_events_per_s": lookup(res, "confluent", "worker_1p_plain", "events_per_s"),
        "confluent_plain_ratio_vs_river": lookup(res, "confluent", "ratio_vs_river_plain"),
        "confluent_p99_ms_io_ceiling": lookup(
            res, "confluent", "latency_half_io_ceiling", "p99_ms"
        ),
        "peer_events_per_s": lookup(res, "peer", "run", "events_per_s"),
        "peer_p99_ms": lookup(res, "peer", "latency_half", "p99_ms"),
    }


def confluent_lines(res: dict) -> list[str]:
    """The report's section on the confluent and Quix Streams peer measurements."""
    lines = peer_lines(res)
    if "confluent" not in res:
        return lines
    c = res["confluent"]
    lat = c.get("latency_half") or {}
    return [
        "",
        "--kafka-client confluent (librdkafka), 1 partition, lr:",
        f"  worker {fmt(lookup(c, 'worker_1p', 'events_per_s'))} events/s "
        f"(runs: {', '.join(fmt(v) for v in c['repeats'])}), "
        f"{c['ratio_vs_river'] or 0:.2f}x River's in-process loop",
        f"  same, --no-data-drift --drift-policy reset: "
        f"{fmt(lookup(c, 'worker_1p_plain', 'events_per_s'))} events/s "
        f"(runs: {', '.join(fmt(v) for v in c['repeats_plain'])}), "
        f"{c['ratio_vs_river_plain'] or 0:.2f}x River's loop (runs alternating with the above)",
        f"  latency at {c['latency_rate']:,} events/s (half its maximum): p50 "
        f"{lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms, p99 {lat.get('p99_ms')} ms "
        f"(runs' p99: {', '.join(str(lookup(r, 'p99_ms')) for r in c['latency_repeats'])})",
        f"  the Kafka I/O ceiling's loop (no model, same client) at that rate: p50 "
        f"{lookup(c, 'latency_half_io_ceiling', 'p50_ms')} ms, "
        f"p99 {lookup(c, 'latency_half_io_ceiling', 'p99_ms')} ms",
        *lines,
    ]


def peer_lines(res: dict) -> list[str]:
    """The report's lines on the Quix Streams peer."""
    if "peer" not in res:
        return []
    p = res["peer"]
    lat = p.get("latency_half") or {}
    rate = lookup(p, "run", "events_per_s")
    eq = lookup(p, "run", "equal_to_river") or {}
    eq_late = lookup(p, "run", "equal_to_river_ties_event_first") or {}
    return [
        "",
        "Quix Streams peer (bench/peer/quix_job.py), 1 partition, lr:",
        f"  {fmt(rate)} events/s, "
        f"{ratio(rate, lookup(res, 'river', 'lr', 'events_per_s')) or 0:.2f}x River's loop; "
        f"latency at {p['latency_rate']:,} events/s (half its maximum): "
        f"p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms",
        f"  probabilities equal to River's simulate_qa: {eq.get('equal')} of {eq.get('events')};"
        f" with ties read event first (as Quix reads them): {eq_late.get('equal')}",
    ]


def _ratios(res: dict, models: list[str]) -> dict:
    """The 1-partition worker's events/s over each reference's, per model."""
    ratios = {}
    for m in models:
        w = lookup(res, "worker_1p", m, "events_per_s")
        ratios[m] = {
            "vs_river": ratio(w, lookup(res, "river", m, "events_per_s")),
            "vs_learner_offline": ratio(w, lookup(res, "learner_offline", m, "events_per_s")),
            "vs_ceiling": ratio(w, lookup(res, "ceiling", "events_per_s")),
            "vs_ceiling_send_batch": ratio(w, lookup(res, "ceiling_send_batch", "events_per_s")),
            "vs_naive": ratio(w, lookup(res, "naive", m, "events_per_s")),
            "4p_2w_vs_1p": ratio(lookup(res, "worker_4p", m, "events_per_s"), w),
        }
    # The lr worker and the ceiling run in back-to-back pairs: the median of the pairs'
    # ratios compares them at the same host speed, which drifts over minutes here.
    for key in ("ceiling", "ceiling_send_batch"):
        pairs = [
            ratio(w, c)
            for w, c in zip(
                lookup(res, "repeats", "worker_1p_lr") or [], lookup(res, "repeats", key) or []
            )
        ]
        pairs = [r for r in pairs if r is not None]
        if "lr" in ratios and pairs:
            lr = ratios["lr"]
            lr[f"vs_{key}_of_medians"] = lr[f"vs_{key}"]
            lr[f"vs_{key}"] = statistics.median_low(pairs)  # as median_run: the lower middle
    return ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--n", type=int, default=None, help="events (default 100000; --quick 10000)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="n=10k, every measurement once, short latency phases, 100k pending joins "
        "(the smallest run: --quick --n 2000 --naive-n 1000 --pending 10000)",
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
        "--kafka-client",
        choices=("kafka-python", "confluent", "both"),
        default="both" if importlib.util.find_spec("confluent_kafka") else "kafka-python",
        help="the client(s) measured (default both when confluent-kafka is installed): "
        "kafka-python for every figure, confluent for the 1-partition lr worker and its "
        "latency",
    )
    p.add_argument(
        "--pending",
        type=int,
        default=None,
        help="pending joins for the memory figure (default 1000000; --quick 100000)",
    )
    p.add_argument(
        "--no-peer",
        action="store_true",
        help="leave out the Quix Streams peer (measured when bench/peer/setup made .venv-peer)",
    )
    p.add_argument(
        "--compare-clients",
        action="store_true",
        help="only the 1-partition lr worker with each client in turn and River's loop, "
        "--repeats rounds (default 3)",
    )
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 10_000 if args.quick else 100_000
    if args.compare_clients:
        result = compare_clients(args.n, args.repeats or 3)
        print(json.dumps(result))
        return 0
    heading = title(args.n)
    if args.profile:
        return profile_main(args, heading)
    res = run_all(args)
    res["title"] = heading
    res["notes"] += run_notes(res)
    print(report(res))
    print("\n".join(confluent_lines(res)))
    if args.json:
        summary = {}
        for key, value in json_summary(res).items():  # the headline keys, then the rest
            summary[key] = value
            if key == "ratio_vs_naive":  # the last headline key
                summary.update(confluent_summary(res))
        print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
