"""The data-drift monitor on its own (offline, no Kafka): detections, false alarms, cost.

1. ``changes``: synthetic streams with one known change at ``--change`` (events), one per
   case, each on ``--seeds`` seeds: which tests alarm and how many events after the change.
2. ``stationary``: River's SEA, Agrawal and STAGGER (its three features as categories)
   without drift, cut into independent partitions of ``--partition-n`` events (each its own
   monitor, so its own reference), labels fed too: false alarms per 100,000 events per
   partition, at defaults.
3. ``cost``: ``observe_event`` and ``observe_label`` in microseconds per call on SEA (the
   best of ``--repeats`` runs: the machine is shared), and the pickled monitor's size.

Every label is joined right after its event (delay 0): the monitor's tests do not depend on
the delay, only on which labels have arrived.

Usage::

    .venv/bin/python -m bench.data_drift [--quick] [--markdown bench/results/data-drift.md]
"""

from __future__ import annotations

import argparse
import datetime
import pickle
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from river import linear_model, preprocessing
from river.datasets import synth

from driftstream.stream.data_monitor import DataMonitor, DataMonitorOptions

__all__ = ["main"]

CASES = {
    "mean +0.5 sd": "x's mean moves by 0.5 standard deviation",
    "variance x2": "x's variance doubles, its mean unchanged",
    "5 % missing": "x is missing (None) in 5 % of events",
    "new category": "c takes a new value in 5 % of events",
    "covariate shift": "x's mean moves by 1 sd; P(y given x) unchanged",
    "correlation flip": "y = [x + noise > 0] becomes y = [-x + noise > 0]; P(y) unchanged",
}
_COLOURS = ("red", "green", "blue")


def case_stream(case: str, n: int, change: int, seed: int):
    """(features, label) of one case: x, z normal, c categorical, y binary = [x + z + noise > 0]."""
    rng = random.Random(seed)
    for i in range(n):
        after = i >= change
        x = rng.gauss(0, 1)
        z = rng.gauss(0, 1)
        c = rng.choice(_COLOURS)
        noise = rng.gauss(0, 0.5)
        if after and case == "mean +0.5 sd":
            x += 0.5
        elif after and case == "variance x2":
            x *= 2**0.5
        elif after and case == "covariate shift":
            x += 1.0
        if after and case == "new category" and rng.random() < 0.05:
            c = "violet"
        y = (-x if after and case == "correlation flip" else x) + z + noise > 0
        features = {"x": x, "z": z, "c": c}
        if after and case == "5 % missing" and rng.random() < 0.05:
            features["x"] = None
        yield features, y


def stationary_stream(name: str, n: int, seed: int):
    """(features, label) from a River generator that does not drift."""
    if name == "SEA":
        data = synth.SEA(variant=0, seed=seed)
    elif name == "Agrawal":
        data = synth.Agrawal(classification_function=0, seed=seed)
    else:
        data = synth.STAGGER(classification_function=0, seed=seed)
    names = {
        "size": ("small", "medium", "large"),
        "color": _COLOURS,
        "shape": ("circle", "square", "triangle"),
    }
    for x, y in data.take(n):
        if name == "STAGGER":
            x = {k: names[k][v] for k, v in x.items()}
        yield x, y


def run(stream, options: DataMonitorOptions):
    """Feed a stream to one monitor; return its alarms."""
    monitor = DataMonitor(options)
    alarms = []
    for x, y in stream:
        alarms += monitor.observe_event(x)
        alarms += monitor.observe_label(x, y)
    return monitor, alarms


