"""Where the worker's model process spends its time, per event, against River's own loop.

Offline (the default; no Kafka): the requests a 1-partition worker sends its model process
are answered by `consumers.model_process.ModelHost` in this process, pickled both ways as
over the pipe: the bench's data (`bench.load.make_samples`) as wire records, 500 events and
500 labels a request (a poll's worth), a checkpoint every 100,000 records and the model
process's young-collection threshold, as in the worker. Reported, in µs per event:

- River's ``simulate_qa`` loop on the same data and model: the limit;
- the model process's whole cost, uninstrumented (median of ``--repeats``);
- its parts, from one run with a timer around each (the timers add ~1 µs an event): making
  and queueing the parsed records' objects (`PartitionPipeline.push`), the learner's events
  and labels (River's predict and learn inside them), and the rest (the pipeline's loop, the
  event-time merge, pickling requests and answers);
- what the worker's I/O process does for it, not counted in the whole: parsing the records
  (`codec.parse_records`) and encoding the predictions of its answers (`Predictions.encoded`);
- the whole again with a feature left out, paired: a second `ModelHost` with that learner
  configuration answers the same records in turn with the default one, request by request,
  the two swapping which goes first each round (``--repeats`` rounded up to an even number),
  so that the machine's speed, which drifts by up to 20 % within minutes here, weighs on
  both alike. Each round's saving is reported; the same pairing with nothing left out (A/A)
  shows the resolution (within about 1 µs a round, `bench/results/model-process-cost.md`);
- the whole with Python's default collector thresholds (a process-wide setting: separate
  runs, medians).

``--worker``: the 1-partition lr worker through Kafka (confluent-kafka), in rounds whose
arms' order alternates, River's loop first in each: the default (a model process), one
process (``--model-process off``), and a model process without data-drift monitoring and
with the ``reset`` policy. Ratio = worker events/s / River's events/s in the same round.

Usage, from the repository root::

    .venv/bin/python -m bench.model_cost [--n N] [--repeats R] [--worker] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.load import broker_env, make_samples
from bench.offline import measure_river_inprocess
from bench.report import fmt, table
from bench.runs import log
from bench.worker_runs import alternating_rounds
from driftstream.consumers import model_process
from driftstream.consumers.model_messages import OpenPartition, ProcessBatch, Push
from driftstream.consumers.model_process import ModelHost
from driftstream.producers.sources import arrival_order, event_record, label_record
from driftstream.stream import learner as learner_module
from driftstream.stream import pipeline as pipeline_module
from driftstream.stream.codec import parse_records
from driftstream.stream.learner import LearnerConfig
from driftstream.stream.outputs import Predictions
from driftstream.stream.pipeline import EVENTS, LABELS

__all__ = ["main", "measure_offline", "measure_worker"]

PER_REQUEST = 500  # events, and labels, per request: a poll's worth
CHECKPOINT_EVERY = 100_000  # records, the worker's default
ABLATIONS = {
    "the same again (A/A)": {},
    "without data-drift monitoring": {"data_drift": False},
    "reset policy instead of challenger": {"drift_policy": "reset"},
    "both": {"data_drift": False, "drift_policy": "reset"},
}
PARTS = {  # (object, attribute): the part it is timed as
    (pipeline_module.PartitionPipeline, "push"): "decode (parsed) and queue records",
    (learner_module.Learner, "process_event"): "learner, events (River's predict inside)",
    (learner_module.Learner, "process_label"): "learner, labels (River's learn inside)",
}
WORKER_ARMS = {
    "model process (default)": {},
    "one process (--model-process off)": {"model_process": False},
    "model process, no data drift, reset": {
        "learner": {"data_drift": False, "drift_policy": "reset"}
    },
}


def _records(samples: list) -> tuple[list, list]:
    """The events and labels topics' records, ``(offset, timestamp, value)``, as polled."""
    events, labels = arrival_order(samples)
    return (
        [(i, s.ts, orjson.dumps(event_record(s))) for i, s in enumerate(events)],
        [(i, s.label_ts, orjson.dumps(label_record(s))) for i, s in enumerate(labels)],
    )


def _parsing(samples: list) -> float:
    """CPU seconds to parse every record, as the worker's I/O process does."""
    events, labels = _records(samples)
    gc.collect()
    started = time.process_time()
    parse_records(events, "event")
    parse_records(labels, "label")
    return time.process_time() - started


