"""The runtime: the single writer around the core, in domain types only (no wire: the service
layer decodes requests into the core's inputs and encodes what comes back).

`Runtime` is the façade the server and the services call. Servicers call it on the event loop;
each call feeds one stimulus to the core, then the outbox is carried out. The work is split by
job, one file each:

- `commit.py`: apply and commit. The outbox's records go to the journal (group committed off
  the loop); what they started (assignments, cancels, acks, watchers' entries) waits for that
  commit, in commit order. The core's timers.
- `delivery.py`: each worker stream's `Link`: its outbound queues and flow control.
- `sessions.py`: worker sessions (open, answers, progress, drain, close) and the reaper.
- `watch.py`: what clients read: watchers of a run's log, pages of runs and nodes.
- `replay.py`: recovery, the newest snapshot that loads and then the log after it.
- `retention.py`: deleting ended runs past the operator's retention.

What a peer sends is checked against the operator's limits (`coordinator/limits.py`) at the
door (the service) before it reaches the core, and what the log records is what was decided: a
result whose mutations were refused is logged as the failure it became, never as sent, so replay
never judges raw input.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from ..core import (
    AckStatus,
    Answer,
    AttemptRef,
    CancelRun,
    Core,
    MutateRun,
    Mutation,
    PreparedRun,
    ReportProgress,
    RunLimits,
    RunState,
    SubmitRun,
)
from ..core.graph import Run
from ..journal import Journal
from ..limits import DEFAULT_LIMITS, LimitExceeded, Limits, cut_error
from ..records import LogEntry
from ..store import Store
from . import replay, retention
from .commit import Commit
from .delivery import Ack, Link, WorkerHello, WorkerInfo
from .sessions import Sessions
from .watch import NodePage, Watchers, node_page, run_page

log = logging.getLogger("hivegrid.runtime")

# A watcher's live queue holds at most this many entries or bytes; past either, it drops them
# and reads the history from the store again, at its own pace (see watch.py). Read when a
# Runtime is made.
_WATCH_QUEUE_EVENTS = 10_000
_WATCH_QUEUE_BYTES = 16 * 1024 * 1024
# Graphs up to this many nodes are built on the event loop: a thread costs more than that.
_BUILD_INLINE_MAX = 2_000
# An assignment leaves this much of the message limit for framing.
_ASSIGNMENT_MARGIN = 4096


class _GcPause:
    """Pauses the cyclic GC while any holder is inside; graphs built in threads may overlap."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                gc.enable()


_GC_PAUSE = _GcPause()


class _RandomLeases:
    """Leases as unguessable 64-bit numbers, drawn from the OS in blocks (one syscall per 512
    dispatches). A lease is the credential for one attempt: a peer that could guess another's
    would answer for it."""

    def __init__(self) -> None:
        self._block: list[int] = []

    def __call__(self) -> int:
        if not self._block:
            data = os.urandom(8 * 512)
            self._block = [int.from_bytes(data[i : i + 8], "little") for i in range(0, 4096, 8)]
        return self._block.pop()


class Submission(Protocol):
    """A SubmitRun as it arrives: its size and request id at once, its graph decoded on demand
    (in a thread, for a large one). `decode` checks the request against the operator's limits
    and raises LimitExceeded or GraphError; its run id may be empty (the runtime draws one), its
    seed is drawn by the runtime."""

    @property
    def size(self) -> int: ...

    @property
    def request_id(self) -> str: ...

    def decode(self) -> SubmitRun: ...


