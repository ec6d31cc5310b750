"""Drift policies compared: accuracy, detections and detection delay on synthetic streams.

Runs every drift policy (none/reset/window/reweight) with the ``lr`` and ``ht`` presets, plus
River's own adaptive models (``hat``, ``arf``; policy ``none``) through the same offline path
as ``driftstream evaluate`` (`driftstream.evaluate.evaluate`: event-time merge, delayed
labels, served-error ADWIN), on:

- ``sea``: SEA with one sudden drift (variant 0 -> 1) at n // 2;
- ``agrawal``: Agrawal with one sudden drift (function 0 -> 1) at n // 2;
- ``hyperplane``: rotating hyperplane, gradual drift all along (no drift point: only overall
  accuracy and the number of detections are meaningful).

Usage::

    .venv/bin/python -m bench.policies [--n 50000] [--markdown bench/results/policies.md]

Prints an aligned table and, for SEA and Agrawal, how much ``window`` beats ``reset`` on the
accuracy right after the drift. Data drift monitoring is off (only concept drift is measured).

Positions are sample indices. A detection's position is the number of labels revealed when
it fired, found from the detection's event time (with a constant label delay D its event-time
position is D later). This is what ``driftstream evaluate`` means to report, but its
``labels_seen`` is ADWIN's count, which skips labels whose prediction was None: a tree that has
not learned anything yet serves None for the first D events, so evaluate's positions come out D
too early for ht/hat/arf (a detection 27 labels after the drift is counted as a false alarm and
the next one is taken as "the" detection). This script does not use them.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import river

from driftstream.evaluate import evaluate
from driftstream.producers.sources import synthetic
from driftstream.stream.learner import LearnerConfig

STREAMS = ("sea", "agrawal", "hyperplane")
SUDDEN = ("sea", "agrawal")  # streams with one drift point
MODELS = ("lr", "ht")
POLICIES = ("none", "reset", "window", "reweight")
ADAPTIVE = ("hat", "arf")  # River's own drift-aware models, run with policy none


@dataclass
class Row:
    stream: str
    model: str
    policy: str
    n: int
    drift_at: int | None
    accuracy: float
    accuracy_after: float | None
    detections: int
    delay: int | None
    false_alarms: int | None
    seconds: float
    positions: list  # (labels revealed, mean_before, mean_after) of each detection

    @property
    def error_down(self) -> int:
        """Detections where ADWIN's error mean went down (the model got better)."""
        return sum(
            1 for _, before, after in self.positions if before is not None and after < before
        )


