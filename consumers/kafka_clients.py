"""The worker's Kafka clients: made once the model process is forked, renewed after an outage.

One consumer (the group member) and one producer, of the client the settings name
(kafka-python or confluent: ``--kafka-client``; docs/design.md, "Two Kafka clients").
kafka-python's idempotent producer fails for good once its connection is lost, so after an
outage the worker takes a fresh one (whichever the client); a replaced producer that still
holds records stays open until they are sent or expire (the replay after the outage re-emits
them anyway), and is closed later.
"""

from __future__ import annotations

import logging

from driftstream.transport import Consumer, KafkaError, KafkaSettings, Producer, TopicError

__all__ = ["FLUSH_TIMEOUT_S", "OUTPUT_ROLES", "KafkaClients"]

log = logging.getLogger("driftstream.worker")

FLUSH_TIMEOUT_S = 15.0  # outputs not acknowledged within this are taken as lost
OUTPUT_ROLES = ("predictions", "drift", "metrics", "deadletter")
CLIENT_ID = "driftstream-worker"


class KafkaClients:
    """``consumer`` and ``producer``, None until `connect`."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: dict[str, str],
        group: str,
        max_poll_records: int,
        fetch_max_wait_ms: int,
    ):
        self.settings = settings
        self.topics = topics
        self.group = group
        self.max_poll_records = max_poll_records
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.out_partitions: dict[str, int] = {}  # partitions of each output topic
        self._retired: list[Producer] = []  # replaced producers that still had records

    def connect(self, topic_prefix: str) -> None:
        """Make both clients; TopicError if an output topic does not exist."""
        self.producer = Producer(self.settings, client_id=CLIENT_ID)
        # A short fetch wait keeps batches small at moderate rates, and so latency low:
        # Tansu answers a waiting fetch only when the wait is over.
        self.consumer = Consumer(
            self.settings,
            group_id=self.group,
            client_id=CLIENT_ID,
            max_poll_records=self.max_poll_records,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        for role in OUTPUT_ROLES:
            self.out_partitions[role] = len(self.consumer.partitions_for(self.topics[role]))
        missing = sorted(self.topics[r] for r, n in self.out_partitions.items() if not n)
        if missing:  # else sends would wait for metadata, or make topics of any layout
            raise TopicError(
                f"output topics {missing} do not exist; create them first, e.g. "
                f"`driftstream topics create --topic-prefix '{topic_prefix}' "
                "--partitions N` (N: the input topics' partitions)"
            )

    def renew_producer(self) -> None:
        """A fresh producer in place of the current one (`KafkaClientError` if Kafka still
        refuses)."""
        producer = Producer(self.settings, client_id=CLIENT_ID)
        self._retired.append(self.producer)
        self.producer = producer
        self.close_retired()

    def close_retired(self) -> None:
        """Close replaced producers. kafka-python's close() flushes first and raises if that
        times out, so one with unsent records stays open until they are sent or expire."""
        for producer in self._retired[:]:
            try:
                producer.close(timeout=0)
            except KafkaError:
                continue
            self._retired.remove(producer)

    def close(self) -> None:
        """Leave the group and close both clients (the producer flushes first)."""
        if self.consumer is not None:
            _close_quietly("consumer", self.consumer.close)
        if self.producer is not None:
            _close_quietly("producer", lambda: self.producer.close(timeout=FLUSH_TIMEOUT_S))
        self.close_retired()


def _close_quietly(what: str, close) -> None:
    try:
        close()
    except KafkaError as e:
        log.warning("closing the %s: %s: %s", what, type(e).__name__, e)
