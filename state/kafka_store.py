"""The ``kafka:`` store: checkpoints in the ``<prefix>checkpoints`` topic of the same cluster.

Partition p of the input topics checkpoints to partition p of ``<prefix>checkpoints``
(created with the input partition count), so any host that reaches Kafka can restore it.
A checkpoint's state is cut into records of at most ``CHUNK_BYTES``, under Kafka's default
1 MB message limit, written with acks=all and confirmed (flush, then every send's result)
before `save_checkpoint` returns. A record's value is its piece of the state, nothing else;
what describes it is in Kafka record headers (`_chunk_headers`): the checkpoint's ``id`` and
``version``, the ``partition``, the ``chunk`` index and the ``chunks`` count, the ``size`` and
``sha256`` of the whole state and the ``hmac`` of the checkpoint's manifest
(`state.envelope`: offsets, model version, info, provenance and that same sha256), which the
first chunk carries in its ``manifest`` header. Its key is ``p/version/id/chunk``.

Restore reads the partition from its end backwards, in windows that double in size (with
confluent-kafka when it is installed, whichever client the settings name: its reads are
several times faster; `KafkaCheckpointStore.read_client`, connected when the store is
opened), hashing chunks as they arrive (`_RunningDigest`). Tansu has no usable
``offsets_for_times`` and never compacts, and its ``end_offsets()`` is wrong for topics with
data, so the end is the consumer's high-water mark after a fetch. A checkpoint is
decided on reaching its first chunk (chunks are written in order): all chunks there,
signature and sha256 correct, or it is skipped with a WARNING naming partition
and checkpoint, and the next older one is tried.

The drift log and model-version history go to ``<prefix>checkpoints-log`` (same partitions),
one signed batch per checkpoint written before it (`state.history`; headers ``partition``,
``id`` and ``hmac``), so reading them never means reading checkpoint states.

Topic configuration, set by `create_checkpoint_topics` on the topics it creates (topics that
exist already keep theirs: on Apache Kafka, ``kafka-configs.sh --alter`` them). Tansu keeps
and reports these settings but never compacts or expires anything.

- ``<prefix>checkpoints`` (`TOPIC_CONFIGS`): ``cleanup.policy=compact`` and nothing time- or
  size-based, because retention would delete an idle partition's only checkpoint. Every record
  has a unique key, so compaction by itself removes nothing; what goes is what `prune` marks
  with tombstones (null values under a checkpoint's keys), and it marks only checkpoints older
  than one this process saved and confirmed (and, once one is confirmed, older cut-short or
  refused ones). Keying records by partition (one value per key) does not work for chunked
  values: compaction would keep only the last chunk, and keyed by (partition, chunk index) a
  newer checkpoint cut short would replace parts of the older complete one.
  ``cleanup.policy=compact,delete`` was rejected for the reason above. ``segment.ms`` and
  ``segment.bytes`` are lowered because compaction only cleans closed segments;
  ``delete.retention.ms`` keeps tombstones a day, far longer than a restore reads;
  ``max.message.bytes`` is Kafka's default, which a chunk and its headers fit.
- ``<prefix>checkpoints-log`` (`HISTORY_TOPIC_CONFIGS`): kept for ever (no time or size
  retention): the drift log and the model versions are history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from driftstream.state.checkpoints import Checkpoint, StateError
from driftstream.state.envelope import (
    CheckpointRejected,
    Sealed,
    check_manifest,
    check_state,
    seal_checkpoint,
)
from driftstream.state.history import decode_batch, encode_batch, history_rows
from driftstream.state.signing import sign, verify
from driftstream.state.store import CheckpointStore, StoreUnavailable, prune_choice
from driftstream.stream.records import ModelVersion
from driftstream.transport import (
    Admin,
    Consumer,
    KafkaClientError,
    KafkaError,
    KafkaSettings,
    Producer,
    Record,
)

__all__ = [
    "CHUNK_BYTES",
    "HISTORY_TOPIC_CONFIGS",
    "TOPIC_CONFIGS",
    "KafkaCheckpointStore",
    "checkpoint_topics",
    "create_checkpoint_topics",
]

CHUNK_BYTES = 900 * 1000
TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": str(24 * 3600 * 1000),
    "segment.ms": str(3600 * 1000),
    "segment.bytes": str(128 * 1024 * 1024),
    "max.message.bytes": str(1024 * 1024 + 12),
}
HISTORY_TOPIC_CONFIGS = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
TIMEOUT_S = 60.0  # a write not confirmed, or a window not read, by then: unavailable
_FIRST_WINDOW = 8  # records read at the end first; doubled each step back
_LARGEST_WINDOW = 128

log = logging.getLogger(__name__)


def checkpoint_topics(prefix: str = "") -> dict[str, str]:
    """{"checkpoints": ..., "history": ...}: the topics of the kafka: store."""
    return {"checkpoints": f"{prefix}checkpoints", "history": f"{prefix}checkpoints-log"}


def create_checkpoint_topics(settings: KafkaSettings, prefix: str, partitions: int) -> list[str]:
    """Create both topics with the input partition count and their configuration
    (`TOPIC_CONFIGS`, `HISTORY_TOPIC_CONFIGS`); returns those created."""
    topics = checkpoint_topics(prefix)
    admin = Admin(settings)
    try:
        created = admin.create_topics([topics["checkpoints"]], partitions, configs=TOPIC_CONFIGS)
        created += admin.create_topics(
            [topics["history"]], partitions, configs=HISTORY_TOPIC_CONFIGS
        )
        return created
    finally:
        admin.close()


Headers = list[tuple[str, bytes]]


class _RecordHeaders(NamedTuple):
    """What a record's Kafka headers say that a reader uses; None where a header is missing
    or malformed (ints are decimal ASCII, digests hex; the manifest is JSON bytes). The
    checkpoint's id and version are read from the record's key, which tombstones have too."""

    partition: int | None
    index: int | None  # chunks only, as the rest below
    count: int | None
    sha256: str | None
    hmac: str | None
    manifest: bytes | None  # the first chunk's only

    @classmethod
    def of(cls, headers: Iterable[tuple[str, bytes | None]] | None) -> _RecordHeaders:
        named = dict(headers or ())
        return cls(
            _int(named.get("partition")),
            _int(named.get("chunk")),
            _int(named.get("chunks")),
            _text(named.get("sha256")),
            _text(named.get("hmac")),
            named.get("manifest"),
        )


def _text(value: bytes | None) -> str | None:
    try:
        return value.decode("ascii") if value is not None else None
    except UnicodeDecodeError:
        return None


def _int(value: bytes | None) -> int | None:
    text = _text(value)
    return int(text) if text is not None and text.isdigit() else None


def _chunk_headers(
    cid: str, version: int, partition: int, chunks: int, sealed: Sealed, index: int
) -> Headers:
    """The Kafka headers of chunk ``index`` of a checkpoint (see the module docstring)."""
    headers = [
        ("id", cid.encode()),
        ("version", b"%d" % version),
        ("partition", b"%d" % partition),
        ("chunk", b"%d" % index),
        ("chunks", b"%d" % chunks),
        ("size", b"%d" % len(sealed.state)),
        ("sha256", sealed.sha256.encode()),
        ("hmac", sealed.signature.encode()),
    ]
    if index == 0:
        headers.append(("manifest", sealed.manifest_bytes))
    return headers


def _chunk_key(partition: int, version: int, cid: str, index: int) -> bytes:
    return f"{partition}/{version}/{cid}/{index}".encode()


def _parse_key(key: bytes | None) -> tuple[int, str] | None:
    """(version, checkpoint id) from a chunk's key or tombstone."""
    try:
        _, version, cid, _ = key.decode().split("/")
        return int(version), cid
    except (AttributeError, UnicodeDecodeError, ValueError):
        return None


