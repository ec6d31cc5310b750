"""Where an event's latency goes at a steady rate: the worker traced from fetch to send.

    .venv/bin/python -m bench.latency_trace [--rate 19500] [--tick-ms 10] [--warmup 10]
                                            [--steady 20]

Runs `bench.latency.measure_latency` (a fresh broker, the load generator on the same 2 cores,
1 partition, lr) twice: with a traced `driftstream run`, then with the Kafka I/O ceiling's
loop traced alike. The traced processes record, from inside, when each fetch request was
sent and when its response came (kafka-python's fetcher callback), when each poll returned
which events, and for the worker when its model process started and finished each batch.
Every event of the steady window then has its latency (its prediction's CreateTime minus its
own) split into parts that add up to it:

- event → fetch sent: from the event's time to the sending of the fetch that brought it
  (negative when the event reached the broker while that fetch was waiting there);
- fetch round trip: that fetch, sent to answered;
- response → poll returned: until the consumer's poll handed its records over (the main
  thread busy elsewhere, then kafka-python decoding the records);
- held by the merge: until the poll whose batch released the event (the other input had
  not passed its time yet);
- to the model: from that poll to the model process starting the batch;
- model batch: the model process's time for that whole batch;
- to the send: from the batch's end to the event's prediction being sent (the answer's trip
  back, the I/O process noticing it, the sends before it).

For the ceiling's loop, everything after the poll is one part (it sends as it reads). The
table gives each part's mean over all events, over the 1 % around the median, and over the
slowest 1 % and 0.2 %, and the fetches' round trip second by second. Diagnosis only: tracing
costs the traced process a few % of CPU, so these runs' percentiles are not the bench's.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.ceilings import io_loop_child
from bench.latency import measure_latency
from bench.load import LOAD_TICK_S, broker_env, make_samples, read_keys_and_times
from bench.runs import log
from driftstream.consumers.probe import WorkerProbe
from driftstream.stream.outputs import Predictions
from driftstream.transport import topic_names

PARTS = (
    "event → fetch sent",
    "fetch round trip",
    "response → poll returned",
    "held by the merge",
    "to the model",
    "model batch",
    "to the send",
)


def _wall_ms() -> float:
    return time.time() * 1000


def _event_number(key: bytes | str) -> int:
    return int(key[1:])  # the load generator's ids: L<n>


def trace_fetches(trace: dict) -> None:
    """Record when each fetch request was sent and answered, and the events offset it asked
    for. kafka-python has no hook for this: its fetcher's response callback is wrapped
    (diagnosis of the client itself, not of driftstream)."""
    from kafka.consumer.fetcher import Fetcher

    handle_fetch = Fetcher._handle_fetch_response

    def traced_fetch(self, node_id, fetch_offsets, send_time, response):
        now = _wall_ms()
        asked = [offset for tp, offset in fetch_offsets.items() if tp.topic.endswith("events")]
        trace["fetches"].append(
            (now - (time.monotonic() - send_time) * 1000, now, asked[0] if asked else None)
        )
        return handle_fetch(self, node_id, fetch_offsets, send_time, response)

    Fetcher._handle_fetch_response = traced_fetch


def _polled_events(records) -> list[int]:
    return [_event_number(r.key) for r in records if r.topic.endswith("events")]


class TraceProbe(WorkerProbe):
    """The worker's polls and answers into ``trace``, in wall-clock milliseconds."""

    def __init__(self, trace: dict):
        self.trace = trace
        self.offset = time.time() - time.perf_counter()  # perf_counter -> wall clock

    def wall_ms(self, at: float) -> float:
        return (at + self.offset) * 1000

    def polled(self, batches, at):
        events = _polled_events(r for records in batches.values() for r in records)
        if events:
            self.trace["polls"].append((self.wall_ms(at), events))

    def answered(self, answer, polled_at):
        events = [
            _event_number(key)
            for progress in answer.progress.values()
            for output in progress.outputs
            if isinstance(output, Predictions)
            for key, *_ in output.rows
        ]
        if events:
            times = (polled_at, answer.started, answer.finished)
            self.trace["answers"].append((*map(self.wall_ms, times), events))


