"""Drift policies compared: accuracy around each change, detections, promotions, cost.

Runs every drift policy (none, reset, window, reweight, challenger) on each base model, plus
River's own adaptive models (HAT and ARF, policy ``none``: they adapt internally), through the
learner's offline path (`driftstream.stream.offline.run_offline`: event-time merge, delayed
labels, served-error ADWIN), on:

- ``sea``: SEA with one sudden change (variant 0 -> 1) at n // 2;
- ``agrawal``: Agrawal with one partial change (function 0 -> 1) at n // 2;
- ``hyperplane``: rotating hyperplane, gradual drift all along (no change point);
- ``recurrent``: Agrawal A -> B -> A (functions 0, 1, 0; 20,000 / 10,000 / 10,000 samples at
  n = 50,000, scaled with n), label delay 50: does the model of A come back?
- ``friedman``: Friedman #1 with a global concept change at n // 2 (regression).

Usage::

    .venv/bin/python -m bench.policies [--n 50000] [--markdown bench/results/policies.md]

Prints the table, then the default policy's regret against the best other policy on each
stream and base model, the recurrent stream's recovery, the throughput of the default against
``reset`` on SEA/lr and the size of the challenger's state with its kept models.
"""

from __future__ import annotations

import argparse
import datetime
import pickle
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import river

from driftstream.producers.sources import Sample, arrival_order, synthetic
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.offline import run_offline
from driftstream.stream.policies import POLICIES
from driftstream.stream.records import DriftReport, Event, Label, Prediction

__all__ = ["main", "run_one"]

STREAMS = ("sea", "agrawal", "hyperplane", "recurrent", "friedman")
REGRESSION = ("friedman",)
MODELS = {"classification": ("lr", "ht"), "regression": ("linreg", "htr")}
ADAPTIVE = {  # River's drift-aware models, run with policy none
    "classification": {"hat": "hat", "arf": "arf"},
    "regression": {
        "hatr": "tree.HoeffdingAdaptiveTreeRegressor(seed=42)",
        "arfr": "forest.ARFRegressor(seed=42)",
    },
}
SLOW = ("arf", "arfr")  # run on --arf-n samples
BASE = MODELS["classification"] + MODELS["regression"]
DEFAULT_POLICY = LearnerConfig.drift_policy
AROUND = 2000  # samples before the first change and after each change that are scored
TIMING_REPEATS = 3


@dataclass
class Row:
    stream: str
    model: str
    policy: str
    n: int
    changes: list[int]
    overall: float  # accuracy, or MAE for regression
    before: float | None  # over the AROUND samples before the first change
    after: list[float]  # over the AROUND samples after each change (up to the next one)
    detections: int
    falls: int  # detections where the error fell (reported, not acted on)
    promotions: int
    drops: int
    seconds: float
    state_bytes: int
    peak_bytes: int = 0  # challenger: the largest state seen when a challenge started
    kept_bytes: list[int] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return self.stream in REGRESSION


