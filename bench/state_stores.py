"""Checkpoint stores compared: save and restore of one large learner state on each backend,
and the worker's throughput on each.

    .venv/bin/python -m bench.state_stores [--pending N] [--repeat R] [--json]
    .venv/bin/python -m bench.state_stores --worker [--n N] [--repeat R] [--json]

Builds the state of an ``lr`` learner holding N pending joins (default 1,000,000: what issue
24 asks for), then for each store (``sqlite:``, ``kafka:`` on the embedded Tansu broker,
``s3://`` on a local SeaweedFS) runs R times, each step in a fresh child process. ``kafka:``
has two rows, ``kafka/confluent`` and ``kafka/kafka-python``: the client that reads the
checkpoints (the store's own choice is confluent-kafka when installed; both write with
kafka-python); ``--stores`` picks rows.

- save: ``save_checkpoint`` of the state (read from a file before timing), after one small
  checkpoint so the store is not empty; the seconds the call takes, and the child's peak RSS;
- restore: ``latest(0)`` in a process that has never seen the store (a new owner), once the
  store is open (opening: connections, checks, timed apart): seconds to the verified bytes,
  the peak RSS at that point, then the seconds `load_learner` takes to unpickle them (the
  same on every backend; the worker does it in its model process).

The children find the S3 server the standard AWS way (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ... in their environment) and the key in ``DRIFTSTREAM_STATE_KEY``.
The table gives medians.

``--worker``: the 1-partition lr worker of `bench.throughput` (`measure_worker_1p`: a child
process, n SEA events and their labels already in the topics, timed from its first records to
every prediction acknowledged) with each store in turn, R rounds, the stores' order rotated
each round; once with the worker's default ``--checkpoint-every`` (100,000 records) and once
with 10,000 (40 checkpoints in a 100,000-event run), where a store's cost shows more. Reported:
median events/s per store, the median over rounds of each store's rate over SQLite's in the
same round (one broker, one S3 server, the same data), and the I/O process's CPU time per
event (steadier than wall time on a shared machine: the store's work is done there).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from driftstream.broker import EmbeddedBroker
from driftstream.state.kafka_store import KafkaCheckpointStore, create_checkpoint_topics
from driftstream.state.safe_pickle import load_learner
from driftstream.state.signing import load_state_key
from driftstream.state.store import open_store
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.records import Event
from driftstream.transport import KafkaSettings
from tests.seaweedfs import SeaweedS3

BACKENDS = ("sqlite", "kafka", "s3")
# kafka: reads with confluent-kafka when installed (the store's own choice), and with
# kafka-python for comparison; writes use the settings' client (kafka-python here).
ROWS = ["sqlite", "kafka/confluent", "kafka/kafka-python", "s3"]
KEY = "bench key, not a secret, 32 byte"


def build_state(pending: int) -> bytes:
    """The pickled state of an lr learner that scored ``pending`` events, none labelled."""
    learner = Learner(LearnerConfig(model="lr", data_drift=False))
    rng = random.Random(0)
    gc.disable()  # a million live tuples: collections would only slow the build
    try:
        for i in range(pending):
            x = {"a": rng.random(), "b": rng.random(), "c": rng.random()}
            learner.process_event(Event(f"e{i}", x, ts=i))
        return learner.to_bytes()
    finally:
        gc.enable()


def _rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) RSS. Not ru_maxrss: that carries the
    parent's peak over fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _open(args: argparse.Namespace):
    settings = KafkaSettings(bootstrap_servers=args.bootstrap) if args.bootstrap else None
    key = load_state_key(None, os.environ)
    if args.read_client:  # the kafka: store, read with this client
        return KafkaCheckpointStore(settings, args.prefix, key, read_client=args.read_client)
    return open_store(args.spec, kafka_settings=settings, topic_prefix=args.prefix, key=key)


def child(args: argparse.Namespace) -> None:
    """One timed step in this process; prints one JSON line."""
    base = {f"{args.step}_base_rss_mb": _rss_mb("VmRSS")}  # the imports, before any work
    if args.step == "save":
        state = Path(args.state_file).read_bytes()
        store = _open(args)
        store.save_checkpoint(0, b"small", {"events": 1}, (0, 1))
        started = time.perf_counter()
        store.save_checkpoint(0, state, {"events": 2}, (0, 2), info={"pending": args.pending})
        out = {"save_s": time.perf_counter() - started, "save_rss_mb": _rss_mb()}
    else:
        started = time.perf_counter()
        store = _open(args)
        open_s = time.perf_counter() - started
        started = time.perf_counter()
        checkpoint = store.latest(0)
        restore_s = time.perf_counter() - started
        rss = _rss_mb()
        started = time.perf_counter()
        learner = load_learner(checkpoint.state)
        out = {
            "open_s": open_s,
            "restore_s": restore_s,
            "restore_rss_mb": rss,
            "unpickle_s": time.perf_counter() - started,
            "pending": len(learner.pending),
            "bytes": len(checkpoint.state),
        }
    store.close()
    print(json.dumps({**base, **out}))


def _run_child(step: str, spec: str, env: dict, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "bench.state_stores", "--child", step, "--spec", spec]
    done = subprocess.run(
        command + extra, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{step} on {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(pending: int, repeat: int, rows: list[str] = ROWS) -> dict:
    """``rows``: backends, ``kafka/CLIENT`` for the kafka: store read with that client."""
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        tmp_path = Path(tmp)
        started = time.perf_counter()
        state = build_state(pending)
        build_s = time.perf_counter() - started
        state_file = tmp_path / "state.pickle"
        state_file.write_bytes(state)
        with EmbeddedBroker() as broker, SeaweedS3(tmp_path / "seaweedfs") as s3:
            env = {
                **os.environ,
                "DRIFTSTREAM_STATE_KEY": KEY,
                "AWS_ENDPOINT_URL": s3.endpoint_url,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                "AWS_DEFAULT_REGION": s3.region,
            }
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
            runs: dict[str, list[dict]] = {row: [] for row in rows}
            for i in range(repeat):
                for row in rows:
                    backend, _, read_client = row.partition("/")
                    prefix = f"bench{i}{read_client.replace('-', '')}."
                    extra = ["--prefix", prefix, "--pending", str(pending)]
                    if read_client:
                        extra += ["--read-client", read_client]
                    if backend == "sqlite":
                        spec = f"sqlite:{tmp_path / f'state{i}.sqlite'}"
                    elif backend == "kafka":
                        spec = "kafka:"
                        create_checkpoint_topics(settings, prefix, 1)
                        extra += ["--bootstrap", broker.bootstrap]
                    else:
                        spec = f"s3://{s3.bucket}/bench{i}"
                    saved = _run_child("save", spec, env, extra + ["--state-file", str(state_file)])
                    restored = _run_child("restore", spec, env, extra)
                    if restored["bytes"] != len(state) or restored["pending"] != pending:
                        raise RuntimeError(f"{backend}: restored {restored}, saved {len(state)}")
                    runs[row].append({**saved, **restored})
                    print(f"  run {i + 1} {row}: {runs[row][-1]}", file=sys.stderr)
    medians = {
        b: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for b, rows in runs.items()
    }
    return {
        "pending": pending,
        "state_bytes": len(state),
        "build_s": build_s,
        "repeat": repeat,
        "medians": medians,
        "runs": runs,
    }


def table(result: dict) -> str:
    sqlite = result["medians"]["sqlite"]
    lines = [
        f"state: lr learner, {result['pending']:,} pending joins, "
        f"{result['state_bytes'] / 1e6:.1f} MB pickled; medians of {result['repeat']} runs",
        "",
        f"{'store':<18} {'open s':>7} {'save s':>7} {'restore s':>10} {'vs sqlite':>10} "
        f"{'save peak RSS MB':>17} {'restore peak RSS MB':>20} {'unpickle s':>11}",
    ]
    for backend, m in result["medians"].items():
        lines.append(
            f"{backend:<18} {m['open_s']:>7.2f} {m['save_s']:>7.2f} {m['restore_s']:>10.2f} "
            f"{m['restore_s'] / sqlite['restore_s']:>9.2f}x {m['save_rss_mb']:>17.0f} "
            f"{m['restore_rss_mb']:>20.0f} {m['unpickle_s']:>11.2f}"
        )
    base = result["medians"]["sqlite"]["restore_base_rss_mb"]
    lines.append(f"(a child's RSS after its imports, before any work: {base:.0f} MB)")
    return "\n".join(lines)


WORKER_EVERY = (100_000, 10_000)  # --checkpoint-every of the worker runs


def run_workers(n: int, repeat: int) -> dict:
    """The 1-partition worker's events/s with each store (see the module docstring)."""
    from bench.load import broker_env, make_samples
    from bench.worker_runs import measure_worker_1p

    samples = make_samples(n)
    runs: dict[int, list[dict[str, float]]] = {every: [] for every in WORKER_EVERY}
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        tmp_path = Path(tmp)
        with broker_env(tmp_path, samples) as env, SeaweedS3(tmp_path / "seaweedfs") as s3:

            def store_of(backend: str):
                def store(prefix: str) -> dict | None:
                    if backend == "kafka":
                        create_checkpoint_topics(env.settings, prefix, 1)
                        return {"spec": "kafka:", "key": KEY}
                    spec = f"s3://{s3.bucket}/{prefix.rstrip('.')}"
                    return {"spec": spec, "key": KEY, "s3_options": s3.client_options()}

                return None if backend == "sqlite" else store

            for every in WORKER_EVERY:
                for i in range(repeat):
                    order = BACKENDS[i % 3 :] + BACKENDS[: i % 3]
                    rates = {}
                    for backend in order:
                        result = measure_worker_1p(
                            env, "lr", store=store_of(backend), checkpoint_every=every
                        )
                        rates[backend] = {
                            "events_per_s": result["events_per_s"],
                            "io_cpu_us": 1e6 * result["io_process_cpu_s"] / n,
                        }
                        print(
                            f"  every {every} round {i + 1} {backend}: "
                            f"{rates[backend]['events_per_s']:,.0f} events/s, I/O process "
                            f"{rates[backend]['io_cpu_us']:.1f} CPU µs/event",
                            file=sys.stderr,
                        )
                    runs[every].append(rates)
    summary = {}
    for every, rounds in runs.items():
        summary[every] = {
            b: {
                "events_per_s": statistics.median(r[b]["events_per_s"] for r in rounds),
                "vs_sqlite": statistics.median(
                    r[b]["events_per_s"] / r["sqlite"]["events_per_s"] for r in rounds
                ),
                "io_cpu_us": statistics.median(r[b]["io_cpu_us"] for r in rounds),
            }
            for b in BACKENDS
        }
    return {"n": n, "repeat": repeat, "summary": summary, "runs": runs}