@dataclass
class _Found:
    """A checkpoint met reading backwards, decided at its first chunk."""

    cid: str
    version: int
    headers: _RecordHeaders  # the first chunk's, once met
    offset: int  # of its first chunk
    chunks: dict[int, bytes] = field(default_factory=dict)
    digest: _RunningDigest | None = None


class _RunningDigest:
    """The sha256 of a checkpoint's chunks, taken in index order while they arrive, so that
    verifying overlaps reading (librdkafka fetches the next chunks meanwhile).

    It keeps the chunks it hashed: the digest stands for a state only if that state was
    joined from these very objects (`covers`), never from another copy of a chunk.

    >>> a, b = b"a", b"b"
    >>> d = _RunningDigest()
    >>> d.add(1, b); d.add(0, a); d.add(1, b"a retry's copy")
    >>> d.hexdigest() == hashlib.sha256(b"ab").hexdigest()
    True
    >>> d.covers([a, b]), d.covers([a, bytes(bytearray(b))])
    (True, False)
    """

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._waiting: dict[int, bytes] = {}
        self.hashed: list[bytes] = []

    def add(self, index: int, chunk: bytes) -> None:
        if index < len(self.hashed) or index in self._waiting:
            return  # a retry's copy
        self._waiting[index] = chunk
        while len(self.hashed) in self._waiting:
            chunk = self._waiting.pop(len(self.hashed))
            self._sha256.update(chunk)
            self.hashed.append(chunk)

    def covers(self, chunks: list[bytes]) -> bool:
        return len(chunks) == len(self.hashed) and all(
            a is b for a, b in zip(chunks, self.hashed, strict=True)
        )

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


