"""The worker: one consumer-group member that runs a learner per assigned partition.

For each partition number p it owns (events[p] and labels[p], co-partitioned by the range
assignor) its records are decoded, merged in event-time order and fed to the learner, and
the predictions, drift reports, metrics and dead letters are published; the learner is
checkpointed together with the input offsets it reflects, in a checkpoint store
(`driftstream.state.store`: an SQLite file, a Kafka topic or an S3 bucket). On assignment it
restores the newest checkpoint and seeks to its offsets, so that after a crash, or on another
host sharing the store, the state is what an uninterrupted run would have. This process does
the I/O (Kafka, the store, health); the partition pipelines run in its model process
(`consumers.model_process`), which answers each poll's records with outputs and checkpoint
snapshots, in order.

The worker is this loop wiring parts that each own one concern:

- `KafkaClients` (consumers/kafka_clients.py): the consumer and producer, made after the
  model process is forked, the producer renewed after an outage;
- `Assignments` (consumers/assignment.py): rebalances, restoring each assigned partition
  from its newest checkpoint, and rewinding all of them after an outage;
- `ModelLink` (consumers/model_link.py): batches to the model process, answers back (with
  ``model_processes`` > 1, to a `ModelPool` of them, each partition in one);
- `OutputSender` (consumers/output_sender.py): each answer's outputs, in order;
- `Checkpointer` (consumers/checkpointing.py): snapshots saved once their outputs are
  acknowledged, with the offsets they reflect;
- `Outage` (consumers/outage.py): when Kafka or the store is unavailable, the back-off, the
  rewind;
- `FlowControl` (consumers/flow_control.py): lag, caught-up flags, pausing full inputs.

Passed in, never read from globals: a `FaultPlan` (consumers/faults.py) for the tests that
kill the worker at a chosen point, and a `WorkerProbe` (consumers/probe.py) for benchmarks
and traces that watch its hot path.

When things go wrong:

- SIGTERM or SIGINT (`handle_signals`): the current batch finishes, every owned partition is
  checkpointed, offsets are committed, the worker leaves the group and exits 0. A second
  signal exits at once with code 1, like kill -9: the state stays consistent, and the next
  start replays from the newest checkpoint.
- Kafka unreachable (the group coordinator is lost, poll or a send raises, or outputs are not
  acknowledged within FLUSH_TIMEOUT_S): outputs sent since the last checkpoint may be lost,
  so the worker stops processing, reports unhealthy, and retries with exponential back-off
  (BACKOFF_MIN_S to BACKOFF_MAX_S); once Kafka answers it recreates its producer, rewinds
  every partition to its newest checkpoint and goes on from there, re-emitting the outputs
  since then (same ids, same content). The learners lose nothing: their state is always a
  checkpoint plus a deterministic replay of the log after it.
- The checkpoint store unreachable (a save not confirmed, a checkpoint that cannot be read):
  the same, with the store's own back-off. The worker keeps its partitions, commits no
  offset past its last saved checkpoint, reports unhealthy, and once a retried rewind has
  read every partition's newest checkpoint it goes on from there.
- An input log that ends before a checkpoint's offset (a broker that lost its data, a
  recreated topic): the worker keeps trusting its checkpoint. It logs an error naming the
  partition, the topic and both offsets, reports unhealthy, and waits: it processes nothing
  of that partition until the log reaches the checkpoint's offset again, and takes the
  records below it as already reflected. That is right when the same records are published
  again (the embedded broker restarted and refilled, a topic restored from a backup). If the
  data is gone for good, delete the partition's checkpoints (or use a new state store) to
  start it over: resetting a partition by itself would silently learn twice or skip data.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from dataclasses import dataclass

from driftstream.consumers.assignment import Assignments
from driftstream.consumers.checkpointing import Checkpointer
from driftstream.consumers.faults import FaultPlan
from driftstream.consumers.flow_control import FlowControl
from driftstream.consumers.kafka_clients import KafkaClients
from driftstream.consumers.model_link import ModelLink
from driftstream.consumers.model_process import remove_orphaned_state_files
from driftstream.consumers.observability import (
    DeadLetterLog,
    MetricsServer,
    PartitionSnapshot,
    Snapshot,
    WorkerMetrics,
    fields,
)
from driftstream.consumers.outage import OUTAGE_POLL_MS, Outage
from driftstream.consumers.output_sender import OutputSender
from driftstream.consumers.partition_task import PartitionTask
from driftstream.consumers.partitioner_check import PartitionerCheck
from driftstream.consumers.probe import WorkerProbe
from driftstream.state.store import CheckpointStore, StoreUnavailable, open_store
from driftstream.stream.learner import LearnerConfig
from driftstream.transport import KafkaError, KafkaSettings, topic_names

__all__ = ["REBALANCE_GRACE_S", "PartitionTask", "Worker", "WorkerOptions", "handle_signals"]

log = logging.getLogger("driftstream.worker")

REBALANCE_GRACE_S = 30.0  # with exit_when_idle: how much longer a (re)join may take


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
    # child processes the partitions are spread over (each partition in one; `ModelPool`)
    model_processes: int = 1


class Worker:
    """Run with `run()`; stop from a signal handler with `stop()` (see `handle_signals`).

    ``state``: the checkpoint store (the worker closes it when it stops), or a path, opened
    as an SQLite file.
    ``faults``: where a test makes it die or hang (`FaultPlan`; none by default).
    ``probe``: hooks a benchmark or a trace watches the hot path with (`WorkerProbe`).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        config: LearnerConfig,
        state: CheckpointStore | str | os.PathLike[str],
        options: WorkerOptions | None = None,
        *,
        faults: FaultPlan | None = None,
        probe: WorkerProbe | None = None,
    ):
        self.settings = settings
        self.config = config
        self.options = opts = options or WorkerOptions()
        if opts.model_processes < 1 or (opts.model_processes > 1 and not opts.model_process):
            raise ValueError(
                f"--model-processes {opts.model_processes}: at least 1, and more than 1 only "
                "with --model-process on"
            )
        self.topics = topics = topic_names(opts.topic_prefix)
        self.inputs = inputs = (topics["events"], topics["labels"])
        self.store = state if isinstance(state, CheckpointStore) else open_store(os.fspath(state))
        self.metrics = WorkerMetrics(
            {"consumer_group": opts.group, "events_topic": inputs[0], "labels_topic": inputs[1]}
        )
        self.server: MetricsServer | None = None
        self.stopping = False
        self.faults = faults or FaultPlan()
        self.probe = probe
        self.tasks: dict[int, PartitionTask] = {}  # the partitions owned, shared by the parts
        # unknown_id labels on many partitions: producers with different partitioners?
        self.partitioner_check = PartitionerCheck(log)
        self.dead_letters = DeadLetterLog(log, watch=self.partitioner_check.dead_letter)
        self.kafka = KafkaClients(
            settings, topics, opts.group, opts.max_poll_records, opts.fetch_max_wait_ms
        )
        self.outage = Outage(lambda: sorted(self.tasks))
        self.sender = OutputSender(
            self.kafka, topics, inputs, self.dead_letters, self.metrics.drift_reported
        )
        self.checkpoints = Checkpointer(
            self.store,
            self.tasks,
            inputs,
            self.kafka,
            self.sender,
            self.outage,
            opts.keep_checkpoints,
            self.faults,
        )
        self.flow = FlowControl(self.kafka, self.tasks, inputs)
        self.link = ModelLink(
            self.tasks,
            inputs,
            self.sender,
            self.checkpoints,
            self.outage,
            self.flow,
            opts.checkpoint_interval,
            probe,
        )
        self.assignments = Assignments(
            self.tasks,
            inputs,
            self.kafka,
            self.link,
            self.checkpoints,
            self.store,
            self.outage,
            self.metrics,
            config,
            opts.max_idle_ms,
            opts.checkpoint_every,
        )

    @property
    def n_processed(self) -> int:
        """Records processed since the start, all partitions (a rewind counts them again)."""
        return self.link.n_processed

    @property
    def model_pid(self) -> int | None:
        """The (first) model process's pid (None before `run` or with ``model_process=False``)."""
        return self.link.pid

    @property
    def model_pids(self) -> list[int]:
        """Every model process's pid (``--model-processes``; empty before `run` or with
        ``model_process=False``)."""
        return self.link.pids

    def stop(self) -> None:
        self.stopping = True

    def run(self, on_tick=None) -> int:
        """Consume until stopped (or idle, with ``exit_when_idle``); return an exit code:
        0, or 1 if the final checkpoint could not be written.

        ``on_tick(worker)`` is called after every poll, for progress displays.
        """
        opts = self.options
        self.link.summaries_wanted = opts.metrics_port is not None or on_tick is not None
        orphans = remove_orphaned_state_files()
        if orphans:
            log.info(
                "removed %d state file(s) left by a model process that is gone: %s",
                len(orphans),
                orphans,
                extra=fields(event="orphaned_state_files_removed", files=orphans),
            )
        # Before any Kafka client or server thread exists: the model process is forked.
        self.link.start(in_process=not opts.model_process, processes=opts.model_processes)
        if self.link.pids:
            log.info(
                "model processes: pids %s",
                self.link.pids,
                extra=fields(event="model_processes", pids=self.link.pids),
            )
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
                "worker starting: group %s, inputs %s, state %s, %s",
                opts.group,
                list(self.inputs),
                self.store.name,
                self.settings,
                extra=fields(event="start", group=opts.group, store=self.store.name),
            )
            self.kafka.connect(opts.topic_prefix)
            self.assignments.subscribe()
            self._loop(on_tick)
        finally:
            clean = self._shutdown()
        return 0 if clean else 1

    def _loop(self, on_tick) -> None:
        exit_when_idle = self.options.exit_when_idle
        idle_since = time.monotonic()
        while not self.stopping:
            try:
                active = self._step()
            except KafkaError as e:
                was_ok = self.outage.kafka_ok
                self.outage.failed(f"{type(e).__name__}: {e}")
                active = True
                if not was_ok:  # failing again at once: do not spin
                    time.sleep(OUTAGE_POLL_MS / 1000)
            self.checkpoints.finish_writes()
            self.dead_letters.flush()
            self.partitioner_check.update(self._labels_partitions)
            if self.server is not None:
                self._publish()
            if on_tick is not None:
                on_tick(self)
            # A rebalance or an outage is not idleness: the worker may own nothing, or
            # see nothing, for a while, and must not exit because of that.
            if active or not self.outage.ok:
                idle_since = time.monotonic()
            if exit_when_idle is not None and self._idle_exit(idle_since):
                return

    def _step(self) -> bool:
        """One poll, hand the records to the model, send what it answered; True if records
        or a rebalance came."""
        outage, consumer = self.outage, self.kafka.consumer
        if outage.rewind_due():
            try:
                self.assignments.rewind()
            except StoreUnavailable as e:
                outage.store_failed(f"rewind to the checkpoints failed: {e}")
            else:
                outage.rewound()
        batches = consumer.poll_by_partition(self.options.poll_ms if outage.ok else OUTAGE_POLL_MS)
        polled_at = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        active = bool(batches)
        if self.assignments.changed:
            fresh = self.assignments.apply()
            active = True
            # Records fetched before the seek to the checkpoint are fetched again.
            batches = {(t, p): recs for (t, p), recs in batches.items() if p not in fresh}
        if self.probe is not None:
            self.probe.polled(batches, polled_at)
        if self.assignments.assigned_once:  # before the first join there is no coordinator
            outage.check(consumer.connected(), self.kafka.renew_producer)
        self.flow.update()
        if outage.ok:
            for (topic, p), records in batches.items():
                if topic == self.inputs[1]:
                    self.partitioner_check.labels_received(p, len(records))
            self.link.submit(batches, now_ms, polled_at)
            self.link.await_answers(consumer.buffered)
        return active

    def _idle_exit(self, idle_since: float) -> bool:
        waited = time.monotonic() - idle_since
        if waited < self.options.exit_when_idle or not self.outage.ok or self.link.in_flight:
            return False
        if not self.assignments.ready:  # joining or rejoining the group: partitions may come
            return waited > self.options.exit_when_idle + REBALANCE_GRACE_S
        return all(t.queued == (0, 0) and all(t.caught_up) for t in self.tasks.values())

    def problems(self) -> list[str]:
        """Why the worker is not healthy right now; empty when it is."""
        out = ["stopping"] if self.stopping else []
        out += self.outage.problems()
        if self.assignments.unrestored:
            out.append(
                f"partitions {sorted(self.assignments.unrestored)}: assigned, not restored yet"
            )
        if not self.assignments.ready:
            out.append(
                "rebalancing"
                if self.assignments.assigned_once
                else "waiting for a partition assignment"
            )
        return out + self.assignments.problems + self.flow.problems()

    def _labels_partitions(self) -> int:
        """The labels topic's partition count (0 if Kafka cannot say now)."""
        try:
            return len(self.kafka.consumer.partitions_for(self.inputs[1]))
        except KafkaError:
            return 0

    def _publish(self) -> None:
        """Hand the metrics server a snapshot (its thread never touches a learner)."""
        partitions = {
            p: PartitionSnapshot(t.summary, tuple(t.lag), t.checkpoint_at, t.since_checkpoint)
            for p, t in self.tasks.items()
        }
        check = self.partitioner_check
        self.metrics.publish(
            Snapshot(
                partitions,
                self.n_processed,
                self.problems(),
                self.outage.kafka_ok,
                warnings=[check.warning] if check.active else [],
                unknown_id_share=check.share,
                partitioner_mismatch=check.active,
            )
        )

    def _shutdown(self) -> bool:
        """Checkpoint what is owned, commit, leave the group; False if a checkpoint failed."""
        clean = True
        try:
            if self.link.in_flight:
                self.link.drain(discard=not self.outage.ok)
            unsaved = [t for t in self.tasks.values() if self.checkpoints.unsaved(t)]
            names = [t.partition for t in unsaved]
            if self.stopping:
                log.info(
                    "stopping: saving partitions %s, then leaving the group",
                    names,
                    extra=fields(event="stopping", partitions=sorted(self.tasks), unsaved=names),
                )
                if self.server is not None:
                    self._publish()  # /healthz: 503 "stopping"
            self.faults.reached("shutdown")
            connected = self.kafka.producer is not None and self.kafka.consumer is not None
            if connected and unsaved and not self.link.save_now(unsaved, "shutdown"):
                clean = False
                log.error(
                    "could not write the final checkpoint of partitions %s (Kafka or the "
                    "checkpoint store unavailable); the next start replays them from their "
                    "previous checkpoint",
                    names,
                    extra=fields(event="shutdown_unsaved", partitions=names),
                )
            self.dead_letters.flush(force=True)
        finally:
            try:
                self.checkpoints.close()
            finally:
                self.kafka.close()
                self.link.close()
                if self.server is not None:
                    self.server.close()
                self.store.close()
        log.info("worker stopped", extra=fields(event="stopped", clean=clean))
        return clean


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
