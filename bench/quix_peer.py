"""A real peer in the bench: the same job written with Quix Streams, beside driftstream.

`bench/peer/quix_job.py` is the job a Quix Streams user would write (events and labels topics
concatenated into one StreamingDataFrame, joined by id with Quix's State, River's
StandardScaler | LogisticRegression scoring each event and learning when its label comes,
predictions produced to a topic). It runs in its own virtualenv, ``.venv-peer``
(``bash bench/peer/setup``): quixstreams 3.28.1 pins confluent-kafka < 2.13.

One run, on one embedded Tansu broker and the same data as `bench.throughput`
(``make_samples(n)``: SEA, drift at n // 2, labels 100 events late), measures:

- River's in-process loop (`bench.offline.measure_river_inprocess`), the limit;
- the naive hand-written loop (`bench.ceilings.measure_naive_peer`, first ``--naive-n``);
- the driftstream worker, 1 partition, lr (`bench.worker_runs.measure_worker_1p`);
- the Quix peer on the same preloaded 1-partition topics (`measure_quix_peer`), with Quix's
  defaults (changelog topic behind its state, commit every 5 s), and without the changelog;
- latency (`bench.latency.measure_latency`, the same load generator and matching by id) of
  the peer at half its measured maximum, of the worker at that same rate, and of the worker
  at half its own maximum.

The peer's predictions are read back and compared with River's own ``simulate_qa`` loop on
the same samples and delays (`river_predictions`): an event agrees when its prediction
(``predict_one``, a bool) is equal; the report gives the count that agree, missing and
duplicated predictions. Usage, from the repository root::

    .venv/bin/python -m bench.quix_peer [--n N] [--json] [--quick]

With ``--json`` the last line of stdout is one JSON object with ``peer_events_per_s`` and
``peer_p99_ms`` first. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.ceilings import measure_naive_peer
from bench.latency import measure_latency
from bench.load import (
    FETCH_MAX_WAIT_MS,
    MAX_POLL_RECORDS,
    Env,
    broker_env,
    load_topics,
    make_samples,
    start_child,
)
from bench.offline import measure_river_inprocess
from bench.procs import ROOT, last_json_line, wait_child
from bench.report import fmt, table
from bench.runs import attempt, log, lookup, median_run, ratio
from bench.worker_runs import measure_worker_1p
from driftstream.producers.sources import Sample
from driftstream.transport import Consumer, KafkaSettings

__all__ = [
    "JOB",
    "PEER_PYTHON",
    "main",
    "measure_quix_peer",
    "peer_args",
    "read_predictions",
    "river_predictions",
]

PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
JOB = ROOT / "bench" / "peer" / "quix_job.py"
# measure_latency starts `driftstream run ARGS` with a launcher between the interpreter and
# ARGS; this one replaces the process by the peer job on the same topics, group and idle exit.
EXEC_PEER = "--exec-peer"
# The peer as shipped (Quix's and librdkafka's defaults), and tuned for latency the way the
# worker is: its fetch wait (Tansu answers a waiting fetch only when the wait expires), and
# Quix's poll timeout as short (Quix asks librdkafka for up to 10,000 records at once and
# waits consumer_poll_timeout, 1 s, unless that many are there).
DEFAULTS: dict = {}
TUNED = {"fetch_wait_ms": FETCH_MAX_WAIT_MS, "poll_timeout_s": FETCH_MAX_WAIT_MS / 1000}


def peer_args(spec: dict) -> list[str]:
    """The peer job's command line: its own virtualenv's interpreter, SPEC as JSON."""
    return [str(PEER_PYTHON), str(JOB), json.dumps(spec)]


def river_predictions(samples: list[Sample], label_later_ms: int = 0) -> dict[str, dict]:
    """What River's own ``simulate_qa`` loop predicts for each event id (``predict_proba_one``:
    {class: probability}), model ``lr``, with the samples' event times and label delays (as
    `measure_river_inprocess` times it). River reveals a label due at an event's time before
    it asks about that event; ``label_later_ms=1``: every label 1 ms later, i.e. after the
    event that has its timestamp (how Quix orders such a tie) and before the next one."""
    from river import stream as river_stream

    from driftstream.producers.sources import river_delay
    from driftstream.stream.models import build_model

    later = [dataclasses.replace(s, label_ts=s.label_ts + label_later_ms) for s in samples]
    dataset, moment, delay = river_delay(later)
    model = build_model("lr")
    out: dict[str, dict] = {}
    for i, x, y in river_stream.simulate_qa(dataset, moment, delay):
        if y is None:
            out[samples[i].id] = model.predict_proba_one(x)
        else:
            model.learn_one(x, y)
    return out


def read_predictions(
    settings: KafkaSettings, topic: str, expect: int, timeout: float = 120
) -> list[tuple[dict, int]]:
    """(decoded value, CreateTime ms) of every record of partition 0 of a topic."""
    consumer = Consumer(settings, max_poll_records=MAX_POLL_RECORDS)
    try:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning([(topic, 0)])
        out: list[tuple[dict, int]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out.extend((orjson.loads(r.value), r.timestamp) for r in consumer.poll(200))
            high = consumer.highwater(topic, 0)
            if len(out) >= expect and high is not None and consumer.position(topic, 0) >= high:
                return out
        raise TimeoutError(f"read {len(out)} of {expect} predictions from {topic}")
    finally:
        consumer.close()


def measure_quix_peer(env: Env, changelog: bool = True, tuning: dict = TUNED) -> dict:
    """The Quix Streams peer on 1 partition, events and labels already in the topics.

    Topics filled by `load_topics` as for the worker (same records, keys, timestamps). The
    job (`bench/peer/quix_job.py`, its own interpreter) joins a fresh consumer group from
    the earliest offsets and stops itself after n events and n labels. Timed inside the job:
    first record processed -> ``Application.run`` returned (its last checkpoint: producer
    flushed, offsets committed, state flushed). Cross-checked: first to last prediction
    CreateTime. CPU: the job's process time in that window (all its threads: librdkafka's
    too). Peak RSS: VmHWM of the job, sampled. Then every prediction is read back and
    compared with `river_predictions`. ``tuning``: `TUNED` or `DEFAULTS`.
    """
    if not PEER_PYTHON.exists():
        raise FileNotFoundError(f"{PEER_PYTHON} is missing: run `bash bench/peer/setup` first")
    prefix = env.prefix("quix" if changelog else "quix-nolog")
    load = load_topics(env, prefix, env.samples, 1)
    n = len(env.samples)
    spec = {
        "bootstrap": env.settings.bootstrap_servers,
        "prefix": prefix,
        "group": prefix + "g",
        "state_dir": str(env.tmp / f"{prefix}quix-state"),
        "n": n,
        "changelog": changelog,
        **tuning,
    }
    proc, out, err = start_child(
        env, peer_args(spec), "quix-peer" + ("" if changelog else "-nolog")
    )
    code, usage, peak = wait_child(proc, timeout=180 + n / 200)
    if code != 0:
        raise RuntimeError(f"quix peer exited {code}: {err.read_text()[-3000:]}")
    res = last_json_line(out)
    preds = read_predictions(env.settings, load["topics"]["predictions"], expect=n)
    stamps = [ts for _, ts in preds]
    span = (max(stamps) - min(stamps)) / 1000
    res.update(
        {
            "changelog": changelog,
            "prefix": prefix,
            "peak_rss_mb": peak,
            "process_cpu_s_total": usage.ru_utime + usage.ru_stime,
            "pred_ts_span_s": span,
            "pred_ts_events_per_s": n / span if span > 0 else None,
            "cpu_us_per_event": res["cpu_s"] / n * 1e6,
            "equal_to_river": compare_with_river(env.samples, preds),
            "equal_to_river_ties_event_first": compare_with_river(env.samples, preds, 1),
        }
    )
    return res


def compare_with_river(
    samples: list[Sample], preds: list[tuple[dict, int]], label_later_ms: int = 0
) -> dict:
    """Per event id, the peer's prediction against River's ``simulate_qa`` loop's: ``equal``
    when the probabilities are the same floats (so the model had learnt exactly the same
    labels, in the same order, when it scored the event); ``same_class`` when only the
    predicted classes agree (a bool: an extra or missing learn step rarely flips it)."""
    reference = {
        k: {str(c): p for c, p in proba.items()}
        for k, proba in river_predictions(samples, label_later_ms).items()
    }
    seen: dict[str, dict] = {}
    duplicated = 0
    for value, _ in preds:
        duplicated += value["id"] in seen
        seen[value["id"]] = value
    differ = [k for k, v in reference.items() if k in seen and seen[k]["proba"] != v]
    same_class = sum(
        1
        for k, v in reference.items()
        if k in seen and str(seen[k]["prediction"]) == max(v, key=v.get)
    )
    missing = sum(1 for k in reference if k not in seen)
    equal = len(reference) - missing - len(differ)
    return {
        "events": len(reference),
        "equal": equal,
        "differ": len(differ),
        "same_class": same_class,
        "missing": missing,
        "duplicated": duplicated,
        "first_differing": differ[:5],
        "all_equal": equal == len(reference) and not duplicated,
    }


def exec_peer(argv: list[str]) -> None:
    """Become the peer job on the topics of a ``driftstream run`` command line (the latency
    runs' launcher): same bootstrap, topic prefix, group and idle exit; Quix's state next to
    the worker's state path. Replaces this process, so its pid, CPU and memory are the job's."""
    p = argparse.ArgumentParser(add_help=False)
    for opt in ("--bootstrap-servers", "--topic-prefix", "--group", "--state"):
        p.add_argument(opt, required=True)
    p.add_argument("--exit-when-idle", type=float, default=5.0)
    p.add_argument("--peer-tuning", type=json.loads, default={})
    known, _ = p.parse_known_args(argv)
    spec = {
        "bootstrap": known.bootstrap_servers,
        "prefix": known.topic_prefix,
        "group": known.group,
        "state_dir": known.state + ".quix",
        "idle_s": known.exit_when_idle,
        **known.peer_tuning,
    }
    args = peer_args(spec)
    os.execv(args[0], args)


def measure_peer_latency(
    env: Env,
    rate: int,
    warmup_s: float,
    steady_s: float,
    tuning: dict = TUNED,
) -> dict:
    """`measure_latency` with the peer in the worker's place (same load, same matching)."""
    launcher = ("-m", "bench.quix_peer", EXEC_PEER, "--peer-tuning", json.dumps(tuning))
    return measure_latency(env, rate, warmup_s, steady_s, launcher=launcher)


def run_all(args: argparse.Namespace) -> dict:
    n = args.n
    res: dict = {"n": n, "notes": [], "repeats": {}, "load_before": os.getloadavg()}
    started = time.perf_counter()
    log(f"building {n} samples")
    samples = make_samples(n)
    log("River in-process lr")
    res["river"] = attempt(res, "river", measure_river_inprocess, samples, "lr")
    tmp = Path(tempfile.mkdtemp(prefix="driftstream-quix-peer-"))
    try:
        with broker_env(tmp, samples) as env:
            log(f"broker at {env.settings.bootstrap_servers}")
            workers, peers = [], []
            for _ in range(args.repeats):  # alternating: the host's speed drifts
                log("driftstream worker, 1 partition, lr")
                workers.append(w := attempt(res, "worker", measure_worker_1p, env, "lr"))
                log(f"  {fmt(lookup(w, 'events_per_s'))} events/s")
                log("Quix Streams peer (tuned; changelog on: Quix's default)")
                peers.append(q := attempt(res, "peer", measure_quix_peer, env))
                log(f"  {fmt(lookup(q, 'events_per_s'))} events/s")
            res["worker"] = median_run(workers, "events_per_s")
            res["peer"] = median_run(peers, "events_per_s")
            if args.repeats > 1:
                res["repeats"]["worker events/s"] = [lookup(r, "events_per_s") for r in workers]
                res["repeats"]["peer events/s"] = [lookup(r, "events_per_s") for r in peers]
            log("Quix Streams peer (tuned), no changelog topic")
            res["peer_nolog"] = attempt(res, "peer-nolog", measure_quix_peer, env, False)
            log(f"  {fmt(lookup(res, 'peer_nolog', 'events_per_s'))} events/s")
            naive_n = min(n, args.naive_n)
            log(f"naive loop, first {naive_n} samples")
            res["naive"] = attempt(res, "naive", measure_naive_peer, env, "lr", naive_n)
        peer_rate = round((lookup(res, "peer", "events_per_s") or 4000) / 4) * 2
        worker_rate = round((lookup(res, "worker", "events_per_s") or 20000) / 4) * 2
        res["latency"] = {}
        pairs = (
            ("peer at half its max", measure_peer_latency, peer_rate, {}),
            ("worker at the peer's rate", measure_latency, peer_rate, {}),
        )
        once = (
            ("peer, defaults", measure_peer_latency, peer_rate, {"tuning": DEFAULTS}),
            ("worker at half its max", measure_latency, worker_rate, {}),
        )
        runs = [] if args.no_latency else [*pairs * args.repeats, *once]
        done: dict[str, list] = {}
        for key, fn, rate, kwargs in runs:  # each on a fresh broker, as bench.latency's
            log(f"latency: {key} ({rate} events/s)")
            with broker_env(tmp, samples) as env:
                r = attempt(
                    res, f"latency-{key}", fn, env, rate, args.warmup_s, args.steady_s, **kwargs
                )
            done.setdefault(key, []).append(r)
            log(f"  p50 {lookup(r, 'p50_ms')} p99 {lookup(r, 'p99_ms')} ms")
        for key, rs in done.items():
            res["latency"][key] = median_run(rs, "p99_ms")
            if len(rs) > 1:
                res["repeats"][f"{key}: p99 ms"] = [lookup(r, "p99_ms") for r in rs]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_after"] = os.getloadavg()
    res["runtime_s"] = time.perf_counter() - started
    for name, msg in res.get("errors", {}).items():
        res["notes"].append(f"FAILED {name}: {msg[:400]}")
    return res


def report(res: dict) -> str:
    """The table: events/s, ratio to River's loop, latency, peak RSS, CPU per event."""
    river = lookup(res, "river", "events_per_s")
    lat = res.get("latency", {})
    rows = []

    def row(name, r, latency=None, rss=None, cpu_us=None):
        eps = lookup(r, "events_per_s")
        rows.append(
            [
                name,
                fmt(eps),
                fmt(ratio(eps, river), ".2f"),
                fmt(lookup(latency, "offered_events_per_s")),
                fmt(lookup(latency, "p50_ms")),
                fmt(lookup(latency, "p99_ms")),
                fmt(rss, ".0f"),
                fmt(cpu_us, ".1f"),
            ]
        )

    def per_event(r, key="cpu_s"):
        v, n = lookup(r, key), lookup(r, "events")
        return v / n * 1e6 if v is not None and n else None

    row("River in-process loop (lr)", res.get("river"), cpu_us=per_event(res.get("river")))
    row("naive loop (kafka-python, commit per record)", res.get("naive"),
        cpu_us=per_event(res.get("naive")))  # fmt: skip
    w = res.get("worker")
    row("driftstream worker, 1 partition", w, lat.get("worker at half its max"),
        lookup(w, "peak_rss_mb"), per_event(w))  # fmt: skip
    row("  same, at the peer's rate", None, lat.get("worker at the peer's rate"))
    p = res.get("peer")
    row("Quix Streams peer (fetch wait, poll timeout 20 ms)", p, lat.get("peer at half its max"),
        lookup(p, "peak_rss_mb"), per_event(p))  # fmt: skip
    row("  same, Quix's and librdkafka's defaults", None, lat.get("peer, defaults"))
    q = res.get("peer_nolog")
    row("Quix Streams peer, no changelog", q, None, lookup(q, "peak_rss_mb"), per_event(q))
    header = ["", "events/s", "x River", "latency at /s", "p50 ms", "p99 ms", "peak RSS MB",
              "CPU µs/event"]  # fmt: skip
    lines = [
        f"Quix Streams peer vs driftstream — n={res['n']:,}, 1 partition, lr, embedded Tansu",
        "",
        table(rows, header),
        "",
    ]
    for key, r in (("changelog", p), ("no changelog", q)):
        eq = lookup(r, "equal_to_river")
        if eq:
            lines.append(
                f"peer ({key}) predictions vs River's simulate_qa, per event id: "
                f"{eq['equal']:,} of {eq['events']:,} equal probabilities, {eq['differ']:,} "
                f"differ ({eq['same_class']:,} same class), {eq['missing']} missing, "
                f"{eq['duplicated']} duplicated"
                + (
                    f" (first differing: {', '.join(eq['first_differing'])})"
                    if eq["differ"]
                    else ""
                )
            )
        eq = lookup(r, "equal_to_river_ties_event_first")
        if eq:
            lines.append(
                f"  vs River with each label 1 ms later (a tie read event first, as Quix reads "
                f"it): {eq['equal']:,} of {eq['events']:,} equal, {eq['differ']:,} differ, "
                f"{eq['missing']} missing"
            )
        if r:
            lines.append(
                f"peer ({key}): prediction CreateTime span {fmt(r['pred_ts_events_per_s'])} "
                f"events/s; labels read before their event: {r['labels_before_event']}"
            )
    if lookup(res, "naive", "events") and res["naive"]["events"] < res["n"]:
        lines.append(f"naive loop: first {res['naive']['events']:,} samples only")
    lines.append(
        "load average (1, 5, 15 min) before: "
        + ", ".join(f"{v:.2f}" for v in res["load_before"])
        + "; after: "
        + ", ".join(f"{v:.2f}" for v in res.get("load_after", ()))
        + f"; 2 cores; run took {res.get('runtime_s', 0):.0f} s"
    )
    for key, values in res.get("repeats", {}).items():
        lines.append(f"runs, {key}: " + ", ".join(fmt(v) for v in values) + " (median shown)")
    lines += res["notes"]
    return "\n".join(lines)


def json_summary(res: dict) -> dict:
    lat = res.get("latency", {})
    river = lookup(res, "river", "events_per_s")
    return {
        "peer_events_per_s": lookup(res, "peer", "events_per_s"),
        "peer_p99_ms": lookup(lat, "peer at half its max", "p99_ms"),
        "peer_p50_ms": lookup(lat, "peer at half its max", "p50_ms"),
        "peer_ratio_vs_river": ratio(lookup(res, "peer", "events_per_s"), river),
        "peer_equal_to_river": lookup(res, "peer", "equal_to_river", "all_equal"),
        "peer_equal_to_river_ties_event_first": lookup(
            res, "peer", "equal_to_river_ties_event_first", "all_equal"
        ),
        "peer_nolog_events_per_s": lookup(res, "peer_nolog", "events_per_s"),
        "peer_peak_rss_mb": lookup(res, "peer", "peak_rss_mb"),
        "river_events_per_s": river,
        "naive_events_per_s": lookup(res, "naive", "events_per_s"),
        "worker_events_per_s": lookup(res, "worker", "events_per_s"),
        "worker_p99_ms": lookup(lat, "worker at half its max", "p99_ms"),
        "worker_p99_ms_at_peer_rate": lookup(lat, "worker at the peer's rate", "p99_ms"),
        "n": res["n"],
        "errors": res.get("errors", {}),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [EXEC_PEER]:
        exec_peer(argv[1:])  # does not return
    p = argparse.ArgumentParser(
        prog="python -m bench.quix_peer", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--n", type=int, default=None, help="events (default 100000; --quick 10000)")
    p.add_argument("--quick", action="store_true", help="n=10k, short latency phases")
    p.add_argument("--naive-n", type=int, default=None,
                   help="events for the naive loop (default 20000; --quick 2000)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    p.add_argument("--no-latency", action="store_true", help="throughput and equality only")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="alternating runs of the worker and the peer (throughput, and latency at the "
        "peer's half maximum), medians shown (default 3; --quick 1)",
    )
    args = p.parse_args(argv)
    args.n = args.n or (10_000 if args.quick else 100_000)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.naive_n = args.naive_n or (2_000 if args.quick else 20_000)
    args.warmup_s, args.steady_s = (2.0, 6.0) if args.quick else (5.0, 20.0)
    res = run_all(args)
    print(report(res))
    if args.json:
        print(json.dumps(json_summary(res), default=str))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
