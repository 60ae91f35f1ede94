"""The embedded default store: one SQLite file in WAL mode.

Durability: `synchronous=NORMAL` in WAL mode makes every committed transaction survive a kill of
the process (the OS has the pages); a power cut may lose the last transactions, never corrupt
the file. Set `HIVEGRID_SQLITE_SYNC=FULL` to fsync every commit and survive power cuts too.

One coordinator at a time: `open` takes an exclusive `flock` on `<path>.lock` (released by the
kernel however the process ends), and every append checks, in its own transaction, that no
later `open` bumped the epoch (fencing, should the lock be bypassed, e.g. on a network
filesystem). A clean `close` checkpoints the WAL into the main file, so that file alone is a
complete copy; `backup` copies a live store consistently.

Layout (schema 4, the same tables as schema 3):
- `meta`: schema_version, epoch, and position (the highest log position ever used, written
  when rows are purged so that positions never repeat).
- `batches`: one row per run per commit, holding that commit's records of the run as an
  `EventBatch` with the seq range it covers; the row id is the log position. The store never
  reads the records (coordinator/records.py does).
- `snapshots` (position, chunks, bytes) and `snapshot_chunks` (position, idx, crc, data): the
  newest two snapshots, each a sequence of chunks with a CRC-32 each.
- `deleted_runs` (run_id, position, purged): tombstones. A run's batches at or before
  `position` are hidden at once and purged a bounded number per append; the tombstone goes
  once they are gone and every kept snapshot is newer than the deletion. Batches of the same
  run id after `position` belong to a new run and are visible (the old rows are purged at once
  when that happens, so the two never mix).

Schema 1 had a row per event, which cost more than the events did (1.7 us a row); schema 2 had a
single-blob snapshot; schema 3 rows held hivegrid.v1.RunEvent messages, schema 4 rows hold
hivegrid.storage.v1.LogRecord messages (and the rows a schema 3 file had, kept as they are: the
record codec reads both forms, row by row). The number keeps an older coordinator, which would
misread a LogRecord, from opening a schema 4 file. Older files are migrated in place
(1 -> 2 -> 3 -> 4) in one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sqlite3
import threading
import uuid
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.message import DecodeError

from hivegrid.storage.v1.storage_pb2 import EventBatch

from .base import SCHEMA_VERSION, Row, StoreError

log = logging.getLogger("hivegrid.store")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS batches (
      id INTEGER PRIMARY KEY,
      run_id TEXT NOT NULL,
      first_seq INTEGER NOT NULL,
      last_seq INTEGER NOT NULL,
      data BLOB NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS batches_run_seq ON batches (run_id, first_seq)",
    """CREATE TABLE IF NOT EXISTS snapshots (
      position INTEGER PRIMARY KEY,
      chunks INTEGER NOT NULL,
      bytes INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS snapshot_chunks (
      position INTEGER NOT NULL,
      idx INTEGER NOT NULL,
      crc INTEGER NOT NULL,
      data BLOB NOT NULL,
      PRIMARY KEY (position, idx)
    )""",
    """CREATE TABLE IF NOT EXISTS deleted_runs (
      run_id TEXT PRIMARY KEY,
      position INTEGER NOT NULL,
      purged INTEGER NOT NULL DEFAULT 0
    )""",
)

# Schema 1 -> 2: every event row becomes a batch of one and keeps its id (snapshot positions
# are ids). Schema 1's snapshots table is schema 2's.
_MIGRATE_FROM_1 = (
    _SCHEMA[1],
    _SCHEMA[2],
    "INSERT INTO batches (id, run_id, first_seq, last_seq, data) "
    "SELECT id, run_id, seq, seq, hivegrid_batch_of_one(data) FROM events ORDER BY id",
    "DROP TABLE events",
    "UPDATE meta SET value='2' WHERE key='schema_version'",
)

# Schema 2 -> 3: a single-blob snapshot becomes a snapshot of one chunk; tombstones are new.
_MIGRATE_FROM_2 = (
    "ALTER TABLE snapshots RENAME TO snapshots_v2",
    *_SCHEMA[3:],
    "INSERT INTO snapshot_chunks (position, idx, crc, data) "
    "SELECT position, 0, hivegrid_crc32(data), data FROM snapshots_v2",
    "INSERT INTO snapshots (position, chunks, bytes) "
    "SELECT position, 1, length(data) FROM snapshots_v2",
    "DROP TABLE snapshots_v2",
    "UPDATE meta SET value='3' WHERE key='schema_version'",
)

# Schema 3 -> 4: the record format changed, not the tables; old rows stay as they are.
_MIGRATE_FROM_3 = ("UPDATE meta SET value='4' WHERE key='schema_version'",)

_INSERT_BATCH = "INSERT INTO batches (id, run_id, first_seq, last_seq, data) VALUES (?, ?, ?, ?, ?)"
_REPLAY = (
    "SELECT b.id, b.data FROM batches b LEFT JOIN deleted_runs d ON d.run_id = b.run_id "
    "WHERE b.id > ? AND (d.position IS NULL OR b.id > d.position) ORDER BY b.id"
)
_READ = (
    "SELECT first_seq, data FROM batches WHERE run_id = ?1 AND last_seq >= ?2 "
    "AND id > COALESCE((SELECT position FROM deleted_runs WHERE run_id = ?1), 0) "
    "ORDER BY first_seq"
)
_LOAD_SNAPSHOT = (
    "SELECT s.chunks, s.bytes, c.idx, c.crc, c.data FROM snapshots s "
    "LEFT JOIN snapshot_chunks c ON c.position = s.position WHERE s.position = ? ORDER BY c.idx"
)
_PURGE = (
    "DELETE FROM batches WHERE id IN (SELECT id FROM batches WHERE run_id = ? AND id <= ? LIMIT ?)"
)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed if the block ends normally, rolled back otherwise."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _crc(data: bytes) -> int:
    return zlib.crc32(data)


class SqliteStore:
    durable = True
    # How many batch rows of deleted runs one append may purge: keeps every commit short.
    purge_batch = 2000

    def __init__(self, path: str | os.PathLike[str], *, holder: str = "") -> None:
        """`holder`: a few words about this coordinator for the lock file, shown as they are
        to a second opener, e.g. "listening on 127.0.0.1:50051"."""
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.holder = holder
        # Reads in progress (in other threads): close() waits for them, since closing a
        # connection another thread is reading from crashes the process.
        self._reads = 0
        self._reads_done = threading.Condition()
        self._closing = False
        self._write: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._epoch = 0
        # Every reader connection, with the thread it belongs to; `_local` finds the calling
        # thread's one. `_generation` changes on every open so that none outlives a close.
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self._generation = 0
        # Writer state, as committed (changed only after a COMMIT).
        self._position = 0
        self._snapshot_positions: list[int] = []  # newest first
        self._tombstones: dict[str, int] = {}  # run id -> position of its deletion
        self._unpurged: dict[str, int] = {}  # the tombstones whose batches are not all gone

    # --- opening and closing -------------------------------------------------------------

    def _connect(self, *, reader: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                sync = os.environ.get("HIVEGRID_SQLITE_SYNC", "NORMAL").upper()
                if sync not in ("NORMAL", "FULL"):
                    raise StoreError(f"HIVEGRID_SQLITE_SYNC must be NORMAL or FULL, not {sync!r}")
                conn.execute(f"PRAGMA synchronous={sync}")
                conn.execute("PRAGMA busy_timeout=5000")
                if reader:
                    conn.execute("PRAGMA query_only=1")
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        return conn

    def open(self) -> int:
        if self._write is not None:  # already open (and locked): a new epoch all the same
            return self._bump_epoch(self._write)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.path, self.lock_path, self.holder)
        try:
            conn = self._write = self._connect()
            self._prepare(conn)
            epoch = self._bump_epoch(conn)
            self._load_state(conn)
        except BaseException:
            self.close()
            raise
        self._generation += 1
        return epoch

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Creates the tables of a new store, or migrates an older one; refuses a newer one."""
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            version = None
            if "meta" in tables:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else None
            elif tables:
                raise StoreError(
                    f"{self.path} is an SQLite database but not a Hivegrid store; use another path"
                )
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer Hivegrid (store schema {version}, this "
                    f"version reads up to {SCHEMA_VERSION}); upgrade Hivegrid or use another store"
                )
            if version == SCHEMA_VERSION:
                return
            statements: list[str] = []
            if version is None:
                if "meta" in tables:
                    raise StoreError(f"{self.path} has no schema version")
                statements += _SCHEMA
                statements.append(f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}')")
            if version == 1:
                statements += _MIGRATE_FROM_1
            if version in (1, 2):
                statements += _MIGRATE_FROM_2
            if version in (1, 2, 3):
                statements += _MIGRATE_FROM_3
            conn.create_function(
                "hivegrid_batch_of_one",
                1,
                lambda data: EventBatch(events=[data]).SerializeToString(),
                deterministic=True,
            )
            conn.create_function("hivegrid_crc32", 1, _crc, deterministic=True)
            with _immediate(conn):
                for statement in statements:
                    conn.execute(statement)
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise StoreError(
                f"the SQLite store {self.path} is damaged or unreadable: {exc}"
            ) from exc

    def _bump_epoch(self, conn: sqlite3.Connection) -> int:
        try:
            with _immediate(conn):
                row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
                epoch = int(row[0]) + 1 if row else 1
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(epoch),))
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise StoreError(
                f"the SQLite store {self.path} is damaged or unreadable: {exc}"
            ) from exc
        self._epoch = epoch
        return epoch

    def _load_state(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='position'").fetchone()
            position = int(row[0]) if row else 0
            (top,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()
            snaps = [r[0] for r in conn.execute("SELECT position FROM snapshots ORDER BY 1 DESC")]
            tombs = conn.execute("SELECT run_id, position, purged FROM deleted_runs ORDER BY 2")
            self._tombstones, self._unpurged = {}, {}
            for run_id, at, purged in tombs:
                self._tombstones[run_id] = at
                if not purged:
                    self._unpurged[run_id] = at
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise StoreError(
                f"the SQLite store {self.path} is damaged or unreadable: {exc}"
            ) from exc
        self._snapshot_positions = snaps
        self._position = max(
            position, top, max(snaps, default=0), max(self._tombstones.values(), default=0)
        )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._reads_done:
            if self._closing:
                raise StoreError(f"the store {self.path} is closing")
            self._reads += 1
        try:
            yield self._reader()
        finally:
            with self._reads_done:
                self._reads -= 1
                self._reads_done.notify_all()

    def close(self) -> None:
        with self._reads_done:
            self._closing = True
            if not self._reads_done.wait_for(lambda: self._reads == 0, timeout=30.0):
                log.warning("%s: closing with reads still in progress", self.path)
        try:
            self._close()
        finally:
            with self._reads_done:
                self._closing = False

    def _close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
            self._generation += 1
        for _, conn in readers:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        write, self._write = self._write, None
        if write is not None:
            with contextlib.suppress(sqlite3.Error):
                if write.in_transaction:
                    write.execute("ROLLBACK")
                busy, _, _ = write.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy:
                    log.warning(
                        "%s: another connection kept the WAL from being checkpointed", self.path
                    )
            with contextlib.suppress(sqlite3.Error):
                write.close()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the flock

    # --- writing -------------------------------------------------------------------------

    def append(
        self,
        rows: Sequence[Row],
        snapshot: Sequence[bytes] | None = None,
        deleted: Sequence[str] = (),
    ) -> None:
        conn = self._write
        if conn is None:
            raise StoreError(f"the store {self.path} is not open")
        if isinstance(snapshot, bytes):  # one chunk
            snapshot = [snapshot]
        # Consecutive events of one run share a batch, so the log keeps the append order.
        # Positions are given here, not by SQLite, so that purged ones are never used again.
        position = self._position
        batches: list[tuple[int, str, int, int, bytes]] = []
        run_id, first, last, events = "", 0, 0, []
        for rid, seq, data in rows:
            if rid == run_id and seq == last + 1:
                events.append(data)
                last = seq
                continue
            if events:
                position += 1
                data_ = EventBatch(events=events).SerializeToString()
                batches.append((position, run_id, first, last, data_))
            run_id, first, last, events = rid, seq, seq, [data]
        if events:
            position += 1
            batches.append(
                (position, run_id, first, last, EventBatch(events=events).SerializeToString())
            )

        tombstones, unpurged = self._tombstones, self._unpurged
        snapshots = self._snapshot_positions
        changed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Fencing: the epoch is ours unless another coordinator opened the store since.
            row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            if row is None or row[0] != str(self._epoch):
                raise StoreError(
                    f"another coordinator opened this store (epoch {row[0] if row else '?'}); "
                    "this one stops writing"
                )
            purged_any = False
            if unpurged:
                # A deleted run id used again: its old batches must go before new ones come.
                for rid in {b[1] for b in batches}.intersection(unpurged):
                    conn.execute(
                        "DELETE FROM batches WHERE run_id = ? AND id <= ?", (rid, unpurged[rid])
                    )
                    purged_any = True
                    if unpurged is self._unpurged:
                        unpurged = dict(unpurged)
                    del unpurged[rid]
                    conn.execute("UPDATE deleted_runs SET purged = 1 WHERE run_id = ?", (rid,))
            conn.executemany(_INSERT_BATCH, batches)
            if deleted:
                tombstones, unpurged = dict(tombstones), dict(unpurged)
                for rid in deleted:
                    tombstones[rid] = position
                    unpurged.pop(rid, None)  # (re)queued last: older deletions purge first
                    unpurged[rid] = position
                conn.executemany(
                    "INSERT OR REPLACE INTO deleted_runs (run_id, position, purged) "
                    "VALUES (?, ?, 0)",
                    [(rid, position) for rid in deleted],
                )
            if snapshot is not None:
                snapshots = self._write_snapshot(conn, position, snapshot)
                changed = True
            if unpurged:
                unpurged, done = self._purge(conn, unpurged)
                purged_any = True
                changed = changed or done
            if purged_any:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('position', ?)", (str(position),))
            if changed and tombstones:
                tombstones = self._forget_tombstones(conn, tombstones, unpurged, snapshots)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise StoreError(
                    f"cannot write to the SQLite store {self.path}: {exc} (an event is already "
                    "in the log)"
                ) from exc
            if isinstance(exc, sqlite3.Error):
                if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "full" in str(exc):
                    raise StoreError(f"the disk holding {self.path} is full: {exc}") from exc
                raise StoreError(f"cannot write to the SQLite store {self.path}: {exc}") from exc
            raise
        self._position = position
        self._snapshot_positions = snapshots
        self._tombstones, self._unpurged = tombstones, unpurged

    def _write_snapshot(
        self, conn: sqlite3.Connection, position: int, chunks: Sequence[bytes]
    ) -> list[int]:
        conn.execute("DELETE FROM snapshot_chunks WHERE position = ?", (position,))
        count, size = 0, 0

        def rows() -> Iterator[tuple[int, int, int, bytes]]:
            nonlocal count, size
            for i, chunk in enumerate(chunks):
                count, size = i + 1, size + len(chunk)
                yield position, i, _crc(chunk), chunk

        conn.executemany(
            "INSERT INTO snapshot_chunks (position, idx, crc, data) VALUES (?, ?, ?, ?)", rows()
        )
        conn.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (position, count, size))
        # Keep the newest two: if the newest cannot be read, the one before it can.
        kept = sorted({position, *self._snapshot_positions}, reverse=True)[:2]
        conn.execute("DELETE FROM snapshots WHERE position < ?", (kept[-1],))
        conn.execute("DELETE FROM snapshot_chunks WHERE position < ?", (kept[-1],))
        return kept

    def _purge(
        self, conn: sqlite3.Connection, unpurged: dict[str, int]
    ) -> tuple[dict[str, int], bool]:
        """Deletes up to `purge_batch` batches of deleted runs, oldest deletion first. Returns
        the runs still to purge, and whether any run is now purged completely."""
        budget, done = self.purge_batch, []
        for rid, at in unpurged.items():
            gone = conn.execute(_PURGE, (rid, at, budget)).rowcount
            if gone >= budget:
                break
            done.append(rid)
            budget -= gone + 1  # a statement costs about as much as a row
            if budget <= 0:
                break
        if not done:
            return unpurged, False
        conn.executemany(
            "UPDATE deleted_runs SET purged = 1 WHERE run_id = ?", [(r,) for r in done]
        )
        rest = dict(unpurged)
        for rid in done:
            del rest[rid]
        return rest, True

    @staticmethod
    def _forget_tombstones(
        conn: sqlite3.Connection,
        tombstones: dict[str, int],
        unpurged: dict[str, int],
        snapshots: list[int],
    ) -> dict[str, int]:
        """Drops the tombstones no longer needed: the run's batches are gone, and every kept
        snapshot (there is one at least) is newer than the deletion, so none can hold it."""
        if not snapshots:
            return tombstones
        oldest = snapshots[-1]
        gone = [r for r, at in tombstones.items() if at < oldest and r not in unpurged]
        if not gone:
            return tombstones
        conn.executemany("DELETE FROM deleted_runs WHERE run_id = ?", [(r,) for r in gone])
        rest = dict(tombstones)
        for rid in gone:
            del rest[rid]
        return rest

    # --- reading -------------------------------------------------------------------------

    def snapshots(self) -> list[int]:
        try:
            with self._reading() as conn:
                cur = conn.execute("SELECT position FROM snapshots ORDER BY 1 DESC")
                return [int(r[0]) for r in cur]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the snapshots in {self.path} cannot be read: {exc}") from exc

    def load_snapshot(self, position: int) -> list[bytes]:
        where = f"the snapshot at log position {position} in {self.path}"
        chunks: list[bytes] = []
        try:
            # One statement, so one consistent read even while a new snapshot replaces it.
            with self._reading() as conn:
                cur = conn.execute(_LOAD_SNAPSHOT, (position,))
                count, size = -1, -1
                for n, total, idx, crc, data in cur:
                    count, size = n, total
                    if idx is None:
                        break
                    if idx != len(chunks):
                        cur.close()
                        raise StoreError(f"{where} is damaged: chunk {len(chunks)} is missing")
                    chunk = bytes(data)
                    if _crc(chunk) != crc:
                        cur.close()
                        raise StoreError(f"{where} is damaged: chunk {idx} fails its checksum")
                    chunks.append(chunk)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{where} cannot be read: {exc}") from exc
        if count < 0:
            raise StoreError(f"there is no snapshot at log position {position} in {self.path}")
        if len(chunks) != count or sum(map(len, chunks)) != size:
            raise StoreError(
                f"{where} is damaged: it has {len(chunks)} of its {count} chunks"
                if len(chunks) != count
                else f"{where} is damaged: its chunks do not add up to its size"
            )
        return chunks

    def deleted_runs(self, since: int = 0) -> set[str]:
        try:
            with self._reading() as conn:
                cur = conn.execute("SELECT run_id FROM deleted_runs WHERE position >= ?", (since,))
                return {r[0] for r in cur}
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the deleted runs in {self.path} cannot be read: {exc}") from exc

    def replay(self, after: int = 0) -> Iterator[bytes]:
        with self._reading() as conn:
            cur = conn.execute(_REPLAY, (after,))
            while True:
                rows = cur.fetchmany(256)
                if not rows:
                    return
                for position, data in rows:
                    yield from _events(data, position)

    def read(
        self, run_id: str, from_seq: int, limit: int, max_bytes: int = 0
    ) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        size = 0
        with self._reading() as conn:
            cur = conn.execute(_READ, (run_id, from_seq))
            for first, data in cur:
                events = _events(data)
                for i in range(max(0, from_seq - first), len(events)):
                    event = events[i]
                    out.append((first + i, event))
                    size += len(event)
                    if len(out) == limit or 0 < max_bytes <= size:
                        cur.close()
                        return out
        return out

    def size_bytes(self) -> int:
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def _reader(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.generation == self._generation:
            return conn
        with self._readers_lock:
            if self._write is None:
                raise StoreError(f"the store {self.path} is not open")
            # Connections of threads that ended are closed here, so that they do not pile up.
            alive = []
            for thread, c in self._readers:
                if thread.is_alive():
                    alive.append((thread, c))
                else:
                    with contextlib.suppress(sqlite3.Error):
                        c.close()
            conn = self._connect(reader=True)
            alive.append((threading.current_thread(), conn))
            self._readers = alive
            local.conn, local.generation = conn, self._generation
        return conn


def _lock(path: Path, lock_path: Path, holder: str) -> int:
    """Takes the store's exclusive lock, or says who holds it. Returns the lock file's fd."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot create the lock file {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            held_by = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
        raise StoreError(
            f"the store {path} is in use by another coordinator ({_describe(held_by)}); stop it, "
            "or use another store"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"cannot lock {lock_path}: {exc}") from exc
    info: dict[str, object] = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if holder:
        info["holder"] = holder
    line = (json.dumps(info) + "\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, line, 0)
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"cannot write the lock file {lock_path}: {exc}") from exc
    return fd


def _describe(info: bytes) -> str:
    try:
        holder = json.loads(info.decode())
        text = f"pid {int(holder['pid'])} on host {holder['hostname']}"
        if holder.get("holder"):
            text += f", {holder['holder']}"
        return f"{text}, since {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "it has not said who it is yet"


def backup(src_path: str | os.PathLike[str], dest_path: str | os.PathLike[str]) -> None:
    """Copies the store at `src_path` to the new file `dest_path`, consistently, while a
    coordinator may be writing to it (without its lock): the copy holds every transaction
    committed before the copy began. Refuses to overwrite anything."""
    src, dest = Path(src_path), Path(dest_path)
    if dest.exists() or dest.is_symlink():
        raise StoreError(f"{dest} already exists; back up to a new file")
    if not src.is_file():
        raise StoreError(f"there is no store at {src}")
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        conn = sqlite3.connect(src, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            if row is None:
                raise StoreError(f"{src} is not a Hivegrid store")
            conn.execute("VACUUM INTO ?", (str(tmp),))
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, dest)  # fails, rather than replaces, if dest appeared meanwhile
        except FileExistsError:
            raise StoreError(f"{dest} already exists; back up to a new file") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot back up {src}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"cannot back up {src} to {dest}: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _events(data: bytes, position: int | None = None) -> Sequence[bytes]:
    try:
        return EventBatch.FromString(data).events
    except DecodeError as exc:
        where = "a batch" if position is None else f"the batch at log position {position}"
        raise StoreError(
            f"the event log is damaged: {where} cannot be read ({exc}); restore the store from "
            "a backup, or move it aside to start empty"
        ) from exc


__all__ = ["SqliteStore", "backup"]
