"""Shared fixtures: one real embedded broker (Tansu) per test session; Kafka is never mocked."""

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


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One broker for the whole session; tests keep apart by topic prefix (unique_prefix)."""
    log_path: Path = tmp_path_factory.mktemp("broker") / "tansu.log"
    embedded = EmbeddedBroker(log_path=log_path)
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


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
