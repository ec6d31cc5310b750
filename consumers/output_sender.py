"""Publishing a partition's outputs in the order its pipeline made them.

Predictions go to the predictions topic in runs (`Producer.send_batch`), drift notices and dead
letters one by one, each to the output partition of the input partition they came from. A
checkpoint among the outputs is handed to the checkpointer at its place: everything before it
was sent (and is flushed by the checkpointer before it saves), nothing after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from driftstream.consumers.kafka_clients import KafkaClients
from driftstream.consumers.observability import DeadLetterLog, fields
from driftstream.consumers.partition_task import PartitionTask
from driftstream.stream.outputs import DeadLetter, DriftNotice, Output, Predictions, StateSnapshot

__all__ = ["OutputSender"]

log = logging.getLogger("driftstream.worker")


class OutputSender:
    """Sends outputs by the clients' current producer; logs drift and dead letters, and
    tells ``on_drift`` of each drift report sent (the worker's metrics)."""

    def __init__(
        self,
        clients: KafkaClients,
        topics: dict[str, str],
        inputs: tuple[str, str],
        dead_letters: DeadLetterLog,
        on_drift: Callable[[Any], None] | None = None,
    ):
        self.clients = clients
        self.topics = topics
        self.inputs = inputs
        self.dead_letters = dead_letters
        self.on_drift = on_drift

    def send(
        self,
        task: PartitionTask,
        outputs: list[Output],
        checkpoint: Callable[[PartitionTask, StateSnapshot], bool],
    ) -> bool:
        """Publish outputs in order, ``checkpoint`` the snapshots among them; False (and
        nothing after it sent) if a checkpoint failed."""
        p = task.partition
        producer = self.clients.producer
        predictions = self.topics["predictions"]
        to_partition = p % (self.clients.out_partitions.get("predictions") or 1)
        for output in outputs:
            cls = output.__class__
            if cls is Predictions:
                producer.send_batch(predictions, to_partition, output.encoded())
            elif cls is StateSnapshot:
                if not checkpoint(task, output):
                    return False
            elif cls is DeadLetter:
                self.send_one("deadletter", output.value, output.key, p)
                self.dead_letters.record(
                    p,
                    output.topic,
                    output.offset,
                    output.reason,
                    output.detail,
                    output.model.to_wire(),
                )
            elif cls is DriftNotice:
                self.send_one("drift", output.value, None, p)
                self._log_drift(task, output)
                if self.on_drift is not None:
                    self.on_drift(output.report)
        return True

    def send_one(self, role: str, value: bytes, key: bytes | None, partition: int) -> None:
        """One record to an output topic, on the output partition of input ``partition``."""
        n = self.clients.out_partitions.get(role) or 1
        self.clients.producer.send(self.topics[role], value, key, partition % n)

    def _log_drift(self, task: PartitionTask, notice: DriftNotice) -> None:
        report = notice.report
        before, after = report.model_before.to_wire(), report.model_after.to_wire()
        log.info(
            "drift kind=%s partition=%d action=%s model=%s->%s",
            report.kind,
            task.partition,
            report.action,
            before,
            after,
            extra=fields(
                event="drift",
                kind=report.kind,
                partition=task.partition,
                action=report.action,
                feature=report.feature,
                event_ts=report.event_ts,
                offsets=task.offsets(self.inputs),
                model_before=before,
                model=after,
            ),
        )
