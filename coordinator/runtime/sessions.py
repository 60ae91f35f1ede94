"""Worker sessions: opening and closing them, what their workers send (answers, progress,
drain), and the reaper that ends the ones that went silent or stopped reading.

Every call feeds the core one stimulus and flushes (`Commit.flush`); an answer's ack is queued
with the commit that makes it durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from ..core import Answer, AttemptRef, Core, OpenSession, ReportProgress
from ..limits import LimitExceeded, Limits
from .commit import Commit
from .delivery import Ack, Link, WorkerHello, WorkerInfo

log = logging.getLogger("hivegrid.runtime")


class Sessions:
    def __init__(
        self,
        core: Core,
        commit: Commit,
        links: dict[str, Link],
        limits: Limits,
        refused: Counter[str],
        *,
        clock: Callable[[], float],
        heartbeat_interval_s: float,
        session_timeout_s: float,
    ) -> None:
        self.core = core
        self.commit = commit
        self.links = links
        self.limits = limits
        self.refused = refused
        self.clock = clock
        self.heartbeat_interval_s = heartbeat_interval_s
        self.session_timeout_s = session_timeout_s
        self._ids = 0

    def open(self, hello: WorkerHello) -> tuple[Link, list[AttemptRef]]:
        """Registers a worker stream (its Hello checked against the limits already); returns
        its link and the held attempts it keeps. Raises LimitExceeded past max_streams."""
        limits = self.limits
        if len(self.links) >= limits.max_streams:
            self.refused["max_streams"] += 1
            raise LimitExceeded(
                f"the coordinator serves {len(self.links)} worker streams, the limit max_streams"
            )
        slots = min(hello.slots, limits.max_slots)
        self._ids += 1
        session_id = f"s-{os.urandom(3).hex()}-{self._ids}"
        now = self.clock()
        link = Link(session_id, hello, now, slots=slots, max_unacked=limits.max_unacked_results)
        link.progress_tokens = limits.max_progress_per_s
        link.progress_at = time.monotonic()
        self.links[session_id] = link
        kept = self.core.open_session(
            OpenSession(
                session_id, hello.worker_name, hello.agents, hello.labels, slots, hello.held
            ),
            now=now,
        )
        self.commit.flush()
        return link, kept

    def results(self, link: Link, answers: Sequence[Answer]) -> None:
        """A worker's answers (judged at the door already); their acks go out with the commit
        that covers them."""
        core = self.core
        now = self.clock()
        session_id = link.id
        acks: list[Ack] = []
        for answer in answers:
            if answer.refused:
                self.refused["max_result_bytes"] += 1
            status, message = core.finish_attempt(session_id, answer, now=now)
            acks.append(Ack(answer, status, message))
        link.unacked += len(acks)
        self.commit.flush(link, acks)

    def progress(self, link: Link, items: Iterable[ReportProgress]) -> None:
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
            self.core.report_progress(item, now=now)
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
        self.commit.flush()

    def close(self, link: Link, reason: str) -> None:
        if self.links.pop(link.id, None) is None:
            return
        link.closed = link.closed or reason
        self.core.close_session(link.id, reason=reason, now=self.clock())
        self.commit.flush()

    def drain(self, worker: str) -> int:
        """Asks the workers with that session id or name to drain; returns how many."""
        count = 0
        for link in self.links.values():
            if worker in (link.id, link.worker_name) and self.core.drain_session(link.id):
                link.drain_requested = True
                link.wake.set()
                count += 1
        return count

    def workers(self) -> list[WorkerInfo]:
        out = []
        sessions = self.core.sessions
        for link in self.links.values():
            session = sessions.get(link.id)
            out.append(
                WorkerInfo(
                    session_id=link.id,
                    worker_name=link.worker_name,
                    language=link.language,
                    sdk_version=link.sdk_version,
                    agents=tuple(link.agents),
                    labels=link.labels,
                    slots=link.slots,
                    in_flight=len(session.in_flight) if session else 0,
                    draining=session.draining if session else True,
                    connected_at=link.connected_at,
                    completed=session.completed if session else 0,
                )
            )
        return out

    async def reap(self, close: Callable[[Link, str], None]) -> None:
        """Ends sessions that went silent past the session timeout, and those whose worker
        stopped reading (a write to it has not finished for as long), through `close`."""
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
                close(link, reason)
                if link.task is not None and (link.writing_since or not link.readable.is_set()):
                    # Its writer is stuck in a write that will never end, or soon will be.
                    link.task.cancel()


__all__ = ["Sessions"]
