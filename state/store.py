"""One interface to the checkpoint stores, chosen by ``--state`` / ``DRIFTSTREAM_STATE``.

- a path or ``sqlite:PATH``: one SQLite file (`StateStore`), for a single host;
- ``kafka:``: the ``<prefix>checkpoints`` topic of the cluster the worker reads;
- ``s3://BUCKET/PREFIX``: any S3-compatible object store, configured the standard AWS way.

Every store keeps a partition's checkpoints (the learner state with the input offsets it
reflects), its drift log and its model-version history, so that a partition's new owner, on
any host that reaches the store, resumes from the newest complete checkpoint. The shared
stores need a signing key (`state.signing`): a checkpoint whose signature does not verify is
never unpickled.

>>> parse_spec("state/driftstream.sqlite")
StoreSpec(kind='sqlite', location='state/driftstream.sqlite', prefix='')
>>> parse_spec("s3://my-bucket/team/driftstream")
StoreSpec(kind='s3', location='my-bucket', prefix='team/driftstream/')
>>> parse_spec("gs://bucket")
Traceback (most recent call last):
...
driftstream.state.store.StoreSpecError: unknown state store 'gs://bucket': use a path, \
sqlite:PATH, kafka: or s3://BUCKET/PREFIX
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from types import TracebackType
from typing import Any, NamedTuple

from driftstream.state.checkpoints import Checkpoint, StateError
from driftstream.state.envelope import warn_if_other_river
from driftstream.stream.records import ModelVersion

__all__ = [
    "CheckpointStore",
    "StoreSpec",
    "StoreSpecError",
    "StoreUnavailable",
    "open_store",
    "parse_spec",
    "prune_choice",
]


class StoreUnavailable(Exception):
    """The store cannot be reached or did not confirm a write: retry later.

    The one error a worker catches to report unhealthy and retry with back-off; the message
    names the store, never its credentials.
    """


class StoreSpecError(StateError, ValueError):
    """A ``--state`` value that names no store; the message says what is accepted."""


class StoreSpec(NamedTuple):
    """A parsed ``--state``: kind sqlite (location = path), kafka, or s3 (location = bucket)."""

    kind: str
    location: str
    prefix: str  # s3: the key prefix, "" or ending in "/"


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ACCEPTED = "use a path, sqlite:PATH, kafka: or s3://BUCKET/PREFIX"


def parse_spec(spec: str) -> StoreSpec:
    """What ``spec`` names; StoreSpecError (one line) if it names nothing usable."""
    if not isinstance(spec, str) or not spec.strip():
        raise StoreSpecError(f"empty state store: {_ACCEPTED}")
    spec = spec.strip()
    scheme = _SCHEME.match(spec)
    if scheme is None or len(scheme.group(1)) == 1:  # a plain path (or C:\ on Windows)
        return StoreSpec("sqlite", spec, "")
    name, rest = scheme.group(1).lower(), spec[scheme.end() :]
    if name == "sqlite":
        if not rest:
            raise StoreSpecError("sqlite: needs a path, e.g. sqlite:state/driftstream.sqlite")
        return StoreSpec("sqlite", rest, "")
    if name == "kafka":
        if rest:
            raise StoreSpecError(
                f"kafka: takes nothing after the colon, not {rest!r}: the topic is "
                "<topic prefix>checkpoints"
            )
        return StoreSpec("kafka", "", "")
    if name == "s3":
        if not rest.startswith("//"):
            raise StoreSpecError(f"state store {spec!r}: write s3://BUCKET/PREFIX")
        bucket, _, prefix = rest[2:].partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise StoreSpecError(f"state store {spec!r}: {bucket!r} is not a valid bucket name")
        prefix = prefix.strip("/")
        return StoreSpec("s3", bucket, prefix + "/" if prefix else "")
    raise StoreSpecError(f"unknown state store {spec!r}: {_ACCEPTED}")


class CheckpointStore(ABC):
    """Checkpoints, drift log and model versions of all partitions, in one backend.

    The methods are `StateStore`'s, with the same meaning, plus ``config`` (the learner
    configuration, recorded with the versions in every checkpoint's ``provenance``). A
    `Checkpoint` returned has been verified (length, sha256 and, with a key, signature);
    `latest` skips, with a WARNING naming partition and checkpoint, any that is incomplete or
    does not verify, and returns the newest that does. Backend failures raise
    `StoreUnavailable`.
    """

    #: Printable name of the store (no credentials), e.g. for logs.
    name: str

    @abstractmethod
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
        """Save a checkpoint with its history; return its version once the backend confirmed
        it (so the offsets it reflects may be committed)."""

    def latest(self, partition: int) -> Checkpoint | None:
        """The newest complete, verified checkpoint of a partition, or None."""
        checkpoint = self._newest(partition)
        if checkpoint is not None:
            warn_if_other_river(checkpoint)
        return checkpoint

    def get(self, partition: int, version: int) -> Checkpoint:
        """One checkpoint by version; StateError if it does not exist or does not verify."""
        checkpoint = self._newest(partition, version)
        if checkpoint is None:
            raise StateError(
                f"no complete, genuine checkpoint {version} of partition {partition} in {self.name}"
            )
        warn_if_other_river(checkpoint)
        return checkpoint

    @abstractmethod
    def _newest(self, partition: int, version: int | None = None) -> Checkpoint | None:
        """The newest complete, verified checkpoint (of that version, if given), or None;
        what does not verify is skipped with a WARNING."""

    @abstractmethod
    def checkpoints(self, partition: int | None = None) -> list[dict[str, Any]]:
        """Metadata of the complete, verified checkpoints (no state; ``size`` is its
        length), oldest first by partition and version."""

    @abstractmethod
    def drift_log(self, partition: int | None = None) -> list[dict[str, Any]]:
        """Drift records in saving order: id, partition, checkpoint_version, created_at,
        record."""

    @abstractmethod
    def model_versions(self, partition: int | None = None) -> list[dict[str, Any]]:
        """Model-version events in saving order (as `StateStore.model_versions`)."""

    @abstractmethod
    def partitions(self) -> list[int]:
        """Partitions that have at least one checkpoint."""

    @abstractmethod
    def prune(self, partition: int, keep_last: int = 5, keep_per_generation: bool = True) -> int:
        """Delete old checkpoints of a partition, never the newest confirmed one; return how
        many were deleted."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (idempotent)."""

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def open_store(
    spec: str,
    kafka_settings: Any = None,
    topic_prefix: str = "",
    key: bytes | None = None,
    s3_options: dict[str, Any] | None = None,
) -> CheckpointStore:
    """The store ``spec`` names (see `parse_spec`).

    ``kafka_settings`` (a KafkaSettings) is needed by ``kafka:``; ``key`` (`load_state_key`)
    by ``kafka:`` and ``s3://``; ``s3_options`` are extra boto3 client arguments (endpoint_url,
    region_name, ...), normally left out so that the standard AWS environment and files apply.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "sqlite":
        from driftstream.state.sqlite_store import SqliteCheckpointStore

        return SqliteCheckpointStore(parsed.location, key=key)
    if key is None:
        raise StoreSpecError(
            f"state store {spec!r} is shared, so its checkpoints must be signed: give a key "
            "with --state-key-file or DRIFTSTREAM_STATE_KEY"
        )
    if parsed.kind == "kafka":
        if kafka_settings is None:
            raise StoreSpecError("the kafka: state store needs the Kafka connection settings")
        from driftstream.state.kafka_store import KafkaCheckpointStore

        return KafkaCheckpointStore(kafka_settings, topic_prefix, key)
    from driftstream.state.s3_store import S3CheckpointStore

    return S3CheckpointStore(parsed.location, parsed.prefix, key, s3_options)


def prune_choice(
    newest_first: list[tuple[Any, int]],
    confirmed: Any,
    keep_last: int,
    keep_per_generation: bool,
) -> list[Any]:
    """Which checkpoints to delete, given (id, generation) pairs newest first.

    Only ``confirmed`` (the newest checkpoint this process saved or verified) and older ones
    count: a newer one may be incomplete or forged, and must not push a genuine one out.

    >>> prune_choice([("d", 1), ("c", 1), ("b", 0), ("a", 0)], "c", 1, True)
    ['a']
    >>> prune_choice([("d", 1), ("c", 1), ("b", 0), ("a", 0)], "c", 1, False)
    ['b', 'a']
    >>> prune_choice([("d", 1), ("c", 1), ("b", 0), ("a", 0)], "d", 2, False)
    ['b', 'a']
    >>> prune_choice([("b", 0), ("a", 0)], None, 1, False)
    []
    """
    if keep_last < 1:
        raise ValueError("keep_last must be at least 1: the newest checkpoint is always kept")
    ids = [i for i, _ in newest_first]
    if confirmed not in ids:
        return []
    trusted = newest_first[ids.index(confirmed) :]
    keep = {i for i, _ in trusted[:keep_last]}
    if keep_per_generation:
        seen: set[int] = set()
        for i, generation in trusted:
            if generation not in seen:
                seen.add(generation)
                keep.add(i)
    return [i for i, _ in trusted if i not in keep]
