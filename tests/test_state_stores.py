"""The checkpoint stores of state/store.py against real servers: SQLite files, the embedded
Kafka-compatible broker (Tansu) and SeaweedFS's S3. Nothing is mocked.

Each backend test opens its store twice where it matters, as two hosts would: what one saves
the other restores.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import river

from driftstream.state.checkpoints import StateError
from driftstream.state.kafka_store import (
    CHUNK_BYTES,
    HISTORY_TOPIC_CONFIGS,
    TOPIC_CONFIGS,
    KafkaCheckpointStore,
    checkpoint_topics,
    create_checkpoint_topics,
)
from driftstream.state.s3_store import S3CheckpointStore
from driftstream.state.safe_pickle import ForbiddenPickle, load_learner, safe_loads
from driftstream.state.signing import load_state_key
from driftstream.state.store import (
    StoreSpec,
    StoreSpecError,
    StoreUnavailable,
    open_store,
    parse_spec,
)
from driftstream.stream.learner import Learner, LearnerConfig, _InterningUnpickler
from driftstream.stream.models import PRESETS
from driftstream.stream.policies import POLICIES
from driftstream.stream.records import Event, Label
from driftstream.transport import Admin, Consumer, KafkaSettings, Producer
from tests.support import built_once, wait_until

KEY = b"a test key of 32 bytes, no more."
FORGER_KEY = b"the forger's own key, 32 bytes.."
PARTITIONS = 2
BUCKET_PREFIX = "stores"

BACKENDS = [
    "sqlite",
    pytest.param("kafka", marks=pytest.mark.broker),
    "s3",
]
SHARED = [pytest.param("kafka", marks=pytest.mark.broker), "s3"]


def trained_learner(model: str = "lr", policy: str = "reset", n: int = 300, seed: int = 1):
    """A learner that has scored n events and learned from most of their labels."""
    reg = model in ("linreg", "htr")
    learner = Learner(
        LearnerConfig(model=model, drift_policy=policy, window_buffer=200, reweight_horizon=100),
        partition=0,
    )
    rng = random.Random(seed)
    for i in range(n):
        x = {"a": rng.random(), "b": rng.random() * (3 if i > n // 2 else 1), "c": rng.random()}
        learner.process_event(Event(str(i), x, ts=i))
        if i >= 5:
            j = i - 5
            flip = i > n // 2
            y = (j % 7) * 0.5 if reg else ((j * 31) % 3 == 0) != flip
            learner.process_label(Label(str(j), y, ts=i))
    return learner


@pytest.fixture(params=BACKENDS)
def open_backend(request, tmp_path, unique_prefix):
    """A function that opens the test's store of the parametrized backend (same location each
    call: a second call is a second host); the stores are closed after the test."""
    backend = request.param
    opened = []
    options: dict = {}
    if backend == "kafka":
        options["kafka_settings"] = request.getfixturevalue("kafka_settings")
        create_checkpoint_topics(options["kafka_settings"], unique_prefix, PARTITIONS)
        spec = "kafka:"
    elif backend == "s3":
        server = request.getfixturevalue("seaweedfs")
        options["s3_options"] = server.client_options()
        spec = f"s3://{server.bucket}/{BUCKET_PREFIX}/{unique_prefix.rstrip('.')}"
    else:
        spec = f"sqlite:{tmp_path / 'state.sqlite'}"

    def open_(key: bytes | None = KEY):
        store = open_store(spec, topic_prefix=unique_prefix, key=key, **options)
        opened.append(store)
        return store

    open_.backend = backend
    open_.spec = spec
    yield open_
    for store in opened:
        store.close()


# -- specs and keys -----------------------------------------------------------------------


def test_each_spec_names_its_store():
    assert parse_spec("state.sqlite") == StoreSpec("sqlite", "state.sqlite", "")
    assert parse_spec("sqlite:/var/lib/ds/state.sqlite") == StoreSpec(
        "sqlite", "/var/lib/ds/state.sqlite", ""
    )
    assert parse_spec("./a:b.sqlite") == StoreSpec("sqlite", "./a:b.sqlite", "")
    assert parse_spec("kafka:") == StoreSpec("kafka", "", "")
    assert parse_spec("s3://bucket-1") == StoreSpec("s3", "bucket-1", "")
    assert parse_spec("s3://bucket-1/a/b/") == StoreSpec("s3", "bucket-1", "a/b/")


@pytest.mark.parametrize(
    "spec, words",
    [
        ("", "empty"),
        ("sqlite:", "needs a path"),
        ("kafka:events", "takes nothing"),
        ("s3:bucket", "s3://BUCKET/PREFIX"),
        ("s3://B_ad/x", "not a valid bucket"),
        ("gs://bucket/x", "unknown state store"),
        ("redis://127.0.0.1", "unknown state store"),
    ],
)
def test_a_bad_spec_gets_a_one_line_error(spec, words):
    with pytest.raises(StoreSpecError) as raised:
        open_store(spec, key=KEY)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, StateError)
    assert words in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("spec", ["kafka:", "s3://bucket/prefix"])
def test_a_shared_store_refuses_to_open_without_a_key(spec):
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # never reached
    with pytest.raises(StoreSpecError, match="--state-key-file or DRIFTSTREAM_STATE_KEY"):
        open_store(spec, kafka_settings=settings, key=None)


def test_the_state_key_comes_from_the_file_else_the_environment(tmp_path, caplog):
    key_file = tmp_path / "key"
    key_file.write_bytes(b"  from the file, long enough\n")
    key_file.chmod(0o600)
    environ = {"DRIFTSTREAM_STATE_KEY": "from the environment, long enough"}
    assert load_state_key(key_file, environ) == b"from the file, long enough"
    assert load_state_key(None, environ) == b"from the environment, long enough"
    assert load_state_key(None, {}) is None
    assert not caplog.records
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_state_key(key_file, {})
    assert "can be read by other users" in caplog.text
    assert "from the file" not in caplog.text


def test_a_short_or_missing_key_is_refused_without_showing_it(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"secret\n")
    with pytest.raises(StateError, match="holds 6 bytes") as raised:
        load_state_key(short, {})
    assert "secret" not in str(raised.value)
    with pytest.raises(StateError, match="DRIFTSTREAM_STATE_KEY holds 5 bytes"):
        load_state_key(None, {"DRIFTSTREAM_STATE_KEY": "short"})
    with pytest.raises(StateError, match="cannot read state key file"):
        load_state_key(tmp_path / "missing", {})


# -- round trips --------------------------------------------------------------------------


def test_a_checkpoint_saved_on_one_host_restores_on_another(open_backend):
    learner = trained_learner()
    state = learner.to_bytes()
    config = {"model": "lr", "drift_policy": "reset"}
    drift = {"kind": "concept", "partition": 1, "n_seen": 250, "action": "reset"}
    event = {"generation": 1, "updates": 0, "reason": "reset", "event_ts": 255, "note": "x"}
    writer, reader = open_backend(), open_backend()

    version = writer.save_checkpoint(
        1,
        state,
        {"events": 300, "labels": 295},
        learner.version,
        info=learner.summary(),
        drift_records=[drift],
        model_events=[event],
        config=config,
    )

    checkpoint = reader.latest(1)
    assert checkpoint is not None and checkpoint.version == version == 1
    assert checkpoint.state == state
    assert checkpoint.offsets == {"events": 300, "labels": 295}
    assert checkpoint.model_version == tuple(learner.version)
    assert checkpoint.info == orjson.loads(orjson.dumps(learner.summary()))
    assert checkpoint.provenance["config"] == config
    assert checkpoint.provenance["river"] == river.__version__
    assert checkpoint.provenance["python"] == ".".join(map(str, sys.version_info[:3]))
    assert checkpoint.provenance["driftstream"]
    assert checkpoint.id
    restored = load_learner(checkpoint.state)
    assert restored.canonical_bytes() == learner.canonical_bytes()
    assert reader.latest(0) is None
    assert reader.get(1, version).state == state
    assert reader.partitions() == [1]
    [meta] = reader.checkpoints()
    assert (meta["partition"], meta["version"], meta["size"]) == (1, 1, len(state))
    assert meta["provenance"]["config"] == config and "_store" not in meta["info"]
    [logged] = reader.drift_log()
    assert (logged["partition"], logged["checkpoint_version"], logged["record"]) == (1, 1, drift)
    [changed] = reader.model_versions(1)
    assert (changed["generation"], changed["reason"], changed["info"]) == (
        1,
        "reset",
        {"note": "x"},
    )
    assert reader.drift_log(0) == [] and reader.model_versions(0) == []


@pytest.mark.parametrize(
    "state, offsets, error",
    [
        ("not bytes", {"events": 1}, TypeError),
        (b"state", {"events": -1}, ValueError),
        (b"state", {"events": "7"}, ValueError),
        (b"state", {3: 7}, ValueError),
    ],
)
def test_every_store_refuses_a_bad_checkpoint_before_writing_anything(
    open_backend, state, offsets, error
):
    store = open_backend()
    drift = {"kind": "concept", "partition": 0, "n_seen": 1, "action": "reset"}
    with pytest.raises(error):
        store.save_checkpoint(0, state, offsets, (0, 0), drift_records=[drift])
    assert store.latest(0) is None and store.drift_log() == []


def test_the_newest_checkpoint_is_restored_and_any_by_version(open_backend):
    writer = open_backend()
    states = {}
    for n in (1, 2, 3):
        states[n] = f"state {n}".encode() * 1000
        assert writer.save_checkpoint(0, states[n], {"events": n}, (0, n)) == n
    reader = open_backend()
    assert reader.latest(0).state == states[3]
    assert reader.get(0, 2).state == states[2]
    assert [m["version"] for m in reader.checkpoints(0)] == [1, 2, 3]
    with pytest.raises(StateError, match="checkpoint 7 of partition 0"):
        reader.get(0, 7)
    # A new owner continues the numbering.
    assert reader.save_checkpoint(0, b"four", {"events": 4}, (0, 4)) == 4


def test_prune_keeps_the_newest_and_the_newest_of_each_generation(open_backend):
    store = open_backend()
    generations = [0, 0, 1, 1, 1, 2, 2]
    for n, generation in enumerate(generations, start=1):
        store.save_checkpoint(0, b"s%d" % n, {"events": n}, (generation, n))
    assert store.prune(0, keep_last=2) == 3
    assert [m["version"] for m in open_backend().checkpoints(0)] == [2, 5, 6, 7]
    assert store.prune(0, keep_last=1, keep_per_generation=False) == 3
    assert [m["version"] for m in open_backend().checkpoints(0)] == [7]
    assert open_backend().latest(0).state == b"s7"


def test_a_drift_reported_again_after_a_crash_is_logged_once(open_backend):
    drift = {"kind": "concept", "partition": 0, "n_seen": 10}
    store = open_backend()
    store.save_checkpoint(0, b"a", {"events": 10}, (0, 10), drift_records=[drift])
    # The next owner processed the same records again and reports the same drift.
    other = open_backend()
    other.save_checkpoint(0, b"a", {"events": 10}, (0, 10), drift_records=[drift])
    if open_backend.backend == "sqlite":  # one file, one transaction each: both kept
        assert len(other.drift_log(0)) == 2
    else:
        assert [d["record"] for d in other.drift_log(0)] == [drift]


def test_a_checkpoint_of_another_river_version_warns_naming_both(open_backend, monkeypatch, caplog):
    store = open_backend()
    store.save_checkpoint(0, b"current", {"events": 1}, (0, 1))
    assert store.latest(0) is not None
    assert "River" not in caplog.text
    monkeypatch.setattr(river, "__version__", "0.19.0")
    store.save_checkpoint(0, b"older", {"events": 2}, (0, 2))
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="driftstream.state"):
        checkpoint = open_backend().latest(0)
    assert checkpoint.provenance["river"] == "0.19.0"
    assert f"River 0.19.0; this is River {river.__version__}" in caplog.text
    assert "checkpoint 2 of partition 0" in caplog.text


# -- the allow-list -----------------------------------------------------------------------


class _CreatesFile:
    """Unpickling this opens (creates) a file: what a forged checkpoint would carry."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_allow_list_loads_learners_of_every_model_and_policy():
    for model in PRESETS:
        for policy in POLICIES:
            learner = trained_learner(model, policy, n=400)
            data = learner.to_bytes()
            canonical = learner.canonical_bytes()
            assert load_learner(data).canonical_bytes() == canonical, (model, policy)
            # composed with the learner's interning unpickler
            interned = safe_loads(data, _InterningUnpickler)
            assert pickle.dumps(interned, protocol=5) == canonical, (model, policy)


