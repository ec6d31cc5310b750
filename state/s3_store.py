"""The ``s3://BUCKET/PREFIX`` store: checkpoints as objects in any S3-compatible store.

The client is boto3 (the AWS SDK, well kept, and the reference for S3-compatible stores): the
endpoint and credentials come the standard AWS way (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``~/.aws/config``, instance roles ...) and are never
logged. An object is written once and never overwritten: its key carries partition, version,
model generation, input offsets and a unique id, and the PUT is conditional
(``If-None-Match: *``). Keys, under PREFIX::

    checkpoints/p000003/000000000042-g1-o12000.6000-1765000000000-9f3c2a1b4c5d6e7f.ckpt
    history/p000003/000000000042-1765000000000-9f3c2a1b4c5d6e7f.json

The newest checkpoint is found by listing (highest version, then time); a PUT is atomic, so
an object is whole or absent, and one that does not verify (truncated, tampered, forged) is
skipped with a WARNING for the previous one. `prune` deletes only checkpoints older than one
this process saved or verified. The body is a `state.envelope` byte string, its signature and
sha256 in the object's metadata; listing checkpoints reads only each manifest (a range GET).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from driftstream.state.checkpoints import Checkpoint, StateError
from driftstream.state.envelope import (
    PREFIX_MIN,
    CheckpointRejected,
    check_manifest,
    check_state,
    seal_checkpoint,
    split_prefix,
)
from driftstream.state.history import decode_batch, encode_batch, history_rows
from driftstream.state.signing import sign, verify
from driftstream.state.store import CheckpointStore, StoreUnavailable, prune_choice
from driftstream.stream.records import ModelVersion

__all__ = ["S3CheckpointStore"]

_KEY = re.compile(r"p(\d{6})/(\d{12})-g(\d+)-o([0-9.]*)-(\d+)-([0-9a-f]+)\.ckpt")
_HEAD_BYTES = 64 * 1024  # a first range GET that holds any usual manifest
_READERS = 8  # parallel GETs when reading many small objects

log = logging.getLogger(__name__)


class _Key(NamedTuple):
    """A checkpoint object's key, parsed; sorts oldest first."""

    version: int
    created_at: int
    cid: str
    partition: int
    generation: int
    key: str


