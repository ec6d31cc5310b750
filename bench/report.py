"""The throughput bench's output: the tables, their notes, and the ``--json`` summary.

`report` turns the measurements' results (one dict, as ``bench.throughput`` collects them)
into the printed tables; `json_summary` is the object ``--json`` prints as the last line.

>>> print(table([["a", "1"], ["bb", "22"]], ["name", "value"]))
name  value
----  -----
a         1
bb       22
>>> fmt(None), fmt(1234.5), fmt(0.123, ".2f")
('—', '1,234', '0.12')
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

from bench.load import FETCH_MAX_WAIT_MS, LABEL_DELAY
from bench.procs import ROOT
from bench.runs import lookup, ratio
from driftstream.consumers.model_process import FORK_STATE_ABOVE

__all__ = ["fmt", "json_summary", "machine_line", "report", "run_notes", "table", "title"]


def fmt(v, spec: str = ",.0f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and v != v:
        return "nan"
    return format(v, spec)


def table(rows: list[list[str]], header: list[str], right_from: int = 1) -> str:
    all_rows = [header] + rows
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    out = []
    for k, r in enumerate(all_rows):
        out.append(
            "  ".join(
                c.rjust(w) if i >= right_from else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def report(res: dict) -> str:
    """The printed report: the main table, then each section that has results, then the
    notes."""
    lines = [f"driftstream throughput bench — {res['title']}", "", _main_table(res)]
    for section in (
        _workers_4p_lines,
        _codec_lines,
        _latency_lines,
        _memory_lines,
        _ratio_lines,
        _every_run_lines,
    ):
        lines += section(res)
    lines += ["", *res["notes"]]
    return "\n".join(lines)


def _main_table(res: dict) -> str:
    """One row per measurement: events, seconds, events/s, CPU."""
    header = [
        "measurement",
        "model",
        "parts",
        "events",
        "seconds",
        "events/s",
        "CPU s",
        "CPU µs/event",
        "note",
    ]
    rows = []
    # with --kafka-client confluent the kafka-python measurements are not run, not failed
    absent, why = ("FAILED", "see notes")
    if res.get("kafka_client") == "confluent":
        absent, why = ("not run", "--kafka-client confluent")

    def row(name, model, parts, r, note="", cpu_key="cpu_s"):
        if not r:
            rows.append([name, model, parts, "", "", absent, "", "", why])
            return
        cpu = r.get(cpu_key)
        rows.append(
            [
                name,
                model,
                parts,
                fmt(r["events"]),
                fmt(r["seconds"], ".2f"),
                fmt(r["events_per_s"]),
                fmt(cpu, ".2f"),
                fmt(cpu / r["events"] * 1e6 if cpu is not None else None, ".0f"),
                note,
            ]
        )

    for m in res["models"]:
        row("River in-process (simulate_qa)", m, "—", res["river"][m], "the limit")
    for m in res["models"]:
        row(
            "driftstream learner offline",
            m,
            "—",
            res["learner_offline"][m],
            "merge + learner, no Kafka, no codec",
        )
    c = res.get("ceiling")
    if c:
        row(
            "Kafka I/O ceiling: read 2, write 1",
            "—",
            "1",
            c,
            "no model, no decode; send() per record",
        )
        n = c["events"]
        rows.append(
            [
                "  consume only (event + label)",
                "—",
                "1",
                fmt(n),
                "",
                fmt(c["consume_only_records_per_s"] / 2),
                fmt(c["consume_only_cpu_s"], ".2f"),
                fmt(c["consume_only_cpu_s"] / n * 1e6, ".0f"),
                f"{fmt(c['consume_only_records_per_s'])} records/s",
            ]
        )
        rows.append(
            [
                "  produce only (1 prediction)",
                "—",
                "1",
                fmt(n),
                "",
                fmt(c["produce_only_msgs_per_s"]),
                fmt(c["produce_only_cpu_s"], ".2f"),
                fmt(c["produce_only_cpu_s"] / n * 1e6, ".0f"),
                f"{c['payload_bytes']} B values",
            ]
        )
    if res.get("ceiling_send_batch"):
        row(
            "Kafka I/O ceiling, send_batch per poll",
            "—",
            "1",
            res["ceiling_send_batch"],
            "as above, predictions written as the worker writes them",
        )
    for m in res["models"]:
        w = res.get("worker_1p", {}).get(m)
        row(
            "driftstream worker",
            m,
            "1",
            w,
            f"CPU s: I/O process {fmt(w['io_process_cpu_s'], '.2f')} (main thread "
            f"{fmt(w['main_thread_cpu_s'], '.2f')}), model process "
            f"{fmt(w['model_process_cpu_s'], '.2f')}"
            if w
            else "",
        )
    for m in res["models"]:
        w = res.get("worker_1p_inproc", {}).get(m)
        row(
            "  same, --model-process off",
            m,
            "1",
            w,
            f"one process; main thread {fmt(w['main_thread_cpu_s'], '.2f')} CPU s" if w else "",
        )
    for m in res["models"]:
        w = res.get("worker_4p", {}).get(m)
        if not w:
            rows.append(
                [
                    "driftstream, 2 workers (pred-ts span)",
                    m,
                    "4",
                    "",
                    "",
                    absent,
                    "",
                    "",
                    why,
                ]
            )
        else:
            rows.append(
                [
                    "driftstream, 2 workers (pred-ts span)",
                    m,
                    "4",
                    fmt(w["events"]),
                    fmt(w["pred_ts_span_s"], ".2f"),
                    fmt(w["events_per_s"]),
                    "",
                    "",
                    f"sum of per-worker rates {fmt(w['sum_of_worker_rates'])}/s; "
                    f"launch -> both exited {fmt(w['launch_to_exit_s'], '.1f')} s",
                ]
            )
    for m in res["models"]:
        r = res.get("naive", {}).get(m)
        row(
            "naive peer: commit per record",
            m,
            "1",
            r,
            f"{fmt(r['labels_before_event'])} labels read before their event" if r else "",
        )
    return table(rows, header, right_from=2)


def _workers_4p_lines(res: dict) -> list[str]:
    """The 2-worker run, per worker."""
    lines: list[str] = []
    w4 = {m: w for m, w in res.get("worker_4p", {}).items() if w}
    if w4:
        lines += [
            "",
            "2 workers on 4 partitions, per worker (partitions of its first assignment;"
            " CPU and RSS of the whole process, start-up included)",
        ]
        rows = []
        for m, w in w4.items():
            for k, d in enumerate(w["workers_detail"]):
                rows.append(
                    [
                        m,
                        str(k),
                        " ".join(d["assignments"]),
                        fmt(d.get("events")),
                        fmt(d.get("span_s"), ".2f"),
                        fmt(d.get("events_per_s")),
                        fmt(d["cpu_s"], ".1f"),
                        fmt(d["peak_rss_mb"], ".0f"),
                        fmt(d["checkpoints"]),
                    ]
                )
            rows.append(
                [
                    m,
                    "",
                    f"start stagger {fmt(w['start_stagger_s'], '.2f')} s",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
        lines.append(
            table(
                rows,
                [
                    "model",
                    "worker",
                    "assignments",
                    "events",
                    "span s",
                    "events/s",
                    "CPU s",
                    "peak RSS MB",
                    "checkpoints",
                ],
                right_from=3,
            )
        )
    return lines


def _codec_lines(res: dict) -> list[str]:
    """The codec's cost per event, one line."""
    lines: list[str] = []
    co = res.get("codec")
    if co:
        lines += [
            "",
            f"codec per event: decode event {co['decode_event_us']:.1f} µs + decode "
            f"label {co['decode_label_us']:.1f} µs + encode prediction "
            f"{co['encode_prediction_us']:.1f} µs = {co['total_us']:.1f} µs; sizes "
            f"event {co['event_bytes']:.0f} B, label {co['label_bytes']:.0f} B, "
            f"prediction {co['prediction_bytes']:.0f} B",
        ]
    return lines


