"""Kafka outages: when the worker stops processing, how long it waits, and when it resumes.

Kafka is unavailable when the group coordinator is lost, a poll or a send raises, or outputs
are not acknowledged in time. Outputs sent since the last checkpoint may then be lost, so the
worker stops processing, reports unhealthy, and rewinds every partition to its newest
checkpoint before it processes anything again (`needs_rewind`; the rewind itself is the
assignment's `Assignments.rewind`). It retries with exponential back-off (BACKOFF_MIN_S to
BACKOFF_MAX_S); once Kafka answers it recreates its producer and goes on from the checkpoints.

>>> outage = KafkaOutage(owned=lambda: [0])
>>> outage.failed("poll raised")  # logs a warning
>>> outage.ok, outage.needs_rewind, outage.problem().endswith("poll raised")
(False, True, True)
>>> outage.check(connected=True, reconnect=lambda: None)  # not before the back-off is over
>>> outage.ok
False
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from driftstream.consumers.observability import fields
from driftstream.transport import KafkaClientError

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "OUTAGE_POLL_MS", "KafkaOutage"]

log = logging.getLogger("driftstream.worker")

BACKOFF_MIN_S = 1.0  # first wait after a Kafka failure; doubles up to BACKOFF_MAX_S while
BACKOFF_MAX_S = 30.0  # failures follow each other (a new outage after that long starts over)
OUTAGE_POLL_MS = 500  # poll timeout while Kafka is unavailable


class KafkaOutage:
    """Whether Kafka is usable now, and the back-off while it is not.

    ``owned()`` names the partitions owned (for the log lines).
    """

    def __init__(self, owned: Callable[[], list[int]]):
        self.owned = owned
        self.ok = True
        self.needs_rewind = False  # every partition must go back to its newest checkpoint
        self.since = 0.0
        self.reason = ""
        self._backoff = BACKOFF_MIN_S
        self._retry_at = 0.0
        self._recovered_at = float("-inf")

    def failed(self, reason: str) -> None:
        """Stop processing, go back to the checkpoints (next step) and retry after a while."""
        self.needs_rewind = True
        self.reason = reason
        if not self.ok:
            log.debug("Kafka still unavailable: %s", reason)
            return
        now = time.monotonic()
        self.ok = False
        self.since = now
        if now - self._recovered_at > BACKOFF_MAX_S:  # not a relapse: start the back-off over
            self._backoff = BACKOFF_MIN_S
        wait = self._schedule_retry()
        log.warning(
            "Kafka unavailable (%s): processing paused, partitions %s go back to their "
            "checkpoints; retrying in %.0f s",
            reason,
            self.owned(),
            wait,
            extra=fields(
                event="kafka_unavailable", reason=reason, partitions=self.owned(), retry_in=wait
            ),
        )

    def check(self, connected: bool, reconnect: Callable[[], None]) -> None:
        """Notice the start and the end of an outage (once per loop). ``reconnect()`` makes the
        clients usable again (a fresh producer) or raises `KafkaClientError`."""
        if self.ok and not connected:
            self.failed("lost the connection to the group coordinator")
        elif not self.ok and connected and time.monotonic() >= self._retry_at:
            try:
                reconnect()
            except KafkaClientError as e:
                self.reason = f"cannot create a producer: {e}"
                wait = self._schedule_retry()
                log.warning(
                    "Kafka still unavailable (%s); retrying in %.0f s",
                    self.reason,
                    wait,
                    extra=fields(event="kafka_unavailable", reason=self.reason, retry_in=wait),
                )
                return
            self._recovered()

    def problem(self) -> str | None:
        """For the health check: what is wrong, while Kafka is unavailable."""
        if self.ok:
            return None
        return f"Kafka unavailable for {time.monotonic() - self.since:.0f} s: {self.reason}"

    def _schedule_retry(self) -> float:
        wait = self._backoff
        self._retry_at = time.monotonic() + wait
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        return wait

    def _recovered(self) -> None:
        self._recovered_at = now = time.monotonic()
        log.info(
            "Kafka reachable again after %.1f s; resuming from the checkpoints",
            now - self.since,
            extra=fields(
                event="kafka_recovered",
                partitions=self.owned(),
                outage_seconds=round(now - self.since, 3),
            ),
        )
        self.ok = True
