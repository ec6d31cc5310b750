"""The one narrow interface through which driftstream touches Kafka (kafka-python).

Everything else imports Record, KafkaSettings, Consumer, Producer and Admin from here and
never kafka-python itself, so a faster client can later be added behind the same interface
without touching the worker. Settings are tuned to work with both Apache Kafka and Tansu
(see DESIGN.md, "Broker").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.admin import NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RebalanceInProgressError,
)
from kafka.producer.future import FutureRecordMetadata
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import OffsetAndMetadata

__all__ = [
    "KafkaError",  # re-exported: base of the errors that send futures and polls can raise
    "ROLES",
    "Admin",
    "Consumer",
    "DeliveryFailed",
    "KafkaClientError",
    "KafkaSettings",
    "KafkaUnavailable",
    "Producer",
    "Record",
    "TopicError",
    "topic_names",
]

ROLES = ("events", "labels", "predictions", "drift", "metrics", "deadletter")

Partition = tuple[str, int]
PartitionsCallback = Callable[[list[Partition]], None]

# What kafka-python 3 raises at construction when it cannot bootstrap.
_UNREACHABLE = (KafkaTimeoutError, KafkaConnectionError, NodeNotReadyError)
_ERROR_TOPIC_ALREADY_EXISTS = 36
_ERROR_UNKNOWN_TOPIC = 3


class KafkaClientError(Exception):
    """Base class of the errors raised by this module."""


class KafkaUnavailable(KafkaClientError):
    """The broker could not be reached when a client was created."""

    def __init__(self, bootstrap_servers: str, reason: str):
        self.bootstrap_servers = bootstrap_servers
        super().__init__(f"Kafka unavailable at {bootstrap_servers}: {reason}")


class DeliveryFailed(KafkaClientError, KafkaError):
    """Records that Kafka did not take for good (retries over, or refused, e.g. too large).

    Raised by `Producer.flush` (a KafkaError too, so code that handles an unreachable Kafka
    handles it): kafka-python's own flush returns normally when records failed.
    """

    def __init__(self, failed: int, first: BaseException):
        why = first if isinstance(first, KafkaError) else f"{type(first).__name__}: {first}"
        super().__init__(f"{failed} record(s) not delivered; the first: {why}")
        self.failed = failed
        self.first = first


class TopicError(KafkaClientError):
    """A topic could not be created, or exists with the wrong layout."""


@dataclass(slots=True)
class Record:
    """One consumed record, independent of the client library."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (CreateTime unless the topic says otherwise)
    key: bytes | None
    value: bytes | None


def _env_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")


@dataclass
class KafkaSettings:
    """Connection settings shared by every client; SASL/SSL pass through to kafka-python.

    ``fast_group_timeouts`` is for Tansu only: consumer-group joins there take about
    session_timeout/2, so 2000 ms gives ~1 s joins; Apache Kafka rejects session timeouts
    under 6000 ms by default, so the default is 10000 ms.
    """

    bootstrap_servers: str = field(default_factory=_env_bootstrap)
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    fast_group_timeouts: bool = False
    connect_timeout_ms: int = 10000  # how long a client tries to bootstrap before giving up

    def client_kwargs(self) -> dict[str, object]:
        """kafka-python connection kwargs common to consumer, producer and admin client."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "bootstrap_timeout_ms": self.connect_timeout_ms,
        }
        for name in (
            "security_protocol",
            "sasl_mechanism",
            "sasl_plain_username",
            "sasl_plain_password",
            "ssl_cafile",
            "ssl_certfile",
            "ssl_keyfile",
        ):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    def group_kwargs(self) -> dict[str, int]:
        """Consumer-group timeouts (see the class docstring)."""
        if self.fast_group_timeouts:
            return {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
        return {"session_timeout_ms": 10000, "heartbeat_interval_ms": 3000}

    def __repr__(self) -> str:
        """Like the dataclass repr, with the password masked so it never reaches a log."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sasl_plain_password" and value is not None:
                parts.append(f"{f.name}='***'")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"KafkaSettings({', '.join(parts)})"

    __str__ = __repr__


