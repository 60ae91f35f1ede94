"""What clients read: a run's log as it grows (watchers), and pages of runs and of a run's
nodes.

A watcher is registered before it reads the run's history from the store, so every entry
committed after a page was read reaches its live queue: it sees every entry once, in order, with
no gap. Entries are published once durable (`Commit`); a watcher that falls behind drops its
queue and reads the store again from where it was, at its own pace, so a slow watcher costs a
bounded amount of memory. Entries are `records.LogEntry`s: the service layer turns them into the
public RunEvent.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import AsyncGenerator
from typing import NamedTuple

from .. import records
from ..core import Core, GraphError, Record, RunEnded
from ..core.graph import Node, Run
from ..journal import Row
from ..limits import LimitExceeded, Limits
from ..store import Store, StoreError

# A page of history read for a watcher holds about this many entries or bytes at most.
_WATCH_PAGE = 1000
_WATCH_PAGE_BYTES = 4 * 1024 * 1024
# Entries per message to a watcher, at most.
_WATCH_BATCH = 256
# GetRun pages: nodes per page by default and at most, and about this many bytes.
_NODE_PAGE = 1_000
_NODE_PAGE_MAX = 10_000
_NODE_PAGE_BYTES = 4 * 1024 * 1024
_RUNS_PAGE_MAX = 1_000

Entry = records.LogEntry


class _Watcher:
    """One watch's live queue (see the module's docstring)."""

    __slots__ = ("ended", "events", "max_bytes", "max_events", "overflowed", "queued_bytes", "wake")

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.events: deque[Entry] = deque()
        self.queued_bytes = 0
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.overflowed = False
        self.ended = False
        self.wake = asyncio.Event()

    def push(self, entry: Entry) -> bool:
        """Queues an entry; says whether the watcher just fell behind."""
        if self.overflowed:
            return False
        self.events.append(entry)
        self.queued_bytes += entry.size
        self.wake.set()
        if len(self.events) > self.max_events or self.queued_bytes > self.max_bytes:
            self.events.clear()
            self.queued_bytes = 0
            self.overflowed = True
            return True
        return False

    def end(self) -> None:
        self.ended = True
        self.wake.set()


class Watchers:
    """Every watch of every run."""

    def __init__(
        self,
        store: Store,
        limits: Limits,
        refused: Counter[str],
        *,
        queue_events: int,
        queue_bytes: int,
    ) -> None:
        self.store = store
        self.limits = limits
        self.refused = refused
        self.queue_events = queue_events
        self.queue_bytes = queue_bytes
        # A watch message holds at most this much (an entry larger than it goes alone).
        self.batch_bytes = min(1 << 20, limits.max_message_bytes // 4)
        self.by_run: dict[str, set[_Watcher]] = {}
        self.count = 0
        # Times a watcher fell behind and went back to reading the store.
        self.overflows = 0
        self._history_readers: asyncio.Semaphore | None = None

    def publish(self, recs: list[Record], rows: list[Row], now: float) -> None:
        """One commit's records, now durable (`rows` are their encoded forms)."""
        by_run = self.by_run
        if not by_run:
            return
        for rec, (run_id, seq, data) in zip(recs, rows, strict=True):
            queues = by_run.get(run_id)
            if queues:
                entry = Entry(run_id, seq, now, rec.decision, rec.transitions, len(data))
                for w in queues:
                    if w.push(entry):
                        self.overflows += 1

    def end_run(self, run_id: str) -> None:
        for w in self.by_run.pop(run_id, ()):
            w.end()

    def end_all(self) -> None:
        for watchers in self.by_run.values():
            for w in watchers:
                w.end()

    def _refuse(self, limit: str, message: str) -> LimitExceeded:
        self.refused[limit] += 1
        return LimitExceeded(message)

    async def watch(
        self, run_id: str, from_seq: int, follow: bool
    ) -> AsyncGenerator[list[Entry], None]:
        """Committed entries of a run from `from_seq` on, in batches, with no gap and no
        duplicate, then live ones; ends after RunEnded unless `follow`. The caller checked that
        the run exists."""
        limits = self.limits
        watchers = self.by_run.setdefault(run_id, set())
        if len(watchers) >= limits.max_watchers_per_run:
            raise self._refuse(
                "max_watchers_per_run",
                f"the run has {len(watchers)} watchers, the limit max_watchers_per_run",
            )
        if self.count >= limits.max_watchers:
            raise self._refuse("max_watchers", f"{self.count} watchers, the limit max_watchers")
        watcher = _Watcher(self.queue_events, self.queue_bytes)
        watchers.add(watcher)
        self.count += 1
        if self._history_readers is None:
            self._history_readers = asyncio.Semaphore(limits.max_history_readers)
        try:
            next_seq = max(from_seq, 1)
            while True:
                # History from the store, in pages bounded by bytes, a few watchers at a time
                # (each holds a page while it is sent). The watcher is registered first, so
                # every entry committed after a page was read reaches its queue.
                watcher.overflowed = False
                while True:
                    async with self._history_readers:
                        entries = await asyncio.to_thread(self._read_page, run_id, next_seq)
                        if not entries:
                            break
                    next_seq = entries[-1].seq + 1
                    ended = _cut_at_end(entries, follow)
                    for batch in _batches(entries, self.batch_bytes):
                        yield batch
                    del entries  # a page is held once while it is sent
                    if ended:
                        return
                # Then live entries, until the run ends or the watcher falls behind.
                while not watcher.overflowed:
                    if not watcher.events:
                        if watcher.ended:
                            return
                        watcher.wake.clear()
                        await watcher.wake.wait()
                        continue
                    queue = watcher.events
                    pending = [queue.popleft() for _ in range(min(len(queue), _WATCH_BATCH))]
                    if not queue:
                        watcher.queued_bytes = 0
                    entries = [e for e in pending if e.seq >= next_seq]
                    if not entries:
                        continue
                    next_seq = entries[-1].seq + 1
                    ended = _cut_at_end(entries, follow)
                    for batch in _batches(entries, self.batch_bytes):
                        yield batch
                    if ended:
                        return
                if watcher.ended and not watcher.overflowed:
                    return
        finally:
            watchers.discard(watcher)
            self.count -= 1

    def _read_page(self, run_id: str, from_seq: int) -> list[Entry]:
        """Read and decoded in a thread: a page of a large run's history is a lot of work."""
        rows = self.store.read(run_id, from_seq, _WATCH_PAGE, _WATCH_PAGE_BYTES)
        out = []
        for seq, data in rows:
            try:
                out.append(records.decode(data))
            except records.RecordError as exc:
                raise StoreError(
                    f"the event log is damaged: event {seq} of run {run_id} cannot be read "
                    f"({exc}); restore the store from a backup"
                ) from exc
        return out


