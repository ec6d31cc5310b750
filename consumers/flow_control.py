"""Where each input of each owned partition stands, and pausing inputs that run ahead.

Once per loop the worker reads each input's position and high-water mark: the lag (for
operators), whether the input is caught up (the merge may then release the other input's
records without waiting), and whether the log ends before the offset the checkpoint has
reached (a broker that lost its data): then the partition waits, unhealthy, until the log
reaches that offset again, and the records below it are taken as already reflected.

An input whose records queue up in the merge (the other input is behind in event time) is
paused above PAUSE_ABOVE queued records and resumed below RESUME_BELOW, so that memory stays
bounded whatever the two inputs' rates.
"""

from __future__ import annotations

import logging

from driftstream.consumers.kafka_clients import KafkaClients
from driftstream.consumers.observability import fields
from driftstream.consumers.partition_task import PartitionTask
from driftstream.transport import KafkaError

__all__ = ["PAUSE_ABOVE", "RESUME_BELOW", "FlowControl"]

log = logging.getLogger("driftstream.worker")

PAUSE_ABOVE = 50_000  # records queued in one merge input before its partition is paused
RESUME_BELOW = 10_000


class FlowControl:
    """Positions, lag and pauses of the inputs of the partitions in ``tasks``."""

    def __init__(
        self, clients: KafkaClients, tasks: dict[int, PartitionTask], inputs: tuple[str, str]
    ):
        self.clients = clients
        self.tasks = tasks
        self.inputs = inputs

    def update(self) -> None:
        """Read every owned input's position: lag, caught up, behind the checkpoint; resume
        the paused inputs whose queue has drained."""
        consumer = self.clients.consumer
        for p, task in self.tasks.items():
            for stream, topic in enumerate(self.inputs):
                try:
                    high = consumer.highwater(topic, p)
                    position = consumer.position(topic, p)
                except KafkaError:  # being revoked: the queued revocation drops it
                    break
                task.lag[stream] = None if high is None else max(high - position, 0)
                if high is not None and high < task.next_offset[stream]:
                    self._log_behind(task, stream, high)
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
                            offsets=task.offsets(self.inputs),
                        ),
                    )
                    task.behind[stream] = None
                task.caught_up[stream] = high is not None and position >= high
                tp = (topic, p)
                if tp in task.paused and task.queued[stream] < RESUME_BELOW:
                    try:
                        consumer.resume([tp])
                    except KafkaError:  # being revoked: the queued revocation drops it
                        continue
                    task.paused.discard(tp)

    def pause_full(self, task: PartitionTask) -> None:
        """After an answer: pause the inputs of ``task`` whose merge queue is too long."""
        for stream, topic in enumerate(self.inputs):
            tp = (topic, task.partition)
            if task.queued[stream] > PAUSE_ABOVE and tp not in task.paused:
                try:
                    self.clients.consumer.pause([tp])
                except KafkaError:  # being revoked: the queued revocation drops it
                    continue
                task.paused.add(tp)

    def problems(self) -> list[str]:
        """For the health check: the inputs whose log ends before their checkpoint."""
        return [
            f"partition {p}: {topic} ends at offset {task.behind[stream]}, "
            f"before the checkpoint's offset {task.next_offset[stream]}"
            for p, task in sorted(self.tasks.items())
            for stream, topic in enumerate(self.inputs)
            if task.behind[stream] is not None
        ]

    def _log_behind(self, task: PartitionTask, stream: int, high: int) -> None:
        """The log ends before what the checkpoint reflects: wait for it to grow."""
        if task.behind[stream] is None:
            log.error(
                "partition %d: %s ends at offset %d, before offset %d that its checkpoint "
                "has reached (did the broker lose data?); waiting for the log to reach it",
                task.partition,
                self.inputs[stream],
                high,
                task.next_offset[stream],
                extra=fields(
                    event="log_behind_checkpoint",
                    partition=task.partition,
                    topic=self.inputs[stream],
                    log_end=high,
                    offsets=task.offsets(self.inputs),
                    model=task.model.to_wire(),
                ),
            )
        task.behind[stream] = high
        task.caught_up[stream] = False
