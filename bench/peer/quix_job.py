"""The Quix Streams peer: driftstream's job written the way a Quix Streams user would write it.

Events and labels are two topics keyed by the event id (same partitioning key, same partition
count). They are read into one StreamingDataFrame (``concat``: Quix then aligns the two topics
by message timestamp), and a stateful ``apply`` joins them by id with Quix's State (RocksDB,
backed by a changelog topic by default), whose scope is the message key, i.e. the id:

- an event is scored with ``model.predict_proba_one(features)`` (the prediction is its most
  probable class, as ``predict_one``) and its features kept in state until its label comes;
  ``{"id", "prediction", "proba"}`` goes to the predictions topic, keyed by id, stamped
  with the wall clock when it is produced (Quix would otherwise copy the event's timestamp,
  and the bench's latency is measured from CreateTimes);
- a label takes the features back out of state and calls ``model.learn_one``; a label read
  before its event waits in state, and the event learns it right after being scored.

The model is River's, the same pipeline as driftstream's ``lr`` preset: StandardScaler |
LogisticRegression. It lives in the process (a Quix user keeps one model object; Quix's state
is per key). No drift handling, metrics or checkpoint of the model: what a minimal user job has.

It runs in its own virtualenv (``bench/peer/setup`` builds ``.venv-peer``: quixstreams pins
its own confluent-kafka), started by ``bench.quix_peer`` as::

    .venv-peer/bin/python bench/peer/quix_job.py '{"bootstrap": ..., "prefix": ..., ...}'

SPEC keys: ``bootstrap``, ``prefix`` (topics ``{prefix}events``, ``{prefix}labels``,
``{prefix}predictions``), ``group``, ``state_dir``, and either ``n`` (stop once n events and
n labels are processed and report the timing as one JSON line on stdout) or ``idle_s`` (stop
when nothing came for that long; the latency runs). Optional: ``changelog`` (default true:
Quix's default), ``fetch_wait_ms`` (librdkafka's ``fetch.wait.max.ms``; default 500),
``poll_timeout_s`` (Quix's ``consumer_poll_timeout``, default 1.0: Quix asks librdkafka for
up to 10,000 records and waits that long for them unless they are there before).
Prints ``assigned partitions [0]`` on stderr once Quix has its partitions (the bench waits for
it before it starts publishing), and the model's repr (the bench checks it is its ``lr``).
"""

from __future__ import annotations

import json
import resource
import sys
import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from quixstreams import Application, State
from river import linear_model, preprocessing


def build_model():
    """River's logistic regression on standardised features (driftstream's ``lr`` preset)."""
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def keep_retention_explicit(bootstrap: str, topics: list[str]) -> None:
    """Set ``retention.ms`` on topics that do not report one.

    Quix derives its changelog topic's config from its input topics' ``retention.ms`` and
    fails (KeyError) when the broker does not report it; Tansu reports it only when it was set.
    -1 (keep everything) is what Tansu does anyway; a Kafka broker always reports it.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_configs([ConfigResource("topic", t) for t in topics])
    missing = [r.name for r, f in described.items() if "retention.ms" not in f.result(30)]
    if missing:
        entry = ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)
        altered = admin.incremental_alter_configs(
            [ConfigResource("topic", t, incremental_configs=[entry]) for t in missing]
        )
        for future in altered.values():
            future.result(30)


class _Counts:
    """What the bench reads back: how many records were processed, and when."""

    def __init__(self) -> None:
        self.events = self.labels = self.labels_first = 0
        self.first: float | None = None
        self.cpu0 = 0.0


class _BenchApplication(Application):
    """Application that says when its partitions are assigned (the load generator of the
    latency runs waits for it, as it does for the worker) and when its processing loop ended
    (after its last checkpoint: producer flushed, offsets committed, state flushed; before
    the consumer and the state stores close). Bench instrumentation only."""

    loop_ended: float | None = None

    def _run_dataframe(self, *args, **kwargs):
        super()._run_dataframe(*args, **kwargs)
        self.loop_ended = time.perf_counter()

    def _on_assign(self, consumer, topic_partitions):
        super()._on_assign(consumer, topic_partitions)
        if topic_partitions:
            parts = sorted({tp.partition for tp in topic_partitions})
            print(f"assigned partitions {parts}", file=sys.stderr, flush=True)


def main(spec: dict) -> int:
    prefix = spec["prefix"]
    n = spec.get("n") or 0
    keep_retention_explicit(spec["bootstrap"], [prefix + "events", prefix + "labels"])
    app = _BenchApplication(
        broker_address=spec["bootstrap"],
        consumer_group=spec["group"],
        auto_offset_reset="earliest",
        state_dir=spec["state_dir"],
        use_changelog_topics=spec.get("changelog", True),
        consumer_extra_config=(
            {"fetch.wait.max.ms": spec["fetch_wait_ms"]} if spec.get("fetch_wait_ms") else None
        ),
        consumer_poll_timeout=spec.get("poll_timeout_s") or 1.0,
        loglevel="WARNING",
    )
    events = app.topic(prefix + "events", key_deserializer="str", value_deserializer="json")
    labels = app.topic(prefix + "labels", key_deserializer="str", value_deserializer="json")
    predictions = app.topic(prefix + "predictions", key_serializer="str", value_serializer="json")
    model = build_model()
    print(repr(model), file=sys.stderr, flush=True)
    counts = _Counts()

    def join(value: dict, state: State) -> dict | None:
        """One event or label; state is scoped to the message key (the id)."""
        if counts.first is None:
            counts.first, counts.cpu0 = time.perf_counter(), time.process_time()
        if "features" in value:
            x = value["features"]
            proba = model.predict_proba_one(x)
            y_pred = max(proba, key=proba.get)  # what River's predict_one returns
            label = state.get("label")
            if label is None:
                state.set("x", x)
            else:
                model.learn_one(x, label)
                state.delete("label")
            counts.events += 1
            out = {
                "id": value["id"],
                "prediction": y_pred,
                "proba": {str(k): v for k, v in proba.items()},
            }
        else:
            x = state.get("x")
            if x is None:
                state.set("label", value["label"])
                counts.labels_first += 1
            else:
                model.learn_one(x, value["label"])
                state.delete("x")
            counts.labels += 1
            out = None
        if n and counts.events >= n and counts.labels >= n:
            app.stop()  # processing ends after this record; Quix flushes and commits
        return out

    # Quix takes the record with the smallest timestamp from the two topics; on a tie, from the
    # topic assigned first (here the events, whichever is concatenated first): an event and
    # a label with the same timestamp are read event first (River's simulate_qa: label first).
    sdf = app.dataframe(events).concat(app.dataframe(labels))
    sdf = sdf.apply(join, stateful=True)
    sdf = sdf.filter(lambda value: value is not None)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: time.time_ns() // 1_000_000)
    sdf.to_topic(predictions)

    app.run(timeout=spec.get("idle_s", 0.0))
    cpu = time.process_time() - counts.cpu0  # a little past loop_ended: the closes
    end = app.loop_ended or time.perf_counter()
    if counts.first is None:
        print("no record processed", file=sys.stderr)
        return 1
    seconds = end - counts.first
    print(
        json.dumps(
            {
                "events": counts.events,
                "labels": counts.labels,
                "labels_before_event": counts.labels_first,
                "seconds": seconds,
                "events_per_s": counts.events / seconds,
                "cpu_s": cpu,
                "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "model": repr(model),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
