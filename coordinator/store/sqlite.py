"""The embedded default store: one SQLite file in WAL mode.

Durability: `synchronous=NORMAL` in WAL mode makes every committed transaction survive a kill of
the process (the OS has the pages); a power cut may lose the last transactions, never corrupt
the file. Set `HIVEGRID_SQLITE_SYNC=FULL` to fsync every commit and survive power cuts too.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from .base import SCHEMA_VERSION, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_run_seq ON events (run_id, seq);
CREATE TABLE IF NOT EXISTS snapshots (position INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""


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

    def append(self, rows: list[tuple[str, int, bytes]], snapshot: bytes | None = None) -> None:
        conn = self._write
        assert conn is not None, "open() first"
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events (run_id, seq, data) VALUES (?, ?, ?)", rows)
            if snapshot is not None:
                (position,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
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
        cur = conn.execute("SELECT data FROM events WHERE id > ? ORDER BY id", (after,))
        while True:
            rows = cur.fetchmany(4096)
            if not rows:
                return
            for (data,) in rows:
                yield data

    def read(self, run_id: str, from_seq: int, limit: int) -> list[tuple[int, bytes]]:
        conn = self._reader()
        return conn.execute(
            "SELECT seq, data FROM events WHERE run_id=? AND seq>=? ORDER BY seq LIMIT ?",
            (run_id, from_seq, limit),
        ).fetchall()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        if self._write is not None:
            self._write.close()
            self._write = None


__all__ = ["SqliteStore"]