def _requests(samples: list, config: LearnerConfig) -> list[bytes]:
    """The pickled requests of one partition's whole stream, as the worker sends them."""
    events, labels = _records(samples)
    ev, lb = parse_records(events, "event"), parse_records(labels, "label")
    out = [OpenPartition(0, None, config, ("ev", "lb"), [0, 0], None, 0, CHECKPOINT_EVERY)]
    for i in range(0, max(len(ev), len(lb)), PER_REQUEST):
        pushes = [
            Push(0, EVENTS, ev[i : i + PER_REQUEST]),
            Push(0, LABELS, lb[i : i + PER_REQUEST]),
        ]
        last = i + PER_REQUEST >= max(len(ev), len(lb))
        out.append(ProcessBatch(0, pushes, {0: (last, last)}, [], "periodic"))
    return [pickle.dumps(r, protocol=5) for r in out]


def _answer_all(requests: list[bytes]) -> float:
    """CPU seconds for a fresh ModelHost to answer every request, pickling as the pipe does."""
    host = ModelHost()
    gc.collect()
    started = time.process_time()
    for data in requests:
        pickle.dumps(("ok", host.handle(pickle.loads(data))), protocol=5)
    return time.process_time() - started


def _paired(first: list[bytes], second: list[bytes], first_leads: bool) -> tuple[float, float]:
    """CPU seconds of two fresh ModelHosts answering ``first`` and ``second`` (the same
    records, another configuration) in turn, request by request, pickling as the pipe does."""
    hosts = (ModelHost(), ModelHost())
    spent = [0.0, 0.0]
    order = (0, 1) if first_leads else (1, 0)
    gc.collect()
    for pair in zip(first, second):
        for i in order:
            request = pickle.loads(pair[i])
            started = time.process_time()
            pickle.dumps(("ok", hosts[i].handle(request)), protocol=5)
            spent[i] += time.process_time() - started
    return spent[0], spent[1]


def _encoding(requests: list[bytes]) -> float:
    """CPU seconds to encode the predictions of every answer, as the I/O process does."""
    host = ModelHost()
    runs = [
        output
        for data in requests
        if (answer := host.handle(pickle.loads(data))) is not None
        for progress in getattr(answer, "progress", {}).values()
        for output in progress.outputs
        if isinstance(output, Predictions)
    ]
    gc.collect()
    started = time.process_time()
    for predictions in runs:
        predictions.encoded()
    return time.process_time() - started


def _timed_parts(requests: list[bytes]) -> tuple[float, dict[str, float]]:
    """One run with a timer around each part: (total CPU s, part -> s)."""
    spent: dict[str, float] = {}
    originals = {}

    def timed(function, part):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[part] = spent.get(part, 0.0) + time.perf_counter() - started

        return wrapper

    for (owner, name), part in PARTS.items():
        originals[owner, name] = getattr(owner, name)
        setattr(owner, name, timed(originals[owner, name], part))
    try:
        return _answer_all(requests), spent
    finally:
        for (owner, name), function in originals.items():
            setattr(owner, name, function)


