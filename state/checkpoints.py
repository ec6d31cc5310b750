"""Durable per-partition state in SQLite: checkpoints, drift log and model versions.

A checkpoint holds everything a partition's learner needs (an opaque state blob) together
with the input offsets it reflects, saved in one transaction with the drift records and
model-version events produced since the previous checkpoint. Restoring the newest
checkpoint and seeking to its offsets therefore reproduces an uninterrupted run.

One file may be shared by several worker processes, each owning different partitions:
WAL mode lets readers run beside a writer, writers take the lock up front (BEGIN
IMMEDIATE) and wait up to BUSY_TIMEOUT_S for each other, and transactions stay short.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlite_utils import Database

from driftstream.stream.records import ModelVersion

__all__ = [
    "APP",
    "SCHEMA_VERSION",
    "Checkpoint",
    "StateError",
    "StateStore",
    "check_checkpoint_input",
]

APP = "driftstream"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
_SQLITE_HEADER = b"SQLite format 3\x00"
_TABLES = ("meta", "checkpoints", "drift_log", "model_versions")
_MODEL_EVENT_KEYS = ("generation", "updates", "reason", "event_ts")


class StateError(Exception):
    """The state file is unusable (foreign, corrupt, too new) or a checkpoint is missing."""


@dataclass
class Checkpoint:
    """One saved partition state; `offsets` maps topic name -> next offset to read."""

    partition: int
    version: int
    created_at: int  # epoch ms
    state: bytes
    sha256: str
    offsets: dict[str, int]
    generation: int
    updates: int
    info: dict[str, Any] = field(default_factory=dict)
    # Written by the stores of state/store.py: driftstream, River and Python versions and the
    # learner configuration; the backend's unique id of this checkpoint (a str).
    provenance: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    @property
    def model_version(self) -> ModelVersion:
        return ModelVersion(self.generation, self.updates)


def check_checkpoint_input(state: bytes, offsets: dict[str, int]) -> None:
    """What every store refuses before it writes anything: a state that is not bytes, an
    offsets entry that is not ``topic -> offset >= 0``."""
    if not isinstance(state, (bytes, bytearray)):
        raise TypeError(f"state must be bytes, not {type(state).__name__}")
    for topic, offset in offsets.items():
        if not isinstance(topic, str) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"bad offset entry {topic!r}: {offset!r}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _dumps(value: Any) -> str:
    # sort_keys: the same content always gives the same text.
    return json.dumps(value, sort_keys=True)


def _check_header(path: Path) -> None:
    """Refuse an existing non-empty file that is not SQLite, before SQLite touches it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc}") from exc
    if header != _SQLITE_HEADER:
        raise StateError(f"{path} is not an SQLite database; refusing to use it as state")