@dataclass
class _Known:
    """A checkpoint this process saved or met; `generation` None: incomplete or refused."""

    cid: str
    version: int
    generation: int | None
    chunks: int


class KafkaCheckpointStore(CheckpointStore):
    """Checkpoints, drift log and model versions in two topics (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaSettings,
        prefix: str,
        key: bytes,
        timeout_s: float = TIMEOUT_S,
        read_client: str | None = None,
    ):
        if not key:
            raise StateError("the kafka: state store needs a signing key")
        self._settings = settings
        self._key = key
        self._timeout_s = timeout_s
        self.topics = checkpoint_topics(prefix)
        self.name = f"kafka:{self.topics['checkpoints']}@{settings.bootstrap_servers}"
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._last_version: dict[int, int] = {}
        self._known: dict[int, list[_Known]] = {}  # oldest first
        self._confirmed: dict[int, str] = {}
        self._end_hint: dict[int, int] = {}
        # The client that reads checkpoints: confluent-kafka if installed, whatever the
        # settings say (bench/results/state-stores.md: it takes a checkpoint's chunks in at
        # several times kafka-python's speed); writes use the settings' client.
        self.read_client = read_client or _fastest_client(settings.client)
        self.partition_count = self._check_topics()
        # Connected now, not at the first restore: a worker opens its store once at start,
        # and a partition handed to it is restored without a client's start-up on top.
        self._get_consumer()

    # -- connections -------------------------------------------------------------------

    def _check_topics(self) -> int:
        try:
            admin = Admin(self._settings)
            try:
                counts = admin.partition_counts(list(self.topics.values()))
            finally:
                admin.close()
        except (KafkaClientError, KafkaError) as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from None
        for name in self.topics.values():
            if name not in counts:
                raise StateError(
                    f"topic {name!r} does not exist: create the kafka: store's topics with "
                    f"the input partition count (driftstream topics create)"
                )
        if counts[self.topics["checkpoints"]] != counts[self.topics["history"]]:
            raise StateError(f"{self.topics} have different partition counts: {counts}")
        return counts[self.topics["checkpoints"]]

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.partition_count:
            raise StateError(
                f"partition {partition} has no checkpoints partition: "
                f"{self.topics['checkpoints']} has {self.partition_count}"
            )

    def _get_producer(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = Producer(
                    self._settings, client_id="driftstream-state", linger_ms=0
                )
            except (KafkaClientError, KafkaError) as exc:
                raise StoreUnavailable(f"{self.name}: {exc}") from None
        return self._producer

    def _get_consumer(self) -> Consumer:
        if self._consumer is None:
            settings = dataclasses.replace(self._settings, client=self.read_client)
            try:
                self._consumer = Consumer(settings, client_id="driftstream-state")
            except (KafkaClientError, KafkaError) as exc:
                raise StoreUnavailable(f"{self.name}: {exc}") from None
        return self._consumer

    def _send_all(
        self,
        topic: str,
        partition: int,
        records: Iterable[tuple[bytes, bytes | None, Headers | None]],
    ) -> list[int]:
        """Send (key, value, headers) records and confirm: every record acknowledged by all
        in-sync replicas, or StoreUnavailable. Returns the offsets."""
        producer = self._get_producer()
        try:
            futures = [
                producer.send(topic, value, key=key, partition=partition, headers=headers)
                for key, value, headers in records
            ]
            producer.flush(timeout=self._timeout_s)
            return [future.get(timeout=0).offset for future in futures]
        except (KafkaClientError, KafkaError) as exc:
            raise StoreUnavailable(f"{self.name}: not confirmed: {exc}") from None

    # -- reading -----------------------------------------------------------------------

    def _read(
        self,
        topic: str,
        partition: int,
        start: int,
        end: int | None,
        on_record: Callable[[Record], None] | None = None,
    ) -> tuple[list, int]:
        """(records with start <= offset < end, the high-water mark); end None: to the end.
        ``on_record`` is called with each of them as it arrives."""
        consumer = self._get_consumer()
        out = []
        deadline = time.monotonic() + self._timeout_s
        try:
            consumer.assign([(topic, partition)])
            consumer.seek(topic, partition, start)
            high = None
            while True:
                for record in consumer.poll(200):
                    if record.offset >= start and (end is None or record.offset < end):
                        out.append(record)
                        if on_record is not None:
                            on_record(record)
                if high is None:
                    high = consumer.highwater(topic, partition)
                stop = high if end is None else end if high is None else min(end, high)
                if stop is not None and consumer.position(topic, partition) >= stop:
                    return out, high
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"{self.name}: could not read {topic}/{partition} "
                        f"[{start}, {stop}) in {self._timeout_s:.0f} s"
                    )
        except (KafkaClientError, KafkaError) as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from None

    def _highwater(self, partition: int) -> int:
        """The checkpoints partition's end, from a fetch (never end_offsets(); see above)."""
        topic = self.topics["checkpoints"]
        hint = self._end_hint.get(partition, 0)
        _, high = self._read(topic, partition, hint, hint + 1)
        if high is None or high < hint:  # the hint is past the end (topic recreated)
            _, high = self._read(topic, partition, 0, 1)
        return high

    def _backwards(self, partition: int) -> Iterator[_Found]:
        """Every checkpoint of a partition that was not tombstoned, newest first (by its first
        chunk), with the chunks found; incomplete ones have fewer than their count."""
        topic = self.topics["checkpoints"]
        end = self._highwater(partition)
        window = _FIRST_WINDOW
        gone: set[str] = set()
        decided: set[str] = set()
        open_: dict[str, _Found] = {}
        first_at: dict[str, int] = {}  # where an open checkpoint's first chunk should be
        digests: dict[str, _RunningDigest] = {}

        def hash_as_read(record: Record) -> None:
            parsed = _parse_key(record.key)
            index = _RecordHeaders.of(record.headers).index
            if parsed is None or index is None or record.value is None:
                return
            cid = parsed[1]
            if cid not in decided and cid not in gone:
                digests.setdefault(cid, _RunningDigest()).add(index, record.value)

        while end > 0:
            start = max(0, min([end - window, *first_at.values()]))
            records, _ = self._read(topic, partition, start, end, hash_as_read)
            for record in reversed(records):
                parsed = _parse_key(record.key)
                if parsed is None:
                    continue
                version, cid = parsed
                self._last_version[partition] = max(self._last_version.get(partition, 0), version)
                if record.value is None:
                    gone.add(cid)
                    digests.pop(cid, None)
                    continue
                if cid in gone or cid in decided:
                    continue
                headers = _RecordHeaders.of(record.headers)
                index = headers.index
                if index is None:
                    continue
                found = open_.setdefault(
                    cid, _Found(cid, version, headers, record.offset, digest=digests.get(cid))
                )
                found.chunks.setdefault(index, record.value)  # a retry's copy: the same bytes
                # Written in order, so chunk 0 is index records back, unless others came
                # between: then the windows go on doubling.
                first_at[cid] = min(first_at.get(cid, record.offset), record.offset - index)
                if index == 0:
                    found.headers, found.offset = headers, record.offset
                    decided.add(cid)
                    digests.pop(cid, None)
                    first_at.pop(cid, None)
                    yield open_.pop(cid)
            end = start
            window = min(window * 2, _LARGEST_WINDOW)
        for found in open_.values():  # their first chunk is gone: incomplete
            yield found

    def _verified(self, partition: int, found: _Found) -> Checkpoint:
        """The checkpoint, if complete and genuine; CheckpointRejected says why not."""
        where = f"partition {partition}: checkpoint {found.version} (id {found.cid})"
        headers = found.headers
        count = headers.count
        if count is None or sorted(found.chunks) != list(range(count)):
            raise CheckpointRejected(
                f"{where} is incomplete ({len(found.chunks)} of {count} chunks)"
            )
        if headers.partition != partition:
            raise CheckpointRejected(f"{where} names partition {headers.partition}")
        if headers.manifest is None:
            raise CheckpointRejected(f"{where}: its first chunk carries no manifest")
        manifest = check_manifest(headers.manifest, headers.hmac, self._key, where)
        named = (manifest.get("partition"), manifest.get("id"), manifest.get("version"))
        if named != (partition, found.cid, found.version):
            raise CheckpointRejected(f"{where}: its manifest names another checkpoint")
        chunks = [found.chunks[i] for i in range(count)]
        state = b"".join(chunks)
        if found.digest is not None and found.digest.covers(chunks):
            sha256 = found.digest.hexdigest()
        else:  # joined from another copy of a chunk than the one hashed: hash what is joined
            sha256 = hashlib.sha256(state).hexdigest()
        if sha256 != headers.sha256:
            raise CheckpointRejected(f"{where}: sha256 of the whole does not match")
        return check_state(manifest, state, where, sha256=sha256)

    def _note(self, partition: int, known: _Known, older: bool = True) -> None:
        entries = self._known.setdefault(partition, [])
        if any(k.cid == known.cid for k in entries):
            return
        if older:
            entries.insert(0, known)
        else:
            entries.append(known)

    def _newest(self, partition: int, version: int | None = None) -> Checkpoint | None:
        """The newest checkpoint that verifies (with this version, if given)."""
        self._check_partition(partition)
        met: list[_Known] = []
        result = None
        for found in self._backwards(partition):
            if version is not None and found.version != version:
                continue
            try:
                result = self._verified(partition, found)
            except CheckpointRejected as exc:
                log.warning("skipping a checkpoint: %s", exc)
                met.append(_Known(found.cid, found.version, None, found.headers.count or 0))
                continue
            met.append(_Known(found.cid, found.version, result.generation, len(found.chunks)))
            break
        if result is not None and version is None:
            # what a later prune may delete: the ones met, oldest first
            for known in met:
                self._note(partition, known)
            self._confirmed.setdefault(partition, result.id)
        return result

    def checkpoints(self, partition: int | None = None) -> list[dict[str, Any]]:
        rows = []
        for p in self._partitions(partition):
            newest_first = []
            for found in self._backwards(p):
                try:
                    newest_first.append(_metadata(self._verified(p, found)))
                except CheckpointRejected as exc:
                    log.warning("skipping a checkpoint: %s", exc)
            rows.extend(reversed(newest_first))
        return rows

    def partitions(self) -> list[int]:
        return [p for p in range(self.partition_count) if self._newest(p) is not None]

    def _partitions(self, partition: int | None) -> list[int]:
        if partition is None:
            return list(range(self.partition_count))
        self._check_partition(partition)
        return [partition]

    # -- history -----------------------------------------------------------------------

    def _batches(self, partition: int | None) -> Iterator[dict[str, Any]]:
        topic = self.topics["history"]
        for p in self._partitions(partition):
            records, _ = self._read(topic, p, 0, None)
            for record in records:
                if record.value is None:
                    continue
                headers = _RecordHeaders.of(record.headers)
                if headers.partition != p or not verify(self._key, record.value, headers.hmac):
                    log.warning(
                        "partition %d: skipping a history batch at %s/%d@%d: not genuine",
                        p,
                        topic,
                        p,
                        record.offset,
                    )
                    continue
                yield decode_batch(record.value)

    def drift_log(self, partition: int | None = None) -> list[dict[str, Any]]:
        return history_rows(self._batches(partition))[0]

    def model_versions(self, partition: int | None = None) -> list[dict[str, Any]]:
        return history_rows(self._batches(partition))[1]

    # -- writing -----------------------------------------------------------------------

    def _next_version(self, partition: int) -> int:
        if partition not in self._last_version:
            for _ in self._backwards(partition):
                break  # reading the newest window sets _last_version
        return self._last_version.get(partition, 0) + 1

    def save_checkpoint(
        self,
        partition: int,
        state: bytes,
        offsets: dict[str, int],
        model_version: ModelVersion | tuple[int, int],
        info: dict[str, Any] | None = None,
        drift_records: Iterable[dict[str, Any]] = (),
        model_events: Iterable[dict[str, Any]] = (),
        config: dict[str, Any] | None = None,
    ) -> int:
        self._check_partition(partition)
        version = self._next_version(partition)
        sealed = seal_checkpoint(
            partition, version, offsets, model_version, info, config, state, self._key
        )
        manifest_size = len(sealed.manifest_bytes)
        if manifest_size > CHUNK_BYTES // 2:
            raise ValueError(f"checkpoint info too large: a {manifest_size}-byte manifest")
        cid = sealed.manifest["id"]
        batch = encode_batch(
            partition, version, cid, sealed.manifest["created_at"], drift_records, model_events
        )
        if batch is not None:  # first: a checkpoint never exists without its history
            headers = [
                ("partition", b"%d" % partition),
                ("id", cid.encode()),
                ("hmac", sign(self._key, batch).encode()),
            ]
            key = f"{partition}/{version}/{cid}/history".encode()
            self._send_all(self.topics["history"], partition, [(key, batch, headers)])
        chunks = _split(sealed.state, CHUNK_BYTES, first=CHUNK_BYTES - manifest_size)
        records = (
            (
                _chunk_key(partition, version, cid, i),
                chunk,
                _chunk_headers(cid, version, partition, len(chunks), sealed, i),
            )
            for i, chunk in enumerate(chunks)
        )
        kill_after = _kill_after_chunks()
        if kill_after is not None and kill_after < len(chunks):
            self._send_all(self.topics["checkpoints"], partition, list(records)[:kill_after])
            os.kill(os.getpid(), signal.SIGKILL)
        offsets_written = self._send_all(self.topics["checkpoints"], partition, records)
        self._last_version[partition] = version
        self._end_hint[partition] = offsets_written[-1]
        self._note(partition, _Known(cid, version, model_version[0], len(chunks)), older=False)
        self._confirmed[partition] = cid
        return version

    def prune(self, partition: int, keep_last: int = 5, keep_per_generation: bool = True) -> int:
        known = self._known.get(partition, [])
        confirmed = self._confirmed.get(partition)
        ids = [k.cid for k in known]
        if confirmed not in ids:
            return 0
        genuine = [(k.cid, k.generation) for k in reversed(known) if k.generation is not None]
        doomed = set(prune_choice(genuine, confirmed, keep_last, keep_per_generation))
        doomed |= {k.cid for k in known[: ids.index(confirmed)] if k.generation is None}
        if not doomed:
            return 0
        tombstones = [
            (_chunk_key(partition, k.version, k.cid, i), None, None)
            for k in known
            if k.cid in doomed
            for i in range(k.chunks)
        ]
        self._send_all(self.topics["checkpoints"], partition, tombstones)
        self._known[partition] = [k for k in known if k.cid not in doomed]
        return sum(1 for k in known if k.cid in doomed and k.generation is not None)

    def close(self) -> None:
        producer, consumer = self._producer, self._consumer
        self._producer = self._consumer = None
        try:
            if producer is not None:  # records of a failed save are not waited for long
                producer.close(timeout=self._timeout_s)
            if consumer is not None:
                consumer.close()
        except (KafkaClientError, KafkaError) as exc:
            log.debug("closing %s: %s", self.name, exc)


