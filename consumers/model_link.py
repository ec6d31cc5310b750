"""The worker's side of its model process: batches out, answers back, outputs sent.

Each poll's records go to the model process as one `ProcessBatch` (with the inputs' caught-up
flags and the checkpoints wanted); its answers come back in order, and each answer's outputs
are sent before the partition's state on this side moves on. Up to PIPELINE_DEPTH batches may
be in the model process while the worker polls again, so that both processes stay busy.
"""

from __future__ import annotations

import collections
import logging
import time

from driftstream.consumers.checkpointing import Checkpointer
from driftstream.consumers.flow_control import FlowControl
from driftstream.consumers.model_messages import BatchAnswer, ProcessBatch, Push, Request
from driftstream.consumers.model_pool import ModelPool
from driftstream.consumers.model_process import LocalModel, ModelProcess
from driftstream.consumers.outage import Outage
from driftstream.consumers.output_sender import OutputSender
from driftstream.consumers.partition_task import PartitionTask
from driftstream.consumers.probe import WorkerProbe
from driftstream.stream.codec import parse_records
from driftstream.stream.pipeline import EVENTS, LABELS
from driftstream.transport import KafkaError, Record

__all__ = ["ANSWER_WAIT_S", "PIPELINE_DEPTH", "SUMMARY_EVERY_S", "ModelLink"]

log = logging.getLogger("driftstream.worker")

# Batches the model may hold while the worker polls. Polls alternate inputs, and a batch
# of one input often releases nothing until the other's comes: with 3, a batch with work is
# still queued while the worker sends the previous answer's outputs (1-partition backlog,
# bench: 2 gave 22k events/s, 3 gave 33k, 4 and 6 31-32k).
PIPELINE_DEPTH = 3
ANSWER_WAIT_S = 0.001  # waiting for an answer, look for fetched records this often
SUMMARY_EVERY_S = 1.0  # how fresh /metrics and progress displays are (summaries cost time)


