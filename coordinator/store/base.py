"""The event log's one small interface. A store keeps opaque event bytes per run in append order;
it never parses them. Every store passes tests/store (the store contract)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

# Bumped when the layout changes incompatibly; a newer file is refused, never misread.
SCHEMA_VERSION = 2


class StoreError(RuntimeError):
    """The store cannot be used (corrupt, from a newer version, out of space). Says what to do."""


class Store(Protocol):
    def open(self) -> int:
        """Prepares the store and returns this start's lease epoch (greater than every earlier
        start's), so that leases never repeat across restarts."""

    def append(self, rows: list[tuple[str, int, bytes]], snapshot: bytes | None = None) -> None:
        """Durably appends (run_id, seq, event) rows in one transaction, and with them, if
        given, a snapshot covering every event up to the last of these rows. Blocking: the
        runtime calls it from its writer thread."""

    def load_snapshot(self) -> tuple[int, bytes] | None:
        """The newest snapshot and the log position it covers, if any."""

    def replay(self, after: int = 0) -> Iterator[bytes]:
        """Every event past log position `after`, in append order."""

    def read(self, run_id: str, from_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` events of one run with seq >= from_seq, in order."""

    def close(self) -> None: ...
