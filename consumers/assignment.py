"""Partitions coming and going: restoring each assigned one from its newest checkpoint.

kafka-python calls rebalance listeners on its own I/O thread, so the listeners only queue
the change and the main loop applies it between polls (`apply`). An assigned partition number
(events[p] and labels[p], co-partitioned by the range assignor) gets its pipeline opened in
the model process from its newest checkpoint, and both inputs are sought to the offsets that
checkpoint reflects; a revoked one is checkpointed first if it can be, then closed. The same
restore puts every owned partition back to its checkpoint after an outage (`rewind`).

The checkpoint comes from whichever store the worker was given (`CheckpointStore`), so a
partition's new owner may be on another host. The store skips, with a WARNING, checkpoints
that are incomplete or do not verify; the model process unpickles the state through an
allow-list, and a state it refuses is logged and the next older checkpoint tried. A store
that cannot be read leaves the partition assigned but not restored (`unrestored`): nothing of
it is processed, and `rewind` restores it once the store answers. A partition is never
started afresh because its checkpoint could not be read.
"""

from __future__ import annotations

import logging
import queue
import time

from driftstream.consumers.checkpointing import Checkpointer
from driftstream.consumers.kafka_clients import KafkaClients
from driftstream.consumers.model_link import ModelLink
from driftstream.consumers.model_messages import ClosePartitions, OpenPartition
from driftstream.consumers.observability import WorkerMetrics, fields
from driftstream.consumers.outage import Outage
from driftstream.consumers.partition_task import PartitionTask
from driftstream.state.checkpoints import Checkpoint, StateError
from driftstream.state.store import CheckpointStore, StoreUnavailable
from driftstream.stream.learner import LearnerConfig
from driftstream.transport import KafkaError

__all__ = ["Assignments"]

log = logging.getLogger("driftstream.worker")

Partitions = list[tuple[str, int]]  # (topic, partition) pairs, as kafka-python reports them


