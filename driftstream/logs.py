"""Log output of long-running commands: JSON lines for log collectors, text for people.

``auto`` picks JSON when stderr is not a terminal (a container, a file, a log shipper) and
text on a terminal. Code that logs attaches structured fields with
``extra={"fields": {...}}``: JSON lines carry them as top-level keys; text lines show only the
message, which is written to repeat the values a person needs.

Secrets (the SASL password) are masked in every line, whichever library or exception wrote
them: the formatter replaces them after formatting, so nothing has to remember to.

>>> record = logging.makeLogRecord({"name": "demo", "levelname": "WARNING", "msg": "login %s",
...                                  "args": ("hunter2",), "fields": {"user": "u"}})
>>> line = orjson.loads(JsonFormatter(secrets=["hunter2"]).format(record))
>>> line["msg"], line["user"], line["level"]
('login ***', 'u', 'WARNING')
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO

import orjson

FORMATS = ("auto", "json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MASK = "***"
_CORE = ("ts", "level", "logger", "msg")


class _Redacting(logging.Formatter):
    """Base formatter that masks secrets in the finished line."""

    def __init__(self, secrets: Iterable[str] = (), fmt: str | None = None):
        super().__init__(fmt)
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.add(secret)
                forms.add(orjson.dumps(secret).decode()[1:-1])  # as it appears inside JSON
        # Longest first, so that a secret containing another is masked whole.
        self._secrets = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


class TextFormatter(_Redacting):
    """``2024-05-01 12:00:00,123 INFO driftstream.worker message``."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__(secrets, "%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(_Redacting):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                out.setdefault(key, value)  # the core keys always keep their meaning
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return self.redact(line)


def setup(
    level: str = "INFO",
    fmt: str = "auto",
    stream: IO[str] | None = None,
    secrets: Iterable[str] = (),
) -> logging.Handler:
    """Send all logging to ``stream`` (default stderr) in ``fmt``; returns the handler."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if _isatty(stream) else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    handler._driftstream = True  # replaced by the next setup(); other handlers are kept
    root = logging.getLogger()
    for old in root.handlers[:]:
        if getattr(old, "_driftstream", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python logs every connection at INFO; its warnings and errors are what matter
    # unless one is debugging.
    # The same for boto3 (the s3:// state store) and the HTTP client under it.
    for name in ("kafka", "botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    return handler


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or closed
        return False
