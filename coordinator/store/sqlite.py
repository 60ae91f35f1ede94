"""The embedded default store: one SQLite file in WAL mode.

Durability: `synchronous=NORMAL` in WAL mode makes every committed transaction survive a kill of
the process (the OS has the pages); a power cut may lose the last transactions, never corrupt
the file. Set `HIVEGRID_SQLITE_SYNC=FULL` to fsync every commit and survive power cuts too.

Layout (schema 2): one row per run per commit, holding that commit's events of the run as an
`EventBatch` with the seq range it covers. Schema 1 had a row per event, which cost more than the
events did (1.7 us a row); a schema-1 file is migrated in place when first opened.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf.message import DecodeError

from hivegrid.storage.v1.storage_pb2 import EventBatch

from .base import SCHEMA_VERSION, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_run_seq ON batches (run_id, first_seq);
CREATE TABLE IF NOT EXISTS snapshots (position INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""

# Schema 1 -> 2: every event row becomes a batch of one and keeps its id (snapshot positions
# are ids).
_MIGRATE_FROM_1 = (
    "INSERT INTO batches (id, run_id, first_seq, last_seq, data) "
    "SELECT id, run_id, seq, seq, hivegrid_batch_of_one(data) FROM events ORDER BY id",
    "DROP TABLE events",
    "UPDATE meta SET value='2' WHERE key='schema_version'",
)


class SqliteStore:
    durable = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._write: sqlite3.Connection | None = None
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            sync = os.environ.get("HIVEGRID_SQLITE_SYNC", "NORMAL").upper()
            if sync not in ("NORMAL", "FULL"):
                raise StoreError(f"HIVEGRID_SQLITE_SYNC must be NORMAL or FULL, not {sync!r}")
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        return conn

    def open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._write = self._connect()
        try:
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) == 1:
                self._migrate_from_1(conn)
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer Hivegrid (store schema {row[0]}, this "
                    f"version reads up to {SCHEMA_VERSION}); upgrade Hivegrid or use another store"
                )
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            epoch = int(row[0]) + 1 if row else 1
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(epoch),))
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the SQLite store {self.path} is damaged or unreadable: {exc}"
            ) from exc
        return epoch

    @staticmethod
    def _migrate_from_1(conn: sqlite3.Connection) -> None:
        def batch_of_one(data: bytes) -> bytes:
            return EventBatch(events=[data]).SerializeToString()

        conn.create_function("hivegrid_batch_of_one", 1, batch_of_one, deterministic=True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATE_FROM_1:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def append(self, rows: list[tuple[str, int, bytes]], snapshot: bytes | None = None) -> None:
        conn = self._write
        assert conn is not None, "open() first"
        # Consecutive events of one run share a batch, so the log keeps the append order.
        batches: list[tuple[str, int, int, bytes]] = []
        run_id, first, last, events = "", 0, 0, []
        for rid, seq, data in rows:
            if rid == run_id and seq == last + 1:
                events.append(data)
                last = seq
                continue
            if events:
                batches.append((run_id, first, last, EventBatch(events=events).SerializeToString()))
            run_id, first, last, events = rid, seq, seq, [data]
        if events:
            batches.append((run_id, first, last, EventBatch(events=events).SerializeToString()))
        try:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO batches (run_id, first_seq, last_seq, data) VALUES (?, ?, ?, ?)",
                batches,
            )
            if snapshot is not None:
                (position,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()
                # Only the newest snapshot is ever read: keep one.
                conn.execute("DELETE FROM snapshots")
                conn.execute("INSERT INTO snapshots VALUES (?, ?)", (position, snapshot))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
                raise StoreError(f"the disk holding {self.path} is full: {exc}") from exc
            raise StoreError(f"cannot write to the SQLite store {self.path}: {exc}") from exc

    def load_snapshot(self) -> tuple[int, bytes] | None:
        row = (
            self._reader()
            .execute("SELECT position, data FROM snapshots ORDER BY position DESC LIMIT 1")
            .fetchone()
        )
        return (int(row[0]), bytes(row[1])) if row else None

    def replay(self, after: int = 0) -> Iterator[bytes]:
        conn = self._reader()
        cur = conn.execute("SELECT id, data FROM batches WHERE id > ? ORDER BY id", (after,))
        while True:
            rows = cur.fetchmany(256)
            if not rows:
                return
            for position, data in rows:
                yield from _events(data, position)

    def read(self, run_id: str, from_seq: int, limit: int) -> list[tuple[int, bytes]]:
        conn = self._reader()
        cur = conn.execute(
            "SELECT first_seq, data FROM batches WHERE run_id=? AND last_seq>=? ORDER BY first_seq",
            (run_id, from_seq),
        )
        out: list[tuple[int, bytes]] = []
        for first, data in cur:
            events = _events(data)
            for i in range(max(0, from_seq - first), len(events)):
                out.append((first + i, events[i]))
                if len(out) == limit:
                    return out
        return out

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        if self._write is not None:
            self._write.close()
            self._write = None


def _events(data: bytes, position: int | None = None) -> Sequence[bytes]:
    try:
        return EventBatch.FromString(data).events
    except DecodeError as exc:
        where = "a batch" if position is None else f"the batch at log position {position}"
        raise StoreError(
            f"the event log is damaged: {where} cannot be read ({exc}); restore the store from "
            "a backup, or move it aside to start empty"
        ) from exc


__all__ = ["SqliteStore"]
