"""The dashboard's Kafka side: one background thread following the output topics.

It reads the metrics, drift and dead-letter topics from their beginning (they are small:
a record per checkpoint, per drift, per bad input) and the predictions topic from its
newest `RECENT_PREDICTIONS` records on (it holds one record per event), and hands each
decoded record to the `DashboardModel`. Every `LAG_EVERY_S` it measures the consumer lag
of both inputs: each partition's end offset (from a fetch, as `driftstream status` does:
Tansu's ListOffsets answer is unreliable) minus the worker group's committed offset.
Everything goes through the project's Kafka adapter (`driftstream.transport`); no state
store is read, so the dashboard runs on any host that reaches Kafka.
"""

from __future__ import annotations

import logging
import threading
import time

import orjson

from driftstream.dashboard.model import DashboardModel
from driftstream.transport import (
    Consumer,
    KafkaClientError,
    KafkaError,
    KafkaSettings,
    topic_names,
)

__all__ = ["TopicFollower"]

log = logging.getLogger(__name__)

FOLLOWED = ("metrics", "drift", "deadletter", "predictions")
RECENT_PREDICTIONS = 1_000  # per partition, read at start (older ones are only counted)
LAG_EVERY_S = 2.0
RETRY_S = 1.0


class TopicFollower(threading.Thread):
    """Feeds ``model`` from the topics under ``prefix`` until `stop`."""

    def __init__(
        self,
        settings: KafkaSettings,
        prefix: str,
        group: str,
        model: DashboardModel,
        lag_every: float = LAG_EVERY_S,
    ):
        super().__init__(name="driftstream-dashboard-reader", daemon=True)
        self.settings = settings
        self.topics = topic_names(prefix)
        self.group = group
        self.model = model
        self.lag_every = lag_every
        self._halt = threading.Event()
        model.source = {
            "bootstrap_servers": settings.bootstrap_servers,
            "topic_prefix": prefix,
            "group": group,
            "topics": {k: self.topics[k] for k in (*FOLLOWED, "events", "labels")},
        }

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self._follow()
            except KafkaClientError as e:  # the broker is away: say so, and retry
                self._problem(str(e))
            except KafkaError as e:
                where = self.settings.bootstrap_servers
                self._problem(f"Kafka at {where}: {type(e).__name__}: {e}")
            except Exception as e:  # a bug must not freeze the page silently
                log.debug("dashboard reader failed", exc_info=True)
                self._problem(f"the topic reader failed ({type(e).__name__}: {e}); restarting")
            self._halt.wait(RETRY_S)

    def _problem(self, text: str | None) -> None:
        """Shown on the page; logged once when it starts, not at every retry."""
        if text is not None and text != self.model.problem:
            log.warning("dashboard: %s", text)
        self.model.set_problem(text)

    # -- one session with the broker ------------------------------------------------------

    def _follow(self) -> None:
        consumer = Consumer(self.settings, max_poll_records=5_000)
        lag = _LagProbe(self.settings, self.topics, self.group)
        try:
            tps = self._wait_for_topics(consumer)
            if tps is None:
                return
            self._problem(None)
            consumer.assign(tps)
            consumer.seek_to_beginning(tps)
            preds = [tp for tp in tps if tp[0] == self.topics["predictions"]]
            self._skip_to_recent(consumer, preds)
            next_lag = 0.0
            while not self._halt.is_set():
                by_tp = consumer.poll_by_partition(200)
                for (topic, p), records in by_tp.items():
                    self._dispatch(consumer, topic, p, records)
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + self.lag_every
                    self.model.set_lag(lag.measure(), int(time.time() * 1000))
        finally:
            consumer.close()
            lag.close()

    def _wait_for_topics(self, consumer: Consumer) -> list[tuple[str, int]] | None:
        while not self._halt.is_set():
            tps = [
                (self.topics[role], p)
                for role in FOLLOWED
                for p in consumer.partitions_for(self.topics[role])
            ]
            missing = [r for r in FOLLOWED if not any(t == self.topics[r] for t, _ in tps)]
            if not missing:
                return tps
            self._problem(
                "waiting for the topics "
                + ", ".join(self.topics[r] for r in missing)
                + " (run `driftstream topics create`)"
            )
            self._halt.wait(RETRY_S)
        return None

    def _skip_to_recent(self, consumer: Consumer, preds: list[tuple[str, int]]) -> None:
        """Start the predictions topic's partitions `RECENT_PREDICTIONS` before their end."""
        pending = set(preds)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline and not self._halt.is_set():
            for (topic, p), records in consumer.poll_by_partition(100, 500).items():
                if (topic, p) not in pending:
                    self._dispatch(consumer, topic, p, records)
            for tp in list(pending):
                high = consumer.highwater(*tp)
                if high is not None:
                    consumer.seek(*tp, max(0, high - RECENT_PREDICTIONS))
                    pending.discard(tp)

    def _dispatch(self, consumer: Consumer, topic: str, p: int, records: list) -> None:
        values = []
        for r in records:
            try:
                value = orjson.loads(r.value)
            except (orjson.JSONDecodeError, TypeError):
                continue  # not ours to judge: the topics are written by the workers
            if isinstance(value, dict):
                values.append((r, value))
        model, t = self.model, self.topics
        if topic == t["metrics"]:
            for r, v in values:
                model.add_metrics(int(v.get("partition", p)), v, r.timestamp)
        elif topic == t["drift"]:
            for _, v in values:
                model.add_drift(v)
        elif topic == t["deadletter"]:
            for _, v in values:
                model.add_dead_letter(p, v)
        elif topic == t["predictions"]:
            end = consumer.highwater(topic, p) or (records[-1].offset + 1 if records else 0)
            model.add_predictions(p, [v for _, v in values], end)


class _LagProbe:
    """Consumer lag of the inputs: end offsets (from a one-batch fetch at the last known end)
    minus the worker group's committed offsets."""

    def __init__(self, settings: KafkaSettings, topics: dict[str, str], group: str):
        self.inputs = (topics["events"], topics["labels"])
        # A one-batch fetch per partition is enough to learn its end offset.
        self.ends = Consumer(settings, max_poll_records=1, max_partition_fetch_bytes=1)
        self.group = Consumer(settings, group_id=group)
        self.tps: list[tuple[str, int]] = []
        self.known: dict[tuple[str, int], int] = {}

    def measure(self) -> dict[int, dict[str, int | None]]:
        if not self.tps:
            self.tps = [(t, p) for t in self.inputs for p in self.ends.partitions_for(t)]
            if not self.tps:
                return {}
            self.ends.assign(self.tps)
        for tp in self.tps:
            self.ends.seek(*tp, self.known.get(tp, 0))
        for _ in range(2):  # a fetch answers with each partition's end offset
            self.ends.poll_by_partition(150)
        for tp in self.tps:
            high = self.ends.highwater(*tp)
            if high is not None:
                self.known[tp] = high
        out: dict[int, dict[str, int | None]] = {}
        for topic, p in self.tps:
            kind = "events" if topic == self.inputs[0] else "labels"
            high = self.known.get((topic, p))
            done = self.group.committed(topic, p)
            lag = None if high is None else max(high - (done or 0), 0)
            out.setdefault(p, {"events": None, "labels": None})[kind] = lag
        return out

    def close(self) -> None:
        self.ends.close()
        self.group.close()
