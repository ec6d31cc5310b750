"""Helpers the tests share: waiting on a condition, topics and records on the real broker,
checkpoint progress read from a state file, and `driftstream` CLI processes.

Tests import them as ``from tests.support import wait_until`` (tests/ is a package, so this
works under pytest's ``--import-mode=importlib`` whatever the working directory). Fixtures
are in conftest.py.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftstream.consumers import reader
from driftstream.producers.publisher import EventPublisher, publish_samples
from driftstream.producers.sources import Sample
from driftstream.transport import Admin, KafkaSettings, topic_names

__all__ = [
    "DEADLINE_S",
    "PACKAGES",
    "REPO",
    "START_TS",
    "built_once",
    "checkpoints",
    "create_topics",
    "http_get",
    "metric_samples",
    "progress",
    "publish",
    "read_all",
    "run_argv",
    "start_cli",
    "tail",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent
# The one import root and the packages mapped under it (pyproject.toml, package-dir).
PACKAGES = (
    "driftstream",
    "driftstream.stream",
    "driftstream.state",
    "driftstream.transport",
    "driftstream.producers",
    "driftstream.consumers",
)
START_TS = 1_700_000_000_000  # event time of the first synthetic sample (2023-11-14)
DEADLINE_S = 60.0  # generous: the machine is shared, and a passing test never waits this long


# -- waiting ---------------------------------------------------------------------------


def wait_until(
    cond: Callable[[], object],
    what: str,
    timeout: float = DEADLINE_S,
    *,
    watch: Iterable[tuple[subprocess.Popen, Path]] = (),
    step: float = 0.02,
) -> None:
    """Check ``cond`` until it is true; fail at the deadline, or at once if a watched
    process (a ``(process, log)`` pair) has exited, with the logs' tails in the message.
    ``cond`` may block briefly itself (a poll); ``step`` is the pause between calls."""
    watch = list(watch)
    deadline = time.monotonic() + timeout
    while not cond():
        for proc, log in watch:
            if proc.poll() is not None:
                raise AssertionError(
                    f"process exited ({proc.returncode}) while waiting for {what}\n{tail(log)}"
                )
        if time.monotonic() > deadline:
            logs = "".join("\n" + tail(log) for _, log in watch)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{logs}")
        time.sleep(step)  # polling interval of the condition, not a synchronisation


def tail(log: Path, lines: int = 40) -> str:
    """The last lines of a log file, headed by its name, for failure messages."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return f"--- {log.name} ---\n" + "\n".join(text.splitlines()[-lines:])


# -- costly test data ----------------------------------------------------------------------


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[], bytes]
) -> bytes:
    """``build()``, made once per test run: under pytest-xdist by the first worker process
    that asks (the others wait for it on a lock, then read its file; ``name`` is that file's
    name in the run's shared temporary directory), otherwise in this process."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build()
    path = tmp_path_factory.getbasetemp().parent / name  # the run's dir, above popen-gwN
    with open(path.with_name(name + ".lock"), "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not path.exists():
            partial = path.with_name(name + ".partial")
            partial.write_bytes(build())
            partial.replace(path)
        return path.read_bytes()


# -- topics and records ------------------------------------------------------------------


def create_topics(settings: KafkaSettings, prefix: str, partitions: int = 1) -> dict[str, str]:
    """Create the pipeline's topics under ``prefix``; returns {role: topic name}."""
    topics = topic_names(prefix)
    admin = Admin(settings)
    try:
        admin.create_topics(list(topics.values()), partitions)
    finally:
        admin.close()
    return topics


def publish(
    settings: KafkaSettings, prefix: str, samples: Iterable[Sample], partitions: int | None = None
) -> dict[str, int]:
    """Publish samples' events and labels in event-time order (`publish_samples`); with
    ``partitions``, sample i goes to partition i % partitions. Returns the counts sent."""
    publisher = EventPublisher(settings, prefix)
    try:
        return publish_samples(publisher, samples, partitions=partitions)
    finally:
        publisher.close()


def read_all(settings: KafkaSettings, topic: str) -> list[dict]:
    """Every record of a topic up to its current end, decoded, partition by partition in
    offset order."""
    return [orjson.loads(r.value) for r in reader.read_topic(settings, topic)]


# -- state files -------------------------------------------------------------------------


def checkpoints(state: Path, partition: int = 0) -> list[dict]:
    """{version, offsets} of a partition's checkpoints, oldest first, read without locking
    out the worker that writes them (read-only; empty before the file or schema exists)."""
    if not Path(state).exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(
                "SELECT version, offsets FROM checkpoints WHERE [partition] = ? ORDER BY version",
                [partition],
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    return [{"version": v, "offsets": orjson.loads(o)} for v, o in rows]


def progress(state: Path, partition: int = 0) -> int:
    """Input records (events + labels) reflected in the partition's newest checkpoint."""
    saved = checkpoints(state, partition)
    return sum(saved[-1]["offsets"].values()) if saved else 0


# -- CLI processes -----------------------------------------------------------------------


def run_argv(
    settings: KafkaSettings, prefix: str, state: Path | str, *extra: str, group: str | None = None
) -> list[str]:
    """`driftstream run` arguments for a test: its broker and Kafka client, topics, group
    (default: the prefix's), state file and Tansu's fast group timeouts, then ``extra``."""
    return [
        "run",
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--topic-prefix",
        prefix,
        "--group",
        prefix + "group" if group is None else group,
        "--state",
        str(state),
        "--fast-group-timeouts",
        "--kafka-client",
        settings.client,
        *extra,
    ]


def _cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without DRIFTSTREAM_* and KAFKA_* variables (a developer's
    settings must not change a test), then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTSTREAM_", "KAFKA_"))}
    return {**env, **(extra or {})}


def start_cli(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Start ``python -m driftstream.cli ARGV`` as a user would, the package imported as
    installed (environment: `_cli_env` with ``env``; working directory: the log's, not the
    repository), its stdout and stderr appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "driftstream.cli", *argv],
            cwd=log.parent if cwd is None else cwd,
            env=_cli_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


# -- HTTP endpoints ----------------------------------------------------------------------


def http_get(url: str) -> tuple[int | None, bytes]:
    """(status, body) of a GET; (None, b"") when nothing listens there (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus exposition text as {(sample name, sorted label pairs): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