def run_cli_worker(argv: list[str], probe: WorkerProbe) -> int:
    """``driftstream run ARGV`` as the command line runs it, with ``probe`` in the worker."""
    from driftstream.cli import build_parser, kafka_settings, learner_config, worker_options
    from driftstream.config import parse_args
    from driftstream.consumers.worker import Worker, handle_signals
    from driftstream.logs import setup as setup_logging

    args = parse_args(build_parser(), argv)
    if args.command != "run":
        raise SystemExit(f"latency_trace traces `driftstream run`, not {args.command!r}")
    setup_logging(args.log_level, args.log_format)
    settings, config, options = kafka_settings(args), learner_config(args), worker_options(args)
    worker = Worker(settings, config, args.state, options, probe=probe)
    handle_signals(worker)
    return worker.run()


def _child(path: str, worker: bool, argv: list[str]) -> int:
    """Run ARGV traced, in this process, and dump the trace: ``-m driftstream.cli run ...``
    (the worker, watched by its probe) or ``-m bench.child io-loop SPEC`` (the ceiling's loop,
    which reports its polls)."""
    trace: dict = {"fetches": [], "polls": [], "answers": []}
    trace_fetches(trace)
    try:
        if worker and argv[:2] == ["-m", "driftstream.cli"]:
            return run_cli_worker(argv[2:], TraceProbe(trace))
        if not worker and argv[:3] == ["-m", "bench.child", "io-loop"]:
            offset = time.time() - time.perf_counter()

            def on_poll(records, at: float) -> None:
                events = _polled_events(records)
                if events:
                    trace["polls"].append(((at + offset) * 1000, events))

            return io_loop_child(json.loads(argv[3]), on_poll=on_poll)
        raise SystemExit(f"latency_trace --_child cannot trace {argv[:3]}")
    finally:
        Path(path).write_text(json.dumps(trace))


def decompose(
    trace: dict, events: dict, predictions: dict, lo: float, hi: float, worker: bool
) -> list[tuple]:
    """Per event of [lo, hi]: (latency, part, part, ...) in the order of PARTS (the ceiling's
    loop: the first three, then poll → prediction sent)."""
    # The fetch that brought event n (its offset: the load generator writes L<n> at offset
    # n): the last one sent that asked the events partition for an offset up to n.
    fetches = sorted((f for f in trace["fetches"] if f[2] is not None), key=lambda f: f[0])
    asked = [f[2] for f in fetches]
    delivered = {}  # event number -> the time its poll returned
    for at, numbers in trace["polls"]:
        for n in numbers:
            delivered.setdefault(n, at)
    answered = {}  # event number -> (its batch's poll, model start, model end)
    for polled, start, end, numbers in trace["answers"]:
        for n in numbers:
            answered[n] = (polled, start, end)
    rows = []
    for key, ts in events.items():
        n = _event_number(key)
        pred = predictions.get(key)
        if not lo <= ts <= hi or pred is None or n not in delivered:
            continue
        poll = delivered[n]
        i = bisect.bisect_right(asked, n) - 1
        if i < 0:
            continue
        sent, arrived, _ = fetches[i]
        head = [sent - ts, arrived - sent, poll - arrived]
        if not worker:
            rows.append((pred - ts, *head, pred - poll))
        elif n in answered and answered[n][1] is not None:
            polled, start, end = answered[n]
            rows.append((pred - ts, *head, polled - poll, start - polled, end - start, pred - end))
    rows.sort()
    return rows


