"""Replay a partition's history offline, from a checkpoint or from scratch, and compare.

A partition's processing is a pure function of its two input logs and the order in which
they were merged. The event-time merge settles that order except for records that arrived
later than the other input had advanced, so each served prediction records its event's place
among the labels. Re-running the logs in that order through a learner restored from a
checkpoint reproduces every prediction the live worker served after it. Replay reads the
topics without joining the live group or moving its offsets, and reports one row per event:
what was served live, what the replay predicts, the label, the error, the model version and
the drift that the label triggered.

Checkpoints come from any store (`CheckpointStore`), so replay runs on any host that reaches
Kafka and the store; their states are unpickled through the allow-list
(`driftstream.state.safe_pickle`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from driftstream.consumers.reader import read_range
from driftstream.state.checkpoints import Checkpoint
from driftstream.state.safe_pickle import load_learner
from driftstream.state.store import CheckpointStore
from driftstream.stream.codec import decode_records, parse_records
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.merge import EVENTS, recorded_order
from driftstream.stream.policies import error
from driftstream.stream.records import DriftReport, Prediction, Rejection
from driftstream.transport import KafkaSettings, topic_names


class ReplayError(Exception):
    """A replay that cannot be set up as asked; the message says why."""


@dataclass
class ReplayRange:
    """Which part of the history to report; times are epoch-ms (event time)."""

    from_offset: int | None = None
    to_offset: int | None = None  # exclusive
    from_time: int | None = None
    to_time: int | None = None  # exclusive

    def starts_after(self, offset: int, ts: int) -> bool:
        return (self.from_offset is not None and offset < self.from_offset) or (
            self.from_time is not None and ts < self.from_time
        )

    def ended(self, offset: int, ts: int) -> bool:
        return (self.to_offset is not None and offset >= self.to_offset) or (
            self.to_time is not None and ts >= self.to_time
        )


@dataclass
class ReplayResult:
    partition: int
    start: str  # where the learner came from
    start_offsets: dict[str, int]
    rows: list[dict] = field(default_factory=list)
    drifts: list[dict] = field(default_factory=list)
    learner: Learner | None = None
    seconds: float = 0.0
    n_records: int = 0
    first_mismatch: dict | None = None

    @property
    def events_per_s(self) -> float:
        return self.n_records / self.seconds if self.seconds else 0.0


def parse_time(text: str | None) -> int | None:
    """Epoch-ms integer or ISO-8601 (UTC when no zone is given)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(f"time {text!r} is neither epoch-ms nor ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


class StartingPoint(NamedTuple):
    """Where a replay starts: the learner, the offsets it reflects, a description, and the
    checkpoint it came from (None for a fresh learner)."""

    learner: Learner
    offsets: dict[str, int]
    start: str
    checkpoint: Checkpoint | None = None


def starting_point(
    store: CheckpointStore | None,
    partition: int,
    events_topic: str,
    labels_topic: str,
    rng: ReplayRange,
    checkpoint: int | None = None,
    config: LearnerConfig | None = None,
) -> StartingPoint:
    """The learner to start from and the offsets it reflects.

    - ``config`` given: a fresh learner with it, from the beginning (try another model/policy).
    - ``checkpoint`` given: that checkpoint.
    - otherwise the newest checkpoint at or before the range start (offset or time), or, if
      there is none, a fresh learner with the live configuration, from the beginning.
    """
    fresh = {events_topic: 0, labels_topic: 0}
    if config is not None:
        return StartingPoint(Learner(config, partition), fresh, "fresh (given model)")
    if store is None:
        raise ReplayError("no state store: pass --state, or --model to replay with a fresh model")
    if checkpoint is not None:
        cp = store.get(partition, checkpoint)
        return StartingPoint(load_learner(cp.state), cp.offsets, f"checkpoint {cp.version}", cp)
    candidates = [c for c in store.checkpoints(partition) if _before_range(c, events_topic, rng)]
    if candidates:
        cp = store.get(partition, candidates[-1]["version"])
        return StartingPoint(load_learner(cp.state), cp.offsets, f"checkpoint {cp.version}", cp)
    any_cp = store.latest(partition)
    if any_cp is None:
        raise ReplayError(
            f"partition {partition} has no checkpoint in {store.name}: pass "
            "--model (and --drift-policy) to replay with a fresh model"
        )
    live = load_learner(any_cp.state).config
    return StartingPoint(
        Learner(live, partition), fresh, "fresh (live configuration), from the beginning"
    )


def _before_range(meta: dict, events_topic: str, rng: ReplayRange) -> bool:
    offsets = meta["offsets"]
    if isinstance(offsets, str):
        offsets = orjson.loads(offsets)
    info = meta["info"]
    if isinstance(info, str):
        info = orjson.loads(info)
    if rng.from_offset is not None and offsets.get(events_topic, 0) > rng.from_offset:
        return False
    if rng.from_time is not None and (info or {}).get("clock", 0) >= rng.from_time:
        return False
    return rng.from_offset is not None or rng.from_time is not None


def served_predictions(settings: KafkaSettings, topic: str, partition: int) -> dict[str, dict]:
    """Predictions the live workers published for one input partition, by event id.

    After a crash an event may have been served twice; the last one is kept: it is the one
    whose processing the partition's state went on from."""
    from driftstream.transport import Consumer

    consumer = Consumer(settings)
    try:
        n = len(consumer.partitions_for(topic)) or 1
    finally:
        consumer.close()
    served: dict[str, dict] = {}
    for r in read_range(settings, topic, partition % n):
        p = orjson.loads(r.value)
        if p.get("partition") == partition:
            served[p["id"]] = p
    return served


def replay(
    settings: KafkaSettings,
    prefix: str,
    partition: int,
    learner: Learner,
    offsets: dict[str, int],
    start: str,
    rng: ReplayRange,
    served: dict[str, dict] | None = None,
    verify: bool = False,
) -> ReplayResult:
    """Re-run the partition's logs from ``offsets`` through ``learner``, in the order the live
    worker processed them (`recorded_order`, from ``served``).

    With ``verify`` the replay stops at the first event whose replayed prediction (value,
    probabilities, model version) differs from the served one, and records it.
    """
    topics = topic_names(prefix)
    ev_topic, lb_topic = topics["events"], topics["labels"]
    events = read_range(settings, ev_topic, partition, offsets.get(ev_topic, 0))
    labels = read_range(settings, lb_topic, partition, offsets.get(lb_topic, 0))
    result = ReplayResult(partition, start, dict(offsets), learner=learner)
    served = served or {}
    order = recorded_order(
        _decoded(events, "event", ev_topic, partition),
        _decoded(labels, "label", lb_topic, partition),
        {p["offset"]: p["labels_offset"] for p in served.values() if "labels_offset" in p},
    )
    rows: dict[str, dict] = {}
    labels_by_id: dict[str, Any] = {}
    started = time.perf_counter()
    for stream, item in order:
        result.n_records += 1
        if item.__class__ is Rejection:  # dead-lettered live: counted, no other effect
            learner.count_rejection(item.reason)
            continue
        if stream == EVENTS:
            if rng.ended(item.offset, item.ts):
                break
            outs = learner.process_event(item)
        else:
            outs = learner.process_label(item)
            labels_by_id.setdefault(item.id, item.label)
        for out in outs:
            if out.__class__ is Prediction:
                if rng.starts_after(out.offset, out.event_ts):
                    continue
                row = rows[out.id] = _row(out, served.get(out.id), item)
                result.rows.append(row)
                if verify and not row["match"]:
                    result.first_mismatch = row
                    break
            elif out.__class__ is DriftReport:
                result.drifts.append(out.to_wire())
                if out.id in rows:
                    what = out.action
                    if out.kind == "data":
                        where = f" in {out.feature}" if out.feature else ""
                        what = f"data drift ({out.detector['test']}{where}): {out.action}"
                    rows[out.id]["drift"] = "; ".join(filter(None, [rows[out.id]["drift"], what]))
        if result.first_mismatch is not None:
            break
    result.seconds = time.perf_counter() - started
    for row in result.rows:
        row["label"] = labels_by_id.get(row["id"])
        if row["label"] is not None and row["replayed"] is not None:
            row["error"] = error(learner.task, row["label"], row["replayed"])
    return result


def _decoded(records: list, kind: str, topic: str, partition: int) -> list:
    """An input's records as the merge takes them, ``(ts, Event | Label | Rejection)``."""
    parsed = parse_records([(r.offset, r.timestamp, r.value) for r in records], kind)
    return decode_records(parsed, kind, topic, partition, 0)[0]


def _row(pred: Prediction, served: dict | None, event) -> dict[str, Any]:
    version = pred.model.to_wire()
    proba = pred.to_wire().get("proba")
    if served is None:
        match = False
    else:
        match = (
            served.get("prediction") == pred.prediction
            and served.get("model") == version
            and served.get("proba") == proba
        )
    return {
        "id": pred.id,
        "offset": pred.offset,
        "event_ts": pred.event_ts,
        "features": orjson.dumps(event.features).decode(),
        "served": None if served is None else served.get("prediction"),
        "replayed": pred.prediction,
        "proba": orjson.dumps(proba).decode() if proba else None,
        "label": None,
        "error": None,
        "generation": pred.generation,
        "updates": pred.updates,
        "served_model": None if served is None else served.get("model"),
        "served_proba": None if served is None else served.get("proba"),
        "match": match,
        "drift": "",
    }