def _fastest_client(configured: str) -> str:
    """ "confluent" if confluent-kafka is installed, else ``configured``."""
    return "confluent" if importlib.util.find_spec("confluent_kafka") else configured


def _kill_after_chunks() -> int | None:
    """Test hook, from ``DRIFTSTREAM_KILL_AT=checkpoint-chunk:K``: a writer that sends (and
    sees confirmed) only the first K chunks of a checkpoint, then dies by SIGKILL."""
    where, _, count = os.environ.get("DRIFTSTREAM_KILL_AT", "").partition(":")
    return int(count) if where == "checkpoint-chunk" and count.isdigit() else None


def _split(data: bytes, size: int, first: int) -> list[memoryview]:
    """``data`` in pieces (views, not copies): ``first`` bytes, then ``size`` each; at least
    one piece, empty for empty data.

    >>> [bytes(p) for p in _split(b"abcdefg", 3, first=2)]
    [b'ab', b'cde', b'fg']
    >>> [bytes(p) for p in _split(b"", 3, first=2)]
    [b'']
    """
    view = memoryview(data)
    pieces = [view[:first]]
    pieces += [view[start : start + size] for start in range(first, len(data), size)]
    return pieces


def _metadata(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "partition": checkpoint.partition,
        "version": checkpoint.version,
        "created_at": checkpoint.created_at,
        "size": len(checkpoint.state),
        "sha256": checkpoint.sha256,
        "offsets": checkpoint.offsets,
        "generation": checkpoint.generation,
        "updates": checkpoint.updates,
        "info": checkpoint.info,
        "provenance": checkpoint.provenance,
        "id": checkpoint.id,
    }
