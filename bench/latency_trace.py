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
import atexit
import bisect
import json
import os
import runpy
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.latency import measure_latency
from bench.load import LOAD_TICK_S, broker_env, make_samples, read_keys_and_times
from bench.runs import log
from driftstream.transport.kafka_client import topic_names

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


def _event_number(key: bytes) -> int:
    return int(key[1:])  # the load generator's ids: L<n>


def install_tracer(trace: dict, worker: bool) -> None:
    """Record fetches and polls (and, for the worker, batches and answers) into ``trace``."""
    from kafka.consumer.fetcher import Fetcher

    from driftstream.transport.kafka_client import Consumer

    handle_fetch = Fetcher._handle_fetch_response

    def traced_fetch(self, node_id, fetch_offsets, send_time, response):
        now = _wall_ms()
        asked = [offset for tp, offset in fetch_offsets.items() if tp.topic.endswith("events")]
        trace["fetches"].append(
            (now - (time.monotonic() - send_time) * 1000, now, asked[0] if asked else None)
        )
        return handle_fetch(self, node_id, fetch_offsets, send_time, response)

    Fetcher._handle_fetch_response = traced_fetch
    poll_by_partition = Consumer.poll_by_partition
    last_poll = {"at": 0.0}

    def traced_poll(self, timeout_ms, max_records=None):
        batches = poll_by_partition(self, timeout_ms, max_records)
        last_poll["at"] = now = _wall_ms()
        events = [
            _event_number(r.key)
            for (topic, _), recs in batches.items()
            if topic.endswith("events")
            for r in recs
        ]
        if events:
            trace["polls"].append((now, events))
        return batches

    Consumer.poll_by_partition = traced_poll
    if not worker:
        return
    from driftstream.consumers import model_process
    from driftstream.consumers import worker as worker_module

    batch = model_process.ModelHost._batch

    def traced_batch(self, *args):  # runs in the model process: the answer carries the times
        start = _wall_ms()
        answer = batch(self, *args)
        answer.trace_times = (start, _wall_ms())
        return answer

    model_process.ModelHost._batch = traced_batch
    submitted: list[float] = []  # poll time of each batch in the model, oldest first
    W = worker_module.Worker
    submit, collect = W._submit, W._collect

    def traced_submit(self, *args, **kwargs):
        before = len(self._polled)
        submit(self, *args, **kwargs)
        if len(self._polled) > before:
            submitted.append(last_poll["at"])

    def traced_collect(self, discard=False):
        answer_polled = submitted.pop(0)
        model = self.model
        take = model.collect

        def collect_and_record():
            answer = take()
            events = [
                _event_number(key)
                for progress in answer.progress.values()
                for role, key, _, _ in progress.outputs
                if role == "predictions"
            ]
            if events:
                start, end = getattr(answer, "trace_times", (None, None))
                trace["answers"].append((answer_polled, start, end, events))
            return answer

        model.collect = collect_and_record
        try:
            return collect(self, discard)
        finally:
            del model.collect

    W._submit, W._collect = traced_submit, traced_collect


def _child(path: str, worker: bool, argv: list[str]) -> None:
    """Run ``python -m MODULE ...`` (ARGV) traced, in this process; dump the trace at exit."""
    if argv[:1] != ["-m"] or len(argv) < 2:
        raise SystemExit(f"latency_trace --_child runs a module (-m MODULE ...), not {argv[:2]}")
    trace: dict = {"fetches": [], "polls": [], "answers": []}
    install_tracer(trace, worker)
    pid = os.getpid()

    @atexit.register
    def dump() -> None:
        if os.getpid() == pid:  # not in a forked model process
            Path(path).write_text(json.dumps(trace))

    sys.argv = argv[1:]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


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
        _child(path, subject == "worker", rest)
        return 0
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
