"""The worker's model process: the partition pipelines run here, beside the Kafka I/O.

kafka-python spends about as much CPU per event as merging, learning and the rest do
together, and Python runs one thread at a time. So the worker keeps consuming, producing and
the checkpoint store in its own process and hands each poll's records, parsed, to a child
process that owns the `stream.pipeline.PartitionPipeline` of every assigned partition; while
the child scores one batch, the worker sends the outputs of the previous one. Requests and
answers go in order over one pipe, pickled; the answers hold the outputs (predictions as
rows, which the worker encodes: the model process bounds it) and checkpoint snapshots, never
models. A checkpoint's state is unpickled here, through the allow-list.

`LocalModel` answers the same requests in the worker's own process (``--model-process off``):
one core, no pipe, same outputs.

The requests and answers are in `consumers.model_messages`: `OpenPartition` → `Opened`,
`ClosePartitions` → None, `ProcessBatch` → `BatchAnswer`.

A periodic snapshot of a learner holding many pending joins (pickling a million takes about
two seconds) is written by a forked copy of the model process, so that scoring goes on: its
`StateSnapshot` names the file, and a later answer says the file is complete. The file's name
holds the model process's pid, so that a file left by a worker killed meanwhile is found and
removed when a worker next starts (`remove_orphaned_state_files`).

>>> from driftstream.stream.learner import LearnerConfig
>>> model = LocalModel()
>>> model.submit(OpenPartition(0, None, LearnerConfig(), ("ev", "lb"), [0, 0], None, 0, 100))
>>> model.collect().model
ModelVersion(generation=0, updates=0)
>>> from driftstream.stream.codec import parse_records
>>> records = parse_records([(0, 5, b'{"id": "a", "features": {"x": 1}}')], "event")
>>> model.submit(ProcessBatch(0, [Push(0, EVENTS, records)], {0: (True, True)}, [0], "shutdown"))
>>> [type(output).__name__ for output in model.collect().progress[0].outputs]
['Predictions', 'StateSnapshot']
"""

from __future__ import annotations

import collections
import gc
import glob
import multiprocessing
import os
import pickle
import queue
import signal
import tempfile
import threading
import time
import traceback

from driftstream.consumers.model_messages import (
    BatchAnswer,
    ClosePartitions,
    Opened,
    OpenPartition,
    ProcessBatch,
    Progress,
    Push,
    Request,
)
from driftstream.state.safe_pickle import load_learner
from driftstream.stream.learner import Learner
from driftstream.stream.pipeline import EVENTS, LABELS, PartitionPipeline

__all__ = [
    "BatchAnswer",
    "ClosePartitions",
    "LocalModel",
    "ModelHost",
    "ModelProcess",
    "ModelProcessError",
    "OpenPartition",
    "ProcessBatch",
    "Push",
    "remove_orphaned_state_files",
    "remove_quietly",
]


class ModelProcessError(RuntimeError):
    """The model process failed (the message has its traceback) or died."""


YOUNG_GC_THRESHOLD = 10_000  # allocations between young collections in the model process
FORK_STATE_ABOVE = 100_000  # pending joins from which a periodic state is written by a fork
STATE_FILE_PREFIX = "driftstream-state-pid"  # then <model process pid>-<partition>-<random>