def _global(module: str, name: str) -> bytes:
    """A pickle that only looks up module.name (protocol 4, STACK_GLOBAL)."""
    text = b"".join(b"\x8c" + bytes([len(t)]) + t for t in (module.encode(), name.encode()))
    return b"\x80\x04" + text + b"\x93."


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(os.system),
        pickle.dumps(Path),  # a class outside the list
        _global("builtins", "eval"),
        _global("river.linear_model.base", "np"),  # a module's import
        _global("river.linear_model.base", "np.save"),  # through it, a function that writes
        _global("river.linear_model.log_reg", "optim"),
        _global("river.base.base", "Base.clone.__globals__"),  # an attribute path
        _global("river.datasets.phishing", "Phishing"),  # a River package that reads files
        _global("driftstream.state.checkpoints", "StateStore"),  # creates a file
    ],
)
def test_the_allow_list_refuses_what_a_learner_is_not_made_of(payload):
    with pytest.raises(ForbiddenPickle):
        safe_loads(payload)


def test_a_signed_checkpoint_still_cannot_run_code(tmp_path):
    """The second wall: a checkpoint signed with the right key (a leaked key) verifies, but
    the allow-list refuses to unpickle its payload."""
    target = tmp_path / "created-by-unpickling"
    store = open_store(f"sqlite:{tmp_path / 'state.sqlite'}", key=KEY)
    store.save_checkpoint(0, pickle.dumps(_CreatesFile(target)), {"events": 1}, (0, 1))
    checkpoint = store.latest(0)
    with pytest.raises(ForbiddenPickle, match="io.open"):
        load_learner(checkpoint.state)
    assert not target.exists()
    store.close()


