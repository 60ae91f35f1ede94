"""Apply and commit: carrying out the core's outbox through the journal.

Every stimulus the runtime feeds the core ends in `Commit.flush`: it dispatches, takes the
outbox, encodes the records (coordinator/records.py) and appends them to the journal, which
group-commits them off the event loop. What the records started waits for that commit: the
assignments and cancels go to the sessions, the acks to the workers that sent the results, and
the entries to the run's watchers, all from one after-commit callback, in commit order. So a
worker never holds an assignment the log does not know, an ack never promises what a crash would
lose, and nothing (not even a cancel with nothing to log) overtakes an earlier commit's
deliveries. The core's timers (retry backoffs, attempt timeouts) are armed here too, since their
firing is one more stimulus to flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from .. import records, snapshot
from ..core import Assignment, CancelOrder, Core, Record
from ..journal import Journal, Row
from .delivery import Ack, Link, deliver, send_acks

log = logging.getLogger("hivegrid.runtime")

# (records of one flush, their rows, the flush's time): what watchers are sent once durable.
Published = Callable[[list[Record], list[Row], float], None]


class Commit:
    def __init__(
        self,
        core: Core,
        journal: Journal,
        links: Mapping[str, Link],
        *,
        publish: Published,
        clock: Callable[[], float],
        snapshot_every: int,
    ) -> None:
        self.core = core
        self.journal = journal
        self.links = links
        self.publish = publish
        self.clock = clock
        # Set while stopping: nothing more is dispatched (a stream closing must not hand its
        # attempts to one that is about to).
        self.stopping = False
        # Take a snapshot after this many events, or after twice as many events as the state
        # has nodes if that is more: a snapshot costs time in proportion to the state, so this
        # keeps its cost per event bounded, and recovery replays at most that many events.
        self.snapshot_every = snapshot_every
        self.since_snapshot = 0
        self._snapshot_due = snapshot_every
        self.snapshots_taken = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def flush(self, link: Link | None = None, acks: list[Ack] | None = None) -> None:
        """Carries out the core's outbox; `acks` (for `link`) go out with the same commit."""
        core = self.core
        if not self.stopping:
            core.dispatch()
        recs, assignments, cancels = core.take_outbox()
        rows: list[Row] = []
        now = 0.0
        if recs:
            now = self.clock()
            runs = core.runs
            encode = records.encode
            for rec in recs:
                run = runs[rec.run_id]
                run.last_seq = seq = run.last_seq + 1
                rows.append((rec.run_id, seq, encode(rec, seq, now)))
            self.journal.append(rows)
            self.since_snapshot += len(rows)
            if self.since_snapshot >= self._snapshot_due:
                size = sum(len(run.nodes) for run in runs.values())
                self._snapshot_due = max(self.snapshot_every, 2 * size)
                if self.since_snapshot >= self._snapshot_due:
                    self.take_snapshot()
        if recs or acks or assignments or cancels:
            # Work goes out once the records that started it are durable, together with the
            # acks of the same commit: one write per worker carries both. If the log cannot be
            # written, nothing more is started: after a restart the coordinator carries on from
            # what was durable. Deliveries with nothing to log take the same path: behind every
            # commit still in flight, so that a cancel never reaches a worker ahead of the
            # assignment it names. Watchers see records once durable too (always handed over: a
            # watcher may subscribe between this append and its commit).
            self.journal.after_commit(
                lambda: self._committed(recs, rows, now, assignments, cancels, link, acks)
            )
        self.arm_timer()

    def _committed(
        self,
        recs: list[Record],
        rows: list[Row],
        now: float,
        assignments: list[Assignment],
        cancels: list[CancelOrder],
        link: Link | None,
        acks: list[Ack] | None,
    ) -> None:
        if recs:
            self.publish(recs, rows, now)
        if assignments or cancels:
            deliver(self.links, assignments, cancels)
        if link is not None and acks:
            send_acks(link, acks)

    def take_snapshot(self) -> None:
        self.since_snapshot = 0
        self._snapshot_due = self.snapshot_every
        self.snapshots_taken += 1
        started = time.perf_counter()
        self.journal.snapshot(snapshot.dump(self.core))
        log.info("snapshot taken in %.3f s", time.perf_counter() - started)

    # --- the core's timers ---------------------------------------------------------------

    def arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        self.cancel_timer()
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - self.clock())
            self._timer = loop.call_later(delay, self._on_timer)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.advance(self.clock())
        self.flush()


__all__ = ["Commit", "Published"]