def measure_offline(n: int, repeats: int) -> dict:
    samples = make_samples(n)
    per_event = 1e6 / n
    old_threshold = gc.get_threshold()
    gc.set_threshold(model_process.YOUNG_GC_THRESHOLD, *old_threshold[1:])
    try:
        log("River's simulate_qa loop")
        river = statistics.median(
            measure_river_inprocess(samples, "lr")["cpu_s"] for _ in range(repeats)
        )
        default = _requests(samples, LearnerConfig())
        log("the model process's work, uninstrumented")
        whole = statistics.median(_answer_all(default) for _ in range(repeats))
        log("its parts, timed")
        timed_total, parts = _timed_parts(default)
        log("encoding predictions (the I/O process's part)")
        encoding = statistics.median(_encoding(default) for _ in range(repeats))
        log("parsing records (the I/O process's part)")
        parsing = statistics.median(_parsing(samples) for _ in range(repeats))
        ablations, savings = {}, {}
        for name, fields in ABLATIONS.items():
            log(f"whole, {name}, paired with the default")
            requests = _requests(samples, LearnerConfig(**fields))
            pairs = repeats + repeats % 2  # even: each host leads as often
            rounds = [_paired(default, requests, i % 2 == 0) for i in range(pairs)]
            ablations[name] = statistics.median(other for _, other in rounds)
            savings[name] = [stock - other for stock, other in rounds]
        gc.set_threshold(*old_threshold)
        log("whole, Python's default collector thresholds")
        ablations["default collector thresholds (700)"] = statistics.median(
            _answer_all(default) for _ in range(repeats)
        )
    finally:
        gc.set_threshold(*old_threshold)
    rest = timed_total - sum(parts.values())
    return {
        "n": n,
        "repeats": repeats,
        "river_us": river * per_event,
        "model_process_us": whole * per_event,
        "timed_total_us": timed_total * per_event,
        "parts_us": {**{k: v * per_event for k, v in parts.items()}, "the rest": rest * per_event},
        "io_encoding_us": encoding * per_event,
        "io_parsing_us": parsing * per_event,
        "ablations_us": {k: v * per_event for k, v in ablations.items()},
        "ablation_savings_us": {k: [v * per_event for v in vs] for k, vs in savings.items()},
    }


def offline_table(r: dict) -> str:
    river = r["river_us"]
    rows = [
        ["River's simulate_qa loop (the limit)", fmt(river, ".1f"), "1.00", ""],
        [
            "model process, whole",
            fmt(r["model_process_us"], ".1f"),
            fmt(river / r["model_process_us"], ".2f"),
            "",
        ],
    ]
    rows += [[f"  {part}", fmt(us, ".1f"), "", ""] for part, us in r["parts_us"].items()]
    rows.append(["  (sum of the parts, timers included)", fmt(r["timed_total_us"], ".1f"), "", ""])
    rows.append(["I/O process: parse records", fmt(r["io_parsing_us"], ".1f"), "", ""])
    rows.append(["I/O process: encode predictions", fmt(r["io_encoding_us"], ".1f"), "", ""])
    savings = r["ablation_savings_us"]
    for name, us in r["ablations_us"].items():
        saved = " ".join(f"{x:+.1f}" for x in savings.get(name, ()))
        rows.append([f"whole, {name}", fmt(us, ".1f"), fmt(river / us, ".2f"), saved])
    head = (
        f"model process offline, lr, n={r['n']:,}: CPU µs per event (medians of "
        f"{r['repeats']}; saved: against the default, paired, by round)"
    )
    return head + "\n" + table(rows, ["what", "µs/event", "River / it", "saved"])


def measure_worker(n: int, repeats: int) -> dict:
    samples = make_samples(n)
    with tempfile.TemporaryDirectory(prefix="bench-model-cost-") as tmp:
        with broker_env(Path(tmp), samples, client="confluent") as env:
            arms = {arm: (env, options) for arm, options in WORKER_ARMS.items()}
            runs = alternating_rounds(samples, arms, repeats)
    keys = ("events_per_s", "model_process_cpu_s", "cpu_s")
    rounds = [
        {"river": r["river"], **{arm: {k: r[arm].get(k) for k in keys} for arm in WORKER_ARMS}}
        for r in runs
    ]
    return {"n": n, "rounds": rounds}


def worker_table(r: dict) -> str:
    rows = []
    for arm in WORKER_ARMS:
        ratios = [row[arm]["events_per_s"] / row["river"] for row in r["rounds"]]
        rows.append(
            [
                arm,
                fmt(statistics.median(row[arm]["events_per_s"] for row in r["rounds"])),
                " ".join(f"{x:.2f}" for x in ratios),
                fmt(statistics.median(ratios), ".2f"),
                fmt(statistics.median(row[arm]["cpu_s"] for row in r["rounds"]), ".1f"),
            ]
        )
    head = f"1-partition lr worker, confluent-kafka, n={r['n']:,}, rounds alternating"
    columns = ["arm", "events/s", "x River by round", "median", "CPU s"]
    return head + "\n" + table(rows, columns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="events (default 50000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs or rounds (default 3)")
    parser.add_argument("--worker", action="store_true", help="the worker through Kafka instead")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    if args.worker:
        result = measure_worker(args.n, args.repeats)
        print(worker_table(result))
    else:
        result = measure_offline(args.n, args.repeats)
        print(offline_table(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
