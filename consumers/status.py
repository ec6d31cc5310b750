"""`driftstream status`: per-partition lag, model version, rolling metric, last drift, and
the data monitor's state (alarms still active, the largest shifts, the latest statistic of
each test and feature in ``--json``).

Read from any checkpoint store (`CheckpointStore`): an SQLite file on this host, or the
``kafka:`` or ``s3://`` store from any host that reaches it.
"""

from __future__ import annotations

import time

from driftstream.state.store import CheckpointStore
from driftstream.transport import Consumer, KafkaSettings, topic_names

__all__ = ["format_data_drift", "format_status", "partition_status"]


def partition_status(settings: KafkaSettings, prefix: str, store: CheckpointStore) -> list[dict]:
    """One row per partition of the events topic, from the store and the broker."""
    topics = topic_names(prefix)
    consumer = Consumer(settings)
    try:
        inputs = (topics["events"], topics["labels"])
        partitions = consumer.partitions_for(inputs[0])
        tps = [(t, p) for t in inputs for p in partitions]
        highs = _highwaters(consumer, tps)
        rows = []
        for p in partitions:
            cp = store.latest(p)
            info = cp.info if cp else {}
            offsets = cp.offsets if cp else {}
            drifts = store.drift_log(p)
            last_drift = drifts[-1]["record"] if drifts else None
            metrics = info.get("metrics", {})
            rows.append(
                {
                    "partition": p,
                    "events_lag": _lag(highs.get((inputs[0], p)), offsets.get(inputs[0], 0)),
                    "labels_lag": _lag(highs.get((inputs[1], p)), offsets.get(inputs[1], 0)),
                    "model": info.get("model"),
                    "checkpoint": cp.version if cp else None,
                    "checkpoint_age_s": round(time.time() - cp.created_at / 1000, 1)
                    if cp
                    else None,
                    "rolling": {k: v for k, v in metrics.items() if k.startswith("rolling_")},
                    "pending": info.get("pending"),
                    "late": info.get("late"),
                    "last_drift": last_drift,
                    "data_drift": info.get("data_drift"),
                }
            )
        return rows
    finally:
        consumer.close()


def _highwaters(consumer: Consumer, tps) -> dict:
    """End offsets via a fetch (Tansu's ListOffsets answer is unreliable)."""
    consumer.assign(tps)
    consumer.seek_to_beginning(tps)
    deadline = time.monotonic() + 5
    highs = {}
    while time.monotonic() < deadline and len(highs) < len(tps):
        consumer.poll(100, max_records=1)
        highs = {tp: h for tp in tps if (h := consumer.highwater(*tp)) is not None}
    return highs


def _lag(high: int | None, done: int) -> int | None:
    return None if high is None else max(high - done, 0)


def format_status(rows: list[dict]) -> str:
    if not rows:
        return "no partitions (does the events topic exist?)"
    lines = [
        f"{'part':>4} {'events lag':>10} {'labels lag':>10} {'model':>12} {'pending':>8} "
        f"{'late':>6} {'rolling metric':>16}  last drift"
    ]
    for r in rows:
        model = r["model"]
        ver = f"g{model['generation']}.u{model['updates']}" if model else "-"
        rolling = next(iter(r["rolling"].items()), None)
        metric = f"{rolling[0][8:]}={rolling[1]:.4f}" if rolling else "-"
        d = r["last_drift"]
        drift = f"{d['kind']} at n={d.get('n_seen')} ({d.get('action')})" if d else "-"
        lines.append(
            f"{r['partition']:>4} {_s(r['events_lag']):>10} {_s(r['labels_lag']):>10} "
            f"{ver:>12} {_s(r['pending']):>8} {_s(r['late']):>6} {metric:>16}  {drift}"
        )
    for r in rows:
        data = r.get("data_drift")
        if data:
            lines.append(f"{r['partition']:>4} data drift: {format_data_drift(data)}")
    return "\n".join(lines)


def format_data_drift(data: dict) -> str:
    """Checks and alarms so far, the alarms still active, the largest shifts."""

    def name(f: dict) -> str:
        return f"{f['test']}({f['feature']})" if f.get("feature") else f["test"]

    active = ", ".join(name(f) for f in data.get("active", [])) or "none"
    largest = ", ".join(f"{name(f)}={f['statistic']:.4g}" for f in data.get("largest", [])[:3])
    return f"{data.get('checks', 0)} checks, {data.get('alarms', 0)} alarms; active: {active}" + (
        f"; largest: {largest}" if largest else ""
    )


def _s(v) -> str:
    return "-" if v is None else str(v)