# -- incomplete, tampered and forged checkpoints --------------------------------------------


def _records(settings: KafkaSettings, topic: str, partition: int) -> list:
    """Every record of a partition, read to its high-water mark."""
    consumer = Consumer(settings)
    try:
        consumer.assign([(topic, partition)])
        consumer.seek(topic, partition, 0)
        out = []
        for _ in range(200):
            out += consumer.poll(200)
            high = consumer.highwater(topic, partition)
            if high is not None and consumer.position(topic, partition) >= high:
                return out
        raise AssertionError(f"could not read {topic}/{partition}")
    finally:
        consumer.close()


def _produce(settings: KafkaSettings, topic: str, partition: int, records) -> None:
    """Write (key, value, headers) records as they are."""
    producer = Producer(settings)
    try:
        for key, value, headers in records:
            producer.send(topic, value, key=key, partition=partition, headers=headers)
        producer.flush(30)
    finally:
        producer.close()


@pytest.mark.broker
def test_kafka_chunks_carry_their_metadata_in_record_headers(kafka_settings, unique_prefix):
    """A chunk's value is its piece of the state alone; what it is (checkpoint, partition,
    index and count, size and sha256 of the whole, the signature, and on the first chunk the
    signed manifest) is in Kafka headers. History batches are signed the same way."""
    create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS)
    store = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY)
    state = os.urandom(CHUNK_BYTES * 2)
    drift = {"kind": "concept", "partition": 1, "n_seen": 5}
    version = store.save_checkpoint(1, state, {"events": 9}, (2, 9), drift_records=[drift])
    store.close()
    topics = checkpoint_topics(unique_prefix)

    chunks = _records(kafka_settings, topics["checkpoints"], 1)
    headers = [dict(r.headers) for r in chunks]
    assert [h["chunk"] for h in headers] == [b"0", b"1", b"2"]
    assert b"".join(r.value for r in chunks) == state
    cid = headers[0]["id"].decode()
    assert [r.key for r in chunks] == [f"1/{version}/{cid}/{i}".encode() for i in range(3)]
    sha256 = hashlib.sha256(state).hexdigest().encode()
    for h in headers:
        assert (h["id"], h["version"], h["partition"], h["chunks"]) == (
            cid.encode(),
            b"%d" % version,
            b"1",
            b"3",
        )
        assert (h["size"], h["sha256"], len(h["hmac"])) == (b"%d" % len(state), sha256, 64)
    assert "manifest" in headers[0] and not any("manifest" in h for h in headers[1:])
    manifest = orjson.loads(headers[0]["manifest"])
    assert (manifest["id"], manifest["sha256"], manifest["offsets"]) == (
        cid,
        sha256.decode(),
        {"events": 9},
    )
    assert len(chunks[0].value) + len(headers[0]["manifest"]) == CHUNK_BYTES  # within a record

    [batch] = _records(kafka_settings, topics["history"], 1)
    named = dict(batch.headers)
    assert (named["partition"], named["id"], len(named["hmac"])) == (b"1", cid.encode(), 64)
    assert orjson.loads(batch.value)["drift_records"] == [drift]


