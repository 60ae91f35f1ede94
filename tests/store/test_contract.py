"""The store contract: every store passes these."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from hivegrid.coordinator.store import (
    SCHEMA_VERSION,
    MemoryStore,
    SqliteStore,
    Store,
    StoreError,
    open_store,
)

Factory = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if request.param == "memory":
        store = MemoryStore()
        return lambda: store
    return lambda: SqliteStore(tmp_path / "log.db")


def test_epochs_increase_across_opens(make_store: Factory) -> None:
    first = make_store()
    e1 = first.open()
    first.close()
    second = make_store()
    e2 = second.open()
    assert e2 > e1
    second.close()


def test_append_replay_and_read(make_store: Factory) -> None:
    store = make_store()
    store.open()
    store.append([("r1", 1, b"a"), ("r2", 1, b"x"), ("r1", 2, b"b")])
    store.append([("r1", 3, b"c")])
    assert list(store.replay()) == [b"a", b"x", b"b", b"c"]
    assert store.read("r1", 1, 100) == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert store.read("r1", 2, 1) == [(2, b"b")]
    assert store.read("r1", 4, 10) == []
    assert store.read("nope", 1, 10) == []
    store.close()


def test_appends_survive_reopen(make_store: Factory) -> None:
    store = make_store()
    store.open()
    store.append([("r", i, bytes([i])) for i in range(1, 101)])
    store.close()
    again = make_store()
    again.open()
    assert [seq for seq, _ in again.read("r", 1, 1000)] == list(range(1, 101))
    again.close()


def test_duplicate_sequence_is_refused(make_store: Factory) -> None:
    store = make_store()
    store.open()
    store.append([("r", 1, b"a")])
    with pytest.raises(StoreError):
        store.append([("q", 1, b"q"), ("r", 1, b"again")], snapshot=[b"s"], deleted=["q"])
    # The failed transaction left nothing behind, and the store still takes new rows.
    assert store.read("r", 1, 10) == [(1, b"a")]
    assert store.read("q", 1, 10) == []
    assert store.snapshots() == []
    assert store.deleted_runs() == set()
    store.append([("q", 1, b"q"), ("r", 2, b"b")])
    assert list(store.replay()) == [b"a", b"q", b"b"]
    store.close()


def test_sqlite_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = SqliteStore(path)
    store.open()
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer Hivegrid"):
        SqliteStore(path).open()
    # The refusal released the lock.
    with pytest.raises(StoreError, match="newer Hivegrid"):
        SqliteStore(path).open()


def test_sqlite_garbage_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"damaged or unreadable|cannot open"):
        SqliteStore(path).open()


def test_sqlite_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match="not a Hivegrid store"):
        SqliteStore(path).open()


def test_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    s = open_store(f"sqlite:///{tmp_path}/a.db", holder="127.0.0.1:1")
    assert isinstance(s, SqliteStore) and s.path == tmp_path / "a.db"
    assert s.holder == "127.0.0.1:1"
    with pytest.raises(StoreError, match="unknown store"):
        open_store("redis://x")


def test_sqlite_schema_1_is_migrated_in_place(tmp_path: Path) -> None:
    """A file from schema 1 (one row per event) opens as the current schema with the same log,
    and the snapshot position (a row id) still means the same place."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE events (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL,
                                 seq INTEGER NOT NULL, data BLOB NOT NULL);
            CREATE UNIQUE INDEX events_run_seq ON events (run_id, seq);
            CREATE TABLE snapshots (position INTEGER PRIMARY KEY, data BLOB NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1'), ('epoch', '4');
            INSERT INTO events (run_id, seq, data) VALUES
              ('r1', 1, x'61'), ('r2', 1, x'78'), ('r1', 2, x'62'), ('r1', 3, x'63');
            INSERT INTO snapshots VALUES (2, x'00');
            """
        )
    store = SqliteStore(path)
    assert store.open() == 5
    assert list(store.replay()) == [b"a", b"x", b"b", b"c"]
    assert list(store.replay(after=2)) == [b"b", b"c"]
    assert store.snapshots() == [2]
    assert store.load_snapshot(2) == [b"\x00"]
    assert store.read("r1", 2, 10) == [(2, b"b"), (3, b"c")]
    store.append([("r1", 4, b"d"), ("r1", 5, b"e")])
    assert store.read("r1", 3, 10) == [(3, b"c"), (4, b"d"), (5, b"e")]
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert conn.execute("SELECT name FROM sqlite_master WHERE name='events'").fetchone() is None


def test_a_run_split_over_batches_reads_back_from_any_seq(make_store: Factory) -> None:
    store = make_store()
    store.open()
    store.append([("r", 1, b"1"), ("r", 2, b"2"), ("q", 1, b"q"), ("r", 3, b"3")])
    store.append([("r", i, str(i).encode()) for i in range(4, 9)])
    for start in range(1, 10):
        got = store.read("r", start, 100)
        assert got == [(i, str(i).encode()) for i in range(start, 9)], start
    assert store.read("r", 2, 3) == [(2, b"2"), (3, b"3"), (4, b"4")]
    store.close()


def test_read_max_bytes(make_store: Factory) -> None:
    store = make_store()
    store.open()
    store.append([("r", 1, b"a" * 10), ("r", 2, b"b" * 10), ("q", 1, b"q")])
    store.append([("r", 3, b"c" * 10), ("r", 4, b"d" * 10)])
    assert [s for s, _ in store.read("r", 1, 100, max_bytes=0)] == [1, 2, 3, 4]
    assert [s for s, _ in store.read("r", 1, 100, max_bytes=20)] == [1, 2]
    assert [s for s, _ in store.read("r", 1, 100, max_bytes=21)] == [1, 2, 3]
    assert [s for s, _ in store.read("r", 2, 100, max_bytes=25)] == [2, 3, 4]
    assert [s for s, _ in store.read("r", 1, 2, max_bytes=1000)] == [1, 2]
    # Never less than one event, however small the budget.
    assert store.read("r", 3, 100, max_bytes=1) == [(3, b"c" * 10)]
    assert store.read("r", 5, 100, max_bytes=1) == []
    store.close()


def test_snapshot_chunks_round_trip(make_store: Factory) -> None:
    store = make_store()
    store.open()
    assert store.snapshots() == []
    chunks = [b"", b"\x00" * 1000, bytes(range(256)) * 40, b"end"]
    store.append([("r", 1, b"a"), ("r", 2, b"b")], snapshot=chunks)
    store.append([("r", 3, b"c")])
    (position,) = store.snapshots()
    assert store.load_snapshot(position) == chunks
    # The snapshot covers the events of its own append, and replay carries on after them.
    assert list(store.replay(after=position)) == [b"c"]
    with pytest.raises(StoreError, match="no snapshot"):
        store.load_snapshot(position + 1000)
    store.close()
    again = make_store()
    again.open()
    assert again.snapshots() == [position]
    assert again.load_snapshot(position) == chunks
    again.close()


def test_the_newest_two_snapshots_are_kept(make_store: Factory) -> None:
    store = make_store()
    store.open()
    positions = []
    for i in range(1, 6):
        store.append([("r", i, b"e")], snapshot=[f"snap {i}".encode(), b"more"])
        positions.append(store.snapshots()[0])
    assert positions == sorted(set(positions))
    assert store.snapshots() == [positions[4], positions[3]]
    assert store.load_snapshot(positions[3]) == [b"snap 4", b"more"]
    assert store.load_snapshot(positions[4]) == [b"snap 5", b"more"]
    with pytest.raises(StoreError):
        store.load_snapshot(positions[2])
    # A snapshot with no events since the last one replaces it.
    store.append([], snapshot=[b"again"])
    assert store.snapshots() == [positions[4], positions[3]]
    assert store.load_snapshot(positions[4]) == [b"again"]
    store.close()


def test_deleted_runs_vanish(make_store: Factory) -> None:
    store = make_store()
    store.open()
    store.append([("gone", 1, b"g1"), ("kept", 1, b"k1"), ("gone", 2, b"g2")])
    store.append([("gone", 3, b"g3"), ("kept", 2, b"k2")], deleted=["gone"])
    assert list(store.replay()) == [b"k1", b"k2"]
    assert store.read("gone", 1, 100) == []
    assert store.read("kept", 1, 100) == [(1, b"k1"), (2, b"k2")]
    assert store.deleted_runs() == {"gone"}
    store.append([("kept", 3, b"k3")])
    assert list(store.replay()) == [b"k1", b"k2", b"k3"]
    store.close()
    again = make_store()
    again.open()
    assert list(again.replay()) == [b"k1", b"k2", b"k3"]
    assert again.read("gone", 1, 100) == []
    assert again.deleted_runs() == {"gone"}
    again.close()


def test_a_deletion_is_remembered_until_every_kept_snapshot_is_newer(
    make_store: Factory,
) -> None:
    store = make_store()
    store.open()
    store.append([("a", 1, b"a1"), ("b", 1, b"b1")], snapshot=[b"s1"])
    (before,) = store.snapshots()
    store.append([("b", 2, b"b2")], deleted=["a"])
    # The older snapshot may hold the run: the runtime skips it there.
    assert store.deleted_runs() == {"a"}
    assert store.deleted_runs(since=before) == {"a"}
    store.append([("b", 3, b"b3")], snapshot=[b"s2"])
    after = store.snapshots()[0]
    assert store.deleted_runs(since=after) == set()
    assert store.deleted_runs() == {"a"}  # the snapshot at `before` is still kept
    store.append([("b", 4, b"b4")], snapshot=[b"s3"])
    assert store.snapshots()[-1] > before
    assert store.deleted_runs() == set()
    assert list(store.replay()) == [b"b1", b"b2", b"b3", b"b4"]
    store.close()


def test_a_deleted_run_id_may_be_used_again(make_store: Factory) -> None:
    """Events written under a deleted run's id after its deletion are a new run: kept and read
    as usual, while the old run's events stay gone."""
    store = make_store()
    store.open()
    store.append([("r", 1, b"old1"), ("r", 2, b"old2"), ("x", 1, b"x1")], snapshot=[b"s"])
    (old_snapshot,) = store.snapshots()
    store.append([], deleted=["r"])
    store.append([("r", 1, b"new1"), ("x", 2, b"x2")])
    store.append([("r", 2, b"new2")], snapshot=[b"t"])
    new_snapshot = store.snapshots()[0]
    assert store.read("r", 1, 10) == [(1, b"new1"), (2, b"new2")]
    assert list(store.replay()) == [b"x1", b"new1", b"x2", b"new2"]
    assert list(store.replay(after=old_snapshot)) == [b"new1", b"x2", b"new2"]
    # The old snapshot holds the old run (skip it); the new one holds the new run (keep it).
    assert store.deleted_runs(since=old_snapshot) == {"r"}
    assert store.deleted_runs(since=new_snapshot) == set()
    with pytest.raises(StoreError):
        store.append([("r", 2, b"dup")])
    store.close()
    again = make_store()
    again.open()
    assert again.read("r", 1, 10) == [(1, b"new1"), (2, b"new2")]
    again.close()


def test_size_bytes_grows_with_the_log(make_store: Factory) -> None:
    store = make_store()
    store.open()
    empty = store.size_bytes()
    store.append([("r", i, b"x" * 1000) for i in range(1, 201)], snapshot=[b"y" * 10_000])
    assert store.size_bytes() >= empty + 200_000
    store.close()
