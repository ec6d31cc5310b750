"""`driftstream explain EVENT_ID`: one served prediction, where it came from, and its proof.

Finds the event's prediction on the predictions topic, shows the features, the served
prediction and probabilities and the model version, names the checkpoint it descends from and
the drift events before it, then reproduces it by replaying the input logs from that checkpoint
and says whether the result matches exactly. It also says what wrote that checkpoint: the
driftstream, River and Python versions and the learner's configuration, and what the data
monitor thought of the inputs when the event was scored (alarms active, largest shifts).
"""

from __future__ import annotations

import dataclasses

import orjson

from driftstream.consumers.reader import read_range, read_topic
from driftstream.consumers.replay import ReplayError, ReplayRange, replay, starting_point
from driftstream.consumers.status import format_data_drift
from driftstream.state.store import CheckpointStore
from driftstream.stream.learner import LearnerConfig
from driftstream.transport import KafkaSettings, topic_names

__all__ = ["explain", "format_explanation"]

_VERSIONS = ("driftstream", "river", "python")


def explain(settings: KafkaSettings, prefix: str, store: CheckpointStore, event_id: str) -> dict:
    """Everything known about one event's prediction; ``match`` says if replay reproduced it."""
    topics = topic_names(prefix)
    predictions = [orjson.loads(r.value) for r in read_topic(settings, topics["predictions"])]
    served = next((p for p in reversed(predictions) if p["id"] == event_id), None)
    if served is None:
        raise ReplayError(f"no prediction for event {event_id!r} on {topics['predictions']}")
    partition, offset = served["partition"], served["offset"]
    # every prediction of the partition: they record the order replay must follow
    in_partition = {p["id"]: p for p in predictions if p["partition"] == partition}
    event = read_range(settings, topics["events"], partition, offset, offset + 1)
    if not event:
        raise ReplayError(
            f"event {event_id!r} is no longer at {topics['events']}/{partition}"
            f"@{offset} (retention?)"
        )
    # Replay from the newest checkpoint taken at or before this event, up to the event.
    rng = ReplayRange(from_offset=offset, to_offset=offset + 1)
    learner, offsets, start, checkpoint = starting_point(
        store, partition, topics["events"], topics["labels"], rng
    )
    written = {} if checkpoint is None else checkpoint.provenance
    config = written.get("config") or dataclasses.asdict(learner.config)
    result = replay(settings, prefix, partition, learner, offsets, start, rng, in_partition)
    row = next((r for r in result.rows if r["id"] == event_id), None)
    drifts = [
        d["record"]
        for d in store.drift_log(partition)
        if d["record"]["event_ts"] <= served["event_ts"]
    ]
    return {
        "id": event_id,
        "partition": partition,
        "offset": offset,
        "features": orjson.loads(event[0].value).get("features"),
        "served": served,
        "descends_from": start,
        "start_offsets": offsets,
        "written_by": {k: written.get(k) for k in _VERSIONS} if checkpoint else None,
        "learner_config": config,
        "drifts_before": drifts,
        "replayed": None
        if row is None
        else {
            "prediction": row["replayed"],
            "proba": orjson.loads(row["proba"]) if row["proba"] else None,
            "model": {"generation": row["generation"], "updates": row["updates"]},
        },
        "match": bool(row and row["match"]),
        # the replayed learner stops right after the event: its data monitor then
        "data_drift": None
        if learner.data_monitor is None or row is None
        else learner.summary()["data_drift"],
    }


def format_explanation(e: dict) -> str:
    s = e["served"]
    lines = [
        f"event {e['id']} (partition {e['partition']}, offset {e['offset']}, "
        f"event time {s['event_ts']})",
        f"  features: {orjson.dumps(e['features']).decode()}",
        f"  served:   {s['prediction']!r} proba={s.get('proba')} model "
        f"g{s['model']['generation']}.u{s['model']['updates']}",
        f"  descends from {e['descends_from']} (offsets {e['start_offsets']})",
    ]
    written = e["written_by"]
    if written is not None:
        lines.append(
            "  written by driftstream {driftstream}, River {river}, Python {python}".format(
                **{k: written.get(k) or "unknown" for k in _VERSIONS}
            )
        )
    lines.append(f"  learner configuration: {_config_text(e['learner_config'])}")
    drifts = e["drifts_before"]
    lines.append(f"  drift events before it: {len(drifts)}")
    for d in drifts[-5:]:
        lines.append(
            f"    {d['kind']} at ts {d['event_ts']}: {d['action']} "
            f"(model {d['model_before']} -> {d['model_after']})"
        )
    r = e["replayed"]
    if r is None:
        lines.append("  replay did not reach the event")
    else:
        lines.append(
            f"  replayed: {r['prediction']!r} proba={r['proba']} model "
            f"g{r['model']['generation']}.u{r['model']['updates']}"
        )
    data = e.get("data_drift")
    if data is not None:
        lines.append(f"  data drift when it was scored: {format_data_drift(data)}")
    lines.append("  MATCHES EXACTLY" if e["match"] else "  DOES NOT MATCH")
    return "\n".join(lines)


def _config_text(config: dict) -> str:
    """Model and policy, then every other field that is not its default."""
    defaults = dataclasses.asdict(LearnerConfig())
    shown = {k: config.get(k) for k in ("model", "drift_policy")}
    shown.update(
        {
            k: v
            for k, v in config.items()
            if k not in shown and (k not in defaults or defaults[k] != v)
        }
    )
    reference = shown.get("reference")
    if reference:  # the pinned rows themselves: named, not printed
        source = reference.get("source") or {}
        shown["reference"] = (
            f"<{len(reference['rows'])} rows of {source.get('file')} "
            f"sha256:{str(source.get('sha256'))[:12]}>"
        )
    rest = "" if len(shown) == len(config) else " (the rest default)"
    return (
        ", ".join(f"{k}={v}" if k == "reference" and v else f"{k}={v!r}" for k, v in shown.items())
        + rest
    )