def _cut_at_end(entries: list[Entry], follow: bool) -> bool:
    """Drops what follows RunEnded (unless following); says whether the run ended."""
    if follow:
        return False
    for i, entry in enumerate(entries):
        if isinstance(entry.decision, RunEnded):
            del entries[i + 1 :]
            return True
    return False


def _batches(entries: list[Entry], max_bytes: int) -> list[list[Entry]]:
    """Splits entries into messages of at most _WATCH_BATCH entries and about `max_bytes` (an
    entry larger than that goes alone)."""
    out: list[list[Entry]] = []
    batch: list[Entry] = []
    size = 0
    for entry in entries:
        n = entry.size
        if batch and (len(batch) >= _WATCH_BATCH or size + n > max_bytes):
            out.append(batch)
            batch, size = [], 0
        batch.append(entry)
        size += n
    if batch:
        out.append(batch)
    return out


# --- pages of runs and nodes -----------------------------------------------------------------


class NodePage(NamedTuple):
    """A page of a run's nodes (GetRun), `next_token` "" on the last. The run and its nodes
    are the core's own: read them before the next await."""

    run: Run
    nodes: list[Node]
    next_token: str


def page_start(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 12:
        raise GraphError(f"page_token {token[:40]!r} is not one this coordinator gave")
    return int(token)


def node_page(
    run: Run, *, with_results: bool, page_size: int, page_token: str, max_message_bytes: int
) -> NodePage:
    start = page_start(page_token)
    size = min(page_size or _NODE_PAGE, _NODE_PAGE_MAX)
    budget = min(_NODE_PAGE_BYTES, max_message_bytes // 2)
    nodes: list[Node] = []
    total = 0
    for node in itertools.islice(run.nodes.values(), start, start + size):
        cost = (len(node.result) if with_results else 0) + len(node.id) + 96
        if nodes and total + cost > budget:
            break  # a page always holds at least one node
        nodes.append(node)
        total += cost
    end = start + len(nodes)
    return NodePage(run, nodes, str(end) if end < len(run.nodes) else "")


def run_page(core: Core, limit: int, page_token: str) -> tuple[list[Run], str]:
    """Newest first."""
    start = page_start(page_token)
    size = min(limit or 100, _RUNS_PAGE_MAX)
    runs = core.runs
    # Runs are kept in the order they were created: newest first is the reverse.
    page = list(itertools.islice(reversed(runs.values()), start, start + size))
    end = start + len(page)
    return page, (str(end) if end < len(runs) else "")


__all__ = ["NodePage", "Watchers", "node_page", "page_start", "run_page"]