def changes(n: int, change: int, seeds: int, options: DataMonitorOptions) -> list[dict]:
    rows = []
    for case in CASES:
        delays = defaultdict(list)  # test(feature) -> delays, one per seed that fired
        early, firsts = 0, []
        for seed in range(seeds):
            # the change falls at a different place in the check cycle on each seed
            at = change + seed * options.check_every // seeds
            _, alarms = run(case_stream(case, n, at, seed), options)
            first = {}
            for a in alarms:
                if a.n_seen <= at:
                    early += 1
                    continue
                key = a.test + (f"({a.feature})" if a.feature else "")
                first.setdefault(key, a.n_seen - at)
            for key, delay in first.items():
                delays[key].append(delay)
            if first:
                firsts.append(min(first.values()))
        fired = sorted(delays.items(), key=lambda kv: statistics.median(kv[1]))
        rows.append(
            {
                "case": case,
                "fired": [(k, len(d), int(statistics.median(d))) for k, d in fired],
                "first": int(statistics.median(firsts)) if firsts else None,
                "missed": seeds - len(firsts),
                "early": early,
            }
        )
    return rows


def stationary(
    partitions: dict[str, int], partition_n: int, options: DataMonitorOptions
) -> list[dict]:
    rows = []
    for name, count in partitions.items():
        alarms, checks, failures = [], 0, 0
        for p in range(count):
            monitor, found = run(stationary_stream(name, partition_n, seed=1000 + p), options)
            alarms += found
            checks += monitor.checks
            failures += monitor.gate.failures
        events = count * partition_n
        rows.append(
            {
                "stream": name,
                "partitions": count,
                "events": events,
                "checks": checks,
                "failures": failures,
                "alarms": len(alarms),
                "per_100k": len(alarms) / (events / 100_000),
                "which": sorted({a.test + (f"({a.feature})" if a.feature else "") for a in alarms}),
            }
        )
    return rows


def cost(n: int, repeats: int, options: DataMonitorOptions) -> dict:
    rows = list(stationary_stream("SEA", n, seed=7))
    best_event = best_label = best_loop = float("inf")
    for _ in range(repeats):
        monitor = DataMonitor(options)
        start = time.process_time()
        for x, _y in rows:
            monitor.observe_event(x)
        best_event = min(best_event, (time.process_time() - start) / n * 1e6)
        start = time.process_time()
        for x, y in rows:
            monitor.observe_label(x, y)
        best_label = min(best_label, (time.process_time() - start) / n * 1e6)
        start = time.process_time()
        for _x, _y in rows:
            pass
        best_loop = min(best_loop, (time.process_time() - start) / n * 1e6)
    # what the learner does per event with the default model, in the same run: the scale the
    # monitor's cost is to be read against (the machine is shared, so absolute figures drift)
    best_river = float("inf")
    for _ in range(repeats):
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        start = time.process_time()
        for x, y in rows:
            model.predict_proba_one(x)
            model.learn_one(x, y)
        best_river = min(best_river, (time.process_time() - start) / n * 1e6)
    size = len(pickle.dumps(monitor))
    # the bound: numeric columns of the reference and live windows, events and labels (8 bytes
    # a value, labels twice: as text and as a number) plus at most one check's pending rows
    r, w, f = options.reference_size, options.window, 3
    bound = 8 * (r + w) * f * 2 + 8 * (r + w) * 2
    return {
        "event_us": best_event,
        "label_us": best_label,
        "loop_us": best_loop,
        "river_us": best_river,
        "pickled_bytes": size,
        "columns_bytes": bound,
        "checks": monitor.checks,
    }


