"""Outages: when the worker stops processing, how long it waits, and when it resumes.

Two things can be unavailable. Kafka: the group coordinator is lost, a poll or a send raises,
or outputs are not acknowledged in time. The checkpoint store: a checkpoint is not confirmed,
or a partition's newest checkpoint cannot be read (`StoreUnavailable`). Either way, outputs
sent or state built since the last saved checkpoint may be lost, so the worker stops
processing, reports unhealthy, and puts every partition back to its newest checkpoint
(`needs_rewind`; the rewind itself is `Assignments.rewind`) once Kafka answers and the store's
retry is due. It keeps its partitions, commits nothing (offsets are committed after a saved
checkpoint only) and retries each with exponential back-off (BACKOFF_MIN_S to BACKOFF_MAX_S for
Kafka, to STORE_BACKOFF_MAX_S for the store).

>>> outage = Outage(owned=lambda: [0])
>>> outage.failed("poll raised")  # logs a warning
>>> outage.ok, outage.needs_rewind, outage.problems()[0].endswith("poll raised")
(False, True, True)
>>> outage.check(connected=True, reconnect=lambda: None)  # not before the back-off is over
>>> outage.ok, outage.rewind_due()
(False, False)
>>> outage = Outage(owned=lambda: [0])
>>> outage.store_failed("s3://b/p: cannot list")  # logs a warning
>>> outage.kafka_ok, outage.store_ok, outage.rewind_due()  # the store's retry is not due yet
(True, False, False)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from driftstream.consumers.observability import fields
from driftstream.transport import KafkaClientError

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "OUTAGE_POLL_MS", "STORE_BACKOFF_MAX_S", "Outage"]

log = logging.getLogger("driftstream.worker")

BACKOFF_MIN_S = 1.0  # first wait after a failure; doubles up to BACKOFF_MAX_S while
BACKOFF_MAX_S = 30.0  # failures follow each other (a new outage after that long starts over)
STORE_BACKOFF_MAX_S = 10.0  # the store's: a retry is one read per partition, cheap to repeat
OUTAGE_POLL_MS = 500  # poll timeout while Kafka is unavailable


class _Backoff:
    """When to try again: BACKOFF_MIN_S, doubling to ``most``; starts over once the thing
    has worked for BACKOFF_MAX_S."""

    def __init__(self, most: float = BACKOFF_MAX_S) -> None:
        self.most = most
        self.wait = BACKOFF_MIN_S
        self.retry_at = 0.0
        self.recovered_at = float("-inf")

    def start(self, now: float) -> float:
        if now - self.recovered_at > BACKOFF_MAX_S:  # not a relapse: start over
            self.wait = BACKOFF_MIN_S
        return self.schedule(now)

    def schedule(self, now: float) -> float:
        wait = self.wait
        self.retry_at = now + wait
        self.wait = min(self.wait * 2, self.most)
        return wait


class Outage:
    """Whether Kafka and the checkpoint store are usable now, and the back-off while one is
    not. ``owned()`` names the partitions owned (for the log lines)."""

    def __init__(self, owned: Callable[[], list[int]]):
        self.owned = owned
        self.kafka_ok = True
        self.store_ok = True
        self.needs_rewind = False  # every partition must go back to its newest checkpoint
        self.since = 0.0  # Kafka's outage
        self.reason = ""
        self.store_since = 0.0
        self.store_reason = ""
        self._kafka = _Backoff()
        self._store = _Backoff(STORE_BACKOFF_MAX_S)

    @property
    def ok(self) -> bool:
        """Processing may go on: Kafka and the store are usable and nothing awaits a rewind."""
        return self.kafka_ok and self.store_ok and not self.needs_rewind

    # -- Kafka ---------------------------------------------------------------------------

    def failed(self, reason: str) -> None:
        """Kafka failed: stop processing, go back to the checkpoints once it answers again."""
        self.needs_rewind = True
        self.reason = reason
        if not self.kafka_ok:
            log.debug("Kafka still unavailable: %s", reason)
            return
        now = time.monotonic()
        self.kafka_ok = False
        self.since = now
        wait = self._kafka.start(now)
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
        """Notice the start and the end of a Kafka outage (once per loop). ``reconnect()``
        makes the clients usable again (a fresh producer) or raises `KafkaClientError`."""
        if self.kafka_ok and not connected:
            self.failed("lost the connection to the group coordinator")
        elif not self.kafka_ok and connected and time.monotonic() >= self._kafka.retry_at:
            try:
                reconnect()
            except KafkaClientError as e:
                self.reason = f"cannot create a producer: {e}"
                wait = self._kafka.schedule(time.monotonic())
                log.warning(
                    "Kafka still unavailable (%s); retrying in %.0f s",
                    self.reason,
                    wait,
                    extra=fields(event="kafka_unavailable", reason=self.reason, retry_in=wait),
                )
                return
            self._kafka.recovered_at = now = time.monotonic()
            self.kafka_ok = True
            log.info(
                "Kafka reachable again after %.1f s; resuming from the checkpoints",
                now - self.since,
                extra=fields(
                    event="kafka_recovered",
                    partitions=self.owned(),
                    outage_seconds=round(now - self.since, 3),
                ),
            )

    # -- the checkpoint store ------------------------------------------------------------

    def store_failed(self, reason: str) -> None:
        """The store did not confirm a checkpoint or could not be read: stop processing, and
        try the rewind to the checkpoints again after the back-off."""
        self.needs_rewind = True
        self.store_reason = reason
        now = time.monotonic()
        if not self.store_ok:
            wait = self._store.schedule(now)
            log.warning(
                "checkpoint store still unavailable (%s); retrying in %.0f s",
                reason,
                wait,
                extra=fields(event="store_unavailable", reason=reason, retry_in=wait),
            )
            return
        self.store_ok = False
        self.store_since = now
        wait = self._store.start(now)
        log.warning(
            "checkpoint store unavailable (%s): processing paused, no offset committed, "
            "partitions %s go back to their checkpoints; retrying in %.0f s",
            reason,
            self.owned(),
            wait,
            extra=fields(
                event="store_unavailable", reason=reason, partitions=self.owned(), retry_in=wait
            ),
        )

    def rewind_due(self) -> bool:
        """A rewind may be tried now: Kafka answers, and the store is up or its retry is due."""
        return (
            self.needs_rewind
            and self.kafka_ok
            and (self.store_ok or time.monotonic() >= self._store.retry_at)
        )

    def rewound(self) -> None:
        """Every partition is back at its newest checkpoint (the store served them all)."""
        self.needs_rewind = False
        if self.store_ok:
            return
        self._store.recovered_at = now = time.monotonic()
        self.store_ok = True
        log.info(
            "checkpoint store reachable again after %.1f s; resuming from the checkpoints",
            now - self.store_since,
            extra=fields(
                event="store_recovered",
                partitions=self.owned(),
                outage_seconds=round(now - self.store_since, 3),
            ),
        )

    # -- health --------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """For the health check: what is unavailable, for how long, and why."""
        now = time.monotonic()
        out = []
        if not self.kafka_ok:
            out.append(f"Kafka unavailable for {now - self.since:.0f} s: {self.reason}")
        if not self.store_ok:
            out.append(
                f"checkpoint store unavailable for {now - self.store_since:.0f} s: "
                f"{self.store_reason}"
            )
        return out