def topic_names(prefix: str = "") -> dict[str, str]:
    """Topic name for each role, e.g. prefix "demo." gives {"events": "demo.events", ...}."""
    return {role: f"{prefix}{role}" for role in ROLES}


def _drain_responses_that_land_late(fetcher) -> None:
    """Fix a lost wake-up in kafka-python 3.0.12's poll.

    Its fetcher drains the buffer, then sends fetches and waits on those in flight. A response
    that lands between the two is buffered, but its (done) future is dropped, so nothing is in
    flight: the fetcher reports "idle" and poll sleeps min(timeout, retry_backoff_ms=100 ms)
    with records in hand, a few times a second under load. Reporting not-idle when responses
    are buffered makes poll go round again and return them.
    """
    fetch_records = fetcher.fetch_records

    def fetch_records_no_lost_wakeup(max_records=None, update_offsets=True, timeout_ms=None):
        records, idle = fetch_records(max_records, update_offsets, timeout_ms)
        return records, idle and not fetcher._completed_fetches

    fetcher.fetch_records = fetch_records_no_lost_wakeup


def _drain_partitions_in_turn(fetcher, subscriptions) -> None:
    """Make kafka-python 3.0.12 return the partitions it has fetched in turn, a poll each.

    Its fetcher returns one partition's fetched records until they are used up, and a fetch
    answer can hold megabytes of one partition (Tansu fills it with the first partition up to
    the request's limit): in a backlog, polls came in runs of 40,000 events, then 85,000
    labels. The worker's event-time merge then holds one input while the other catches up,
    and its model process has nothing to do in one run and everything in the next. Here,
    before each drain, the partition that was returned last is set aside (where kafka-python
    parks a paused partition's records, so that it is not fetched again meanwhile) when
    another one has records waiting.

    It also fixes how kafka-python gives parked records back: only when its in-line slot is
    None, but it leaves an exhausted (empty, not None) batch there, so a resumed partition
    stalled for good. Emptying the slot when it is exhausted lets the parked records come back.
    """
    fetched_records = fetcher.fetched_records
    last = [None]  # the partition the previous drain returned records of

    def waiting_other(current) -> object | None:
        """Another partition's records, parsed, taken from where they wait; or None."""
        for tp in list(fetcher._paused_partition_records):
            if tp != current and not subscriptions.is_paused(tp):
                return fetcher._paused_partition_records.pop(tp)  # if used up: dropped
        for completion in list(fetcher._completed_fetches):
            tp = completion.topic_partition
            if tp != current and not subscriptions.is_paused(tp):
                fetcher._completed_fetches.remove(completion)
                return fetcher._parse_fetched_data(completion)  # None: discarded, or an error
        return None

    def fetched_records_in_turn(max_records=None, update_offsets=True):
        current = fetcher._next_partition_records
        if current and current.topic_partition == last[0]:
            other = waiting_other(current.topic_partition)
            if other:
                fetcher._paused_partition_records[current.topic_partition] = current
                fetcher._next_partition_records = other
        elif not current and fetcher._paused_partition_records:
            fetcher._next_partition_records = None
        records, partial = fetched_records(max_records, update_offsets)
        if records:
            last[0] = next(reversed(records))
        return records, partial

    fetcher.fetched_records = fetched_records_in_turn


def _tps(partitions: Iterable[Partition]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in partitions]


def _tuples(tps: Iterable[TopicPartition]) -> list[Partition]:
    return sorted((tp.topic, tp.partition) for tp in tps)