def summarize(rows: list[tuple]) -> dict[str, list[float]]:
    """Mean of each column over all rows, the 1 % around the median, the slowest 1 % and
    0.2 % (rows sorted by latency)."""
    n = len(rows)
    groups = {
        "all events": rows,
        "around the median": rows[n // 2 - n // 200 : n // 2 + n // 200 + 1],
        "slowest 1 %": rows[-max(1, n // 100) :],
        "slowest 0.2 %": rows[-max(1, n // 500) :],
    }
    return {name: [statistics.fmean(col) for col in zip(*group)] for name, group in groups.items()}


def rtt_by_second(trace: dict, lo: float, seconds: int) -> list[float | None]:
    out = []
    for s in range(seconds):
        rtts = [b - a for a, b, _ in trace["fetches"] if lo + s * 1000 <= b < lo + (s + 1) * 1000]
        out.append(round(statistics.fmean(rtts), 1) if rtts else None)
    return out


def traced_run(rate: float, warmup: float, steady: float, subject: str, tick_s: float) -> dict:
    samples = make_samples(100_000)
    with tempfile.TemporaryDirectory() as tmp:
        trace_path = Path(tmp) / "trace.json"
        launcher = ("-m", "bench.latency_trace", "--_child", str(trace_path), subject, "--")
        with broker_env(Path(tmp), samples) as env:
            res = measure_latency(
                env, rate, warmup, steady, subject=subject, launcher=launcher, tick_s=tick_s
            )
            topics = topic_names(res["topic_prefix"])
            events = {k: ts for k, ts, _ in read_keys_and_times(env.settings, topics["events"])}
            preds = {k: ts for k, ts, _ in read_keys_and_times(env.settings, topics["predictions"])}
        trace = json.loads(trace_path.read_text())
    start = min(events.values())
    lo, hi = start + warmup * 1000, start + (warmup + steady) * 1000
    rows = decompose(trace, events, preds, lo, hi, worker=subject == "worker")
    fetches = sorted(trace["fetches"])  # (sent, answered, offset asked), in the order sent
    gaps = sorted(b[0] - a[1] for a, b in zip(fetches, fetches[1:]) if lo <= a[1] <= hi)
    return {
        "subject": subject,
        "rate": rate,
        "tick_ms": tick_s * 1000,
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "events": len(rows),
        "parts": summarize(rows) if rows else {},
        "fetches": sum(1 for f in fetches if lo <= f[1] <= hi),
        "response_to_next_fetch_ms": {
            "mean": statistics.fmean(gaps),
            "p99": gaps[int(len(gaps) * 0.99)],
        }
        if gaps
        else {},
        "rtt_by_second": rtt_by_second(trace, lo, int(steady)),
        "steady_cpu": res["steady_cpu"],
    }


def report(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        worker = r["subject"] == "worker"
        names = ["latency", *(PARTS if worker else PARTS[:3] + ("poll → prediction sent",))]
        title = "driftstream worker" if worker else "Kafka I/O ceiling's loop (no model)"
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["steady_cpu"].items() if v is not None)
        lines += [
            f"{title} at {r['rate']:,.0f} events/s in {r['tick_ms']:g} ms batches: p50 "
            f"{r['p50_ms']} ms, p99 {r['p99_ms']} ms over {r['events']:,} events; "
            f"CPU (cores) {cpu}",
            "",
        ]
        groups = list(r["parts"])
        lines.append("| ms (mean) | " + " | ".join(groups) + " |")
        lines.append("|---|" + "--:|" * len(groups))
        for i, name in enumerate(names):
            lines.append(
                f"| {name} | " + " | ".join(f"{r['parts'][g][i]:.1f}" for g in groups) + " |"
            )
        gap = r["response_to_next_fetch_ms"]
        lines += [
            "",
            f"{r['fetches']:,} fetches answered in the window; from a response to "
            f"the next fetch sent: mean {gap.get('mean', 0):.1f} ms, p99 "
            f"{gap.get('p99', 0):.1f} ms; fetch round "
            f"trip (mean ms) second by second: {r['rtt_by_second']}",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_child"]:
        path, subject, sep, *rest = argv[1:]
        return _child(path, subject == "worker", rest)
    p = argparse.ArgumentParser(
        prog="python -m bench.latency_trace", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--rate",
        type=float,
        default=19_500,
        help="offered events/s (default 19500: about half the 1-partition lr "
        "maximum that bench.throughput measured here, 39-40k at 9634f09, 2026-12-05)",
    )
    p.add_argument(
        "--tick-ms",
        type=float,
        default=LOAD_TICK_S * 1000,
        help="the load generator sends what is due this often (default "
        f"{LOAD_TICK_S * 1000:.0f}, as bench.throughput's headline)",
    )
    p.add_argument("--warmup", type=float, default=10, help="seconds before the window")
    p.add_argument("--steady", type=float, default=20, help="seconds measured")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args(argv)
    runs = []
    for subject in ("worker", "ceiling"):
        log(f"{subject}: {args.rate:,.0f} events/s in {args.tick_ms:g} ms batches, traced")
        runs.append(traced_run(args.rate, args.warmup, args.steady, subject, args.tick_ms / 1000))
    print(report(runs))
    if args.json:
        print(json.dumps(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