def stream_samples(stream: str, n: int, seed: int) -> tuple[list[Sample], list[int]]:
    """The samples of one bench stream and its change points."""
    if stream == "recurrent":  # A for 2/5 of the length, B for 1/5, A again for 1/5
        total = n * 4 // 5
        first, second = total // 2, total * 3 // 4
        head = list(synthetic("agrawal", second, seed=seed, drift_at=[first], label_delay="50"))
        back = synthetic(  # segment 2 of the same seed: function 0 again, new samples
            "agrawal",
            total - second,
            seed=seed + 2 * 1_000_003,
            label_delay="50",
            start_ts=second,
            id_prefix="r",
        )
        return head + list(back), [first, second]
    changes = [] if stream == "hyperplane" else [n // 2]
    return list(synthetic(stream, n, seed=seed, drift_at=changes, label_delay="100")), changes


def run_one(stream: str, model: str, policy: str, n: int, seed: int, **options) -> Row:
    """One run of the learner over a bench stream, scored around its change points."""
    samples, changes = stream_samples(stream, n, seed)
    spec = ADAPTIVE["regression"].get(model, model)
    config = LearnerConfig(model=spec, drift_policy=policy, data_drift=False, **options)
    events_s, labels_s = arrival_order(samples)
    events = [Event(s.id, s.x, s.ts, offset=i) for i, s in enumerate(events_s)]
    labels = [Label(s.id, s.y, s.label_ts) for s in labels_s]
    served: dict[str, object] = {}
    reports: list[DriftReport] = []
    learner = Learner(config)
    peak = [0, 0.0]  # largest state seen when a challenge started, and the seconds measuring

    def on_output(out) -> None:
        if out.__class__ is Prediction:
            served[out.id] = out.prediction
        elif out.__class__ is DriftReport:
            reports.append(out)
            if "challenge" in out.action:  # snapshot, fresh model and kept models all held
                t = time.perf_counter()
                peak[0] = max(peak[0], len(learner.to_bytes()))
                peak[1] += time.perf_counter() - t

    start = time.perf_counter()
    run_offline(events, labels, learner=learner, on_output=on_output)
    seconds = time.perf_counter() - start - peak[1]

    scores = [_score(learner.task, served.get(s.id), s.y) for s in samples]
    bounds = changes + [len(samples)]
    after = [_mean(scores[a : min(a + AROUND, b)]) for a, b in zip(bounds, bounds[1:])]
    before = _mean(scores[max(0, changes[0] - AROUND) : changes[0]]) if changes else None
    report = learner.metrics.report()
    concept = [r for r in reports if r.kind == "concept"]
    verdicts = [r.action for r in reports if r.kind == "challenger"]
    return Row(
        stream=stream,
        model=model,
        policy=policy,
        n=len(samples),
        changes=changes,
        overall=report["mae"] if learner.task == "regression" else report["accuracy"],
        before=before,
        after=[a for a in after if a is not None],
        detections=len(concept),
        falls=sum(1 for r in concept if r.action.startswith("none (error fell)")),
        promotions=sum(1 for a in verdicts if a.startswith("promoted")),
        drops=sum(1 for a in verdicts if a.startswith("dropped")),
        seconds=seconds,
        state_bytes=len(learner.to_bytes()),
        peak_bytes=peak[0],
        kept_bytes=_kept_sizes(learner),
    )


def _score(task: str, prediction, y) -> float | None:
    """1/0 served right or wrong (classification), absolute error (regression)."""
    if task == "classification":
        return None if prediction is None else float(prediction == y)
    return None if prediction is None else abs(y - prediction)


def _mean(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _kept_sizes(learner: Learner) -> list[int]:
    return [len(pickle.dumps(k.model, protocol=5)) for k in learner.served.kept]


# -- formatting -----------------------------------------------------------------------------

HEADERS = (
    "stream",
    "model",
    "policy",
    "overall",
    "last 2k before",
    "2k after each change",
    "detections",
    "promoted/dropped",
    "state KB",
    "time s",
)


def _value(row: Row, v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if row.regression else f"{v:.4f}"


def _cells(row: Row, default: str) -> list[str]:
    where = f" @{','.join(str(c) for c in row.changes)}" if row.changes else ""
    policy = row.policy + (" (default)" if row.policy == default else "")
    challenger = row.policy == "challenger"
    return [
        row.stream + where + (" (MAE)" if row.regression else ""),
        row.model,
        policy,
        _value(row, row.overall),
        _value(row, row.before),
        " / ".join(_value(row, a) for a in row.after) or "—",
        f"{row.detections} ({row.falls}↓)",
        f"{row.promotions}/{row.drops}" if challenger else "—",
        f"{row.state_bytes / 1024:.0f}",
        f"{row.seconds:.1f}",
    ]


def text_table(rows: list[Row], default: str) -> str:
    table = [list(HEADERS)] + [_cells(r, default) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    out = []
    for k, line in enumerate(table):
        out.append(
            "  ".join(
                c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))
            ).rstrip()
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row], default: str) -> str:
    aligns = [":--" if i < 3 else "--:" for i in range(len(HEADERS))]
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(aligns) + "|"]
    out += ["| " + " | ".join(_cells(r, default)) + " |" for r in rows]
    return "\n".join(out)


