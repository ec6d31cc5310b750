"""A checkpoint for the shared stores: a signed manifest, and the state.

The s3:// store keeps both in one object, ``prefix + state``::

    MAGIC (8 bytes) | manifest length (4 bytes, big-endian) | manifest (JSON) | state

the kafka: store carries the manifest in its first chunk's header. The manifest holds everything but
the state: partition, version, id, creation time, offsets, model version, info, provenance
(driftstream, River and Python versions and the learner configuration) and the state's length and
sha256. The signature is the HMAC of the manifest's bytes, so it covers the state through its hash:
a reader authenticates a manifest alone (to list checkpoints) and the state when it loads it, in
both cases before anything is unpickled.

>>> key = b"k" * 32
>>> sealed = seal({"partition": 0, "version": 1}, b"state", key)
>>> whole = sealed.prefix + sealed.state
>>> manifest_bytes, start = split_prefix(whole)
>>> manifest = check_manifest(manifest_bytes, sealed.signature, key, "partition 0")
>>> manifest["version"], bytes(whole[start:]) == b"state", manifest["size"]
(1, True, 5)
>>> check_manifest(manifest_bytes, sealed.signature, b"another key, long", "partition 0")
Traceback (most recent call last):
...
driftstream.state.envelope.CheckpointRejected: partition 0: signature does not verify
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import platform
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from driftstream.state.checkpoints import Checkpoint, StateError, check_checkpoint_input
from driftstream.state.signing import sign, verify

__all__ = [
    "MAGIC",
    "CheckpointRejected",
    "Sealed",
    "check_manifest",
    "check_state",
    "dumps",
    "provenance",
    "seal",
    "split_prefix",
    "warn_if_other_river",
]

MAGIC = b"DSCKPT1\n"
_LENGTH = struct.Struct(">I")
PREFIX_MIN = len(MAGIC) + _LENGTH.size
_JSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS

log = logging.getLogger(__name__)


class CheckpointRejected(StateError):
    """A checkpoint that is incomplete, corrupt or not authentic; the message says which."""


def dumps(value: Any) -> bytes:
    """JSON with sorted keys: the same content always gives the same bytes."""
    return orjson.dumps(value, option=_JSON)


def _version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(config: dict[str, Any] | None) -> dict[str, Any]:
    """What wrote a checkpoint: driftstream, River and Python versions, learner config."""
    import river

    return {
        "driftstream": _version_of("driftstream"),
        "river": river.__version__,
        "python": platform.python_version(),
        "config": config,
    }


@dataclass(frozen=True)
class Sealed:
    """A checkpoint ready to store: ``prefix + state`` is the whole byte string."""

    prefix: bytes  # MAGIC, manifest length, manifest
    state: bytes
    manifest: dict[str, Any]
    manifest_bytes: bytes  # what the signature signs
    signature: str | None  # HMAC-SHA256 of the manifest bytes; None without a key
    sha256: str  # of the state, as in the manifest


def seal(manifest: dict[str, Any], state: bytes, key: bytes | None) -> Sealed:
    """A checkpoint's manifest (with the state's length and sha256 added), signed."""
    sha256 = hashlib.sha256(state).hexdigest()
    manifest = {**manifest, "size": len(state), "sha256": sha256}
    manifest_bytes = dumps(manifest)
    prefix = MAGIC + _LENGTH.pack(len(manifest_bytes)) + manifest_bytes
    signature = None if key is None else sign(key, manifest_bytes)
    return Sealed(prefix, state, manifest, manifest_bytes, signature, sha256)


def seal_checkpoint(
    partition: int,
    version: int,
    offsets: dict[str, int],
    model_version: tuple[int, int],
    info: dict[str, Any] | None,
    config: dict[str, Any] | None,
    state: bytes,
    key: bytes | None,
) -> Sealed:
    """`seal` over the manifest every shared store writes for one checkpoint, with a new
    random id and the time now (ms); the input is checked first (`check_checkpoint_input`)."""
    check_checkpoint_input(state, offsets)
    generation, updates = model_version
    manifest = {
        "partition": partition,
        "version": version,
        "id": uuid.uuid4().hex[:16],
        "created_at": time.time_ns() // 1_000_000,
        "offsets": dict(offsets),
        "generation": generation,
        "updates": updates,
        "info": info or {},
        "provenance": provenance(config),
    }
    return seal(manifest, bytes(state), key)


def split_prefix(head: bytes | memoryview) -> tuple[bytes, int]:
    """(manifest bytes, where the state starts) from the whole's first bytes.

    CheckpointRejected if ``head`` is not a checkpoint; IndexError if it is too short to hold
    the manifest (read more and try again).
    """
    if len(head) < PREFIX_MIN:
        raise IndexError(PREFIX_MIN)
    if bytes(head[: len(MAGIC)]) != MAGIC:
        raise CheckpointRejected("not a driftstream checkpoint (bad magic)")
    (length,) = _LENGTH.unpack(head[len(MAGIC) : PREFIX_MIN])
    if len(head) < PREFIX_MIN + length:
        raise IndexError(PREFIX_MIN + length)
    return bytes(head[PREFIX_MIN : PREFIX_MIN + length]), PREFIX_MIN + length


def check_manifest(
    manifest_bytes: bytes, signature: str | None, key: bytes | None, where: str
) -> dict[str, Any]:
    """The manifest, once its signature verifies under ``key`` (any, without a key)."""
    if key is not None and not verify(key, manifest_bytes, signature):
        why = "is not signed" if not signature else "signature does not verify"
        raise CheckpointRejected(f"{where}: {why}")
    try:
        manifest = orjson.loads(manifest_bytes)
    except orjson.JSONDecodeError:
        raise CheckpointRejected(f"{where}: manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise CheckpointRejected(f"{where}: manifest is not an object")
    return manifest


def check_state(
    manifest: dict[str, Any], state: bytes, where: str, sha256: str | None = None
) -> Checkpoint:
    """The Checkpoint, once ``state`` has the length and sha256 the manifest gives
    (``sha256``: the state's, if the caller has just computed it)."""
    if sha256 is None:
        sha256 = hashlib.sha256(state).hexdigest()
    if len(state) != manifest.get("size") or sha256 != manifest.get("sha256"):
        raise CheckpointRejected(f"{where}: state does not match its manifest's sha256")
    try:
        return Checkpoint(
            partition=manifest["partition"],
            version=manifest["version"],
            created_at=manifest["created_at"],
            state=state,
            sha256=manifest["sha256"],
            offsets=manifest["offsets"],
            generation=manifest["generation"],
            updates=manifest["updates"],
            info=manifest.get("info") or {},
            provenance=manifest.get("provenance") or {},
            id=manifest["id"],
        )
    except KeyError as exc:
        raise CheckpointRejected(f"{where}: manifest lacks {exc.args[0]!r}") from None


def warn_if_other_river(checkpoint: Checkpoint) -> None:
    """Log a WARNING if ``checkpoint`` was written with another River version than this one."""
    import river

    written = checkpoint.provenance.get("river")
    if written is not None and written != river.__version__:
        log.warning(
            "checkpoint %s of partition %d was written with River %s; this is River %s: "
            "the model may not restore or may behave differently",
            checkpoint.version,
            checkpoint.partition,
            written,
            river.__version__,
        )
