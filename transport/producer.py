"""`Producer`: raw-bytes Kafka producer whose `flush` reports records that were lost.

``Producer(settings, ...)`` makes the implementation of the client ``settings.client`` names:
`KafkaPythonProducer` here, or `driftstream.transport._confluent.ConfluentProducer`.
"""

from __future__ import annotations

from kafka import KafkaProducer, TopicPartition
from kafka.producer.future import FutureRecordMetadata

from driftstream.transport import _kafka_python
from driftstream.transport._kafka_python import Headers
from driftstream.transport.consumer import implementation
from driftstream.transport.errors import UNREACHABLE, DeliveryFailed, KafkaUnavailable
from driftstream.transport.settings import KafkaSettings

__all__ = ["KafkaPythonProducer", "Producer"]


class Producer:
    """Raw-bytes producer: acks=all, batched; `flush` raises `DeliveryFailed` if a record sent
    since the last flush failed.

    ``Producer(settings, client_id=None, linger_ms=5, batch_size=256 KiB,
    delivery_timeout_ms=120000, max_request_size=1 MiB)`` gives the implementation of
    ``settings.client``; `KafkaPythonProducer` documents the methods.
    """

    def __new__(cls, settings: KafkaSettings, *args, **kwargs):
        if cls is Producer:
            cls = implementation(settings.client, "Producer")
        return super().__new__(cls)


class KafkaPythonProducer(Producer):
    """kafka-python's producer: acks=all, batched, idempotence off; `flush` raises `DeliveryFailed`
    if a record sent since the last flush failed.

    Idempotence is off because on Tansu the idempotent producer fails for good after a
    broker restart (UnknownProducerIdError); one request in flight keeps per-partition
    order under retries without it.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        client_id: str | None = None,
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        delivery_timeout_ms: int = 120_000,
        max_request_size: int = 1 << 20,
    ):
        kwargs: dict[str, object] = settings.client_kwargs()
        kwargs.update(
            acks="all",
            enable_idempotence=False,
            max_in_flight_requests_per_connection=1,
            linger_ms=linger_ms,
            batch_size=batch_size,
            delivery_timeout_ms=delivery_timeout_ms,  # a record fails after this, retries included
            request_timeout_ms=min(30_000, delivery_timeout_ms - linger_ms),
            max_request_size=max_request_size,  # also the largest record send() accepts
            allow_auto_create_topics=False,
        )
        if client_id is not None:
            kwargs["client_id"] = client_id
        self._failed = 0
        self._first_failure: BaseException | None = None
        try:
            self._producer = KafkaProducer(**kwargs)
        except UNREACHABLE as exc:
            raise KafkaUnavailable.because(settings.bootstrap_servers, exc) from None

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> FutureRecordMetadata:
        """Queue one record; the future's get() gives metadata (partition, offset, timestamp).

        Without an explicit partition the key's hash picks it (murmur2, as the Java client).
        ``headers`` are Kafka record headers, (name, value) pairs in order; a name may repeat.
        """
        future = self._producer.send(
            topic,
            value=value,
            key=key,
            headers=headers,
            partition=partition,
            timestamp_ms=timestamp_ms,
        )
        return future.add_errback(self._count_failure)

    def send_batch(
        self,
        topic: str,
        partition: int,
        records: list[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Headers]],
    ) -> None:
        """Queue (key, value) or (key, value, headers) records for one partition, in order, as
        `send` would.

        Much cheaper in CPU per record than `send`: the records go straight into
        kafka-python's open batch under one lock, with no future each
        (`_kafka_python.append_run`). A batch that fails counts its records as failed, so
        `flush` raises as it does for send(). A value too big to share a batch goes by send().
        """
        known = self._producer.partitions_for(topic)  # waits for the topic's metadata
        if partition not in known:
            raise ValueError(
                f"no partition {partition} in topic {topic!r} (partitions: {sorted(known)})"
            )
        tp = TopicPartition(topic, partition)
        start = 0
        while start < len(records):
            start = _kafka_python.append_run(
                self._producer, tp, records, start, self._count_failure
            )
            if start < len(records):
                key, value, *headers = records[start]
                self.send(topic, value, key, partition, headers=headers[0] if headers else None)
                start += 1

    def _count_failure(self, exc: BaseException, records: int = 1) -> None:
        # kafka-python's sender thread
        if self._first_failure is None:
            self._first_failure = exc
        self._failed += records

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued record is acknowledged or failed (KafkaTimeoutError after
        timeout seconds); DeliveryFailed if any failed since the last flush."""
        self._producer.flush(timeout=timeout)
        if self._failed:
            failed, first = self._failed, self._first_failure
            self._failed, self._first_failure = 0, None
            raise DeliveryFailed(failed, first)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close."""
        self._producer.close(timeout=timeout)
