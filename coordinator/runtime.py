"""The single writer.

Servicers call the runtime on the event loop; each call feeds one stimulus to the core, then
`_flush` carries out the core's outbox: records become RunEvents appended to the journal (group
committed off the loop), assignments and cancels go to the sessions' outboxes, acks go out only
after the commit that covers them, and watchers see events once they are durable. On start the
runtime replays the log into a fresh core and treats every lease as expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

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
    NodeState,
    Outcome,
    PreparedRun,
    Record,
    RunLimits,
    RunState,
)
from .journal import Journal
from .store import Store, StoreError

log = logging.getLogger("hivegrid.runtime")

PROTOCOL_VERSION = 2
MAX_BATCH = 512
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_ASSIGN_CHUNK = 256
_WATCH_PAGE = 1000
# Graphs up to this many nodes are built on the event loop: a thread costs more than that.
_BUILD_INLINE_MAX = 2_000
_WATCH_BATCH = 256


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
        "id",
        "labels",
        "language",
        "last_seen",
        "sdk_version",
        "slots",
        "wake",
        "worker_name",
    )

    def __init__(self, session_id: str, hello: wpb.Hello, now: float) -> None:
        self.id = session_id
        self.worker_name = hello.worker_name
        self.language = hello.language
        self.sdk_version = hello.sdk_version
        self.agents = list(hello.agents)
        self.labels = dict(hello.labels)
        self.slots = hello.slots
        self.connected_at = now
        self.last_seen = time.monotonic()
        self.assignments: list[wpb.Assignment] = []
        self.acks: list[wpb.Ack] = []
        self.cancels: list[wpb.Cancel] = []
        self.drain_requested = False
        self.closed = ""
        self.wake = asyncio.Event()

    def take_messages(self) -> list[wpb.ConnectResponse]:
        """What is queued for the worker, as few messages as the batch limit allows: acks,
        cancels and the first assignments share one Push, so that one write carries them."""
        out: list[wpb.ConnectResponse] = []
        acks, cancels, items = self.acks, self.cancels, self.assignments
        if acks or cancels or items:
            self.acks, self.cancels, self.assignments = [], [], []
            first = items[:_ASSIGN_CHUNK] if len(items) > _ASSIGN_CHUNK else items
            out.append(
                wpb.ConnectResponse(push=wpb.Push(acks=acks, cancels=cancels, assignments=first))
            )
            for i in range(_ASSIGN_CHUNK, len(items), _ASSIGN_CHUNK):
                chunk = items[i : i + _ASSIGN_CHUNK]
                out.append(wpb.ConnectResponse(push=wpb.Push(assignments=chunk)))
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
        limits: RunLimits | None = None,
        snapshot_every: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.heartbeat_interval_s = heartbeat_interval_s
        self.session_timeout_s = session_timeout_s
        self.limits = limits or RunLimits()
        self.clock = clock
        # Take a snapshot after this many events, or after twice as many events as the state
        # has nodes if that is more: a snapshot costs time in proportion to the state, so this
        # keeps its cost per event bounded, and recovery replays at most that many events.
        self.snapshot_every = snapshot_every
        self._since_snapshot = 0
        self._snapshot_due = snapshot_every
        self.snapshots_taken = 0
        self.core: Core
        self.journal: Journal
        self.links: dict[str, Link] = {}
        self._watchers: dict[str, set[asyncio.Queue[rpb.RunEvent | None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._session_ids = 0
        self.replayed_events = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        epoch = await asyncio.to_thread(self.store.open)
        self.core = Core(lease_epoch=epoch, default_limits=self.limits)
        self.journal = Journal(self.store, loop)
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
        self._reaper = asyncio.create_task(self._reap(), name="hivegrid-reaper")

    async def stop_sessions(self) -> None:
        """Ends every worker stream (they reconnect to the next coordinator)."""
        for link in list(self.links.values()):
            link.closed = link.closed or "coordinator shutting down"
            link.wake.set()
        await asyncio.sleep(0)

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._timer is not None:
            self._timer.cancel()
        for link in list(self.links.values()):
            link.closed = link.closed or "coordinator shutting down"
            link.wake.set()
        if self._since_snapshot and self.journal.error is None:
            self.take_snapshot()
        await self.journal.wait_idle()
        self.journal.close()
        for queues in self._watchers.values():
            for q in queues:
                q.put_nowait(None)
        self.store.close()

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

    async def submit(self, req: rpb.SubmitRunRequest) -> str:
        self.journal.check()
        core = self.core
        run_id = req.run_id or "r-" + os.urandom(6).hex()
        limits = convert.limits_from_pb(req.limits, self.limits)
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        now = self.clock()

        def build() -> tuple[PreparedRun, rpb.RunSubmitted]:
            # Building a large graph allocates hundreds of thousands of objects and nothing
            # collectable: collections in the middle would only rescan them (2.7x slower at
            # 100,000 nodes).
            with _GC_PAUSE:
                payload = rpb.RunSubmitted(
                    nodes=req.nodes, limits=req.limits, name=req.name, seed=seed
                )
                specs = convert.specs_for_submit(req.nodes)
                prepared = core.prepare_run(
                    run_id, specs, limits=limits, name=req.name, seed=seed, now=now
                )
            return prepared, payload

        # A large graph is built in a thread, so that the event loop keeps serving every other
        # run and every worker meanwhile (building takes 0.39 s per 100,000 nodes).
        if len(req.nodes) > _BUILD_INLINE_MAX:
            prepared, payload = await asyncio.to_thread(build)
            self.journal.check()
        else:
            prepared, payload = build()
        core.install_run(prepared, now=self.clock(), payload=payload)
        self._flush()
        return run_id

    def cancel(self, run_id: str, reason: str) -> RunState:
        self.journal.check()
        state = self.core.cancel_run(
            run_id,
            reason=reason or "cancelled by a client",
            now=self.clock(),
            payload=reason or "cancelled by a client",
        )
        self._flush()
        return state

    def mutate(self, run_id: str, mutations: Iterable[gpb.Mutation]) -> int:
        self.journal.check()
        batch = list(mutations)
        self.core.mutate_run(
            run_id, convert.mutations_from_pb(batch), now=self.clock(), payload=batch
        )
        run = self.core.runs[run_id]
        seq = run.last_seq + 1  # the mutation's event is the next one written
        self._flush()
        return seq

    def get_run(self, run_id: str, *, with_results: bool = True) -> rpb.GetRunResponse:
        # After a failed write the state in memory is ahead of the log: show none of it.
        self.journal.check()
        run = self.core.runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        return rpb.GetRunResponse(
            run=convert.run_info(run),
            nodes=[convert.node_status(n, with_result=with_results) for n in run.nodes.values()],
        )

    def list_runs(self, limit: int) -> list[rpb.RunInfo]:
        self.journal.check()
        runs = sorted(self.core.runs.values(), key=lambda r: r.created_at, reverse=True)
        return [convert.run_info(r) for r in runs[: limit or 100]]

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
    ) -> AsyncIterator[list[rpb.RunEvent]]:
        """Committed events of a run from `from_seq` on, in batches, with no gap and no
        duplicate, then live ones; ends after RunEnded unless `follow`."""
        self.journal.check()
        if run_id not in self.core.runs:
            raise KeyError(run_id)
        queue: asyncio.Queue[rpb.RunEvent | None] = asyncio.Queue()
        self._watchers.setdefault(run_id, set()).add(queue)
        try:
            next_seq = max(from_seq, 1)
            while True:  # history first, in pages, from the store
                rows = await asyncio.to_thread(self.store.read, run_id, next_seq, _WATCH_PAGE)
                events = [rpb.RunEvent.FromString(data) for _, data in rows]
                if events:
                    next_seq = events[-1].seq + 1
                    ended = _cut_at_end(events, follow)
                    for batch in _batches(events):
                        yield batch
                    if ended:
                        return
                if len(rows) < _WATCH_PAGE:
                    break
            while True:
                first = await queue.get()
                pending = [first]
                while not queue.empty() and len(pending) < _WATCH_BATCH:
                    pending.append(queue.get_nowait())
                if None in pending:
                    return
                events = [e for e in pending if e is not None and e.seq >= next_seq]
                if not events:
                    continue
                next_seq = events[-1].seq + 1
                ended = _cut_at_end(events, follow)
                yield events
                if ended:
                    return
        finally:
            self._watchers[run_id].discard(queue)

    # --- worker sessions -----------------------------------------------------------------

    def open_session(self, hello: wpb.Hello) -> tuple[Link, list[wpb.AssignmentRef]]:
        self._session_ids += 1
        session_id = f"s-{os.urandom(3).hex()}-{self._session_ids}"
        link = Link(session_id, hello, self.clock())
        self.links[session_id] = link
        held = [(r.run_id, r.node_id, r.attempt, r.lease) for r in hello.held]
        kept = self.core.open_session(
            session_id,
            worker_name=hello.worker_name,
            agents=hello.agents,
            labels=dict(hello.labels),
            slots=hello.slots,
            held=held,
            now=self.clock(),
        )
        self._flush()
        refs = [wpb.AssignmentRef(run_id=r, node_id=n, attempt=a, lease=le) for r, n, a, le in kept]
        return link, refs

    def on_results(self, link: Link, results: Iterable[wpb.Result]) -> None:
        core = self.core
        now = self.clock()
        acks: list[wpb.Ack] = []
        for res in results:
            ref = res.ref
            outcome = res.outcome
            if not ref.run_id or not ref.lease or outcome == wpb.OUTCOME_UNSPECIFIED:
                acks.append(
                    wpb.Ack(
                        ref=ref,
                        status=wpb.ACK_STATUS_INVALID,
                        message="a result needs a ref and an outcome",
                    )
                )
                continue
            error = convert.error_from_pb(res.error) if res.HasField("error") else None
            try:
                mutations = convert.mutations_from_pb(res.mutations) if res.mutations else ()
            except GraphError as exc:
                mutations = ()
                error, outcome = (
                    convert.error_from_pb(
                        gpb.NodeError(message=str(exc), retryable=False, kind="mutation_rejected")
                    ),
                    wpb.OUTCOME_FAILED,
                )
            status, message = core.finish_attempt(
                link.id,
                ref.run_id,
                ref.node_id,
                ref.attempt,
                ref.lease,
                Outcome(outcome),
                result=res.result,
                error=error,
                mutations=mutations,
                now=now,
                payload=res,
            )
            acks.append(wpb.Ack(ref=ref, status=int(status), message=message))  # type: ignore[arg-type]
        self._flush(link, acks)

    def on_progress(self, link: Link, items: Iterable[wpb.Progress]) -> None:
        now = self.clock()
        for item in items:
            ref = item.ref
            self.core.report_progress(
                ref.run_id, ref.node_id, ref.attempt, ref.lease, now=now, payload=item
            )
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
        core.dispatch()
        records, assignments, cancels = core.take_outbox()
        events: list[rpb.RunEvent] = []
        if records:
            now = self.clock()
            rows = []
            runs = core.runs
            for rec in records:
                run = runs[rec.run_id]
                run.last_seq += 1
                event = _event(rec, run.last_seq, now)
                events.append(event)
                rows.append((rec.run_id, run.last_seq, event.SerializeToString()))
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
                lambda: self._committed(events, assignments, cancels, link, acks)
            )
        elif assignments or cancels:
            self._deliver(assignments, cancels)
        self._arm_timer()

    def _committed(
        self,
        events: list[rpb.RunEvent],
        assignments: list[Assignment],
        cancels: list[CancelOrder],
        link: Link | None,
        acks: list[wpb.Ack] | None,
    ) -> None:
        if events:
            self._publish(events)
        if assignments or cancels:
            self._deliver(assignments, cancels)
        if link is not None and acks:
            link.acks.extend(acks)
            link.wake.set()

    def _deliver(self, assignments: list[Assignment], cancels: list[CancelOrder]) -> None:
        links = self.links
        for a in assignments:
            link = links.get(a.session_id)
            if link is not None:
                link.assignments.append(_assignment(a))
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

    def _publish(self, events: list[rpb.RunEvent]) -> None:
        watchers = self._watchers
        if not watchers:
            return
        for event in events:
            queues = watchers.get(event.run_id)
            if queues:
                for q in queues:
                    q.put_nowait(event)

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
        """Ends sessions that went silent past the session timeout."""
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
                if link.last_seen < cutoff:
                    log.warning(
                        "session %s (%s) went silent; expiring its leases",
                        link.id,
                        link.worker_name,
                    )
                    link.closed = "session timed out"
                    link.wake.set()
                    self.close_session(link, "session timed out")

    # --- replay --------------------------------------------------------------------------

    def _recover(self) -> int:
        """Newest snapshot, then the events after it. Returns how many things were loaded."""
        core = self.core
        position, count = 0, 0
        found = self.store.load_snapshot()
        if found is not None:
            position, data = found
            count = snapshot.load(core, data, now=self.clock())
        return count + self._replay(position)

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
                limits=convert.limits_from_pb(x.limits, self.limits),
                name=x.name,
                seed=x.seed,
                now=t,
                checked=True,
            )
        elif kind == "node_dispatched":
            d = ev.node_dispatched
            core.now = t
            core.replay_dispatch(run_id, d.node_id, d.attempt, d.lease)
        elif kind == "attempt_finished":
            f = ev.attempt_finished
            core.finish_attempt(
                "",
                run_id,
                f.node_id,
                f.attempt,
                f.lease,
                Outcome(f.outcome),
                result=f.result,
                error=convert.error_from_pb(f.error) if f.HasField("error") else None,
                mutations=convert.mutations_from_pb(f.mutations),
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
        # progress and run_ended change nothing: the end is recomputed from the nodes.


def _cut_at_end(events: list[rpb.RunEvent], follow: bool) -> bool:
    """Drops what follows RunEnded (unless following); says whether the run ended."""
    if follow:
        return False
    for i, event in enumerate(events):
        if event.HasField("run_ended"):
            del events[i + 1 :]
            return True
    return False


def _batches(events: list[rpb.RunEvent]) -> list[list[rpb.RunEvent]]:
    """Splits events into messages of at most _WATCH_BATCH events and about 1 MiB."""
    out: list[list[rpb.RunEvent]] = []
    batch: list[rpb.RunEvent] = []
    size = 0
    for event in events:
        n = event.ByteSize()
        if batch and (len(batch) >= _WATCH_BATCH or size + n > 1 << 20):
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
    else:  # pragma: no cover - the core only makes the kinds above
        raise AssertionError(f"unknown record kind {kind!r}")
    if rec.transitions:
        add = ev.transitions.add
        for node_id, state in rec.transitions:
            add(node_id=node_id, state=state)
    return ev


def _assignment(a: Any) -> wpb.Assignment:
    node = a.node
    spec = node.spec
    nodes = node.run.nodes
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
        for dep_id in node.deps:
            dep = nodes[dep_id]
            if dep.state is NodeState.SUCCEEDED:
                add(node_id=dep_id, result=dep.result)
    if spec.metadata:
        msg.metadata.update(spec.metadata)
    return msg


__all__ = ["MAX_BATCH", "MAX_MESSAGE_BYTES", "PROTOCOL_VERSION", "AckStatus", "Link", "Runtime"]
