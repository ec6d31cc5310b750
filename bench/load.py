"""What every Kafka measurement shares: the data, a broker with its topics, the load generator.

The data is the same everywhere: ``synthetic("sea", n, drift_at=[n // 2], label_delay="100")``
(`make_samples`). A measurement gets an `Env` from `broker_env` (a fresh embedded Tansu broker,
loopback only), fills a topic set with `load_topics` (as ``publish_samples`` would, faster),
starts its children with `start_child` and reads what they wrote with `read_keys_and_times`.
The latency runs' offered load comes from `LoadPublisher`, whole record batches per tick.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.record.default_records import DefaultRecordBatchBuilder

from bench.procs import PYTHON, ROOT
from driftstream.consumers.worker import WorkerOptions
from driftstream.producers.sources import Sample, event_record, label_record, synthetic
from driftstream.transport import (
    Admin,
    Consumer,
    KafkaSettings,
    Producer,
    topic_names,
)

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "LABEL_DELAY",
    "LOAD_TICK_S",
    "MAX_POLL_RECORDS",
    "SMALL_BATCHES_TICK_S",
    "Env",
    "LoadPublisher",
    "broker_env",
    "cli_worker_args",
    "create_topics",
    "load_topics",
    "make_samples",
    "read_keys_and_times",
    "start_child",
    "stop_children",
]

LABEL_DELAY = 100
# The worker's client settings: the ceiling and the naive peer use them too.
MAX_POLL_RECORDS = WorkerOptions.max_poll_records
FETCH_MAX_WAIT_MS = WorkerOptions.fetch_max_wait_ms


def make_samples(n: int, seed: int = 42) -> list[Sample]:
    """The bench's data: SEA, one sudden drift at n // 2, labels delayed by 100."""
    return list(
        synthetic(
            "sea",
            n,
            seed=seed,
            drift_at=[n // 2],
            label_delay=str(LABEL_DELAY),
            start_ts=1_700_000_000_000,
        )
    )


@dataclass
class Env:
    """What every Kafka measurement needs."""

    settings: KafkaSettings | None  # None: a measurement without Kafka
    broker_pid: int | None
    tmp: Path
    samples: list[Sample]
    children: list = field(default_factory=list)  # Popen objects we started (for cleanup)
    loaded: dict = field(default_factory=dict)  # "1p-lr" -> topic prefix of a filled topic set

    def prefix(self, what: str) -> str:
        return f"b-{what}-{uuid.uuid4().hex[:6]}."


@contextlib.contextmanager
def broker_env(tmp: Path, samples: list[Sample], client: str = "kafka-python"):
    """A fresh embedded broker and the `Env` to measure with it (its settings name the Kafka
    ``client`` the measured programs use); stops both after."""
    from driftstream.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=tmp / "tansu.log")
    env = None
    try:
        broker.start()
        pid = broker._proc.pid if broker._proc is not None else None  # for its CPU time only
        settings = KafkaSettings(broker.bootstrap, fast_group_timeouts=True, client=client)
        env = Env(settings, pid, tmp, samples)
        yield env
    finally:
        if env is not None:
            stop_children(env)
        broker.stop()


def stop_children(env: Env) -> None:
    """Kill the child processes a measurement left running (after a failure)."""
    for proc in env.children:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()


def create_topics(
    settings: KafkaSettings, prefix: str, partitions: int, extra: tuple[str, ...] = ()
) -> dict[str, str]:
    topics = topic_names(prefix)
    admin = Admin(settings)
    try:
        admin.create_topics(list(topics.values()) + [prefix + e for e in extra], partitions)
    finally:
        admin.close()
    return topics


def load_topics(env: Env, prefix: str, samples: list[Sample], partitions: int) -> dict:
    """Create a topic set and fill events and labels the way `publish_samples` does.

    Same records, keys, explicit timestamps (event ts / label reveal ts) and order as
    ``producers.publisher.publish_samples`` (labels sent once their reveal time is reached,
    partition = position % partitions), but pre-encoded and without per-record validation,
    so that loading is only as slow as the client. Returns the produce rate seen.
    """
    topics = create_topics(env.settings, prefix, partitions)
    ev_topic, lb_topic = topics["events"], topics["labels"]
    producer = Producer(env.settings, client_id="bench-loader")
    labels = sorted(range(len(samples)), key=lambda i: samples[i].label_ts)  # stable: ties
    start = time.perf_counter()
    j = 0
    for i, s in enumerate(samples):
        while j < len(labels) and samples[labels[j]].label_ts <= s.ts:
            k = labels[j]
            producer.send(
                lb_topic,
                orjson.dumps(label_record(samples[k])),
                samples[k].id.encode(),
                k % partitions,
                samples[k].label_ts,
            )
            j += 1
        producer.send(ev_topic, orjson.dumps(event_record(s)), s.id.encode(), i % partitions, s.ts)
    for k in labels[j:]:
        producer.send(
            lb_topic,
            orjson.dumps(label_record(samples[k])),
            samples[k].id.encode(),
            k % partitions,
            samples[k].label_ts,
        )
    producer.flush()
    seconds = time.perf_counter() - start
    producer.close()
    return {
        "topics": topics,
        "messages": 2 * len(samples),
        "seconds": seconds,
        "msgs_per_s": 2 * len(samples) / seconds,
    }