@pytest.mark.broker
def test_a_kafka_checkpoint_whose_manifest_is_too_large_writes_nothing(
    kafka_settings, unique_prefix
):
    """The manifest rides in the first chunk's headers; one over half a chunk is refused
    before the history batch is written, so no orphan batch is left behind."""
    create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS)
    store = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY)
    drift = {"kind": "concept", "partition": 0, "n_seen": 1, "action": "reset"}
    try:
        with pytest.raises(ValueError, match="checkpoint info too large"):
            store.save_checkpoint(
                0, b"state", {"events": 1}, (0, 0), {"note": "x" * CHUNK_BYTES}, [drift]
            )
    finally:
        store.close()
    topics = checkpoint_topics(unique_prefix)
    assert _records(kafka_settings, topics["history"], 0) == []
    assert _records(kafka_settings, topics["checkpoints"], 0) == []


@pytest.mark.broker
def test_kafka_store_topics_are_created_with_their_configs(kafka_settings, unique_prefix):
    """Compacted, no retention for checkpoints; kept for ever for the history (read back
    from the broker: Tansu keeps the settings it was given, though it never compacts)."""
    topics = checkpoint_topics(unique_prefix)
    created = create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS)
    assert sorted(created) == sorted(topics.values())
    assert TOPIC_CONFIGS["cleanup.policy"] == "compact" and "retention.ms" not in TOPIC_CONFIGS
    assert HISTORY_TOPIC_CONFIGS["retention.ms"] == "-1"
    admin = Admin(kafka_settings)
    try:
        for name, configs in (
            (topics["checkpoints"], TOPIC_CONFIGS),
            (topics["history"], HISTORY_TOPIC_CONFIGS),
        ):
            read = admin.topic_configs(name)
            assert {k: read.get(k) for k in configs} == configs, name
        assert admin.partition_counts(list(topics.values())) == {
            name: PARTITIONS for name in topics.values()
        }
    finally:
        admin.close()
    assert create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS) == []


