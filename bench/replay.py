"""Replay speed: how fast `driftstream replay` re-runs a partition's recorded history.

    .venv/bin/python -m bench.replay [--n N] [--json]

Starts its own embedded broker, publishes n SEA events with a sudden drift and labels delayed
by 100 to one partition, runs a worker over them (checkpoint every 10,000 records), then times
three replays of that history with the same code as the CLI:
- whole history with --verify (read both topics and the predictions topic, compare every event),
- the processing alone (topics already read: merge + learner + report rows),
- a middle range from an intermediate checkpoint (the last fifth of the history).
River's own `simulate_qa` loop on the same data is the reference, measured in the same run.

Then, for each of ``--live-rates``, a worker tails a live load (the bench's load generator,
a fresh broker) for 10 s; the whole history is replayed with --verify, once in the order the
predictions recorded and once by event time alone: how many records came late, and whether
replay still reproduces every served prediction.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.latency import measure_latency
from bench.load import broker_env
from bench.offline import measure_river_inprocess
from driftstream.broker import EmbeddedBroker
from driftstream.consumers.replay import ReplayRange, replay, served_predictions, starting_point
from driftstream.consumers.worker import Worker, WorkerOptions
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import synthetic
from driftstream.state.store import open_store
from driftstream.stream.learner import LearnerConfig
from driftstream.transport import Admin, KafkaSettings, topic_names


def timed_replay(settings, prefix, store, rng, verify: bool) -> dict:
    """Wall time of a replay, including reading the topics (as the CLI does)."""
    topics = topic_names(prefix)
    started = time.perf_counter()
    learner, offsets, start, _ = starting_point(store, 0, topics["events"], topics["labels"], rng)
    served = served_predictions(settings, topics["predictions"], 0) if verify else {}
    result = replay(settings, prefix, 0, learner, offsets, start, rng, served, verify=verify)
    seconds = time.perf_counter() - started
    return {
        "events": len(result.rows),
        "seconds": seconds,
        "events_per_s": len(result.rows) / seconds,
        "processing_events_per_s": len(result.rows) / result.seconds,
        "mismatches": sum(not r["match"] for r in result.rows) if verify else None,
        "start": start,
    }


def live_replay(tmp: Path, samples: list, rate: float) -> dict:
    """Replay of a history a worker took live at ``rate`` events/s, with and without the
    order the predictions recorded (``labels_offset``)."""
    with broker_env(tmp, samples) as env:
        live = measure_latency(env, rate, warmup_s=2, steady_s=8)
        prefix, settings = live["topic_prefix"], env.settings
        with open_store(live["state"]) as store:
            late = store.latest(0).info["late"]
            recorded = timed_replay(settings, prefix, store, ReplayRange(), True)
            served = {
                k: {f: v for f, v in p.items() if f != "labels_offset"}
                for k, p in served_predictions(
                    settings, topic_names(prefix)["predictions"], 0
                ).items()
            }
            learner, offsets, start, _ = starting_point(
                store,
                0,
                topic_names(prefix)["events"],
                topic_names(prefix)["labels"],
                ReplayRange(),
            )
            by_time = replay(
                settings, prefix, 0, learner, offsets, start, ReplayRange(), served, verify=True
            )
    mismatch = by_time.first_mismatch
    return {
        "rate": rate,
        "events": live["events_published"],
        "late_records": late,
        "mismatches_recorded_order": recorded["mismatches"],
        "verified_events": recorded["events"],
        "event_time_first_mismatch_offset": None if mismatch is None else mismatch["offset"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument(
        "--live-rates",
        default="3000,13000",
        help="events/s of the live runs, comma-separated ('' for none)",
    )
    args = parser.parse_args(argv)
    samples = list(
        synthetic("sea", n=args.n, seed=42, drift_at=[args.n // 2], label_delay="100", start_ts=0)
    )
    out: dict = {
        "n": args.n,
        "river_events_per_s": measure_river_inprocess(samples, "lr")["events_per_s"],
    }
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        settings = KafkaSettings(broker.bootstrap, fast_group_timeouts=True)
        prefix = "bench-replay."
        Admin(settings).create_topics(list(topic_names(prefix).values()), 1)
        publisher = EventPublisher(settings, prefix)
        publish_samples(publisher, samples)
        publisher.close()
        state = str(Path(tmp) / "state.sqlite")
        worker = Worker(
            settings,
            LearnerConfig(model="lr", drift_policy="window"),
            state,
            WorkerOptions(
                group=prefix + "g", topic_prefix=prefix, exit_when_idle=1.5, checkpoint_every=10_000
            ),
        )
        assert worker.run() == 0
        with open_store(state) as store:
            out["whole_verify"] = timed_replay(settings, prefix, store, ReplayRange(), True)
            out["middle_from_checkpoint"] = timed_replay(
                settings, prefix, store, ReplayRange(from_offset=args.n * 4 // 5), False
            )
        out["live"] = [
            live_replay(Path(tmp), samples, float(rate))
            for rate in filter(None, args.live_rates.split(","))
        ]
    w, m = out["whole_verify"], out["middle_from_checkpoint"]
    print(f"replay speed, 1 partition, lr/window, n={args.n:,} SEA events (labels delayed 100)")
    print(f"{'what':<44}{'events':>9}{'seconds':>9}{'events/s':>10}{'processing ev/s':>17}")
    print(
        f"{'whole history, --verify (reads 3 topics)':<44}{w['events']:>9,}{w['seconds']:>9.2f}"
        f"{w['events_per_s']:>10,.0f}{w['processing_events_per_s']:>17,.0f}"
    )
    print(
        f"{'last fifth, from ' + m['start']:<44}{m['events']:>9,}{m['seconds']:>9.2f}"
        f"{m['events_per_s']:>10,.0f}{m['processing_events_per_s']:>17,.0f}"
    )
    print(
        f"{'River simulate_qa loop (no Kafka), same data':<44}{args.n:>9,}{'':>9}"
        f"{out['river_events_per_s']:>10,.0f}"
    )
    print(f"mismatches in the verified replay: {w['mismatches']}")
    if out["live"]:
        print("\nlive runs, 10 s each (a worker tailing the load generator), replayed whole:")
        print(
            f"{'events/s':>9}{'events':>9}{'late records':>14}{'mismatches':>12}"
            f"{'by event time alone: first mismatch':>38}"
        )
        for r in out["live"]:
            first = r["event_time_first_mismatch_offset"]
            print(
                f"{r['rate']:>9,.0f}{r['events']:>9,}{r['late_records']:>14,}"
                f"{r['mismatches_recorded_order']:>12}"
                f"{'none' if first is None else f'at event offset {first:,}':>38}"
            )
    if args.json:
        print(json.dumps(out))
    failed = w["mismatches"] or any(r["mismatches_recorded_order"] for r in out["live"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
