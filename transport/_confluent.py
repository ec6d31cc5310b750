"""The adapter's `Consumer` and `Producer` on confluent-kafka (librdkafka): ``--kafka-client
confluent``.

librdkafka fetches, batches, compresses and talks to the brokers in its own C threads, outside
the GIL, so the Python thread pays little per record for I/O (docs/design.md, "Two Kafka
clients"). What the adapter promises is kept as with kafka-python:

- offsets are the caller's: no auto-commit, no offset store; `seek` is obeyed even when it
  races the committed-offset lookup of a fresh assignment (`ConfluentConsumer._guard`);
- the range assignor (co-partitioning), rebalance callbacks with sorted (topic, partition)
  lists, run inside poll; records fetched for a revoked partition are dropped;
- `connected()` from librdkafka's statistics (the group coordinator state), which is how the
  worker tells an outage from a quiet input;
- `flush` waits for every delivery report and raises `DeliveryFailed` if records failed, so a
  checkpoint never counts before its outputs are acknowledged (acks=all);
- murmur2 key hashing, as kafka-python and the Java client, so a key lands on the same
  partition whichever client sent it;
- SASL/SSL settings mapped to librdkafka's names (`client_config`).

Errors come out as kafka-python's `KafkaError` classes (`ConfluentError`, `KafkaTimeoutError`,
`MessageSizeTooLargeError`), which the worker already handles.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Iterable
from typing import NamedTuple

import confluent_kafka as ck
import orjson
from confluent_kafka import KafkaException, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from driftstream.transport._kafka_python import Headers, check_headers
from driftstream.transport.consumer import Consumer, Partition, PartitionsCallback, Record
from driftstream.transport.errors import DeliveryFailed, KafkaUnavailable
from driftstream.transport.producer import Producer
from driftstream.transport.settings import KafkaSettings

__all__ = [
    "ConfluentConsumer",
    "ConfluentError",
    "ConfluentProducer",
    "RecordMetadata",
    "client_config",
]

log = logging.getLogger("driftstream.kafka")

_STATS_INTERVAL_MS = 1000  # how often connected() learns the coordinator's state
_LOCAL_HOSTS = ("127.", "localhost")
# What a seek on an assigned partition that librdkafka does not fetch yet fails with: its
# fetch not started (_STATE), or an assignment made since not applied yet (_OUTDATED).
_NOT_FETCHING = {ck.KafkaError._STATE, ck.KafkaError._OUTDATED}
_PULL_POLLS = 64  # a fetch from librdkafka takes up to this many polls' records
# A commit the group refused because of a rebalance: not an error (see Consumer.commit).
_REBALANCING = {
    ck.KafkaError.REBALANCE_IN_PROGRESS,
    ck.KafkaError.ILLEGAL_GENERATION,
    ck.KafkaError.UNKNOWN_MEMBER_ID,
    ck.KafkaError._ASSIGNMENT_LOST,
    ck.KafkaError._NO_OFFSET,
}

_SECURITY = {
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


class ConfluentError(KafkaError):
    """A librdkafka error, as a kafka-python `KafkaError` (what the worker catches)."""

    def __init__(self, error: ck.KafkaError):
        self.error = error
        self.retriable = error.retriable()
        super().__init__(f"{error.name()}: {error.str()}")


def _error(error: ck.KafkaError) -> KafkaError:
    code = error.code()
    if code == ck.KafkaError.MSG_SIZE_TOO_LARGE:
        return MessageSizeTooLargeError(error.str())
    if code in (ck.KafkaError._TIMED_OUT, ck.KafkaError._MSG_TIMED_OUT):
        return KafkaTimeoutError(error.str())
    return ConfluentError(error)


def client_config(settings: KafkaSettings, client_id: str | None = None) -> dict[str, object]:
    """librdkafka settings common to consumer and producer: the servers, SASL/SSL under
    librdkafka's names, and IPv4 for a broker on this host (Tansu listens on 127.0.0.1 only;
    "localhost" resolves to ::1 first, which would fail every other connection attempt).

    >>> config = client_config(KafkaSettings("kafka:9093", security_protocol="SASL_SSL",
    ...     sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="u", sasl_plain_password="p",
    ...     ssl_cafile="/ca.pem"))
    >>> [config[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username",
    ...     "sasl.password", "ssl.ca.location")]
    ['sasl_ssl', 'SCRAM-SHA-256', 'u', 'p', '/ca.pem']
    >>> client_config(KafkaSettings("127.0.0.1:9092"))["broker.address.family"]
    'v4'
    """
    config: dict[str, object] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "socket.connection.setup.timeout.ms": settings.connect_timeout_ms,
        "logger": log,
        "log.connection.close": False,
    }
    hosts = [server.strip() for server in settings.bootstrap_servers.split(",")]
    if all(host.startswith(_LOCAL_HOSTS) for host in hosts):
        config["broker.address.family"] = "v4"
    if settings.security_protocol is not None:
        config["security.protocol"] = settings.security_protocol.lower()
    for name, key in _SECURITY.items():
        value = getattr(settings, name)
        if value is not None:
            config[key] = value
    if client_id is not None:
        config["client.id"] = client_id
    return config


def _check_reachable(client, settings: KafkaSettings) -> None:
    """librdkafka's constructors never wait for a broker; kafka-python's do, and the callers
    count on `KafkaUnavailable` at construction when none answers."""
    try:
        client.list_topics(timeout=settings.connect_timeout_ms / 1000)
    except KafkaException as exc:
        raise KafkaUnavailable(settings.bootstrap_servers, exc.args[0].str()) from None


def _tp(partition: Partition, offset: int | None = None) -> TopicPartition:
    if offset is None:
        return TopicPartition(partition[0], partition[1])
    return TopicPartition(partition[0], partition[1], offset)


def _tuples(tps: Iterable[TopicPartition]) -> list[Partition]:
    return sorted((tp.topic, tp.partition) for tp in tps)


def _record(m) -> Record:
    kind, ts = m.timestamp()
    return Record(
        m.topic(),
        m.partition(),
        m.offset(),
        ts if kind != ck.TIMESTAMP_NOT_AVAILABLE else -1,
        m.key(),
        m.value(),
        m.headers() or [],
    )


class ConfluentConsumer(Consumer):
    """The adapter's consumer on librdkafka (methods as `KafkaPythonConsumer`'s).

    Messages librdkafka hands over are kept per partition until a poll returns them, so that
    `buffered`, `pause` (a paused partition's records stay parked) and `position` mean what
    they mean with kafka-python; polls take the partitions in turn.
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
        group = settings.group_kwargs()
        config = client_config(settings, client_id)
        config.update(
            {
                # librdkafka wants a group even for assign(); such a one is never joined
                "group.id": group_id or f"driftstream-unjoined-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "session.timeout.ms": group["session_timeout_ms"],
                "heartbeat.interval.ms": group["heartbeat_interval_ms"],
                "fetch.wait.max.ms": fetch_max_wait_ms,
                "max.partition.fetch.bytes": max_partition_fetch_bytes,
                "fetch.max.bytes": fetch_max_bytes,
                "receive.message.max.bytes": max(fetch_max_bytes + 512, 100_000_000),
                "allow.auto.create.topics": False,
                "statistics.interval.ms": _STATS_INTERVAL_MS,
                "stats_cb": self._on_stats,
                "error_cb": self._on_error,
            }
        )
        self._group = group_id is not None
        self._max_poll_records = max_poll_records
        # records pulled from librdkafka at once: _PULL_POLLS polls', within its own limit
        self._pull = max(max_poll_records, min(max_poll_records * _PULL_POLLS, 1_000_000))
        self._timeout_s = settings.connect_timeout_ms / 1000
        self._connected = True
        self._pending: dict[Partition, collections.deque] = {}  # fetched, not yet returned
        self._paused: set[Partition] = set()
        self._positions: dict[Partition, int] = {}  # next offset a poll returns
        self._expect: dict[Partition, int] = {}  # sought, no record of it returned yet
        self._resought: set[Partition] = set()  # sought again by `_guard`
        self._manual: dict[Partition, int | None] | None = None  # by assign(): offsets sought
        self._manual_due = False  # assign() not passed on to librdkafka yet
        self._closing = False
        self._consumer = ck.Consumer(config)
        try:
            _check_reachable(self._consumer, settings)
        except KafkaUnavailable:
            self._consumer.close()
            raise

    # -- callbacks (librdkafka calls them inside poll) -------------------------------------

    def _on_stats(self, text: str) -> None:
        stats = orjson.loads(text)
        if self._group:
            self._connected = stats.get("cgrp", {}).get("state") == "up"
        else:
            self._connected = any(
                b.get("state") == "UP" and b.get("nodeid", -1) >= 0
                for b in stats.get("brokers", {}).values()
            )

    def _on_error(self, error: ck.KafkaError) -> None:
        if error.code() == ck.KafkaError._ALL_BROKERS_DOWN:
            self._connected = False
        log.debug("librdkafka consumer: %s", error)

    def _forget(self, partitions: list[Partition]) -> None:
        for tp in partitions:
            self._pending.pop(tp, None)
            self._positions.pop(tp, None)
            self._expect.pop(tp, None)
            self._resought.discard(tp)
            self._paused.discard(tp)

    # -- the interface -----------------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> None:
        def assigned(consumer, tps: list[TopicPartition]) -> None:
            if on_assign is not None:
                on_assign(_tuples(tps))

        def revoked(consumer, tps: list[TopicPartition]) -> None:
            partitions = _tuples(tps)
            self._forget(partitions)
            if on_revoke is not None and not self._closing:
                on_revoke(partitions)

        self._consumer.subscribe(
            list(topics), on_assign=assigned, on_revoke=revoked, on_lost=revoked
        )

    def assign(self, partitions: list[Partition]) -> None:
        """Read exactly these partitions, without group management (a seek that librdkafka
        refuses before it fetches a partition assigns them again, with the offsets)."""
        self._forget([tp for tp in self._pending if tp not in partitions])
        self._manual = {tp: self._positions.get(tp) for tp in partitions}
        self._apply_manual()

    def _apply_manual(self) -> None:
        self._manual_due = False
        self._consumer.assign(
            [_tp(tp) if offset is None else _tp(tp, offset) for tp, offset in self._manual.items()]
        )

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        records: list[Record] = []
        for batch in self.poll_by_partition(timeout_ms, max_records).values():
            records.extend(batch)
        return records

    def poll_by_partition(
        self, timeout_ms: int, max_records: int | None = None
    ) -> dict[Partition, list[Record]]:
        limit = max_records or self._max_poll_records
        if not self._ready():
            self._fetch(timeout_ms / 1000)
        elif sum(map(len, self._pending.values())) < self._pull:
            self._fetch(0)  # what came meanwhile: no waiting
        return self._take(limit)

    def _ready(self) -> bool:
        return any(q and tp not in self._paused for tp, q in self._pending.items())

    def _fetch(self, timeout_s: float) -> None:
        """Move what librdkafka has (waiting up to ``timeout_s`` for the first message) into
        the per-partition queues, up to ``self._pull`` records. consume() alone would wait
        the whole timeout unless that many came: poll() returns at the first, consume(0 s)
        takes the rest. librdkafka hands over a fetch one partition after the other, so
        polls can take the partitions in turn only from what was pulled here."""
        consumer = self._consumer
        if self._manual_due:
            self._apply_manual()
        try:
            first = consumer.poll(timeout_s)
            if first is None:
                return
            messages = consumer.consume(self._pull - 1, 0)
        except KafkaException as exc:
            raise _error(exc.args[0]) from None
        messages.insert(0, first)
        pending, expect = self._pending, self._expect
        resought: set[Partition] = set()  # sought again in this fetch: its records go
        for m in messages:
            error = m.error()
            if error is not None:
                self._message_error(error)
                continue
            tp = (m.topic(), m.partition())
            if expect and tp in expect:
                if tp in resought:
                    continue
                keep = self._guard(tp, m.offset())
                if keep is None:
                    resought.add(tp)
                if not keep:
                    continue
            queue = pending.get(tp)
            if queue is None:
                queue = pending[tp] = collections.deque()
            queue.append(m)

    def _guard(self, tp: Partition, offset: int) -> bool | None:
        """Whether a record of a partition sought to ``self._expect[tp]`` may be kept (None:
        no, and the seek was made again, so the rest of this fetch of it goes too).

        A seek right after an assignment can lose the race with librdkafka's lookup of the
        committed offset, which then starts the fetch there. Records below the seek are
        dropped; a record above it means the seek was lost, so it is made again, once: if
        the first record after that is above it too, no record sits at that offset (a
        transaction marker, a compacted record) and it is kept.
        """
        wanted = self._expect[tp]
        if offset < wanted:
            return False
        if offset > wanted and tp not in self._resought:
            log.debug("%s: fetch started at %d, not at %d: seeking again", tp, offset, wanted)
            self._pending.pop(tp, None)
            self._consumer.seek(_tp(tp, wanted))
            self._resought.add(tp)
            return None
        del self._expect[tp]
        self._resought.discard(tp)
        return True

    def _message_error(self, error: ck.KafkaError) -> None:
        if error.code() == ck.KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise _error(error)
        log.debug("librdkafka consumer: %s", error)  # retried by librdkafka itself

    def _take(self, limit: int) -> dict[Partition, list[Record]]:
        """Up to ``limit`` records, from the partitions in turn (a partition that still has
        records goes to the back)."""
        out: dict[Partition, list[Record]] = {}
        pending = self._pending
        for tp in list(pending):
            if limit <= 0:
                break
            if tp in self._paused:
                continue
            queue = pending.pop(tp)
            n = min(limit, len(queue))
            if n:
                taken = [_record(queue.popleft()) for _ in range(n)]
                out[tp] = taken
                self._positions[tp] = taken[-1].offset + 1
                limit -= n
            if queue:
                pending[tp] = queue
        return out

    def buffered(self) -> bool:
        if self._ready():
            return True
        self._fetch(0)
        return self._ready()

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """As kafka-python's: the next record of the partition a poll returns is at
        ``offset``. A partition librdkafka does not fetch yet (just assigned) refuses a seek
        (`_NOT_FETCHING`): assigned by `assign`, all are assigned again at the next poll, with
        the offsets sought; by the group, `_guard` seeks once its first records come."""
        tp = (topic, partition)
        if self._manual is not None and tp in self._manual:
            self._manual[tp] = offset  # for an assign() again
        if not self._manual_due:
            try:
                self._consumer.seek(_tp(tp, offset))
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() not in _NOT_FETCHING or tp not in self.assignment():
                    raise _error(error) from None
                if self._manual is not None:
                    self._manual_due = True
        self._pending.pop(tp, None)
        self._resought.discard(tp)
        self._positions[tp] = self._expect[tp] = offset

    def seek_to_beginning(self, partitions: list[Partition]) -> None:
        for topic, partition in partitions:
            low, _ = self._watermarks(topic, partition, cached=False)
            self.seek(topic, partition, low)

    def _watermarks(self, topic: str, partition: int, cached: bool) -> tuple[int, int]:
        try:
            return self._consumer.get_watermark_offsets(
                _tp((topic, partition)), timeout=self._timeout_s, cached=cached
            )
        except KafkaException as exc:
            raise _error(exc.args[0]) from None

    def position(self, topic: str, partition: int) -> int:
        tp = (topic, partition)
        queue = self._pending.get(tp)
        if queue:
            return queue[0].offset()
        if tp in self._positions:
            return self._positions[tp]
        (found,) = self._consumer.position([_tp(tp)])
        if found.offset >= 0:
            return found.offset
        committed = self.committed(topic, partition) if self._group else None
        if committed is not None:
            return committed
        return self._watermarks(topic, partition, cached=False)[0]  # auto.offset.reset

    def highwater(self, topic: str, partition: int) -> int | None:
        high = self._watermarks(topic, partition, cached=True)[1]
        return high if high >= 0 else None

    def partitions_for(self, topic: str) -> list[int]:
        try:
            metadata = self._consumer.list_topics(topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise _error(exc.args[0]) from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def pause(self, partitions: list[Partition]) -> None:
        if partitions:
            if self._manual_due:
                self._apply_manual()
            self._consumer.pause([_tp(tp) for tp in partitions])
            self._paused.update(partitions)

    def resume(self, partitions: list[Partition]) -> None:
        if partitions:
            if self._manual_due:
                self._apply_manual()
            self._consumer.resume([_tp(tp) for tp in partitions])
            self._paused.difference_update(partitions)

    def commit(self, offsets: dict[Partition, int]) -> bool:
        if not offsets:
            return True
        try:
            self._consumer.commit(
                offsets=[_tp(tp, offset) for tp, offset in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            if exc.args[0].code() in _REBALANCING:
                return False
            raise _error(exc.args[0]) from None
        return True

    def committed(self, topic: str, partition: int) -> int | None:
        try:
            (found,) = self._consumer.committed([_tp((topic, partition))], timeout=self._timeout_s)
        except KafkaException as exc:
            raise _error(exc.args[0]) from None
        return found.offset if found.offset >= 0 else None

    def assignment(self) -> list[Partition]:
        if self._manual is not None:
            return sorted(self._manual)
        return _tuples(self._consumer.assignment())

    def connected(self) -> bool:
        return self._connected

    def close(self) -> None:
        """Leave the group (no commit) and close; the revocation that closing makes is not
        passed on (kafka-python's close makes none)."""
        self._closing = True
        try:
            self._consumer.unsubscribe()
        except (KafkaException, RuntimeError):
            pass
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("closing the librdkafka consumer: %s", exc)


class RecordMetadata(NamedTuple):
    """Where a record sent by `ConfluentProducer.send` landed."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class _Delivery:
    """`ConfluentProducer.send`'s future: ``get(timeout)`` gives `RecordMetadata` or raises
    the delivery error (`KafkaTimeoutError` if no report came in time)."""

    __slots__ = ("_producer", "_done", "_metadata", "_error")

    def __init__(self, producer: ConfluentProducer):
        self._producer = producer
        self._done = False
        self._metadata: RecordMetadata | None = None
        self._error: BaseException | None = None

    def _report(self, error: ck.KafkaError | None, m) -> None:
        if error is not None:
            self._error = _error(error)
            self._producer._count_failure(self._error)
        else:
            self._metadata = RecordMetadata(m.topic(), m.partition(), m.offset(), m.timestamp()[1])
        self._done = True

    def get(self, timeout: float | None = None) -> RecordMetadata:
        poll = self._producer._producer.poll
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            poll(max(left, 0))  # serves delivery reports
            if left <= 0 and not self._done:
                raise KafkaTimeoutError(f"no delivery report within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._metadata


class ConfluentProducer(Producer):
    """The adapter's producer on librdkafka (methods as `KafkaPythonProducer`'s): acks=all,
    idempotence off and one request in flight (kept in order under retries), murmur2
    partitioner. Delivery reports are served by `flush`, and by each `send_batch`."""

    def __init__(
        self,
        settings: KafkaSettings,
        client_id: str | None = None,
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        delivery_timeout_ms: int = 120_000,
        max_request_size: int = 1 << 20,
    ):
        config = client_config(settings, client_id)
        config.update(
            {
                "acks": "all",
                "enable.idempotence": False,
                "max.in.flight.requests.per.connection": 1,
                "linger.ms": linger_ms,
                "batch.size": batch_size,
                "message.timeout.ms": delivery_timeout_ms,
                "request.timeout.ms": min(30_000, delivery_timeout_ms - linger_ms),
                "message.max.bytes": max_request_size,
                "partitioner": "murmur2_random",  # kafka-python's and Java's key hash
                "queue.buffering.max.messages": 1_000_000,
                "error_cb": self._on_error,
            }
        )
        self._failed = 0
        self._first_failure: BaseException | None = None
        self._partitions: dict[str, set[int]] = {}
        self._timeout_s = settings.connect_timeout_ms / 1000
        self._producer = ck.Producer(config)
        _check_reachable(self._producer, settings)

    def _on_error(self, error: ck.KafkaError) -> None:
        log.debug("librdkafka producer: %s", error)

    def _count_failure(self, exc: BaseException, records: int = 1) -> None:
        if self._first_failure is None:
            self._first_failure = exc
        self._failed += records

    def _batch_report(self, error: ck.KafkaError | None, m) -> None:
        if error is not None:
            self._count_failure(_error(error))

    def _produce(self, topic, value, key, partition, timestamp_ms, headers, report) -> None:
        kwargs: dict[str, object] = {"on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # librdkafka's queue is full: let deliveries drain it
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise _error(exc.args[0]) from None

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> _Delivery:
        if headers is not None:
            check_headers(headers)
        future = _Delivery(self)
        self._produce(topic, value, key, partition, timestamp_ms, headers, future._report)
        return future

    def send_batch(
        self,
        topic: str,
        partition: int,
        records: list[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Headers]],
    ) -> None:
        known = self._partitions.get(topic)
        if known is None or partition not in known:
            known = self._partitions[topic] = self._partitions_of(topic, partition)
            if partition not in known:
                raise ValueError(
                    f"no partition {partition} in topic {topic!r} (partitions: {sorted(known)})"
                )
        produce, report = self._producer.produce, self._batch_report
        for record in records:
            if len(record) == 2:
                key, value = record
                try:
                    produce(topic, value, key, partition, on_delivery=report)
                    continue
                except (BufferError, KafkaException):
                    headers = None  # the slow path below waits or raises
            else:
                key, value, headers = record
                check_headers(headers)
            self._produce(topic, value, key, partition, None, headers, report)
        self._producer.poll(0)  # serve the delivery reports that came meanwhile

    def _partitions_of(self, topic: str, partition: int) -> set[int]:
        """The topic's partitions; if the brokers cannot say now, ``partition`` is taken on
        trust (a record sent to a partition that is not there fails at `flush`)."""
        try:
            metadata = self._producer.list_topics(topic, timeout=self._timeout_s)
        except KafkaException:
            return {partition}
        found = metadata.topics.get(topic)
        return set() if found is None or found.error is not None else set(found.partitions)

    def flush(self, timeout: float | None = None) -> None:
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            raise KafkaTimeoutError(f"{left} record(s) not acknowledged within {timeout} s")
        if self._failed:
            failed, first = self._failed, self._first_failure
            self._failed, self._first_failure = 0, None
            raise DeliveryFailed(failed, first)

    def close(self, timeout: float | None = None) -> None:
        """Flush (`KafkaTimeoutError` if records are still unsent after ``timeout``); the
        librdkafka handle goes with the object."""
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            raise KafkaTimeoutError(f"{left} record(s) not sent within {timeout} s")
