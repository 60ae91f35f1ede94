"""Group commit of the event log.

One writer thread owns the store's write connection. `append` never blocks the event loop: when
no flush is in flight the rows go to the writer at once; while one is in flight they gather, and
the next flush takes all of them in one transaction. Callbacks registered with `after_commit` run
on the event loop once everything appended before them is durable: that is where acks go out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .store import Store, StoreError

log = logging.getLogger("hivegrid.journal")

Row = tuple[str, int, bytes]


class Journal:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._durable = bool(getattr(store, "durable", True))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hivegrid-journal")
        self._rows: list[Row] = []
        self._callbacks: list[Callable[[], None]] = []
        # (how many of `_rows` it covers, the snapshot): written with those rows.
        self._snapshot: tuple[int, bytes] | None = None
        self._in_flight = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Set once a write failed: nothing more is acknowledged (see `check`).
        self.error: StoreError | None = None
        self.committed_batches = 0

    def append(self, rows: list[Row]) -> None:
        self._rows.extend(rows)
        self._kick()

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        self._kick()

    def snapshot(self, data: bytes) -> None:
        """Writes `data` as a snapshot covering everything appended so far."""
        self._snapshot = (len(self._rows), data)
        self._kick()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    async def wait_idle(self) -> None:
        while (self._in_flight or self._rows or self._callbacks) and self.error is None:
            self._idle.clear()
            await self._idle.wait()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _kick(self) -> None:
        if self._in_flight or self.error is not None:
            return
        rows, callbacks = self._rows, self._callbacks
        snapshot = None
        if self._snapshot is not None:
            cut, snapshot = self._snapshot
            self._snapshot = None
            rows, self._rows = rows[:cut], rows[cut:]
            self._callbacks = []
            self._submit(rows, callbacks, snapshot)
            return
        if not rows:
            if callbacks:
                self._callbacks = []
                for cb in callbacks:
                    cb()
            self._idle.set()
            return
        self._rows, self._callbacks = [], []
        self._submit(rows, callbacks, None)

    def _submit(
        self, rows: list[Row], callbacks: list[Callable[[], None]], snapshot: bytes | None
    ) -> None:
        if not self._durable:
            self._store.append(rows, snapshot)
            self.committed_batches += 1
            for cb in callbacks:
                cb()
            if self._rows or self._callbacks:
                self._kick()
            else:
                self._idle.set()
            return
        self._in_flight = True
        self._idle.clear()
        future = self._executor.submit(self._store.append, rows, snapshot)
        future.add_done_callback(
            lambda f: self._loop.call_soon_threadsafe(self._done, f, callbacks)
        )

    def _done(self, future: Future[None], callbacks: list[Callable[[], None]]) -> None:
        self._in_flight = False
        exc = future.exception()
        if exc is not None:
            self.error = (
                exc if isinstance(exc, StoreError) else StoreError(f"event log write failed: {exc}")
            )
            log.error("the event log cannot be written; refusing new work: %s", self.error)
            self._idle.set()
            return
        self.committed_batches += 1
        for cb in callbacks:
            cb()
        self._kick()