@pytest.mark.broker
def test_a_writer_killed_between_chunks_leaves_the_previous_checkpoint(
    kafka_settings, unique_prefix, caplog
):
    create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS)
    store = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY)
    genuine = os.urandom(CHUNK_BYTES * 2)  # three chunks with the manifest
    store.save_checkpoint(0, genuine, {"events": 10}, (0, 10))
    drift = {"kind": "concept", "partition": 0, "n_seen": 15}
    writer = """if True:
        import os, sys
        from driftstream.state.signing import load_state_key
        from driftstream.state.store import open_store
        from driftstream.transport import KafkaSettings
        store = open_store("kafka:", KafkaSettings(bootstrap_servers=sys.argv[1]), sys.argv[2],
                           key=load_state_key(None, os.environ))
        store.latest(0)
        store.save_checkpoint(0, os.urandom(int(sys.argv[3])), {"events": 20}, (0, 20),
                              drift_records=[{"kind": "concept", "partition": 0, "n_seen": 15}])
        print("not killed")
    """
    env = {
        **os.environ,
        "DRIFTSTREAM_STATE_KEY": KEY.decode(),
        "DRIFTSTREAM_KILL_AT": "checkpoint-chunk:2",
    }
    bootstrap = kafka_settings.bootstrap_servers
    child = subprocess.run(
        [sys.executable, "-c", writer, bootstrap, unique_prefix, str(CHUNK_BYTES * 3)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    topic = checkpoint_topics(unique_prefix)["checkpoints"]
    assert len(_records(kafka_settings, topic, 0)) == 3 + 2  # the genuine one, 2 of 4 chunks

    with caplog.at_level(logging.WARNING, logger="driftstream.state"):
        restored = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY).latest(0)
    assert restored.version == 1 and restored.state == genuine
    assert "partition 0: checkpoint 2 (id " in caplog.text
    assert "incomplete (2 of 4 chunks)" in caplog.text
    # The next owner saves again: numbering goes on, and the drift it reports again is
    # logged once although the killed writer had written it already.
    next_owner = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY)
    next_owner.latest(0)
    assert next_owner.save_checkpoint(0, b"next", {"events": 20}, (0, 20), [drift]) == 3
    assert [d["record"] for d in next_owner.drift_log(0)] == [drift]
    # Once a newer one is confirmed, prune removes the cut-short one's chunks too.
    assert next_owner.prune(0, keep_last=1) == 1
    assert next_owner.latest(0).state == b"next"
    for s in (store, next_owner):
        s.close()


