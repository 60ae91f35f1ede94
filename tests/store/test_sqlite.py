"""What only the SQLite store does: one coordinator at a time, fencing, a self-contained file
after close, live backups, damaged snapshots, migration, a full disk, purging deleted runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hivegrid.coordinator.store import SCHEMA_VERSION, SqliteStore, StoreError, backup_sqlite
from hivegrid.storage.v1.storage_pb2 import EventBatch

ROOT = Path(__file__).resolve().parents[2]

# Opens the store named by argv[1] as "holder argv[2]", says so, and holds it until stdin ends
# (or, when argv[3] is "try", reports what opening it says and exits).
_HOLDER = """
import sys
from hivegrid.coordinator.store import SqliteStore, StoreError
store = SqliteStore(sys.argv[1], holder=sys.argv[2])
if sys.argv[3] == "try":
    try:
        store.open()
    except StoreError as exc:
        print("refused:", exc, flush=True)
    else:
        print("opened", flush=True)
    sys.exit(0)
store.open()
store.append([("from-child", 1, b"c")])
print("ready", flush=True)
sys.stdin.read()
"""


def _python(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
    )


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _count(path: Path, sql: str) -> int:
    conn = _raw(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# --- one coordinator at a time -----------------------------------------------------------


def test_a_second_opener_in_the_same_process_is_refused_and_told_who_holds_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hg.db"
    first = SqliteStore(path, holder="listening on 127.0.0.1:50051")
    first.open()
    second = SqliteStore(path)
    with pytest.raises(StoreError) as info:
        second.open()
    message = str(info.value)
    assert "\n" not in message
    assert f"the store {path} is in use by another coordinator" in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "listening on 127.0.0.1:50051" in message
    assert "stop it, or use another store" in message
    # The lock file says the same, as one line of JSON.
    holder = json.loads((tmp_path / "hg.db.lock").read_text())
    assert holder["pid"] == os.getpid() and holder["holder"] == "listening on 127.0.0.1:50051"
    assert holder["hostname"] == socket.gethostname() and holder["started"].endswith("Z")
    first.append([("r", 1, b"a")])
    first.close()
    # Once the first one is closed, the next one opens.
    assert second.open() > 1
    assert second.read("r", 1, 10) == [(1, b"a")]
    second.close()


def test_a_second_opener_in_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    store = SqliteStore(path, holder="listening on 10.0.0.1:7000")
    store.open()
    with _python(str(path), "-", "try") as child:
        out, _ = child.communicate(timeout=60)
    assert out.startswith("refused: the store "), out
    assert f"pid {os.getpid()} on host" in out and "listening on 10.0.0.1:7000" in out
    store.close()


def test_the_lock_of_a_killed_coordinator_is_released(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    with _python(str(path), "listening on 127.0.0.1:9", "hold", stdin=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            with pytest.raises(
                StoreError,
                match=rf"pid {child.pid} on host [^,]+, listening on 127\.0\.0\.1:9, since ",
            ):
                SqliteStore(path).open()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    store = SqliteStore(path)
    assert store.open() == 2
    assert store.read("from-child", 1, 10) == [(1, b"c")]
    store.close()


def test_the_same_store_object_reopens_after_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "hg.db")
    e1 = store.open()
    store.append([("r", 1, b"a")])
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="not open"):
        store.read("r", 1, 10)
    with pytest.raises(StoreError, match="not open"):
        store.append([("r", 2, b"b")])
    assert store.open() > e1
    assert store.read("r", 1, 10) == [(1, b"a")]
    store.close()


def test_a_fenced_store_writes_nothing(tmp_path: Path) -> None:
    """Should a second coordinator get past the lock (say, on a network filesystem), its open
    bumps the epoch, and the first one's next append notices and writes nothing."""
    path = tmp_path / "hg.db"
    store = SqliteStore(path)
    epoch = store.open()
    store.append([("r", 1, b"a")])
    conn = _raw(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (str(epoch + 1),))
    conn.close()
    for _ in range(2):
        with pytest.raises(
            StoreError,
            match=rf"another coordinator opened this store \(epoch {epoch + 1}\); "
            "this one stops writing",
        ):
            store.append([("r", 2, b"b")], snapshot=[b"s"], deleted=["r"])
    assert _count(path, "SELECT COUNT(*) FROM batches") == 1
    assert _count(path, "SELECT COUNT(*) FROM snapshots") == 0
    assert _count(path, "SELECT COUNT(*) FROM deleted_runs") == 0
    assert store.read("r", 1, 10) == [(1, b"a")]
    store.close()


# --- a clean close, backups --------------------------------------------------------------