def _unavailable(settings: KafkaSettings, exc: Exception) -> KafkaUnavailable:
    # The kafka-python message names only the address; the settings (with secrets) stay out.
    return KafkaUnavailable(settings.bootstrap_servers, str(exc) or type(exc).__name__)


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

    The range assignor keeps co-partitioning: with topics of equal partition counts, each
    member gets the same partition numbers of every subscribed topic. Rebalance callbacks
    run inside poll().
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str | None = None,
        client_id: str | None = None,
        max_poll_records: int = 2000,
        fetch_max_wait_ms: int = 100,
    ):
        # fetch_max_wait_ms: Tansu does not answer a waiting fetch when data arrives, so
        # delivery latency grows with this wait (~0-200 ms at Kafka's default 500 ms).
        kwargs: dict[str, object] = settings.client_kwargs()
        kwargs.update(settings.group_kwargs())
        kwargs.update(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=[RangePartitionAssignor],
            max_poll_records=max_poll_records,
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            allow_auto_create_topics=False,
        )
        if client_id is not None:
            kwargs["client_id"] = client_id
        try:
            self._consumer = KafkaConsumer(**kwargs)
        except _UNREACHABLE as exc:
            raise _unavailable(settings, exc) from None
        _drain_responses_that_land_late(self._consumer._fetcher)
        _drain_partitions_in_turn(self._consumer._fetcher, self._consumer._subscription)

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

        The items are kafka-python's own records, which have exactly `Record`'s attributes:
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
        fetcher = self._consumer._fetcher  # kafka-python 3.0.12 internals, read only
        subscriptions = self._consumer._subscription
        return (
            bool(fetcher._completed_fetches)
            or bool(fetcher._next_partition_records)
            or any(not subscriptions.is_paused(tp) for tp in fetcher._paused_partition_records)
        )

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
        """Fetch these paused partitions again (see `poll` for a kafka-python bug it needs)."""
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
        return not self._consumer._coordinator.coordinator_unknown()

    def close(self) -> None:
        """Leave the group (no auto-commit) and close connections."""
        self._consumer.close(autocommit=False)


class Producer:
    """Raw-bytes producer: acks=all, batched, idempotence off; `flush` raises `DeliveryFailed`
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
        except _UNREACHABLE as exc:
            raise _unavailable(settings, exc) from None

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata:
        """Queue one record; the future's get() gives metadata (partition, offset, timestamp).

        Without an explicit partition the key's hash picks it (murmur2, as the Java client).
        """
        future = self._producer.send(
            topic, value=value, key=key, partition=partition, timestamp_ms=timestamp_ms
        )
        return future.add_errback(self._count_failure)

    def send_batch(
        self, topic: str, partition: int, records: list[tuple[bytes | None, bytes]]
    ) -> None:
        """Queue (key, value) records for one partition, in order, as `send` would.

        kafka-python's send() costs ~11 µs of CPU a record (checks, a lock and a future for
        each); here records go straight into its accumulator's open batch under one lock, at
        ~2 µs each, with no future. A batch that fails counts its records as failed, so
        `flush` raises as it does for send(). A value too big to share a batch goes by send().
        """
        kafka = self._producer
        if kafka._metadata.partitions_for_topic(topic) is None:
            kafka._wait_on_metadata(topic, kafka.config["max_block_ms"])
        tp = TopicPartition(topic, kafka._partition(topic, partition, None, None, None, None))
        start = 0
        while start < len(records):
            start = self._append_run(tp, records, start)
            if start < len(records):
                key, value = records[start]
                self.send(topic, value, key, partition)
                start += 1

    def _append_run(self, tp: TopicPartition, records: list, start: int) -> int:
        """Append records[start:] to tp's batches up to the first value too big to share a
        batch; return its index (or len(records))."""
        accumulator = self._producer._accumulator  # kafka-python 3.0.12 internals
        config = accumulator.config
        too_big = config["batch_size"] // 2
        new_batch = False
        accumulator._appends_in_progress.increment()
        try:
            with accumulator._tp_lock(tp):
                if accumulator._closed:
                    raise IllegalStateError("the producer is closed")
                queue = accumulator._batches[tp]
                batch = queue[-1] if queue else None
                if batch is not None:
                    self._count_failures_of(batch)
                for i in range(start, len(records)):
                    key, value = records[i]
                    if len(value) > too_big:
                        break
                    if batch is None or batch.records.append(None, key, value) is None:
                        batch = ProducerBatch(
                            tp,
                            MemoryRecordsBuilder(
                                config["message_version"],
                                config["compression_attrs"],
                                config["batch_size"],
                            ),
                        )
                        self._count_failures_of(batch)
                        batch.records.append(None, key, value)
                        queue.append(batch)
                        accumulator._incomplete.add(batch)
                        new_batch = True
                else:
                    i = len(records)
                full = len(queue) > 1 or (batch is not None and batch.records.is_full())
        finally:
            accumulator._appends_in_progress.decrement()
        if new_batch or full:
            self._producer._sender.wakeup()
        return i

    def _count_failures_of(self, batch: ProducerBatch) -> None:
        """Count a failed batch's records that have no future of their own (`send_batch`)."""
        if getattr(batch, "_driftstream_counted", False):
            return
        batch._driftstream_counted = True

        def on_done(result: tuple) -> None:  # (base offset, timestamp, errors by record)
            errors, without_future = result[2], batch.record_count - len(batch._record_futures)
            if errors is not None and without_future:
                self._count_failure(errors(0), without_future)

        batch.produce_future.add_callback(on_done)

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


