"""`driftstream report`: one self-contained HTML page about a checkpoint store, for operators.

The history comes from the metrics topic when Kafka is given (``--bootstrap-servers``): one
point per metrics record, i.e. the summary a worker publishes for a partition at each of its
checkpoints, all of them, including those the store has since pruned. Without Kafka it comes
from the checkpoints the store still keeps (``--keep-checkpoints`` per partition). The label
delay histogram then has bins fitted to the delays themselves (numpy's "auto" bins), joined
from the newest `MAX_DELAY_RECORDS` events and labels of each partition; without Kafka it shows
the learner's power-of-two delay buckets. The drift log, model versions and the summary table
come from the store (any `CheckpointStore`: an SQLite file, the ``kafka:`` or ``s3://`` store).
The plots are inline PNGs and the page has no scripts and no external links, so it opens
anywhere, offline, and can be mailed.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftstream.state.store import CheckpointStore

__all__ = ["build_report", "load", "write_report"]

EPOCH_MS_FROM = 10**11  # event times above this are epoch-ms (after 1973), else plain units
NO_CLOCK = -(1 << 61)  # the learner's clock starts at -(1 << 62)
PRIMARY = ("accuracy", "mae")  # headline metric by task, as stream.metrics.MetricSet.primary
MAX_DELAY_RECORDS = 200_000  # newest events and labels read per partition for the delays
MAX_BINS = 100  # of the label delay histogram ("auto" bins, at most this many)

CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td.l { text-align: left; }
p.note { color: #555; font-size: 13px; }
img { display: block; max-width: 100%; }
"""


def _primary(metrics: dict) -> str | None:
    for name in PRIMARY:
        if f"rolling_{name}" in metrics:
            return name
    return None


def _x_label(values: list[int]) -> tuple[str, bool]:
    """Event time as dates if it looks like epoch-ms, else as the stream's own units."""
    is_ms = bool(values) and min(values) > EPOCH_MS_FROM
    return ("event time (UTC)" if is_ms else "event time"), is_ms


def _xs(values: list[int], is_ms: bool) -> list:
    if not is_ms:
        return values
    return [datetime.fromtimestamp(v / 1000, tz=UTC).replace(tzinfo=None) for v in values]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(title: str, width: float = 11, height: float = 3.4):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_facecolor("#f7f9fc")
    ax.grid(True, color="#dde3ea", linewidth=0.6)
    return fig, ax


def _legend(ax, **kwargs) -> None:
    if ax.get_legend_handles_labels()[0]:  # nothing plotted yet: no empty legend box
        ax.legend(**kwargs)


def _colour(partition: int) -> str:
    return f"C{partition % 10}"


def load(store: CheckpointStore, settings=None, prefix: str = "") -> dict[str, Any]:
    """All the report needs, grouped by partition: from the store, and with Kafka
    ``settings`` the metrics history and raw label delays from the topics under ``prefix``.

    ``history``: {partition: [summary, ...]} oldest first, one per metrics record (or per
    kept checkpoint without Kafka); ``source``: which of the two it is.
    """
    checkpoints = store.checkpoints()
    drifts = store.drift_log()
    versions = store.model_versions()
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for row in checkpoints:
        by_partition[row["partition"]].append(row)
    data: dict[str, Any] = {
        "checkpoints": dict(by_partition),
        "drifts": [d["record"] for d in drifts],
        "versions": versions,
        "history": {p: [r["info"] for r in rows] for p, rows in by_partition.items()},
        "source": "checkpoints",
        "delays": None,
    }
    if settings is not None:
        from driftstream.transport import topic_names

        topics = topic_names(prefix)
        history = metrics_history(settings, topics["metrics"])
        if history:
            data["history"], data["source"] = history, topics["metrics"]
        data["delays"] = label_delays(settings, topics["events"], topics["labels"])
    return data


def metrics_history(settings, topic: str) -> dict[int, list[dict]]:
    """{partition: [metrics record, ...]} in the order the workers published them."""
    import orjson

    from driftstream.consumers.reader import read_topic

    out: dict[int, list[dict]] = defaultdict(list)
    for r in read_topic(settings, topic):
        try:
            value = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and "clock" in value:
            out[int(value.get("partition", r.partition))].append(value)
    return dict(out)


