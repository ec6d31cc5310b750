"""`Consumer`: raw-bytes Kafka consumer with caller-managed offsets, and `Record`.

``Consumer(settings, ...)`` makes the implementation of the client ``settings.client`` names:
`KafkaPythonConsumer` here, or `driftstream.transport._confluent.ConfluentConsumer`. Both
have the same methods, with the same meaning (tests/test_kafka_client.py runs the same tests
against each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import CommitFailedError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from driftstream.transport import _kafka_python
from driftstream.transport.errors import UNREACHABLE, ClientNotInstalled, KafkaUnavailable
from driftstream.transport.settings import KafkaSettings

__all__ = ["Consumer", "KafkaPythonConsumer", "Partition", "Record"]

Partition = tuple[str, int]
PartitionsCallback = Callable[[list[Partition]], None]


@dataclass(slots=True)
class Record:
    """One consumed record, independent of the client library."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (CreateTime unless the topic says otherwise)
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]  # Kafka record headers, in order; [] if none


def _tps(partitions: Iterable[Partition]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in partitions]


def _tuples(tps: Iterable[TopicPartition]) -> list[Partition]:
    return sorted((tp.topic, tp.partition) for tp in tps)


class _Listener(ConsumerRebalanceListener):
    """Adapts kafka-python's rebalance listener to plain (topic, partition) callbacks."""

    def __init__(self, on_assign: PartitionsCallback | None, on_revoke: PartitionsCallback | None):
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        if self._on_revoke is not None:
            self._on_revoke(_tuples(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self._on_assign is not None:
            self._on_assign(_tuples(assigned))


class Consumer:
    """Raw-bytes consumer; offsets are managed by the caller (no auto-commit).

    ``Consumer(settings, group_id=None, client_id=None, max_poll_records=2000,
    fetch_max_wait_ms=100, max_partition_fetch_bytes=4 MiB, fetch_max_bytes=50 MiB)`` gives
    the implementation of ``settings.client``; `KafkaPythonConsumer` documents the methods.
    """

    def __new__(cls, settings: KafkaSettings, *args, **kwargs):
        if cls is Consumer:
            cls = implementation(settings.client, "Consumer")
        return super().__new__(cls)


def implementation(client: str, what: str) -> type:
    """The class that implements ``what`` ("Consumer" or "Producer") for ``client``;
    `ClientNotInstalled` if its library is missing."""
    if client == "confluent":
        try:
            from driftstream.transport import _confluent
        except ModuleNotFoundError as exc:
            if exc.name is None or not exc.name.startswith("confluent_kafka"):
                raise
            raise ClientNotInstalled("confluent", "confluent-kafka", "confluent") from None
        return getattr(_confluent, f"Confluent{what}")
    if what == "Consumer":
        return KafkaPythonConsumer
    from driftstream.transport.producer import KafkaPythonProducer

    return KafkaPythonProducer


class KafkaPythonConsumer(Consumer):
    """kafka-python's consumer; offsets are managed by the caller (no auto-commit).

    The range assignor keeps co-partitioning: with topics of equal partition counts, each
    member gets the same partition numbers of every subscribed topic. Rebalance callbacks
    run inside poll(). Polls take the fetched partitions in turn, a poll each (see
    `_kafka_python`).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str | None = None,
        client_id: str | None = None,
        max_poll_records: int = 2000,
        fetch_max_wait_ms: int = 100,
        max_partition_fetch_bytes: int = 4 * 1024 * 1024,
        fetch_max_bytes: int = 50 * 1024 * 1024,
    ):
        # fetch_max_wait_ms: Tansu does not answer a waiting fetch when data arrives, so
        # delivery latency grows with this wait (~0-200 ms at Kafka's default 500 ms).
        # max_partition_fetch_bytes, fetch_max_bytes: what one fetch brings of a partition,
        # and in all (a record batch larger than either still comes whole).
        kwargs: dict[str, object] = settings.client_kwargs()
        kwargs.update(settings.group_kwargs())
        kwargs.update(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=[RangePartitionAssignor],
            max_poll_records=max_poll_records,
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            fetch_max_bytes=fetch_max_bytes,
            allow_auto_create_topics=False,
        )
        if client_id is not None:
            kwargs["client_id"] = client_id
        try:
            self._consumer = KafkaConsumer(**kwargs)
        except UNREACHABLE as exc:
            raise KafkaUnavailable.because(settings.bootstrap_servers, exc) from None
        _kafka_python.patch_consumer(self._consumer)

    def subscribe(
        self,
        topics: list[str],
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> None:
        """Join the consumer group for these topics; callbacks get sorted (topic, partition)s."""
        self._consumer.subscribe(topics=list(topics), listener=_Listener(on_assign, on_revoke))

    def assign(self, partitions: list[Partition]) -> None:
        """Read exactly these partitions, without group management."""
        self._consumer.assign(_tps(partitions))

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        """Fetch records; within one partition they come in offset order.

        The items are kafka-python's own records, which have `Record`'s attributes:
        wrapping each one would cost an allocation per record on the hot path.
        """
        records: list[Record] = []
        for batch in self.poll_by_partition(timeout_ms, max_records).values():
            records.extend(batch)
        return records

    def poll_by_partition(
        self, timeout_ms: int, max_records: int | None = None
    ) -> dict[Partition, list[Record]]:
        """`poll`, with the records grouped by (topic, partition)."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return {(tp.topic, tp.partition): records for tp, records in batches.items()}

    def buffered(self) -> bool:
        """Whether fetched records are waiting, so that the next poll returns at once."""
        return _kafka_python.buffered(self._consumer)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Make the next poll read this partition from `offset`."""
        self._consumer.seek(TopicPartition(topic, partition), offset)

    def seek_to_beginning(self, partitions: list[Partition]) -> None:
        """Rewind these partitions (an empty list does nothing, unlike kafka-python)."""
        if partitions:
            self._consumer.seek_to_beginning(*_tps(partitions))

    def position(self, topic: str, partition: int) -> int:
        """Offset of the next record that poll will return for this partition."""
        return int(self._consumer.position(TopicPartition(topic, partition)))

    def highwater(self, topic: str, partition: int) -> int | None:
        """Offset after the last record, as of the last fetch; None before any fetch.

        Use this, not end_offsets(), which is wrong on Tansu for topics with data.
        """
        return self._consumer.highwater(TopicPartition(topic, partition))

    def partitions_for(self, topic: str) -> list[int]:
        """Partition numbers of a topic (empty if it does not exist)."""
        partitions = self._consumer.partitions_for_topic(topic)
        return sorted(partitions) if partitions else []

    def pause(self, partitions: list[Partition]) -> None:
        """Stop fetching these partitions until resume()."""
        if partitions:
            self._consumer.pause(*_tps(partitions))

    def resume(self, partitions: list[Partition]) -> None:
        """Fetch these paused partitions again (their parked records come back: see
        `_kafka_python` for the kafka-python bug this needs fixed)."""
        if partitions:
            self._consumer.resume(*_tps(partitions))

    def commit(self, offsets: dict[Partition, int]) -> bool:
        """Commit next-offsets-to-read to the group, as a progress hint for lag tools.

        Returns False if the group rejected the commit because of a rebalance; the worker's
        own checkpoints are the source of truth, so that is not an error.
        """
        if not offsets:
            return True
        to_commit = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in offsets.items()
        }
        try:
            self._consumer.commit(to_commit)
        except (CommitFailedError, RebalanceInProgressError):
            return False
        return True

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset for a partition, or None."""
        return self._consumer.committed(TopicPartition(topic, partition))

    def assignment(self) -> list[Partition]:
        """Currently assigned partitions, sorted."""
        return _tuples(self._consumer.assignment())

    def connected(self) -> bool:
        """False while the group coordinator is unknown or unreachable (the broker is down).

        poll() does not raise when the broker goes away, it just returns nothing, so this is
        how a group member notices an outage; kafka-python keeps reconnecting by itself.
        """
        return _kafka_python.coordinator_known(self._consumer)

    def close(self) -> None:
        """Leave the group (no auto-commit) and close connections."""
        self._consumer.close(autocommit=False)
