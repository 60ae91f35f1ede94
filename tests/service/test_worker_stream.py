"""The worker protocol over a real loopback server, driven message by message."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hivegrid.coordinator.server import Coordinator
from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb
from tests.support.inprocess import Client
from tests.support.names import states
from tests.support.rawworker import RawWorker
from tests.support.values import node
from tests.support.wait import WAIT

BAD_HELLOS = {
    "wrong version": (dict(version=1), "protocol version 1 is not supported"),
    "no agents": (dict(agents=()), "at least one agent"),
    "no slots": (dict(slots=0), "slots must be at least 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_HELLOS))
@pytest.mark.asyncio
async def test_bad_hello_is_refused_with_a_reason(case: str, server: Coordinator) -> None:
    kwargs, reason = BAD_HELLOS[case]

    w = await RawWorker(server.address, **kwargs).connect()  # type: ignore[arg-type]
    assert w.welcome is None
    assert w.refusal is not None and reason in w.refusal.reason
    await asyncio.wait_for(w.ended.wait(), WAIT)
    await w.close()


@pytest.mark.asyncio
async def test_first_message_must_be_hello(server: Coordinator) -> None:
    w = RawWorker(server.address)
    w.first = wpb.ConnectRequest(heartbeat=wpb.Heartbeat())
    await w.connect()
    assert w.refusal is not None and "must be Hello" in w.refusal.reason
    await w.close()


@pytest.mark.asyncio
async def test_welcome_announces_timing_and_limits() -> None:
    async with Coordinator(heartbeat_interval_s=0.5, session_timeout_s=2.0) as c:
        w = await RawWorker(c.address).connect()
        assert w.welcome is not None
        assert w.welcome.protocol_version == 2
        assert w.welcome.heartbeat_interval_s == 0.5
        assert w.welcome.session_timeout_s == 2.0
        assert w.welcome.max_batch > 0 and w.welcome.max_message_bytes > 0
        assert w.welcome.session_id
        await w.close()


@pytest.mark.asyncio
async def test_results_flow_into_dependents_and_acks_follow(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address).connect()
    run_id = await aclient.submit(node("a"), node("b", deps=["a"]))
    (a,) = await w.take()
    assert a.ref.node_id == "a" and a.ref.attempt == 1 and a.ref.lease > 0
    w.answer(a, json.dumps({"x": 1}).encode())
    ack = await w.ack()
    assert ack.status == wpb.ACK_STATUS_COMMITTED and ack.ref == a.ref
    (b,) = await w.take()
    assert b.ref.node_id == "b"
    assert [(d.node_id, json.loads(d.result)) for d in b.deps] == [("a", {"x": 1})]
    w.answer(b)
    run = await aclient.wait_end(run_id)
    assert run.run.state == gpb.RUN_STATE_SUCCEEDED
    assert states(run) == {"a": "SUCCEEDED", "b": "SUCCEEDED"}
    await w.close()


@pytest.mark.asyncio
async def test_stale_and_malformed_results_are_rejected_and_change_nothing(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address).connect()
    run_id = await aclient.submit(node("a"))
    (a,) = await w.take()
    wrong = wpb.AssignmentRef()
    wrong.CopyFrom(a.ref)
    wrong.lease += 1
    w.answer(wrong)
    ack = await w.ack()
    assert ack.status == wpb.ACK_STATUS_STALE
    w.send(wpb.ConnectRequest(results=wpb.Results(items=[wpb.Result(ref=a.ref)])))
    ack = await w.ack()
    assert ack.status == wpb.ACK_STATUS_INVALID
    assert states(await aclient.get(run_id)) == {"a": "RUNNING"}
    w.answer(a)
    assert (await w.ack()).status == wpb.ACK_STATUS_COMMITTED
    w.answer(a)  # the same answer again: it gets the ack the first one got
    assert (await w.ack()).status == wpb.ACK_STATUS_COMMITTED
    run = await aclient.wait_end(run_id)
    finished = [e for e in await aclient.events(run_id) if e.HasField("attempt_finished")]
    assert len(finished) == 1
    assert run.run.state == gpb.RUN_STATE_SUCCEEDED
    await w.close()


@pytest.mark.asyncio
async def test_never_more_assignments_than_slots(server: Coordinator, aclient: Client) -> None:
    w = await RawWorker(server.address, slots=2).connect()
    run_id = await aclient.submit(*[node(f"n{i}") for i in range(7)])
    held: list[wpb.Assignment] = await w.take(2)
    for _ in range(5):
        # Two are held and unanswered: nothing more may arrive until one is answered.
        assert w.assignments.empty()
        w.answer(held.pop(0))
        held.extend(await w.take())
        await w.ack()
    for a in held:
        w.answer(a)
    run = await aclient.wait_end(run_id)
    assert run.run.counts.succeeded == 7
    await w.close()


@pytest.mark.asyncio
async def test_lost_worker_returns_its_nodes_without_spending_a_retry(
    server: Coordinator, aclient: Client
) -> None:
    w1 = await RawWorker(server.address, name="first").connect()
    run_id = await aclient.submit(node("a"))
    (a,) = await w1.take()
    await w1.drop()
    w2 = await RawWorker(server.address, name="second").connect()
    (again,) = await w2.take()
    assert again.ref.node_id == "a" and again.ref.attempt == 2
    w2.answer(again)
    run = await aclient.wait_end(run_id)
    assert states(run) == {"a": "SUCCEEDED"}
    events = await aclient.events(run_id)
    lost = [e.attempt_lost for e in events if e.HasField("attempt_lost")]
    assert [(x.node_id, x.attempt) for x in lost] == [("a", 1)]
    # The dead session's late answer is stale.
    w3 = await RawWorker(server.address, name="late").connect()
    w3.answer(a)
    assert (await w3.ack()).status == wpb.ACK_STATUS_STALE
    await w2.close()
    await w3.close()


@pytest.mark.asyncio
async def test_reconnecting_worker_keeps_its_current_attempt(
    server: Coordinator, aclient: Client
) -> None:
    w1 = await RawWorker(server.address).connect()
    run_id = await aclient.submit(node("a"))
    (a,) = await w1.take()
    await w1.drop()
    bogus = wpb.AssignmentRef(run_id=run_id, node_id="a", attempt=9, lease=12345)
    w2 = await RawWorker(server.address, held=[a.ref, bogus]).connect()
    assert w2.welcome is not None and list(w2.welcome.held) == [a.ref]
    w2.answer(a)
    assert (await w2.ack()).status == wpb.ACK_STATUS_COMMITTED
    run = await aclient.wait_end(run_id)
    assert states(run) == {"a": "SUCCEEDED"}
    assert run.nodes[0].attempts == 1
    await w2.close()


@pytest.mark.asyncio
async def test_silent_session_expires() -> None:
    async with Coordinator(heartbeat_interval_s=0.1, session_timeout_s=0.4) as c:
        client = Client(c.address)
        w = await RawWorker(c.address).connect()
        run_id = await client.submit(node("a"))
        await w.take()  # and then never says anything again
        await asyncio.wait_for(w.ended.wait(), WAIT)
        events = await client.until(run_id, "attempt_lost")
        assert events[-1].attempt_lost.reason == "session timed out"
        await w.close()
        await client.close()


@pytest.mark.asyncio
async def test_cancel_is_pushed_and_answer_frees_the_slot(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address, slots=1).connect()
    run_id = await aclient.submit(node("a"))
    (a,) = await w.take()
    resp = await aclient.stub.CancelRun(rpb.CancelRunRequest(run_id=run_id, reason="test"))
    assert resp.state == gpb.RUN_STATE_CANCELLED
    cancel = await asyncio.wait_for(w.cancels.get(), WAIT)
    assert cancel.ref == a.ref and cancel.reason == "run_cancelled"
    other = await aclient.submit(node("b"))
    assert w.assignments.empty()  # the one slot is still taken until the answer
    w.answer(a, outcome=wpb.OUTCOME_CANCELLED)
    (b,) = await w.take()
    assert b.ref.run_id == other
    events = await aclient.events(run_id)
    assert not any(e.HasField("node_dispatched") for e in events[2:])
    assert events[-1].run_ended.state == gpb.RUN_STATE_CANCELLED
    await w.close()


@pytest.mark.asyncio
async def test_mutations_commit_with_the_result_or_fail_the_attempt(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address).connect()
    run_id = await aclient.submit(node("p", can_mutate=True), node("q"))
    got = {a.ref.node_id: a for a in await w.take(2)}
    w.answer(got["q"])
    add = gpb.Mutation(add_node=gpb.AddNode(node=node("child", deps=["p"])))
    bad = gpb.Mutation(add_edge=gpb.AddEdge(from_id="p", to_id="q"))  # q has finished
    w.answer(got["p"], mutations=[add, bad])
    await w.ack()
    ack = await w.ack()
    assert ack.status == wpb.ACK_STATUS_MUTATIONS_REJECTED
    assert "already started" in ack.message
    run = await aclient.wait_end(run_id)
    assert states(run) == {"p": "FAILED", "q": "SUCCEEDED"}  # no 'child': nothing added
    p = next(n for n in run.nodes if n.id == "p")
    assert p.error.kind == "mutation_rejected"
    await w.close()


@pytest.mark.asyncio
async def test_drain_request_reaches_the_worker_and_stops_assignments(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address, name="drainme", slots=1).connect()
    await aclient.submit(node("a"), node("b"))
    (a,) = await w.take()
    resp = await aclient.stub.DrainWorker(rpb.DrainWorkerRequest(worker="drainme"))
    assert resp.drained == 1
    workers = await aclient.stub.ListWorkers(rpb.ListWorkersRequest())
    assert [x.draining for x in workers.workers] == [True]
    w.answer(a)
    await w.ack()
    assert w.assignments.empty()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aclient.stub.DrainWorker(rpb.DrainWorkerRequest(worker="nobody"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    await w.close()


@pytest.mark.asyncio
async def test_health_and_reflection_are_served() -> None:
    async with Coordinator() as c, grpc.aio.insecure_channel(c.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "hivegrid.v1.RunService", "hivegrid.v1.WorkerService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.asyncio
async def test_a_blocked_event_loop_does_not_expire_live_sessions() -> None:
    """Silence the coordinator caused itself (its event loop blocked past the session timeout,
    as a very large submit can) does not count against its workers."""

    async with Coordinator(heartbeat_interval_s=0.1, session_timeout_s=0.3) as c:
        w = await RawWorker(c.address).connect()

        async def heartbeats() -> None:
            while True:
                w.send(wpb.ConnectRequest(heartbeat=wpb.Heartbeat()))
                await asyncio.sleep(0.05)

        beating = asyncio.create_task(heartbeats())
        (session_id,) = c.runtime.links
        time.sleep(1.0)  # noqa: ASYNC251 - the stimulus: block the loop for 3 session timeouts
        for _ in range(10):  # the reaper's overdue round runs within a few loop turns
            await asyncio.sleep(0)
        assert session_id in c.runtime.links
        assert not w.ended.is_set()
        beating.cancel()
        await w.close()