@pytest.mark.broker
def test_a_tampered_chunk_is_skipped_for_the_previous_checkpoint(
    kafka_settings, unique_prefix, caplog
):
    create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS)
    store = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY)
    for n in (1, 2):
        store.save_checkpoint(0, bytes([n]) * CHUNK_BYTES, {"events": n}, (0, n))
    # Checkpoint 3, written elsewhere, arrives with one byte of its second chunk changed.
    scratch = f"{unique_prefix}scratch."
    create_checkpoint_topics(kafka_settings, scratch, PARTITIONS)
    elsewhere = KafkaCheckpointStore(kafka_settings, scratch, KEY)
    for n in (1, 2, 3):
        elsewhere.save_checkpoint(0, bytes([n]) * CHUNK_BYTES, {"events": n}, (0, n))
    records = _records(kafka_settings, checkpoint_topics(scratch)["checkpoints"], 0)
    third = [r for r in records if dict(r.headers)["version"] == b"3"]
    assert [dict(r.headers)["chunk"] for r in third] == [b"0", b"1"]
    tampered = bytearray(third[1].value)
    tampered[-1] ^= 1
    topic = checkpoint_topics(unique_prefix)["checkpoints"]
    _produce(
        kafka_settings,
        topic,
        0,
        [
            (third[0].key, third[0].value, third[0].headers),
            (third[1].key, bytes(tampered), third[1].headers),
        ],
    )

    with caplog.at_level(logging.WARNING, logger="driftstream.state"):
        restored = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY).latest(0)
    assert restored.version == 2 and restored.state == bytes([2]) * CHUNK_BYTES
    assert "partition 0: checkpoint 3 (id " in caplog.text
    assert "sha256 of the whole does not match" in caplog.text
    for s in (store, elsewhere):
        s.close()


