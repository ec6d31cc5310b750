"""The Kafka interface against a real broker (the session's embedded Tansu)."""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftstream.broker import BrokerError, EmbeddedBroker, free_port
from driftstream.transport import (
    CLIENTS,
    Admin,
    ClientNotInstalled,
    Consumer,
    DeliveryFailed,
    KafkaSettings,
    KafkaUnavailable,
    Producer,
    Record,
    TopicError,
    topic_names,
)
from driftstream.transport._kafka_python import SUPPORTED_VERSION
from tests.ports import restartable_ports
from tests.support import wait_until

DEADLINE_S = 20.0


@pytest.fixture(params=CLIENTS)
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Each broker test runs with every client behind the adapter (kafka-python, confluent)."""
    return request.param


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker, kafka_client: str) -> KafkaSettings:
    """The session broker's settings (as conftest's) with the client of this run."""
    return KafkaSettings(broker.bootstrap, fast_group_timeouts=True, client=kafka_client)


def consume(consumer: Consumer, count: int) -> list[Record]:
    """Poll until `count` records have arrived."""
    records: list[Record] = []

    def enough() -> bool:
        records.extend(consumer.poll(timeout_ms=200))
        return len(records) >= count

    wait_until(enough, f"{count} records", DEADLINE_S, step=0)  # enough() waits in poll
    return records


@pytest.fixture
def admin(kafka_settings: KafkaSettings) -> Iterator[Admin]:
    a = Admin(kafka_settings)
    yield a
    a.close()


@pytest.fixture
def producer(kafka_settings: KafkaSettings) -> Iterator[Producer]:
    p = Producer(kafka_settings)
    yield p
    p.close()


# -- no broker needed ------------------------------------------------------------------


def test_settings_repr_masks_password() -> None:
    settings = KafkaSettings(
        bootstrap_servers="kafka:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_plain_username="alice",
        sasl_plain_password="hunter2-secret",
    )
    for text in (repr(settings), str(settings), f"{settings}"):
        assert "hunter2" not in text
        assert "***" in text and "alice" in text
    kwargs = settings.client_kwargs()
    assert kwargs["sasl_plain_password"] == "hunter2-secret"
    assert "ssl_cafile" not in kwargs  # only the settings that were given


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    settings = KafkaSettings()
    assert settings.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert settings.group_kwargs()["session_timeout_ms"] >= 6000  # Apache Kafka's minimum
    assert KafkaSettings(fast_group_timeouts=True).group_kwargs()["session_timeout_ms"] == 2000


def test_topic_names() -> None:
    assert topic_names("demo.") == {
        "events": "demo.events",
        "labels": "demo.labels",
        "predictions": "demo.predictions",
        "drift": "demo.drift",
        "metrics": "demo.metrics",
        "deadletter": "demo.deadletter",
    }
    assert topic_names()["events"] == "events"


def test_unreachable_broker_gives_clear_error() -> None:
    settings = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        sasl_plain_password="hunter2-secret",
        connect_timeout_ms=1000,
    )
    with pytest.raises(KafkaUnavailable) as info:
        Admin(settings)
    assert settings.bootstrap_servers in str(info.value)
    assert "hunter2" not in str(info.value)


def _import_with_kafka_python(version: str, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose kafka-python says it is ``version``."""
    patch = f"import kafka; kafka.__version__ = {version!r}\n"
    return subprocess.run(
        [sys.executable, "-c", patch + code], capture_output=True, text=True, timeout=60
    )


def test_supported_kafka_python_is_the_pinned_one() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert f"kafka-python=={SUPPORTED_VERSION}" in dependencies