def test_after_a_clean_close_the_db_file_alone_holds_everything(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    store = SqliteStore(path)
    store.open()
    for i in range(1, 51):
        store.append(
            [("r", i, b"x" * 500), (f"q{i}", 1, b"q")], snapshot=[b"s"] if i % 10 else None
        )
    # Readers on several threads, each with its own connection: close must close them all.
    threads = [
        threading.Thread(target=lambda: store.read("r", 1, 1000) and list(store.replay()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(store.replay())) == 100
    store.close()
    wal = tmp_path / "hg.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    # The last connection is gone: SQLite removes the WAL file only then.
    assert not wal.exists()

    copy = tmp_path / "copy" / "hg.db"
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    again = SqliteStore(copy)
    again.open()
    assert [s for s, _ in again.read("r", 1, 1000)] == list(range(1, 51))
    assert len(list(again.replay())) == 100
    assert again.load_snapshot(again.snapshots()[0]) == [b"s"]
    again.close()


def test_reader_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "hg.db")
    store.open()
    store.append([("r", 1, b"a")])
    for _ in range(10):
        t = threading.Thread(target=store.read, args=("r", 1, 10))
        t.start()
        t.join()
    store.read("r", 1, 10)
    assert len(store._readers) <= 2
    store.close()
    assert store._readers == []


def test_backup_of_a_live_store(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    store = SqliteStore(path)
    store.open()
    committed = 0
    some_committed = threading.Event()
    stop = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        nonlocal committed
        i = 0
        try:
            while not stop.is_set() or i < 50:
                i += 1
                store.append([("w", 2 * i - 1, b"a" * 200), ("w", 2 * i, b"b" * 200)])
                committed = i
                if i == 20:
                    some_committed.set()
        except BaseException as exc:
            failure.append(exc)
            some_committed.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert some_committed.wait(60)
        before = committed
        backup_sqlite(path, tmp_path / "backup.db")
        with pytest.raises(StoreError, match="already exists"):
            backup_sqlite(path, tmp_path / "backup.db")
    finally:
        stop.set()
        thread.join(60)
    assert not failure
    store.close()

    copy = SqliteStore(tmp_path / "backup.db")
    copy.open()
    seqs = [seq for seq, _ in copy.read("w", 1, 1_000_000)]
    assert len(seqs) >= 2 * before
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(list(copy.replay())) == len(seqs)
    copy.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name) == [
        "backup.db",
        "backup.db.lock",
    ]


def test_backup_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        backup_sqlite(tmp_path / "missing.db", tmp_path / "b.db")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a Hivegrid store"):
        backup_sqlite(other, tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists()


# --- snapshots ---------------------------------------------------------------------------


def _two_snapshots(path: Path) -> tuple[int, int]:
    store = SqliteStore(path)
    store.open()
    store.append([("r", 1, b"a")], snapshot=[b"old0", b"old1", b"old2"])
    store.append([("r", 2, b"b")], snapshot=[b"new0", b"new1", b"new2"])
    newest, older = store.snapshots()
    store.close()
    return newest, older


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (
            "UPDATE snapshot_chunks SET data = x'6e657731ff' WHERE position = ? AND idx = 1",
            "chunk 1 fails its checksum",
        ),
        (
            "UPDATE snapshot_chunks SET data = x'' WHERE position = ? AND idx = 2",
            "chunk 2 fails its checksum",
        ),
        ("DELETE FROM snapshot_chunks WHERE position = ? AND idx = 1", "chunk 1 is missing"),
        ("DELETE FROM snapshot_chunks WHERE position = ? AND idx = 2", "2 of its 3 chunks"),
        ("DELETE FROM snapshot_chunks WHERE position = ?", "0 of its 3 chunks"),
    ],
    ids=["altered", "emptied", "middle-missing", "last-missing", "all-missing"],
)
def test_a_damaged_snapshot_is_refused_and_the_older_one_still_loads(
    tmp_path: Path, damage: str, error: str
) -> None:
    path = tmp_path / "hg.db"
    newest, older = _two_snapshots(path)
    conn = _raw(path)
    conn.execute(damage, (newest,))
    conn.close()
    store = SqliteStore(path)
    store.open()
    assert store.snapshots() == [newest, older]
    with pytest.raises(StoreError, match=error):
        store.load_snapshot(newest)
    assert store.load_snapshot(older) == [b"old0", b"old1", b"old2"]
    assert list(store.replay(after=older)) == [b"b"]
    # The next snapshot replaces the damaged one's slot as usual.
    store.append([("r", 3, b"c")], snapshot=[b"next"])
    assert store.snapshots() == [store.snapshots()[0], newest]
    assert store.load_snapshot(store.snapshots()[0]) == [b"next"]
    store.close()


def test_sqlite_schema_2_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"

    def batch(*events: bytes) -> bytes:
        return EventBatch(events=list(events)).SerializeToString()

    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE batches (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL,
              first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, data BLOB NOT NULL);
            CREATE UNIQUE INDEX batches_run_seq ON batches (run_id, first_seq);
            CREATE TABLE snapshots (position INTEGER PRIMARY KEY, data BLOB NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '2'), ('epoch', '7');
            """
        )
        conn.executemany(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
            [
                (1, "r1", 1, 2, batch(b"a", b"b")),
                (2, "r2", 1, 1, batch(b"x")),
                (3, "r1", 3, 3, batch(b"c")),
            ],
        )
        conn.execute("INSERT INTO snapshots VALUES (2, ?)", (b"the old snapshot",))
    store = SqliteStore(path)
    assert store.open() == 8
    assert list(store.replay()) == [b"a", b"b", b"x", b"c"]
    assert store.snapshots() == [2]
    assert store.load_snapshot(2) == [b"the old snapshot"]
    assert list(store.replay(after=2)) == [b"c"]
    store.append([("r1", 4, b"d")], snapshot=[b"new"])
    assert store.snapshots() == [4, 2]
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE name = 'snapshots_v2'").fetchone()
            is None
        )
    again = SqliteStore(path)
    again.open()
    assert again.load_snapshot(2) == [b"the old snapshot"]
    assert again.read("r1", 1, 10) == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]
    again.close()


# --- a full disk -------------------------------------------------------------------------


def test_a_full_disk_fails_the_append_and_the_same_rows_go_in_once_there_is_room(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "hg.db")
    store.open()
    store.append([("small", 1, b"a"), ("gone", 1, b"g")], snapshot=[b"s1"])
    conn = store._write
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    rows = [("big", i, os.urandom(2000)) for i in range(1, 301)] + [("small", 2, b"b")]
    chunks = [os.urandom(5000) for _ in range(20)]
    for _ in range(2):
        with pytest.raises(StoreError, match="full"):
            store.append(rows, snapshot=chunks, deleted=["gone"])
        assert not conn.in_transaction
        assert store.read("big", 1, 10) == []
        assert store.read("small", 1, 10) == [(1, b"a")]
        assert len(store.snapshots()) == 1
        assert store.deleted_runs() == set()
    # Room again (as when the disk was freed): the very same call goes through.
    conn.execute("PRAGMA max_page_count = 1073741823")
    store.append(rows, snapshot=chunks, deleted=["gone"])
    store.append([("small", 3, b"c")])
    assert store.read("big", 1, 1000) == [(seq, data) for _, seq, data in rows[:-1]]
    assert store.read("small", 1, 10) == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert store.load_snapshot(store.snapshots()[0]) == chunks
    assert store.deleted_runs() == {"gone"}
    assert list(store.replay(after=store.snapshots()[0])) == [b"c"]
    store.close()


# --- purging deleted runs ----------------------------------------------------------------


def test_a_deleted_run_is_purged_a_bounded_amount_per_append(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    store = SqliteStore(path)
    store.purge_batch = 3
    store.open()
    for i in range(1, 11):  # one batch of "big" per append
        store.append([("big", i, b"x" * 100), ("small", i, b"s")])
    big = "SELECT COUNT(*) FROM batches WHERE run_id = 'big'"
    assert _count(path, big) == 10
    store.append([("small", 11, b"s")], deleted=["big"])
    left = [_count(path, big)]
    seq = 11
    while left[-1]:
        seq += 1
        store.append([("small", seq, b"s")])
        left.append(_count(path, big))
    assert left == [7, 4, 1, 0]
    assert store.read("big", 1, 100) == []
    assert [s for s, _ in store.read("small", 1, 100)] == list(range(1, seq + 1))
    assert len(list(store.replay())) == seq
    # The tombstone stays until every kept snapshot is newer than the deletion (here: there
    # is none), across restarts too.
    assert store.deleted_runs() == {"big"}
    store.close()
    again = SqliteStore(path)
    again.open()
    assert again.deleted_runs() == {"big"}
    assert _count(path, "SELECT COUNT(*) FROM deleted_runs") == 1
    again.append([("small", seq + 1, b"s")], snapshot=[b"s"])
    assert again.deleted_runs() == set()
    assert _count(path, "SELECT COUNT(*) FROM deleted_runs") == 0
    again.close()


def test_log_positions_are_never_reused_after_a_purge(tmp_path: Path) -> None:
    """Purging the newest batches must not hand their positions out again: a snapshot taken
    before would then hide the new events from replay."""
    path = tmp_path / "hg.db"
    store = SqliteStore(path)
    store.open()
    store.append([("keep", 1, b"k1")])
    store.append([("last", 1, b"l1"), ("last", 2, b"l2")], snapshot=[b"s"])
    (position,) = store.snapshots()
    store.append([], deleted=["last"])  # purged at once: the newest batch is gone
    assert _count(path, "SELECT COUNT(*) FROM batches WHERE run_id = 'last'") == 0
    store.close()
    again = SqliteStore(path)
    again.open()
    again.append([("keep", 2, b"k2")])
    assert list(again.replay(after=position)) == [b"k2"]
    assert list(again.replay()) == [b"k1", b"k2"]
    again.close()


def test_closing_waits_for_reads_in_other_threads(tmp_path: Path) -> None:
    """Closing a connection another thread reads from crashes the process: close() waits."""
    store = SqliteStore(tmp_path / "hg.db")
    store.open()
    rows = [("r", seq, b"e" * 200) for seq in range(1, 2001)]
    for i in range(0, len(rows), 100):
        store.append(rows[i : i + 100])
    errors: list[BaseException] = []
    reads = 0
    started = threading.Event()

    def reader() -> None:
        nonlocal reads
        try:
            while True:
                started.set()
                assert len(store.read("r", 1, 5000)) == 2000
                reads += 1
        except StoreError as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    assert started.wait(10)
    store.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1, errors
    assert "not open" in str(errors[0]) or "closing" in str(errors[0])
