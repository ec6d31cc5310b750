"""`driftstream republish`: copy a range of one topic to another (backfill), record for record.

Keys, timestamps (CreateTime) and partition numbers are kept, so a new worker group can rerun
history and see the same event-time order. The time range is found by reading record
timestamps, not with offsets_for_times (which uses broker arrival time on Tansu).
"""

from __future__ import annotations

import time

from driftstream.consumers.reader import read_partitions
from driftstream.transport import Consumer, KafkaSettings, Producer

MAX_RECORD_BYTES = 64 << 20


def republish(
    source: KafkaSettings,
    topic: str,
    target: KafkaSettings,
    to_topic: str,
    from_offset: int = 0,
    to_offset: int | None = None,
    from_time: int | None = None,
    to_time: int | None = None,
    rate: float | None = None,
    partitions: list[int] | None = None,
) -> dict[int, int]:
    """Copy records; returns how many were copied per partition."""
    consumer = Consumer(source)
    try:
        available = consumer.partitions_for(topic)
    finally:
        consumer.close()
    if not available:
        raise ValueError(f"topic {topic!r} does not exist")
    chosen = partitions if partitions is not None else available
    missing = set(chosen) - set(available)
    if missing:
        raise ValueError(f"topic {topic!r} has no partition(s) {sorted(missing)}")
    target_consumer = Consumer(target)
    try:
        target_partitions = target_consumer.partitions_for(to_topic)
    finally:
        target_consumer.close()
    if not target_partitions or max(chosen) >= len(target_partitions):
        raise ValueError(
            f"target topic {to_topic!r} must exist with at least {max(chosen) + 1} "
            f"partitions (has {len(target_partitions)}): create it first, e.g. "
            "with `driftstream topics create`"
        )
    records = read_partitions(source, [(topic, p) for p in chosen], from_offset, to_offset)
    # Any record the source holds is copied; the target broker decides what it takes (a record
    # it refuses fails the copy at the end, with its reason).
    producer = Producer(
        target, client_id="driftstream-republish", max_request_size=MAX_RECORD_BYTES
    )
    copied = {p: 0 for p in chosen}
    started = time.monotonic()
    sent = 0
    try:
        for (_, p), recs in sorted(records.items()):
            for r in recs:
                if (from_time is not None and r.timestamp < from_time) or (
                    to_time is not None and r.timestamp >= to_time
                ):
                    continue
                producer.send(to_topic, r.value, r.key, p, r.timestamp, r.headers or None)
                copied[p] += 1
                sent += 1
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the copy, not synchronisation
        producer.flush()
    finally:
        producer.close()
    return copied