class S3CheckpointStore(CheckpointStore):
    """Checkpoints, drift log and model versions as objects (see the module docstring)."""

    def __init__(self, bucket: str, prefix: str, key: bytes, options: dict[str, Any] | None = None):
        if not key:
            raise StateError("the s3:// state store needs a signing key")
        self.name = f"s3://{bucket}/{prefix}"
        self._bucket = bucket
        self._prefix = prefix
        self._key = key
        self._conditional = True  # If-None-Match, until the store says it cannot
        self._last_version: dict[int, int] = {}
        self._confirmed: dict[int, str] = {}
        self._refused: dict[int, set[str]] = {}
        options = dict(options or {})
        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        if "config" in options:
            config = config.merge(options.pop("config"))
        try:
            self._s3 = boto3.session.Session().client("s3", config=config, **options)
            self._s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket"):
                raise StateError(f"{self.name}: bucket {bucket!r} does not exist") from None
            raise self._unavailable(exc, "cannot open") from None

    # -- helpers -----------------------------------------------------------------------

    def _unavailable(self, exc: BaseException, doing: str) -> StoreUnavailable:
        code = _code(exc)
        what = f"{code}: {_message(exc)}" if code else f"{type(exc).__name__}: {exc}"
        return StoreUnavailable(f"{self.name}: {doing}: {what}")

    def _call(self, doing: str, method: str, **kwargs: Any) -> Any:
        """One S3 request; StoreUnavailable on any failure (messages carry no secrets)."""
        try:
            return getattr(self._s3, method)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, doing) from None

    def _put(self, key: str, body: bytes, metadata: dict[str, str]) -> None:
        kwargs = {"Bucket": self._bucket, "Key": key, "Body": body, "Metadata": metadata}
        try:
            if self._conditional:
                try:
                    self._s3.put_object(IfNoneMatch="*", **kwargs)
                    return
                except ClientError as exc:
                    if _code(exc) not in ("NotImplemented", "501"):
                        raise
                    self._conditional = False  # keys are unique anyway
            self._s3.put_object(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, f"not saved ({key})") from None

    def _list(self, prefix: str) -> Iterator[str]:
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._prefix + prefix
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"]
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, "cannot list") from None

    def _keys(self, partition: int, version: int | None = None) -> list[_Key]:
        """The partition's checkpoint objects, oldest first."""
        start = f"checkpoints/p{partition:06d}/"
        if version is not None:
            start += f"{version:012d}-"
        return sorted(_parse(k, self._prefix) for k in self._list(start) if _parse(k, self._prefix))

    def _checkpoint_key(self, partition, version, generation, offsets, created_at, cid) -> str:
        positions = ".".join(str(offsets[t]) for t in sorted(offsets))
        return (
            f"{self._prefix}checkpoints/p{partition:06d}/"
            f"{version:012d}-g{generation}-o{positions}-{created_at}-{cid}.ckpt"
        )

    # -- reading -----------------------------------------------------------------------

    def _get(self, key: str, byte_range: str | None = None) -> dict[str, Any] | None:
        """The GET response, or None if the object is gone (e.g. pruned meanwhile)."""
        kwargs = {"Bucket": self._bucket, "Key": key}
        if byte_range is not None:
            kwargs["Range"] = byte_range
        try:
            return self._s3.get_object(**kwargs)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._unavailable(exc, f"cannot read {key}") from None
        except BotoCoreError as exc:
            raise self._unavailable(exc, f"cannot read {key}") from None

    def _where(self, item: _Key) -> str:
        return f"partition {item.partition}: checkpoint {item.version} ({item.key})"

    def _manifest(self, item: _Key, head: bytes, metadata: dict[str, str]) -> tuple[dict, int]:
        manifest_bytes, start = split_prefix(head)
        where = self._where(item)
        manifest = check_manifest(manifest_bytes, metadata.get("hmac"), self._key, where)
        if (manifest.get("partition"), manifest.get("id")) != (item.partition, item.cid):
            raise CheckpointRejected(f"{where}: its manifest names another checkpoint")
        return manifest, start

    def _load(self, item: _Key) -> Checkpoint | None:
        """The checkpoint, verified; None if gone; CheckpointRejected if not genuine."""
        response = self._get(item.key)
        if response is None:
            return None
        body = response["Body"]
        try:
            head = body.read(PREFIX_MIN)
            while True:
                try:
                    manifest, start = self._manifest(item, head, response["Metadata"])
                    break
                except IndexError as short:
                    more = body.read(short.args[0] - len(head))
                    if not more:
                        raise CheckpointRejected(f"{self._where(item)}: cut short") from None
                    head += more
            rest = body.read()  # the state, read into one buffer when no more head was read
            state = rest if start == len(head) else head[start:] + rest
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, f"cannot read {item.key}") from None
        finally:
            body.close()
        return check_state(manifest, state, self._where(item))

    def _newest(self, partition: int, version: int | None = None) -> Checkpoint | None:
        for item in reversed(self._keys(partition, version)):
            self._last_version[partition] = max(self._last_version.get(partition, 0), item.version)
            try:
                checkpoint = self._load(item)
            except CheckpointRejected as exc:
                log.warning("skipping a checkpoint: %s", exc)
                self._refused.setdefault(partition, set()).add(item.key)
                continue
            if checkpoint is None:
                continue
            if version is None:
                self._confirmed.setdefault(partition, item.key)
            return checkpoint
        return None

    def _metadata(self, item: _Key) -> dict[str, Any] | None:
        """A checkpoint's metadata from its manifest alone; None if gone or refused."""
        length = _HEAD_BYTES
        while True:
            response = self._get(item.key, f"bytes=0-{length - 1}")
            if response is None:
                return None
            try:
                head = response["Body"].read()
            except (BotoCoreError, ClientError) as exc:
                raise self._unavailable(exc, f"cannot read {item.key}") from None
            try:
                manifest, _ = self._manifest(item, head, response["Metadata"])
                break
            except IndexError as short:
                if len(head) < length:  # the object ends before its manifest does
                    log.warning("skipping a checkpoint: %s: cut short", self._where(item))
                    return None
                length = short.args[0]
            except CheckpointRejected as exc:
                log.warning("skipping a checkpoint: %s", exc)
                return None
        fields = ("partition", "version", "created_at", "size", "sha256", "offsets")
        row = {name: manifest.get(name) for name in fields}
        row.update(
            generation=manifest.get("generation"),
            updates=manifest.get("updates"),
            info=manifest.get("info") or {},
            provenance=manifest.get("provenance") or {},
            id=item.cid,
        )
        return row

    def checkpoints(self, partition: int | None = None) -> list[dict[str, Any]]:
        items = []
        for p in self._partition_list(partition):
            items.extend(self._keys(p))
        with ThreadPoolExecutor(_READERS) as pool:
            rows = list(pool.map(self._metadata, items))
        return [row for row in rows if row is not None]

    def _partition_list(self, partition: int | None) -> list[int]:
        return self.partitions() if partition is None else [partition]

    def partitions(self) -> list[int]:
        found = set()
        for key in self._list("checkpoints/"):
            item = _parse(key, self._prefix)
            if item is not None:
                found.add(item.partition)
        return sorted(found)

    # -- history -----------------------------------------------------------------------

    def _batch(self, key: str) -> dict[str, Any] | None:
        response = self._get(key)
        if response is None:
            return None
        try:
            data = response["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, f"cannot read {key}") from None
        if not verify(self._key, data, response["Metadata"].get("hmac")):
            log.warning("skipping history batch %s: not genuine", key)
            return None
        try:
            return decode_batch(data)
        except ValueError:
            log.warning("skipping history batch %s: not a history batch", key)
            return None

    def _batches(self, partition: int | None) -> list[dict[str, Any]]:
        start = "history/" if partition is None else f"history/p{partition:06d}/"
        keys = [k for k in self._list(start) if k.endswith(".json")]
        with ThreadPoolExecutor(_READERS) as pool:
            batches = [b for b in pool.map(self._batch, keys) if b is not None]
        if partition is not None:
            batches = [b for b in batches if b["partition"] == partition]
        return batches

    def drift_log(self, partition: int | None = None) -> list[dict[str, Any]]:
        return history_rows(self._batches(partition))[0]

    def model_versions(self, partition: int | None = None) -> list[dict[str, Any]]:
        return history_rows(self._batches(partition))[1]

    # -- writing -----------------------------------------------------------------------

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
        if partition < 0:
            raise ValueError(f"bad partition {partition}")
        if partition not in self._last_version:
            keys = self._keys(partition)
            self._last_version[partition] = keys[-1].version if keys else 0
        version = self._last_version[partition] + 1
        sealed = seal_checkpoint(
            partition, version, offsets, model_version, info, config, state, self._key
        )
        cid, created_at = sealed.manifest["id"], sealed.manifest["created_at"]
        batch = encode_batch(partition, version, cid, created_at, drift_records, model_events)
        if batch is not None:  # first: a checkpoint never exists without its history
            key = f"{self._prefix}history/p{partition:06d}/{version:012d}-{created_at}-{cid}.json"
            self._put(key, batch, {"hmac": sign(self._key, batch)})
        generation = model_version[0]
        key = self._checkpoint_key(partition, version, generation, offsets, created_at, cid)
        self._put(
            key,
            sealed.prefix + sealed.state,
            {"hmac": sealed.signature or "", "sha256": sealed.sha256},
        )
        self._last_version[partition] = version
        self._confirmed[partition] = key
        return version

    def prune(self, partition: int, keep_last: int = 5, keep_per_generation: bool = True) -> int:
        confirmed = self._confirmed.get(partition)
        if confirmed is None:
            return 0
        items = self._keys(partition)
        refused = self._refused.get(partition, set())
        genuine = [(i.key, i.generation) for i in reversed(items) if i.key not in refused]
        doomed = prune_choice(genuine, confirmed, keep_last, keep_per_generation)
        keys = [i.key for i in items]
        if confirmed in keys:
            older = keys[: keys.index(confirmed)]
            garbage = [k for k in older if k in refused]
        else:
            garbage = []
        for start in range(0, len(doomed + garbage), 1000):
            batch = (doomed + garbage)[start : start + 1000]
            response = self._call(
                "prune failed",
                "delete_objects",
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StoreUnavailable(
                    f"{self.name}: prune failed: {first.get('Code')}: {first.get('Message')}"
                )
        refused.difference_update(garbage)
        return len(doomed)

    def close(self) -> None:
        self._s3.close()


def _parse(key: str, prefix: str) -> _Key | None:
    match = _KEY.fullmatch(key[len(prefix) + len("checkpoints/") :])
    if not key.startswith(prefix + "checkpoints/") or match is None:
        return None
    partition, version, generation, _, created_at, cid = match.groups()
    return _Key(int(version), int(created_at), cid, int(partition), int(generation), key)


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Message") or str(exc)
    return str(exc)
