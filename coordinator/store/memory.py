"""The `memory` store: nothing survives the process. For tests, benchmarks and throwaway runs."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from .base import StoreError


class MemoryStore:
    durable = False

    def __init__(self) -> None:
        self._log: list[bytes] = []
        self._runs: dict[str, tuple[list[int], list[bytes]]] = {}
        self._epoch = 0
        self._snapshot: tuple[int, bytes] | None = None

    def open(self) -> int:
        self._epoch += 1
        return self._epoch

    def append(self, rows: list[tuple[str, int, bytes]], snapshot: bytes | None = None) -> None:
        runs = self._runs
        for run_id, seq, _ in rows:
            entry = runs.get(run_id)
            if entry is not None and entry[0] and entry[0][-1] >= seq:
                raise StoreError(f"event {run_id}/{seq} is already in the log")
        for run_id, seq, data in rows:
            self._log.append(data)
            entry = runs.get(run_id)
            if entry is None:
                entry = runs[run_id] = ([], [])
            entry[0].append(seq)
            entry[1].append(data)

        if snapshot is not None:
            self._snapshot = (len(self._log), snapshot)

    def load_snapshot(self) -> tuple[int, bytes] | None:
        return self._snapshot

    def replay(self, after: int = 0) -> Iterator[bytes]:
        return iter(self._log[after:])

    def read(self, run_id: str, from_seq: int, limit: int) -> list[tuple[int, bytes]]:
        entry = self._runs.get(run_id)
        if entry is None:
            return []
        seqs, datas = entry
        start = bisect.bisect_left(seqs, from_seq)
        return list(zip(seqs[start : start + limit], datas[start : start + limit], strict=True))

    def close(self) -> None:
        pass