def label_delays(
    settings, events: str, labels: str, limit: int = MAX_DELAY_RECORDS
) -> dict[int, list[int]]:
    """{partition: [label time - event time, ...]} for the labels among the newest ``limit``
    records of each labels partition whose event is among the newest ``limit`` events."""
    import orjson

    from driftstream.consumers.reader import read_range
    from driftstream.transport import Consumer

    consumer = Consumer(settings)
    try:
        partitions = consumer.partitions_for(events)
    finally:
        consumer.close()
    ends = _ends(settings, [(t, p) for t in (events, labels) for p in partitions])
    out: dict[int, list[int]] = {}
    for p in partitions:
        times: dict[str, int] = {}
        for topic, into in ((events, "event"), (labels, "label")):
            end = ends.get((topic, p))
            if not end:
                continue
            for r in read_range(settings, topic, p, max(0, end - limit), end):
                try:
                    v = orjson.loads(r.value)
                    ident, ts = v["id"], v["ts"]
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    continue  # the worker dead-letters these
                if not isinstance(ts, int) or isinstance(ts, bool):
                    continue
                if into == "event":
                    times[ident] = ts
                elif ident in times:
                    out.setdefault(p, []).append(ts - times.pop(ident))
    return out


def _ends(settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """End offsets from a fetch (Tansu's ListOffsets answer is unreliable)."""
    import time

    from driftstream.transport import Consumer

    consumer = Consumer(settings, max_poll_records=1)
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(tps)
        deadline = time.monotonic() + 10
        highs: dict[tuple[str, int], int] = {}
        while time.monotonic() < deadline and len(highs) < len(tps):
            consumer.poll(100, max_records=1)
            highs = {tp: h for tp in tps if (h := consumer.highwater(*tp)) is not None}
        return highs
    finally:
        consumer.close()


def _points(data: dict, key) -> dict[int, list[tuple[int, Any]]]:
    """{partition: [(event time, key(summary)), ...]} over the history, None values left out."""
    out = {}
    for p, infos in sorted(data["history"].items()):
        pts = [(i["clock"], key(i)) for i in infos if i.get("clock", NO_CLOCK) > NO_CLOCK]
        out[p] = [(x, y) for x, y in pts if y is not None]
    return out


def _metric_plot(data: dict, metric: str, is_ms: bool, xlabel: str) -> str:
    fig, ax = _figure(
        f"rolling {metric} per partition (dashed: the no-change baseline), with concept drifts"
    )
    rolling = _points(data, lambda i: i.get("metrics", {}).get(f"rolling_{metric}"))
    baseline = _points(data, lambda i: i.get("metrics", {}).get(f"baseline_{metric}"))
    for p, pts in rolling.items():
        if pts:
            ax.plot(
                _xs([x for x, _ in pts], is_ms),
                [y for _, y in pts],
                marker=".",
                markersize=3,
                linewidth=1.4,
                color=_colour(p),
                label=f"partition {p}",
            )
        base = baseline.get(p)
        if base:
            ax.plot(
                _xs([x for x, _ in base], is_ms),
                [y for _, y in base],
                linestyle="--",
                linewidth=0.9,
                color=_colour(p),
                alpha=0.7,
            )
    acted = False
    for d in data["drifts"]:
        if d.get("kind") != "concept":
            continue
        act = not str(d.get("action", "none")).startswith("none")
        acted |= act
        ax.axvline(
            _xs([d["event_ts"]], is_ms)[0],
            color=_colour(d["partition"]),
            linestyle="-" if act else ":",
            linewidth=1.6,
            alpha=0.8,
        )
    data_drifts = [d for d in data["drifts"] if d.get("kind") == "data"]
    if data_drifts:
        ax.plot(
            _xs([d["event_ts"] for d in data_drifts], is_ms),
            [0.02] * len(data_drifts),
            "|",
            markersize=10,
            color="#555",
            transform=ax.get_xaxis_transform(),
            label="data drift (a feature)",
        )
    ax.set_xlabel(
        xlabel
        + ("; solid line: concept drift acted on, dotted: reported only" if data["drifts"] else "")
    )
    ax.set_ylabel(f"rolling {metric}")
    _legend(ax, fontsize=8, loc="best")
    return _png(fig)


def _generation_plot(data: dict, is_ms: bool, xlabel: str) -> str:
    """Generation per partition over event time: the checkpoints, plus each drift record's
    model_after at its own event time (exact change points between checkpoints)."""
    fig, ax = _figure(
        "model generation per partition (changes when a drift policy replaces the model)",
        height=2.8,
    )
    history = _points(data, lambda i: (i.get("model") or {}).get("generation"))
    for p in sorted(set(data["checkpoints"]) | set(history)):
        pts = list(history.get(p, []))
        pts += [
            (d["event_ts"], d["model_after"]["generation"])
            for d in data["drifts"]
            if d["partition"] == p and d.get("kind") == "concept" and d.get("model_after")
        ]
        pts += [
            (v["event_ts"], v["generation"])
            for v in data["versions"]
            if v["partition"] == p and v.get("event_ts") is not None
        ]
        pts.sort()
        if pts:
            ax.step(
                _xs([x for x, _ in pts], is_ms),
                [g for _, g in pts],
                where="post",
                color=_colour(p),
                linewidth=1.6,
                label=f"partition {p}",
            )
    top = max(
        [g for rows in data["checkpoints"].values() for g in (r["generation"] for r in rows)]
        + [g for pts in history.values() for _, g in pts]
        + [1]
    )
    ax.set_ylim(-0.5, top + 0.5)  # whole generations; a flat line at 0 is not a 0.04 zoom
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("generation")
    _legend(ax, fontsize=8, loc="upper left")
    return _png(fig)


def _deadletter_plot(rejected: dict[int, dict[str, int]]) -> str:
    fig, ax = _figure(
        "dead letters by reason (as of each partition's newest checkpoint)", height=3.0
    )
    reasons = sorted({r for counts in rejected.values() for r in counts})
    bottom = [0] * len(reasons)
    for p, counts in sorted(rejected.items()):
        heights = [counts.get(r, 0) for r in reasons]
        ax.bar(reasons, heights, bottom=bottom, color=_colour(p), label=f"partition {p}")
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel("records")
    ax.tick_params(axis="x", labelsize=8)
    _legend(ax, fontsize=8)
    return _png(fig)


def _delay_plot(delays: dict, is_ms: bool) -> str:
    """Joined labels by event-time delay, in the learner's power-of-two buckets."""
    fig, ax = _figure("label delay (event time from event to label), all labels joined", height=2.8)
    bounds = sorted({int(b) for counts in delays.values() for b in counts})
    names = [f"≤{b}" for b in bounds]
    bottom = [0] * len(bounds)
    for p, counts in sorted(delays.items()):
        heights = [counts.get(str(b), 0) for b in bounds]
        ax.bar(names, heights, bottom=bottom, color=_colour(p), label=f"partition {p}")
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xlabel("delay " + ("(ms)" if is_ms else "(event-time units)"))
    ax.set_ylabel("labels")
    ax.tick_params(axis="x", labelsize=8)
    _legend(ax, fontsize=8)
    return _png(fig)


def delay_bins(delays: list[int]) -> list[float]:
    """Bin edges fitted to the delays: numpy's "auto" rule (the larger of Sturges' and the
    Freedman-Diaconis bins), at most `MAX_BINS` bins.

    >>> delay_bins([100] * 50)  # one value: one bin around it
    [99.5, 100.5]
    >>> len(delay_bins(list(range(1000)))) - 1  # Sturges: log2(1000) + 1
    11
    """
    import numpy as np

    edges = np.histogram_bin_edges(delays, bins="auto")
    if len(edges) - 1 > MAX_BINS:
        edges = np.histogram_bin_edges(delays, bins=MAX_BINS)
    return [float(e) for e in edges]


def _delay_histogram(delays: dict[int, list[int]], is_ms: bool) -> str:
    """Joined labels by event-time delay, in bins fitted to the delays, stacked by partition."""
    import numpy as np

    every = [d for values in delays.values() for d in values]
    edges = delay_bins(every)
    bins = len(edges) - 1
    unit = "ms" if is_ms else "event-time units"
    if min(every) == max(every):
        title = f"label delay: all {len(every):,} labels joined {every[0]} {unit} after their event"
    else:
        title = (
            f"label delay (event time from event to label), {len(every):,} labels joined, "
            f"{bins} bin{'s' if bins > 1 else ''} fitted to the data"
        )
    fig, ax = _figure(title, height=2.8)
    widths = np.diff(edges)
    bottom = np.zeros(len(widths))
    for p, values in sorted(delays.items()):
        counts, _ = np.histogram(values, bins=edges)
        ax.bar(
            edges[:-1],
            counts,
            width=widths,
            bottom=bottom,
            align="edge",
            color=_colour(p),
            edgecolor="white",
            linewidth=0.4,
            label=f"partition {p}",
        )
        bottom += counts
    ax.set_xlabel("delay " + ("(ms)" if is_ms else "(event-time units)"))
    ax.set_ylabel("labels")
    _legend(ax, fontsize=8)
    return _png(fig)


def _pending_plot(data: dict, is_ms: bool, xlabel: str) -> str:
    fig, ax = _figure("events waiting for their label (pending joins)", height=2.8)
    for p, pts in _points(data, lambda i: i.get("pending")).items():
        if pts:
            ax.plot(
                _xs([x for x, _ in pts], is_ms),
                [y for _, y in pts],
                color=_colour(p),
                linewidth=1.4,
                label=f"partition {p}",
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pending")
    _legend(ax, fontsize=8)
    return _png(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _summary_table(data: dict, metric: str | None, is_ms: bool) -> str:
    cols = ["partition", "checkpoints", "model", "events", "labels", "pending"]
    if metric:
        cols += [metric, f"rolling {metric}", f"baseline {metric}"]
    cols += [
        "concept drifts",
        "data drifts",
        "dead letters",
        "last checkpoint (UTC)",
        "last concept drift",
    ]
    rows = []
    for p, cps in sorted(data["checkpoints"].items()):
        last = cps[-1]
        info = last["info"]
        m = info.get("metrics", {})
        concept = [d for d in data["drifts"] if d["partition"] == p and d.get("kind") == "concept"]
        last_drift = None
        if concept:
            ts = concept[-1]["event_ts"]
            last_drift = (
                _xs([ts], True)[0].isoformat(sep=" ", timespec="seconds") if is_ms else f"t={ts}"
            ) + f" ({concept[-1].get('action')})"
        row = [
            p,
            len(cps),
            f"g{last['generation']}.u{last['updates']}",
            info.get("n_events"),
            info.get("n_labels"),
            info.get("pending"),
        ]
        if metric:
            row += [m.get(metric), m.get(f"rolling_{metric}"), m.get(f"baseline_{metric}")]
        row += [
            info.get("drifts", {}).get("concept"),
            info.get("drifts", {}).get("data"),
            sum(info.get("rejected", {}).values()),
            datetime.fromtimestamp(last["created_at"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"),
            last_drift,
        ]
        rows.append(row)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=l' if i >= len(cols) - 2 else ''}>{html.escape(_fmt(v))}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def build_report(store: CheckpointStore, settings=None, prefix: str = "") -> str:
    """The HTML page for a store (a string; nothing is written). With Kafka ``settings``,
    the history and label delays come from the topics under ``prefix`` (`load`)."""
    data = load(store, settings, prefix)
    title = f"driftstream report: {store.name}"
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    n_points = {p: len(infos) for p, infos in sorted(data["history"].items())}
    if data["source"] == "checkpoints":
        resolution = (
            "One data point per checkpoint the store keeps (give --bootstrap-servers for "
            "one per metrics record: every checkpoint, pruned or not)"
        )
    else:
        resolution = f"One data point per record of the metrics topic {data['source']}"
    points = ", ".join(f"partition {p}: {n}" for p, n in n_points.items())
    parts.append(
        f"<p class=note>State {html.escape(store.name)}, "
        f"report generated {generated} UTC. {html.escape(resolution)}"
        f"{html.escape(f' ({points})' if points else '')}.</p>"
    )
    if not data["checkpoints"] and not data["history"]:
        parts.append(
            "<p>The store has no checkpoints yet: no worker has saved any "
            "partition.</p></body></html>"
        )
        return "".join(parts)
    infos = [i for history in data["history"].values() for i in history]
    metric = next((_primary(i["metrics"]) for i in infos if _primary(i.get("metrics", {}))), None)
    xlabel, is_ms = _x_label([i["clock"] for i in infos if i.get("clock", NO_CLOCK) > NO_CLOCK])

    parts.append("<h2>Partitions (newest checkpoint)</h2>")
    parts.append(_summary_table(data, metric, is_ms))

    parts.append("<h2>Rolling metric and drifts</h2>")
    if metric:
        parts.append(_img(_metric_plot(data, metric, is_ms, xlabel), f"rolling {metric}"))
    else:
        parts.append("<p>No labels joined yet, so no metric to plot.</p>")

    parts.append("<h2>Model generations</h2>")
    parts.append(_img(_generation_plot(data, is_ms, xlabel), "model generations"))

    parts.append("<h2>Dead letters</h2>")
    rejected = {p: rows[-1]["info"].get("rejected", {}) for p, rows in data["checkpoints"].items()}
    if any(rejected.values()):
        parts.append(_img(_deadletter_plot(rejected), "dead letters by reason"))
    else:
        parts.append("<p>No dead letters: every record was decoded, validated and joined.</p>")

    parts.append("<h2>Label delay</h2>")
    delays = {
        p: rows[-1]["info"].get("label_delays", {}) for p, rows in data["checkpoints"].items()
    }
    if data["delays"] and any(data["delays"].values()):
        parts.append(_img(_delay_histogram(data["delays"], is_ms), "label delay distribution"))
    elif any(delays.values()):
        parts.append(_img(_delay_plot(delays, is_ms), "label delay distribution"))
    else:
        parts.append("<p>No label joined yet: no delay to show.</p>")
    parts.append(
        "<p class=note>Pending joins: a growing count means labels "
        "arrive later than before, or not at all (see <code>--pending-ttl</code>).</p>"
    )
    parts.append(_img(_pending_plot(data, is_ms, xlabel), "pending joins"))
    parts.append("</body></html>")
    return "".join(parts)


def write_report(store: CheckpointStore, out: str | Path, settings=None, prefix: str = "") -> Path:
    """Write the page for ``store`` to ``out``; returns the path written."""
    page = build_report(store, settings, prefix)
    out = Path(out)
    out.write_text(page, encoding="utf-8")
    return out
