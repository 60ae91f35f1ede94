"""Not the core itself: what carries its orders to a worker must keep the order they were made in
(issue 10, point 6). A worker handles a Push's acks, then its assignments, then its cancels; so
a Cancel must never reach a worker in an earlier Push than its attempt's Assignment.

The framing (coordinator/service/protocol.py) is pure and tested as such; the runtime's side,
that nothing it delivers overtakes a commit still in flight, runs a real runtime on a real
SQLite file whose writer is held."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hivegrid.coordinator.core import (
    AckStatus,
    Answer,
    CancelOrder,
    CancelRun,
    Core,
    NodeSpec,
    OpenSession,
    Outcome,
    SubmitRun,
)
from hivegrid.coordinator.runtime import Ack, Link, Runtime, WorkerHello
from hivegrid.coordinator.service.protocol import ASSIGN_CHUNK, take_messages
from hivegrid.coordinator.store import SqliteStore

WAIT = 30.0


def refs(items: Sequence[Any]) -> list[tuple[str, str, int]]:
    return [(x.ref.run_id, x.ref.node_id, x.ref.lease) for x in items]


def dispatched(n: int) -> tuple[Core, Link]:
    """A core that dispatched n nodes to one session, and that session's link."""
    core = Core(lease_epoch=1)
    core.submit_run(SubmitRun("r", tuple(NodeSpec(f"n{i}", "a") for i in range(n))), now=0)
    core.open_session(OpenSession("s", "w", ("a",), slots=n), now=0)
    core.dispatch()
    link = Link("s", WorkerHello("w", agents=("a",), slots=n), 0.0, slots=n, max_unacked=2)
    link.assignments.extend(core.assignments)
    return core, link


