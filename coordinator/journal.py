"""Group commit of the event log.

One writer thread owns the store's write connection. `append` never blocks the event loop: when
no flush is in flight the rows go to the writer at once; while one is in flight they gather, and
the next flush takes all of them in one transaction. Callbacks registered with `after_commit` run
on the event loop once everything appended before them is durable: that is where acks go out.

A write that fails (a full disk, a store that went away) is retried, the same rows in the same
order, every `retry_s`, until it succeeds: meanwhile nothing is acknowledged, `check()` raises
(so client calls answer UNAVAILABLE) and `on_health(False)` has told the server to say
NOT_SERVING. Once a retry commits, the callbacks that waited run in order and `on_health(True)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .store import Store, StoreError

log = logging.getLogger("hivegrid.journal")

Row = tuple[str, int, bytes]


class _Write:
    __slots__ = ("callbacks", "deleted", "rows", "snapshot")

    def __init__(
        self,
        rows: list[Row],
        callbacks: list[Callable[[], None]],
        snapshot: Sequence[bytes] | None,
        deleted: list[str],
    ) -> None:
        self.rows = rows
        self.callbacks = callbacks
        self.snapshot = snapshot
        self.deleted = deleted


class Journal:
    def __init__(
        self,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        *,
        on_health: Callable[[bool], None] | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self._store = store
        self._loop = loop
        self._durable = bool(getattr(store, "durable", True))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hivegrid-journal")
        self._rows: list[Row] = []
        self._callbacks: list[Callable[[], None]] = []
        self._deleted: list[str] = []
        # (how many of `_rows` it covers, the snapshot's chunks): written with those rows.
        self._snapshot: tuple[int, Sequence[bytes]] | None = None
        self._in_flight = False
        # The write that failed, retried until it commits.
        self._failed: _Write | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_health = on_health or (lambda serving: None)
        self.retry_s = retry_s
        # Set while a write fails: nothing more is acknowledged (see `check`).
        self.error: StoreError | None = None
        self.committed_batches = 0

    def append(self, rows: list[Row]) -> None:
        self._rows.extend(rows)
        self._kick()

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        self._kick()

    def snapshot(self, chunks: Sequence[bytes]) -> None:
        """Writes a snapshot (its chunks) covering everything appended so far."""
        self._snapshot = (len(self._rows), chunks)
        self._kick()

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Has the store forget these (ended, already removed from the core) runs."""
        self._deleted.extend(run_ids)
        self._kick()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    async def wait_idle(self) -> None:
        while (self._in_flight or self._rows or self._callbacks) and self.error is None:
            self._idle.clear()
            await self._idle.wait()

    def close(self) -> None:
        self._closed = True
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._executor.shutdown(wait=True)

    def abandon(self) -> None:
        """Drops everything not yet written, as a killed process would (tests only)."""
        self._rows, self._callbacks, self._deleted, self._snapshot = [], [], [], None
        self._failed = None
        self.close()

    def _kick(self) -> None:
        if self._in_flight or self._closed:
            return
        if self._failed is not None:
            return  # the retry timer resubmits it, then the rest
        rows, callbacks, deleted = self._rows, self._callbacks, self._deleted
        if self._snapshot is not None:
            cut, snapshot = self._snapshot
            self._snapshot = None
            rows, self._rows = rows[:cut], rows[cut:]
            self._callbacks, self._deleted = [], []
            self._submit(_Write(rows, callbacks, snapshot, deleted))
            return
        if not rows and not deleted:
            if callbacks:
                self._callbacks = []
                for cb in callbacks:
                    cb()
            self._idle.set()
            return
        self._rows, self._callbacks, self._deleted = [], [], []
        self._submit(_Write(rows, callbacks, None, deleted))

    def _submit(self, write: _Write) -> None:
        if not self._durable:
            try:
                self._store.append(write.rows, write.snapshot, write.deleted)
            except Exception as exc:
                self._fail(write, exc)
                return
            self._committed(write)
            return
        self._in_flight = True
        self._idle.clear()
        future = self._executor.submit(
            self._store.append, write.rows, write.snapshot, write.deleted
        )
        future.add_done_callback(lambda f: self._loop.call_soon_threadsafe(self._done, f, write))

    def _done(self, future: Future[None], write: _Write) -> None:
        self._in_flight = False
        exc = future.exception()
        if exc is not None:
            self._fail(write, exc)
            return
        self._committed(write)

    def _committed(self, write: _Write) -> None:
        self.committed_batches += 1
        if self.error is not None:
            log.warning("the event log can be written again; carrying on")
            self.error = None
            self._failed = None
            self._on_health(True)
        for cb in write.callbacks:
            cb()
        if self._rows or self._callbacks or self._deleted or self._snapshot:
            self._kick()
        else:
            self._idle.set()

    def _fail(self, write: _Write, exc: BaseException) -> None:
        first = self.error is None
        self.error = (
            exc if isinstance(exc, StoreError) else StoreError(f"event log write failed: {exc}")
        )
        self._failed = write
        if first:
            log.error(
                "the event log cannot be written; acknowledging nothing, retrying every %g s: %s",
                self.retry_s,
                self.error,
            )
            self._on_health(False)
        self._idle.set()
        if not self._closed:
            self._retry_timer = self._loop.call_later(self.retry_s, self._retry)

    def _retry(self) -> None:
        self._retry_timer = None
        write, self._failed = self._failed, None
        if write is None or self._closed:
            return
        self._submit(write)