def _latency_lines(res: dict) -> list[str]:
    """The latency runs, with their p99 and broker CPU second by second."""
    lines: list[str] = []
    lat = res.get("latency")
    if lat:
        lines += [
            "",
            "latency, event publish -> prediction publish (CreateTime to CreateTime), "
            "1 partition, 1 worker, lr",
        ]
        rows = []
        for name, r in lat.items():
            if not r:
                rows.append([name, "FAILED"] + [""] * 14)
                continue
            cpu = r["steady_cpu"]
            rows.append(
                [
                    name,
                    fmt(r["offered_events_per_s"]),
                    fmt(r["tick_ms"], ".0f"),
                    fmt(r["achieved_events_per_s"]),
                    fmt(r["window_s"], ".1f"),
                    fmt(r["window_events"]),
                    fmt(r["p50_ms"], ".0f"),
                    fmt(r["p95_ms"], ".0f"),
                    fmt(r["p99_ms"], ".0f"),
                    fmt(r["max_ms"], ".0f"),
                    fmt(r["missing_predictions"]),
                ]
                + [
                    fmt(None if cpu[k] is None else cpu[k] * 100, ".0f")
                    for k in ("worker_io", "worker_model", "broker", "load_generator")
                ]
                + [fmt(r["publisher_max_delay_ms"], ".0f")]
            )
        lines.append(
            table(
                rows,
                [
                    "load",
                    "offered ev/s",
                    "batch ms",
                    "achieved ev/s",
                    "window s",
                    "events",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "missing",
                    "I/O CPU %",
                    "model CPU %",
                    "broker CPU %",
                    "load CPU %",
                    "load delay ms",
                ],
            )
        )
        lines.append(
            "(CPU % over the steady window: worker I/O process, model process, "
            "broker, load generator; batch ms: the load generator sends what is due "
            "this often; load delay: the most a record waited past its "
            'scheduled time to be sent; "I/O ceiling": the Kafka I/O ceiling\'s '
            "loop, same client and settings, no model, under the same load, its runs "
            "alternating with the worker's: what the client and broker cost alone)"
        )
        for name, r in lat.items():
            if r and r.get("broker_cpu_by_second"):
                lines.append(
                    f"{name}, second by second: p99 ms "
                    + " ".join(fmt(v, ".0f") for v in r["p99_ms_by_second"])
                    + "; broker CPU % "
                    + " ".join(
                        fmt(None if v is None else v * 100, ".0f")
                        for v in r["broker_cpu_by_second"]
                    )
                )
    return lines


