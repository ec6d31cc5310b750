"""`driftstream dashboard`: the topic reader and the web server, started and stopped together.

`Dashboard` runs uvicorn in a thread of its own (the demo serves the page while its worker
runs); `serve` runs it in the calling thread until Ctrl-C/SIGTERM, for the CLI.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import uvicorn

from driftstream.dashboard.app import create_app
from driftstream.dashboard.model import DashboardModel
from driftstream.dashboard.reader import TopicFollower
from driftstream.transport import KafkaSettings

__all__ = ["Dashboard", "DashboardOptions", "serve"]

log = logging.getLogger(__name__)


@dataclass
class DashboardOptions:
    """Where the page is served (`driftstream dashboard --host/--port`)."""

    host: str = "127.0.0.1"  # loopback: the page has no login; put a proxy in front to share it
    port: int = 8050


class Dashboard:
    """The dashboard of the topics under ``prefix`` and the worker group ``group``."""

    def __init__(
        self,
        settings: KafkaSettings,
        prefix: str = "",
        group: str = "driftstream",
        host: str = "127.0.0.1",
        port: int = 8050,
    ):
        self.model = DashboardModel()
        self.reader = TopicFollower(settings, prefix, group, self.model)
        config = uvicorn.Config(
            create_app(self.model),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,  # open event streams never end by themselves
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address (after `start`, with the port actually bound)."""
        servers = getattr(self.server, "servers", None) or []
        port = self.server.config.port
        for s in servers:
            for sock in s.sockets:
                port = sock.getsockname()[1]
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{port}/"

    def start(self, timeout: float = 10.0) -> Dashboard:
        """Serve in a background thread; returns once the port is bound."""
        self.reader.start()
        self._thread = threading.Thread(
            target=self.server.run, name="driftstream-dashboard", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise OSError(
                    f"cannot serve the dashboard on {self.host}:{self.server.config.port} "
                    "(is the port in use?)"
                )
            if time.monotonic() > deadline:
                raise OSError("the dashboard's web server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.reader.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.reader.join(timeout=5)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(settings: KafkaSettings, prefix: str, group: str, host: str, port: int, out=None) -> int:
    """Run until Ctrl-C/SIGTERM (uvicorn handles both in the main thread)."""
    dash = Dashboard(settings, prefix, group, host, port)
    dash.reader.start()
    printed = threading.Thread(target=_announce, args=(dash, out), daemon=True)
    printed.start()
    try:
        dash.server.run()
    finally:
        dash.reader.stop()
        dash.reader.join(timeout=5)
    return 0 if dash.server.started else 2


def _announce(dash: Dashboard, out) -> None:
    deadline = time.monotonic() + 10
    while not dash.server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if dash.server.started:
        print(f"dashboard at {dash.url} (Ctrl-C to stop)", file=out, flush=True)
