"""What the data-drift monitors cost the worker: the 1-partition lr worker with them on and off.

The same worker run as `bench.throughput`'s 1-partition line (`measure_worker_1p`: SEA
events and their labels already in the topics, timed from the first poll with records to
the last prediction acknowledged), once with the learner's defaults (monitors on) and once
with ``data_drift=False``, alternating ``--repeats`` rounds on one broker (the order swapped
each round, each run its own topics and state), River's in-process loop in each round for
scale. Reported: per round and the medians, events/s, the model process's CPU µs per event,
and on/off ratios computed within each round (a shared machine drifts between rounds).

Usage, from the repository root::

    .venv/bin/python -m bench.monitor_cost [--n N] [--repeats R] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.load import broker_env, make_samples
from bench.report import fmt, table
from bench.worker_runs import alternating_rounds

__all__ = ["main", "measure"]

ARMS = {"on": {}, "off": {"data_drift": False}}


def measure(n: int, repeats: int) -> dict:
    """``repeats`` rounds of both arms on one broker (see the module doc)."""
    samples = make_samples(n)
    tmp = Path(tempfile.mkdtemp(prefix="driftstream-bench-"))
    try:
        with broker_env(tmp, samples) as env:
            arms = {f"monitors {arm}": (env, {"learner": learner}) for arm, learner in ARMS.items()}
            runs = alternating_rounds(samples, arms, repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rounds = [
        {
            "river": r["river"],
            **{arm: r[f"monitors {arm}"]["events_per_s"] for arm in ARMS},
            **{
                f"{arm}_model_us": 1e6 * r[f"monitors {arm}"]["model_process_cpu_s"] / n
                for arm in ARMS
            },
        }
        for r in runs
    ]
    med = statistics.median
    return {
        "n": n,
        "rounds": rounds,
        "river_events_per_s": med(r["river"] for r in rounds),
        "on_events_per_s": med(r["on"] for r in rounds),
        "off_events_per_s": med(r["off"] for r in rounds),
        "on_vs_off": med(r["on"] / r["off"] for r in rounds),
        "on_model_us": med(r["on_model_us"] for r in rounds),
        "off_model_us": med(r["off_model_us"] for r in rounds),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.monitor_cost", description=__doc__)
    p.add_argument("--n", type=int, default=100_000, help="events (default 100000)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of both arms (default 3)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args(argv)
    res = measure(args.n, args.repeats)
    rows = [
        [
            str(i + 1),
            fmt(r["river"]),
            fmt(r["on"]),
            fmt(r["off"]),
            f"{r['on'] / r['off']:.2f}",
            f"{r['on_model_us']:.1f}",
            f"{r['off_model_us']:.1f}",
        ]
        for i, r in enumerate(res["rounds"])
    ]
    rows.append(
        [
            "median",
            fmt(res["river_events_per_s"]),
            fmt(res["on_events_per_s"]),
            fmt(res["off_events_per_s"]),
            f"{res['on_vs_off']:.2f}",
            f"{res['on_model_us']:.1f}",
            f"{res['off_model_us']:.1f}",
        ]
    )
    head = ["round", "River ev/s", "monitors on ev/s", "off ev/s", "on/off"]
    head += ["model µs/ev on", "off"]
    print(table(rows, head))
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