def markdown(args, options, change_rows, stationary_rows, cost_row, seconds) -> str:
    out = [
        "# Data-drift monitor (`python -m bench.data_drift"
        + (" --quick" if args.quick else "")
        + "`)",
        "",
        f"{datetime.date.today()}, Python {platform.python_version()}, {platform.machine()}; "
        f"defaults: R={options.reference_size}, W={options.window}, k={options.check_every}, "
        f"alpha={options.alpha}, persistence={options.persistence}, cooldown={options.cooldown}; "
        f"run time {seconds:.0f} s.",
        "",
        f"## 1. Known changes ({args.seeds} seeds, {args.n:,} events each)",
        "",
        f"Seed i changes at event {args.change:,} + i x k / {args.seeds}, so that the change falls",
        "at different places in the check cycle (k = check_every).",
        "Delays are in events after the change, the median over the seeds that fired;",
        "`k/n` is on how many seeds the test alarmed.",
        "",
        "| case | change | tests that alarmed (seeds, median delay) | first alarm "
        "| alarms before the change |",
        "|---|---|---|---|---|",
    ]
    for row in change_rows:
        fired = ", ".join(f"{k} ({c}/{args.seeds}, {d:,})" for k, c, d in row["fired"]) or "none"
        first = f"{row['first']:,}" if row["first"] is not None else "-"
        out.append(f"| {row['case']} | {CASES[row['case']]} | {fired} | {first} | {row['early']} |")
    out += [
        "",
        f"## 2. Stationary streams ({args.partition_n:,} events a partition, labels fed)",
        "",
        "A failing test is one over its effect floor and significant after BH; an alarm needs",
        f"{options.persistence} failing checks in a row of the same (test, feature).",
        "",
        "| stream | partitions | events | checks | failing tests | alarms "
        "| alarms / 100,000 events / partition | which |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total_events = total_alarms = 0
    for row in stationary_rows:
        total_events += row["events"]
        total_alarms += row["alarms"]
        out.append(
            f"| {row['stream']} | {row['partitions']} | {row['events']:,} | {row['checks']:,} | "
            f"{row['failures']} | {row['alarms']} | {row['per_100k']:.2f} | "
            f"{', '.join(row['which']) or '-'} |"
        )
    rate = total_alarms / (total_events / 100_000)
    out.append(f"| all | | {total_events:,} | | | {total_alarms} | {rate:.2f} | |")
    c = cost_row
    both = c["event_us"] + c["label_us"]
    out += [
        "",
        f"## 3. Cost (SEA, {args.cost_n:,} events, best of {args.repeats})",
        "",
        "CPU time per call (`time.process_time`), the best of the repeats; for scale, River's",
        "StandardScaler | LogisticRegression (predict + learn one event) in the same run.",
        "",
        "| observe_event | observe_label | both | River lr, predict + learn | both / River lr "
        "| pickled monitor | its numeric columns |",
        "|---|---|---|---|---|---|---|",
        f"| {c['event_us']:.2f} us | {c['label_us']:.2f} us | {both:.2f} us | "
        f"{c['river_us']:.2f} us | {both / c['river_us']:.0%} | "
        f"{c['pickled_bytes']:,} bytes | {c['columns_bytes']:,} bytes |",
        "",
        "Memory is bounded whatever the stream length: per partition, the reference and live",
        "windows of events and of labelled events as numpy columns, 8 bytes x (R + W) x",
        "(numeric features) each, categorical features as object arrays of shared strings,",
        "labels twice (text and number), plus at most k pending rows (the dicts of the events",
        "since the last check) and the domain classifier (one weight per feature or category).",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run: a test of the bench")
    parser.add_argument("--n", type=int, default=40_000, help="events of each change case")
    parser.add_argument("--change", type=int, default=20_000, help="position of the change")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of each change case")
    parser.add_argument(
        "--partition-n", type=int, default=100_000, help="events of a stationary partition"
    )
    parser.add_argument(
        "--partitions", default="SEA=4,Agrawal=3,STAGGER=3", help="stream=partitions"
    )
    parser.add_argument("--cost-n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.change, args.seeds = 24_000, 10_000, 1
        args.partition_n, args.partitions, args.cost_n, args.repeats = (
            20_000,
            "SEA=1,STAGGER=1",
            20_000,
            1,
        )
    partitions = {k: int(v) for k, v in (p.split("=") for p in args.partitions.split(","))}
    options = DataMonitorOptions()
    start = time.perf_counter()
    change_rows = changes(args.n, args.change, args.seeds, options)
    stationary_rows = stationary(partitions, args.partition_n, options)
    cost_row = cost(args.cost_n, args.repeats, options)
    text = markdown(
        args, options, change_rows, stationary_rows, cost_row, time.perf_counter() - start
    )
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