@pytest.mark.parametrize("other", ["2.0.2", "3.0.13"])
def test_another_kafka_python_is_refused_at_import(other: str) -> None:
    """The adapter relies on kafka-python internals of one version: any other one fails at
    import, with a message naming the supported version, instead of misbehaving later."""
    code = "import driftstream.transport"
    assert _import_with_kafka_python(SUPPORTED_VERSION, code).returncode == 0
    refused = _import_with_kafka_python(other, code)
    assert refused.returncode == 1
    assert "UnsupportedKafkaPython" in refused.stderr
    assert (
        f"needs kafka-python {SUPPORTED_VERSION}, but kafka-python {other} is installed"
        in refused.stderr
    )


def test_the_cli_reports_another_kafka_python_in_one_line() -> None:
    code = (
        "from driftstream.cli import main\n"
        "raise SystemExit(main(['topics', 'list', '--bootstrap-servers', '127.0.0.1:9']))"
    )
    refused = _import_with_kafka_python("2.0.2", code)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"driftstream topics: error: driftstream needs kafka-python {SUPPORTED_VERSION}, but "
        "kafka-python 2.0.2 is installed (the Kafka adapter relies on that version's "
        "internals, see driftstream/transport/_kafka_python.py): "
        f"pip install kafka-python=={SUPPORTED_VERSION}"
    ]


# -- against the session broker ----------------------------------------------------------


@pytest.mark.broker
def test_create_topics_is_idempotent_and_checks_partitions(
    admin: Admin, unique_prefix: str
) -> None:
    names = [topic_names(unique_prefix)["events"], topic_names(unique_prefix)["labels"]]
    assert sorted(admin.create_topics(names, partitions=3)) == sorted(names)
    assert admin.create_topics(names, partitions=3) == []
    assert set(names) <= admin.list_topics()
    assert admin.partition_counts(names) == {name: 3 for name in names}
    with pytest.raises(TopicError, match="exists with 3 partitions, but 2 were requested"):
        admin.create_topics(names, partitions=2)
    admin.delete_topics(names)
    assert not set(names) & admin.list_topics()
    admin.delete_topics(names)  # deleting missing topics is fine


