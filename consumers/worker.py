"""The worker: one consumer-group member that runs a learner per assigned partition.

For each partition number p it owns (events[p] and labels[p], co-partitioned by the range
assignor) its records are decoded, merged in event-time order and fed to the learner, and
the predictions, drift reports, metrics and dead letters are published; the learner is
checkpointed together with the input offsets it reflects. On assignment it restores the
newest checkpoint and seeks to its offsets, so that after a crash the state is what an
uninterrupted run would have. This process does the I/O (Kafka, SQLite, health); the
partition pipelines run in its model process (`consumers.model_process`), which answers each
poll's records with encoded outputs and checkpoint snapshots, in order.

When things go wrong:

- SIGTERM or SIGINT (`handle_signals`): the current batch finishes, every owned partition is
  checkpointed, offsets are committed, the worker leaves the group and exits 0. A second
  signal exits at once with code 1, like kill -9: the state stays consistent, and the next
  start replays from the newest checkpoint.
- Kafka unreachable (the group coordinator is lost, poll or a send raises, or outputs are not
  acknowledged within FLUSH_TIMEOUT_S): outputs sent since the last checkpoint may be lost,
  so the worker stops processing, reports unhealthy, and rewinds every partition to its
  newest checkpoint. It retries with exponential back-off (BACKOFF_MIN_S to BACKOFF_MAX_S);
  once Kafka answers it recreates its producer and goes on from the checkpoints, re-emitting
  the outputs since then (same ids, same content). The learners lose nothing: their state is
  always a checkpoint plus a deterministic replay of the log after it.
- An input log that ends before a checkpoint's offset (a broker that lost its data, a
  recreated topic): the worker keeps trusting its checkpoint. It logs an error naming the
  partition, the topic and both offsets, reports unhealthy, and waits: it processes nothing
  of that partition until the log reaches the checkpoint's offset again, and takes the
  records below it as already reflected. That is right when the same records are published
  again (the embedded broker restarted and refilled, a topic restored from a backup). If the
  data is gone for good, delete the partition's checkpoints (or use a new state file) to
  start it over: resetting a partition by itself would silently learn twice or skip data.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import queue
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from driftstream.consumers.model_messages import (
    BatchAnswer,
    ClosePartitions,
    OpenPartition,
    ProcessBatch,
    Push,
    Request,
)
from driftstream.consumers.model_process import (
    LocalModel,
    ModelProcess,
    remove_orphaned_state_files,
    remove_quietly,
)
from driftstream.consumers.observability import (
    DeadLetterLog,
    MetricsServer,
    PartitionSnapshot,
    Snapshot,
    WorkerMetrics,
    fields,
)
from driftstream.state.checkpoints import StateStore
from driftstream.stream.codec import encode
from driftstream.stream.learner import LearnerConfig
from driftstream.stream.outputs import DeadLetter, DriftNotice, Output, Predictions, StateSnapshot
from driftstream.stream.pipeline import EVENTS, LABELS
from driftstream.stream.records import ModelVersion
from driftstream.transport.kafka_client import (
    Consumer,
    DeliveryFailed,
    KafkaClientError,
    KafkaError,
    KafkaSettings,
    Producer,
    TopicError,
    topic_names,
)

log = logging.getLogger("driftstream.worker")

PAUSE_ABOVE = 50_000  # records queued in one merge input before its partition is paused
RESUME_BELOW = 10_000
FLUSH_TIMEOUT_S = 15.0  # outputs not acknowledged within this are taken as lost
BACKOFF_MIN_S = 1.0  # first wait after a Kafka failure; doubles up to BACKOFF_MAX_S while
BACKOFF_MAX_S = 30.0  # failures follow each other (a new outage after that long starts over)
OUTAGE_POLL_MS = 500  # poll timeout while Kafka is unavailable
# Batches the model may hold while the worker polls. Polls alternate inputs, and a batch
# of one input often releases nothing until the other's comes: with 3, a batch with work is
# still queued while the worker sends the previous answer's outputs (1-partition backlog,
# bench: 2 gave 22k events/s, 3 gave 33k, 4 and 6 31-32k).
PIPELINE_DEPTH = 3
ANSWER_WAIT_S = 0.001  # waiting for an answer, look for fetched records this often
REBALANCE_GRACE_S = 30.0  # with exit_when_idle: how much longer a (re)join may take
SUMMARY_EVERY_S = 1.0  # how fresh /metrics and progress displays are (summaries cost time)


@dataclass
class WorkerOptions:
    """How a worker runs (the learner's own options are in `LearnerConfig`)."""

    group: str = "driftstream"
    topic_prefix: str = ""
    # records processed in a partition between checkpoints: 100,000 is ~2 s of work at full
    # speed (recovery replays at most that); every 10,000 cost ~7 % of the worker's throughput
    checkpoint_every: int = 100_000
    checkpoint_interval: float = 10.0  # seconds between checkpoints of a busy partition
    exit_when_idle: float | None = None  # exit once caught up and idle this long (seconds)
    max_idle_ms: int | None = None  # release one input if the other sent nothing this long
    poll_ms: int = 100
    # smaller polls keep the model's batches short (latency) and the two processes
    # overlapping; 500 measured best here for both latency and throughput (250 and 1000 worse)
    max_poll_records: int = 500
    fetch_max_wait_ms: int = 20
    keep_checkpoints: int = 10  # per partition, plus the newest of each model generation
    metrics_port: int | None = None  # serve /metrics and /healthz on this port (0: any free)
    metrics_host: str = "127.0.0.1"
    model_process: bool = True  # run the pipelines in a child process (False: in this one)


@dataclass
class PartitionTask:
    """What the worker knows of one partition number; its pipeline is in the model process."""

    partition: int
    next_offset: list[int]  # next offset to process, per input stream
    summary: dict  # the learner's, as of the newest answer that had one
    model: ModelVersion  # the learner's
    since_checkpoint: int = 0
    last_checkpoint: float = field(default_factory=time.monotonic)
    caught_up: list = field(default_factory=lambda: [False, False])
    sent_caught_up: tuple = (None, None)
    queued: tuple = (0, 0)  # records waiting in its merge, per input stream
    paused: set = field(default_factory=set)
    # For operators (metrics, health), per input stream where it applies:
    lag: list = field(default_factory=lambda: [None, None])  # high-water mark - position
    behind: list = field(default_factory=lambda: [None, None])  # log end, if < next_offset
    checkpoint_at: float | None = None  # wall-clock seconds of the checkpoint it builds on
    latency: Any = None  # its processing-latency histogram
    checkpoint_seconds: Any = None  # its checkpoint-duration histogram


class Worker:
    """Run with `run()`; stop from a signal handler with `stop()` (see `handle_signals`)."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: LearnerConfig,
        state_path: str,
        options: WorkerOptions | None = None,
    ):
        self.settings = settings
        self.config = config
        self.options = options = options or WorkerOptions()
        self.topics = topic_names(options.topic_prefix)
        self.inputs = (self.topics["events"], self.topics["labels"])
        self.store = StateStore(state_path)
        self.tasks: dict[int, PartitionTask] = {}
        self.stopping = False
        self.assigned_once = False
        self.ready = False  # an assignment is applied and restored (no rebalance under way)
        self.n_processed = 0
        self.model: LocalModel | ModelProcess | None = None
        self._polled: collections.deque = collections.deque()  # poll time of each batch sent
        self._awaiting: dict[str, tuple[int, StateSnapshot]] = {}  # states being written
        self._summaries_wanted = False  # by the metrics server or a progress display
        self._summary_due = 0.0
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.metrics = WorkerMetrics()
        self.server: MetricsServer | None = None
        self.dead_letters = DeadLetterLog(log)
        self._out_partitions: dict[str, int] = {}
        # kafka-python calls rebalance listeners on its own I/O thread: they only queue the
        # change here, and the main thread applies it between polls.
        self._rebalances: queue.SimpleQueue = queue.SimpleQueue()
        self._assign_problems: list[str] = []
        # Kafka failures (see the module docstring).
        self.kafka_ok = True
        self._needs_rewind = False
        self._outage_since = 0.0
        self._outage_reason = ""
        self._backoff = BACKOFF_MIN_S
        self._retry_at = 0.0
        self._recovered_at = float("-inf")
        self._retired: list[Producer] = []  # replaced producers that still had records

    def stop(self) -> None:
        self.stopping = True

    # -- main loop ------------------------------------------------------------------------

    def run(self, on_tick=None) -> int:
        """Consume until stopped (or idle, with ``exit_when_idle``); return an exit code:
        0, or 1 if the final checkpoint could not be written.

        ``on_tick(worker)`` is called after every poll, for progress displays.
        """
        opts = self.options
        self._summaries_wanted = opts.metrics_port is not None or on_tick is not None
        orphans = remove_orphaned_state_files()
        if orphans:
            log.info(
                "removed %d state file(s) left by a model process that is gone: %s",
                len(orphans),
                orphans,
                extra=fields(event="orphaned_state_files_removed", files=orphans),
            )
        # Before any Kafka client or server thread exists: the model process is forked.
        self.model = ModelProcess() if opts.model_process else LocalModel()
        # Modules, River and the rest of start-up live as long as the process: keep the
        # cyclic collector off them (its full passes over them take tens of ms).
        gc.freeze()
        if opts.metrics_port is not None:
            self.server = MetricsServer(self.metrics, opts.metrics_host, opts.metrics_port)
            log.info(
                "serving /metrics and /healthz on %s",
                self.server.url,
                extra=fields(event="metrics_server", url=self.server.url),
            )
        clean = False
        try:
            log.info(
                "worker starting: group %s, inputs %s, %s",
                opts.group,
                list(self.inputs),
                self.settings,
                extra=fields(event="start", group=opts.group),
            )
            self.producer = Producer(self.settings, client_id="driftstream-worker")
            # A short fetch wait keeps batches small at moderate rates, and so latency low:
            # Tansu answers a waiting fetch only when the wait is over.
            self.consumer = Consumer(
                self.settings,
                group_id=opts.group,
                client_id="driftstream-worker",
                max_poll_records=opts.max_poll_records,
                fetch_max_wait_ms=opts.fetch_max_wait_ms,
            )
            for role in ("predictions", "drift", "metrics", "deadletter"):
                self._out_partitions[role] = len(self.consumer.partitions_for(self.topics[role]))
            missing = sorted(self.topics[r] for r, n in self._out_partitions.items() if not n)
            if missing:  # else sends would wait for metadata, or make topics of any layout
                raise TopicError(
                    f"output topics {missing} do not exist; create them first, e.g. "
                    f"`driftstream topics create --topic-prefix '{opts.topic_prefix}' "
                    "--partitions N` (N: the input topics' partitions)"
                )
            self.consumer.subscribe(
                list(self.inputs),
                lambda tps: self._rebalances.put((self._on_assign, tps)),
                lambda tps: self._rebalances.put((self._on_revoke, tps)),
            )
            idle_since = time.monotonic()
            while not self.stopping:
                try:
                    active = self._step()
                except KafkaError as e:
                    was_ok = self.kafka_ok
                    self._kafka_failed(f"{type(e).__name__}: {e}")
                    active = True
                    if not was_ok:  # failing again at once: do not spin
                        time.sleep(OUTAGE_POLL_MS / 1000)
                self.dead_letters.flush()
                if self.server is not None:
                    self._publish()
                if on_tick is not None:
                    on_tick(self)
                # A rebalance or an outage is not idleness: the worker may own nothing, or
                # see nothing, for a while, and must not exit because of that.
                if active or not self.kafka_ok:
                    idle_since = time.monotonic()
                if opts.exit_when_idle is not None and self._idle_exit(idle_since):
                    break
        finally:
            clean = self._shutdown()
        return 0 if clean else 1

    def _step(self) -> bool:
        """One poll, hand the records to the model, send what it answered; True if records
        or a rebalance came."""
        opts = self.options
        if self._needs_rewind:
            self._rewind()
        timeout = opts.poll_ms if self.kafka_ok else OUTAGE_POLL_MS
        batches = self.consumer.poll_by_partition(timeout)
        polled_at = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        active = bool(batches)
        if not self._rebalances.empty():
            fresh = self._apply_rebalances()
            active = True
            # Records fetched before the seek to the checkpoint are fetched again.
            batches = {tp: recs for tp, recs in batches.items() if tp[1] not in fresh}
        if self.assigned_once:  # before the first join the coordinator is not known yet
            self._check_kafka()
        self._update_caught_up()
        if self.kafka_ok:
            self._submit(batches, now_ms, polled_at)
            self._await_answers()
        return active

    def _await_answers(self) -> None:
        """Send the model's answers as they come, until none is due or records already
        fetched can be handed over (then the next poll takes them while the model works, and
        both cores are busy)."""
        model = self.model
        while model.in_flight:
            if model.answered():
                self._collect()
            elif model.in_flight < PIPELINE_DEPTH and self.consumer.buffered():
                return
            else:
                # kafka-python fetches on its own thread: look for its records again soon
                model.wait(ANSWER_WAIT_S)

    def _idle_exit(self, idle_since: float) -> bool:
        waited = time.monotonic() - idle_since
        if waited < self.options.exit_when_idle or not self.kafka_ok or self.model.in_flight:
            return False
        if not self.ready:  # joining or rejoining the group: partitions may still come
            return waited > self.options.exit_when_idle + REBALANCE_GRACE_S
        return all(t.queued == (0, 0) and all(t.caught_up) for t in self.tasks.values())

    def _submit(
        self, batches: dict, now_ms: int, polled_at: float, snapshot=(), reason: str = "periodic"
    ) -> None:
        """Send the model a batch: new records, caught-up flags, checkpoints wanted."""
        events_topic = self.inputs[0]
        pushes = [
            Push(
                p,
                EVENTS if topic == events_topic else LABELS,
                [(r.offset, r.timestamp, r.value) for r in recs],
            )
            for (topic, p), recs in batches.items()
            if p in self.tasks
        ]
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
                and now - task.last_checkpoint >= self.options.checkpoint_interval
            ):
                snapshot.append(p)
                task.last_checkpoint = now  # asked for; not again before it is saved
        want_summary = self._summaries_wanted and now >= self._summary_due
        if pushes or caught_up or snapshot or waiting or want_summary or self._awaiting:
            if want_summary:
                self._summary_due = now + SUMMARY_EVERY_S
            self.model.submit(
                ProcessBatch(now_ms, pushes, caught_up, snapshot, reason, want_summary)
            )
            self._polled.append(polled_at)

    def _update_caught_up(self) -> None:
        for p, task in self.tasks.items():
            for stream, topic in enumerate(self.inputs):
                try:
                    high = self.consumer.highwater(topic, p)
                    position = self.consumer.position(topic, p)
                except KafkaError:  # being revoked: the queued revocation drops it
                    break
                task.lag[stream] = None if high is None else max(high - position, 0)
                if high is not None and high < task.next_offset[stream]:
                    # The log ends before what the checkpoint reflects: wait for it to grow.
                    if task.behind[stream] is None:
                        log.error(
                            "partition %d: %s ends at offset %d, before offset %d that "
                            "its checkpoint has reached (did the broker lose data?); "
                            "waiting for the log to reach it",
                            p,
                            topic,
                            high,
                            task.next_offset[stream],
                            extra=fields(
                                event="log_behind_checkpoint",
                                partition=p,
                                topic=topic,
                                log_end=high,
                                offsets=self._offsets(task),
                                model=task.model.to_wire(),
                            ),
                        )
                    task.behind[stream] = high
                    task.caught_up[stream] = False
                    continue
                if task.behind[stream] is not None:
                    log.info(
                        "partition %d: %s has reached the checkpoint's offset %d again",
                        p,
                        topic,
                        task.next_offset[stream],
                        extra=fields(
                            event="log_caught_up_with_checkpoint",
                            partition=p,
                            topic=topic,
                            offsets=self._offsets(task),
                        ),
                    )
                    task.behind[stream] = None
                task.caught_up[stream] = high is not None and position >= high
                tp = (topic, p)
                if tp in task.paused and task.queued[stream] < RESUME_BELOW:
                    try:
                        self.consumer.resume([tp])
                    except KafkaError:  # being revoked: the queued revocation drops it
                        continue
                    task.paused.discard(tp)

    def _collect(self, discard: bool = False) -> None:
        """Take the model's oldest answer and send its outputs (unless discarded)."""
        answer = self.model.collect()
        polled_at = self._polled.popleft()
        try:
            if not (discard or self._needs_rewind):  # else: a state being rewound
                self._handle(answer, polled_at)
        except KafkaError as e:
            self._kafka_failed(f"{type(e).__name__}: {e}")
        finally:
            for path, problem in answer.state_files.items():
                self._state_written(path, problem)

    def _drain(self, discard: bool = False) -> None:
        while self.model.in_flight:
            self._collect(discard)

    def _handle(self, answer: BatchAnswer, polled_at: float) -> None:
        for p, progress in answer.progress.items():
            task = self.tasks.get(p)
            if task is None:
                continue
            if not self._send_outputs(task, progress.outputs):
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
            for stream, topic in enumerate(self.inputs):
                tp = (topic, p)
                if task.queued[stream] > PAUSE_ABOVE and tp not in task.paused:
                    try:
                        self.consumer.pause([tp])
                    except KafkaError:  # being revoked: the queued revocation drops it
                        continue
                    task.paused.add(tp)

    def _state_written(self, path: str, problem: str | None) -> None:
        """A state file the model process had forked off is complete: save its checkpoint
        (unless a newer checkpoint of the partition came first, or it failed)."""
        p, snap = self._awaiting.pop(path, (None, None))
        try:
            if snap is None or p not in self.tasks or self._needs_rewind:
                return
            if problem is None:
                try:
                    with open(path, "rb") as f:
                        snap.state = f.read()
                except OSError as e:  # e.g. removed by a temporary-file cleaner
                    problem = f"its file could not be read: {e}"
            if problem is not None:
                log.error(
                    "partition %d: a checkpoint's state could not be saved (%s); the "
                    "next one will be",
                    p,
                    problem,
                    extra=fields(event="checkpoint_failed", partition=p, reason=problem),
                )
                return
            self._checkpoint(self.tasks[p], snap)
        finally:
            remove_quietly(path)

    def _send_outputs(self, task: PartitionTask, outputs: list[Output]) -> bool:
        """Publish outputs in order, saving the checkpoints among them; False if one failed."""
        p = task.partition
        predictions = self.topics["predictions"]
        to_partition = p % (self._out_partitions.get("predictions") or 1)
        for output in outputs:
            cls = output.__class__
            if cls is Predictions:
                self.producer.send_batch(predictions, to_partition, output.records)
            elif cls is StateSnapshot:
                if output.state_file is not None:  # saved once written (_state_written)
                    self._awaiting[output.state_file] = (p, output)
                elif not self._checkpoint(task, output):
                    return False
            elif cls is DeadLetter:
                self._send("deadletter", output.value, output.key, p)
                self.dead_letters.record(
                    p,
                    output.topic,
                    output.offset,
                    output.reason,
                    output.detail,
                    output.model.to_wire(),
                )
            elif cls is DriftNotice:
                self._send("drift", output.value, None, p)
                report = output.report
                log.info(
                    "drift kind=%s partition=%d action=%s model=%s->%s",
                    report.kind,
                    p,
                    report.action,
                    report.model_before.to_wire(),
                    report.model_after.to_wire(),
                    extra=fields(
                        event="drift",
                        kind=report.kind,
                        partition=p,
                        action=report.action,
                        feature=report.feature,
                        event_ts=report.event_ts,
                        offsets=self._offsets(task),
                        model_before=report.model_before.to_wire(),
                        model=report.model_after.to_wire(),
                    ),
                )
        return True

    def _send(self, role: str, value: bytes, key: bytes | None, partition: int) -> None:
        n = self._out_partitions.get(role) or 1
        self.producer.send(self.topics[role], value, key, partition % n)

    def _offsets(self, task: PartitionTask) -> dict[str, int]:
        return dict(zip(self.inputs, task.next_offset))

    # -- checkpoints and rebalances -----------------------------------------------------

    def _checkpoint(self, task: PartitionTask, snap: StateSnapshot) -> bool:
        """Flush outputs, then save the snapshot with the offsets it reflects (one txn).

        Saves nothing and returns False if Kafka does not acknowledge the outputs: a
        checkpoint must never get ahead of outputs that may be lost.
        """
        if not self.kafka_ok:
            return False
        started = time.perf_counter()
        try:
            self.producer.flush(timeout=FLUSH_TIMEOUT_S)
        except DeliveryFailed as e:  # e.g. refused by the broker: loud, and nothing skipped
            self._kafka_failed(f"outputs not delivered ({e.args[0]})")
            return False
        except KafkaError as e:
            self._kafka_failed(
                f"outputs not acknowledged within {FLUSH_TIMEOUT_S:.0f} s ({type(e).__name__})"
            )
            return False
        p = task.partition
        offsets = dict(zip(self.inputs, snap.offsets))
        for path, (q, _) in list(self._awaiting.items()):
            if q == p:  # older than this one: never to be saved now
                del self._awaiting[path]
        _fault_point("checkpoint")
        try:
            self._send("metrics", encode({**snap.summary, "offsets": offsets}), None, p)
        except KafkaError as e:  # informational only; the checkpoint matters
            log.debug("metrics record not sent: %s", e)
        version = self.store.save_checkpoint(
            p,
            snap.state,
            offsets,
            snap.model,
            info=snap.summary,
            drift_records=snap.drift_records,
            model_events=snap.model_events,
        )
        # Retention: replay can start near any point without the file growing forever.
        self.store.prune(p, keep_last=self.options.keep_checkpoints)
        seconds = time.perf_counter() - started
        task.checkpoint_seconds.observe(seconds)
        task.summary = snap.summary
        model = snap.summary["model"]
        log.info(
            "checkpoint partition=%d version=%d offsets=%s model=%s",
            p,
            version,
            offsets,
            model,
            extra=fields(
                event="checkpoint",
                partition=p,
                checkpoint=version,
                offsets=offsets,
                model=model,
                reason=snap.reason,
                seconds=round(seconds, 4),
            ),
        )
        task.last_checkpoint = time.monotonic()
        task.checkpoint_at = time.time()
        # Committed offsets are only a progress hint for lag tools; without a coordinator the
        # commit would block for the request timeout, so it waits for the next checkpoint.
        if self.consumer.connected():
            try:
                self.consumer.commit({(t, p): o for t, o in offsets.items()})
            except KafkaError as e:
                log.warning(
                    "committing offsets failed (%s: %s); they are only a progress hint",
                    type(e).__name__,
                    e,
                    extra=fields(event="commit_failed"),
                )
        self._close_retired()
        return True

    def _unsaved(self, task: PartitionTask) -> bool:
        """Processed something since its newest saved checkpoint."""
        return bool(task.since_checkpoint) or any(
            p == task.partition for p, _ in self._awaiting.values()
        )

    def _save_now(self, tasks: list[PartitionTask], reason: str) -> bool:
        """Checkpoint these partitions now (revoke, shutdown); False if any was not saved."""
        if not tasks:
            return True
        if not self.kafka_ok or self._needs_rewind:
            return False
        self._drain()
        self._submit(
            {},
            time.time_ns() // 1_000_000,
            time.perf_counter(),
            [t.partition for t in tasks],
            reason,
        )
        self._drain()
        return self.kafka_ok and not any(self._unsaved(t) for t in tasks)

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
        self._assign_problems = []
        for p in numbers:
            if p in self.tasks:
                continue
            have = {t for t, q in partitions if q == p}
            if set(self.inputs) - have:
                problem = (
                    f"partition {p}: only {sorted(have)} assigned; inputs must be "
                    f"co-partitioned (same partition count)"
                )
                log.error(problem, extra=fields(event="not_copartitioned", partition=p))
                self._assign_problems.append(problem)
                continue
            task = self._restore(p, now_ms, "assigned")
            try:
                for stream, topic in enumerate(self.inputs):
                    self.consumer.seek(topic, p, task.next_offset[stream])
            except KafkaError:  # revoked again meanwhile; a later assignment restores it
                self._call(ClosePartitions([p]))
                continue
            self.tasks[p] = task
            added.add(p)
        self.ready = True
        log.info(
            "assigned partitions %s",
            numbers,
            extra=fields(
                event="rebalance",
                assigned=numbers,
                partitions={
                    p: {"offsets": self._offsets(t), "model": t.model.to_wire()}
                    for p, t in self.tasks.items()
                    if p in numbers
                },
            ),
        )
        return added

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> set[int]:
        self._drain()
        lost = sorted({p for _, p in partitions} & set(self.tasks))
        unsaved = [self.tasks[p] for p in lost if self._unsaved(self.tasks[p])]
        if unsaved and not self._save_now(unsaved, "revoke"):
            log.warning(
                "partitions %s revoked without a final checkpoint (Kafka unavailable); "
                "their next owner replays them from their previous checkpoint",
                [t.partition for t in unsaved],
                extra=fields(event="revoke_unsaved", partitions=[t.partition for t in unsaved]),
            )
        states = {
            p: {"offsets": self._offsets(self.tasks[p]), "model": self.tasks[p].model.to_wire()}
            for p in lost
        }
        self._call(ClosePartitions(lost))
        for p in lost:
            del self.tasks[p]
        self.ready = False
        log.info(
            "revoked partitions %s",
            lost,
            extra=fields(event="rebalance", revoked=lost, partitions=states),
        )
        return set(lost)

    def _call(self, request: Request):
        """Ask the model something and wait for the answer (after the batches before it)."""
        self._drain(discard=self._needs_rewind)
        self.model.submit(request)
        return self.model.collect()

    def _restore(self, p: int, now_ms: int, why: str) -> PartitionTask:
        """Open partition p's pipeline in the model from its newest checkpoint (or fresh)."""
        checkpoint = self.store.latest(p)
        if checkpoint is None:
            offsets = [0, 0]
        else:
            offsets = [checkpoint.offsets.get(t, 0) for t in self.inputs]
        opened = self._call(
            OpenPartition(
                p,
                None if checkpoint is None else checkpoint.state,
                self.config,
                self.inputs,
                offsets,
                self.options.max_idle_ms,
                now_ms,
                self.options.checkpoint_every,
            )
        )
        model = opened.model.to_wire()
        if checkpoint is None:
            log.info(
                "partition %d: no checkpoint, starting fresh from offset 0",
                p,
                extra=fields(
                    event="restore",
                    reason=why,
                    partition=p,
                    checkpoint=None,
                    offsets=dict(zip(self.inputs, offsets)),
                    model=model,
                ),
            )
        else:
            log.info(
                "partition %d: restored checkpoint %d, offsets %s, model %s",
                p,
                checkpoint.version,
                offsets,
                model,
                extra=fields(
                    event="restore",
                    reason=why,
                    partition=p,
                    checkpoint=checkpoint.version,
                    offsets=dict(zip(self.inputs, offsets)),
                    model=model,
                ),
            )
            if opened.config != self.config:
                # The state is the history: it keeps the configuration it was built with.
                log.warning(
                    "partition %d: its checkpoint was made with model %r, policy %r; "
                    "continuing with those, not with this worker's %r, %r (start from "
                    "a new state file to change them)",
                    p,
                    opened.config.model,
                    opened.config.drift_policy,
                    self.config.model,
                    self.config.drift_policy,
                    extra=fields(event="config_differs", partition=p),
                )
        task = PartitionTask(p, offsets, opened.summary, opened.model)
        task.checkpoint_at = checkpoint.created_at / 1000 if checkpoint is not None else None
        task.latency = self.metrics.latency_seconds.labels(str(p))
        task.checkpoint_seconds = self.metrics.checkpoint_seconds.labels(str(p))
        return task

    # -- Kafka failures -------------------------------------------------------------------

    def _check_kafka(self) -> None:
        """Notice the start and the end of an outage (called once per loop)."""
        connected = self.consumer.connected()
        if self.kafka_ok and not connected:
            self._kafka_failed("lost the connection to the group coordinator")
        elif not self.kafka_ok and connected and time.monotonic() >= self._retry_at:
            self._kafka_recovered()

    def _kafka_failed(self, reason: str) -> None:
        """Stop processing, go back to the checkpoints (next step) and retry after a while."""
        self._needs_rewind = True
        self._outage_reason = reason
        if not self.kafka_ok:
            log.debug("Kafka still unavailable: %s", reason)
            return
        now = time.monotonic()
        self.kafka_ok = False
        self._outage_since = now
        if now - self._recovered_at > BACKOFF_MAX_S:  # not a relapse: start the back-off over
            self._backoff = BACKOFF_MIN_S
        wait = self._schedule_retry()
        log.warning(
            "Kafka unavailable (%s): processing paused, partitions %s go back to their "
            "checkpoints; retrying in %.0f s",
            reason,
            sorted(self.tasks),
            wait,
            extra=fields(
                event="kafka_unavailable",
                reason=reason,
                partitions=sorted(self.tasks),
                retry_in=wait,
            ),
        )

    def _schedule_retry(self) -> float:
        wait = self._backoff
        self._retry_at = time.monotonic() + wait
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        return wait

    def _kafka_recovered(self) -> None:
        """Kafka answers again: a fresh producer, then processing from the checkpoints."""
        try:
            producer = Producer(self.settings, client_id="driftstream-worker")
        except KafkaClientError as e:
            self._outage_reason = f"cannot create a producer: {e}"
            wait = self._schedule_retry()
            log.warning(
                "Kafka still unavailable (%s); retrying in %.0f s",
                self._outage_reason,
                wait,
                extra=fields(event="kafka_unavailable", reason=self._outage_reason, retry_in=wait),
            )
            return
        self._retired.append(self.producer)
        self.producer = producer
        self._close_retired()
        self._recovered_at = now = time.monotonic()
        log.info(
            "Kafka reachable again after %.1f s; resuming from the checkpoints",
            now - self._outage_since,
            extra=fields(
                event="kafka_recovered",
                partitions=sorted(self.tasks),
                outage_seconds=round(now - self._outage_since, 3),
            ),
        )
        self.kafka_ok = True

    def _rewind(self) -> None:
        """Put every owned partition back to its newest checkpoint and re-read from there.

        Outputs since a checkpoint may be lost when Kafka fails; the replay re-emits them and
        leaves each learner exactly as an uninterrupted run would.
        """
        self._needs_rewind = False
        self._drain(discard=True)
        self._awaiting.clear()  # their outputs may be lost: their files are removed when done
        now_ms = time.time_ns() // 1_000_000
        for p, old in list(self.tasks.items()):
            task = self._restore(p, now_ms, "rewind")
            try:
                for stream, topic in enumerate(self.inputs):
                    self.consumer.seek(topic, p, task.next_offset[stream])
                self.consumer.resume(sorted(old.paused))
            except KafkaError:  # no longer assigned; a later assignment restores it
                self._call(ClosePartitions([p]))
                del self.tasks[p]
                continue
            self.tasks[p] = task

    def _close_retired(self) -> None:
        """Close replaced producers. kafka-python's close() flushes first and raises if that
        times out, so one with unsent records stays open until they are sent or expire
        (the replay has re-emitted them anyway)."""
        for producer in self._retired[:]:
            try:
                producer.close(timeout=0)
            except KafkaError:
                continue
            self._retired.remove(producer)

    # -- health, metrics, shutdown --------------------------------------------------------

    def problems(self) -> list[str]:
        """Why the worker is not healthy right now; empty when it is."""
        out = []
        if self.stopping:
            out.append("stopping")
        if not self.kafka_ok:
            out.append(
                f"Kafka unavailable for {time.monotonic() - self._outage_since:.0f} s: "
                f"{self._outage_reason}"
            )
        if not self.ready:
            out.append(
                "rebalancing" if self.assigned_once else "waiting for a partition assignment"
            )
        out.extend(self._assign_problems)
        for p, task in sorted(self.tasks.items()):
            for stream, topic in enumerate(self.inputs):
                if task.behind[stream] is not None:
                    out.append(
                        f"partition {p}: {topic} ends at offset {task.behind[stream]}, "
                        f"before the checkpoint's offset {task.next_offset[stream]}"
                    )
        return out

    def _publish(self) -> None:
        """Hand the metrics server a snapshot (its thread never touches a learner)."""
        partitions = {
            p: PartitionSnapshot(t.summary, tuple(t.lag), t.checkpoint_at)
            for p, t in self.tasks.items()
        }
        self.metrics.publish(Snapshot(partitions, self.n_processed, self.problems(), self.kafka_ok))

    def _shutdown(self) -> bool:
        """Checkpoint what is owned, commit, leave the group; False if a checkpoint failed."""
        clean = True
        try:
            if self.model is not None and self.model.in_flight:
                self._drain(discard=not self.kafka_ok)
            unsaved = [t for t in self.tasks.values() if self._unsaved(t)]
            if self.stopping:
                log.info(
                    "stopping: saving partitions %s, then leaving the group",
                    [t.partition for t in unsaved],
                    extra=fields(
                        event="stopping",
                        partitions=sorted(self.tasks),
                        unsaved=[t.partition for t in unsaved],
                    ),
                )
                if self.server is not None:
                    self._publish()  # /healthz: 503 "stopping"
            _fault_point("shutdown")
            if (
                self.producer is not None
                and self.consumer is not None
                and unsaved
                and not self._save_now(unsaved, "shutdown")
            ):
                clean = False
                log.error(
                    "could not write the final checkpoint of partitions %s (Kafka "
                    "unavailable); the next start replays them from their previous "
                    "checkpoint",
                    [t.partition for t in unsaved],
                    extra=fields(
                        event="shutdown_unsaved", partitions=[t.partition for t in unsaved]
                    ),
                )
            self.dead_letters.flush(force=True)
        finally:
            if self.consumer is not None:
                _close_quietly("consumer", self.consumer.close)
            if self.producer is not None:
                _close_quietly("producer", lambda: self.producer.close(timeout=FLUSH_TIMEOUT_S))
            self._close_retired()
            if self.model is not None:
                self.model.close()
            if self.server is not None:
                self.server.close()
            self.store.close()
        log.info("worker stopped", extra=fields(event="stopped", clean=clean))
        return clean


def _close_quietly(what: str, close) -> None:
    try:
        close()
    except KafkaError as e:
        log.warning("closing the %s: %s: %s", what, type(e).__name__, e)


def handle_signals(worker: Worker) -> None:
    """SIGTERM and SIGINT stop the worker gracefully (final checkpoint, commit, leave the
    group); a second one exits at once with code 1, as a kill would: checkpoints are atomic,
    so the state stays consistent and the next start replays from the newest one."""

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        if not worker.stopping:
            log.info(
                "%s: stopping after the current batch (send it again to exit at once)",
                name,
                extra=fields(event="signal", signal=name),
            )
            worker.stop()
            return
        log.warning(
            "second %s: exiting at once, without a final checkpoint",
            name,
            extra=fields(event="signal", signal=name),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


_faults = {"checkpoint": 0, "shutdown": 0}


def _fault_point(name: str) -> None:
    """Test hooks, from ``DRIFTSTREAM_KILL_AT``: ``checkpoint:N`` kills the process (SIGKILL)
    at the Nth checkpoint, after its outputs were flushed and before its state was saved;
    ``shutdown:hang`` blocks the graceful shutdown until a signal ends the process."""
    spec = os.environ.get("DRIFTSTREAM_KILL_AT")
    if not spec:
        return
    where, _, arg = spec.partition(":")
    if where != name:
        return
    if arg == "hang":
        log.warning(
            "fault point %s: hanging until killed",
            name,
            extra=fields(event="fault_point", where=name),
        )
        while True:
            signal.pause()
    _faults[name] += 1
    if _faults[name] == int(arg or 1):
        os.kill(os.getpid(), signal.SIGKILL)
