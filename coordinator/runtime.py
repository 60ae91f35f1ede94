"""The single writer.

Servicers call the runtime on the event loop; each call feeds one stimulus to the core, then
`_flush` carries out the core's outbox: records become RunEvents appended to the journal (group
committed off the loop), assignments and cancels go to the sessions' outboxes, acks go out only
after the commit that covers them, and watchers see events once they are durable. On start the
runtime replays the log into a fresh core and treats every lease as expired.

What a peer sends is checked against the operator's limits (`coordinator/limits.py`) before it
reaches the core, and what the log records is what was decided: a result whose mutations were
refused is logged as the failure it became, never as sent, so replay never judges raw input.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb

from . import convert, snapshot
from .core import (
    AckStatus,
    Assignment,
    CancelOrder,
    Core,
    GraphError,
    NodeError,
    Outcome,
    PreparedRun,
    Record,
    RunLimits,
    RunState,
)
from .journal import Journal
from .limits import (
    DEFAULT_LIMITS,
    LimitExceeded,
    Limits,
    check_hello,
    check_mutations,
    check_submit,
    cut_error,
)
from .store import Store, StoreError

log = logging.getLogger("hivegrid.runtime")

PROTOCOL_VERSION = wpb.PROTOCOL_CONSTANT_VERSION
MAX_BATCH = wpb.PROTOCOL_CONSTANT_MAX_BATCH
_ASSIGN_CHUNK = 256
_WATCH_PAGE = 1000
# A page of history read for a watcher holds about this much at most.
_WATCH_PAGE_BYTES = 4 * 1024 * 1024
# A watcher's live queue holds at most this many events or bytes; past either, it drops them
# and reads the history from the store again, at its own pace (see `_Watcher`).
_WATCH_QUEUE_EVENTS = 10_000
_WATCH_QUEUE_BYTES = 16 * 1024 * 1024
# Graphs up to this many nodes are built on the event loop: a thread costs more than that.
_BUILD_INLINE_MAX = 2_000
_WATCH_BATCH = 256
# GetRun pages: nodes per page by default and at most, and about this many bytes.
_NODE_PAGE = 1_000
_NODE_PAGE_MAX = 10_000
_NODE_PAGE_BYTES = 4 * 1024 * 1024
_RUNS_PAGE_MAX = 1_000
# An assignment leaves this much of the message limit for framing.
_ASSIGNMENT_MARGIN = 4096
# Retention runs this often.
_RETAIN_EVERY_S = 30.0
_OUTCOMES = frozenset({wpb.OUTCOME_SUCCEEDED, wpb.OUTCOME_FAILED, wpb.OUTCOME_CANCELLED})


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


class _Watcher:
    """One WatchRun call's live queue. Events are published to it once durable; if the watcher
    falls behind (more than _WATCH_QUEUE_EVENTS or _WATCH_QUEUE_BYTES waiting), the queue is
    dropped and the watcher reads from the store again from its last seq: a slow watcher costs
    the coordinator a bounded amount of memory and still sees every event once, in order."""

    __slots__ = ("ended", "events", "overflowed", "queued_bytes", "wake")

    def __init__(self) -> None:
        self.events: deque[rpb.RunEvent] = deque()
        self.queued_bytes = 0
        self.overflowed = False
        self.ended = False
        self.wake = asyncio.Event()

    def push(self, event: rpb.RunEvent, size: int) -> bool:
        """Queues an event; says whether the watcher just fell behind."""
        if self.overflowed:
            return False
        self.events.append(event)
        self.queued_bytes += size
        self.wake.set()
        if len(self.events) > _WATCH_QUEUE_EVENTS or self.queued_bytes > _WATCH_QUEUE_BYTES:
            self.events.clear()
            self.queued_bytes = 0
            self.overflowed = True
            return True
        return False

    def end(self) -> None:
        self.ended = True
        self.wake.set()


class Link:
    """A worker session as the runtime sees it: identity and its outbound queues."""

    __slots__ = (
        "acks",
        "agents",
        "assignments",
        "cancels",
        "closed",
        "connected_at",
        "drain_requested",
        "dropped_progress",
        "id",
        "labels",
        "language",
        "last_seen",
        "max_unacked",
        "progress_at",
        "progress_tokens",
        "readable",
        "sdk_version",
        "slots",
        "task",
        "unacked",
        "wake",
        "worker_name",
        "writing_since",
    )

    def __init__(
        self, session_id: str, hello: wpb.Hello, now: float, *, slots: int, max_unacked: int
    ) -> None:
        self.id = session_id
        self.worker_name = hello.worker_name
        self.language = hello.language
        self.sdk_version = hello.sdk_version
        self.agents = list(hello.agents)
        self.labels = dict(hello.labels)
        self.slots = slots
        self.connected_at = now
        self.last_seen = time.monotonic()
        self.assignments: list[wpb.Assignment] = []
        self.acks: list[wpb.Ack] = []
        self.cancels: list[wpb.Cancel] = []
        self.drain_requested = False
        self.closed = ""
        self.wake = asyncio.Event()
        # Results read and not yet acked (their acks wait for a commit or for the writer); the
        # reader pauses while this is at the limit and `readable` is clear.
        self.unacked = 0
        self.max_unacked = max_unacked
        self.readable = asyncio.Event()
        self.readable.set()
        # When the writer's current write began (0: not writing): a write that does not end
        # is a worker that does not read.
        self.writing_since = 0.0
        # The stream's task, cancelled when the session is expired while it is stuck.
        self.task: asyncio.Task[Any] | None = None
        # Progress rate: a token bucket refilled at max_progress_per_s.
        self.progress_tokens = 0.0
        self.progress_at = 0.0
        self.dropped_progress = 0

    def take_messages(self) -> list[wpb.ConnectResponse]:
        """What is queued for the worker, as few messages as the batch limit allows: acks and
        the first assignments share one Push, so that one write carries them, and the cancels
        travel in the last Push, never ahead of an assignment they may name (a worker handles a
        Push's assignments before its cancels)."""
        out: list[wpb.ConnectResponse] = []
        acks, cancels, items = self.acks, self.cancels, self.assignments
        if acks or cancels or items:
            self.acks, self.cancels, self.assignments = [], [], []
            if acks:
                self.unacked -= len(acks)
                if self.unacked < self.max_unacked:
                    self.readable.set()
            if len(items) <= _ASSIGN_CHUNK:
                out.append(
                    wpb.ConnectResponse(
                        push=wpb.Push(acks=acks, cancels=cancels, assignments=items)
                    )
                )
            else:
                last = (len(items) - 1) // _ASSIGN_CHUNK * _ASSIGN_CHUNK
                for i in range(0, len(items), _ASSIGN_CHUNK):
                    push = wpb.Push(assignments=items[i : i + _ASSIGN_CHUNK])
                    if i == 0:
                        push.acks.extend(acks)
                    if i == last:
                        push.cancels.extend(cancels)
                    out.append(wpb.ConnectResponse(push=push))
        if self.drain_requested:
            self.drain_requested = False
            out.append(wpb.ConnectResponse(drain_request=wpb.DrainRequest()))
        return out


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
        # A watch message holds at most this much (an event larger than it goes alone).
        self._watch_batch_bytes = min(1 << 20, limits.max_message_bytes // 4)
        self.clock = clock
        self.on_health = on_health
        self.store_retry_s = store_retry_s
        # Take a snapshot after this many events, or after twice as many events as the state
        # has nodes if that is more: a snapshot costs time in proportion to the state, so this
        # keeps its cost per event bounded, and recovery replays at most that many events.
        self.snapshot_every = snapshot_every
        self._since_snapshot = 0
        self._snapshot_due = snapshot_every
        self.snapshots_taken = 0
        self.core: Core
        self.journal: Journal
        self._epoch = 0
        self.links: dict[str, Link] = {}
        self._watchers: dict[str, set[_Watcher]] = {}
        self._watcher_count = 0
        self._history_readers: asyncio.Semaphore | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session_ids = 0
        self._building = 0
        self._stopping = False
        self.replayed_events = 0
        # What the coordinator refused or dropped, by limit (for operators and tests).
        self.refused: Counter[str] = Counter()
        # Times a watcher fell behind and went back to reading the store.
        self.watcher_overflows = 0

    def _new_core(self) -> Core:
        return Core(
            lease_epoch=self._epoch,
            default_limits=self.run_limits,
            new_lease=_RandomLeases(),
            max_assignment_bytes=max(1024, self.limits.max_message_bytes - _ASSIGNMENT_MARGIN),
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._epoch = await asyncio.to_thread(self.store.open)
        self.core = self._new_core()
        self.journal = Journal(
            self.store, loop, on_health=self.on_health, retry_s=self.store_retry_s
        )
        started = time.perf_counter()
        # As in `submit`: rebuilding graphs creates nothing collectable, and collections in
        # the middle would rescan everything built so far (1.7x slower at 100,000 nodes).
        with _GC_PAUSE:
            count = await asyncio.to_thread(self._recover)
        if count:
            self.core.expire_all_leases(reason="coordinator restarted", now=self.clock())
            log.info("replayed %d events in %.2f s", count, time.perf_counter() - started)
        self.replayed_events = count
        self._flush()
        self._tasks = [
            asyncio.create_task(self._reap(), name="hivegrid-reaper"),
            asyncio.create_task(self._retain(), name="hivegrid-retention"),
        ]

    async def stop_sessions(self) -> None:
        """Ends every worker stream (they reconnect to the next coordinator). Nothing more is
        dispatched: a stream closing must not hand its attempts to one that is about to."""
        self._stopping = True
        for link in list(self.links.values()):
            link.closed = link.closed or "coordinator shutting down"
            link.wake.set()
        await asyncio.sleep(0)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def stop(self) -> None:
        self._stopping = True
        await self._stop_tasks()
        for link in list(self.links.values()):
            link.closed = link.closed or "coordinator shutting down"
            link.wake.set()
        if self._since_snapshot and self.journal.error is None:
            self.take_snapshot()
        await self.journal.wait_idle()
        self.journal.close()
        self._end_watchers()
        self.store.close()

    def freeze(self) -> None:
        """From now on nothing is written, dispatched or acked: the first step of `abandon`,
        taken before the streams are torn down (their teardown must not reach the log)."""
        self._stopping = True
        self.journal.abandon()

    async def abandon(self) -> None:
        """Stops the way a killed process does: whatever is not committed yet is lost, no
        snapshot is taken. For crash tests in one process."""
        self.freeze()
        await self._stop_tasks()
        for link in list(self.links.values()):
            link.closed = link.closed or "coordinator killed"
            link.wake.set()
        self._end_watchers()
        self.store.close()

    def _end_watchers(self) -> None:
        for watchers in self._watchers.values():
            for w in watchers:
                w.end()

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

    async def submit(self, req: rpb.SubmitRunRequest) -> str:
        """Starts a run; returns its id. Raises LimitExceeded, GraphError or RunExists."""
        self.journal.check()
        core = self.core
        limits = self.limits
        if req.request_id:
            existing = core.run_for_request(req.request_id)
            if existing is not None:
                return existing
        held = sum(len(run.nodes) for run in core.runs.values())
        if held + len(req.nodes) > limits.max_nodes_held:
            raise self._refuse(
                "max_nodes_held",
                f"the coordinator holds {held} nodes; {len(req.nodes)} more is over the limit "
                f"max_nodes_held ({limits.max_nodes_held}): wait for runs to end or delete some",
            )
        run_id = req.run_id or "r-" + os.urandom(6).hex()
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        now = self.clock()

        def build() -> tuple[PreparedRun, rpb.RunSubmitted]:
            check_submit(req, limits)
            # Building a large graph allocates hundreds of thousands of objects and nothing
            # collectable: collections in the middle would only rescan them (2.7x slower at
            # 100,000 nodes).
            with _GC_PAUSE:
                run_limits = convert.limits_from_pb(req.limits, self.run_limits)
                # The limits the run got, not those asked for: replay must not depend on the
                # coordinator's configuration at the time of the replay.
                payload = rpb.RunSubmitted(
                    nodes=req.nodes,
                    limits=convert.limits_to_pb(run_limits),
                    name=req.name,
                    seed=seed,
                    request_id=req.request_id,
                )
                specs = convert.specs_for_submit(req.nodes)
                prepared = core.prepare_run(
                    run_id,
                    specs,
                    limits=run_limits,
                    name=req.name,
                    seed=seed,
                    now=now,
                    request_id=req.request_id,
                )
            return prepared, payload

        # A large graph is checked and built in a thread, so that the event loop keeps serving
        # every other run and every worker meanwhile (0.39 s per 100,000 nodes).
        if len(req.nodes) > _BUILD_INLINE_MAX:
            if self._building >= limits.max_concurrent_submits:
                raise self._refuse(
                    "max_concurrent_submits",
                    f"{self._building} large submissions are being built, the limit "
                    f"max_concurrent_submits ({limits.max_concurrent_submits}); try again",
                )
            self._building += 1
            try:
                prepared, payload = await asyncio.to_thread(build)
            finally:
                self._building -= 1
            self.journal.check()
        else:
            prepared, payload = build()
        if req.request_id:  # the same request may have been built twice at once
            existing = core.run_for_request(req.request_id)
            if existing is not None:
                return existing
        core.install_run(prepared, now=self.clock(), payload=payload)
        self._flush()
        return run_id

    def cancel(self, run_id: str, reason: str) -> RunState:
        self.journal.check()
        reason = cut_error(reason or "cancelled by a client", self.limits)
        state = self.core.cancel_run(run_id, reason=reason, now=self.clock(), payload=reason)
        self._flush()
        return state

    def mutate(self, run_id: str, mutations: Iterable[gpb.Mutation]) -> int:
        self.journal.check()
        batch = list(mutations)
        check_mutations(batch, self.limits)
        self.core.mutate_run(
            run_id, convert.mutations_from_pb(batch), now=self.clock(), payload=batch
        )
        run = self.core.runs[run_id]
        seq = run.last_seq + 1  # the mutation's event is the next one written
        self._flush()
        return seq

    def delete_run(self, run_id: str) -> None:
        """Forgets an ended run: memory, log and snapshots. Raises KeyError or GraphError."""
        self.journal.check()
        self.core.delete_run(run_id)
        self.journal.delete_runs([run_id])
        for w in self._watchers.pop(run_id, ()):
            w.end()

    def get_run(
        self,
        run_id: str,
        *,
        with_results: bool = True,
        page_size: int = 0,
        page_token: str = "",
    ) -> rpb.GetRunResponse:
        # After a failed write the state in memory is ahead of the log: show none of it.
        self.journal.check()
        run = self.core.runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        start = _page_start(page_token)
        size = min(page_size or _NODE_PAGE, _NODE_PAGE_MAX)
        budget = min(_NODE_PAGE_BYTES, self.limits.max_message_bytes // 2)
        nodes: list[rpb.NodeStatus] = []
        total = 0
        node_status = convert.node_status
        for node in itertools.islice(run.nodes.values(), start, start + size):
            cost = (len(node.result) if with_results else 0) + len(node.id) + 96
            if nodes and total + cost > budget:
                break  # a page always holds at least one node
            nodes.append(node_status(node, with_result=with_results))
            total += cost
        end = start + len(nodes)
        return rpb.GetRunResponse(
            run=convert.run_info(run),
            nodes=nodes,
            next_page_token=str(end) if end < len(run.nodes) else "",
        )

    def list_runs(self, limit: int, page_token: str = "") -> tuple[list[rpb.RunInfo], str]:
        self.journal.check()
        start = _page_start(page_token)
        size = min(limit or 100, _RUNS_PAGE_MAX)
        runs = self.core.runs
        # Runs are kept in the order they were created: newest first is the reverse.
        page = list(itertools.islice(reversed(runs.values()), start, start + size))
        end = start + len(page)
        return [convert.run_info(r) for r in page], (str(end) if end < len(runs) else "")

    def list_workers(self) -> list[rpb.WorkerInfo]:
        out = []
        for link in self.links.values():
            session = self.core.sessions.get(link.id)
            out.append(
                rpb.WorkerInfo(
                    session_id=link.id,
                    worker_name=link.worker_name,
                    language=link.language,
                    sdk_version=link.sdk_version,
                    agents=link.agents,
                    labels=link.labels,
                    slots=link.slots,
                    in_flight=len(session.in_flight) if session else 0,
                    draining=session.draining if session else True,
                    connected_at=link.connected_at,
                    completed=session.completed if session else 0,
                )
            )
        return out

    def drain(self, worker: str) -> int:
        count = 0
        for link in self.links.values():
            if worker in (link.id, link.worker_name) and self.core.drain_session(link.id):
                link.drain_requested = True
                link.wake.set()
                count += 1
        return count

    async def watch(
        self, run_id: str, from_seq: int, follow: bool
    ) -> AsyncGenerator[list[rpb.RunEvent], None]:
        """Committed events of a run from `from_seq` on, in batches, with no gap and no
        duplicate, then live ones; ends after RunEnded unless `follow`. Leases are left out:
        they are the credentials of attempts."""
        self.journal.check()
        if run_id not in self.core.runs:
            raise KeyError(run_id)
        limits = self.limits
        watchers = self._watchers.setdefault(run_id, set())
        if len(watchers) >= limits.max_watchers_per_run:
            raise self._refuse(
                "max_watchers_per_run",
                f"the run has {len(watchers)} watchers, the limit max_watchers_per_run",
            )
        if self._watcher_count >= limits.max_watchers:
            raise self._refuse(
                "max_watchers", f"{self._watcher_count} watchers, the limit max_watchers"
            )
        watcher = _Watcher()
        watchers.add(watcher)
        self._watcher_count += 1
        if self._history_readers is None:
            self._history_readers = asyncio.Semaphore(limits.max_history_readers)
        try:
            next_seq = max(from_seq, 1)
            while True:
                # History from the store, in pages bounded by bytes, a few watchers at a time
                # (each holds a page while it is sent). The watcher is registered first, so
                # every event committed after a page was read reaches its queue.
                watcher.overflowed = False
                while True:
                    async with self._history_readers:
                        rows = await asyncio.to_thread(
                            self.store.read, run_id, next_seq, _WATCH_PAGE, _WATCH_PAGE_BYTES
                        )
                        if not rows:
                            break
                        events = [rpb.RunEvent.FromString(data) for _, data in rows]
                        del rows  # a page is held once, not twice, while it is sent
                    next_seq = events[-1].seq + 1
                    ended = _cut_at_end(events, follow)
                    for event in events:
                        _strip_lease(event)
                    for batch in _batches(events, self._watch_batch_bytes):
                        yield batch
                    del events
                    if ended:
                        return
                # Then live events, until the run ends or the watcher falls behind.
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
                    events = [e for e in pending if e.seq >= next_seq]
                    if not events:
                        continue
                    next_seq = events[-1].seq + 1
                    ended = _cut_at_end(events, follow)
                    for batch in _batches(events, self._watch_batch_bytes):
                        yield batch
                    if ended:
                        return
                if watcher.ended and not watcher.overflowed:
                    return
        finally:
            watchers.discard(watcher)
            self._watcher_count -= 1

    # --- worker sessions -----------------------------------------------------------------

    def open_session(self, hello: wpb.Hello) -> tuple[Link, list[wpb.AssignmentRef]]:
        """Registers a worker stream. Raises LimitExceeded for a Hello past the limits."""
        limits = self.limits
        check_hello(hello, limits)
        if len(self.links) >= limits.max_streams:
            raise self._refuse(
                "max_streams",
                f"the coordinator serves {len(self.links)} worker streams, the limit max_streams",
            )
        slots = min(hello.slots, limits.max_slots)
        self._session_ids += 1
        session_id = f"s-{os.urandom(3).hex()}-{self._session_ids}"
        link = Link(
            session_id, hello, self.clock(), slots=slots, max_unacked=limits.max_unacked_results
        )
        link.progress_tokens = limits.max_progress_per_s
        link.progress_at = time.monotonic()
        self.links[session_id] = link
        held = [(r.run_id, r.node_id, r.attempt, r.lease) for r in hello.held]
        kept = self.core.open_session(
            session_id,
            worker_name=hello.worker_name,
            agents=hello.agents,
            labels=dict(hello.labels),
            slots=slots,
            held=held,
            now=self.clock(),
        )
        self._flush()
        refs = [wpb.AssignmentRef(run_id=r, node_id=n, attempt=a, lease=le) for r, n, a, le in kept]
        return link, refs

    def on_results(
        self,
        link: Link,
        results: Sequence[wpb.Result],
        judged: Sequence[Judged] | None = None,
    ) -> None:
        """A worker's answers. `judged`: what `judge_results` made of them, if the caller did
        that off the event loop already (a message carrying large mutation batches)."""
        core = self.core
        now = self.clock()
        acks: list[wpb.Ack] = []
        if judged is None:
            judged = judge_results(results, self.limits)
        for res, verdict in zip(results, judged, strict=True):
            ref = res.ref
            if verdict.ack is not None:
                acks.append(verdict.ack)
                continue
            payload, error, refused, rejected = (
                verdict.payload,
                verdict.error,
                verdict.refused,
                verdict.rejected,
            )
            if refused:
                self.refused["max_result_bytes"] += 1
            status, message = core.finish_attempt(
                link.id,
                ref.run_id,
                ref.node_id,
                ref.attempt,
                ref.lease,
                Outcome(payload.outcome),
                result=payload.result,
                error=error,
                mutations=verdict.mutations,
                now=now,
                payload=payload,
            )
            code = int(status)
            if status is AckStatus.COMMITTED and refused:
                code, message = wpb.ACK_STATUS_REFUSED, refused
            elif status is AckStatus.COMMITTED and rejected:
                code, message = wpb.ACK_STATUS_MUTATIONS_REJECTED, rejected
            acks.append(wpb.Ack(ref=ref, status=code, message=message))  # type: ignore[arg-type]
        link.unacked += len(acks)
        self._flush(link, acks)

    def on_progress(self, link: Link, items: Iterable[wpb.Progress]) -> None:
        limits = self.limits
        rate = limits.max_progress_per_s
        now_mono = time.monotonic()
        # Token bucket: `rate` items a second, bursts of up to two seconds' worth.
        link.progress_tokens = min(
            2 * rate + 1, link.progress_tokens + (now_mono - link.progress_at) * rate
        )
        link.progress_at = now_mono
        now = self.clock()
        max_bytes = limits.max_progress_bytes
        dropped = 0
        for item in items:
            if link.progress_tokens < 1 or len(item.data) > max_bytes:
                dropped += 1
                continue
            link.progress_tokens -= 1
            ref = item.ref
            self.core.report_progress(
                ref.run_id, ref.node_id, ref.attempt, ref.lease, now=now, payload=item
            )
        if dropped:
            if not link.dropped_progress:
                log.warning(
                    "session %s (%s) sends progress past max_progress_per_s (%g) or "
                    "max_progress_bytes (%d); dropping what is over",
                    link.id,
                    link.worker_name,
                    rate,
                    max_bytes,
                )
            link.dropped_progress += dropped
            self.refused["progress"] += dropped
        self._flush()

    def on_drain(self, link: Link) -> None:
        self.core.drain_session(link.id)

    def close_session(self, link: Link, reason: str) -> None:
        if self.links.pop(link.id, None) is None:
            return
        link.closed = link.closed or reason
        self.core.close_session(link.id, reason=reason, now=self.clock())
        self._flush()

    # --- carrying out the outbox ---------------------------------------------------------

    def _flush(self, link: Link | None = None, acks: list[wpb.Ack] | None = None) -> None:
        """Carries out the core's outbox; `acks` (for `link`) go out with the same commit."""
        core = self.core
        if not self._stopping:
            core.dispatch()
        records, assignments, cancels = core.take_outbox()
        events: list[rpb.RunEvent] = []
        sizes: list[int] = []
        if records:
            now = self.clock()
            rows = []
            runs = core.runs
            for rec in records:
                run = runs[rec.run_id]
                run.last_seq += 1
                event = _event(rec, run.last_seq, now)
                data = event.SerializeToString()
                events.append(event)
                sizes.append(len(data))
                rows.append((rec.run_id, run.last_seq, data))
            self.journal.append(rows)
            self._since_snapshot += len(rows)
            if self._since_snapshot >= self._snapshot_due:
                size = sum(len(run.nodes) for run in core.runs.values())
                self._snapshot_due = max(self.snapshot_every, 2 * size)
                if self._since_snapshot >= self._snapshot_due:
                    self.take_snapshot()
        if records or acks:
            # Work goes out once the events that started it are durable, together with the
            # acks of the same commit: one write per worker carries both, and a worker never
            # holds an assignment the log does not know. If the log cannot be written, nothing
            # more is started: after a restart, the coordinator carries on from what was
            # durable. Watchers see events once durable too (always registered: a watcher may
            # subscribe between this append and its commit).
            self.journal.after_commit(
                lambda: self._committed(events, sizes, assignments, cancels, link, acks)
            )
        elif assignments or cancels:
            self._deliver(assignments, cancels)
        self._arm_timer()

    def _committed(
        self,
        events: list[rpb.RunEvent],
        sizes: list[int],
        assignments: list[Assignment],
        cancels: list[CancelOrder],
        link: Link | None,
        acks: list[wpb.Ack] | None,
    ) -> None:
        if events:
            self._publish(events, sizes)
        if assignments or cancels:
            self._deliver(assignments, cancels)
        if link is not None and acks:
            if link.closed:
                link.unacked -= len(acks)
            link.acks.extend(acks)
            link.wake.set()

    def _deliver(self, assignments: list[Assignment], cancels: list[CancelOrder]) -> None:
        links = self.links
        core = self.core
        for a in assignments:
            link = links.get(a.session_id)
            if link is not None:
                link.assignments.append(_assignment(core, a))
                link.wake.set()
        for c in cancels:
            link = links.get(c.session_id)
            if link is not None:
                link.cancels.append(
                    wpb.Cancel(
                        ref=wpb.AssignmentRef(
                            run_id=c.run_id, node_id=c.node_id, attempt=c.attempt, lease=c.lease
                        ),
                        reason=c.reason,
                    )
                )
                link.wake.set()

    def take_snapshot(self) -> None:
        self._since_snapshot = 0
        self._snapshot_due = self.snapshot_every
        self.snapshots_taken += 1
        started = time.perf_counter()
        self.journal.snapshot(snapshot.dump(self.core))
        log.info("snapshot taken in %.3f s", time.perf_counter() - started)

    def _publish(self, events: list[rpb.RunEvent], sizes: list[int]) -> None:
        watchers = self._watchers
        if not watchers:
            return
        for event, size in zip(events, sizes, strict=True):
            queues = watchers.get(event.run_id)
            if queues:
                _strip_lease(event)
                for w in queues:
                    if w.push(event, size):
                        self.watcher_overflows += 1

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - self.clock())
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.advance(self.clock())
        self._flush()

    async def _reap(self) -> None:
        """Ends sessions that went silent past the session timeout, and those whose worker
        stopped reading (a write to it has not finished for as long)."""
        interval = min(self.heartbeat_interval_s, self.session_timeout_s / 3)
        due = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            # If this round runs late, the event loop was busy (a very large submit, a
            # snapshot): what workers sent meanwhile is still unread, so that much of their
            # silence is the coordinator's own, not theirs.
            late = now - due
            due = now + interval
            cutoff = now - self.session_timeout_s - late
            for link in list(self.links.values()):
                if link.last_seen < cutoff and link.readable.is_set():
                    reason = "session timed out"
                elif (link.writing_since and link.writing_since < cutoff) or (
                    not link.readable.is_set() and link.last_seen < cutoff
                ):
                    reason = "the worker stopped reading its stream"
                else:
                    continue
                log.warning(
                    "session %s (%s): %s; expiring its leases", link.id, link.worker_name, reason
                )
                link.closed = reason
                link.wake.set()
                self.close_session(link, reason)
                if link.task is not None and (link.writing_since or not link.readable.is_set()):
                    # Its writer is stuck in a write that will never end, or soon will be.
                    link.task.cancel()

    async def _retain(self) -> None:
        """Deletes ended runs past the retention the operator set."""
        while True:
            await asyncio.sleep(_RETAIN_EVERY_S)
            self.apply_retention()

    def apply_retention(self) -> list[str]:
        """Deletes the ended runs that retention says to; returns their ids."""
        limits = self.limits
        if (not limits.retain_s and not limits.retain_runs) or self.journal.error is not None:
            return []
        ended = [r for r in self.core.runs.values() if r.state is not RunState.RUNNING]
        doomed: list[str] = []
        if limits.retain_s:
            horizon = self.clock() - limits.retain_s
            doomed = [r.run_id for r in ended if r.ended_at < horizon]
        if limits.retain_runs and len(ended) - len(doomed) > limits.retain_runs:
            keep = sorted(
                (r for r in ended if r.run_id not in set(doomed)), key=lambda r: r.ended_at
            )
            doomed.extend(r.run_id for r in keep[: len(keep) - limits.retain_runs])
        for run_id in doomed:
            self.core.delete_run(run_id)
            for w in self._watchers.pop(run_id, ()):
                w.end()
        if doomed:
            self.journal.delete_runs(doomed)
            log.info("retention deleted %d ended runs", len(doomed))
        return doomed

    # --- replay --------------------------------------------------------------------------

    def _recover(self) -> int:
        """The newest snapshot that loads (an older one, or none, if it is damaged), then the
        events after it. Returns how many things were loaded."""
        for position in self.store.snapshots():
            try:
                chunks = self.store.load_snapshot(position)
                # Runs deleted after the snapshot was taken are still in it.
                deleted = self.store.deleted_runs(since=position)
                count = snapshot.load(self.core, chunks, now=self.clock(), skip=deleted)
            except (StoreError, DecodeError, ValueError, KeyError) as exc:
                log.warning(
                    "the snapshot at log position %d cannot be loaded (%s); falling back to an "
                    "older one, or to the whole log",
                    position,
                    exc,
                )
                self.core = self._new_core()
                continue
            return count + self._replay(position)
        return self._replay(0)

    def _replay(self, after: int) -> int:
        count = 0
        core = self.core
        for data in self.store.replay(after):
            count += 1
            try:
                event = rpb.RunEvent.FromString(data)
            except DecodeError as exc:
                raise StoreError(
                    f"the event log is damaged: event {after + count} cannot be read ({exc}); "
                    "restore the store from a backup, or move it aside to start empty"
                ) from exc
            run = core.runs.get(event.run_id)
            expected = run.last_seq + 1 if run is not None else 1
            if event.seq != expected:
                raise StoreError(
                    f"the event log is damaged: run {event.run_id} jumps from event "
                    f"{expected - 1} to {event.seq}; restore the store from a backup"
                )
            try:
                self._apply(event)
            except (GraphError, KeyError, AssertionError) as exc:
                raise StoreError(
                    f"the event log does not replay: event {event.seq} of run {event.run_id} "
                    f"({event.WhichOneof('kind')}) fails with {exc!r}"
                ) from exc
            run = core.runs.get(event.run_id)
            if run is not None:
                run.last_seq = event.seq
            core.take_outbox()
        return count

    def _apply(self, ev: rpb.RunEvent) -> None:
        core, t, run_id = self.core, ev.time, ev.run_id
        kind = ev.WhichOneof("kind")
        if kind == "run_submitted":
            x = ev.run_submitted
            core.submit_run(
                run_id,
                convert.specs_for_submit(x.nodes),
                limits=convert.limits_from_pb(x.limits, self.run_limits),
                name=x.name,
                seed=x.seed,
                now=t,
                checked=True,
                request_id=x.request_id,
            )
        elif kind == "node_dispatched":
            d = ev.node_dispatched
            core.now = t
            core.replay_dispatch(run_id, d.node_id, d.attempt, d.lease)
        elif kind == "attempt_finished":
            f = ev.attempt_finished
            if f.rejection:
                # A refused batch is replayed as the failure it became, with the error logged
                # (logs before this version carry the batch as sent and no error: the batch is
                # not looked at again).
                outcome = Outcome.FAILED
                error: NodeError | None = (
                    convert.error_from_pb(f.error)
                    if f.outcome == wpb.OUTCOME_FAILED and f.HasField("error")
                    else NodeError(f"mutations rejected: {f.rejection}", True, "mutation_rejected")
                )
                mutations: list[Any] = []
            else:
                outcome = Outcome(f.outcome)
                error = convert.error_from_pb(f.error) if f.HasField("error") else None
                mutations = convert.mutations_from_pb(f.mutations)
            core.finish_attempt(
                "",
                run_id,
                f.node_id,
                f.attempt,
                f.lease,
                outcome,
                result=f.result,
                error=error,
                mutations=mutations,
                now=t,
            )
        elif kind == "attempt_lost":
            x2 = ev.attempt_lost
            core.lose_attempt(run_id, x2.node_id, x2.lease, reason=x2.reason, now=t)
        elif kind == "attempt_timed_out":
            x3 = ev.attempt_timed_out
            core.time_out(run_id, x3.node_id, x3.lease, now=t)
        elif kind == "run_cancelled":
            core.cancel_run(run_id, reason=ev.run_cancelled.reason, now=t)
        elif kind == "mutations_applied":
            core.mutate_run(
                run_id, convert.mutations_from_pb(ev.mutations_applied.mutations), now=t
            )
        elif kind == "node_failed":
            x4 = ev.node_failed
            core.fail_node(run_id, x4.node_id, convert.error_from_pb(x4.error), now=t)
        # progress and run_ended change nothing: the end is recomputed from the nodes.


class Judged(NamedTuple):
    """What the door made of one result: an ack to send at once (a malformed ref), or what the
    core is to be told, `payload` being what the log will record."""

    ack: wpb.Ack | None
    payload: wpb.Result
    error: NodeError | None = None
    mutations: list[Any] = []  # shared, never mutated
    refused: str = ""
    rejected: str = ""


def judge_results(results: Iterable[wpb.Result], limits: Limits) -> list[Judged]:
    """Checks a message's results against the limits and converts their mutations. Pure, so a
    large batch can be judged in a thread. What the log records is what is decided here: an
    answer refused at the door becomes the failure it is, logged as such, without the part
    that was refused."""
    out: list[Judged] = []
    max_id = limits.max_id_bytes
    succeeded = wpb.OUTCOME_SUCCEEDED
    for res in results:
        ref = res.ref
        outcome = res.outcome
        if not ref.run_id or not ref.lease or outcome not in _OUTCOMES:
            ack = wpb.Ack(
                ref=ref,
                status=wpb.ACK_STATUS_INVALID,
                message="a result needs a ref and an outcome (1, 2 or 3)",
            )
            out.append(Judged(ack, res))
            continue
        if len(ref.run_id) > max_id or len(ref.node_id) > max_id:
            ack = wpb.Ack(ref=ref, status=wpb.ACK_STATUS_STALE, message="no such attempt")
            out.append(Judged(ack, res))
            continue
        refused = rejected = ""
        error = convert.error_from_pb(res.error) if res.HasField("error") else None
        if error is not None and (
            len(error.message) * 4 > limits.max_error_bytes or len(error.kind) > 64
        ):
            error = NodeError(cut_error(error.message, limits), error.retryable, error.kind[:64])
        mutations: list[Any] = []
        if outcome == succeeded:
            if len(res.result) > limits.max_result_bytes:
                refused = (
                    f"a result of {len(res.result)} bytes is over the limit "
                    f"max_result_bytes ({limits.max_result_bytes})"
                )
                error = NodeError(refused, False, "too_large")
            elif res.mutations:
                try:
                    check_mutations(res.mutations, limits)
                    mutations = convert.mutations_from_pb(res.mutations)
                except (LimitExceeded, GraphError) as exc:
                    rejected = str(exc)
                    error = NodeError(f"mutations rejected: {rejected}", True, "mutation_rejected")
            if refused or rejected:
                outcome = wpb.OUTCOME_FAILED
        if outcome == succeeded and not refused and not rejected:
            # The hot path: logged as sent (the core may still reject the batch: the event then
            # records the rejection, not the batch; see `_event`).
            payload = res
        else:
            payload = wpb.Result(ref=ref, outcome=outcome)
            if error is not None and outcome == wpb.OUTCOME_FAILED:
                payload.error.CopyFrom(convert.error_to_pb(error))
        out.append(Judged(None, payload, error, mutations, refused, rejected))
    return out


def _page_start(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 12:
        raise GraphError(f"page_token {token[:40]!r} is not one this coordinator gave")
    return int(token)


def _strip_lease(event: rpb.RunEvent) -> None:
    kind = event.WhichOneof("kind")
    if kind == "node_dispatched":
        event.node_dispatched.lease = 0
    elif kind == "attempt_finished":
        event.attempt_finished.lease = 0
    elif kind == "attempt_lost":
        event.attempt_lost.lease = 0
    elif kind == "attempt_timed_out":
        event.attempt_timed_out.lease = 0


def _cut_at_end(events: list[rpb.RunEvent], follow: bool) -> bool:
    """Drops what follows RunEnded (unless following); says whether the run ended."""
    if follow:
        return False
    for i, event in enumerate(events):
        if event.HasField("run_ended"):
            del events[i + 1 :]
            return True
    return False


def _batches(events: list[rpb.RunEvent], max_bytes: int) -> list[list[rpb.RunEvent]]:
    """Splits events into messages of at most _WATCH_BATCH events and `max_bytes` (an event
    larger than that goes alone)."""
    out: list[list[rpb.RunEvent]] = []
    batch: list[rpb.RunEvent] = []
    size = 0
    for event in events:
        n = event.ByteSize()
        if batch and (len(batch) >= _WATCH_BATCH or size + n > max_bytes):
            out.append(batch)
            batch, size = [], 0
        batch.append(event)
        size += n
    if batch:
        out.append(batch)
    return out


def _event(rec: Record, seq: int, now: float) -> rpb.RunEvent:
    ev = rpb.RunEvent(run_id=rec.run_id, seq=seq, time=now)
    kind, data = rec.kind, rec.data
    if kind == "dispatched":
        node_id, attempt, lease, session_id, worker_name = data
        d = ev.node_dispatched
        d.node_id, d.attempt, d.lease, d.session_id, d.worker_name = (
            node_id,
            attempt,
            lease,
            session_id,
            worker_name,
        )
    elif kind == "finished":
        res, rejection = data
        f = ev.attempt_finished
        if res is not None:
            f.node_id, f.attempt, f.lease = res.ref.node_id, res.ref.attempt, res.ref.lease
            if rejection:
                # The decision, not the input: the batch is not kept, the attempt failed (with
                # the error it failed with, if it came as a failure already).
                f.outcome = wpb.OUTCOME_FAILED
                if res.outcome == wpb.OUTCOME_FAILED and res.HasField("error"):
                    f.error.CopyFrom(res.error)
                else:
                    f.error.message = f"mutations rejected: {rejection}"
                    f.error.retryable = True
                    f.error.kind = "mutation_rejected"
            else:
                f.outcome = res.outcome
                f.result = res.result
                if res.HasField("error"):
                    f.error.CopyFrom(res.error)
                if res.mutations:
                    f.mutations.extend(res.mutations)
        f.rejection = rejection
    elif kind == "lost":
        node_id, attempt, lease, reason = data
        x = ev.attempt_lost
        x.node_id, x.attempt, x.lease, x.reason = node_id, attempt, lease, reason
    elif kind == "timed_out":
        node_id, attempt, lease = data
        t = ev.attempt_timed_out
        t.node_id, t.attempt, t.lease = node_id, attempt, lease
    elif kind == "progress":
        p = ev.progress
        p.node_id, p.attempt, p.data = data.ref.node_id, data.ref.attempt, data.data
    elif kind == "submitted":
        ev.run_submitted.CopyFrom(data)
    elif kind == "cancelled":
        ev.run_cancelled.reason = data or ""
    elif kind == "mutated":
        ev.mutations_applied.mutations.extend(data or ())
    elif kind == "ended":
        ev.run_ended.state = gpb.RunState.ValueType(data)
    elif kind == "node_failed":
        node_id, error = data
        ev.node_failed.node_id = node_id
        ev.node_failed.error.CopyFrom(convert.error_to_pb(error))
    else:  # pragma: no cover - the core only makes the kinds above
        raise AssertionError(f"unknown record kind {kind!r}")
    if rec.transitions:
        add = ev.transitions.add
        for node_id, state in rec.transitions:
            add(node_id=node_id, state=state)
    return ev


def _assignment(core: Core, a: Assignment) -> wpb.Assignment:
    node = a.node
    spec = node.spec
    msg = wpb.Assignment(
        ref=wpb.AssignmentRef(
            run_id=node.run.run_id, node_id=spec.id, attempt=a.attempt, lease=a.lease
        ),
        agent=spec.agent,
        input=spec.input,
        timeout_s=spec.timeout_s,
        can_mutate=spec.can_mutate,
    )
    if node.deps:
        add = msg.deps.add
        for dep_id, result in core.assignment_deps(node):
            add(node_id=dep_id, result=result)
    if spec.metadata:
        msg.metadata.update(spec.metadata)
    return msg


__all__ = [
    "MAX_BATCH",
    "PROTOCOL_VERSION",
    "AckStatus",
    "Judged",
    "Link",
    "Runtime",
    "judge_results",
]