class ModelHost:
    """The pipelines of the partitions a worker owns; answers its requests.

    ``fork_above``: pending joins from which periodic states are written by a forked
    process (None: always pickled in line).
    """

    def __init__(self, fork_above: int | None = None):
        self.pipelines: dict[int, PartitionPipeline] = {}
        self.fork_above = fork_above
        self.writing: dict[int, tuple[int, str]] = {}  # partition -> (pid, file)
        self.finished: dict[str, str | None] = {}

    def handle(self, request: Request) -> Opened | BatchAnswer | None:
        cls = request.__class__
        if cls is ProcessBatch:
            return self._batch(request)
        if cls is OpenPartition:
            return self._open(request)
        if cls is ClosePartitions:
            for p in request.partitions:
                self.pipelines.pop(p, None)
            return None
        raise TypeError(f"not a model request: {request!r}")

    def _open(self, request: OpenPartition) -> Opened:
        p = request.partition
        if request.state is None:
            learner = Learner(request.config, partition=p)
        else:
            try:  # through the allow-list: a checkpoint may only hold what a learner is made of
                learner = load_learner(request.state)
            except (
                pickle.UnpicklingError,
                EOFError,
                TypeError,
                ValueError,
                AttributeError,
                ImportError,
            ) as e:
                self.pipelines.pop(p, None)
                return Opened(None, None, {}, refused=f"{type(e).__name__}: {e}")
        pipe = PartitionPipeline(
            learner,
            request.topics,
            request.offsets,
            request.idle_ms,
            request.now_ms,
            request.checkpoint_every,
            lambda learner: self._serialize(p, learner),
        )
        self.pipelines[p] = pipe
        return Opened(learner.version, learner.config, learner.summary())

    def _batch(self, batch: ProcessBatch) -> BatchAnswer:
        started = time.perf_counter()
        now_ms = batch.now_ms
        for p in list(self.writing):
            self._reap(p)
        for push in batch.pushes:
            pipe = self.pipelines.get(push.partition)
            if pipe is not None:
                pipe.push(push.stream, push.records, now_ms)
        for p, (events_caught_up, labels_caught_up) in batch.caught_up.items():
            pipe = self.pipelines.get(p)
            if pipe is not None:
                pipe.set_caught_up(EVENTS, events_caught_up)
                pipe.set_caught_up(LABELS, labels_caught_up)
        snapshot = batch.snapshot
        want_summary = batch.want_summary
        answer = {}
        for p, pipe in self.pipelines.items():
            before = pipe.n_processed
            outputs = pipe.run(now_ms)
            if p in snapshot:
                pipe.checkpoint(batch.reason, outputs)
            answer[p] = Progress(
                outputs,
                pipe.n_processed - before,
                list(pipe.next_offset),
                (pipe.queued(EVENTS), pipe.queued(LABELS)),
                pipe.since_checkpoint,
                pipe.learner.version,
                pipe.learner.summary() if want_summary else None,
            )
        finished, self.finished = self.finished, {}
        return BatchAnswer(answer, finished, started, time.perf_counter())

    def _serialize(self, p: int, learner: Learner) -> bytes | str | None:
        if self.fork_above is None or len(learner.pending) < self.fork_above:
            return learner.to_bytes()
        if p in self.writing and not self._reap(p):
            return None  # the previous state is still being written: snapshot a bit later
        fd, path = tempfile.mkstemp(
            prefix=f"{STATE_FILE_PREFIX}{os.getpid()}-{p}-", suffix=".pickle"
        )
        pid = os.fork()
        if pid == 0:  # the copy: the learner as it is now, whatever the model process does next
            code = 1
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(learner.to_bytes())
                code = 0
            finally:
                os._exit(code)
        os.close(fd)
        self.writing[p] = (pid, path)
        return path

    def _reap(self, p: int) -> bool:
        """True if partition p's state writer has ended (its outcome noted for the worker)."""
        pid, path = self.writing[p]
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            return False
        code = os.waitstatus_to_exitcode(status)
        self.finished[path] = None if code == 0 else f"the writing process exited with {code}"
        del self.writing[p]
        return True

    def close(self) -> None:
        """Wait for state writers; remove files the worker will not read any more."""
        for p in list(self.writing):
            pid, path = self.writing.pop(p)
            os.waitpid(pid, 0)
            self.finished[path] = None
        for path in self.finished:
            remove_quietly(path)
        self.finished = {}


def remove_quietly(path: str) -> None:
    """Remove a state file (already gone is fine)."""
    try:
        os.remove(path)
    except OSError:
        pass


