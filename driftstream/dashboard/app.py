"""The dashboard's web side: a Starlette app serving the page, its assets and live updates.

Routes: ``/`` the page; ``/static/...`` its own script and style (package data) and
Plotly's ``plotly.min.js`` from the installed ``plotly`` package (no CDN: it works in a
closed network); ``/api/summary`` the figures the page shows, as JSON, for scripts;
``/api/view`` everything the page draws; ``/events`` server-sent events, one ``view`` each
time the model changes (checked every `PUSH_EVERY_S`), so the page updates without reloading.

>>> sorted(r.path for r in create_app(DashboardModel()).routes)
['/', '/api/summary', '/api/view', '/events', '/static', '/static/plotly.min.js']
"""

from __future__ import annotations

import asyncio
from importlib import resources

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from driftstream.dashboard.model import DashboardModel

__all__ = ["create_app"]

PUSH_EVERY_S = 0.5
KEEPALIVE_S = 15.0


def _json(value) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


def _plotly_js() -> str:
    """Path of the plotly.min.js bundled in the plotly package."""
    return str(resources.files("plotly") / "package_data" / "plotly.min.js")


def create_app(model: DashboardModel) -> Starlette:
    static = resources.files("driftstream.dashboard") / "static"

    async def index(request: Request) -> Response:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    async def plotly(request: Request) -> Response:
        return FileResponse(_plotly_js(), media_type="text/javascript")

    async def summary(request: Request) -> Response:
        return _json(model.summary())

    async def view(request: Request) -> Response:
        return _json(model.view())

    async def events(request: Request) -> Response:
        async def stream():
            seen = None
            quiet = 0.0
            while not await request.is_disconnected():
                if model.version != seen:
                    seen = model.version
                    quiet = 0.0
                    yield b"data: " + orjson.dumps(model.view()) + b"\n\n"
                elif quiet >= KEEPALIVE_S:  # keeps proxies from closing an idle stream
                    quiet = 0.0
                    yield b": keep-alive\n\n"
                await asyncio.sleep(PUSH_EVERY_S)
                quiet += PUSH_EVERY_S

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/summary", summary),
            Route("/api/view", view),
            Route("/events", events),
            Route("/static/plotly.min.js", plotly),
            Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
        ]
    )
