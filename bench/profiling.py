"""The throughput bench's ``--profile``: the 1-partition worker under cProfile.

Only the 1-partition worker measurement, profiled from its first records to its last flush
(`bench.worker_runs.measure_worker_1p` with a profile path); prints the top 25 functions by
cumulative and by own time. Its events/s is slowed by the profiler and is not a result.
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import re
import shutil
import tempfile
import time
from pathlib import Path

from bench.load import broker_env, make_samples
from bench.procs import ROOT
from bench.runs import log
from bench.worker_runs import measure_worker_1p

__all__ = ["profile_main", "run_profile"]


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


def profile_main(args: argparse.Namespace, title: str) -> int:
    """Run `run_profile` and print its result (and with ``--json`` one JSON line)."""
    started = time.perf_counter()
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
