"""The drift log and model-version history of the shared stores, as batches beside checkpoints.

A store writes each checkpoint's drift records and model events as one signed batch *before*
the checkpoint itself. A writer killed in between leaves a batch whose checkpoint never came;
the next owner resumes from the previous checkpoint and, processing being deterministic,
reports the same records again. So readers drop repeated records (same partition, kind and
content): nothing is lost and nothing is counted twice. Rows come out as
`StateStore.drift_log` and `StateStore.model_versions` give them.

>>> batch = encode_batch(0, 3, "c1", 1000, [{"kind": "concept", "n_seen": 7}], [])
>>> again = encode_batch(0, 3, "c2", 2000, [{"kind": "concept", "n_seen": 7}], [])
>>> drifts, versions = history_rows([decode_batch(batch), decode_batch(again)])
>>> [(d["partition"], d["checkpoint_version"], d["record"]["n_seen"]) for d in drifts]
[(0, 3, 7)]
>>> encode_batch(0, 4, "c3", 3000, [], []) is None
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from driftstream.state.envelope import dumps

__all__ = ["decode_batch", "encode_batch", "history_rows"]

_MODEL_EVENT_KEYS = ("generation", "updates", "reason", "event_ts")


def encode_batch(
    partition: int,
    version: int,
    checkpoint_id: str,
    created_at: int,
    drift_records: Iterable[dict[str, Any]],
    model_events: Iterable[dict[str, Any]],
) -> bytes | None:
    """One checkpoint's history as JSON bytes; None when there is nothing to record."""
    drift_records, model_events = list(drift_records), list(model_events)
    for event in model_events:
        missing = [k for k in ("generation", "updates", "reason") if k not in event]
        if missing:
            raise ValueError(f"model event {event!r} lacks {missing}")
    if not drift_records and not model_events:
        return None
    return dumps(
        {
            "partition": partition,
            "checkpoint_version": version,
            "checkpoint_id": checkpoint_id,
            "created_at": created_at,
            "drift_records": drift_records,
            "model_events": model_events,
        }
    )


def decode_batch(data: bytes) -> dict[str, Any]:
    """The batch `encode_batch` made (ValueError if it is not one)."""
    batch = orjson.loads(data)
    if not isinstance(batch, dict) or not {"partition", "drift_records"} <= batch.keys():
        raise ValueError("not a history batch")
    return batch


def history_rows(
    batches: Iterable[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(drift log rows, model-version rows) of these batches, repeated records dropped,
    in saving order (creation time, then partition)."""
    ordered = sorted(batches, key=lambda b: (b["created_at"], b["partition"]))
    seen: set[tuple[int, str, bytes]] = set()
    drifts: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    for batch in ordered:
        p = batch["partition"]
        common = {
            "partition": p,
            "checkpoint_version": batch["checkpoint_version"],
            "created_at": batch["created_at"],
        }
        for record in batch["drift_records"]:
            if _first(seen, p, "drift", record):
                drifts.append({"id": len(drifts) + 1, **common, "record": record})
        for event in batch.get("model_events", ()):
            if _first(seen, p, "model", event):
                versions.append(
                    {
                        "id": len(versions) + 1,
                        "partition": p,
                        "generation": event["generation"],
                        "updates": event["updates"],
                        "reason": event["reason"],
                        "event_ts": event.get("event_ts"),
                        "checkpoint_version": batch["checkpoint_version"],
                        "created_at": batch["created_at"],
                        "info": {k: v for k, v in event.items() if k not in _MODEL_EVENT_KEYS},
                    }
                )
    return drifts, versions


def _first(seen: set, partition: int, kind: str, record: dict[str, Any]) -> bool:
    key = (partition, kind, dumps(record))
    if key in seen:
        return False
    seen.add(key)
    return True
