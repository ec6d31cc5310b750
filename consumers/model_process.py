"""The worker's model process: the partition pipelines run here, beside the Kafka I/O.

kafka-python spends about as much CPU per event as decoding, merging, learning and encoding
do together, and Python runs one thread at a time. So the worker keeps consuming, producing
and SQLite in its own process and hands each poll's records to a child process that owns the
`stream.pipeline.PartitionPipeline` of every assigned partition; while the child scores one
batch, the worker sends the outputs of the previous one. Requests and answers go in order over
one pipe, pickled; the answers hold encoded outputs and checkpoint snapshots, never models.

`LocalModel` answers the same requests in the worker's own process (``--model-process off``):
one core, no pipe, same outputs.

Requests are tuples:

- ``("open", partition, state | None, config, topics, offsets, idle_ms, now_ms,
  checkpoint_every)`` → `Opened`: a pipeline from a checkpoint's state or a fresh learner.
- ``("close", partitions)`` → None.
- ``("batch", now_ms, pushes, caught_up, snapshot, reason, want_summary)`` →
  `BatchAnswer`: push ``[(partition, stream, [(offset, timestamp, value), ...]),
  ...]``, set each partition's caught-up flags, process what is ready, and snapshot the
  partitions listed in ``snapshot``.
  Summaries (metrics computed over the rolling window: not free) only if ``want_summary``.

A periodic snapshot of a learner holding many pending joins (pickling a million takes about
two seconds) is written by a forked copy of the model process, so that scoring goes on: its
`StateSnapshot` names the file, and a later answer says the file is complete. The file's name
holds the model process's pid, so that a file left by a worker killed meanwhile is found and
removed when a worker next starts (`remove_orphaned_state_files`).

>>> from driftstream.stream.learner import LearnerConfig
>>> model = LocalModel()
>>> model.submit(("open", 0, None, LearnerConfig(), ("ev", "lb"), [0, 0], None, 0, 100))
>>> model.collect().model
ModelVersion(generation=0, updates=0)
>>> model.submit(("batch", 0, [(0, 0, [(0, 5, b'{"id": "a", "features": {"x": 1}}')])],
...               {0: (True, True)}, [0], "shutdown", False))
>>> [role for role, *_ in model.collect().progress[0].outputs]
['predictions', 'checkpoint']
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
import traceback
from dataclasses import dataclass, field

from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.pipeline import PartitionPipeline
from driftstream.stream.records import ModelVersion


class ModelProcessError(RuntimeError):
    """The model process failed (the message has its traceback) or died."""


@dataclass
class Opened:
    """What the worker learns of a pipeline it opened."""

    model: ModelVersion
    config: LearnerConfig
    summary: dict


@dataclass
class Progress:
    """One partition's outputs from a batch, and where it stands after it."""

    outputs: list[tuple]  # (role, key, value, info), see stream.pipeline
    processed: int  # records taken from the merge in this batch
    next_offset: list[int]
    queued: tuple[int, int]  # records waiting in the merge, per input stream
    since_checkpoint: int
    model: ModelVersion
    summary: dict | None  # if asked for


@dataclass
class BatchAnswer:
    """A batch's progress per partition, and the state files finished since the last answer
    (file name -> None when complete, else what went wrong)."""

    progress: dict[int, Progress]
    state_files: dict[str, str | None] = field(default_factory=dict)


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

    def handle(self, request: tuple):
        kind = request[0]
        if kind == "batch":
            return self._batch(*request[1:])
        if kind == "open":
            return self._open(*request[1:])
        if kind == "close":
            for p in request[1]:
                self.pipelines.pop(p, None)
            return None
        raise ValueError(f"unknown request {kind!r}")

    def _open(self, p, state, config, topics, offsets, idle_ms, now_ms, checkpoint_every):
        learner = Learner(config, partition=p) if state is None else Learner.from_bytes(state)
        pipe = PartitionPipeline(
            learner,
            topics,
            offsets,
            idle_ms,
            now_ms,
            checkpoint_every,
            lambda learner: self._serialize(p, learner),
        )
        self.pipelines[p] = pipe
        return Opened(learner.version, learner.config, learner.summary())

    def _batch(self, now_ms, pushes, caught_up, snapshot, reason, want_summary):
        for p in list(self.writing):
            self._reap(p)
        for p, stream, records in pushes:
            pipe = self.pipelines.get(p)
            if pipe is not None:
                pipe.push(stream, records, now_ms)
        for p, flags in caught_up.items():
            pipe = self.pipelines.get(p)
            if pipe is not None:
                pipe.set_caught_up(0, flags[0])
                pipe.set_caught_up(1, flags[1])
        answer = {}
        for p, pipe in self.pipelines.items():
            before = pipe.n_processed
            outputs = pipe.run(now_ms)
            if p in snapshot:
                pipe.checkpoint(reason, outputs)
            answer[p] = Progress(
                outputs,
                pipe.n_processed - before,
                list(pipe.next_offset),
                (pipe.queued(0), pipe.queued(1)),
                pipe.since_checkpoint,
                pipe.learner.version,
                pipe.learner.summary() if want_summary else None,
            )
        finished, self.finished = self.finished, {}
        return BatchAnswer(answer, finished)

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

    def submit(self, request: tuple) -> None:
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

    def submit(self, request: tuple) -> None:
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