def worker_table(result: dict) -> str:
    lines = [
        f"1-partition lr worker, {result['n']:,} events (+ labels); medians of "
        f"{result['repeat']} rounds, stores in rotating order",
        "",
        f"{'checkpoint every':>16} {'store':<8} {'events/s':>10} {'vs sqlite':>10} "
        f"{'I/O process CPU µs/event':>25}",
    ]
    for every, stores in result["summary"].items():
        for backend, m in stores.items():
            lines.append(
                f"{every:>16,} {backend:<8} {m['events_per_s']:>10,.0f} {m['vs_sqlite']:>9.2f}x "
                f"{m['io_cpu_us']:>25.1f}"
            )
    lines.append(
        "(vs sqlite: the median over rounds of the rate over SQLite's in that round; the I/O "
        "process does the Kafka I/O and the checkpoint saves)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--worker", action="store_true", help="the worker's throughput on each store instead"
    )
    parser.add_argument("--n", type=int, default=100_000, help="--worker: events (100000)")
    parser.add_argument("--child", choices=("save", "restore"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--state-file", help=argparse.SUPPRESS)
    parser.add_argument("--read-client", help=argparse.SUPPRESS)
    parser.add_argument(
        "--stores",
        default=",".join(ROWS),
        help=f"rows to measure, comma-separated (default {','.join(ROWS)}; kafka/CLIENT: "
        "the kafka: store read with that client)",
    )
    args = parser.parse_args(argv)
    if args.child:
        args.step = args.child
        child(args)
        return
    if args.worker:
        result = run_workers(args.n, args.repeat)
        print(json.dumps(result) if args.json else worker_table(result))
        return
    result = run(args.pending, args.repeat, args.stores.split(","))
    print(json.dumps(result) if args.json else table(result))


if __name__ == "__main__":
    main()
