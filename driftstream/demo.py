"""`driftstream demo`: the whole system on one machine in under a minute.

Starts the embedded broker (unless one is given), creates topics, publishes a SEA stream with a
sudden concept drift and delayed labels while a worker scores and learns from it, prints live
progress, then a summary (with a replay of the whole history checked against what was
served), and plots rolling accuracy with the drift markers to a PNG. With ``dashboard`` the
live page (`driftstream.dashboard`) is served during the run.

The worker checkpoints every `DemoOptions.checkpoint_every` records, and so publishes a
metrics record as often: the demo's `driftstream report` (written at the end, while the
broker is up) reads them, about 50 points for 20,000 events.

State goes to an SQLite file by default (removed first); ``kafka:`` or ``s3://BUCKET/PREFIX``
(with a key, `driftstream.state.signing`) work too: the demo's topics are new each run, so
its ``kafka:`` store is ``<demo prefix>checkpoints``, and under ``s3://`` it writes below
PREFIX/<demo prefix>, never into an earlier run's checkpoints.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from driftstream.consumers.reader import read_topic
from driftstream.consumers.worker import Worker, WorkerOptions
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import synthetic
from driftstream.state.kafka_store import create_checkpoint_topics
from driftstream.state.store import CheckpointStore, open_store, parse_spec
from driftstream.stream.learner import LearnerConfig
from driftstream.transport import Admin, KafkaSettings, topic_names

START_TS = 1_700_000_000_000  # fixed event time of the first event: the demo is reproducible


@dataclass
class DemoOptions:
    n: int = 20_000
    drift_at: int = 10_000
    label_delay: str = "100"
    model: str = "lr"
    drift_policy: str = "window"
    seed: int = 42
    state: str = "demo-state.sqlite"  # a path, sqlite:PATH, kafka: or s3://BUCKET/PREFIX
    state_key_file: str | None = None  # the signing key (else $DRIFTSTREAM_STATE_KEY)
    plot: str = "demo.png"
    topic_prefix: str = ""
    # 40,000 records (events and labels) / 800: 50 metrics records per run, each a point of
    # the report and the dashboard
    checkpoint_every: int = 800
    report: str = "demo-report.html"  # `driftstream report` of the run, from its topics
    dashboard: bool = False  # serve `driftstream dashboard` during the run
    dashboard_port: int = 8050  # 0: any free port


def run_demo(
    opts: DemoOptions,
    settings: KafkaSettings | None = None,
    out=sys.stdout,
    key: bytes | None = None,
    hold: Callable[[str], None] | None = None,
) -> dict:
    """Run the demo; returns the summary (also printed). ``key``: the state key, needed by
    the kafka: and s3:// stores. ``hold(url)``: with the dashboard, called after the summary
    while the broker and the page are still up (the CLI waits for Ctrl-C there)."""
    with contextlib.ExitStack() as stack:
        if settings is None:
            from driftstream.broker import EmbeddedBroker

            print("starting the embedded broker (Tansu) ...", file=out)
            broker = stack.enter_context(EmbeddedBroker())
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap, fast_group_timeouts=True)
            print(f"broker at {broker.bootstrap}", file=out)
        prefix = opts.topic_prefix or f"demo-{time.time_ns() // 1_000_000}."
        topics = topic_names(prefix)
        admin = Admin(settings)
        admin.create_topics(list(topics.values()), 1)
        admin.close()
        print(f"topics {prefix}{{events,labels,predictions,drift,metrics,deadletter}}", file=out)
        store = _open_state(opts.state, settings, prefix, key)
        print(f"state in {store.name}", file=out)
        dashboard = None
        if opts.dashboard:
            from driftstream.dashboard import Dashboard

            dashboard = stack.enter_context(
                Dashboard(settings, prefix, f"{prefix}workers", port=opts.dashboard_port)
            )
            print(f"dashboard at {dashboard.url} (live while the demo runs)", file=out)

        samples = list(
            synthetic(
                "sea",
                n=opts.n,
                seed=opts.seed,
                drift_at=[opts.drift_at],
                label_delay=opts.label_delay,
                start_ts=START_TS,
            )
        )
        publisher = EventPublisher(settings, prefix)
        producer = threading.Thread(target=publish_samples, args=(publisher, samples), daemon=True)
        producer.start()
        print(
            f"publishing {opts.n} SEA events (concept changes at {opts.drift_at}), labels "
            f"delayed by {opts.label_delay}; worker: model={opts.model} "
            f"policy={opts.drift_policy}",
            file=out,
        )

        worker = Worker(
            settings,
            LearnerConfig(model=opts.model, drift_policy=opts.drift_policy),
            store,
            WorkerOptions(
                group=f"{prefix}workers",
                topic_prefix=prefix,
                exit_when_idle=2.0,
                checkpoint_every=opts.checkpoint_every,
            ),
        )
        started = time.monotonic()
        progress = _Progress(out, started)
        worker.run(on_tick=progress)
        elapsed = time.monotonic() - started
        producer.join()
        publisher.close()
        progress.line(worker, final=True)

        summary = _summarise(settings, topics, samples, opts, elapsed)
        with _open_state(opts.state, settings, prefix, key) as store:
            summary.update(_replay_check(settings, prefix, store))
            if opts.report:
                from driftstream.report import write_report

                write_report(store, opts.report, settings, prefix)
        _print_summary(summary, out)
        _plot(summary, opts.plot)
        print(f"plot written to {opts.plot}", file=out)
        if opts.report:
            print(f"report written to {opts.report}", file=out)
        if dashboard is not None:
            summary["dashboard"] = dashboard.url
            if hold is not None:
                hold(dashboard.url)
        return summary


class _Progress:
    def __init__(self, out, started: float):
        self.out = out
        self.started = started
        self.last = 0.0

    def __call__(self, worker: Worker) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            self.line(worker)

    def line(self, worker: Worker, final: bool = False) -> None:
        summaries = [t.summary for t in worker.tasks.values()]
        events = sum(s["n_events"] for s in summaries)
        drifts = sum(s["drifts"]["concept"] for s in summaries)
        accs = [s["metrics"].get("rolling_accuracy") for s in summaries]
        acc = next((a for a in accs if a is not None), None)
        rate = events / max(time.monotonic() - self.started, 1e-9)
        print(
            f"  {'done' if final else '...'} {events:>7} events scored  {rate:>7,.0f}/s  "
            f"rolling accuracy {'-' if acc is None else f'{acc:.3f}'}  "
            f"concept drifts {drifts}",
            file=self.out,
            flush=True,
        )


def _read_all(settings: KafkaSettings, topic: str) -> list[dict]:
    return [orjson.loads(r.value) for r in read_topic(settings, topic)]


def _summarise(settings, topics, samples, opts: DemoOptions, elapsed: float) -> dict:
    predictions = {p["id"]: p["prediction"] for p in _read_all(settings, topics["predictions"])}
    drifts = [d for d in _read_all(settings, topics["drift"]) if d["kind"] == "concept"]
    deadletters = _read_all(settings, topics["deadletter"])
    correct = [predictions.get(s.id) == s.y for s in samples]
    positions = [d["event_ts"] - START_TS for d in drifts]  # labels are revealed at ts - delay
    acted = [pos for pos, d in zip(positions, drifts) if not d["action"].startswith("none")]
    after = [p for p in acted if p >= opts.drift_at]
    return {
        "events": len(samples),
        "predictions": len(predictions),
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(samples) / elapsed),
        "accuracy": sum(correct) / len(correct),
        "drift_at": opts.drift_at,
        "detections": positions,
        "acted_on": acted,
        "detection_delay": (after[0] - opts.drift_at) if after else None,
        "dead_letters": len(deadletters),
        "correct": correct,
    }


def _open_state(
    spec: str, settings: KafkaSettings, prefix: str, key: bytes | None
) -> CheckpointStore:
    """The demo's store: ``spec``, with the kafka: topics created, and s3:// below the run's
    own prefix."""
    parsed = parse_spec(spec)
    if parsed.kind == "kafka":
        create_checkpoint_topics(settings, prefix, 1)
    elif parsed.kind == "s3":
        spec = f"s3://{parsed.location}/{parsed.prefix}{prefix.rstrip('.')}"
    return open_store(spec, settings, prefix, key)


def _replay_check(settings: KafkaSettings, prefix: str, store: CheckpointStore) -> dict:
    """Replay the whole history from scratch, in the order the predictions recorded, and
    compare with what was served (as `driftstream replay --verify` does)."""
    from driftstream.consumers.replay import ReplayRange, replay, served_predictions, starting_point

    topics = topic_names(prefix)
    learner, offsets, start, _ = starting_point(
        store, 0, topics["events"], topics["labels"], ReplayRange()
    )
    late = store.latest(0).info["late"]
    served = served_predictions(settings, topics["predictions"], 0)
    result = replay(
        settings, prefix, 0, learner, offsets, start, ReplayRange(), served, verify=True
    )
    mismatch = result.first_mismatch
    return {
        "late_records": late,
        "replayed": len(result.rows),
        "replay_first_mismatch": None if mismatch is None else mismatch["id"],
    }


def _print_summary(s: dict, out) -> None:
    print("\nsummary", file=out)
    print(
        f"  events {s['events']}, predictions published {s['predictions']}, in {s['seconds']} s "
        f"({s['events_per_s']:,} events/s end to end)",
        file=out,
    )
    print(f"  accuracy of served predictions {s['accuracy']:.4f}", file=out)
    print(f"  concept drift detections (event-time position) {s['detections']}", file=out)
    print(
        f"  true change at {s['drift_at']}, first acted-on detection after it: "
        f"{s['detection_delay']} samples later",
        file=out,
    )
    print(f"  dead letters {s['dead_letters']}", file=out)
    if s["replay_first_mismatch"] is None:
        print(
            f"  replay of the whole history: all {s['replayed']} served predictions "
            f"reproduced exactly ({s['late_records']} records had arrived late)",
            file=out,
        )
    else:
        print(
            f"  replay of the whole history: MISMATCH at event {s['replay_first_mismatch']}",
            file=out,
        )


def _plot(s: dict, path: str, window: int = 500) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    correct = s["correct"]
    rolling, total = [], 0
    for i, c in enumerate(correct):
        total += c
        if i >= window:
            total -= correct[i - window]
        rolling.append(total / min(i + 1, window))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(rolling, lw=1, label=f"rolling accuracy ({window} events)")
    ax.axvline(s["drift_at"], color="black", ls="--", lw=1, label="true concept change")
    for i, pos in enumerate(s["detections"]):
        ax.axvline(pos, color="red", lw=1, alpha=0.7, label="ADWIN detection" if i == 0 else None)
    ax.set_xlabel("event")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("driftstream demo: SEA stream, sudden drift, labels delayed")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