class ModelLink:
    """Talks to the model process (`start` makes it) for the partitions in ``tasks``."""

    def __init__(
        self,
        tasks: dict[int, PartitionTask],
        inputs: tuple[str, str],
        sender: OutputSender,
        checkpoints: Checkpointer,
        outage: Outage,
        flow: FlowControl,
        checkpoint_interval: float,
        probe: WorkerProbe | None = None,
    ):
        self.tasks = tasks
        self.inputs = inputs
        self.sender = sender
        self.checkpoints = checkpoints
        self.outage = outage
        self.flow = flow
        self.checkpoint_interval = checkpoint_interval
        self.probe = probe
        self.model: LocalModel | ModelProcess | ModelPool | None = None
        self.n_processed = 0  # records processed, all partitions
        self.summaries_wanted = False  # by the metrics server or a progress display
        self._summary_due = 0.0
        self._polled: collections.deque = collections.deque()  # poll time of each batch sent

    def start(self, in_process: bool, processes: int = 1) -> None:
        """Fork the model process, or ``processes`` of them (`ModelPool`: each partition in
        one), before any Kafka client or server thread exists; or answer in this process."""
        if in_process:
            self.model = LocalModel()
        elif processes == 1:
            self.model = ModelProcess()
        else:
            self.model = ModelPool(processes)

    @property
    def in_flight(self) -> int:
        return self.model.in_flight if self.model is not None else 0

    @property
    def pid(self) -> int | None:
        """The (first) model process's pid (None when the model answers in this process)."""
        return (self.pids or [None])[0]

    @property
    def pids(self) -> list[int]:
        """Every model process's pid (empty when the model answers in this process)."""
        if isinstance(self.model, ModelPool):
            return [pid for pid in self.model.pids if pid is not None]
        process = getattr(self.model, "process", None)
        return [] if process is None else [process.pid]

    def home(self, p: int) -> int | None:
        """The pid of the model process partition p lives in (None: in this process)."""
        if isinstance(self.model, ModelPool):
            return self.model.pids[self.model.home[p]] if p in self.model.home else None
        return self.pid

    def submit(
        self,
        batches: dict[tuple[str, int], list[Record]],
        now_ms: int,
        polled_at: float,
        snapshot=(),
        reason: str = "periodic",
    ) -> None:
        """Send the model a batch: new records, caught-up flags, checkpoints wanted."""
        events_topic = self.inputs[EVENTS]
        pushes = []
        for (topic, p), recs in batches.items():
            if p in self.tasks:
                stream, kind = (EVENTS, "event") if topic == events_topic else (LABELS, "label")
                records = parse_records([(r.offset, r.timestamp, r.value) for r in recs], kind)
                pushes.append(Push(p, stream, records))
        now = time.monotonic()
        snapshot = list(snapshot)
        caught_up = {}
        waiting = False
        for p, task in self.tasks.items():
            flags = tuple(task.caught_up)
            if flags != task.sent_caught_up:
                caught_up[p] = task.sent_caught_up = flags
            waiting = waiting or task.queued != (0, 0)
            if (
                not snapshot
                and task.since_checkpoint
                and now - task.last_checkpoint >= self.checkpoint_interval
            ):
                snapshot.append(p)
                task.last_checkpoint = now  # asked for; not again before it is saved
        want_summary = self.summaries_wanted and now >= self._summary_due
        if pushes or caught_up or snapshot or waiting or want_summary or self.checkpoints.awaiting:
            if want_summary:
                self._summary_due = now + SUMMARY_EVERY_S
            self.model.submit(
                ProcessBatch(now_ms, pushes, caught_up, snapshot, reason, want_summary)
            )
            self._polled.append(polled_at)

    def await_answers(self, records_fetched) -> None:
        """Send the model's answers as they come, until none is due or records already
        fetched (``records_fetched()``) can be handed over (then the next poll takes them
        while the model works, and both cores are busy)."""
        model = self.model
        while model.in_flight:
            if model.answered():
                self.collect()
            elif model.in_flight < PIPELINE_DEPTH and records_fetched():
                return
            else:
                # kafka-python fetches on its own thread: look for its records again soon
                model.wait(ANSWER_WAIT_S)

    def collect(self, discard: bool = False) -> None:
        """Take the model's oldest answer and send its outputs (unless discarded)."""
        answer = self.model.collect()
        polled_at = self._polled.popleft()
        try:
            if not (discard or self.outage.needs_rewind):  # else: a state being rewound
                if self.probe is not None:
                    self.probe.answered(answer, polled_at)
                self._apply(answer, polled_at)
        except KafkaError as e:
            self.outage.failed(f"{type(e).__name__}: {e}")
        finally:
            for path, problem in answer.state_files.items():
                self.checkpoints.state_written(path, problem)

    def drain(self, discard: bool = False) -> None:
        """Collect every answer due."""
        while self.model.in_flight:
            self.collect(discard)

    def call(self, request: Request):
        """Ask the model something and wait for the answer (after the batches before it)."""
        self.drain(discard=self.outage.needs_rewind)
        self.model.submit(request)
        return self.model.collect()

    def save_now(self, tasks: list[PartitionTask], reason: str) -> bool:
        """Checkpoint these partitions now (revoke, shutdown); False if any was not saved."""
        if not tasks:
            return True
        if not self.outage.ok or self.outage.needs_rewind:
            return False
        self.drain()
        self.submit(
            {},
            time.time_ns() // 1_000_000,
            time.perf_counter(),
            [t.partition for t in tasks],
            reason,
        )
        self.drain()
        return self.outage.ok and not any(self.checkpoints.unsaved(t) for t in tasks)

    def close(self) -> None:
        if self.model is not None:
            self.model.close()

    def _apply(self, answer: BatchAnswer, polled_at: float) -> None:
        for p, progress in answer.progress.items():
            task = self.tasks.get(p)
            if task is None:
                continue
            if not self.sender.send(task, progress.outputs, self.checkpoints.take):
                return  # Kafka failed: every partition goes back to its checkpoint
            task.next_offset = progress.next_offset
            task.queued = progress.queued
            task.since_checkpoint = progress.since_checkpoint
            task.model = progress.model
            if progress.summary is not None:
                task.summary = progress.summary
            if progress.processed:
                self.n_processed += progress.processed
                task.latency.observe(time.perf_counter() - polled_at)
            self.flow.pause_full(task)