def remove_orphaned_state_files(directory: str | None = None) -> list[str]:
    """Remove the state files in ``directory`` (default: the temporary directory) whose model
    process is gone, and return their paths. A worker killed while a fork was writing its
    state never reads nor removes that file; each can be as large as a checkpoint."""
    removed = []
    pattern = os.path.join(directory or tempfile.gettempdir(), f"{STATE_FILE_PREFIX}*.pickle")
    for path in glob.glob(pattern):
        pid = os.path.basename(path)[len(STATE_FILE_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            remove_quietly(path)
            removed.append(path)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


class LocalModel:
    """Answers requests in this process, at once."""

    def __init__(self):
        self.host = ModelHost()
        self.answers: collections.deque = collections.deque()

    @property
    def in_flight(self) -> int:
        return len(self.answers)

    def submit(self, request: Request) -> None:
        self.answers.append(self.host.handle(request))

    def collect(self):
        return self.answers.popleft()

    def answered(self) -> bool:
        return bool(self.answers)

    def wait(self, timeout: float) -> None:
        pass  # answers are ready at once

    def close(self) -> None:
        self.answers.clear()
        self.host.close()


class ModelProcess:
    """Answers requests in a child process, in order; `collect` waits for the oldest."""

    def __init__(self):
        # fork: the child needs no fresh interpreter (River is imported already). The worker
        # starts it before it creates any Kafka client, so no client thread is copied.
        ctx = multiprocessing.get_context("fork")
        self.conn, child_end = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child_end, os.getpid()), name="driftstream-model", daemon=True
        )
        self.process.start()
        child_end.close()
        self.in_flight = 0

    def submit(self, request: Request) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(request, protocol=5))
        except OSError:
            raise self._died() from None
        self.in_flight += 1

    def collect(self):
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            raise self._died() from None
        self.in_flight -= 1
        status, payload = pickle.loads(data)
        if status == "error":
            raise ModelProcessError(f"the model process failed:\n{payload}")
        return payload

    def answered(self) -> bool:
        """Whether `collect` would return at once."""
        return self.conn.poll()

    def wait(self, timeout: float) -> None:
        """Until an answer is there, or ``timeout`` seconds."""
        self.conn.poll(timeout)

    def close(self, timeout: float = 10.0) -> None:
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()

    def _died(self) -> ModelProcessError:
        self.process.join(5)
        return ModelProcessError(f"the model process exited (code {self.process.exitcode})")


def _serve(conn, parent_pid: int) -> None:
    """The child: read requests on a thread (so the worker never blocks sending one while
    this process is sending an answer), answer them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when this process ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(parent_pid)
    gc.freeze()  # what the fork brought along is never garbage: keep the collector off it
    # Scoring allocates a few short-lived objects per record and keeps few: young collections
    # every 10,000 allocations rather than 700 take ~3 µs an event off (bench/results/
    # model-process-cost.md); the older generations keep their default pace.
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    requests: queue.SimpleQueue = queue.SimpleQueue()

    def read():
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                data = b""
            requests.put(data)
            if not data:
                return

    threading.Thread(target=read, name="requests", daemon=True).start()
    host = ModelHost(fork_above=FORK_STATE_ABOVE)
    try:
        while True:
            data = requests.get()
            if not data:
                return
            try:
                answer = ("ok", host.handle(pickle.loads(data)))
            except Exception:  # noqa: BLE001 - any failure is the worker's to report
                answer = ("error", traceback.format_exc())
            try:
                conn.send_bytes(pickle.dumps(answer, protocol=5))
            except OSError:  # the worker is gone
                return
    finally:
        host.close()


def _die_with(parent_pid: int) -> None:
    """Be killed with the worker, even by SIGKILL (Linux; elsewhere the pipe's end-of-file
    ends this process once it is idle)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)