def read_keys_and_times(
    settings: KafkaSettings, topic: str, expect: int | None = None, timeout: float = 120
) -> list[tuple[bytes, int, int]]:
    """(key, CreateTime ms, partition) of every record of a topic, read to its high-water mark."""
    consumer = Consumer(settings, max_poll_records=MAX_POLL_RECORDS)
    try:
        tps = [(topic, p) for p in consumer.partitions_for(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(tps)
        out: list[tuple[bytes, int, int]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out.extend((r.key, r.timestamp, r.partition) for r in consumer.poll(200))
            done = all(
                (h := consumer.highwater(t, p)) is not None and consumer.position(t, p) >= h
                for t, p in tps
            )
            if done and (expect is None or len(out) >= expect):
                return out
        raise TimeoutError(
            f"could not read {topic} to its end within {timeout} s ({len(out)} records)"
        )
    finally:
        consumer.close()


def start_child(env: Env, args: list[str], name: str) -> tuple[subprocess.Popen, Path, Path]:
    """A child process run from the repository root, its stdout and stderr in files named
    after it; `stop_children` kills it if the measurement fails."""
    out, err = env.tmp / f"{name}.out", env.tmp / f"{name}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    env.children.append(proc)
    return proc, out, err


def cli_worker_args(env: Env, prefix: str, model: str, state: Path, idle: float) -> list[str]:
    """``driftstream run`` on a topic set, as a user would start it (exits when idle)."""
    return [
        PYTHON,
        "-m",
        "driftstream.cli",
        "run",
        "--bootstrap-servers",
        env.settings.bootstrap_servers,
        "--topic-prefix",
        prefix,
        "--group",
        f"{prefix}g",
        "--state",
        str(state),
        "--model",
        model,
        "--fast-group-timeouts",
        "--kafka-client",
        env.settings.client,
        "--exit-when-idle",
        str(idle),
        "--log-level",
        "INFO",
    ]


class LoadPublisher:
    """The latency run's load generator: one ProduceRequest (acks=all) per tick, holding one
    record batch per partition, on its own connection to the (single, embedded) broker.

    kafka-python's producer spends ~15 µs of CPU per record on Python bookkeeping; two records
    per event at half the worker's maximum took half a core of this 2-core machine from the
    worker it measures. Whole batches made with kafka-python's record builder and protocol
    classes cost ~3 µs per record. Responses come in order on the connection; a thread reads
    them and keeps any error.
    """

    VERSION = 3  # Produce v3: record batches (magic 2), not flexible; Kafka 4 and Tansu take it

    def __init__(self, bootstrap: str):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.topic_cls = ProduceRequest.TopicProduceData
        self.sent = self.acked = 0
        self.errors: list = []
        self.reader = threading.Thread(target=self._read, name="load-acks", daemon=True)
        self.reader.start()

    def send(self, batches: dict[str, list[tuple[int, bytes, bytes]]]) -> None:
        """Write ``{topic: [(timestamp_ms, key, value), ...]}`` to partition 0 of each topic."""
        topics = []
        for topic, records in batches.items():
            if not records:
                continue
            builder = DefaultRecordBatchBuilder(
                magic=2,
                compression_type=0,
                is_transactional=False,
                producer_id=-1,
                producer_epoch=-1,
                base_sequence=-1,
                batch_size=1 << 30,
            )
            for offset, (ts, key, value) in enumerate(records):
                builder.append(offset, ts, key, value, [])
            partition = self.topic_cls.PartitionProduceData(index=0, records=bytes(builder.build()))
            topics.append(self.topic_cls(name=topic, partition_data=[partition]))
        if not topics:
            return
        request = ProduceRequest(
            transactional_id=None, acks=-1, timeout_ms=30_000, topic_data=topics
        )
        self.sent += 1
        request.with_header(correlation_id=self.sent, client_id="bench-load")
        self.sock.sendall(request.encode(version=self.VERSION, header=True, framed=True))

    def wait_acked(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.errors or self.acked < self.sent:
            raise RuntimeError(
                f"load publisher: {self.acked} of {self.sent} requests "
                f"acknowledged, errors {self.errors[:5]}"
            )

    def close(self) -> None:
        self.sock.close()

    def _read(self) -> None:
        try:
            while True:
                (size,) = struct.unpack(">i", self._recv(4))
                response = ProduceResponse.decode(
                    self._recv(size), version=self.VERSION, header=True
                )
                self.errors += [
                    (t.name, p.index, p.error_code)
                    for t in response.responses
                    for p in t.partition_responses
                    if p.error_code
                ]
                self.acked += 1
        except (OSError, EOFError, struct.error) as e:
            if self.acked < self.sent:
                self.errors.append(f"connection: {e!r}")

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("broker closed the connection")
            buf += chunk
        return bytes(buf)


# The load generator sends what is due every tick, as a producer's linger would. Tansu's cost
# per batch a fetch returns grows with the batches the partition holds: at 5 ms batches the
# broker's CPU, and with it every consumer's latency, climbs second by second
# (`bench.broker_growth`); at 10 ms it grows a third as fast. The headline is measured at 10 ms
# (the wait for a batch counts in the latency), the 5 ms load beside it.
LOAD_TICK_S = 0.010
SMALL_BATCHES_TICK_S = 0.005
