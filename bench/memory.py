"""Memory of pending joins: a learner holding many scored events whose labels never arrive.

Each pending join keeps its event's features until the label comes; `measure_pending_memory`
measures what that costs in RSS and in checkpoint bytes, and how long scoring pauses while
such a state is checkpointed, in a child process of its own (`pending_child`).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from bench.load import Env, start_child
from bench.procs import child_args, last_json_line, wait_child
from driftstream.producers.sources import synthetic

__all__ = ["measure_pending_memory", "pending_child"]


def measure_pending_memory(env: Env, n_pending: int, model: str = "lr") -> dict:
    """Memory of a Learner holding ``n_pending`` pending joins (events scored, labels never
    arriving), alone in a child process (``python -m bench.child pending``).

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
    proc, out, err = start_child(env, child_args("pending", spec), "pending")
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


def pending_child(spec: dict) -> int:
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
