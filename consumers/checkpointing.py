"""Checkpoints: a partition's state saved with the input offsets it reflects, never ahead of
its outputs.

A snapshot from the model process is saved only once every output made before it is
acknowledged by Kafka (`Producer.flush`): a checkpoint must never get ahead of outputs that may
be lost. A snapshot whose state a forked process is still writing (`StateSnapshot.state_file`)
is saved when the model process reports the file complete, unless a newer checkpoint of its
partition came first. After a save the offsets are committed to Kafka, as a progress hint for
lag tools only: restores use the checkpoints.

A periodic checkpoint is written by a thread of its own (15-40 ms in SQLite here, which
would otherwise pause polling and sending); it counts as saved, and its offsets are
committed, once the write is confirmed. One write is in flight at most: the next checkpoint,
revoke and shutdown checkpoints, and every read of the store wait for it. So a crash can
lose up to two checkpoint intervals, the newest of them still being written.

The store is any `CheckpointStore` (an SQLite file, a Kafka topic, an S3 bucket). A save it
does not confirm (`StoreUnavailable`) commits nothing and is an outage (`Outage.store_failed`):
processing stops, and every partition goes back to its newest saved checkpoint once the store
answers again, so nothing is lost and nothing is learned twice. Each checkpoint records the
learner's configuration (with the driftstream, River and Python versions the store adds).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from driftstream.consumers.faults import FaultPlan
from driftstream.consumers.kafka_clients import FLUSH_TIMEOUT_S, KafkaClients
from driftstream.consumers.model_process import remove_quietly
from driftstream.consumers.observability import fields
from driftstream.consumers.outage import Outage
from driftstream.consumers.output_sender import OutputSender
from driftstream.consumers.partition_task import PartitionTask
from driftstream.state.store import CheckpointStore, StoreUnavailable
from driftstream.stream.codec import encode
from driftstream.stream.outputs import StateSnapshot
from driftstream.transport import DeliveryFailed, KafkaError
from driftstream.transport.errors import UNREACHABLE

__all__ = ["Checkpointer"]

log = logging.getLogger("driftstream.worker")


class Checkpointer:
    """Saves the snapshots of the partitions in ``tasks`` into ``store``."""

    def __init__(
        self,
        store: CheckpointStore,
        tasks: dict[int, PartitionTask],
        inputs: tuple[str, str],
        clients: KafkaClients,
        sender: OutputSender,
        outage: Outage,
        keep: int,
        faults: FaultPlan,
    ):
        self.store = store
        self.tasks = tasks
        self.inputs = inputs
        self.clients = clients
        self.sender = sender
        self.outage = outage
        self.keep = keep  # checkpoints kept per partition (plus one per model generation)
        self.faults = faults
        self._awaiting: dict[str, tuple[int, StateSnapshot]] = {}  # states being written
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-writer")
        self._writing: collections.deque[_Write] = collections.deque()  # oldest first

    def take(self, task: PartitionTask, snap: StateSnapshot) -> bool:
        """A snapshot met among the outputs: save it now, or once its file is written;
        False if it could not be saved (Kafka failed)."""
        if snap.state_file is not None:
            self._awaiting[snap.state_file] = (task.partition, snap)
            return True
        return self.save(task, snap)

    def save(self, task: PartitionTask, snap: StateSnapshot) -> bool:
        """Flush outputs, then save the snapshot with the offsets it reflects (one txn) on the
        writer thread, after the write in flight: a periodic one counts once confirmed, any
        other is waited for.

        Saves nothing and returns False if Kafka does not acknowledge the outputs (or, for a
        checkpoint waited for, if the store does not confirm it).
        """
        if not self.outage.ok:
            return False
        started = time.perf_counter()
        try:
            self.clients.producer.flush(timeout=FLUSH_TIMEOUT_S)
        except DeliveryFailed as e:  # e.g. refused by the broker: loud, and nothing skipped
            self.outage.failed(f"outputs not delivered ({e.args[0]})")
            return False
        except KafkaError as e:
            self.outage.failed(
                f"outputs not acknowledged within {FLUSH_TIMEOUT_S:.0f} s ({type(e).__name__})"
            )
            return False
        p = task.partition
        offsets = dict(zip(self.inputs, snap.offsets))
        for path, (q, _) in list(self._awaiting.items()):
            if q == p:  # older than this one: never to be saved now
                del self._awaiting[path]
        self.faults.reached("checkpoint")
        try:
            self.sender.send_one("metrics", encode({**snap.summary, "offsets": offsets}), None, p)
        except KafkaError as e:  # informational only; the checkpoint matters
            log.debug("metrics record not sent: %s", e)
        self.finish_writes(wait=True)  # one write in flight at most, and in order
        if not self.outage.ok:  # the one in flight was not confirmed
            return False
        config = None if task.config is None else dataclasses.asdict(task.config)
        done = self._writer.submit(self._write, p, snap, offsets, config)
        write = _Write(task, snap, offsets, started, done)
        if snap.reason == "periodic":  # counted as saved once confirmed (`finish_writes`)
            self._writing.append(write)
            return True
        return self._finish(write)  # revoke, shutdown: waits for it

    def finish_writes(self, wait: bool = False) -> None:
        """Count the writes confirmed so far as saved, in order (with ``wait``: all of them)."""
        while self._writing and (wait or self._writing[0].done.done()):
            self._finish(self._writing.popleft())

    def _write(self, p: int, snap: StateSnapshot, offsets: dict[str, int], config) -> int:
        """Save and prune, on the writer thread; the new version."""
        version = self.store.save_checkpoint(
            p,
            snap.state,
            offsets,
            snap.model,
            info=snap.summary,
            drift_records=snap.drift_records,
            model_events=snap.model_events,
            config=config,
        )
        # Retention: replay can start near any point without the store growing forever.
        try:
            self.store.prune(p, keep_last=self.keep)
        except StoreUnavailable as e:  # the checkpoint is saved; the next save prunes
            log.warning(
                "partition %d: old checkpoints not pruned: %s",
                p,
                e,
                extra=fields(event="prune_failed", partition=p),
            )
        return version

    def _finish(self, write: _Write) -> bool:
        """A write is over: log it and commit its offsets, or, if the store did not confirm
        it, an outage (nothing committed; every partition back to its newest checkpoint)."""
        task, snap, offsets = write.task, write.snap, write.offsets
        p = task.partition
        try:
            version = write.done.result()
        except StoreUnavailable as e:
            self.outage.store_failed(f"checkpoint of partition {p} not saved: {e}")
            return False
        seconds = time.perf_counter() - write.started
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
        self._commit(p, offsets)
        self.clients.close_retired()
        return True

    def state_written(self, path: str, problem: str | None) -> None:
        """A state file the model process had forked off is complete: save its checkpoint
        (unless a newer checkpoint of the partition came first, or it failed)."""
        p, snap = self._awaiting.pop(path, (None, None))
        try:
            if snap is None or p not in self.tasks or self.outage.needs_rewind:
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
            self.save(self.tasks[p], snap)
        finally:
            remove_quietly(path)

    def unsaved(self, task: PartitionTask) -> bool:
        """Processed something since its newest saved checkpoint."""
        return (
            bool(task.since_checkpoint)
            or any(p == task.partition for p, _ in self._awaiting.values())
            or any(write.task is task for write in self._writing)
        )

    @property
    def awaiting(self) -> bool:
        """Some snapshot's state is still being written."""
        return bool(self._awaiting)

    def close(self) -> None:
        """Finish the writes in flight and stop the writer thread (before the store closes)."""
        self.finish_writes(wait=True)
        self._writer.shutdown()

    def forget(self) -> None:
        """Drop the snapshots still being written (a rewind: their outputs may be lost); their
        files are removed when reported complete. Checkpoints handed to the store are kept
        (their outputs were acknowledged): their writes are waited for."""
        self._awaiting.clear()
        self.finish_writes(wait=True)

    def _commit(self, p: int, offsets: dict[str, int]) -> None:
        # Committed offsets are only a progress hint for lag tools; without a coordinator the
        # commit would block for the request timeout, so it waits for the next checkpoint.
        consumer = self.clients.consumer
        if consumer.connected():
            try:
                consumer.commit({(t, p): o for t, o in offsets.items()})
            except UNREACHABLE as e:
                # The broker went away during the commit (which then blocked for the request
                # timeout): an outage, noticed now rather than at the next poll's check, so
                # that an idle worker cannot take it for idleness and exit.
                self.outage.failed(f"offsets not committed: {type(e).__name__}: {e}")
            except KafkaError as e:
                log.warning(
                    "committing offsets failed (%s: %s); they are only a progress hint",
                    type(e).__name__,
                    e,
                    extra=fields(event="commit_failed"),
                )


class _Write(NamedTuple):
    """A checkpoint handed to the store: what to do once ``done`` says how it went."""

    task: PartitionTask
    snap: StateSnapshot
    offsets: dict[str, int]
    started: float
    done: Future
