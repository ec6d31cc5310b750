"""Unit tests of the SQLite state store (no broker)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from driftstream.state.checkpoints import SCHEMA_VERSION, Checkpoint, StateError, StateStore


@pytest.fixture
def store(tmp_path: Path):
    with StateStore(tmp_path / "state.sqlite") as s:
        yield s


def test_round_trip(store: StateStore) -> None:
    version = store.save_checkpoint(
        3,
        b"\x00model\xff",
        {"demo.events": 10, "demo.labels": 7},
        (2, 41),
        info={"n_events": 10, "n_labels": 7, "rolling": 0.25, "pending": 3},
        drift_records=[{"kind": "concept", "position": 5}, {"kind": "data", "feature": "x"}],
        model_events=[
            {
                "generation": 2,
                "updates": 0,
                "reason": "drift:reset",
                "event_ts": 99,
                "detector": "ADWIN",
            }
        ],
    )
    assert version == 1
    cp = store.latest(3)
    assert isinstance(cp, Checkpoint)
    assert cp.state == b"\x00model\xff"
    assert cp.offsets == {"demo.events": 10, "demo.labels": 7}
    assert cp.model_version == (2, 41)
    assert cp.info["rolling"] == 0.25
    assert store.get(3, 1) == cp
    assert store.latest(4) is None
    assert store.partitions() == [3]

    (meta,) = store.checkpoints(3)
    assert "state" not in meta and meta["size"] == len(cp.state) and meta["version"] == 1
    drift = store.drift_log(3)
    assert [d["record"] for d in drift] == [
        {"kind": "concept", "position": 5},
        {"kind": "data", "feature": "x"},
    ]
    assert all(d["checkpoint_version"] == 1 for d in drift)
    (event,) = store.model_versions()
    assert (
        event["partition"],
        event["generation"],
        event["updates"],
        event["reason"],
        event["event_ts"],
        event["info"],
    ) == (3, 2, 0, "drift:reset", 99, {"detector": "ADWIN"})


def test_versions_are_monotonic_per_partition(store: StateStore) -> None:
    versions_0 = [store.save_checkpoint(0, b"s%d" % i, {"e": i}, (0, i)) for i in range(4)]
    versions_1 = [store.save_checkpoint(1, b"t%d" % i, {"e": i}, (0, i)) for i in range(2)]
    assert versions_0 == [1, 2, 3, 4]
    assert versions_1 == [1, 2]
    assert store.latest(0).state == b"s3"
    assert store.get(0, 2).state == b"s1"
    with pytest.raises(StateError, match="no checkpoint 9 of partition 0"):
        store.get(0, 9)
    # Pruning never makes a version number come back.
    store.prune(0, keep_last=1, keep_per_generation=False)
    assert store.save_checkpoint(0, b"s4", {"e": 4}, (0, 4)) == 5


def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore(path) as s:
        s.save_checkpoint(0, b"abc", {"e": 1}, (0, 1))
    with StateStore(path) as s:
        assert s.latest(0).state == b"abc"


def test_failed_save_leaves_nothing(store: StateStore) -> None:
    """A drift record that cannot be stored rolls back the whole checkpoint."""
    with pytest.raises(TypeError):
        store.save_checkpoint(0, b"abc", {"e": 1}, (0, 1), drift_records=[{"bad": object()}])
    assert store.latest(0) is None and store.drift_log() == []


def test_corrupt_blob_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore(path) as s:
        s.save_checkpoint(0, b"good state", {"e": 1}, (0, 1))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE checkpoints SET state = ? WHERE version = 1", [b"evil state"])
    conn.close()
    with StateStore(path) as s:
        with pytest.raises(StateError, match="corrupt"):
            s.latest(0)
        with pytest.raises(StateError, match="corrupt"):
            s.get(0, 1)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    with pytest.raises(StateError, match="another application") as info:
        StateStore(path)
    assert str(path) in str(info.value)
    # Untouched: still the other application's table only, not switched to WAL.
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_foreign_meta_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('app', 'somethingelse')")
    conn.close()
    with pytest.raises(StateError, match="another application"):
        StateStore(path)


def test_non_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the bytes you are looking for\n" * 10)
    with pytest.raises(StateError, match="not an SQLite database") as info:
        StateStore(path)
    assert str(path) in str(info.value)
    assert path.read_text().startswith("these are not")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    StateStore(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)]
        )
    conn.close()
    with pytest.raises(StateError, match="newer"):
        StateStore(path)


def test_prune_keeps_newest_and_one_per_generation(store: StateStore) -> None:
    # Versions 1..10; generation changes at versions 4 and 8.
    generations = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    for i, generation in enumerate(generations):
        store.save_checkpoint(0, b"%d" % i, {"e": i}, (generation, i))
    store.save_checkpoint(1, b"other", {"e": 0}, (0, 0))

    deleted = store.prune(0, keep_last=2)
    kept = [c["version"] for c in store.checkpoints(0)]
    # Newest two (9, 10) + newest of generation 0 (3) and 1 (7); 10 covers generation 2.
    assert kept == [3, 7, 9, 10]
    assert deleted == 6
    assert store.prune(0, keep_last=2) == 0
    assert store.prune(0, keep_last=1, keep_per_generation=False) == 3
    assert [c["version"] for c in store.checkpoints(0)] == [10]
    assert len(store.checkpoints(1)) == 1  # other partitions untouched
    with pytest.raises(ValueError):
        store.prune(0, keep_last=0)


N_SAVES = 150


def _writer(path: str, partition: int, barrier) -> None:
    """Child process: open the shared file and write many checkpoints of its own partition."""
    barrier.wait(timeout=30)
    with StateStore(path) as s:
        for i in range(N_SAVES):
            s.save_checkpoint(
                partition,
                bytes([partition]) * 4096,
                {"events": i + 1},
                (0, i),
                info={"i": i},
                drift_records=[{"i": i}] if i % 10 == 0 else [],
            )
            if i % 25 == 0:
                s.prune(partition, keep_last=5)
            assert s.latest(partition).offsets == {"events": i + 1}


def test_two_processes_share_one_file(tmp_path: Path) -> None:
    """Both create the (new) file at once and then write concurrently, without lock errors."""
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("fork")  # tests are not importable by name in a spawn child
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, p, barrier)) for p in (0, 1)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    with StateStore(path) as s:
        assert s.partitions() == [0, 1]
        for p in (0, 1):
            latest = s.latest(p)
            assert latest.version == N_SAVES
            assert latest.state == bytes([p]) * 4096
            assert len(s.drift_log(p)) == N_SAVES // 10
