"""The event log's one small interface. A store keeps opaque event bytes per run in append order;
it never parses them. Every store passes tests/store (the store contract).

Log positions are opaque integers that only grow: `snapshots()` names snapshots by the position
they cover, and `replay(after=position)` carries on from there. Positions of one store mean
nothing to another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

# Bumped when the layout, or the format of what the coordinator keeps in it, changes
# incompatibly; a newer file is refused, never misread. 4: log records are LogRecords.
SCHEMA_VERSION = 4

Row = tuple[str, int, bytes]


class StoreError(RuntimeError):
    """The store cannot be used (corrupt, from a newer version, out of space, in use by another
    coordinator). The message says what to do."""


class Store(Protocol):
    def open(self) -> int:
        """Prepares the store and returns this start's lease epoch (greater than every earlier
        start's), so that leases never repeat across restarts. A store that can be shared
        (SQLite) is also locked here, until `close`: a second opener gets a StoreError naming
        the holder."""

    def append(
        self,
        rows: Sequence[Row],
        snapshot: Sequence[bytes] | None = None,
        deleted: Sequence[str] = (),
    ) -> None:
        """Durably appends (run_id, seq, event) rows in one transaction, all or nothing.

        With them, in the same transaction:
        - `snapshot`, if given: a snapshot covering every event up to the last of these rows,
          as a sequence of opaque chunks (each of bounded size). The newest two are kept.
        - `deleted`: run ids to forget. Every event of those runs written so far (these rows
          included) is gone from `replay` and `read` at once; the store purges the rows
          themselves a bounded amount per later append. A run id may be used again after it
          was deleted: the new run's events are kept as usual (the old ones stay gone).

        Raises StoreError and writes nothing if the store cannot take the rows (out of space,
        a duplicate (run_id, seq), or another coordinator opened the store since: then every
        later append fails too). After a failure the same call may simply be retried.
        Blocking: the runtime calls it from its writer thread."""

    def snapshots(self) -> list[int]:
        """The log positions of the kept snapshots, newest first (at most two)."""

    def load_snapshot(self, position: int) -> list[bytes]:
        """The chunks of the snapshot at `position`, in order. Raises StoreError if any of them
        is missing or damaged (load an older snapshot, or replay the whole log, instead)."""

    def deleted_runs(self, since: int = 0) -> set[str]:
        """Runs deleted at log position `since` or later. A snapshot at position P may still
        hold runs deleted after it: skip `deleted_runs(since=P)` when loading it (the default,
        every remembered deletion, is the same unless a deleted run id was used again). A
        deletion is forgotten once its rows are purged and every kept snapshot is newer."""

    def replay(self, after: int = 0) -> Iterator[bytes]:
        """Every event past log position `after`, in append order (deleted runs left out)."""

    def read(
        self, run_id: str, from_seq: int, limit: int, max_bytes: int = 0
    ) -> list[tuple[int, bytes]]:
        """Up to `limit` events of one run with seq >= from_seq, in order; [] for an unknown or
        deleted run. With `max_bytes` > 0, stops once the events returned add up to that many
        bytes, but returns at least one event if there is one."""

    def size_bytes(self) -> int:
        """About how many bytes the store takes (on disk, or in memory): for metrics."""

    def close(self) -> None:
        """Releases everything the store holds (connections, the lock). Idempotent. After a
        clean close of a SQLite store its main file alone holds everything."""