class Runtime:
    def __init__(
        self,
        store: Store,
        *,
        heartbeat_interval_s: float = 2.0,
        session_timeout_s: float = 6.0,
        limits: Limits = DEFAULT_LIMITS,
        snapshot_every: int = 200_000,
        clock: Callable[[], float] = time.time,
        on_health: Callable[[bool], None] | None = None,
        store_retry_s: float = 1.0,
    ) -> None:
        self.store = store
        self.heartbeat_interval_s = heartbeat_interval_s
        self.session_timeout_s = session_timeout_s
        self.limits = limits
        self.run_limits = RunLimits(max_nodes=limits.max_nodes_per_run)
        self.clock = clock
        self.on_health = on_health
        self.store_retry_s = store_retry_s
        self.snapshot_every = snapshot_every
        self._epoch = 0
        self.links: dict[str, Link] = {}
        # What the coordinator refused or dropped, by limit (for operators and tests).
        self.refused: Counter[str] = Counter()
        self.watchers = Watchers(
            store,
            limits,
            self.refused,
            queue_events=_WATCH_QUEUE_EVENTS,
            queue_bytes=_WATCH_QUEUE_BYTES,
        )
        # Made by `start`, once the core is recovered.
        self.core: Core
        self.journal: Journal
        self._commit: Commit
        self._sessions: Sessions
        self._tasks: list[asyncio.Task[None]] = []
        self._building = 0
        self._stopping = False
        self.replayed_events = 0

    def _new_core(self) -> Core:
        return Core(
            lease_epoch=self._epoch,
            default_limits=self.run_limits,
            new_lease=_RandomLeases(),
            max_assignment_bytes=max(1024, self.limits.max_message_bytes - _ASSIGNMENT_MARGIN),
        )

    @property
    def snapshots_taken(self) -> int:
        return self._commit.snapshots_taken

    @property
    def watcher_overflows(self) -> int:
        """Times a watcher fell behind and went back to reading the store."""
        return self.watchers.overflows

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._epoch = await asyncio.to_thread(self.store.open)
        started = time.perf_counter()
        # As in `submit`: rebuilding graphs creates nothing collectable, and collections in
        # the middle would rescan everything built so far (1.7x slower at 100,000 nodes).
        with _GC_PAUSE:
            core, count = await asyncio.to_thread(
                replay.recover, self.store, self._new_core, now=self.clock()
            )
        self.core = core
        self.journal = Journal(
            self.store, loop, on_health=self.on_health, retry_s=self.store_retry_s
        )
        self._commit = Commit(
            core,
            self.journal,
            self.links,
            publish=self.watchers.publish,
            clock=self.clock,
            snapshot_every=self.snapshot_every,
        )
        self._sessions = Sessions(
            core,
            self._commit,
            self.links,
            self.limits,
            self.refused,
            clock=self.clock,
            heartbeat_interval_s=self.heartbeat_interval_s,
            session_timeout_s=self.session_timeout_s,
        )
        if count:
            core.expire_all_leases(reason="coordinator restarted", now=self.clock())
            log.info("replayed %d events in %.2f s", count, time.perf_counter() - started)
        self.replayed_events = count
        self._commit.flush()
        self._tasks = [
            # Through the façade: whoever wraps close_session sees the reaper's closes too.
            asyncio.create_task(
                self._sessions.reap(lambda link, reason: self.close_session(link, reason)),
                name="hivegrid-reaper",
            ),
            asyncio.create_task(retention.retain(self.apply_retention), name="hivegrid-retention"),
        ]

    async def stop_sessions(self) -> None:
        """Ends every worker stream (they reconnect to the next coordinator). Nothing more is
        dispatched: a stream closing must not hand its attempts to one that is about to."""
        self._stop_dispatching()
        for link in list(self.links.values()):
            link.closed = link.closed or "coordinator shutting down"
            link.wake.set()
        await asyncio.sleep(0)

    def _stop_dispatching(self) -> None:
        self._stopping = True
        with contextlib.suppress(AttributeError):  # never started
            self._commit.stopping = True

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(AttributeError):
            self._commit.cancel_timer()

    async def stop(self) -> None:
        self._stop_dispatching()
        await self._stop_tasks()
        for link in list(self.links.values()):
            link.closed = link.closed or "coordinator shutting down"
            link.wake.set()
        if self._commit.since_snapshot and self.journal.error is None:
            self._commit.take_snapshot()
        await self.journal.wait_idle()
        self.journal.close()
        self.watchers.end_all()
        self.store.close()

    def freeze(self) -> None:
        """From now on nothing is written, dispatched or acked: the first step of `abandon`,
        taken before the streams are torn down (their teardown must not reach the log)."""
        self._stop_dispatching()
        self.journal.abandon()

    async def abandon(self) -> None:
        """Stops the way a killed process does: whatever is not committed yet is lost, no
        snapshot is taken. For crash tests in one process."""
        self.freeze()
        await self._stop_tasks()
        for link in list(self.links.values()):
            link.closed = link.closed or "coordinator killed"
            link.wake.set()
        self.watchers.end_all()
        self.store.close()

    def take_snapshot(self) -> None:
        self._commit.take_snapshot()

    # --- client API ----------------------------------------------------------------------

    async def durable(self) -> None:
        """Returns once everything appended so far is committed (raises if it cannot be)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        self.journal.after_commit(resolve)
        while not done.done():
            self.journal.check()
            await asyncio.wait([done], timeout=1.0)
        self.journal.check()

    def _refuse(self, limit: str, message: str) -> LimitExceeded:
        self.refused[limit] += 1
        return LimitExceeded(message)

    async def submit(self, sub: Submission) -> str:
        """Starts a run; returns its id. Raises LimitExceeded, GraphError or RunExists."""
        self.journal.check()
        core = self.core
        limits = self.limits
        if sub.request_id:
            existing = core.run_for_request(sub.request_id)
            if existing is not None:
                return existing
        held = sum(len(run.nodes) for run in core.runs.values())
        if held + sub.size > limits.max_nodes_held:
            raise self._refuse(
                "max_nodes_held",
                f"the coordinator holds {held} nodes; {sub.size} more is over the limit "
                f"max_nodes_held ({limits.max_nodes_held}): wait for runs to end or delete some",
            )
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        now = self.clock()

        def build() -> PreparedRun:
            # Building a large graph allocates hundreds of thousands of objects and nothing
            # collectable: collections in the middle would only rescan them (2.7x slower at
            # 100,000 nodes).
            with _GC_PAUSE:
                cmd = sub.decode()
                run_id = cmd.run_id or "r-" + os.urandom(6).hex()
                return core.prepare_run(replace(cmd, run_id=run_id, seed=seed), now=now)

        # A large graph is checked and built in a thread, so that the event loop keeps serving
        # every other run and every worker meanwhile (0.39 s per 100,000 nodes).
        if sub.size > _BUILD_INLINE_MAX:
            if self._building >= limits.max_concurrent_submits:
                raise self._refuse(
                    "max_concurrent_submits",
                    f"{self._building} large submissions are being built, the limit "
                    f"max_concurrent_submits ({limits.max_concurrent_submits}); try again",
                )
            self._building += 1
            try:
                prepared = await asyncio.to_thread(build)
            finally:
                self._building -= 1
            self.journal.check()
        else:
            prepared = build()
        if sub.request_id:  # the same request may have been built twice at once
            existing = core.run_for_request(sub.request_id)
            if existing is not None:
                return existing
        core.install_run(prepared, now=self.clock())
        self._commit.flush()
        return prepared.run.run_id

    def cancel(self, run_id: str, reason: str) -> RunState:
        self.journal.check()
        reason = cut_error(reason or "cancelled by a client", self.limits)
        state = self.core.cancel_run(CancelRun(run_id, reason), now=self.clock())
        self._commit.flush()
        return state

    def mutate(self, run_id: str, mutations: Sequence[Mutation]) -> int:
        """Applies a client's batch (checked against the limits at the door); returns the seq
        of its entry. Raises KeyError, GraphError."""
        self.journal.check()
        self.core.mutate_run(MutateRun(run_id, tuple(mutations)), now=self.clock())
        seq = self.core.runs[run_id].last_seq + 1  # the batch's entry is the next one written
        self._commit.flush()
        return seq

    def delete_run(self, run_id: str) -> None:
        """Forgets an ended run: memory, log and snapshots. Raises KeyError or GraphError."""
        self.journal.check()
        self.core.delete_run(run_id)
        self.journal.delete_runs([run_id])
        self.watchers.end_run(run_id)

    def get_run(
        self,
        run_id: str,
        *,
        with_results: bool = True,
        page_size: int = 0,
        page_token: str = "",
    ) -> NodePage:
        """A page of the run's nodes. Raises KeyError, GraphError (a bad page token)."""
        # After a failed write the state in memory is ahead of the log: show none of it.
        self.journal.check()
        run = self.core.runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        return node_page(
            run,
            with_results=with_results,
            page_size=page_size,
            page_token=page_token,
            max_message_bytes=self.limits.max_message_bytes,
        )

    def list_runs(self, limit: int, page_token: str = "") -> tuple[list[Run], str]:
        self.journal.check()
        return run_page(self.core, limit, page_token)

    def list_workers(self) -> list[WorkerInfo]:
        return self._sessions.workers()

    def drain(self, worker: str) -> int:
        return self._sessions.drain(worker)

    def watch(
        self, run_id: str, from_seq: int, follow: bool
    ) -> AsyncGenerator[list[LogEntry], None]:
        """Committed entries of a run from `from_seq` on, in batches, with no gap and no
        duplicate, then live ones; ends after RunEnded unless `follow`. Raises KeyError for an
        unknown run, LimitExceeded past the watcher limits (when iterated)."""
        self.journal.check()
        run = self.core.runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        if not follow and run.state != RunState.RUNNING and from_seq > run.last_seq:
            # Past the end of an ended run: nothing more will ever come, and a watcher must
            # not wait for a RunEnded it has already seen.
            return _no_entries()
        return self.watchers.watch(run_id, from_seq, follow)

    # --- worker sessions -----------------------------------------------------------------

    def open_session(self, hello: WorkerHello) -> tuple[Link, list[AttemptRef]]:
        """Registers a worker stream. Raises LimitExceeded past max_streams."""
        return self._sessions.open(hello)

    def on_results(self, link: Link, answers: Sequence[Answer]) -> None:
        self._sessions.results(link, answers)

    def on_progress(self, link: Link, items: Iterable[ReportProgress]) -> None:
        self._sessions.progress(link, items)

    def on_drain(self, link: Link) -> None:
        self.core.drain_session(link.id)

    def close_session(self, link: Link, reason: str) -> None:
        self._sessions.close(link, reason)

    # --- retention -----------------------------------------------------------------------

    def apply_retention(self) -> list[str]:
        """Deletes the ended runs that retention says to; returns their ids."""
        return retention.apply_retention(
            self.core, self.journal, self.watchers, self.limits, now=self.clock()
        )


# The wire's names that lived here before the runtime was split (the service layer has them
# now): kept importable for code written against the old module.
_MOVED_TO_SERVICE = frozenset({"judge_results", "MAX_BATCH", "PROTOCOL_VERSION"})


def __getattr__(name: str) -> object:
    if name in _MOVED_TO_SERVICE:
        from ..service import protocol

        return getattr(protocol, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def _no_entries() -> AsyncGenerator[list[LogEntry], None]:
    return
    yield


__all__ = [
    "Ack",
    "AckStatus",
    "Link",
    "LogEntry",
    "NodePage",
    "Runtime",
    "Submission",
    "WorkerHello",
    "WorkerInfo",
]
