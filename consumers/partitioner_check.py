"""Labels that land on other partitions than their events: the likely cause, said once.

An event and its label meet only on the same partition number of the two topics, and a
producer picks the partition from the key's hash. Clients disagree on the hash: kafka-python
and the Java client use murmur2, librdkafka (confluent-kafka and the clients built on it) uses
crc32 by default. With events from one and labels from the other, a label finds its event
only when both hashes happen to agree (1 time in N partitions); the others wait for an event
that never comes to that partition and are dead-lettered as ``unknown_id``. Tried as a new user
would, 2,532 of 4,000 labels went that way and the worker only logged counts.

So the worker counts, over the last ``window`` seconds, the label records it received and the
labels it dead-lettered as unknown_id. The diagnosis starts when, in that window,

- at least ``min_unknown`` labels were unknown_id, and at least ``share`` of those received
  (a healthy stream has next to none; mixed partitioners give (N-1)/N, 50 % or more),
- on more than one partition, if the worker has labels on more than one,
- and the labels topic has more than one partition (with one, every client agrees).

It then logs one WARNING naming the likely cause, and until it ends `warning` is the line for
/healthz and `active` the flag for the metrics. It ends when the share over the window falls
below half of ``share`` (or no label comes for a whole window), with one INFO line; a
later occurrence warns again.

>>> now = [0.0]
>>> check = PartitionerCheck(clock=lambda: now[0])
>>> for p in range(4):
...     check.labels_received(p, 100)
...     for _ in range(75):
...         check.dead_letter(p, "unknown_id")
>>> started = check.update(lambda: 4)
>>> started.unknown, started.labels, started.partitions, check.active
(300, 400, [0, 1, 2, 3], True)
>>> now[0] = 61.0  # a window without labels: over
>>> check.update(lambda: 4), check.active
(None, False)
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from driftstream.consumers.observability import fields

__all__ = ["MIN_UNKNOWN", "SHARE", "WINDOW_S", "Diagnosis", "PartitionerCheck", "likely_cause"]

WINDOW_S = 60.0  # seconds of labels the share is taken over
SHARE = 0.2  # of the labels received, dead-lettered as unknown_id
MIN_UNKNOWN = 100  # unknown_id labels in the window, at least (no verdict on a handful)
CHECK_EVERY_S = 1.0

ADVICE = (
    "likely cause: events and labels published by producers with different partitioners, "
    "so a label lands on another partition than its event (kafka-python and Java hash keys "
    "with murmur2, librdkafka with crc32 by default): set partitioner=murmur2_random in "
    "librdkafka producers (confluent-kafka, kcat), or publish both topics with one client"
)


def likely_cause(unknown: int, labels: int, partitions: list[int]) -> str:
    """The diagnosis line: the figures, then the likely cause and the fix."""
    share = unknown / labels if labels else 1.0
    return (
        f"{unknown} of {labels} labels ({share:.0%}) in the last {WINDOW_S:.0f} s were "
        f"dead-lettered as unknown_id, on partitions {partitions}: {ADVICE}"
    )


@dataclass(frozen=True)
class Diagnosis:
    """What the check saw in its window when it decided."""

    unknown: int
    labels: int
    partitions: list[int]  # those with unknown_id labels in the window

    @property
    def share(self) -> float:
        return self.unknown / self.labels if self.labels else 1.0

    def message(self) -> str:
        return likely_cause(self.unknown, self.labels, self.partitions)


class PartitionerCheck:
    """Counts labels received and unknown_id dead letters per second; `update` decides."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        window: float = WINDOW_S,
        share: float = SHARE,
        min_unknown: int = MIN_UNKNOWN,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.log = logger
        self.window = window
        self.threshold = share
        self.min_unknown = min_unknown
        self.clock = clock
        # one entry per second with records: [second, {partition: [labels, unknown_id]}]
        self._seconds: collections.deque = collections.deque()
        self._checked = -CHECK_EVERY_S
        self.current: Diagnosis | None = None  # set while the diagnosis holds
        self.share: float | None = None  # unknown_id share over the window (None: no labels)

    @property
    def active(self) -> bool:
        return self.current is not None

    @property
    def warning(self) -> str | None:
        """The line for /healthz while the diagnosis holds."""
        return None if self.current is None else self.current.message()

    def labels_received(self, partition: int, n: int) -> None:
        self._counts(partition)[0] += n

    def dead_letter(self, partition: int, reason: str) -> None:
        if reason == "unknown_id":
            self._counts(partition)[1] += 1

    def _counts(self, partition: int) -> list[int]:
        second = int(self.clock())
        if not self._seconds or self._seconds[-1][0] != second:
            self._seconds.append([second, {}])
        counts = self._seconds[-1][1]
        if partition not in counts:
            counts[partition] = [0, 0]
        return counts[partition]

    def update(self, n_partitions: Callable[[], int]) -> Diagnosis | None:
        """Decide (at most once a second); the diagnosis if one started now.

        ``n_partitions`` tells the labels topic's partition count; asked only when the
        figures point to a mismatch.
        """
        now = self.clock()
        if now - self._checked < CHECK_EVERY_S:
            return None
        self._checked = now
        seconds = self._seconds
        while seconds and seconds[0][0] <= now - self.window:
            seconds.popleft()
        labels, unknown = 0, 0
        per_partition: dict[int, list[int]] = {}
        for _, counts in seconds:
            for p, (n_labels, n_unknown) in counts.items():
                labels += n_labels
                unknown += n_unknown
                total = per_partition.setdefault(p, [0, 0])
                total[0] += n_labels
                total[1] += n_unknown
        self.share = min(1.0, unknown / labels) if labels else None
        if self.current is not None:
            if self.share is None or self.share < self.threshold / 2:
                self._end()
            return None
        with_labels = [p for p, (n, _) in per_partition.items() if n]
        hit = sorted(p for p, (_, u) in per_partition.items() if u)
        if (
            unknown >= self.min_unknown
            and self.share is not None
            and self.share >= self.threshold
            and (len(hit) > 1 or len(with_labels) <= 1)
            and n_partitions() > 1
        ):
            self.current = Diagnosis(unknown, labels, hit)
            if self.log is not None:
                self.log.warning(
                    "%s",
                    self.current.message(),
                    extra=fields(
                        event="partitioner_mismatch",
                        unknown_id=unknown,
                        labels=labels,
                        partitions=hit,
                    ),
                )
            return self.current
        return None

    def _end(self) -> None:
        if self.log is not None:
            share = "no labels" if self.share is None else f"{self.share:.0%} unknown_id"
            self.log.info(
                "labels and events meet again (%s in the last %.0f s); the partitioner "
                "mismatch warning is over",
                share,
                self.window,
                extra=fields(event="partitioner_mismatch_over", share=self.share),
            )
        self.current = None
