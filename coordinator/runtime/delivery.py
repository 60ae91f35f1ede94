"""Delivery to workers: each worker stream's `Link`, its outbound queues and its flow control.

The runtime queues what the core ordered (assignments, cancels) and the acks of what a worker
sent, once the commit that covers them is durable; the stream's writer (the service layer)
takes everything queued at once (`Link.take`) and frames it for the wire. Order is the
protocol's: acks, then assignments, then cancels (a cancel may name an attempt whose assignment
goes out in the same take).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..core import AckStatus, Answer, Assignment, AttemptRef, CancelOrder


@dataclass(slots=True, frozen=True)
class WorkerHello:
    """A worker's Hello, as the runtime needs it."""

    worker_name: str
    language: str = ""
    sdk_version: str = ""
    agents: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    slots: int = 1
    held: tuple[AttemptRef, ...] = ()


@dataclass(slots=True, frozen=True)
class WorkerInfo:
    """One worker stream, for ListWorkers."""

    session_id: str
    worker_name: str
    language: str
    sdk_version: str
    agents: tuple[str, ...]
    labels: Mapping[str, str]
    slots: int
    in_flight: int
    draining: bool
    connected_at: float
    completed: int


class Ack(NamedTuple):
    """The answer to one result (its ref is the answer's)."""

    answer: Answer
    status: AckStatus
    message: str


class Outbound(NamedTuple):
    """All that was queued for a worker, in the order it must reach it."""

    acks: list[Ack]
    assignments: list[Assignment]
    cancels: list[CancelOrder]
    drain: bool


class Link:
    """A worker session as the runtime sees it: identity, outbound queues, flow control."""

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
        self, session_id: str, hello: WorkerHello, now: float, *, slots: int, max_unacked: int
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
        self.assignments: list[Assignment] = []
        self.acks: list[Ack] = []
        self.cancels: list[CancelOrder] = []
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

    def take(self) -> Outbound:
        """Everything queued, at once. The acks taken count as sent: a reader paused at
        `max_unacked` may read again."""
        acks, assignments, cancels = self.acks, self.assignments, self.cancels
        if acks or assignments or cancels:
            self.acks, self.assignments, self.cancels = [], [], []
            if acks:
                self.unacked -= len(acks)
                if self.unacked < self.max_unacked:
                    self.readable.set()
        drain = self.drain_requested
        self.drain_requested = False
        return Outbound(acks, assignments, cancels, drain)


def deliver(
    links: Mapping[str, Link], assignments: Sequence[Assignment], cancels: Sequence[CancelOrder]
) -> None:
    """Queues the core's orders on their sessions' links (a session gone since is skipped: its
    attempts were released when it closed). Assignments before cancels, as they were made."""
    for a in assignments:
        link = links.get(a.session_id)
        if link is not None:
            link.assignments.append(a)
            link.wake.set()
    for c in cancels:
        link = links.get(c.session_id)
        if link is not None:
            link.cancels.append(c)
            link.wake.set()


def send_acks(link: Link, acks: list[Ack]) -> None:
    if link.closed:
        link.unacked -= len(acks)
    link.acks.extend(acks)
    link.wake.set()


__all__ = ["Ack", "Link", "Outbound", "WorkerHello", "WorkerInfo", "deliver", "send_acks"]