class StateStore:
    """Checkpoints, drift log and model versions of all partitions in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        _check_header(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # used by the worker's checkpoint writer thread too, one thread at a time
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state file {self.path}: {exc}") from exc
        try:
            self._db = Database(conn, execute_plugins=False)
            self._open_schema()
        except sqlite3.OperationalError as exc:  # e.g. locked for longer than the timeout
            conn.close()
            raise StateError(f"cannot open state file {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # e.g. "file is not a database", "malformed"
            conn.close()
            raise StateError(f"{self.path} is not a usable SQLite database: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    # -- opening -----------------------------------------------------------------------

    def _open_schema(self) -> None:
        """Validate an existing file before changing anything; create the schema if new."""
        if self._db.table_names():
            self._check_ours()
            self._enable_wal()
            return
        self._enable_wal()
        with self._write():
            # Another process may have created the schema since we looked.
            if self._db.table_names():
                self._check_ours()
            else:
                self._create_schema()

    def _enable_wal(self) -> None:
        """Switch to WAL. While another process does the same, SQLite can answer "database is
        locked" at once, without waiting the busy timeout: retry until that timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db.enable_wal()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # back-off between attempts

    def _check_ours(self) -> None:
        tables = set(self._db.table_names())
        if "meta" not in tables:
            raise StateError(
                f"{self.path} is an SQLite database of another application "
                f"(no driftstream meta table); refusing to use it as state"
            )
        meta = {row["key"]: row["value"] for row in self._db.query("SELECT key, value FROM meta")}
        if meta.get("app") != APP:
            raise StateError(
                f"{self.path} belongs to another application (app={meta.get('app')!r}); "
                f"refusing to use it as state"
            )
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise StateError(
                f"{self.path} has an invalid schema_version {meta.get('schema_version')!r}"
            ) from None
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} has schema version {version}, newer than this driftstream "
                f"supports ({SCHEMA_VERSION}); upgrade driftstream"
            )
        if version < SCHEMA_VERSION:
            raise StateError(f"{self.path} has unknown old schema version {version}")
        missing = [t for t in _TABLES if t not in tables]
        if missing:
            raise StateError(f"{self.path} is missing tables {missing}; the file is damaged")

    def _create_schema(self) -> None:
        db = self._db
        db["meta"].create({"key": str, "value": str}, pk="key", not_null={"value"})
        db["meta"].insert_all(
            [{"key": "app", "value": APP}, {"key": "schema_version", "value": str(SCHEMA_VERSION)}]
        )
        db["checkpoints"].create(
            {
                "partition": int,
                "version": int,
                "created_at": int,
                "state": bytes,
                "sha256": str,
                "offsets": str,
                "generation": int,
                "updates": int,
                "info": str,
            },
            pk=("partition", "version"),
            not_null={"created_at", "state", "sha256", "offsets", "generation", "updates", "info"},
        )
        db["drift_log"].create(
            {
                "id": int,
                "partition": int,
                "checkpoint_version": int,
                "created_at": int,
                "record": str,
            },
            pk="id",
            not_null={"partition", "checkpoint_version", "created_at", "record"},
        )
        db["drift_log"].create_index(["partition", "id"])
        db["model_versions"].create(
            {
                "id": int,
                "partition": int,
                "generation": int,
                "updates": int,
                "reason": str,
                "event_ts": int,
                "checkpoint_version": int,
                "created_at": int,
                "info": str,
            },
            pk="id",
            not_null={
                "partition",
                "generation",
                "updates",
                "reason",
                "checkpoint_version",
                "created_at",
                "info",
            },
        )
        db["model_versions"].create_index(["partition", "id"])

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, holding the write lock from the start (no upgrade races)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.rollback()
            raise
        else:
            self._db.commit()

    # -- writing -----------------------------------------------------------------------

    def save_checkpoint(
        self,
        partition: int,
        state: bytes,
        offsets: dict[str, int],
        model_version: ModelVersion,
        info: dict[str, Any] | None = None,
        drift_records: Iterable[dict[str, Any]] = (),
        model_events: Iterable[dict[str, Any]] = (),
    ) -> int:
        """Save a checkpoint with its drift records and model events atomically.

        Returns the new version (previous newest of this partition + 1).
        """
        check_checkpoint_input(state, offsets)
        generation, updates = model_version
        state = bytes(state)
        now = _now_ms()
        events = [dict(event) for event in model_events]
        for event in events:
            missing = [k for k in ("generation", "updates", "reason") if k not in event]
            if missing:
                raise ValueError(f"model event {event!r} lacks {missing}")
        with self._write():
            row = self._db.execute(
                "SELECT MAX(version) FROM checkpoints WHERE [partition] = ?", [partition]
            ).fetchone()
            version = (row[0] or 0) + 1
            self._db["checkpoints"].insert(
                {
                    "partition": partition,
                    "version": version,
                    "created_at": now,
                    "state": state,
                    "sha256": hashlib.sha256(state).hexdigest(),
                    "offsets": _dumps(offsets),
                    "generation": generation,
                    "updates": updates,
                    "info": _dumps(info or {}),
                }
            )
            drift_rows = [
                {
                    "partition": partition,
                    "checkpoint_version": version,
                    "created_at": now,
                    "record": _dumps(record),
                }
                for record in drift_records
            ]
            if drift_rows:
                self._db["drift_log"].insert_all(drift_rows)
            if events:
                self._db["model_versions"].insert_all(
                    [
                        {
                            "partition": partition,
                            "generation": event["generation"],
                            "updates": event["updates"],
                            "reason": event["reason"],
                            "event_ts": event.get("event_ts"),
                            "checkpoint_version": version,
                            "created_at": now,
                            "info": _dumps(
                                {k: v for k, v in event.items() if k not in _MODEL_EVENT_KEYS}
                            ),
                        }
                        for event in events
                    ]
                )
        return version

    def prune(self, partition: int, keep_last: int = 5, keep_per_generation: bool = True) -> int:
        """Delete old checkpoints of a partition; returns how many were deleted.

        Keeps the newest `keep_last` and, if keep_per_generation, the newest checkpoint of
        every model generation (so each past model can still be inspected).
        """
        if keep_last < 1:
            raise ValueError("keep_last must be at least 1: the newest checkpoint is always kept")
        with self._write():
            rows = self._db.execute(
                "SELECT version, generation FROM checkpoints WHERE [partition] = ? "
                "ORDER BY version DESC",
                [partition],
            ).fetchall()
            keep = {version for version, _ in rows[:keep_last]}
            if keep_per_generation:
                seen: set[int] = set()
                for version, generation in rows:
                    if generation not in seen:
                        seen.add(generation)
                        keep.add(version)
            doomed = [(partition, version) for version, _ in rows if version not in keep]
            if doomed:
                self._db.conn.executemany(
                    "DELETE FROM checkpoints WHERE [partition] = ? AND version = ?", doomed
                )
        return len(doomed)

    # -- reading -----------------------------------------------------------------------

    def _load(self, row: dict[str, Any]) -> Checkpoint:
        state = row["state"]
        if not isinstance(state, bytes) or hashlib.sha256(state).hexdigest() != row["sha256"]:
            raise StateError(
                f"checkpoint {row['version']} of partition {row['partition']} in {self.path} "
                f"is corrupt (sha256 mismatch)"
            )
        return Checkpoint(
            partition=row["partition"],
            version=row["version"],
            created_at=row["created_at"],
            state=state,
            sha256=row["sha256"],
            offsets=json.loads(row["offsets"]),
            generation=row["generation"],
            updates=row["updates"],
            info=json.loads(row["info"]),
        )

    def latest(self, partition: int) -> Checkpoint | None:
        """The newest checkpoint of a partition, or None if it has none."""
        rows = list(
            self._db.query(
                "SELECT * FROM checkpoints WHERE [partition] = ? ORDER BY version DESC LIMIT 1",
                [partition],
            )
        )
        return self._load(rows[0]) if rows else None

    def get(self, partition: int, version: int) -> Checkpoint:
        """One checkpoint by version; StateError if it does not exist (e.g. pruned)."""
        rows = list(
            self._db.query(
                "SELECT * FROM checkpoints WHERE [partition] = ? AND version = ?",
                [partition, version],
            )
        )
        if not rows:
            raise StateError(f"no checkpoint {version} of partition {partition} in {self.path}")
        return self._load(rows[0])

    def checkpoints(self, partition: int | None = None) -> list[dict[str, Any]]:
        """Checkpoint metadata (no state blob; `size` is its length), oldest first."""
        where, params = self._partition_filter(partition)
        rows = self._db.query(
            "SELECT [partition], version, created_at, length(state) AS size, sha256, offsets, "
            f"generation, updates, info FROM checkpoints {where} ORDER BY [partition], version",
            params,
        )
        result = []
        for row in rows:
            row["offsets"] = json.loads(row["offsets"])
            row["info"] = json.loads(row["info"])
            result.append(row)
        return result

    def drift_log(self, partition: int | None = None) -> list[dict[str, Any]]:
        """Drift records in saving order: id, partition, checkpoint_version, created_at,
        record (the dict given to save_checkpoint)."""
        where, params = self._partition_filter(partition)
        rows = self._db.query(f"SELECT * FROM drift_log {where} ORDER BY id", params)
        result = []
        for row in rows:
            row["record"] = json.loads(row["record"])
            result.append(row)
        return result

    def model_versions(self, partition: int | None = None) -> list[dict[str, Any]]:
        """Model-version events in saving order; keys beyond generation/updates/reason/
        event_ts that were given to save_checkpoint come back under `info`."""
        where, params = self._partition_filter(partition)
        rows = self._db.query(f"SELECT * FROM model_versions {where} ORDER BY id", params)
        result = []
        for row in rows:
            row["info"] = json.loads(row["info"])
            result.append(row)
        return result

    def partitions(self) -> list[int]:
        """Partitions that have at least one checkpoint."""
        rows = self._db.execute(
            "SELECT DISTINCT [partition] FROM checkpoints ORDER BY [partition]"
        ).fetchall()
        return [row[0] for row in rows]

    @staticmethod
    def _partition_filter(partition: int | None) -> tuple[str, list[int]]:
        if partition is None:
            return "", []
        return "WHERE [partition] = ?", [partition]

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r})"
