"""Checkpoint signatures: HMAC-SHA256 under a key shared by the workers.

A checkpoint's sha256 catches accidents only: whoever can write to a shared topic or bucket
can recompute it. An HMAC needs the key, so a checkpoint that verifies was written by a holder
of the key, and the stores check it before anything is unpickled. The key comes from
``--state-key-file`` or the environment variable ``DRIFTSTREAM_STATE_KEY``
(`load_state_key`); it is never logged.

>>> key = b"0123456789abcdef0123456789abcdef"
>>> tag = sign(key, b"manifest")
>>> len(tag), verify(key, b"manifest", tag), verify(key, b"manifesto", tag)
(64, True, False)
>>> verify(key, b"manifest", None), verify(b"another key, 16 bytes or more", b"manifest", tag)
(False, False)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Mapping

from driftstream.state.checkpoints import StateError

__all__ = ["ENV_VAR", "MIN_KEY_BYTES", "load_state_key", "sign", "verify"]

ENV_VAR = "DRIFTSTREAM_STATE_KEY"
MIN_KEY_BYTES = 16  # shorter keys are refused: a guessable key is no signature

log = logging.getLogger(__name__)


def sign(key: bytes, message: bytes) -> str:
    """The HMAC-SHA256 of ``message`` under ``key``, as 64 hex digits."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(key: bytes, message: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is ``message``'s HMAC under ``key`` (constant-time compare)."""
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(key, message), signature)


def load_state_key(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> bytes | None:
    """The signing key: the contents of ``path`` if given (surrounding whitespace stripped),
    else ``environ["DRIFTSTREAM_STATE_KEY"]``, else None.

    StateError (never showing the key) if the file cannot be read or a key is too short.
    """
    if path is not None:
        source = f"state key file {os.fspath(path)}"
        try:
            with open(path, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                key = fh.read().strip()
        except OSError as exc:
            raise StateError(f"cannot read {source}: {exc.strerror or exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s can be read by other users; chmod 600 it", source)
    else:
        source = f"${ENV_VAR}"
        text = environ.get(ENV_VAR)
        if text is None:
            return None
        key = text.strip().encode()
    if len(key) < MIN_KEY_BYTES:
        raise StateError(f"{source} holds {len(key)} bytes; a state key needs {MIN_KEY_BYTES}+")
    return key
