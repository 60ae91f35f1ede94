"""The store contract: every store passes these."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.store import (
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
        store.append([("r", 1, b"again")])
    # The failed transaction left nothing behind.
    assert store.read("r", 1, 10) == [(1, b"a")]
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


def test_sqlite_garbage_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"damaged or unreadable|cannot open"):
        SqliteStore(path).open()


def test_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    s = open_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(s, SqliteStore) and s.path == tmp_path / "a.db"
    with pytest.raises(StoreError, match="unknown store"):
        open_store("redis://x")


def test_sqlite_schema_1_is_migrated_in_place(tmp_path: Path) -> None:
    """A file from schema 1 (one row per event) opens as schema 2 with the same log, and the
    snapshot position (a row id) still means the same place."""
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
    assert store.load_snapshot() == (2, b"\x00")
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
