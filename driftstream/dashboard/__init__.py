"""`driftstream dashboard`: a live web page about the output topics, for operators.

A background thread (`reader.TopicFollower`) follows the metrics, drift, dead-letter and
predictions topics and the inputs' lag through the Kafka adapter into an in-memory,
bounded `model.DashboardModel`; a Starlette app (`app.create_app`) serves the page, its
assets (Plotly's bundled JS: no CDN), ``/api/summary`` and server-sent events that update
the page without reloading. `server.Dashboard` runs both (docs/design.md, "Dashboard").
"""

from driftstream.dashboard.model import DashboardModel, partitioner_diagnosis
from driftstream.dashboard.server import Dashboard, serve

__all__ = ["Dashboard", "DashboardModel", "partitioner_diagnosis", "serve"]