def _memory_lines(res: dict) -> list[str]:
    """Peak RSS of the workers and what pending joins cost."""
    lines: list[str] = []
    mem = res.get("memory", {})
    if mem:
        lines += ["", "memory"]
        rows = []
        for m in res["models"]:
            w = res.get("worker_1p", {}).get(m)
            if w:
                rows.append(
                    [
                        f"worker peak RSS, 1 partition, {m}",
                        fmt(w["peak_rss_mb"], ".0f"),
                        "MB",
                        "VmHWM, I/O process + model process",
                    ]
                )
            w = res.get("worker_4p", {}).get(m)
            if w:
                rss = " / ".join(fmt(d["peak_rss_mb"], ".0f") for d in w["workers_detail"])
                rows.append(
                    [
                        f"worker peak RSS, 4 partitions / 2 workers, {m}",
                        rss,
                        "MB",
                        "each worker (I/O + model process)",
                    ]
                )
        p = mem.get("pending")
        if p:
            rows.append(
                [
                    f"learner with {p['n']:,} pending joins ({p['model']})",
                    fmt(p["rss_after_mb"], ".0f"),
                    "MB",
                    f"RSS; {fmt(p['rss_before_mb'], '.0f')} MB before the joins",
                ]
            )
            rows.append(
                [
                    "  per pending join (RSS)",
                    fmt(p["bytes_per_pending"], ".0f"),
                    "bytes",
                    f"bounded by LearnerConfig.max_pending={p['max_pending']:,} "
                    "(--max-pending, per partition) and pending_ttl",
                ]
            )
            rows.append(
                [
                    "  per pending join (checkpoint blob)",
                    fmt(p["checkpoint_bytes_per_pending"], ".0f"),
                    "bytes",
                    f"blob {p['checkpoint_bytes'] / 2**20:.0f} MB, pickled in "
                    f"{p['checkpoint_pickle_s']:.2f} s, peak RSS "
                    f"+{p['checkpoint_pickle_extra_peak_mb']:.0f} MB while pickling",
                ]
            )
            if p.get("checkpoint_fork_stall_s") is not None:
                rows.append(
                    [
                        "  scoring paused per checkpoint",
                        fmt(p["checkpoint_fork_stall_s"] * 1000, ".0f"),
                        "ms",
                        f"the model process forks a writer (from {FORK_STATE_ABOVE:,} pending "
                        f"joins on); "
                        f"state written in {p['checkpoint_fork_written_s']:.2f} s meanwhile",
                    ]
                )
        lines.append(table(rows, ["what", "value", "unit", "note"], right_from=1))
    return lines