@pytest.mark.broker
def test_a_forged_second_copy_of_a_chunk_is_not_covered_by_the_genuine_ones_hash(
    kafka_settings, unique_prefix, caplog
):
    """Restore hashes chunks while they arrive; the copy it then joins must be the one it
    hashed, not a later record under the same key."""
    create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS)
    store = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY)
    for n in (1, 2, 3):
        store.save_checkpoint(0, bytes([n]) * CHUNK_BYTES, {"events": n}, (0, n))
    topic = checkpoint_topics(unique_prefix)["checkpoints"]
    third = [r for r in _records(kafka_settings, topic, 0) if dict(r.headers)["version"] == b"3"]
    forged = bytearray(third[1].value)
    forged[0] ^= 1
    _produce(kafka_settings, topic, 0, [(third[1].key, bytes(forged), third[1].headers)])

    with caplog.at_level(logging.WARNING, logger="driftstream.state"):
        restored = KafkaCheckpointStore(kafka_settings, unique_prefix, KEY).latest(0)
    assert restored.version == 2 and restored.state == bytes([2]) * CHUNK_BYTES
    assert "checkpoint 3 (id " in caplog.text and "sha256 of the whole" in caplog.text
    store.close()


def test_s3_a_cut_short_or_tampered_object_is_skipped(seaweedfs, unique_prefix, caplog):
    prefix = f"{BUCKET_PREFIX}/{unique_prefix.rstrip('.')}/"
    store = S3CheckpointStore(seaweedfs.bucket, prefix, KEY, seaweedfs.client_options())
    for n in (1, 2, 3):
        store.save_checkpoint(0, bytes([n]) * 300_000, {"events": n}, (0, n))
    client = seaweedfs.client()
    newest = sorted(
        o["Key"] for o in client.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix)["Contents"]
    )[-1]
    assert "/p000000/000000000003-g0-o3-" in newest
    original = client.get_object(Bucket=seaweedfs.bucket, Key=newest)
    body, metadata = original["Body"].read(), original["Metadata"]
    for damaged, why in ((body[:-1000], "sha256"), (body[:-1] + b"\x00", "sha256")):
        client.put_object(Bucket=seaweedfs.bucket, Key=newest, Body=damaged, Metadata=metadata)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="driftstream.state"):
            restored = S3CheckpointStore(
                seaweedfs.bucket, prefix, KEY, seaweedfs.client_options()
            ).latest(0)
        assert restored.version == 2 and restored.state == bytes([2]) * 300_000
        assert "partition 0: checkpoint 3 (" in caplog.text and why in caplog.text
    store.close()


@pytest.mark.parametrize("signature", ["wrong", "missing"])
@pytest.mark.parametrize("open_backend", SHARED, indirect=True)
def test_a_forged_checkpoint_is_refused_and_never_unpickled(
    open_backend, signature, tmp_path, caplog, request
):
    target = tmp_path / "created-by-unpickling"
    store = open_backend()
    genuine = trained_learner(n=50)
    store.save_checkpoint(0, genuine.to_bytes(), {"events": 50}, genuine.version)
    payload = pickle.dumps(_CreatesFile(target))
    if open_backend.backend == "kafka":
        settings = request.getfixturevalue("kafka_settings")
        prefix = request.getfixturevalue("unique_prefix")
        forger = KafkaCheckpointStore(settings, prefix, FORGER_KEY)
        forger.save_checkpoint(0, payload, {"events": 0}, (0, 0))
        if signature == "missing":  # the same records again, without a signature
            topic = checkpoint_topics(prefix)["checkpoints"]
            forged = _records(settings, topic, 0)[-1]
            unsigned = [(name, value) for name, value in forged.headers if name != "hmac"]
            assert len(unsigned) == len(forged.headers) - 1
            _produce(settings, topic, 0, [(forged.key, forged.value, unsigned)])
    else:
        server = request.getfixturevalue("seaweedfs")
        bucket, _, prefix = open_backend.spec[len("s3://") :].partition("/")
        forger = S3CheckpointStore(bucket, prefix + "/", FORGER_KEY, server.client_options())
        forger.save_checkpoint(0, payload, {"events": 0}, (0, 0))
        if signature == "missing":
            client = server.client()
            keys = [
                o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
            ]
            forged = sorted(k for k in keys if k.endswith(".ckpt"))[-1]
            obj = client.get_object(Bucket=bucket, Key=forged)
            metadata = {k: v for k, v in obj["Metadata"].items() if k != "hmac"}
            client.put_object(Bucket=bucket, Key=forged, Body=obj["Body"].read(), Metadata=metadata)
    forger.close()

    with caplog.at_level(logging.WARNING, logger="driftstream.state"):
        restored = open_backend().latest(0)
    assert restored.version == 1
    learner = load_learner(restored.state)
    assert learner.canonical_bytes() == genuine.canonical_bytes()
    assert not target.exists()
    why = "signature does not verify" if signature == "wrong" else "is not signed"
    assert "partition 0: checkpoint 2 (" in caplog.text and why in caplog.text
    assert [m["version"] for m in open_backend().checkpoints(0)] == [1]
    with pytest.raises(ForbiddenPickle):  # and were it ever unpickled: the second wall
        load_learner(payload)
    assert not target.exists()


