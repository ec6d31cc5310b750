"""Reading recorded history from topics, outside any consumer group (replay, explain, tools).

Reads stop at the high-water mark seen when reading started, so a live topic still gives a
finite, well-defined range. Tansu's end offsets are unreliable (docs/design.md), so the
high-water mark comes from a fetch.
"""

from __future__ import annotations

import time

from driftstream.transport import Consumer, KafkaSettings, Record


class ReadTimeout(Exception):
    """The broker did not deliver the requested range in time."""


def read_range(
    settings: KafkaSettings,
    topic: str,
    partition: int,
    start: int = 0,
    end: int | None = None,
    timeout: float = 60.0,
) -> list[Record]:
    """Records of one partition with ``start <= offset < end`` (end: the current end)."""
    return read_partitions(settings, [(topic, partition)], start, end, timeout)[(topic, partition)]


def read_partitions(
    settings: KafkaSettings,
    tps: list[tuple[str, int]],
    start: int = 0,
    end: int | None = None,
    timeout: float = 60.0,
) -> dict:
    """Like `read_range` for several partitions at once: {(topic, partition): [Record]}."""
    out: dict[tuple[str, int], list[Record]] = {tp: [] for tp in tps}
    if not tps:
        return out
    consumer = Consumer(settings, max_poll_records=20_000)
    try:
        consumer.assign(tps)
        for t, p in tps:
            consumer.seek(t, p, start)
        deadline = time.monotonic() + timeout
        ends: dict[tuple[str, int], int] = {}
        while True:
            for r in consumer.poll(200):
                if r.offset >= start and (end is None or r.offset < end):
                    out[(r.topic, r.partition)].append(r)
            for tp in tps:
                if tp not in ends and (high := consumer.highwater(*tp)) is not None:
                    ends[tp] = high if end is None else min(end, high)
            if len(ends) == len(tps) and all(consumer.position(*tp) >= ends[tp] for tp in tps):
                return out
            if time.monotonic() > deadline:
                raise ReadTimeout(
                    f"could not read {sorted(tps)} to offset(s) {ends} in {timeout:.0f} s"
                )
    finally:
        consumer.close()


def read_topic(settings: KafkaSettings, topic: str, timeout: float = 60.0) -> list[Record]:
    """Every record of every partition of a topic, partition by partition."""
    consumer = Consumer(settings)
    try:
        partitions = consumer.partitions_for(topic)
    finally:
        consumer.close()
    got = read_partitions(settings, [(topic, p) for p in partitions], timeout=timeout)
    return [r for p in partitions for r in got[(topic, p)]]