def _ratio_lines(res: dict) -> list[str]:
    """The 1-partition worker's rate over each reference's."""
    lines: list[str] = []
    ratios = res.get("ratios", {})
    if ratios:
        lines += ["", "ratios (driftstream worker, 1 partition, events/s over ...)"]
        rows = [
            [
                m,
                fmt(r.get("vs_river"), ".2f"),
                fmt(r.get("vs_learner_offline"), ".2f"),
                fmt(r.get("vs_ceiling"), ".2f"),
                fmt(r.get("vs_ceiling_send_batch"), ".2f"),
                fmt(r.get("vs_naive"), ".2f"),
                fmt(r.get("4p_2w_vs_1p"), ".2f"),
            ]
            for m, r in ratios.items()
        ]
        lines.append(
            table(
                rows,
                [
                    "model",
                    "/ River",
                    "/ learner offline",
                    "/ Kafka ceiling",
                    "/ ceiling, send_batch",
                    "/ naive peer",
                    "4p-2w / 1p",
                ],
            )
        )
        if ratios.get("lr", {}).get("vs_ceiling_of_medians") is not None:
            lines.append(
                "(lr / Kafka ceilings: the median of the back-to-back pairs' ratios; "
                "median worker / median ceiling: "
                f"{ratios['lr']['vs_ceiling_of_medians']:.2f}, by send_batch: "
                f"{fmt(ratios['lr'].get('vs_ceiling_send_batch_of_medians'), '.2f')})"
            )
    return lines


def _every_run_lines(res: dict) -> list[str]:
    """Every repeated run in order, beside the medians the tables show."""
    lines: list[str] = []
    reps = res.get("repeats", {})
    if len(reps.get("worker_1p_lr", [])) > 1:
        workers, ceilings = reps["worker_1p_lr"], reps["ceiling"]
        batched = reps.get("ceiling_send_batch", [])

        def latency_runs(key: str) -> str:
            return " · ".join(
                "FAILED" if r is None else f"{r['p50_ms']}/{r['p95_ms']}/{r['p99_ms']}"
                for r in reps.get(key, [])
            )

        lines += [
            "",
            "every run, in order (the tables above show the median):",
            f"  worker lr 1 partition, events/s: {' · '.join(map(fmt, workers))}",
            f"  Kafka I/O ceiling, events/s:     {' · '.join(map(fmt, ceilings))}",
            "  worker / ceiling, run by run:    "
            + " · ".join(fmt(ratio(w, c), ".2f") for w, c in zip(workers, ceilings)),
            f"  ceiling by send_batch, events/s: {' · '.join(map(fmt, batched))}",
            "  worker / that, run by run:       "
            + " · ".join(fmt(ratio(w, c), ".2f") for w, c in zip(workers, batched)),
            f"  latency at half max, p50/p95/p99 ms: {latency_runs('latency_half')}",
            "  the same, Kafka I/O ceiling's loop: " + latency_runs("latency_half_io_ceiling"),
        ]
    return lines