# -- a large state ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def million_pending(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The state of a learner holding 1,000,000 pending joins (~80 MB pickled), built once
    even when the backends' tests run in different xdist worker processes."""
    return built_once(tmp_path_factory, "million-pending.state", _million_pending)


def _million_pending() -> bytes:
    learner = Learner(LearnerConfig(model="lr", data_drift=False))
    rng = random.Random(0)
    gc.disable()  # a million live tuples: collections would only slow the build
    try:
        for i in range(1_000_000):
            x = {"a": rng.random(), "b": rng.random(), "c": rng.random()}
            learner.process_event(Event(f"e{i}", x, ts=i))
        assert len(learner.pending) == 1_000_000
        return learner.to_bytes()
    finally:
        gc.enable()


def test_a_million_pending_joins_go_through_each_store(open_backend, million_pending):
    writer = open_backend()
    writer.save_checkpoint(0, b"small", {"events": 1}, (0, 1))
    version = writer.save_checkpoint(0, million_pending, {"events": 1_000_000}, (0, 0))
    restored = open_backend().latest(0)
    assert restored.version == version
    assert restored.state == million_pending


# -- unavailable stores -------------------------------------------------------------------


def test_an_s3_store_that_goes_away_raises_store_unavailable_then_recovers(tmp_path):
    from tests.seaweedfs import SeaweedS3

    server = SeaweedS3(tmp_path / "weed").start()
    try:
        options = {**server.client_options()}
        store = S3CheckpointStore(server.bucket, "p/", KEY, options)
        store.save_checkpoint(0, b"one", {"events": 1}, (0, 1))
        server.kill()
        with pytest.raises(StoreUnavailable) as raised:
            store.save_checkpoint(0, b"two", {"events": 2}, (0, 2))
        message = str(raised.value)
        assert message.startswith("s3://driftstream-test/p/") and "\n" not in message
        assert server.secret_key not in message
        with pytest.raises(StoreUnavailable):
            store.latest(0)
        server.start()
        # Just restarted, SeaweedFS may still answer "InternalError" until its volume server
        # has registered: unavailable, so the caller tries again, as a worker would.
        restored = []

        def restores() -> bool:
            try:
                restored.append(store.latest(0))
            except StoreUnavailable:
                return False
            return True

        wait_until(restores, "the restarted S3 server to serve the checkpoint", step=0.5)
        assert restored[-1].state == b"one"
        assert store.save_checkpoint(0, b"two", {"events": 2}, (0, 2)) == 2
        store.close()
    finally:
        server.stop()


@pytest.mark.broker
def test_a_kafka_store_whose_broker_goes_away_raises_store_unavailable(unique_prefix):
    from driftstream.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, connect_timeout_ms=2000)
        create_checkpoint_topics(settings, unique_prefix, 1)
        store = KafkaCheckpointStore(settings, unique_prefix, KEY, timeout_s=5)
        store.save_checkpoint(0, b"one", {"events": 1}, (0, 1))
        assert store.latest(0).state == b"one"
        broker.kill()
        with pytest.raises(StoreUnavailable) as raised:
            store.save_checkpoint(0, b"two", {"events": 2}, (0, 2))
        assert "not confirmed" in str(raised.value) and "\n" not in str(raised.value)
        with pytest.raises(StoreUnavailable):
            store.latest(0)
        store.close()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        KafkaCheckpointStore(settings, unique_prefix, KEY, timeout_s=5)
