"""`driftstream dashboard`, checked as an operator sees it: a real browser (Playwright driving
Debian's chromium, no browser download) on the page served by the CLI, against the embedded
broker and a running worker (`driftstream run`), both separate processes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import orjson
import pytest

from driftstream.dashboard.model import DashboardModel
from driftstream.producers.sources import synthetic
from driftstream.transport import Producer
from tests.support import (
    DEADLINE_S,
    START_TS,
    create_topics,
    http_get,
    publish,
    read_all,
    run_argv,
    start_cli,
    tail,
    wait_until,
)

N = 3000
PARTITIONS = 2
CHECKPOINT_EVERY = 200  # records per checkpoint, so one metrics record per 200 records
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_partitioner_diagnosis_needs_a_large_share_on_several_partitions() -> None:
    model = DashboardModel()
    for p in (0, 1):
        model.add_metrics(p, {"partition": p, "n_events": 1000, "n_labels": 400, "metrics": {}})
    for i in range(300):
        model.add_dead_letter(i % 2, {"reason": "unknown_id", "source": {"partition": i % 2}})
    diagnosis = model.summary()["diagnosis"]
    assert diagnosis is not None and "partitioner=murmur2_random" in diagnosis
    assert "300 of 1,100 labels" in diagnosis

    few = DashboardModel()
    for p in (0, 1):
        few.add_metrics(p, {"partition": p, "n_events": 1000, "n_labels": 4000, "metrics": {}})
        few.add_dead_letter(p, {"reason": "unknown_id", "source": {"partition": p}})
    assert few.summary()["diagnosis"] is None


def test_feature_rows_merge_the_monitors_statistics_and_the_alarms() -> None:
    """The monitors' latest statistic per (test, feature) is the largest over the partitions'
    newest metrics records; alarms from the drift topic are counted on the same row."""
    model = DashboardModel()
    for p, stat in ((0, 0.05), (1, 0.31)):
        latest = [{"test": "ks", "feature": "x1", "statistic": stat}]
        latest.append({"test": "chi2", "feature": "colour", "statistic": 1.5})
        monitor = {"latest": latest, "largest": [], "active": []}
        if p == 1:
            monitor["largest"] = [
                {"test": "ks", "feature": "x1", "statistic": stat, "p_value": 1e-6, "effect": 0.31}
            ]
            monitor["active"] = [{"test": "ks", "feature": "x1"}]
        model.add_metrics(p, {"partition": p, "n_events": 10, "metrics": {}, "data_drift": monitor})
    model.add_drift(
        {"kind": "data", "test": "ks", "feature": "x1", "statistic": 0.3, "p_value": 1e-6,
         "effect": 0.3, "partition": 1, "event_ts": 5, "action": "reported"}
    )  # fmt: skip
    rows = {(r["test"], r["feature"]): r for r in model.view()["features"]}
    assert set(rows) == {("ks", "x1"), ("chi2", "colour")}
    x1 = rows[("ks", "x1")]
    assert (x1["statistic"], x1["p_value"], x1["effect"]) == (0.31, 1e-6, 0.31)
    assert (x1["active"], x1["alarms"], x1["partitions"], x1["action"]) == (
        True,
        1,
        [1],
        "reported",
    )
    colour = rows[("chi2", "colour")]
    assert (colour["statistic"], colour["active"], colour["alarms"]) == (1.5, False, 0)
    assert model.summary()["partitions"][1]["drifts"]["data"] == 1


def _value_when(fn, what: str, **kwargs):
    """`wait_until` ``fn()`` is true; returns that value."""
    got: list = [None]

    def cond():
        got[0] = fn()
        return got[0]

    wait_until(cond, what, **kwargs)
    return got[0]


def _summary(url: str) -> dict | None:
    status, body = http_get(url + "api/summary")
    return orjson.loads(body) if status == 200 else None


@pytest.mark.broker
@pytest.mark.e2e
def test_dashboard_live_in_chromium(kafka_settings, unique_prefix, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (bash .ci/setup installs it as root)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    group = unique_prefix + "group"
    dash_log = tmp_path / "dashboard.log"
    dash = start_cli(
        [
            "dashboard",
            "--bootstrap-servers",
            kafka_settings.bootstrap_servers,
            "--topic-prefix",
            unique_prefix,
            "--group",
            group,
            "--port",
            "0",
        ],
        dash_log,
    )
    worker_log = tmp_path / "worker.log"
    worker = None
    try:
        url = _value_when(
            lambda: (
                (m := re.search(r"dashboard at (http://\S+)", dash_log.read_text())) and m.group(1)
            ),
            "the dashboard's address",
            watch=[(dash, dash_log)],
        )
        # Started before the topics exist, it says so on the page, and waits for them.
        _value_when(
            lambda: "waiting for the topics" in ((_summary(url) or {}).get("problem") or ""),
            "the dashboard to say that the topics are missing",
            watch=[(dash, dash_log)],
        )
        topics = create_topics(kafka_settings, unique_prefix, PARTITIONS)
        worker = start_cli(
            run_argv(
                kafka_settings,
                unique_prefix,
                tmp_path / "state.sqlite",
                "--checkpoint-every",
                str(CHECKPOINT_EVERY),
                "--exit-when-idle",
                "3",
            ),
            worker_log,
        )
        samples = list(
            synthetic("sea", N, seed=3, drift_at=[N // 2], label_delay="20", start_ts=START_TS)
        )
        publish(kafka_settings, unique_prefix, samples, partitions=PARTITIONS)
        bad = Producer(kafka_settings)  # a label that is not JSON: one dead letter
        bad.send(topics["labels"], b"not json", partition=1)
        bad.flush()
        bad.close()
        assert worker.wait(timeout=DEADLINE_S * 2) == 0, tail(worker_log)

        # The figures of /api/summary are the worker's, as its last metrics records say.
        last = {m["partition"]: m for m in read_all(kafka_settings, topics["metrics"])}
        n_metrics = len(read_all(kafka_settings, topics["metrics"]))

        def caught_up():
            s = _summary(url)
            rows = s and {r["partition"]: r for r in s["partitions"]}
            ok = (
                rows
                and set(rows) == set(last)
                and all(
                    rows[p]["events"] == last[p]["n_events"]
                    and rows[p]["lag"] == {"events": 0, "labels": 0}
                    for p in rows
                )
            )
            return s if ok else None

        summary = _value_when(
            caught_up, "the dashboard to show the worker's figures", watch=[(dash, dash_log)]
        )
        rows = {r["partition"]: r for r in summary["partitions"]}
        assert summary["problem"] is None
        assert sum(r["events"] for r in rows.values()) == N == summary["overall"]["events"]
        assert sum(r["points"] for r in rows.values()) == n_metrics
        for p, r in rows.items():
            metrics = last[p]["metrics"]
            assert r["labels"] == last[p]["n_labels"]
            assert r["rolling"] == metrics["rolling_accuracy"]
            assert r["baseline"] == metrics["baseline_accuracy"]
            assert r["generation"] == last[p]["model"]["generation"]
            assert set(r["drifts"]) == {"concept_acted", "concept_reported", "data"}
        assert rows[1]["dead_letters"] == {"not_json": 1}
        assert summary["diagnosis"] is None

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1700})
                page.goto(url)
                page.wait_for_function("window.dashboardVersion !== undefined", timeout=30_000)
                # Its charts have data: the rolling metric has every metrics record.
                points = page.evaluate(
                    """() => document.getElementById('chart-metric').data
                        .filter(t => t.name.startsWith('partition')).map(t => t.x.length)"""
                )
                assert sum(points) == n_metrics and len(points) == PARTITIONS
                for chart in ("chart-generation", "chart-pending", "chart-delays", "chart-dead"):
                    n = page.evaluate(
                        f"""() => document.getElementById('{chart}').data
                            .reduce((a, t) => a + t.x.length, 0)"""
                    )
                    assert n > 0, chart
                rows_shown = page.locator("#summary tbody tr").count()
                assert rows_shown == PARTITIONS + 1  # and the overall row
                # The event stream is open (the first view may come from GET /api/view).
                page.wait_for_function(
                    "document.getElementById('status').textContent === 'live'", timeout=30_000
                )

                # A drift published while the page is open shows within 5 s, no reload.
                drift = {
                    "kind": "data",
                    "test": "ks",
                    "feature": "probe_feature",
                    "statistic": 0.4321,
                    "p_value": 1e-9,
                    "effect": 0.4321,
                    "partition": 1,
                    "event_ts": START_TS + 10 * N,
                    "n_seen": N,
                    "action": "reported",
                    "model_before": {"generation": 0, "updates": 1},
                    "model_after": {"generation": 0, "updates": 1},
                }
                producer = Producer(kafka_settings)
                producer.send(topics["drift"], orjson.dumps(drift), partition=1)
                producer.flush()
                producer.close()
                sent = time.monotonic()
                page.wait_for_function(
                    "document.getElementById('alerts').innerText.includes('probe_feature')",
                    timeout=5_000,
                )
                assert time.monotonic() - sent < 5
                feature_row = page.locator("#features tbody tr", has_text="probe_feature")
                assert "0.4321" in feature_row.inner_text()
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 20_000
            finally:
                browser.close()
        assert _summary(url)["partitions"][1]["drifts"]["data"] >= 1
    finally:
        for proc in (worker, dash):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    assert "Traceback" not in dash_log.read_text(), tail(dash_log)