def regrets(rows: list[Row], default: str) -> list[str]:
    """The default policy against the best other policy, same stream and base model."""
    lines = []
    worst: tuple[float, str] | None = None
    for stream in dict.fromkeys(r.stream for r in rows):
        for model in dict.fromkeys(r.model for r in rows if r.stream == stream):
            same = [r for r in rows if r.stream == stream and r.model == model]
            mine = next((r for r in same if r.policy == default), None)
            others = [r for r in same if r.policy != default]
            if mine is None or not others:
                continue
            if mine.regression:  # lower MAE is better; regret in % of the best MAE
                best = min(others, key=lambda r: r.overall)
                regret = 100 * (mine.overall - best.overall) / best.overall
                unit = "% MAE"
            else:
                best = max(others, key=lambda r: r.overall)
                regret = 100 * (best.overall - mine.overall)
                unit = " points"
            lines.append(
                f"{stream:<10} {model:<6} {default} {_value(mine, mine.overall)}, best other "
                f"{best.policy} {_value(best, best.overall)}: regret {regret:+.2f}{unit}"
            )
            if not mine.regression and (worst is None or regret > worst[0]):
                worst = (regret, f"{stream}/{model}")
    if worst is not None:
        lines.append(
            f"worst-case regret (classification): {worst[0]:+.2f} points on {worst[1]} "
            f"(target: at most 0.5)"
        )
    return lines


def robustness(rows: list[Row]) -> list[str]:
    """Each policy's worst regret against the best other policy, over streams and base models:
    the figure the default is chosen by."""
    worst: dict[tuple[str, bool], tuple[float, str]] = {}
    groups = {(r.stream, r.model) for r in rows if r.model in BASE}
    for stream, model in groups:
        same = [r for r in rows if (r.stream, r.model) == (stream, model)]
        for mine in same:
            others = [r for r in same if r is not mine]
            if not others:
                continue
            if mine.regression:
                best = min(r.overall for r in others)
                regret = 100 * (mine.overall - best) / best
            else:
                regret = 100 * (max(r.overall for r in others) - mine.overall)
            key = (mine.policy, mine.regression)
            if key not in worst or regret > worst[key][0]:
                worst[key] = (regret, f"{stream}/{model}")
    lines = []
    for regression, unit in ((False, "points of accuracy"), (True, "% of MAE")):
        ranked = sorted((v, p) for (p, reg), v in worst.items() if reg == regression)
        if ranked:
            lines.append(
                f"{'regression' if regression else 'classification'} ({unit}): "
                + ", ".join(f"{p} {v:+.2f} ({where})" for (v, where), p in ranked)
            )
    return lines


def recurrence(rows: list[Row]) -> list[str]:
    """Accuracy after the return to A against the last 2,000 before A first changed."""
    lines = []
    for r in rows:
        if r.stream != "recurrent" or len(r.after) < 3 or r.before is None:
            continue
        gap = 100 * (r.before - r.after[2])
        lines.append(
            f"{r.model:<4} {r.policy:<10} before {r.before:.4f}, after the return "
            f"{r.after[2]:.4f}: {gap:+.2f} points below{' (target: at most 3)' * (gap > 3)}"
        )
    return lines


