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

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    async def wait_idle(self) -> None:
        while self._in_flight or self._rows or self._callbacks:
            self._idle.clear()
            await self._idle.wait()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _kick(self) -> None:
        if self._in_flight or self.error is not None:
            return
        rows, callbacks = self._rows, self._callbacks
        if not rows:
            if callbacks:
                self._callbacks = []
                for cb in callbacks:
                    cb()
            self._idle.set()
            return
        self._rows, self._callbacks = [], []
        if not self._durable:
            self._store.append(rows)
            self.committed_batches += 1
            for cb in callbacks:
                cb()
            self._idle.set()
            return
        self._in_flight = True
        self._idle.clear()
        future = self._executor.submit(self._store.append, rows)
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