def machine_line() -> str:
    import river

    try:
        import kafka

        kv = kafka.__version__
    except Exception:  # pragma: no cover
        kv = "?"
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load {load[0]:.1f} at start, Python "
        f"{platform.python_version()}, River {river.__version__}, kafka-python {kv}, "
        f"embedded Tansu on loopback"
    )


def title(n: int) -> str:
    """The report's first line: the data, the machine, the commit (and whether the working
    tree had changes), the date."""
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        or "?"
    )
    if subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip():
        commit += " + uncommitted changes"
    return (
        f"n={n:,} SEA events (drift at {n // 2:,}), labels delayed by "
        f"{LABEL_DELAY}; {machine_line()}; commit {commit}; "
        f"{datetime.date.today()}"
    )


def run_notes(res: dict) -> list[str]:
    """What the table's figures mean, printed under it (after the run's own notes)."""
    return [
        "Wall-clock figures are noisy on a machine shared with other work: the lr worker, the "
        f"ceiling and the latency at half max are medians of {res['repeats_asked']} runs, the "
        "rest one run. CPU s (process_time of the measured window; child processes: "
        "utime+stime) are steadier.",
        "worker 1p: first poll returning records -> producer.flush() after the last of 2n "
        "records; excludes group join, the final checkpoint and the idle exit.",
        "ceiling: same Consumer/Producer and settings, assign (no group), no decode, one "
        'prediction-sized send per event keyed by the record key; "send_batch": each '
        "poll's predictions in one Producer.send_batch, as the worker writes them (the "
        "latency runs' ceiling loop writes so too).",
        "latency: CreateTime(prediction, set at the worker's send) - CreateTime(event, its "
        "scheduled publish time; the load generator sends what is due every 10 ms, or 5 ms "
        "where the row says so), matched by "
        "id; Tansu does not answer a waiting fetch when data arrives, so an idle consumer sees "
        f"new records only after fetch_max_wait_ms ({FETCH_MAX_WAIT_MS}). The load generator "
        "runs on the same 2 cores; each latency run has a broker of its own.",
        f"total runtime {res['runtime_s']:.0f} s",
    ]


def json_summary(res: dict) -> dict:
    """``--json``'s object: the headline figures (lr, 1 partition) first, then every result."""
    summary = {
        "events_per_s": lookup(res, "worker_1p", "lr", "events_per_s"),
        "p99_ms": lookup(res, "latency", "half of max", "p99_ms"),
        "p99_ms_io_ceiling": lookup(res, "latency", "half, I/O ceiling", "p99_ms"),
        "p99_ms_5ms_batches": lookup(res, "latency", "half, 5 ms batches", "p99_ms"),
        "p99_ms_5ms_batches_io_ceiling": lookup(
            res, "latency", "half, 5 ms batches, I/O ceiling", "p99_ms"
        ),
        "ratio_vs_river": lookup(res, "ratios", "lr", "vs_river"),
        "ratio_vs_ceiling": lookup(res, "ratios", "lr", "vs_ceiling"),
        "ratio_vs_ceiling_send_batch": lookup(res, "ratios", "lr", "vs_ceiling_send_batch"),
        "ratio_vs_naive": lookup(res, "ratios", "lr", "vs_naive"),
    }
    summary.update({k: v for k, v in res.items() if k not in ("notes",)})
    summary["notes"] = res["notes"]
    return summary
