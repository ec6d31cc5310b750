"""Shared fixtures: one real embedded broker (Tansu) per test session; Kafka is never mocked.

Tests run in parallel processes (pytest-xdist: pyproject's addopts carry ``--numprocesses=3
--dist=worksteal``; ``-n 0`` runs them in this process, for a debugger). A "session" is then
one worker process: each has its own broker and S3 server, and tests keep apart by topic/key
prefix (unique_prefix) and tmp_path, never by a fixed port or path.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftstream.broker import EmbeddedBroker
from driftstream.transport import KafkaSettings


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Without pytest-xdist (``-p no:xdist``, or not installed), accept pyproject's
    ``--numprocesses`` and ``--dist`` and run every test in this process (a debugger works)."""
    if pluginmanager.has_plugin("xdist"):
        return
    group = parser.getgroup("xdist", "pytest-xdist is not loaded: these options are ignored")
    group.addoption("--numprocesses", dest="numprocesses", default=None)
    group.addoption("--dist", dest="dist", default="no")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One broker for the whole session (under xdist: per worker process); tests keep apart by
    topic prefix (unique_prefix)."""
    log_path: Path = tmp_path_factory.mktemp("broker") / "tansu.log"
    embedded = EmbeddedBroker(log_path=log_path)
    embedded.start()
    try:
        yield embedded
    finally:
        # Its data goes with it: no need to wait the ~5 s Tansu drains for connected clients.
        embedded.stop(timeout=1)


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker) -> KafkaSettings:
    """Settings for the session broker, with Tansu's fast (~1 s) consumer-group joins."""
    return KafkaSettings(bootstrap_servers=broker.bootstrap, fast_group_timeouts=True)


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    """A topic/group prefix no other test uses, e.g. "test-foo-1a2b3c4d."."""
    name = re.sub(r"[^a-zA-Z0-9_-]", "-", request.node.name)[:40]
    return f"{name}-{uuid.uuid4().hex[:8]}."


@pytest.fixture
def ended_pid() -> int:
    """The pid of a process that has exited and been reaped: no process has it now."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(child.stdout)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory):
    """One real S3 server (SeaweedFS) with one bucket for the session; tests keep apart by
    key prefix (unique_prefix). Its boto3 options: ``seaweedfs.client_options()``."""
    from tests.seaweedfs import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
