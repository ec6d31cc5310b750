"""`driftstream report`: the HTML page built from a state file, checked as a person sees it.

The state file is made without a broker: the offline learner (the worker's merge and learner)
runs over two SEA partitions with a concept change, and its state is saved with StateStore
every CHECKPOINT_EVERY records, as the worker does (summary as info, drift records with it).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest
from matplotlib import image as mpimg

from driftstream.cli import main
from driftstream.producers.sources import arrival_order, synthetic
from driftstream.report import build_report
from driftstream.state.checkpoints import StateStore
from driftstream.state.store import open_store
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.offline import run_offline
from driftstream.stream.records import DriftReport, Event, Label
from tests.support import START_TS

N = 3000
STEP_MS = 10
CHECKPOINT_EVERY = 100  # events per checkpoint: 30 points per partition
N_PLOTS = 5  # metric, generations, dead letters, label delay, pending joins


def save_partition(store: StateStore, partition: int, seed: int) -> None:
    """Run one partition offline in event-time chunks, checkpointing after each chunk."""
    samples = list(
        synthetic(
            "sea",
            N,
            seed=seed,
            drift_at=[N // 3, 2 * N // 3],
            label_delay="uniform:5:40",
            missing_labels=0.01,
            start_ts=START_TS,
            step=STEP_MS,
        )
    )
    events_s, labels_s = arrival_order(samples)
    events = [Event(s.id, s.x, s.ts, offset=i) for i, s in enumerate(events_s)]
    labels = [Label(s.id, s.y, s.label_ts) for s in labels_s]
    # Real bad input: a duplicate label and a label whose event never comes.
    labels.append(Label(labels_s[10].id, labels_s[10].y, labels_s[10].label_ts + 1))
    labels.append(Label("never-sent", True, START_TS + 50 * STEP_MS))
    labels.sort(key=lambda lb: lb.ts)
    learner = Learner(
        LearnerConfig(model="lr", drift_policy="reset", pending_ttl=2000), partition=partition
    )
    # What the worker counts for records it cannot decode, before they reach the learner.
    for _ in range(3 + partition):
        learner.count_rejection("not_json")
    e = lb = 0
    while e < len(events):
        end_ts = events[min(e + CHECKPOINT_EVERY, len(events) - 1)].ts
        last = e + CHECKPOINT_EVERY >= len(events)
        e2 = (
            len(events)
            if last
            else next(i for i in range(e, len(events)) if events[i].ts >= end_ts)
        )
        l2 = (
            len(labels)
            if last
            else next((i for i in range(lb, len(labels)) if labels[i].ts >= end_ts), len(labels))
        )
        _, outputs = run_offline(events[e:e2], labels[lb:l2], learner=learner)
        drifts = [o.to_wire() for o in outputs if isinstance(o, DriftReport)]
        e, lb = e2, l2
        store.save_checkpoint(
            partition,
            learner.to_bytes(),
            {"events": e, "labels": lb},
            learner.version,
            info=learner.summary(),
            drift_records=drifts,
        )


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "state.sqlite"
    with StateStore(path) as store:
        for partition in (0, 1):
            save_partition(store, partition, seed=partition + 1)
    return path


def images(page: str) -> list[np.ndarray]:
    """The inline PNGs of a page, decoded (RGB(A) floats in 0..1)."""
    return [
        mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")
        for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def page_of(state: Path) -> str:
    """The report page of an SQLite state file, through the store interface the CLI uses."""
    with open_store(str(state)) as store:
        return build_report(store)


def coloured(rgb: np.ndarray) -> np.ndarray:
    """Saturated pixels (plot lines, bars, markers), not white, grey or black."""
    rgb = rgb[..., :3].astype(float)
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25


def test_page_is_self_contained_with_all_sections(state: Path) -> None:
    with StateStore(state) as store:
        drifts = [d["record"] for d in store.drift_log()]
        newest = {p: store.latest(p).info for p in store.partitions()}
    page = page_of(state)

    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page, re.I)
    assert not re.search(r"url\(", page)  # no CSS fetches either
    imgs = images(page)
    assert len(imgs) == N_PLOTS
    for img in imgs:
        assert img.shape[0] > 150 and img.shape[1] > 600
        assert coloured(img).sum() > 300  # something was drawn, not just axes
    # A SEA concept change is detected and acted on.
    assert any(d["kind"] == "concept" and d["action"] == "reset" for d in drifts)
    # Summary table: one row per partition with the newest checkpoint's figures.
    for p, info in newest.items():
        row = re.search(rf"<tr><td>{p}</td><td>(\d+)</td><td>(g\d+\.u\d+)</td><td>(\d+)</td>", page)
        assert row and int(row.group(1)) == N // CHECKPOINT_EVERY
        assert int(row.group(3)) == info["n_events"] == N
        assert f"{info['metrics']['rolling_accuracy']:.4f}" in page
    # Dead letters as counted; the label delays the learners recorded are plotted.
    assert newest[1]["rejected"]["not_json"] == 4 and "duplicate_label" in newest[0]["rejected"]
    assert 'alt="label delay distribution"' in page
    assert sum(newest[0]["label_delays"].values()) == newest[0]["n_labels"]


def test_cli_writes_report_and_handles_empty_state(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "r.html"
    assert main(["report", "--state", str(state), "--out", str(out)]) == 0
    assert len(images(out.read_text())) == N_PLOTS

    empty = tmp_path / "empty.sqlite"
    StateStore(empty).close()
    assert main(["report", "--state", str(empty), "--out", str(tmp_path / "e.html")]) == 0
    assert "no checkpoints yet" in (tmp_path / "e.html").read_text()

    fresh = Learner(LearnerConfig(model="lr"))  # a partition that saw no record yet
    with StateStore(empty) as store:
        store.save_checkpoint(0, fresh.to_bytes(), {}, (0, 0), info=fresh.summary())
    assert "No labels joined yet" in page_of(empty)

    assert main(["report", "--state", str(tmp_path / "missing.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_renders_in_headless_chromium(state: Path, tmp_path: Path) -> None:
    """A person's view: Chromium (no network) screenshots the page; every plot shows up as a
    tall block of plot area with coloured lines or bars in it."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip(
            "chromium is not installed (bash .ci/setup installs it as root: "
            "apt-get install -y chromium)"
        )
    page = tmp_path / "report.html"
    page.write_text(page_of(state))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2600",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    rgb = mpimg.imread(shot)[..., :3]
    # Rows where most of the width is non-white: the plots' shaded axes areas. Text lines
    # are short runs of such rows; a plot is a run of at least 120 rows.
    wide = (rgb.min(axis=-1) < 0.97).sum(axis=1) > 0.4 * rgb.shape[1]
    runs, start = [], None
    for y, on in enumerate([*wide, False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            if y - start >= 120:
                runs.append((start, y))
            start = None
    assert len(runs) == N_PLOTS, runs
    colour = coloured(rgb)
    for top, bottom in runs:
        assert colour[top:bottom].sum() > 300, (top, bottom)


@pytest.mark.broker
@pytest.mark.e2e
def test_demo_report_has_a_point_per_metrics_record(
    kafka_settings, unique_prefix, tmp_path: Path
) -> None:
    """The demo (20,000 events) with its dashboard: the report's history is the metrics
    topic's, a point per record (at least 40), in the demo's own report too; the label
    delays are joined from the inputs; the dashboard showed every event."""
    from driftstream.demo import DemoOptions, run_demo
    from driftstream.report import delay_bins, load
    from tests.support import http_get, read_all, wait_until

    seen: dict = {}

    def hold(url: str) -> None:  # the demo is over; its broker and dashboard are still up
        def shows_every_event() -> bool:
            status, body = http_get(url + "api/summary")
            seen["summary"] = orjson.loads(body) if status == 200 else None
            return bool(seen["summary"]) and seen["summary"]["overall"]["events"] == 20_000

        wait_until(shows_every_event, "the dashboard to show the demo's 20,000 events")

    state = tmp_path / "demo.sqlite"
    demo_report = tmp_path / "demo-report.html"
    summary = run_demo(
        DemoOptions(
            state=str(state),
            plot=str(tmp_path / "demo.png"),
            report=str(demo_report),
            topic_prefix=unique_prefix,
            dashboard=True,
            dashboard_port=0,
        ),
        kafka_settings,
        io.StringIO(),
        hold=hold,
    )
    assert summary["predictions"] == 20_000 and summary["dashboard"].startswith("http://")
    records = read_all(kafka_settings, unique_prefix + "metrics")
    assert len(records) >= 40
    assert sum(r["points"] for r in seen["summary"]["partitions"]) == len(records)

    with open_store(str(state)) as store:
        from_topic = load(store, kafka_settings, unique_prefix)
        from_store = load(store)
        page = build_report(store, kafka_settings, unique_prefix)
    assert from_topic["source"] == unique_prefix + "metrics"
    assert [len(h) for h in from_topic["history"].values()] == [len(records)]
    assert [i["n_events"] for i in from_topic["history"][0]] == [r["n_events"] for r in records]
    # Without Kafka: the checkpoints the store keeps (the newest, and one per generation),
    # points of the same history.
    assert from_store["source"] == "checkpoints"
    kept = [i["n_events"] for i in from_store["history"][0]]
    published = [r["n_events"] for r in records]
    assert set(kept) <= set(published) and kept[-1] == published[-1]
    assert len(kept) < len(published)
    assert f"metrics topic {unique_prefix}metrics (partition 0: {len(records)})" in page
    # The demo wrote its report the same way, while its broker was up.
    assert f"(partition 0: {len(records)})" in demo_report.read_text()
    assert len(images(page)) == N_PLOTS - 1 and "No dead letters" in page  # none in the demo
    # Every label joined to its event: the demo's delay is 100 ms, one bin around it.
    delays = from_topic["delays"][0]
    assert len(delays) == 20_000 and set(delays) == {100}
    assert delay_bins(delays) == [99.5, 100.5]

    out = tmp_path / "report.html"
    argv = ["report", "--state", str(state), "--out", str(out), "--topic-prefix", unique_prefix]
    assert main([*argv, "--bootstrap-servers", kafka_settings.bootstrap_servers]) == 0
    assert f"(partition 0: {len(records)})" in out.read_text()