class Admin:
    """Topic management. Create topics explicitly: Tansu auto-creates missing topics with
    4 partitions on metadata requests from producers and consumers."""

    def __init__(self, settings: KafkaSettings):
        try:
            self._admin = KafkaAdminClient(**settings.client_kwargs())
        except _UNREACHABLE as exc:
            raise _unavailable(settings, exc) from None

    def list_topics(self, timeout: float = 10.0) -> set[str]:
        """Names of all topics.

        Retries for up to ``timeout`` seconds while the connection is being re-established
        (e.g. right after a broker restart, kafka-python raises NodeNotReadyError once).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return set(self._admin.list_topics())
            except _UNREACHABLE:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # back-off between reconnection attempts

    def partition_counts(self, names: list[str]) -> dict[str, int]:
        """Partition count of each existing topic among `names` (missing ones are left out)."""
        existing = self.list_topics()
        wanted = [name for name in names if name in existing]
        if not wanted:
            return {}
        return {t["name"]: len(t["partitions"]) for t in self._admin.describe_topics(wanted)}

    def create_topics(
        self, names: list[str], partitions: int, replication_factor: int = -1
    ) -> list[str]:
        """Make sure every topic exists with `partitions` partitions; returns those created.

        Existing topics are fine if their partition count matches; otherwise TopicError.
        replication_factor=-1 uses the broker's default.
        """
        existing = self.list_topics()
        missing = [name for name in names if name not in existing]
        created: list[str] = []
        if missing:
            response = self._admin.create_topics(
                [NewTopic(name, partitions, replication_factor) for name in missing],
                raise_errors=False,
            )
            for result in response["topics"]:
                code = result["error_code"]
                if code == 0:
                    created.append(result["name"])
                elif code != _ERROR_TOPIC_ALREADY_EXISTS:  # a concurrent creator won: fine
                    raise TopicError(
                        f"cannot create topic {result['name']!r}: error {code} "
                        f"{result.get('error_message') or ''}".strip()
                    )
        counts = self.partition_counts(list(names))
        for name in names:
            if name not in counts:
                raise TopicError(f"topic {name!r} does not exist after creating it")
            if counts[name] != partitions:
                raise TopicError(
                    f"topic {name!r} exists with {counts[name]} partitions, "
                    f"but {partitions} were requested"
                )
        return created

    def delete_topics(self, names: list[str]) -> None:
        """Delete topics; ones that do not exist are ignored."""
        if not names:
            return
        response = self._admin.delete_topics(list(names), raise_errors=False)
        for result in response["topics"]:
            code = result["error_code"]
            if code not in (0, _ERROR_UNKNOWN_TOPIC):
                raise TopicError(
                    f"cannot delete topic {result['name']!r}: error {code} "
                    f"{result.get('error_message') or ''}".strip()
                )

    def close(self) -> None:
        self._admin.close()
