"""One worker, 2 partitions: its partitions in 1 model process or spread over 2.

``driftstream run --model-processes N`` (consumers/model_pool.py) puts each partition a worker
owns in one of N model processes. This measures what that buys: a worker started as a user
would (``python -m driftstream.cli run``, `bench.load.cli_worker_args`) on a 2-partition topic
set already filled with the bench's data (`bench.load.make_samples`, round-robin over the
partitions), once with ``--model-processes 1`` and once with 2, alternating ``--repeats``
times (each run its own topics and state file), medians reported.

Per run: events/s = n / (first to last prediction CreateTime, all partitions): processing
only, no interpreter start, group join or idle exit; the worker's CPU seconds (its I/O
process and every model process, from ``os.wait4``, which counts the children it reaped),
each model process's own CPU seconds (sampled from /proc while it runs), and the 1-minute
load average before and after: the machine may be shared, and a busy one flattens any
scaling.

Usage, from the repository root::

    .venv/bin/python -m bench.model_processes [--n N] [--repeats R] [--model lr]
        [--kafka-client kafka-python|confluent] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.load import Env, broker_env, cli_worker_args, load_topics, make_samples, start_child
from bench.procs import child_pids, proc_cpu_s
from bench.report import fmt, table
from bench.runs import attempt, log, median_run

__all__ = ["main", "measure"]

PARTITIONS = 2


def measure(env: Env, model: str, processes: int) -> dict:
    """One worker on 2 partitions with ``processes`` model processes (see the module doc)."""
    from bench.load import read_keys_and_times

    prefix = env.prefix(f"mp{processes}-{model}")
    load = load_topics(env, prefix, env.samples, PARTITIONS)
    n = len(env.samples)
    args = cli_worker_args(env, prefix, model, env.tmp / f"{prefix}sqlite", 2.0)
    args += ["--model-processes", str(processes)]
    load_before = os.getloadavg()[0]
    proc, _out, err = start_child(env, args, f"worker-mp{processes}-{model}")
    model_cpu: dict[int, float] = {}
    deadline = time.monotonic() + 120 + n / 500
    while True:
        for pid in child_pids(proc.pid):  # the model processes (and any state writer)
            cpu = proc_cpu_s(pid)
            if cpu is not None:
                model_cpu[pid] = cpu
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"worker with {processes} model processes did not finish")
        time.sleep(0.02)  # sampling interval of /proc, not a synchronisation
    if code != 0:
        raise RuntimeError(f"worker exited {code}: {err.read_text()[-3000:]}")
    preds = read_keys_and_times(env.settings, load["topics"]["predictions"], expect=n)
    stamps = [ts for _, ts, _ in preds]
    span = (max(stamps) - min(stamps)) / 1000
    return {
        "model": model,
        "model_processes": processes,
        "events": n,
        "predictions": len(preds),
        "unique_predictions": len({k for k, _, _ in preds}),
        "partitions_seen": sorted({p for _, _, p in preds}),
        "span_s": span,
        "events_per_s": n / span if span > 0 else None,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "model_process_cpu_s": sorted(model_cpu.values(), reverse=True),
        "load_1min": [load_before, os.getloadavg()[0]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_processes", description=__doc__)
    parser.add_argument("--n", type=int, default=60_000, help="events (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (default %(default)s)")
    parser.add_argument("--model", default="lr", help="model spec (default %(default)s)")
    parser.add_argument(
        "--kafka-client",
        default="kafka-python",
        choices=["kafka-python", "confluent"],
        help="the worker's Kafka client (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="last stdout line: the results")
    args = parser.parse_args(argv)

    res: dict = {"n": args.n, "model": args.model, "client": args.kafka_client}
    res.update({"cores": os.cpu_count(), "runs": {1: [], 2: []}})
    tmp = Path(tempfile.mkdtemp(prefix="driftstream-bench-mp-"))
    with broker_env(tmp, make_samples(args.n), client=args.kafka_client) as env:
        for r in range(args.repeats):
            for k in (1, 2):
                log(f"round {r + 1}: worker, 2 partitions, {k} model process(es), {args.model}")
                run = attempt(res, f"mp{k}-{r}", measure, env, args.model, k)
                res["runs"][k].append(run)
                if run:
                    log(
                        f"  {fmt(run['events_per_s'])} events/s, cpu {run['cpu_s']:.1f} s, "
                        f"load {run['load_1min'][0]:.1f}"
                    )
    rows = []
    for k in (1, 2):
        runs = [r for r in res["runs"][k] if r]
        best = median_run(runs, "events_per_s")
        res[f"median_{k}"] = best
        if best is None:
            continue
        rows.append(
            [
                str(k),
                fmt(best["events_per_s"]),
                ", ".join(fmt(r["events_per_s"]) for r in runs),
                f"{best['cpu_s']:.1f}",
                " + ".join(f"{c:.1f}" for c in best["model_process_cpu_s"]),
                f"{best['unique_predictions']:,}",
                f"{statistics.mean(x for r in runs for x in r['load_1min']):.1f}",
            ]
        )
    one, two = res.get("median_1"), res.get("median_2")
    res["ratio_2_vs_1"] = (
        two["events_per_s"] / one["events_per_s"] if one and two and one["events_per_s"] else None
    )
    header = [
        "model processes",
        "events/s (median)",
        "every run",
        "worker CPU s",
        "model processes' CPU s",
        "unique predictions",
        "load (1 min)",
    ]
    print(table(rows, header))
    print(
        f"\n2 vs 1: {fmt(res['ratio_2_vs_1'], '.2f')}x; {res['cores']} cores; n={args.n}; "
        f"{args.model}; {args.kafka_client}"
    )
    for name, error in res.get("errors", {}).items():
        print(f"FAILED {name}: {error[:300]}")
    if args.json:
        print(json.dumps(res, default=str))
    return 0 if not res.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