@pytest.mark.parametrize("n", [3, ASSIGN_CHUNK * 2 + 88])
def test_cancels_travel_in_the_last_push_acks_in_the_first(n: int) -> None:
    core, link = dispatched(n)
    assigned = list(link.assignments)
    first = assigned[0]
    answer = Answer("r", first.node_id, first.attempt, first.lease, Outcome.SUCCEEDED)
    link.acks.extend([Ack(answer, AckStatus.COMMITTED, ""), Ack(answer, AckStatus.STALE, "x")])
    link.unacked = 2
    link.readable.clear()
    core.take_outbox()
    core.cancel_run(CancelRun("r", "enough"), now=1)
    link.cancels.extend(core.cancels)  # every attempt, the last assigned one included
    link.drain_requested = True

    messages = take_messages(link)
    pushes = [m.push for m in messages if m.WhichOneof("msg") == "push"]
    assert len(pushes) == -(-n // ASSIGN_CHUNK)
    assert messages[-1].WhichOneof("msg") == "drain_request"
    assert [a.status for a in pushes[0].acks] == [1, 2]
    assert all(not p.acks for p in pushes[1:])
    assert all(not p.cancels for p in pushes[:-1])
    assert refs(pushes[-1].cancels) == [(c.run_id, c.node_id, c.lease) for c in core.cancels]
    sent = [a for p in pushes for a in p.assignments]
    assert refs(sent) == [(a.run_id, a.node_id, a.lease) for a in assigned]
    # The acks taken count as sent: the reader may read again.
    assert link.unacked == 0 and link.readable.is_set()
    assert take_messages(link) == []


def test_a_push_stays_under_the_message_limit_whatever_its_assignments_carry() -> None:
    # Four dependents of one large result, dispatched together to one session: cut by count
    # alone they made one Push of four times the result, over the limit the worker was given,
    # and the stream died and the attempts were dispatched again, in a loop.
    limit = 1 << 20
    core = Core(lease_epoch=1)
    specs = (NodeSpec("big", "a"), *(NodeSpec(f"d{i}", "a", b"{}", ("big",)) for i in range(4)))
    core.submit_run(SubmitRun("r", specs), now=0)
    core.open_session(OpenSession("s", "w", ("a",), slots=5), now=0)
    core.dispatch()
    (big,) = core.assignments
    result = b'"' + b"x" * 600_000 + b'"'
    core.finish_attempt("s", Answer("r", "big", big.attempt, big.lease, 1, result), now=0)
    core.dispatch()
    dependents = core.assignments[1:]
    assert len(dependents) == 4
    link = Link("s", WorkerHello("w", agents=("a",), slots=5), 0.0, slots=5, max_unacked=9)
    link.assignments.extend(dependents)
    core.take_outbox()
    core.cancel_run(CancelRun("r", "enough"), now=1)
    link.cancels.extend(core.cancels)

    pushes = [m.push for m in take_messages(link, limit)]
    assert len(pushes) == 4
    assert all(p.ByteSize() <= limit for p in pushes)
    sent = [a for p in pushes for a in p.assignments]
    assert refs(sent) == [(a.run_id, a.node_id, a.lease) for a in dependents]
    assert all(not p.cancels for p in pushes[:-1]) and len(pushes[-1].cancels) == 4


def test_an_assignment_carries_what_the_core_put_in_it() -> None:
    core = Core(lease_epoch=1)
    specs = (
        NodeSpec("a", "x"),
        NodeSpec("b", "x"),
        NodeSpec("j", "x", b"{}", ("b", "a"), timeout_s=3, can_mutate=True, metadata={"k": "v"}),
    )
    core.submit_run(SubmitRun("r", specs), now=0)
    core.open_session(OpenSession("s", "w", ("x",), slots=3), now=0)
    core.dispatch()
    for a in core.assignments:
        core.finish_attempt(
            "s", Answer("r", a.node_id, a.attempt, a.lease, 1, a.node_id.encode()), now=0
        )
    core.dispatch()
    (j,) = core.assignments[2:]
    link = Link("s", WorkerHello("w", agents=("x",), slots=3), 0.0, slots=3, max_unacked=9)
    link.assignments.append(j)
    (msg,) = take_messages(link)
    (wire,) = msg.push.assignments
    assert (wire.ref.run_id, wire.ref.node_id, wire.ref.attempt, wire.ref.lease) == (
        "r",
        "j",
        1,
        j.lease,
    )
    assert (wire.agent, wire.input, wire.timeout_s, wire.can_mutate) == ("x", b"{}", 3, True)
    assert [(d.node_id, d.result) for d in wire.deps] == [("b", b"b"), ("a", b"a")]
    assert dict(wire.metadata) == {"k": "v"}


class _One:
    """A one-node submission, as the service would hand it over."""

    size = 1
    request_id = ""

    def decode(self) -> SubmitRun:
        return SubmitRun("r", (NodeSpec("x", "a"),))


@pytest.mark.asyncio
async def test_nothing_delivered_overtakes_a_commit_in_flight(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "hg.db")
    runtime = Runtime(store)
    await runtime.start()
    link, _ = runtime.open_session(WorkerHello("w", agents=("a",), slots=4))
    entered, release = threading.Event(), threading.Event()
    append = store.append

    def held(*args: Any, **kwargs: Any) -> None:
        entered.set()
        release.wait(WAIT)
        append(*args, **kwargs)

    store.append = held  # type: ignore[method-assign]
    try:
        await runtime.submit(_One())  # submitted and dispatched: its commit is held
        assert await asyncio.to_thread(entered.wait, WAIT), "the commit never began"
        node = runtime.core.runs["r"].nodes["x"]
        # An order with nothing to log (none the core makes today, but nothing may rely on
        # that): it must wait behind the commit that carries the assignment it names.
        runtime.core.cancels.append(CancelOrder(link.id, node, "test"))
        runtime._commit.flush()
        assert (link.assignments, link.cancels) == ([], [])
        release.set()
        await runtime.durable()
        (push,) = [m.push for m in take_messages(link)]
        assert [a.ref.node_id for a in push.assignments] == ["x"]
        assert [c.ref.node_id for c in push.cancels] == ["x"]
    finally:
        release.set()
        store.append = append  # type: ignore[method-assign]
        await runtime.stop()
