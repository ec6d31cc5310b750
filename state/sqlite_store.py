"""The ``sqlite:PATH`` store: today's `StateStore` file behind the `CheckpointStore` interface.

The file format does not change, so files written before and tools that open `StateStore`
directly keep working. What this adds is kept in each checkpoint's ``info`` under the key
``_store`` (and taken out again on reading): the provenance (versions and learner
configuration) and, with a key, the HMAC of everything that decides the restored state
(partition, offsets, model version, state sha256, info and provenance). With a key, a
checkpoint without a valid signature is refused like a corrupt one: `latest` logs a WARNING
and falls back to the previous checkpoint.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "state.sqlite"
>>> with SqliteCheckpointStore(path, key=b"k" * 16) as store:
...     store.save_checkpoint(0, b"state", {"events": 3}, (0, 1), config={"model": "lr"})
...     checkpoint = store.latest(0)
1
>>> checkpoint.state, checkpoint.offsets, checkpoint.provenance["config"]
(b'state', {'events': 3}, {'model': 'lr'})
>>> "_store" in checkpoint.info
False
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from driftstream.state.checkpoints import Checkpoint, StateError, StateStore
from driftstream.state.envelope import dumps, provenance
from driftstream.state.signing import sign, verify
from driftstream.state.store import CheckpointStore, StoreUnavailable
from driftstream.stream.records import ModelVersion

__all__ = ["SqliteCheckpointStore"]

_RESERVED = "_store"

log = logging.getLogger(__name__)


def _signed_bytes(
    partition: int,
    offsets: dict[str, Any],
    generation: int,
    updates: int,
    sha256: str,
    info: dict[str, Any],
    written_by: dict[str, Any],
) -> bytes:
    # As stored: JSON turns non-string keys into strings, so sign what a reader will see.
    fields = orjson.loads(
        orjson.dumps(
            [partition, offsets, generation, updates, sha256, info, written_by],
            option=orjson.OPT_NON_STR_KEYS,
        )
    )
    return dumps(fields)


class SqliteCheckpointStore(CheckpointStore):
    """Checkpoints in one SQLite file (`StateStore`); signatures optional."""

    def __init__(self, path: str | os.PathLike[str], key: bytes | None = None):
        self.name = f"sqlite:{os.fspath(path)}"
        self._key = key
        try:
            self._db = StateStore(path)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from None

    @property
    def state_store(self) -> StateStore:
        """The underlying file, for tools that need more than this interface."""
        return self._db

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
        info = dict(info or {})
        info.pop(_RESERVED, None)
        written_by = provenance(config)
        extra: dict[str, Any] = {"provenance": written_by}
        if self._key is not None:
            generation, updates = model_version
            message = _signed_bytes(
                partition,
                offsets,
                generation,
                updates,
                hashlib.sha256(state).hexdigest(),
                info,
                written_by,
            )
            extra["hmac"] = sign(self._key, message)
        try:
            return self._db.save_checkpoint(
                partition,
                state,
                offsets,
                model_version,
                info={**info, _RESERVED: extra},
                drift_records=drift_records,
                model_events=model_events,
            )
        except sqlite3.Error as exc:  # e.g. locked past the busy timeout, disk full
            raise StoreUnavailable(f"{self.name}: checkpoint not saved: {exc}") from None

    def _checked(self, checkpoint: Checkpoint) -> Checkpoint:
        """The checkpoint without the reserved info key; StateError if it does not verify."""
        info = dict(checkpoint.info)
        extra = info.pop(_RESERVED, None) or {}
        checkpoint.info = info
        checkpoint.provenance = extra.get("provenance") or {}
        checkpoint.id = str(checkpoint.version)
        if self._key is not None:
            message = _signed_bytes(
                checkpoint.partition,
                checkpoint.offsets,
                checkpoint.generation,
                checkpoint.updates,
                checkpoint.sha256,
                info,
                checkpoint.provenance,
            )
            if not verify(self._key, message, extra.get("hmac")):
                why = "is not signed" if "hmac" not in extra else "signature does not verify"
                raise StateError(
                    f"checkpoint {checkpoint.version} of partition {checkpoint.partition} "
                    f"in {self.name} {why}"
                )
        return checkpoint

    def _read(self, partition: int, version: int) -> Checkpoint:
        try:
            return self._checked(self._db.get(partition, version))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from None

    def _newest(self, partition: int, version: int | None = None) -> Checkpoint | None:
        if version is not None:
            return self._read(partition, version)  # raises StateError with the reason
        for meta in reversed(self._rows(lambda: self._db.checkpoints(partition))):
            try:
                return self._read(partition, meta["version"])
            except StateError as exc:
                log.warning(
                    "partition %d: skipping checkpoint %s: %s", partition, meta["version"], exc
                )
        return None

    def checkpoints(self, partition: int | None = None) -> list[dict[str, Any]]:
        rows = self._rows(lambda: self._db.checkpoints(partition))
        for row in rows:
            extra = row["info"].pop(_RESERVED, None) or {}
            row["provenance"] = extra.get("provenance") or {}
            row["id"] = str(row["version"])
        return rows

    def drift_log(self, partition: int | None = None) -> list[dict[str, Any]]:
        return self._rows(lambda: self._db.drift_log(partition))

    def model_versions(self, partition: int | None = None) -> list[dict[str, Any]]:
        return self._rows(lambda: self._db.model_versions(partition))

    def partitions(self) -> list[int]:
        return self._rows(self._db.partitions)

    def prune(self, partition: int, keep_last: int = 5, keep_per_generation: bool = True) -> int:
        try:
            return self._db.prune(partition, keep_last, keep_per_generation)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: prune failed: {exc}") from None

    def _rows(self, read):
        try:
            return read()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from None

    def close(self) -> None:
        self._db.close()
