"""The model process answers exactly as the in-process model, reports failures, and dies
with its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from driftstream.consumers.model_messages import (
    BatchAnswer,
    ClosePartitions,
    OpenPartition,
    ProcessBatch,
    Push,
)
from driftstream.consumers.model_process import (
    LocalModel,
    ModelHost,
    ModelProcess,
    ModelProcessError,
    remove_orphaned_state_files,
)
from driftstream.producers.sources import event_record, label_record, synthetic
from driftstream.stream.codec import parse_records
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.outputs import Predictions, StateSnapshot
from driftstream.stream.pipeline import EVENTS, LABELS

DEADLINE_S = 20.0


def requests(n: int = 1500, every: int = 400) -> list:
    """Open two partitions, feed them in three batches each, snapshot one at the end."""
    samples = list(synthetic("sea", n=n, seed=2, drift_at=[n // 2], label_delay="50", start_ts=0))
    events = [(i, 0, orjson.dumps(event_record(s))) for i, s in enumerate(samples)]
    labels = [(i, 0, orjson.dumps(label_record(s))) for i, s in enumerate(samples)]
    events, labels = parse_records(events, "event"), parse_records(labels, "label")
    out = [
        OpenPartition(p, None, LearnerConfig(model="lr"), ("ev", "lb"), [0, 0], None, 0, every)
        for p in (0, 1)
    ]
    third = n // 3
    for k in range(3):
        part = slice(k * third, n if k == 2 else (k + 1) * third)
        pushes = [Push(p, EVENTS, events[part]) for p in (0, 1)] + [
            Push(p, LABELS, labels[part]) for p in (0, 1)
        ]
        caught_up = {p: (k == 2, k == 2) for p in (0, 1)}
        out.append(ProcessBatch(0, pushes, caught_up, [1] if k == 2 else [], "shutdown", k == 2))
    return out


def answers(model, reqs: list) -> list:
    got = []
    for r in reqs:
        model.submit(r)
        if isinstance(r, ProcessBatch):  # two in flight, like the worker
            continue
        got.append(model.collect())
    while model.in_flight:
        got.append(model.collect())
    return got


def comparable(answer):
    """Outputs and progress; learner states as canonical bytes (pickles may differ)."""
    if not isinstance(answer, BatchAnswer):
        return (answer.model, answer.config)
    out = {}
    for p, prog in answer.progress.items():
        outputs = [
            output
            if not isinstance(output, StateSnapshot)
            else (
                output.offsets,
                output.model,
                Learner.from_bytes(output.state).canonical_bytes(),
            )
            for output in prog.outputs
        ]
        out[p] = (
            outputs,
            prog.processed,
            prog.next_offset,
            prog.queued,
            prog.since_checkpoint,
            prog.model,
            prog.summary,
        )
    return out


def test_model_process_answers_as_the_local_model():
    reqs = requests()
    local = answers(LocalModel(), reqs)
    model = ModelProcess()
    try:
        remote = answers(model, reqs)
    finally:
        model.close()
    assert [comparable(a) for a in remote] == [comparable(a) for a in local]
    final = local[-1].progress
    kinds = [type(o) for o in final[1].outputs]
    assert kinds.count(Predictions) > 0 and kinds[-1] == StateSnapshot
    # Every record of both inputs was processed, with a snapshot each `every` records.
    batches = [a.progress for a in local if isinstance(a, BatchAnswer)]
    assert sum(a[0].processed for a in batches) == 3000
    n_snapshots = sum(isinstance(o, StateSnapshot) for a in batches for o in a[0].outputs)
    assert n_snapshots == 3000 // 400


def test_a_failure_in_the_model_process_is_reported_with_its_traceback():
    model = ModelProcess()
    try:
        model.submit("not a request")
        with pytest.raises(
            ModelProcessError, match="(?s)Traceback.*TypeError: not a model request"
        ):
            model.collect()
        model.submit(ClosePartitions([0]))  # it goes on answering
        assert model.collect() is None
    finally:
        model.close()


def test_a_state_that_cannot_be_loaded_is_answered_as_refused():
    model = ModelProcess()
    try:
        model.submit(
            OpenPartition(0, b"not a pickle", LearnerConfig(), ("ev", "lb"), [0, 0], None, 0, 10)
        )
        opened = model.collect()
        assert opened.refused is not None and "Unpickling" in opened.refused
        model.submit(ProcessBatch(0))  # the refused partition was not opened
        assert model.collect().progress == {}
    finally:
        model.close()


def test_a_dead_model_process_is_reported():
    model = ModelProcess()
    try:
        os.kill(model.process.pid, signal.SIGKILL)
        with pytest.raises(ModelProcessError, match="exited"):
            model.submit(ClosePartitions([]))
            model.collect()
    finally:
        model.close()


def test_the_model_process_dies_with_a_killed_worker():
    script = textwrap.dedent("""
        import os, signal, sys
        from driftstream.consumers.model_process import ModelProcess
        model = ModelProcess()
        print(model.process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + DEADLINE_S
    while _alive(child):
        assert time.monotonic() < deadline, f"model process {child} outlived its worker"
        time.sleep(0.02)  # polling interval of the condition, not a synchronisation


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its new parent, init, reaps it)


