"""The SDK against an in-process fake coordinator over real loopback gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.worker import Context, CoordinatorRefusedError, NonRetryableError, Worker

from .conftest import WAIT, FakeCoordinator, assignment, changes

Run = Callable[..., None]


@contextlib.asynccontextmanager
async def serving(w: Worker, fake: FakeCoordinator) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(w.serve(coordinator=fake.address))
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def finished(task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(WAIT):
        await task


def gated_worker(slots: int = 4) -> tuple[Worker, asyncio.Event, list[str]]:
    """A worker whose `block` agent waits for the gate; `started` lists the nodes it began."""
    w = Worker(name="t", slots=slots)
    gate = asyncio.Event()
    started: list[str] = []

    @w.agent("block")
    async def block(ctx: Context) -> object:
        started.append(ctx.node_id)
        changes.notify()
        await gate.wait()
        return {"node": ctx.node_id}

    return w, gate, started


def test_handshake(with_fake: Run, caplog: pytest.LogCaptureFixture) -> None:
    w = Worker(name="hs", slots=3, labels={"gpu": "a100"})
    w.register("b", lambda ctx: None)
    w.register("a", lambda ctx: None)

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            w.drain()
            await finished(task)
        hello = session.hello
        assert hello.worker_name == "hs"
        assert hello.language == "python"
        assert hello.sdk_version == "0.1.0"
        assert hello.protocol_version == 2
        assert list(hello.agents) == ["a", "b"]
        assert dict(hello.labels) == {"gpu": "a100"}
        assert hello.slots == 3
        assert list(hello.held) == []
        assert session.messages("drain") and session.half_closed

    with caplog.at_level(logging.INFO, logger="hivegrid.worker"):
        with_fake(body)
    assert "hivegrid worker hs connected: session s1" in caplog.messages


def test_results_are_batched_and_acked(with_fake: Run) -> None:
    w, gate, started = gated_worker(slots=8)
    items = [assignment(f"n{i}", "block") for i in range(8)]

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(*items)
            await fake.wait_until(lambda: len(started) == 8)
            gate.set()
            results = await session.wait_results(8)
            assert len(session.messages("results")) == 1, "8 results ready at once: one message"
            assert {r.ref.node_id for r in results} == {f"n{i}" for i in range(8)}
            for r in results:
                assert r.outcome == wpb.OUTCOME_SUCCEEDED
                assert r.ref == next(a.ref for a in items if a.ref.node_id == r.ref.node_id)
            session.ack(r.ref for r in results)
            # Acked results are forgotten: the drain ends without waiting for anything.
            w.drain()
            await finished(task)
        assert len(fake.sessions) == 1
        assert len(session.results()) == 8

    with_fake(body)


def test_batches_respect_max_batch(with_fake: Run) -> None:
    w = Worker(name="t", slots=7)

    @w.agent("noop")
    async def noop(ctx: Context) -> object:
        return None

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(*[assignment(f"n{i}", "noop") for i in range(7)])
            await session.wait_results(7)
            assert all(len(m.items) <= 3 for m in session.messages("results"))
            w.drain()
            await finished(task)
        assert all(r.result == b"" for r in session.results())  # None is the empty byte string

    with_fake(body, max_batch=3, auto_ack=True)


def test_slots_respected_even_if_the_coordinator_oversends(with_fake: Run) -> None:
    w = Worker(name="t", slots=2)
    running = 0
    most = 0
    gates = {f"n{i}": asyncio.Event() for i in range(5)}
    started: list[str] = []

    @w.agent("block")
    async def block(ctx: Context) -> object:
        nonlocal running, most
        running += 1
        most = max(most, running)
        started.append(ctx.node_id)
        changes.notify()
        await gates[ctx.node_id].wait()
        running -= 1
        return None

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            assert session.hello.slots == 2
            session.assign(*[assignment(node, "block") for node in gates])
            await fake.wait_until(lambda: len(started) == 2)
            for count, gate in enumerate(gates.values(), 1):
                gate.set()
                await session.wait_results(count)
            w.drain()
            await finished(task)
        assert most == 2
        assert started == list(gates)

    with_fake(body, auto_ack=True)


def test_context_fields(with_fake: Run) -> None:
    w = Worker(name="t", slots=1)
    seen: dict[str, Any] = {}

    @w.agent("look")
    async def look(ctx: Context) -> object:
        seen.update(
            run_id=ctx.run_id,
            node_id=ctx.node_id,
            attempt=ctx.attempt,
            agent=ctx.agent,
            input=ctx.input,
            deps=ctx.deps,
            metadata=dict(ctx.metadata),
            can_mutate=ctx.can_mutate,
            timeout_s=ctx.timeout_s,
            cancelled=ctx.cancelled,
        )
        return "ok"

    a = assignment(
        "n1", "look", b'{"q": [1, 2]}', run_id="run9", attempt=3, deps=[("d", b"5"), ("e", b"")]
    )
    a.metadata["k"] = "v"
    a.timeout_s = 2.5

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(a)
            (result,) = await session.wait_results(1)
            assert result.result == b'"ok"'
            w.drain()
            await finished(task)

    with_fake(body, auto_ack=True)
    assert seen == {
        "run_id": "run9",
        "node_id": "n1",
        "attempt": 3,
        "agent": "look",
        "input": {"q": [1, 2]},
        "deps": {"d": 5, "e": None},
        "metadata": {"k": "v"},
        "can_mutate": False,
        "timeout_s": 2.5,
        "cancelled": False,
    }


def test_failures(with_fake: Run) -> None:
    w = Worker(name="t", slots=4)

    @w.agent("boom")
    async def boom(ctx: Context) -> object:
        raise ValueError("kaput")

    @w.agent("final")
    def final(ctx: Context) -> object:
        raise NonRetryableError("never again")

    @w.agent("unjson")
    async def unjson(ctx: Context) -> object:
        ctx.add_node("x", "echo")
        return {1, 2}

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(
                assignment("a", "boom"),
                assignment("b", "final"),
                assignment("c", "unjson", can_mutate=True),
                assignment("d", "nope"),
            )
            results = {r.ref.node_id: r for r in await session.wait_results(4)}
            w.drain()
            await finished(task)
        for r in results.values():
            assert r.outcome == wpb.OUTCOME_FAILED
            assert not r.mutations
        errors = {node: (r.error.retryable, r.error.kind) for node, r in results.items()}
        assert errors == {
            "a": (True, "agent"),
            "b": (False, "agent"),
            "c": (False, "agent"),
            "d": (False, "unknown_agent"),
        }
        assert results["a"].error.message == "kaput"
        assert results["b"].error.message == "never again"
        assert "nope" in results["d"].error.message

    with_fake(body, auto_ack=True)


def test_cancel_reaches_async_and_sync_agents(with_fake: Run) -> None:
    w = Worker(name="t", slots=3)
    started: list[str] = []
    events: list[str] = []

    def begin(ctx: Context) -> None:
        started.append(ctx.node_id)
        changes.notify()

    @w.agent("wait")
    async def wait(ctx: Context) -> object:
        begin(ctx)
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            events.append("async cancelled")
            raise
        return None

    @w.agent("watch")
    async def watch(ctx: Context) -> object:
        async def watcher() -> None:  # a helper task the SDK does not cancel by itself
            await ctx.wait_cancelled()
            events.append("watched")

        helper = asyncio.create_task(watcher())
        begin(ctx)
        await asyncio.sleep(WAIT * 10)
        await helper
        return None

    @w.agent("poll")
    def poll(ctx: Context) -> object:
        ctx._runner.loop.call_soon_threadsafe(begin, ctx)
        deadline = time.monotonic() + WAIT
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)
        events.append(f"sync saw cancelled={ctx.cancelled}")
        return {"partial": True}

    items = [assignment("a", "wait"), assignment("b", "watch"), assignment("c", "poll")]

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(*items)
            await fake.wait_until(lambda: len(started) == 3)
            for a in items:
                session.cancel(a.ref)
            results = await session.wait_results(3)
            await fake.wait_until(lambda: len(events) == 3)
            w.drain()
            await finished(task)
        assert {r.ref.node_id: r.outcome for r in results} == {
            "a": wpb.OUTCOME_CANCELLED,
            "b": wpb.OUTCOME_CANCELLED,
            "c": wpb.OUTCOME_CANCELLED,
        }
        assert sorted(events) == ["async cancelled", "sync saw cancelled=True", "watched"]

    with_fake(body, auto_ack=True)


def test_progress_in_order_and_before_the_result(with_fake: Run) -> None:
    w = Worker(name="t", slots=2)

    @w.agent("steps")
    async def steps(ctx: Context) -> object:
        for i in range(1, 51):
            ctx.progress({"step": i})
            if i % 10 == 0:
                await asyncio.sleep(0)
        return "done"

    @w.agent("sync_steps")
    def sync_steps(ctx: Context) -> object:
        for i in range(1, 51):
            ctx.progress(i)
        return "done"

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(assignment("a", "steps"), assignment("s", "sync_steps"))
            await session.wait_results(2)
            w.drain()
            await finished(task)
        got: dict[str, list[bytes]] = {"a": [], "s": []}
        for p in session.progress():
            got[p.ref.node_id].append(p.data)
        assert got["a"] == [b'{"step":%d}' % i for i in range(1, 51)]
        assert got["s"] == [b"%d" % i for i in range(1, 51)]
        assert len(session.messages("progress")) < 100, "progress items are batched"
        # Each node's progress is sent before its result.
        for node in got:
            sent = [
                i
                for i, m in enumerate(session.received)
                if any(p.ref.node_id == node for p in m.progress.items)
            ]
            answered = next(
                i
                for i, m in enumerate(session.received)
                if any(r.ref.node_id == node for r in m.results.items)
            )
            assert max(sent) < answered

    with_fake(body, auto_ack=True)


def test_reconnect_holds_and_resends_unacked(with_fake: Run) -> None:
    w, gate, started = gated_worker(slots=4)

    @w.agent("quick")
    async def quick(ctx: Context) -> object:
        return {"quick": ctx.node_id}

    slow = assignment("slow", "block")
    done = assignment("done", "quick")
    acked = assignment("acked", "quick")
    probe = assignment("probe", "quick")

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            first = await fake.session(0)
            first.assign(slow, done, acked)
            results = await first.wait_results(2)
            assert {r.ref.node_id for r in results} == {"done", "acked"}
            first.ack([acked.ref])
            # The worker handles a stream's messages in order: once the probe is answered,
            # the ack before it has been seen.
            first.assign(probe)
            await first.wait_results(3)
            assert started == ["slow"]
            first.kill()
            second = await fake.session(1)
            assert {(h.node_id, h.lease) for h in second.hello.held} == {
                ("slow", slow.ref.lease),
                ("done", done.ref.lease),
                ("probe", probe.ref.lease),
            }
            resent = await second.wait_results(2)
            assert [r.ref for r in resent] == [done.ref, probe.ref]
            assert resent[0].result == b'{"quick":"done"}'
            gate.set()
            final = await second.wait_results(3)
            assert final[2].ref == slow.ref
            second.ack(r.ref for r in final)
            w.drain()
            await finished(task)
        assert started == ["slow"], "the running agent kept running across the reconnect"

    with_fake(body)


def test_one_push_carries_an_ack_a_cancel_and_an_assignment(with_fake: Run) -> None:
    w, _, started = gated_worker(slots=2)

    @w.agent("quick")
    async def quick(ctx: Context) -> object:
        return {"quick": ctx.node_id}

    done = assignment("done", "quick")
    blocked = assignment("blocked", "block")
    fresh = assignment("fresh", "quick")

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            first = await fake.session(0)
            first.assign(done, blocked)
            await first.wait_results(1)
            await fake.wait_until(lambda: started == ["blocked"])
            first.send(
                wpb.ConnectResponse(
                    push=wpb.Push(
                        acks=[wpb.Ack(ref=done.ref, status=wpb.ACK_STATUS_COMMITTED)],
                        cancels=[wpb.Cancel(ref=blocked.ref, reason="pruned")],
                        assignments=[fresh],
                    )
                )
            )
            results = await first.wait_results(3)
            assert {r.ref.node_id: r.outcome for r in results[1:]} == {
                "blocked": wpb.OUTCOME_CANCELLED,
                "fresh": wpb.OUTCOME_SUCCEEDED,
            }
            first.kill()
            second = await fake.session(1)
            # The ack was seen: only the two unacked results are held and sent again.
            assert {h.node_id for h in second.hello.held} == {"blocked", "fresh"}
            resent = await second.wait_results(2)
            second.ack(r.ref for r in resent)
            w.drain()
            await finished(task)

    with_fake(body)


def test_session_timeout_reconnects(with_fake: Run) -> None:
    w, _, _ = gated_worker()

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            await fake.session(0)
            # The fake sends nothing: after session_timeout_s the worker gives the stream up.
            await fake.session(1)
            w.drain()
            await finished(task)
        assert fake.sessions[0].messages("heartbeat"), "the idle worker sent heartbeats"

    with_fake(body, heartbeat_interval_s=0.05, session_timeout_s=0.3)


def test_drain_finishes_in_flight_work_and_waits_for_acks(with_fake: Run) -> None:
    w, gate, started = gated_worker()

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(assignment("n1", "block"))
            await fake.wait_until(lambda: started == ["n1"])
            w.drain()
            await fake.wait_until(lambda: bool(session.messages("drain")))
            gate.set()
            (result,) = await session.wait_results(1)
            assert not task.done() and not session.half_closed, "waits for the ack"
            session.ack([result.ref])
            await finished(task)
        assert session.half_closed
        assert result.outcome == wpb.OUTCOME_SUCCEEDED

    with_fake(body)


def test_drain_request_from_the_coordinator(with_fake: Run) -> None:
    w, _, _ = gated_worker()

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.request_drain()
            await finished(task)
        assert session.messages("drain") and session.half_closed

    with_fake(body)


def test_refusal_raises_a_clear_error(with_fake: Run) -> None:
    w, _, _ = gated_worker()

    async def body(fake: FakeCoordinator) -> None:
        with pytest.raises(CoordinatorRefusedError, match="protocol version 1 is not supported"):
            await asyncio.wait_for(w.serve(coordinator=fake.address), WAIT)
        assert len(fake.hellos) == 1, "a refused Hello is not retried"

    with_fake(body, refuse="protocol version 1 is not supported")


def test_drain_while_disconnected_returns() -> None:
    w, _, _ = gated_worker()
    lost: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lost.append(record.getMessage())
            changes.notify()

    async def body() -> None:
        changes.reset()
        task = asyncio.create_task(w.serve(coordinator="127.0.0.1:1"))
        await changes.wait_until(lambda: any("reconnecting" in m for m in lost))
        w.drain()
        await finished(task)

    handler = Watch(logging.WARNING)
    logging.getLogger("hivegrid.worker").addHandler(handler)
    try:
        asyncio.run(body())
    finally:
        logging.getLogger("hivegrid.worker").removeHandler(handler)


def test_missing_address_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIVEGRID_COORDINATOR", raising=False)
    w, _, _ = gated_worker()
    with pytest.raises(ValueError, match="HIVEGRID_COORDINATOR"):
        asyncio.run(w.serve())


def test_mutations_travel_with_the_result(with_fake: Run) -> None:
    w = Worker(name="t", slots=1)

    @w.agent("grow")
    async def grow(ctx: Context) -> object:
        ctx.add_node("k", "echo", {"x": 1}, depends_on=["a"], can_mutate=True)
        ctx.add_edge("k", "z")
        return {"grew": 1}

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(assignment("a", "grow", can_mutate=True))
            (result,) = await session.wait_results(1)
            w.drain()
            await finished(task)
        assert result.outcome == wpb.OUTCOME_SUCCEEDED
        assert result.result == b'{"grew":1}'
        assert [m.WhichOneof("kind") for m in result.mutations] == ["add_node", "add_edge"]
        node = result.mutations[0].add_node.node
        assert (node.id, node.agent, node.input, list(node.depends_on), node.can_mutate) == (
            "k",
            "echo",
            b'{"x":1}',
            ["a"],
            True,
        )

    with_fake(body, auto_ack=True)


def test_sync_functions_and_async_callables(with_fake: Run) -> None:
    w = Worker(name="t", slots=2)
    threads: set[str] = set()

    def plain(ctx: Context) -> object:
        threads.add(threading.current_thread().name)
        return {"double": ctx.input * 2}

    class Callable_:
        async def __call__(self, ctx: Context) -> object:
            threads.add(threading.current_thread().name)
            return {"called": ctx.node_id}

    w.register("plain", plain)
    w.register("callable", Callable_())

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(assignment("p", "plain", b"21"), assignment("c", "callable"))
            results = {r.ref.node_id: r.result for r in await session.wait_results(2)}
            w.drain()
            await finished(task)
        assert results == {"p": b'{"double":42}', "c": b'{"called":"c"}'}
        assert threading.current_thread().name in threads, "the async callable ran on the loop"
        assert any(name.startswith("hivegrid-t") for name in threads)

    with_fake(body, auto_ack=True)


def test_a_result_too_large_for_the_coordinator_fails_the_attempt(with_fake: Run) -> None:
    w = Worker(name="t", slots=1)

    @w.agent("big")
    async def big(ctx: Context) -> object:
        return "x" * 5000

    async def body(fake: FakeCoordinator) -> None:
        async with serving(w, fake) as task:
            session = await fake.session(0)
            session.assign(assignment("b", "big"))
            (result,) = await session.wait_results(1)
            w.drain()
            await finished(task)
        assert result.outcome == wpb.OUTCOME_FAILED and not result.error.retryable
        assert "larger than the coordinator accepts" in result.error.message

    with_fake(body, auto_ack=True, max_message_bytes=4096)


def test_cancelling_serve_stops_running_agents(with_fake: Run) -> None:
    w = Worker(name="t", slots=1)
    stopped: list[str] = []
    started = asyncio.Event()

    @w.agent("forever")
    async def forever(ctx: Context) -> object:
        started.set()
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            stopped.append(ctx.node_id)
            changes.notify()
            raise
        return None

    async def body(fake: FakeCoordinator) -> None:
        task = asyncio.create_task(w.serve(coordinator=fake.address))
        session = await fake.session(0)
        session.assign(assignment("f", "forever"))
        await asyncio.wait_for(started.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        await fake.wait_until(lambda: session.ended and stopped == ["f"])

    with_fake(body)
