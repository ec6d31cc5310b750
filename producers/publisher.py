"""Publishing events and labels: the API for upstream services, and bulk publishing of samples.

Events and labels are keyed by the entity key (the id by default) so that both land on the same
partition number of their co-partitioned topics, where one worker sees both.

    publisher = EventPublisher(KafkaSettings("127.0.0.1:9092"))
    publisher.publish_event("order-17", {"amount": 12.5, "country": "FR"}, ts=1732430000000)
    publisher.publish_label("order-17", True)
    publisher.close()
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Iterable
from typing import Any

from driftstream.producers.sources import Sample, event_record, label_record
from driftstream.stream.codec import InvalidRecord, decode_event, decode_label, encode
from driftstream.transport import KafkaSettings, Producer, topic_names


class EventPublisher:
    """Sends validated events and labels; invalid ones raise `InvalidRecord` before sending."""

    def __init__(
        self, settings: KafkaSettings, topic_prefix: str = "", producer: Producer | None = None
    ):
        self.topics = topic_names(topic_prefix)
        self.producer = producer or Producer(settings, client_id="driftstream-publisher")

    def publish_event(
        self,
        id: str,
        features: dict[str, Any],
        key: str | None = None,
        ts: int | str | None = None,
        partition: int | None = None,
    ):
        record = {"id": id, "features": features}
        if ts is not None:
            record["ts"] = ts
        return self._send("events", record, decode_event, key or id, partition, ts)

    def publish_label(
        self,
        id: str,
        label: Any,
        key: str | None = None,
        ts: int | str | None = None,
        partition: int | None = None,
    ):
        record = {"id": id, "label": label}
        if ts is not None:
            record["ts"] = ts
        return self._send("labels", record, decode_label, key or id, partition, ts)

    def _send(self, role, record, check, key, partition, ts):
        value = encode(record)
        timestamp = ts if isinstance(ts, int) else None  # None: the producer's clock, now
        # the worker's own validation, so bad records never leave here
        check(value, time.time_ns() // 1_000_000 if timestamp is None else timestamp)
        return self.producer.send(self.topics[role], value, key.encode(), partition, timestamp)

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


def publish_samples(
    publisher: EventPublisher,
    samples: Iterable[Sample],
    rate: float | None = None,
    partitions: int | None = None,
    progress: bool = False,
) -> dict[str, int]:
    """Publish events and labels interleaved in the order they happen (event time).

    The order is River's `simulate_qa` order: a label is sent once its reveal time is reached,
    before later events. With ``rate`` (events/s) sending is paced; with ``partitions`` the
    partition is chosen as ``position % partitions`` instead of by key hash.
    Returns counts of events and labels sent.
    """
    samples = list(samples)
    pending: list[tuple[int, int, Sample]] = []  # (label_ts, position, sample), a heap
    n_events = n_labels = 0
    start = time.monotonic()
    total = len(samples)

    def send_label(s: Sample, pos: int) -> None:
        nonlocal n_labels
        part = pos % partitions if partitions else None
        rec = label_record(s)
        publisher.publish_label(rec["id"], rec["label"], ts=rec["ts"], partition=part)
        n_labels += 1

    for pos, s in enumerate(samples):
        while pending and pending[0][0] <= s.ts:
            _, p, old = heapq.heappop(pending)
            send_label(old, p)
        rec = event_record(s)
        publisher.publish_event(
            rec["id"],
            rec["features"],
            ts=rec["ts"],
            partition=pos % partitions if partitions else None,
        )
        n_events += 1
        if s.label_ts is not None:
            heapq.heappush(pending, (s.label_ts, pos, s))
        if rate:
            ahead = n_events / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)  # pacing the offered load, not synchronisation
        if progress and (n_events % 5000 == 0 or n_events == total):
            _progress(n_events, total, start)
    while pending:
        _, p, old = heapq.heappop(pending)
        send_label(old, p)
    publisher.flush()
    if progress:
        print(file=sys.stderr)
    return {"events": n_events, "labels": n_labels}


def _progress(done: int, total: int, start: float) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / max(time.monotonic() - start, 1e-9)
    sys.stderr.write(
        f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} events ({rate:,.0f}/s)"
    )
    sys.stderr.flush()


__all__ = ["EventPublisher", "InvalidRecord", "publish_samples"]