@pytest.mark.broker
def test_produce_and_consume_exactly(
    admin: Admin, producer: Producer, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    topic = unique_prefix + "events"
    admin.create_topics([topic], partitions=3)
    futures = [
        producer.send(
            topic,
            b"value-%d" % i,
            key=b"key-%d" % i,
            partition=i % 3,
            timestamp_ms=1_700_000_000_000 + i,
        )
        for i in range(30)
    ]
    producer.flush(timeout=10)
    metadata = [f.get(timeout=10) for f in futures]
    assert [(m.partition, m.offset) for m in metadata] == [(i % 3, i // 3) for i in range(30)]

    consumer = Consumer(kafka_settings)
    try:
        assert consumer.partitions_for(topic) == [0, 1, 2]
        missing = unique_prefix + "missing"
        assert consumer.partitions_for(missing) == []
        assert missing not in admin.list_topics()  # asking did not auto-create it

        partitions = [(topic, p) for p in range(3)]
        consumer.assign(partitions)
        assert consumer.assignment() == partitions
        records = consume(consumer, 30)
        assert len(records) == 30
        for p in range(3):
            got = [r for r in records if r.partition == p]
            assert [r.offset for r in got] == list(range(10))  # offset order in a partition
            assert [(r.key, r.value, r.timestamp) for r in got] == [
                (b"key-%d" % i, b"value-%d" % i, 1_700_000_000_000 + i) for i in range(p, 30, 3)
            ]
            assert consumer.highwater(topic, p) == 10
            assert consumer.position(topic, p) == 10

        consumer.seek(topic, 1, 4)
        again = consume(consumer, 6)
        assert [(r.partition, r.offset, r.value) for r in again] == [
            (1, i // 3, b"value-%d" % i) for i in range(13, 30, 3)
        ]
        consumer.seek_to_beginning([(topic, 2)])
        assert [r.offset for r in consume(consumer, 10)] == list(range(10))

        consumer.pause([(topic, 0)])
        producer.send(topic, b"late-0", partition=0)
        producer.send(topic, b"late-1", partition=1)
        producer.flush(timeout=10)
        (late,) = consume(consumer, 1)
        assert (late.partition, late.value) == (1, b"late-1")
        consumer.resume([(topic, 0)])
        (late,) = consume(consumer, 1)
        assert (late.partition, late.value) == (0, b"late-0")
    finally:
        consumer.close()


@pytest.mark.broker
def test_send_batch_keeps_order_with_send_and_big_records(
    admin: Admin, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    """send_batch bypasses send()'s per-record path; records from both, and one too big to
    share a batch (it goes by send), must land in the order they were queued."""
    topic = unique_prefix + "batched"
    admin.create_topics([topic], partitions=2)
    producer = Producer(kafka_settings, batch_size=4096)  # small batches: many fill up
    consumer = Consumer(kafka_settings)
    try:
        with pytest.raises(ValueError, match="partition 2"):
            producer.send_batch(topic, 2, [(b"k", b"v")])
        expected = []
        for round_ in range(5):
            batch = [(b"k%d-%d" % (round_, i), b"v%d-%d " % (round_, i) * 20) for i in range(40)]
            batch.insert(17, (None, b"big %d " % round_ * 500))  # > batch_size / 2
            producer.send_batch(topic, 1, batch)
            producer.send(topic, b"single %d" % round_, b"s%d" % round_, 1)
            expected += batch + [(b"s%d" % round_, b"single %d" % round_)]
        producer.flush(timeout=10)
        consumer.assign([(topic, 1)])
        records = consume(consumer, len(expected))
        assert [(r.key, r.value) for r in records] == expected
        assert [r.offset for r in records] == list(range(len(expected)))
    finally:
        consumer.close()
        producer.close()


@pytest.mark.broker
def test_record_headers_arrive_in_order_by_send_and_send_batch(
    admin: Admin, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    """Headers go with send() and send_batch() (a batch may mix records with and without
    them, and one too big to share a batch goes by send with its headers); a name may repeat
    and a value may be empty; a record sent without headers has none."""
    topic = unique_prefix + "headers"
    admin.create_topics([topic], partitions=1)
    producer = Producer(kafka_settings, batch_size=4096)
    consumer = Consumer(kafka_settings)
    try:
        many = [("id", b"a1"), ("n", b"\x00\xff"), ("n", b"again"), ("empty", b"")]
        producer.send(topic, b"single", b"k0", 0, headers=many)
        producer.send(topic, b"plain", b"k1", 0)
        batch = [
            (b"k2", b"with", [("chunk", b"%d" % i) for i in range(3)]),
            (b"k3", b"without"),
            (b"k4", b"big " * 1000, [("big", b"yes")]),  # > batch_size / 2
            (None, b"last", [("id", "unicode name \u00e9".encode())]),
        ]
        producer.send_batch(topic, 0, batch)
        with pytest.raises(TypeError, match=r"list of \(str, bytes\) pairs"):
            producer.send_batch(topic, 0, [(b"k", b"v", [("name", "not bytes")])])
        producer.flush(timeout=10)
        consumer.assign([(topic, 0)])
        records = consume(consumer, 6)
        assert [(r.key, r.value, r.headers) for r in records] == [
            (b"k0", b"single", many),
            (b"k1", b"plain", []),
            (b"k2", b"with", [("chunk", b"0"), ("chunk", b"1"), ("chunk", b"2")]),
            (b"k3", b"without", []),
            (b"k4", b"big " * 1000, [("big", b"yes")]),
            (None, b"last", [("id", "unicode name \u00e9".encode())]),
        ]
    finally:
        consumer.close()
        producer.close()


@pytest.mark.broker
def test_create_topics_sets_configs_that_read_back(admin: Admin, unique_prefix: str) -> None:
    """Configs given at creation are applied to the topics created (Tansu keeps and reports
    them; Apache Kafka reports its defaults too, hence the subset); an existing topic keeps
    its own, and a missing one has none."""
    compacted, plain = unique_prefix + "compacted", unique_prefix + "plain"
    configs = {"cleanup.policy": "compact", "segment.ms": "3600000", "retention.ms": "-1"}
    assert admin.create_topics([compacted], partitions=2, configs=configs) == [compacted]
    read = admin.topic_configs(compacted)
    assert {k: read.get(k) for k in configs} == configs
    admin.create_topics([plain], partitions=2)
    assert admin.topic_configs(plain).get("cleanup.policy") in (None, "delete")
    # Already there: created is empty, and the configs it has stay.
    assert admin.create_topics([compacted, plain], 2, configs={"cleanup.policy": "delete"}) == []
    assert admin.topic_configs(compacted)["cleanup.policy"] == "compact"
    assert admin.topic_configs(unique_prefix + "missing") == {}
    assert unique_prefix + "missing" not in admin.list_topics()  # asking did not create it


@pytest.mark.broker
def test_poll_by_partition_and_buffered(
    admin: Admin, producer: Producer, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    """A poll that takes part of what was fetched leaves the rest buffered (the worker then
    overlaps its next poll with the model); draining it empties the buffer."""
    topic = unique_prefix + "buffered"
    admin.create_topics([topic], partitions=1)
    for i in range(50):
        producer.send(topic, b"v%d" % i, partition=0)
    producer.flush(timeout=10)
    consumer = Consumer(kafka_settings, max_poll_records=10)
    try:
        consumer.assign([(topic, 0)])
        assert not consumer.buffered()
        got: dict = {}
        wait_until(
            lambda: bool(got.update(consumer.poll_by_partition(200)) or got),
            "the first records",
            DEADLINE_S,
            step=0,
        )
        assert list(got) == [(topic, 0)] and len(got[(topic, 0)]) == 10
        assert consumer.buffered()  # one fetch brought all 50; 40 wait
        offsets = [r.offset for r in got[(topic, 0)]]
        while consumer.buffered():
            offsets += [r.offset for r in consumer.poll_by_partition(200).get((topic, 0), [])]
        assert offsets == list(range(50))
    finally:
        consumer.close()


@pytest.mark.broker
def test_polls_take_fetched_partitions_in_turn(
    admin: Admin, producer: Producer, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    """With two partitions' backlogs fetched, polls alternate between them instead of
    returning one partition until it is used up (kafka-python's own order), so the worker's
    merge gets both inputs a poll apart; within a partition, offsets stay in order."""
    topic = unique_prefix + "turns"
    admin.create_topics([topic], partitions=2)
    for i in range(1000):
        producer.send(topic, b"v%d" % i, partition=i % 2)
    producer.flush(timeout=10)
    consumer = Consumer(kafka_settings, max_poll_records=50)
    try:
        consumer.assign([(topic, 0), (topic, 1)])
        if kafka_settings.client == "confluent":
            # librdkafka hands a partition's records over as its fetch lands (on its own
            # thread): in turn applies from when both have landed, as it does here from
            # when kafka-python has both parsed.
            wait_until(
                lambda: None not in (consumer.highwater(topic, 0), consumer.highwater(topic, 1)),
                "both partitions fetched",
                DEADLINE_S,
            )
        polls: list[tuple[int, list[int]]] = []
        left = {0: 500, 1: 500}
        deadline = time.monotonic() + DEADLINE_S
        while any(left.values()) and time.monotonic() < deadline:
            for (_, p), records in consumer.poll_by_partition(200).items():
                polls.append((p, [r.offset for r in records]))
                left[p] -= len(records)
        assert left == {0: 0, 1: 0}
        for p in (0, 1):
            assert [o for q, offsets in polls if q == p for o in offsets] == list(range(500))
        order = [p for p, _ in polls]
        both = order[: 2 * min(order.count(0), order.count(1))]  # before one is used up
        runs = [len(list(group)) for _, group in itertools.groupby(both)]
        assert max(runs) <= 2, order  # kafka-python alone: 10 polls of one, then the other
    finally:
        consumer.close()


@pytest.mark.broker
@pytest.mark.parametrize("kafka_client", ["kafka-python"])  # librdkafka fetches on its own threads
def test_poll_returns_a_response_that_lands_between_drain_and_wait(
    admin: Admin,
    producer: Producer,
    kafka_settings: KafkaSettings,
    unique_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kafka-python 3.0.12 drops the future of a fetch response that lands after its poll
    looked at the buffer, then finds nothing in flight and sleeps up to 100 ms with the
    records in hand. Our poll returns them without that sleep. The race is made certain by
    holding the drain until the in-flight fetch's response has landed."""
    import kafka.consumer.group as kafka_group

    sleeps: list[float] = []

    class RecordingTime:
        def __getattr__(self, name):
            return getattr(time, name)

        def sleep(self, seconds: float) -> None:
            sleeps.append(seconds)
            time.sleep(seconds)

    topic = unique_prefix + "race"
    admin.create_topics([topic], partitions=1)
    consumer = Consumer(kafka_settings, fetch_max_wait_ms=2000)
    try:
        consumer.assign([(topic, 0)])
        fetcher = consumer._consumer._fetcher
        deadline = time.monotonic() + 10
        while not fetcher.in_flight_fetches() and time.monotonic() < deadline:
            assert consumer.poll_by_partition(10) == {}
        assert fetcher.in_flight_fetches(), "no fetch waiting at the broker"
        producer.send(topic, b"v", b"k", 0)
        producer.flush(timeout=10)
        drain = fetcher.fetched_records

        def drain_then_response_lands(*args, **kwargs):
            monkeypatch.setattr(fetcher, "fetched_records", drain)  # only the first drain
            result = drain(*args, **kwargs)
            deadline = time.monotonic() + 10
            while not fetcher._completed_fetches and time.monotonic() < deadline:
                time.sleep(0.005)
            assert fetcher._completed_fetches, "the in-flight fetch never answered"
            return result

        monkeypatch.setattr(fetcher, "fetched_records", drain_then_response_lands)
        monkeypatch.setattr(kafka_group, "time", RecordingTime())
        batches = consumer.poll_by_partition(5000)
        assert [r.value for r in batches.get((topic, 0), [])] == [b"v"]
        assert sleeps == []
    finally:
        consumer.close()


@pytest.mark.broker
def test_same_key_goes_to_same_partition(
    admin: Admin, producer: Producer, unique_prefix: str
) -> None:
    topic = unique_prefix + "events"
    admin.create_topics([topic], partitions=4)
    futures = [producer.send(topic, b"v", key=b"entity-%d" % (i % 5)) for i in range(20)]
    producer.flush(timeout=10)
    by_key: dict[int, set[int]] = {}
    for i, future in enumerate(futures):
        by_key.setdefault(i % 5, set()).add(future.get(timeout=10).partition)
    assert all(len(parts) == 1 for parts in by_key.values())


@pytest.mark.broker
def test_commit_then_new_member_starts_at_committed_offset(
    admin: Admin, producer: Producer, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    topic = unique_prefix + "events"
    group = unique_prefix + "group"
    admin.create_topics([topic], partitions=2)
    for i in range(20):
        producer.send(topic, b"%d" % i, partition=i % 2)
    producer.flush(timeout=10)

    first = Consumer(kafka_settings, group_id=group)
    try:
        first.subscribe([topic])
        consume(first, 20)
        assert first.assignment() == [(topic, 0), (topic, 1)]
        assert first.commit({(topic, 0): 4, (topic, 1): 7})
        assert first.committed(topic, 0) == 4
    finally:
        first.close()

    second = Consumer(kafka_settings, group_id=group)
    try:
        second.subscribe([topic])
        records = consume(second, 20 - 4 - 7)
        starts = {p: min(r.offset for r in records if r.partition == p) for p in (0, 1)}
        assert starts == {0: 4, 1: 7}
    finally:
        second.close()


class GroupMember(threading.Thread):
    """One consumer-group member polling in its own thread, as a worker process would.

    (Driving two members alternately from one thread stalls Tansu rebalances for 10-25 s in
    about half the runs: the members keep re-joining generation 1.)
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group: str,
        topics: list[str],
        name: str,
        changed: threading.Condition,
    ):
        super().__init__(name=name, daemon=True)
        self.consumer = Consumer(settings, group_id=group, client_id=name)
        self.topics = topics
        self.changed = changed
        self.assigned: list[tuple[str, int]] = []  # latest on_assign argument
        self.revoked: list[list[tuple[str, int]]] = []  # every on_revoke argument
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()

    def _on_assign(self, parts: list[tuple[str, int]]) -> None:
        with self.changed:
            self.assigned = parts
            self.changed.notify_all()

    def _on_revoke(self, parts: list[tuple[str, int]]) -> None:
        with self.changed:
            self.revoked.append(parts)
            self.assigned = []
            self.changed.notify_all()

    def run(self) -> None:
        try:
            self.consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            while not self._stop_requested.is_set():
                self.consumer.poll(timeout_ms=100)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            self.consumer.close()
            with self.changed:
                self.changed.notify_all()

    def leave(self) -> None:
        self._stop_requested.set()
        self.join(timeout=DEADLINE_S)


@pytest.mark.broker
def test_range_assignor_keeps_topics_co_partitioned(
    admin: Admin, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    """A member joins, a second one takes half, then leaves again: at every step each member
    holds the same partition numbers of both topics."""
    names = topic_names(unique_prefix)
    events, labels = names["events"], names["labels"]
    admin.create_topics([events, labels], partitions=4)
    group = unique_prefix + "workers"
    changed = threading.Condition()
    members: list[GroupMember] = []

    def wait_for_split(sizes: list[int], what: str) -> None:
        def split() -> bool:
            errors = [m.error for m in members if m.error is not None]
            if errors:
                raise errors[0]
            parts = [set(m.assigned) for m in members]
            return [len(p) for p in parts] == sizes and len(set().union(*parts)) == 8

        with changed:
            assert changed.wait_for(split, timeout=DEADLINE_S), f"timed out waiting for {what}"
            for member in members:
                numbers = {
                    t: sorted(p for topic, p in member.assigned if topic == t)
                    for t in (events, labels)
                }
                assert numbers[events] == numbers[labels], member.name  # co-partitioned

    def join(name: str) -> GroupMember:
        member = GroupMember(kafka_settings, group, [events, labels], name, changed)
        members.append(member)
        member.start()
        return member

    try:
        a = join("a")
        wait_for_split([8], "member a to get all 8 partitions")
        b = join("b")
        wait_for_split([4, 4], "a and b to split the partitions")
        assert any(len(parts) == 8 for parts in a.revoked)  # a gave all up to rebalance
        b.leave()
        members.remove(b)
        wait_for_split([8], "member a to take over b's partitions")
    finally:
        for member in members:
            member.leave()


@pytest.mark.broker
def test_broker_refuses_a_port_in_use(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match="in use"):
        EmbeddedBroker(port=broker.port).start(timeout=5)
    assert broker.is_running()


@pytest.mark.broker
def test_embedded_broker_restart(tmp_path, kafka_client: str) -> None:
    """A restart keeps the port; clients made before it (admin, producer) still work."""
    (port,) = restartable_ports(1)
    with EmbeddedBroker(port, log_path=tmp_path / "broker.log") as own:
        settings = KafkaSettings(own.bootstrap, fast_group_timeouts=True, client=kafka_client)
        admin = Admin(settings)
        producer = Producer(settings)
        try:
            admin.create_topics(["restart.events"], partitions=1)
            assert producer.send("restart.events", b"before").get(timeout=10).offset == 0
            port = own.port

            own.restart(graceful=False)  # a crash; graceful stops wait ~5 s for clients
            assert own.is_running() and own.port == port
            # A new topic, not the old one: right after the restart Tansu may re-create the old
            # one (with its default 4 partitions) on the old producer's metadata refresh.
            admin.create_topics(["restart.after"], partitions=1)
            assert producer.send("restart.after", b"after").get(timeout=10).offset == 0
        finally:
            producer.close(timeout=5)
            admin.close()
        own.stop()
        assert not own.is_running()
        assert "listening on" in (tmp_path / "broker.log").read_text()


@pytest.mark.broker
@pytest.mark.parametrize("batched", [False, True], ids=["send", "send_batch"])
def test_flush_raises_when_records_were_not_delivered(
    tmp_path, batched: bool, kafka_client: str
) -> None:
    """kafka-python's flush returns normally after records failed; ours must not (a worker
    would otherwise save a checkpoint past outputs that were lost), whichever way they
    were sent and whichever client sent them."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as own:
        settings = KafkaSettings(bootstrap_servers=own.bootstrap, client=kafka_client)
        admin = Admin(settings)
        admin.create_topics(["lost.out"], partitions=1)
        admin.close()
        producer = Producer(settings, delivery_timeout_ms=1500)
        try:
            producer.send("lost.out", b"kept", partition=0)
            producer.flush(timeout=10)
            own.stop()
            lost = [(None, b"lost %d" % i) for i in range(3)]
            if batched:
                producer.send_batch("lost.out", 0, lost)
            else:
                for key, value in lost:
                    producer.send("lost.out", value, key, partition=0)
            with pytest.raises(DeliveryFailed, match="3 record.s. not delivered") as failed:
                producer.flush(timeout=30)
            assert failed.value.failed == 3
            producer.flush(timeout=1)  # reported once: nothing failed since
        finally:
            producer.close(timeout=0)


@pytest.mark.broker
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_runs_until_signalled(sig: signal.Signals) -> None:
    """`driftstream broker`: prints the bootstrap address, serves, stops cleanly on a signal."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from driftstream.broker import serve; raise SystemExit(serve({port}))",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # serve() prints it once ready, or exits (EOF)
        assert line == f"bootstrap: 127.0.0.1:{port}\n"
        admin = Admin(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"))
        admin.create_topics(["serve.events"], partitions=1)
        admin.close()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 0, err
        with pytest.raises(ConnectionRefusedError):  # the broker went away with serve()
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the two clients -------------------------------------------------------------------


def test_a_client_is_chosen_by_settings_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DRIFTSTREAM_KAFKA_CLIENT", raising=False)
    assert KafkaSettings("k:9092").client == "kafka-python"
    monkeypatch.setenv("DRIFTSTREAM_KAFKA_CLIENT", "confluent")
    assert KafkaSettings("k:9092").client == "confluent"
    with pytest.raises(ValueError, match="unknown Kafka client 'librdkafka': choose one of"):
        KafkaSettings("k:9092", client="librdkafka")


def test_both_clients_have_the_same_methods() -> None:
    """Each implementation defines every public method of the other (none is inherited
    from the base class, which only picks the implementation)."""
    from driftstream.transport._confluent import ConfluentConsumer, ConfluentProducer
    from driftstream.transport.consumer import KafkaPythonConsumer
    from driftstream.transport.producer import KafkaPythonProducer

    def methods(cls: type) -> set[str]:
        return {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}

    assert methods(KafkaPythonConsumer) == methods(ConfluentConsumer)
    assert methods(KafkaPythonProducer) == methods(ConfluentProducer)
    assert methods(Consumer) == methods(Producer) == set()


def test_confluent_chosen_but_not_installed_is_a_clear_error() -> None:
    code = (
        "import sys; sys.modules['confluent_kafka'] = None\n"
        "from driftstream.transport import Consumer, KafkaSettings\n"
        "Consumer(KafkaSettings('127.0.0.1:9', client='confluent'))\n"
    )
    refused = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        "driftstream.transport.errors.ClientNotInstalled: --kafka-client confluent needs the "
        "confluent-kafka package, which is not installed: pip install 'driftstream[confluent]'"
    )
    assert issubclass(ClientNotInstalled, ImportError)


@pytest.mark.parametrize("client", CLIENTS)
def test_unreachable_broker_gives_clear_error_with_each_client(client: str) -> None:
    settings = KafkaSettings(
        f"127.0.0.1:{free_port()}",
        sasl_plain_password="hunter2-secret",
        connect_timeout_ms=1000,
        client=client,
    )
    for make in (Consumer, Producer):
        with pytest.raises(KafkaUnavailable) as info:
            make(settings)
        assert settings.bootstrap_servers in str(info.value)
        assert "hunter2" not in str(info.value)


@pytest.mark.broker
def test_a_key_lands_on_the_same_partition_with_either_client(
    broker: EmbeddedBroker, unique_prefix: str
) -> None:
    """Events and labels of an id must meet in one partition even when different clients
    publish them: both hash keys with murmur2 (librdkafka's default would not)."""
    topic = unique_prefix + "keys"
    admin = Admin(KafkaSettings(broker.bootstrap))
    admin.create_topics([topic], partitions=5)
    admin.close()
    keys = [b"entity-%d" % i for i in range(40)]
    placed = {}
    for client in CLIENTS:
        producer = Producer(KafkaSettings(broker.bootstrap, client=client))
        try:
            futures = [producer.send(topic, b"v", key=key) for key in keys]
            producer.flush(timeout=10)
            placed[client] = [f.get(timeout=10).partition for f in futures]
        finally:
            producer.close()
    assert placed["kafka-python"] == placed["confluent"]
    assert len(set(placed["confluent"])) == 5  # spread, not all on one


def test_the_kafka_client_option_reaches_the_settings() -> None:
    """--kafka-client (and DRIFTSTREAM_KAFKA_CLIENT) fill KafkaSettings.client; its choices
    are the adapter's clients."""
    from driftstream.cli import KAFKA_CLIENTS, build_parser, kafka_settings
    from driftstream.config import parse_args

    assert KAFKA_CLIENTS == CLIENTS
    argv = ["tail", "drift", "--bootstrap-servers", "k:9092"]
    assert kafka_settings(parse_args(build_parser(), argv, {})).client == "kafka-python"
    chosen = parse_args(build_parser(), [*argv, "--kafka-client", "confluent"], {})
    assert kafka_settings(chosen).client == "confluent"
    from_env = parse_args(build_parser(), argv, {"DRIFTSTREAM_KAFKA_CLIENT": "confluent"})
    assert kafka_settings(from_env).client == "confluent"


@pytest.mark.broker
def test_a_seek_right_after_assign_is_obeyed(
    admin: Admin, producer: Producer, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    """How the tools read a topic: assign, seek at once (before anything is fetched; librdkafka
    refuses such a seek by itself), poll; the first record is the one sought."""
    topic = unique_prefix + "sought"
    admin.create_topics([topic], partitions=2)
    for i in range(20):
        producer.send(topic, b"v%d" % i, partition=i % 2)
    producer.flush(timeout=10)
    consumer = Consumer(kafka_settings)
    try:
        consumer.assign([(topic, 0), (topic, 1)])
        consumer.seek(topic, 0, 7)
        consumer.seek(topic, 1, 3)
        assert consumer.position(topic, 0) == 7
        records = consume(consumer, 3 + 7)
        assert sorted((r.partition, r.offset) for r in records) == [
            *((0, o) for o in range(7, 10)),
            *((1, o) for o in range(3, 10)),
        ]
    finally:
        consumer.close()