def timing(n: int, seed: int, policies: tuple[str, ...], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs of each policy on SEA/lr, taken in turn (shared cores)."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for policy in policies:
            seconds = run_one("sea", "lr", policy, n, seed).seconds
            best[policy] = min(best.get(policy, seconds), seconds)
    return best


def costs(rows: list[Row], default: str, timed: dict[str, float], n: int) -> list[str]:
    """Throughput of the default against reset on SEA/lr; the challenger's kept models."""
    lines = []
    if "reset" in timed and default in timed:
        rates = ", ".join(f"{p} {n / s:,.0f}" for p, s in timed.items())
        lines.append(
            f"throughput on sea/lr (offline: merge, scoring, learning; fastest of "
            f"{TIMING_REPEATS} runs each, in turn): {rates} samples/s; {default} takes "
            f"{timed[default] / timed['reset']:.2f}x the time of reset"
        )
    for r in rows:
        if r.policy == "challenger":
            sizes = ", ".join(f"{b / 1024:.0f}" for b in r.kept_bytes)
            kept = f"{len(r.kept_bytes)} kept model(s) of {sizes} KB" if sizes else "none kept"
            lines.append(
                f"{r.stream}/{r.model} challenger: state at the end {r.state_bytes / 1024:.0f} KB "
                f"({kept}); "
                + (
                    f"largest when a challenge started {r.peak_bytes / 1024:.0f} KB"
                    if r.peak_bytes
                    else "no challenge started"
                )
            )
    return lines


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50_000, help="samples per stream (default 50000)")
    p.add_argument(
        "--arf-n",
        type=int,
        default=None,
        help="samples for the ARF rows, the slow ones (default: --n)",
    )
    p.add_argument("--seed", type=int, default=42, help="stream seed (default 42)")
    p.add_argument("--streams", default=",".join(STREAMS), help="comma-separated subset")
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated subset of lr,ht,hat,arf (classification), "
        "linreg,htr,hatr,arfr (regression); default all",
    )
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset")
    p.add_argument("--markdown", metavar="PATH", help="also write the results as Markdown here")
    args = p.parse_args(argv)

    default = DEFAULT_POLICY
    streams = [s for s in args.streams.split(",") if s]
    chosen = set(args.models.split(",")) if args.models else None
    policies = [s for s in args.policies.split(",") if s]
    jobs = []
    for stream in streams:
        task = "regression" if stream in REGRESSION else "classification"
        for model in MODELS[task] + tuple(ADAPTIVE[task]):
            if chosen is not None and model not in chosen:
                continue
            n = (args.arf_n or args.n) if model in SLOW else args.n
            for policy in policies if model in MODELS[task] else ("none",):
                jobs.append((stream, model, policy, n))

    started = time.perf_counter()
    rows = []
    for k, (stream, model, policy, n) in enumerate(jobs, 1):
        print(f"[{k}/{len(jobs)}] {stream} {model} {policy} n={n} ...", end=" ", file=sys.stderr)
        row = run_one(stream, model, policy, n, args.seed)
        print(f"{row.seconds:.1f}s", file=sys.stderr, flush=True)
        rows.append(row)
    timed = {}
    if "sea" in streams and (chosen is None or "lr" in chosen):
        timed = timing(
            args.n,
            args.seed,
            tuple(dict.fromkeys(("reset", "challenger", default))),
            TIMING_REPEATS,
        )
    runtime = time.perf_counter() - started

    settings = (
        f"n={args.n} (arf: {args.arf_n or args.n}; recurrent: 4/5 of n), seed {args.seed}, "
        "label delay 100 (recurrent: 50), ADWIN delta 0.002, policies act on error rises "
        f"only, data drift off; default policy {default}"
    )
    notes = [
        "overall: accuracy (friedman: mean absolute error) of every served prediction. "
        "last 2k before: over the 2,000 samples before the first change; 2k after each change: "
        "over the 2,000 samples after each change (recurrent: A->B, then B->A). detections: "
        "concept detections of ADWIN on the served error, in brackets those where the error "
        "fell (reported only). promoted/dropped: challenger verdicts. state KB: the pickled "
        "learner at the end (a checkpoint's size). hat/arf (hatr/arfr) run with policy none.",
    ]
    sections = [
        ("worst-case regret of each policy (against the best other one)", robustness(rows)),
        ("regret of the default", regrets(rows, default)),
        ("recurrent A -> B -> A", recurrence(rows)),
        ("cost", costs(rows, default, timed, args.n)),
    ]
    print(settings)
    print()
    print(text_table(rows, default))
    print()
    print(*notes, sep="\n")
    for title, lines in sections:
        if lines:
            print(f"\n{title}:")
            print(*(f"  {line}" for line in lines), sep="\n")
    print(f"\nruntime {runtime:.0f} s")

    if args.markdown:
        command = shlex.join([".venv/bin/python", "-m", "bench.policies", *sys.argv[1:]])
        if argv is not None:
            command = shlex.join([".venv/bin/python", "-m", "bench.policies", *argv])
        lines = [
            f"Generated by `{command}` on {datetime.date.today().isoformat()} in {runtime:.0f} s "
            f"(commit {_commit()}, Python {platform.python_version()}, River "
            f"{river.__version__}).",
            "",
            settings + ".",
            "",
            markdown_table(rows, default),
            "",
            *notes,
        ]
        for title, section in sections:
            if section:
                lines += ["", f"{title[0].upper()}{title[1:]}:", ""]
                lines += [f"- {line}" for line in section]
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