class Assignments:
    """The partitions this worker owns (``tasks``), kept in step with the group's rebalances.

    ``restore`` settings: ``config`` for fresh learners, ``max_idle_ms`` and
    ``checkpoint_every`` for their pipelines.
    """

    def __init__(
        self,
        tasks: dict[int, PartitionTask],
        inputs: tuple[str, str],
        clients: KafkaClients,
        link: ModelLink,
        checkpoints: Checkpointer,
        store: CheckpointStore,
        outage: Outage,
        metrics: WorkerMetrics,
        config: LearnerConfig,
        max_idle_ms: int | None,
        checkpoint_every: int,
    ):
        self.tasks = tasks
        self.inputs = inputs
        self.clients = clients
        self.link = link
        self.checkpoints = checkpoints
        self.store = store
        self.outage = outage
        self.metrics = metrics
        self.config = config
        self.max_idle_ms = max_idle_ms
        self.checkpoint_every = checkpoint_every
        self.assigned_once = False
        self.ready = False  # an assignment is applied and restored (no rebalance under way)
        self.problems: list[str] = []  # of the newest assignment (not co-partitioned)
        self.unrestored: set[int] = set()  # assigned, but the store could not be read yet
        self._changes: queue.SimpleQueue = queue.SimpleQueue()

    def subscribe(self) -> None:
        """Join the group on both inputs; rebalances are queued for `apply`."""
        self.clients.consumer.subscribe(
            list(self.inputs),
            lambda tps: self._changes.put((self._on_assign, tps)),
            lambda tps: self._changes.put((self._on_revoke, tps)),
        )

    @property
    def changed(self) -> bool:
        """A rebalance is waiting to be applied."""
        return not self._changes.empty()

    def apply(self) -> set[int]:
        """Apply queued assignments and revocations; return the newly assigned partitions
        (records polled for them before their seek are fetched again)."""
        fresh: set[int] = set()
        while not self._changes.empty():
            handler, partitions = self._changes.get()
            changed = handler(partitions)
            fresh = fresh | changed if handler == self._on_assign else fresh - changed
        return fresh

    def rewind(self) -> None:
        """Put every owned partition back to its newest checkpoint and re-read from there.

        Outputs since a checkpoint may be lost when Kafka fails, and state since it when the
        store does; the replay re-emits them and leaves each learner exactly as an
        uninterrupted run would. Partitions assigned while the store was unavailable are
        restored too. Raises `StoreUnavailable` if the store cannot serve them all (then
        the caller tries again later; the ones done stay done).
        """
        self.link.drain(discard=True)
        self.checkpoints.forget()
        now_ms = time.time_ns() // 1_000_000
        consumer = self.clients.consumer
        for p in sorted(set(self.tasks) | self.unrestored):
            old = self.tasks.get(p)
            task = self.restore(p, now_ms, "rewind")
            try:
                for stream, topic in enumerate(self.inputs):
                    consumer.seek(topic, p, task.next_offset[stream])
                if old is not None:
                    consumer.resume(sorted(old.paused))
            except KafkaError:  # no longer assigned; a later assignment restores it
                self.link.call(ClosePartitions([p]))
                self.tasks.pop(p, None)
                self.unrestored.discard(p)
                continue
            self.tasks[p] = task
            self.unrestored.discard(p)

    def restore(self, p: int, now_ms: int, why: str) -> PartitionTask:
        """Open partition p's pipeline in the model from its newest checkpoint (or fresh, if
        it has none). `StoreUnavailable` if the store cannot be read; StateError if it has
        checkpoints and none can be loaded."""
        self.checkpoints.finish_writes(wait=True)  # the store is read: none in flight
        checkpoint = self.store.latest(p)
        while True:
            offsets = [0, 0]
            if checkpoint is not None:
                offsets = [checkpoint.offsets.get(t, 0) for t in self.inputs]
            opened = self.link.call(
                OpenPartition(
                    p,
                    None if checkpoint is None else checkpoint.state,
                    self.config,
                    self.inputs,
                    offsets,
                    self.max_idle_ms,
                    now_ms,
                    self.checkpoint_every,
                )
            )
            if opened.refused is None:
                break
            checkpoint = self._older(p, checkpoint, opened.refused)
        model = opened.model.to_wire()
        written = {} if checkpoint is None else checkpoint.provenance
        where = fields(
            event="restore",
            reason=why,
            partition=p,
            checkpoint=None if checkpoint is None else checkpoint.version,
            offsets=dict(zip(self.inputs, offsets)),
            model=model,
            store=self.store.name,
            model_pid=self.link.home(p),  # the model process it lives in (--model-processes)
            written_by={k: written.get(k) for k in ("driftstream", "river", "python")},
        )
        if checkpoint is None:
            log.info("partition %d: no checkpoint, starting fresh from offset 0", p, extra=where)
        else:
            log.info(
                "partition %d: restored checkpoint %d, offsets %s, model %s",
                p,
                checkpoint.version,
                offsets,
                model,
                extra=where,
            )
            if opened.config != self.config:
                # The state is the history: it keeps the configuration it was built with.
                log.warning(
                    "partition %d: its checkpoint was made with model %r, policy %r; "
                    "continuing with those, not with this worker's %r, %r (start from "
                    "a new state store to change them)",
                    p,
                    opened.config.model,
                    opened.config.drift_policy,
                    self.config.model,
                    self.config.drift_policy,
                    extra=fields(event="config_differs", partition=p),
                )
        task = PartitionTask(p, offsets, opened.summary, opened.model, config=opened.config)
        task.checkpoint_at = checkpoint.created_at / 1000 if checkpoint is not None else None
        task.latency = self.metrics.latency_seconds.labels(str(p))
        task.checkpoint_seconds = self.metrics.checkpoint_seconds.labels(str(p))
        return task

    def _older(self, p: int, refused: Checkpoint, why: str) -> Checkpoint:
        """The newest checkpoint of p older than ``refused`` (whose state the model process
        would not load), after an ERROR naming both; StateError if there is none."""
        log.error(
            "partition %d: checkpoint %d refused when unpickled (%s); trying the one before",
            p,
            refused.version,
            why,
            extra=fields(
                event="checkpoint_refused", partition=p, checkpoint=refused.version, reason=why
            ),
        )
        older = [c["version"] for c in self.store.checkpoints(p) if c["version"] < refused.version]
        if not older:
            raise StateError(
                f"partition {p}: no checkpoint of {self.store.name} can be loaded (the newest "
                f"refused: {why}); not starting it afresh: delete its checkpoints to do so"
            )
        return self.store.get(p, older[-1])

    def _on_assign(self, partitions: Partitions) -> set[int]:
        self.assigned_once = True
        numbers = sorted({p for _, p in partitions})
        now_ms = time.time_ns() // 1_000_000
        added = set()
        self.problems = []
        for p in numbers:
            if p in self.tasks or p in self.unrestored:
                continue
            have = {t for t, q in partitions if q == p}
            if set(self.inputs) - have:
                problem = (
                    f"partition {p}: only {sorted(have)} assigned; inputs must be "
                    f"co-partitioned (same partition count)"
                )
                log.error(problem, extra=fields(event="not_copartitioned", partition=p))
                self.problems.append(problem)
                continue
            if not self.outage.store_ok:  # kept, not processed: the rewind restores it
                self.unrestored.add(p)
                continue
            try:
                task = self.restore(p, now_ms, "assigned")
            except StoreUnavailable as e:
                self.unrestored.add(p)
                self.outage.store_failed(f"partition {p} not restored: {e}")
                continue
            try:
                for stream, topic in enumerate(self.inputs):
                    self.clients.consumer.seek(topic, p, task.next_offset[stream])
            except KafkaError:  # revoked again meanwhile; a later assignment restores it
                self.link.call(ClosePartitions([p]))
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
                partitions={p: self._state(t) for p, t in self.tasks.items() if p in numbers},
            ),
        )
        return added

    def _on_revoke(self, partitions: Partitions) -> set[int]:
        self.link.drain()
        self.checkpoints.finish_writes(wait=True)  # committed while still owned
        lost = sorted({p for _, p in partitions} & set(self.tasks))
        unsaved = [self.tasks[p] for p in lost if self.checkpoints.unsaved(self.tasks[p])]
        self.unrestored -= {p for _, p in partitions}
        if unsaved and not self.link.save_now(unsaved, "revoke"):
            log.warning(
                "partitions %s revoked without a final checkpoint (Kafka or the checkpoint "
                "store unavailable); "
                "their next owner replays them from their previous checkpoint",
                [t.partition for t in unsaved],
                extra=fields(event="revoke_unsaved", partitions=[t.partition for t in unsaved]),
            )
        states = {p: self._state(self.tasks[p]) for p in lost}
        self.link.call(ClosePartitions(lost))
        for p in lost:
            del self.tasks[p]
        self.ready = False
        log.info(
            "revoked partitions %s",
            lost,
            extra=fields(event="rebalance", revoked=lost, partitions=states),
        )
        return set(lost)

    def _state(self, task: PartitionTask) -> dict:
        """A partition's offsets and model version, for the rebalance log lines."""
        return {"offsets": task.offsets(self.inputs), "model": task.model.to_wire()}
