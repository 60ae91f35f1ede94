"""The `memory` store: nothing survives the process. For tests, benchmarks and throwaway runs.

It keeps the store contract the way `sqlite` does (positions, the newest two snapshots,
tombstones until every kept snapshot is newer), except that a deleted run's events go at once
and that nothing is locked: one MemoryStore belongs to one process, and a second `open` of it
is a restart of the same coordinator. A log position is the number of events appended before.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from .base import Row, StoreError

# What one event costs beside its bytes, roughly (list slots, the seq int): for size_bytes.
_EVENT_OVERHEAD = 64


class MemoryStore:
    durable = False

    def __init__(self) -> None:
        # The log, one slot per event ever appended (None once its run was deleted), and the
        # run of each slot.
        self._log: list[bytes | None] = []
        self._log_runs: list[str] = []
        self._runs: dict[str, tuple[list[int], list[bytes]]] = {}
        self._epoch = 0
        self._snapshots: dict[int, list[bytes]] = {}
        self._tombstones: dict[str, int] = {}

    def open(self) -> int:
        self._epoch += 1
        return self._epoch

    def append(
        self,
        rows: Sequence[Row],
        snapshot: Sequence[bytes] | None = None,
        deleted: Sequence[str] = (),
    ) -> None:
        if isinstance(snapshot, bytes):  # one chunk
            snapshot = [snapshot]
        chunks = None if snapshot is None else list(snapshot)
        runs, log, log_runs = self._runs, self._log, self._log_runs
        start = len(log)
        for run_id, seq, data in rows:
            entry = runs.get(run_id)
            if entry is None:
                entry = runs[run_id] = ([], [])
            elif entry[0][-1] >= seq:
                self._undo(rows, len(log) - start)
                raise StoreError(f"event {run_id}/{seq} is already in the log")
            entry[0].append(seq)
            entry[1].append(data)
            log.append(data)
            log_runs.append(run_id)
        position = len(log)

        if deleted:
            gone = set(deleted)
            for run_id in gone:
                self._tombstones[run_id] = position
                runs.pop(run_id, None)
            for i, run_id in enumerate(log_runs):
                if run_id in gone:
                    log[i] = None
        if chunks is not None:
            self._snapshots[position] = chunks
            for old in sorted(self._snapshots, reverse=True)[2:]:
                del self._snapshots[old]
        if (chunks is not None or deleted) and self._snapshots:
            oldest = min(self._snapshots)
            for run_id in [r for r, at in self._tombstones.items() if at < oldest]:
                del self._tombstones[run_id]

    def _undo(self, rows: Sequence[Row], added: int) -> None:
        """Takes back the first `added` rows of a failed append."""
        for run_id, _, _ in reversed(rows[:added]):
            seqs, datas = self._runs[run_id]
            seqs.pop()
            datas.pop()
            self._log.pop()
            self._log_runs.pop()
        # Runs met first in this append were created here: they go again.
        for run_id in {r for r, _, _ in rows[: added + 1]}:
            if not self._runs[run_id][0]:
                del self._runs[run_id]

    def snapshots(self) -> list[int]:
        return sorted(self._snapshots, reverse=True)

    def load_snapshot(self, position: int) -> list[bytes]:
        chunks = self._snapshots.get(position)
        if chunks is None:
            raise StoreError(f"there is no snapshot at log position {position}")
        return list(chunks)

    def deleted_runs(self, since: int = 0) -> set[str]:
        return {run_id for run_id, at in self._tombstones.items() if at >= since}

    def replay(self, after: int = 0) -> Iterator[bytes]:
        return (data for data in self._log[after:] if data is not None)

    def read(
        self, run_id: str, from_seq: int, limit: int, max_bytes: int = 0
    ) -> list[tuple[int, bytes]]:
        entry = self._runs.get(run_id)
        if entry is None:
            return []
        seqs, datas = entry
        start = bisect.bisect_left(seqs, from_seq)
        out = list(zip(seqs[start : start + limit], datas[start : start + limit], strict=True))
        if max_bytes > 0:
            size = 0
            for i, (_, data) in enumerate(out):
                size += len(data)
                if size >= max_bytes:
                    return out[: i + 1]
        return out

    def size_bytes(self) -> int:
        events = sum(
            sum(map(len, datas)) + len(datas) * _EVENT_OVERHEAD for _, datas in self._runs.values()
        )
        slots = len(self._log) * 16
        return events + slots + sum(len(c) for chunks in self._snapshots.values() for c in chunks)

    def close(self) -> None:
        pass
