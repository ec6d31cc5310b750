"""The worker: one consumer-group member that runs a learner per assigned partition.

For each partition number p it owns (events[p] and labels[p], co-partitioned by the range
assignor) it decodes records, merges them in event-time order, feeds the learner, publishes
predictions, drift reports, metrics and dead letters, and checkpoints the learner together
with the input offsets it reflects. On assignment it restores the newest checkpoint and seeks
to its offsets, so that after a crash the state is what an uninterrupted run would have.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
from dataclasses import dataclass, field

from producers.kafka_client import Consumer, KafkaSettings, Producer, Record, topic_names
from state.checkpoints import StateStore
from stream.codec import InvalidRecord, decode_event, decode_label, encode
from stream.learner import Learner, LearnerConfig
from stream.merge import EVENTS, LABELS, EventTimeMerge
from stream.records import DriftReport, Prediction, Rejection

log = logging.getLogger("driftstream.worker")

PAUSE_ABOVE = 50_000  # records queued in one merge input before its partition is paused
RESUME_BELOW = 10_000


@dataclass
class WorkerOptions:
    """How a worker runs (the learner's own options are in `LearnerConfig`)."""

    group: str = "driftstream"
    topic_prefix: str = ""
    checkpoint_every: int = 10_000  # records processed in a partition between checkpoints
    checkpoint_interval: float = 10.0  # seconds between checkpoints of a busy partition
    exit_when_idle: float | None = None  # exit once caught up and idle this long (seconds)
    max_idle_ms: int | None = None  # release one input if the other sent nothing this long
    poll_ms: int = 100
    max_poll_records: int = 5000


@dataclass
class PartitionTask:
    """Everything the worker keeps for one partition number."""

    partition: int
    learner: Learner
    merge: EventTimeMerge
    next_offset: list[int]  # next offset to process, per input stream
    last_ts: list[int]  # newest timestamp pushed, per input stream
    since_checkpoint: int = 0
    last_checkpoint: float = field(default_factory=time.monotonic)
    drift_since_checkpoint: list[dict] = field(default_factory=list)
    paused: set = field(default_factory=set)


class Worker:
    """Run with `run()`; stop from a signal handler with `stop()`."""

    def __init__(self, settings: KafkaSettings, config: LearnerConfig, state_path: str,
                 options: WorkerOptions | None = None):
        self.settings = settings
        self.config = config
        self.options = options = options or WorkerOptions()
        self.topics = topic_names(options.topic_prefix)
        self.inputs = (self.topics["events"], self.topics["labels"])
        self.store = StateStore(state_path)
        self.tasks: dict[int, PartitionTask] = {}
        self.stopping = False
        self.assigned_once = False
        self.n_processed = 0
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self._out_partitions: dict[str, int] = {}
        # kafka-python calls rebalance listeners on its own I/O thread: they only queue the
        # change here, and the main thread applies it between polls.
        self._rebalances: queue.SimpleQueue = queue.SimpleQueue()

    def stop(self) -> None:
        self.stopping = True

    # -- main loop ------------------------------------------------------------------------

    def run(self, on_tick=None) -> int:
        """Consume until stopped (or idle, with ``exit_when_idle``); return an exit code.

        ``on_tick(worker)`` is called after every poll, for progress displays.
        """
        opts = self.options
        self.producer = Producer(self.settings, client_id="driftstream-worker")
        self.consumer = Consumer(self.settings, group_id=opts.group,
                                 client_id="driftstream-worker",
                                 max_poll_records=opts.max_poll_records)
        for role in ("predictions", "drift", "metrics", "deadletter"):
            self._out_partitions[role] = len(self.consumer.partitions_for(self.topics[role]))
        self.consumer.subscribe(list(self.inputs),
                                lambda tps: self._rebalances.put((self._on_assign, tps)),
                                lambda tps: self._rebalances.put((self._on_revoke, tps)))
        idle_since = time.monotonic()
        started = idle_since
        try:
            while not self.stopping:
                records = self.consumer.poll(opts.poll_ms)
                now_ms = time.time_ns() // 1_000_000
                if not self._rebalances.empty():
                    fresh = self._apply_rebalances()
                    # A rebalance is activity: after a revocation the worker holds no partition
                    # until the new assignment arrives, and must not take that for idleness.
                    idle_since = time.monotonic()
                    # Records fetched before the seek to the checkpoint are fetched again.
                    records = [r for r in records if r.partition not in fresh]
                if records:
                    idle_since = time.monotonic()
                    self._push(records, now_ms)
                self._update_caught_up()
                self._process(now_ms)
                self._checkpoint_due()
                if on_tick is not None:
                    on_tick(self)
                if opts.exit_when_idle is not None and self._idle_exit(idle_since, started):
                    break
        finally:
            self._shutdown()
        return 0

    def _idle_exit(self, idle_since: float, started: float) -> bool:
        waited = time.monotonic() - idle_since
        if waited < self.options.exit_when_idle:
            return False
        if not self.assigned_once:  # still joining the group: give it a while
            return time.monotonic() - started > self.options.exit_when_idle + 30
        return all(t.merge.pending() == 0 and all(t.merge.caught_up)
                   for t in self.tasks.values())

    def _push(self, records: list[Record], now_ms: int) -> None:
        events_topic = self.inputs[0]
        by_tp: dict[tuple[str, int], list[Record]] = {}
        for r in records:
            by_tp.setdefault((r.topic, r.partition), []).append(r)
        for (topic, p), recs in by_tp.items():
            task = self.tasks.get(p)
            if task is None:
                continue
            stream = EVENTS if topic == events_topic else LABELS
            decode = decode_event if stream == EVENTS else decode_label
            last = task.last_ts[stream]
            batch = []
            for r in recs:
                if r.offset < task.next_offset[stream]:
                    continue  # already reflected in the learner (re-delivered after a seek)
                try:
                    item = decode(r.value, r.timestamp)
                    item.topic, item.partition, item.offset, item.raw = topic, p, r.offset, r.value
                    last = item.ts
                except InvalidRecord as e:
                    # Bad records keep their place in the stream, at its current time.
                    item = Rejection(e.reason, e.detail, topic, p, r.offset, r.value)
                batch.append((last, item))
            task.last_ts[stream] = last
            task.merge.push(stream, batch, now_ms)
            if len(task.merge.queues[stream]) > PAUSE_ABOVE and (topic, p) not in task.paused:
                self.consumer.pause([(topic, p)])
                task.paused.add((topic, p))

    def _update_caught_up(self) -> None:
        for p, task in self.tasks.items():
            for stream, topic in enumerate(self.inputs):
                high = self.consumer.highwater(topic, p)
                caught = high is not None and self.consumer.position(topic, p) >= high
                task.merge.set_caught_up(stream, caught)
                tp = (topic, p)
                if tp in task.paused and len(task.merge.queues[stream]) < RESUME_BELOW:
                    self.consumer.resume([tp])
                    task.paused.discard(tp)

    def _process(self, now_ms: int) -> None:
        every = self.options.checkpoint_every
        for task in self.tasks.values():
            learner = task.learner
            offsets = task.next_offset
            n = 0
            for stream, item in task.merge.pop_ready(now_ms):
                if item.__class__ is Rejection:
                    learner.count_rejection(item.reason)
                    outs = (item,)
                elif stream == EVENTS:
                    outs = learner.process_event(item, now_ms)
                else:
                    outs = learner.process_label(item)
                offsets[stream] = item.offset + 1
                for out in outs:
                    self._emit(task, out)
                n += 1
                if task.since_checkpoint + n >= every:
                    # One poll brings up to max_poll_records records: checkpoint inside the
                    # batch, at this record boundary, so that checkpoint_every holds.
                    task.since_checkpoint += n
                    self.n_processed += n
                    n = 0
                    self._checkpoint([task])
            task.since_checkpoint += n
            self.n_processed += n

    def _emit(self, task: PartitionTask, out) -> None:
        cls = out.__class__
        if cls is Prediction:
            self._send("predictions", out.to_wire(), out.id, task.partition)
        elif cls is Rejection:
            self._send("deadletter", out.to_wire(), out.id, task.partition)
            log.warning("dead letter partition=%d offset=%d reason=%s: %s",
                        task.partition, out.offset, out.reason, out.detail)
        elif cls is DriftReport:
            wire = out.to_wire()
            task.drift_since_checkpoint.append(wire)
            self._send("drift", wire, None, task.partition)
            log.info("drift kind=%s partition=%d action=%s model=%s->%s", out.kind,
                     task.partition, out.action, out.model_before, out.model_after)

    def _send(self, role: str, wire: dict, key: str | None, partition: int) -> None:
        n = self._out_partitions.get(role) or 1
        self.producer.send(self.topics[role], encode(wire),
                           key.encode() if key is not None else None, partition % n)

    # -- checkpoints and rebalances -----------------------------------------------------

    def _checkpoint_due(self) -> None:
        opts = self.options
        now = time.monotonic()
        for task in self.tasks.values():
            if task.since_checkpoint and (task.since_checkpoint >= opts.checkpoint_every or
                                          now - task.last_checkpoint >= opts.checkpoint_interval):
                self._checkpoint([task])

    def _checkpoint(self, tasks: list[PartitionTask]) -> None:
        """Flush outputs, then save each learner with the offsets it reflects (one txn each)."""
        if not tasks:
            return
        self.producer.flush()
        commits = {}
        for task in tasks:
            learner = task.learner
            offsets = dict(zip(self.inputs, task.next_offset))
            _fault_point("checkpoint")
            summary = learner.summary()
            self._send("metrics", {**summary, "offsets": offsets}, None, task.partition)
            version = self.store.save_checkpoint(
                task.partition, learner.to_bytes(), offsets,
                (learner.version["generation"], learner.version["updates"]),
                info=summary, drift_records=task.drift_since_checkpoint)
            log.info("checkpoint partition=%d version=%d offsets=%s model=%s",
                     task.partition, version, offsets, learner.version)
            task.drift_since_checkpoint = []
            task.since_checkpoint = 0
            task.last_checkpoint = time.monotonic()
            commits.update({(t, task.partition): o for t, o in offsets.items()})
        self.consumer.commit(commits)

    def _apply_rebalances(self) -> set[int]:
        """Apply queued assignments and revocations; return the newly assigned partitions."""
        fresh: set[int] = set()
        while not self._rebalances.empty():
            handler, partitions = self._rebalances.get()
            changed = handler(partitions)
            fresh = fresh | changed if handler == self._on_assign else fresh - changed
        return fresh

    def _on_assign(self, partitions: list[tuple[str, int]]) -> set[int]:
        self.assigned_once = True
        numbers = sorted({p for _, p in partitions})
        now_ms = time.time_ns() // 1_000_000
        added = set()
        for p in numbers:
            if p in self.tasks:
                continue
            have = {t for t, q in partitions if q == p}
            if set(self.inputs) - have:
                log.error("partition %d: only %s assigned; inputs must be co-partitioned "
                          "(same partition count)", p, sorted(have))
                continue
            self.tasks[p] = task = self._restore(p, now_ms)
            for stream, topic in enumerate(self.inputs):
                self.consumer.seek(topic, p, task.next_offset[stream])
            added.add(p)
        log.info("assigned partitions %s", numbers)
        return added

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> set[int]:
        lost = sorted({p for _, p in partitions} & set(self.tasks))
        self._checkpoint([self.tasks[p] for p in lost if self.tasks[p].since_checkpoint])
        for p in lost:
            del self.tasks[p]
        log.info("revoked partitions %s", lost)
        return set(lost)

    def _restore(self, p: int, now_ms: int) -> PartitionTask:
        checkpoint = self.store.latest(p)
        merge = EventTimeMerge(self.options.max_idle_ms, now_ms)
        if checkpoint is None:
            learner = Learner(self.config, partition=p)
            offsets = [0, 0]
            log.info("partition %d: no checkpoint, starting fresh from offset 0", p)
        else:
            learner = Learner.from_bytes(checkpoint.state)
            offsets = [checkpoint.offsets.get(t, 0) for t in self.inputs]
            log.info("partition %d: restored checkpoint %d, offsets %s, model %s", p,
                     checkpoint.version, offsets, learner.version)
        return PartitionTask(p, learner, merge, offsets, [0, 0])

    def _shutdown(self) -> None:
        try:
            if self.producer is not None and self.consumer is not None:
                self._checkpoint([t for t in self.tasks.values() if t.since_checkpoint])
        finally:
            if self.consumer is not None:
                self.consumer.close()
            if self.producer is not None:
                self.producer.close()
            self.store.close()


_faults = {"checkpoint": 0}


def _fault_point(name: str) -> None:
    """Test hook: ``DRIFTSTREAM_KILL_AT=checkpoint:N`` kills the process (SIGKILL) at the Nth
    checkpoint, after its outputs were flushed and before its state was saved."""
    spec = os.environ.get("DRIFTSTREAM_KILL_AT")
    if not spec:
        return
    where, _, nth = spec.partition(":")
    if where == name:
        _faults[name] += 1
        if _faults[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