def test_large_states_are_written_by_a_fork_and_equal_the_inline_ones(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    reqs = requests(n=3000, every=1000)
    inline = [a for a in answers(LocalModel(), reqs) if isinstance(a, BatchAnswer)]
    host = ModelHost(fork_above=10)  # label delay 50: ~50 pending joins, over the limit
    forked = [host.handle(r) for r in reqs]
    files = {}
    deadline = time.monotonic() + DEADLINE_S
    while True:  # empty batches until every writer is reported
        for a in forked:
            if isinstance(a, BatchAnswer):
                files.update(a.state_files)
        snaps = [
            o
            for a in forked
            if isinstance(a, BatchAnswer)
            for prog in a.progress.values()
            for o in prog.outputs
            if isinstance(o, StateSnapshot)
        ]
        if all(s.state_file in files for s in snaps if s.state_file):
            break
        assert time.monotonic() < deadline, "state writers not reported"
        forked.append(host.handle(ProcessBatch(0)))
        time.sleep(0.01)  # polling interval of the condition, not a synchronisation
    assert all(problem is None for problem in files.values())
    # Named after the process that forked them (here: this one), for remove_orphaned_state_files.
    assert files and all(
        os.path.basename(path).startswith(f"driftstream-state-pid{os.getpid()}-") for path in files
    )
    reference = {
        (p, tuple(o.offsets)): Learner.from_bytes(o.state).canonical_bytes()
        for a in inline
        for p, prog in a.progress.items()
        for o in prog.outputs
        if isinstance(o, StateSnapshot)
    }
    written = [
        (p, o)
        for a in forked
        if isinstance(a, BatchAnswer)
        for p, prog in a.progress.items()
        for o in prog.outputs
        if isinstance(o, StateSnapshot)
    ]
    periodic = [(p, s) for p, s in written if s.reason == "periodic"]
    big = [(p, s) for p, s in periodic if s.summary["pending"] >= 10]
    assert big and all(s.state is None and s.state_file for _, s in big)
    assert all(s.state is not None for _, s in written if (_, s) not in big)
    matched = 0
    for p, snap in big:
        with open(snap.state_file, "rb") as f:
            learner = Learner.from_bytes(f.read())
        # The state is the learner exactly at the snapshot's offsets.
        assert learner.n_events == snap.offsets[0], (p, snap.offsets)
        key = (p, tuple(snap.offsets))
        if key in reference:  # not postponed by a writer still busy
            assert learner.canonical_bytes() == reference[key]
            matched += 1
    assert matched >= 1
    # A last snapshot whose writer has not been reported: close waits and removes its file;
    # the reported ones are the worker's (it removes each once read).
    extra = parse_records(
        [(10_000 + i, 0, orjson.dumps({"id": f"x{i}", "features": {"a": 1.0}})) for i in range(20)],
        "event",
    )
    last = host.handle(ProcessBatch(0, [Push(0, EVENTS, extra)], snapshot=[0]))
    # 20 pending joins: forked. Usually that is the snapshot asked for; but when earlier
    # periodic snapshots were postponed (writers busy), these records can bring a periodic one
    # first (pickled here below 10 pending joins, else forked, and then the one asked for
    # waits while its writer is busy). In every case a writer not yet reported is left.
    snaps = [o for o in last.progress[0].outputs if isinstance(o, StateSnapshot)]
    assert any(snap.state_file for snap in snaps)
    host.close()
    assert {str(f) for f in tmp_path.glob("driftstream-state-*")} == set(files)


def test_state_files_whose_model_process_is_gone_are_removed(tmp_path, ended_pid):
    orphan = tmp_path / f"driftstream-state-pid{ended_pid}-0-x1.pickle"
    ours = tmp_path / f"driftstream-state-pid{os.getpid()}-0-x2.pickle"  # being written
    older = tmp_path / "driftstream-state-0-x3.pickle"  # the old name: no pid, left alone
    other = tmp_path / "notes.pickle"
    for path in (orphan, ours, older, other):
        path.write_bytes(b"state")
    assert remove_orphaned_state_files(str(tmp_path)) == [str(orphan)]
    assert sorted(tmp_path.iterdir()) == sorted([ours, older, other])
    assert remove_orphaned_state_files(str(tmp_path)) == []