def run_one(
    stream: str,
    model: str,
    policy: str,
    n: int,
    seed: int,
    label_delay: str,
    after_window: int,
    cooldown: int = 0,
    act_on_decrease: bool = False,
) -> Row:
    """One evaluation; the drift point is n // 2 on the sudden streams, none on hyperplane."""
    drift_at = [n // 2] if stream in SUDDEN else []
    samples = list(synthetic(stream, n, seed=seed, drift_at=drift_at, label_delay=label_delay))
    config = LearnerConfig(
        model=model,
        drift_policy=policy,
        cooldown=cooldown,
        act_on_decrease=act_on_decrease,
        data_drift=False,
    )
    start = time.perf_counter()
    ev = evaluate(samples, config, drift_at, after_window)
    seconds = time.perf_counter() - start
    at = drift_at[0] if drift_at else None
    # Labels revealed by each detection's event time (labels go before events at equal ts).
    revealed = sorted(s.label_ts for s in samples if s.label_ts is not None)
    positions = [
        (bisect.bisect_right(revealed, d["event_ts"]), d["mean_before"], d["mean_after"])
        for d in ev.concept_drifts
    ]
    delay = false_alarms = None
    if at is not None:  # position p = labels of samples 0..p-1 seen: p <= at is all pre-change
        false_alarms = sum(1 for p, _, _ in positions if p <= at)
        hits = [p - at for p, _, _ in positions if p > at]
        delay = hits[0] if hits else None
    return Row(
        stream=stream,
        model=model,
        policy=policy,
        n=n,
        drift_at=at,
        accuracy=ev.learner.metrics.report()["accuracy"],
        accuracy_after=ev.accuracy_after.get(at) if at is not None else None,
        detections=len(ev.concept_drifts),
        delay=delay,
        false_alarms=false_alarms,
        seconds=seconds,
        positions=positions,
    )


# -- formatting -----------------------------------------------------------------------------

HEADERS = (
    "stream",
    "model",
    "policy",
    "acc overall",
    "acc after drift",
    "detections",
    "detection delay",
    "false alarms",
    "time s",
)


def _cells(row: Row) -> list[str]:
    dash = "—"
    return [
        row.stream + ("" if row.drift_at is None else f" @{row.drift_at}"),
        row.model,
        row.policy,
        f"{row.accuracy:.4f}",
        dash if row.accuracy_after is None else f"{row.accuracy_after:.4f}",
        f"{row.detections} ({row.error_down}↓)",
        dash if row.drift_at is None else ("missed" if row.delay is None else str(row.delay)),
        dash if row.false_alarms is None else str(row.false_alarms),
        f"{row.seconds:.1f}",
    ]


def text_table(rows: list[Row]) -> str:
    table = [list(HEADERS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    numeric = set(range(3, len(HEADERS)))
    out = []
    for k, line in enumerate(table):
        out.append(
            "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths))
            ).rstrip()
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    aligns = [":--" if i < 3 else "--:" for i in range(len(HEADERS))]
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(aligns) + "|"]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(out)


def window_vs_reset(rows: list[Row]) -> list[str]:
    """One line per (sudden stream, model): window minus reset on post-drift accuracy."""
    by = {(r.stream, r.model, r.policy): r for r in rows}
    lines = []
    for stream in SUDDEN:
        for model in MODELS:
            w, r = by.get((stream, model, "window")), by.get((stream, model, "reset"))
            if w is None or r is None or w.accuracy_after is None or r.accuracy_after is None:
                continue
            diff = 100 * (w.accuracy_after - r.accuracy_after)
            verdict = "beats" if diff > 0 else ("ties" if diff == 0 else "loses to")
            lines.append(
                f"{stream:<8} {model:<3} window {verdict} reset after the drift by "
                f"{diff:+.2f} pp ({w.accuracy_after:.4f} vs {r.accuracy_after:.4f}); "
                f"overall {100 * (w.accuracy - r.accuracy):+.2f} pp"
            )
    return lines


def detail(rows: list[Row]) -> list[str]:
    """Each detection: labels revealed, and whether the error went up (^) or down (v)."""
    lines = []
    for r in rows:
        marks = []
        for pos, before, after in r.positions:
            arrow = "?" if before is None else ("^" if after > before else "v")
            marks.append(f"{pos}{arrow}")
        lines.append(f"{r.stream:<10} {r.model:<3} {r.policy:<8} {' '.join(marks)}")
    return lines


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.policies", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--n",
        type=int,
        default=50_000,
        help="samples per stream; the drift is at n // 2 (default 50000)",
    )
    p.add_argument(
        "--arf-n",
        type=int,
        default=None,
        help="samples for the arf rows, which are the slow ones (default: --n)",
    )
    p.add_argument("--seed", type=int, default=42, help="stream seed (default 42)")
    p.add_argument("--label-delay", default="100", help="label delay spec (default 100)")
    p.add_argument(
        "--after-window",
        type=int,
        default=10_000,
        help="samples after the drift for 'acc after drift' (default 10000)",
    )
    p.add_argument(
        "--cooldown",
        type=int,
        default=0,
        help="labels after a detection during which ADWIN alarms are ignored "
        "(LearnerConfig.cooldown, default 0 = plain ADWIN)",
    )
    p.add_argument(
        "--act-on-decrease",
        action="store_true",
        help="let the policies act on detections where the error fell too, as "
        "River's DriftRetrainingClassifier (default: only on rises)",
    )
    p.add_argument("--streams", default=",".join(STREAMS), help="comma-separated subset")
    p.add_argument(
        "--models",
        default=",".join(MODELS + ADAPTIVE),
        help="comma-separated subset of lr,ht,hat,arf",
    )
    p.add_argument(
        "--detail",
        action="store_true",
        help="also print each detection's position and direction (^ error up, v error down)",
    )
    p.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown here")
    args = p.parse_args(argv)

    streams = [s for s in args.streams.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    arf_n = args.arf_n or args.n
    jobs = []
    for stream in streams:
        for model in models:
            policies = POLICIES if model not in ADAPTIVE else ("none",)
            n = arf_n if model == "arf" else args.n
            jobs += [(stream, model, policy, n) for policy in policies]

    started = time.perf_counter()
    rows = []
    for k, (stream, model, policy, n) in enumerate(jobs, 1):
        print(
            f"[{k}/{len(jobs)}] {stream} {model} {policy} n={n} ...",
            end=" ",
            file=sys.stderr,
            flush=True,
        )
        row = run_one(
            stream,
            model,
            policy,
            n,
            args.seed,
            args.label_delay,
            args.after_window,
            args.cooldown,
            args.act_on_decrease,
        )
        print(f"{row.seconds:.1f}s", file=sys.stderr, flush=True)
        rows.append(row)
    runtime = time.perf_counter() - started

    settings = (
        f"n={args.n} (arf: {arf_n}), drift at n // 2 on sea/agrawal (hyperplane: "
        f"gradual, none), seed {args.seed}, label delay {args.label_delay}, "
        f"ADWIN delta 0.002, cooldown {args.cooldown}, policies act on "
        f"{'any detection' if args.act_on_decrease else 'error rises only'}, "
        f"data drift off, "
        f"acc after drift over the next {args.after_window} samples"
    )
    notes = [
        "Detections: concept detections by the learner's ADWIN on the served error; in "
        "brackets, how many of them were a drop of the error (ADWIN is two-sided; the policies "
        + ("act on those too" if args.act_on_decrease else "only report those")
        + "). Detection delay: labels of post-change samples seen "
        "when the first detection after the change fired (in event time add the label delay, "
        f"{args.label_delay}). False alarms: detections on pre-change labels only. hat and arf "
        "run with policy none: they adapt internally, the learner's ADWIN only reports.",
    ]
    comparison = window_vs_reset(rows)

    print(settings)
    print()
    print(text_table(rows))
    print()
    for line in notes:
        print(line)
    if comparison:
        print()
        print("window vs reset, accuracy after the drift:")
        for line in comparison:
            print("  " + line)
    if args.detail:
        print()
        print("detections (labels revealed; ^ error went up, v error went down):")
        for line in detail(rows):
            print("  " + line)
    print()
    print(f"runtime {runtime:.0f} s")

    if args.markdown:
        command = shlex.join(
            [".venv/bin/python", "-m", "bench.policies", *(sys.argv[1:] if argv is None else argv)]
        )
        today = datetime.date.today().isoformat()
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).parent,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
        lines = [
            f"Generated by `{command}` on {today} in {runtime:.0f} s "
            f"(commit {commit}, Python {platform.python_version()}, River {river.__version__}).",
            "",
            settings + ".",
            "",
            markdown_table(rows),
            "",
            *notes,
        ]
        if comparison:
            lines += ["", "window vs reset, accuracy after the drift:", ""]
            lines += [f"- {line}" for line in comparison]
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
