"""Hostile and faulty peers (issue 9): each finding of the attack on the coordinator, replayed
against a real coordinator on loopback. Every test here failed on the coordinator before the
fix; the limits used are set small so that the tests are quick, the defaults are in
coordinator/limits.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hivegrid.coordinator.limits import build_limits
from hivegrid.coordinator.server import Coordinator
from hivegrid.coordinator.store import StoreError
from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.v1 import worker_pb2_grpc
from tests.support.inprocess import Client, fill_disk
from tests.support.names import states
from tests.support.rawworker import RawWorker
from tests.support.values import node
from tests.support.wait import WAIT


def spawn_mutation(node_id: str, agent: str = "echo") -> gpb.Mutation:
    return gpb.Mutation(add_node=gpb.AddNode(node=gpb.NodeSpec(id=node_id, agent=agent)))


async def session_closed(c: Coordinator) -> asyncio.Queue[str]:
    """A queue that receives the reason each time the runtime closes a worker session."""
    closed: asyncio.Queue[str] = asyncio.Queue()
    original = c.runtime.close_session

    def close_session(link: Any, reason: str) -> None:
        known = link.id in c.runtime.links
        original(link, reason)
        if known:
            closed.put_nowait(link.closed or reason)

    c.runtime.close_session = close_session  # type: ignore[method-assign]
    return closed


# --- the log records what was decided -----------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [gpb.Mutation(), None],
    ids=["empty-mutation", "unknown-kind"],
)
@pytest.mark.asyncio
async def test_a_refused_mutation_never_makes_the_log_unreplayable(
    tmp_path: Path, bad: gpb.Mutation | None
) -> None:
    """A result carrying a mutation the coordinator cannot read is acked and fails its attempt;
    after a kill the coordinator starts, and the run is as it was."""
    url = f"sqlite:///{tmp_path}/hg.db"
    if bad is None:  # a kind from a newer SDK: a field number this coordinator does not know
        bad = gpb.Mutation.FromString(b"\xfa\x06\x02\x08\x01")

    c = Coordinator(store_url=url)
    await c.start()
    client = Client(c.address)
    w = await RawWorker(c.address).connect()
    run_id = await client.submit(
        node("p", can_mutate=True, retry=gpb.RetryPolicy(max_attempts=2)), node("q")
    )
    got = {a.ref.node_id: a for a in await w.take(2)}
    w.answer(got["p"], mutations=[spawn_mutation("child"), bad])
    ack = await w.ack()
    assert ack.status == wpb.ACK_STATUS_MUTATIONS_REJECTED
    assert "without a kind" in ack.message
    # A failed answer carrying garbage mutations too: they are not the decision either.
    w.answer(got["q"], outcome=wpb.OUTCOME_FAILED, mutations=[bad])
    assert (await w.ack()).status == wpb.ACK_STATUS_COMMITTED
    await c.runtime.durable()
    before = states(await client.get(run_id))
    assert before == {"p": "READY", "q": "FAILED"}
    await w.close()
    await client.close()
    await c.abandon()  # as a kill -9

    async with Coordinator(store_url=url) as c2:
        client = Client(c2.address)
        after = await client.get(run_id)
        assert states(after) == before
        p = next(n for n in after.nodes if n.id == "p")
        assert p.error.kind == "mutation_rejected" and "without a kind" in p.error.message
        events = await client.history(run_id)
        finished = [e.attempt_finished for e in events if e.HasField("attempt_finished")]
        assert [len(f.mutations) for f in finished] == [0, 0]
        assert finished[0].outcome == wpb.OUTCOME_FAILED
        await client.close()


# --- an attempt belongs to one session ------------------------------------------------------


@pytest.mark.asyncio
async def test_only_the_session_holding_an_attempt_may_answer_it(
    server: Coordinator, aclient: Client
) -> None:
    owner = await RawWorker(server.address, slots=1, name="owner").connect()
    run_id = await aclient.submit(node("a"), node("b"))
    (a,) = await owner.take()
    thief = await RawWorker(server.address, slots=1, name="thief").connect()
    (b,) = await thief.take()
    thief.answer(a.ref, b'"forged"')
    ack = await thief.ack()
    assert ack.status == wpb.ACK_STATUS_STALE
    assert "another session" in ack.message
    # Nothing changed: the owner still holds it, and its answer is the one taken.
    assert states(await aclient.get(run_id))["a"] == "RUNNING"
    owner.answer(a, b'"real"')
    assert (await owner.ack()).status == wpb.ACK_STATUS_COMMITTED
    thief.answer(b)
    assert (await thief.ack()).status == wpb.ACK_STATUS_COMMITTED
    final = await aclient.wait_end(run_id)
    assert {n.id: n.result for n in final.nodes} == {"a": b'"real"', "b": b"1"}
    for w in (owner, thief):
        await w.close()


@pytest.mark.asyncio
async def test_hello_held_cannot_take_over_a_live_sessions_attempt(
    server: Coordinator, aclient: Client
) -> None:
    owner = await RawWorker(server.address, slots=1, name="owner").connect()
    run_id = await aclient.submit(node("a"), node("b"))
    (a,) = await owner.take()
    thief = await RawWorker(server.address, slots=1, name="thief", held=[a.ref]).connect()
    assert thief.welcome is not None and list(thief.welcome.held) == []
    # The owner keeps its slot: no second assignment goes to it.
    (b,) = await thief.take()
    assert b.ref.node_id == "b"
    assert owner.assignments.empty() and owner.cancels.empty()
    (info,) = [w for w in server.runtime.list_workers() if w.worker_name == "owner"]
    assert info.in_flight == 1
    owner.answer(a)
    thief.answer(b)
    assert (await aclient.wait_end(run_id)).run.state == gpb.RUN_STATE_SUCCEEDED
    for w in (owner, thief):
        await w.close()


@pytest.mark.asyncio
async def test_a_mismatched_ref_changes_nothing_and_the_node_is_released_when_its_worker_goes(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address, slots=1).connect()
    run_id = await aclient.submit(node("a"))
    (a,) = await w.take()
    for field, value in (("node_id", "nope"), ("attempt", 7), ("run_id", "r-nope")):
        wrong = wpb.AssignmentRef()
        wrong.CopyFrom(a.ref)
        setattr(wrong, field, value)
        w.answer(wrong)
        assert (await w.ack()).status == wpb.ACK_STATUS_STALE
    await w.drop()
    # The attempt is still the worker's, so losing the worker releases it.
    events = await aclient.until(run_id, "attempt_lost")
    assert events[-1].attempt_lost.node_id == "a"
    w2 = await RawWorker(server.address, slots=1).connect()
    (again,) = await w2.take()
    assert again.ref.attempt == 2
    w2.answer(again)
    assert (await aclient.wait_end(run_id)).run.state == gpb.RUN_STATE_SUCCEEDED
    await w2.close()


@pytest.mark.asyncio
async def test_leases_are_not_sequential_and_watchers_never_see_them(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address, slots=8).connect()
    run_id = await aclient.submit(*[node(f"n{i}") for i in range(8)])
    got = await w.take(8)
    leases = sorted(a.ref.lease for a in got)
    steps = {b - a for a, b in itertools.pairwise(leases)}
    assert steps != {1}, leases
    assert len(set(leases)) == 8 and all(lease > 0 for lease in leases)
    for a in got:
        w.answer(a)
    await aclient.wait_end(run_id)
    events = await aclient.events(run_id)
    dispatched = [e.node_dispatched for e in events if e.HasField("node_dispatched")]
    finished = [e.attempt_finished for e in events if e.HasField("attempt_finished")]
    assert len(dispatched) == 8 and len(finished) == 8
    assert {d.lease for d in dispatched} == {0} and {f.lease for f in finished} == {0}
    await w.close()


@pytest.mark.asyncio
async def test_an_unsolicited_cancelled_answer_costs_an_attempt(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address, slots=1).connect()
    retry = gpb.RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.001)
    run_id = await aclient.submit(node("a", retry=retry))
    for attempt in (1, 2, 3):
        (a,) = await w.take()
        assert a.ref.attempt == attempt
        w.answer(a, outcome=wpb.OUTCOME_CANCELLED)
        assert (await w.ack()).status == wpb.ACK_STATUS_COMMITTED
    final = await aclient.wait_end(run_id)
    (a_status,) = final.nodes
    assert (a_status.state, a_status.attempts) == (gpb.NODE_STATE_FAILED, 3)
    assert a_status.error.kind == "abandoned"
    assert w.assignments.empty()
    await w.close()


@pytest.mark.asyncio
async def test_an_assignment_too_large_to_send_fails_its_node_and_spares_the_stream() -> None:
    limits = build_limits({"max_message_bytes": 256 * 1024})

    async with Coordinator(limits=limits) as c:
        client = Client(c.address)
        w = await RawWorker(c.address, slots=4).connect()
        run_id = await client.submit(
            node("d1"), node("d2"), node("join", deps=["d1", "d2"]), node("after", deps=["d1"])
        )
        got = {a.ref.node_id: a for a in await w.take(2)}
        big = b'"' + b"x" * 150_000 + b'"'
        w.answer(got["d1"], big)
        w.answer(got["d2"], big)
        (after,) = await w.take()  # the stream lives on and gets the next node
        assert after.ref.node_id == "after" and after.deps[0].result == big
        w.answer(after)
        final = await client.wait_end(run_id)
        by_id = {n.id: n for n in final.nodes}
        assert by_id["join"].state == gpb.NODE_STATE_FAILED
        assert by_id["join"].error.kind == "too_large" and by_id["join"].attempts == 0
        assert "over the coordinator's limit" in by_id["join"].error.message
        events = await client.events(run_id)
        assert [e.node_failed.node_id for e in events if e.HasField("node_failed")] == ["join"]
        assert not w.ended.is_set()
        await w.close()
        await client.close()


@pytest.mark.asyncio
async def test_a_duplicate_result_gets_the_ack_the_first_one_got(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address, slots=2).connect()
    run_id = await aclient.submit(node("a"), node("p", can_mutate=True))
    got = {a.ref.node_id: a for a in await w.take(2)}
    w.answer(got["a"], b'"once"')
    w.answer(got["p"], mutations=[spawn_mutation("p")])  # duplicate id: rejected
    first = {(await w.ack()).ref.node_id for _ in range(2)}
    assert first == {"a", "p"}
    w.answer(got["a"], b'"twice"')
    w.answer(got["p"], mutations=[spawn_mutation("p")])
    again = [await w.ack(), await w.ack()]
    by_node = {ack.ref.node_id: ack for ack in again}
    assert by_node["a"].status == wpb.ACK_STATUS_COMMITTED
    assert by_node["p"].status == wpb.ACK_STATUS_MUTATIONS_REJECTED
    assert "duplicate node id" in by_node["p"].message
    await aclient.stub.CancelRun(rpb.CancelRunRequest(run_id=run_id))
    run_ = await aclient.get(run_id)
    assert {n.id: n.result for n in run_.nodes}["a"] == b'"once"'
    events = await aclient.events(run_id)
    assert sum(e.HasField("attempt_finished") for e in events) == 2
    await w.close()


# --- limits at the door ------------------------------------------------------------------


def _code(exc: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> grpc.StatusCode:
    return exc.value.code()


@pytest.mark.asyncio
async def test_client_requests_past_the_limits_are_refused_naming_the_limit() -> None:
    limits = build_limits(
        {
            "max_nodes_per_run": 100,
            "max_id_bytes": 64,
            "max_name_bytes": 100,
            "max_deps_per_node": 3,
        }
    )

    async with Coordinator(limits=limits) as c:
        client = Client(c.address)
        cases: list[tuple[Callable[[], Any], str]] = [
            (
                lambda: client.submit(node("a"), limits=gpb.RunLimits(max_nodes=5_000_000)),
                "max_nodes_per_run",
            ),
            (lambda: client.submit(*[node(f"n{i}") for i in range(101)]), "max_nodes_per_run"),
            (lambda: client.submit(node("x" * 65)), "max_id_bytes"),
            (lambda: client.submit(node("a", agent="y" * 65)), "max_id_bytes"),
            (lambda: client.submit(node("a"), name="n" * 101), "max_name_bytes"),
            (lambda: client.submit(node("a"), run_id="r" * 65), "max_id_bytes"),
            (
                lambda: client.submit(
                    *[node(f"d{i}") for i in range(4)],
                    node("j", deps=[f"d{i}" for i in range(4)]),
                ),
                "max_deps_per_node",
            ),
        ]
        for call, limit in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call()
            assert _code(info) == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
            assert limit in (info.value.details() or "")
        listed = await client.stub.ListRuns(rpb.ListRunsRequest())
        assert list(listed.runs) == []  # nothing was created
        await client.close()


@pytest.mark.asyncio
async def test_a_run_id_that_is_taken_answers_already_exists_and_a_retried_submit_is_one_run(
    aclient: Client,
) -> None:
    first = await aclient.submit(node("a"), request_id="req-1")
    again = await aclient.submit(node("a"), request_id="req-1")
    assert again == first
    await aclient.submit(node("a"), run_id="mine")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aclient.submit(node("a"), run_id="mine")
    assert _code(info) == grpc.StatusCode.ALREADY_EXISTS
    listed = await aclient.stub.ListRuns(rpb.ListRunsRequest())
    assert sorted(r.run_id for r in listed.runs) == sorted([first, "mine"])


@pytest.mark.asyncio
async def test_a_retried_submit_is_one_run_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hg.db"

    async with Coordinator(store_url=url) as c:
        client = Client(c.address)
        first = await client.submit(node("a"), request_id="req-42")
        await client.close()
    async with Coordinator(store_url=url) as c:
        client = Client(c.address)
        assert await client.submit(node("a"), request_id="req-42") == first
        await client.close()


@pytest.mark.asyncio
async def test_worker_hellos_past_the_limits_are_refused_or_capped() -> None:
    limits = build_limits({"max_id_bytes": 64, "max_slots": 16})

    async with Coordinator(limits=limits) as c:
        w = await RawWorker(c.address, name="w" * 10_000).connect()
        assert w.refusal is not None and "max_id_bytes" in w.refusal.reason
        await asyncio.wait_for(w.ended.wait(), WAIT)
        assert w.status == grpc.StatusCode.RESOURCE_EXHAUSTED
        await w.close()

        client = Client(c.address)
        greedy = await RawWorker(c.address, slots=4_294_967_295).connect()
        assert greedy.welcome is not None and greedy.welcome.max_slots == 16
        run_id = await client.submit(*[node(f"n{i}") for i in range(40)])
        got = await greedy.take(16)
        (info,) = c.runtime.list_workers()
        assert info.in_flight == 16 and info.slots == 16
        assert greedy.assignments.empty()
        for a in got:
            greedy.answer(a)
        await greedy.take(16)
        await client.stub.CancelRun(rpb.CancelRunRequest(run_id=run_id))
        await greedy.close()
        await client.close()


@pytest.mark.asyncio
async def test_the_welcome_announces_the_limits() -> None:
    limits = build_limits({"max_result_bytes": 1000, "max_progress_bytes": 100, "max_mutations": 7})

    async with Coordinator(limits=limits) as c:
        w = await RawWorker(c.address).connect()
        welcome = w.welcome
        assert welcome is not None
        assert (welcome.max_result_bytes, welcome.max_progress_bytes) == (1000, 100)
        assert welcome.max_mutations == 7 and welcome.max_id_bytes == 256
        assert welcome.max_message_bytes == limits.max_message_bytes
        await w.close()


@pytest.mark.asyncio
async def test_results_and_batches_past_the_limits_fail_their_attempts() -> None:
    limits = build_limits({"max_result_bytes": 1000, "max_mutations": 10})

    async with Coordinator(limits=limits) as c:
        client = Client(c.address)
        w = await RawWorker(c.address, slots=2).connect()
        run_id = await client.submit(node("big"), node("spawner", can_mutate=True))
        got = {a.ref.node_id: a for a in await w.take(2)}
        w.answer(got["big"], b"1" * 1001)
        ack = await w.ack()
        assert ack.status == wpb.ACK_STATUS_REFUSED and "max_result_bytes" in ack.message
        w.answer(got["spawner"], mutations=[spawn_mutation(f"c{i}") for i in range(11)])
        ack = await w.ack()
        assert ack.status == wpb.ACK_STATUS_MUTATIONS_REJECTED
        assert "max_mutations" in ack.message
        final = await client.wait_end(run_id)
        by_id = {n.id: n for n in final.nodes}
        assert set(by_id) == {"big", "spawner"}  # no child was added
        assert by_id["big"].error.kind == "too_large" and by_id["big"].result == b""
        assert by_id["spawner"].error.kind == "mutation_rejected"
        await w.close()
        await client.close()


@pytest.mark.asyncio
async def test_a_mutate_run_past_max_mutations_is_refused() -> None:
    limits = build_limits({"max_mutations": 10})

    async with Coordinator(limits=limits) as c:
        client = Client(c.address)
        run_id = await client.submit(node("a"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.MutateRun(
                rpb.MutateRunRequest(
                    run_id=run_id, mutations=[spawn_mutation(f"c{i}") for i in range(11)]
                )
            )
        assert _code(info) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_mutations" in (info.value.details() or "")
        assert states(await client.get(run_id)) == {"a": "READY"}
        await client.close()


@pytest.mark.asyncio
async def test_progress_past_its_size_and_rate_is_dropped() -> None:
    limits = build_limits({"max_progress_bytes": 100, "max_progress_per_s": 5})

    async with Coordinator(limits=limits) as c:
        client = Client(c.address)
        w = await RawWorker(c.address).connect()
        run_id = await client.submit(node("a"))
        (a,) = await w.take()
        w.send(
            wpb.ConnectRequest(
                progress=wpb.ProgressBatch(items=[wpb.Progress(ref=a.ref, data=b"x" * 101)])
            )
        )
        w.send(
            wpb.ConnectRequest(
                progress=wpb.ProgressBatch(
                    items=[wpb.Progress(ref=a.ref, data=b"%d" % i) for i in range(500)]
                )
            )
        )
        w.answer(a)
        await client.wait_end(run_id)
        events = await client.events(run_id)
        kept = [e.progress.data for e in events if e.HasField("progress")]
        # The bucket holds two seconds' worth (plus one): the rest of the burst is dropped.
        assert 1 <= len(kept) <= 12
        assert b"x" * 101 not in kept
        assert kept == [b"%d" % i for i in range(len(kept))]  # in order, from the first
        assert c.runtime.refused["progress"] == 501 - len(kept)
        await w.close()
        await client.close()


# --- nothing holds the loop: reads page ---------------------------------------------------


@pytest.mark.asyncio
async def test_get_run_and_list_runs_page(aclient: Client) -> None:
    run_id = await aclient.submit(*[node(f"n{i}") for i in range(2500)])
    first = await aclient.stub.GetRun(rpb.GetRunRequest(run_id=run_id))
    assert len(first.nodes) == 1000 and first.next_page_token
    assert first.run.counts.ready == 2500
    whole = await aclient.get(run_id)
    assert [n.id for n in whole.nodes] == [f"n{i}" for i in range(2500)]
    small = await aclient.stub.GetRun(rpb.GetRunRequest(run_id=run_id, page_size=7))
    assert len(small.nodes) == 7
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aclient.stub.GetRun(rpb.GetRunRequest(run_id=run_id, page_token="x"))
    assert _code(info) == grpc.StatusCode.INVALID_ARGUMENT

    ids = [await aclient.submit(node("a")) for _ in range(5)]
    page = await aclient.stub.ListRuns(rpb.ListRunsRequest(limit=2))
    assert [r.run_id for r in page.runs] == ids[::-1][:2]
    rest = await aclient.stub.ListRuns(
        rpb.ListRunsRequest(limit=10, page_token=page.next_page_token)
    )
    assert [r.run_id for r in rest.runs] == [*ids[::-1][2:], run_id]
    assert rest.next_page_token == ""


# --- memory is bounded by configuration -------------------------------------------------


@pytest.mark.asyncio
async def test_a_worker_that_never_reads_is_cut_off_and_its_attempts_released() -> None:
    limits = build_limits({"max_unacked_results": 64})

    async with Coordinator(limits=limits, heartbeat_interval_s=0.2, session_timeout_s=1.0) as c:
        closed = await session_closed(c)
        client = Client(c.address)
        run_id = await client.submit(node("a"))
        read = 0
        original = c.runtime.on_results

        def counting(link: Any, items: Any) -> None:
            nonlocal read
            read += len(items)
            original(link, items)

        c.runtime.on_results = counting  # type: ignore[method-assign]
        channel = grpc.aio.insecure_channel(c.address)
        hello = wpb.Hello(worker_name="mute", protocol_version=2, agents=["echo"], slots=1)
        junk = wpb.ConnectRequest(
            results=wpb.Results(
                items=[
                    wpb.Result(
                        ref=wpb.AssignmentRef(
                            run_id="r-none", node_id="n" * 200, attempt=1, lease=i + 1
                        ),
                        outcome=wpb.OUTCOME_SUCCEEDED,
                    )
                    for i in range(500)
                ]
            )
        )

        async def requests() -> AsyncIterator[wpb.ConnectRequest]:
            yield wpb.ConnectRequest(hello=hello)
            for _ in range(2_000):  # 1,000,000 results, if they were all read
                yield junk

        call = worker_pb2_grpc.WorkerServiceStub(channel).Connect(requests())
        # It held node "a" (its one slot) and never answered, never read.
        reason = await asyncio.wait_for(closed.get(), 30)
        assert reason == "the worker stopped reading its stream"
        # Reading stopped once 64 acks were waiting (plus the message being handled, and
        # what the transport's window held before the writer blocked).
        assert read < 200_000, read
        call.cancel()
        await channel.close()
        w = await RawWorker(c.address, slots=1).connect()
        (a,) = await w.take()
        assert a.ref.node_id == "a"
        w.answer(a)
        assert (await client.wait_end(run_id)).run.state == gpb.RUN_STATE_SUCCEEDED
        await w.close()
        await client.close()


@pytest.mark.asyncio
async def test_watchers_per_run_are_limited() -> None:
    limits = build_limits({"max_watchers_per_run": 3})

    async with Coordinator(limits=limits) as c:
        client = Client(c.address)
        run_id = await client.submit(node("a"))
        calls = [client.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id)) for _ in range(3)]
        for call in calls:  # each has its first batch: it is registered
            await asyncio.wait_for(call.read(), WAIT)
        extra = client.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(extra.read(), WAIT)
        assert _code(info) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_watchers_per_run" in (info.value.details() or "")
        for call in calls:
            call.cancel()
        await client.close()


@pytest.mark.asyncio
async def test_a_watcher_that_falls_behind_still_sees_every_event_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hivegrid.coordinator.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "_WATCH_QUEUE_EVENTS", 20)

    async with Coordinator() as c:
        client = Client(c.address)
        w = await RawWorker(c.address, slots=64).connect()
        run_id = await client.submit(*[node(f"n{i}") for i in range(300)])
        call = client.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id))
        first = await asyncio.wait_for(call.read(), WAIT)
        seen = [e.seq for e in first.events]
        answered = 0
        while answered < 300:
            batch = await w.take(min(64, 300 - answered))
            # One message of many results: one commit publishes more events than the
            # watcher's queue holds.
            items = [wpb.Result(ref=a.ref, outcome=wpb.OUTCOME_SUCCEEDED) for a in batch]
            w.send(wpb.ConnectRequest(results=wpb.Results(items=items)))
            answered += len(batch)
        assert c.runtime.watcher_overflows > 0
        while True:
            resp = await asyncio.wait_for(call.read(), WAIT)
            if resp is grpc.aio.EOF:
                break
            seen.extend(e.seq for e in resp.events)
        assert seen == list(range(1, len(seen) + 1))
        assert len(seen) == 602  # submitted, 300 x (dispatched, finished), ended
        await w.close()
        await client.close()


@pytest.mark.asyncio
async def test_ended_runs_are_deleted_by_request_and_by_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hg.db"
    limits = build_limits({"retain_runs": 2, "retain_s": 0})

    async with Coordinator(store_url=url, limits=limits, snapshot_every=3) as c:
        client = Client(c.address)
        w = await RawWorker(c.address).connect()
        ids = []
        for _ in range(4):
            ids.append(await client.submit(node("a")))
            (a,) = await w.take()
            w.answer(a)
            await client.wait_end(ids[-1])
        running = await client.submit(node("b"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.DeleteRun(rpb.DeleteRunRequest(run_id=running))
        assert _code(info) == grpc.StatusCode.FAILED_PRECONDITION
        await client.stub.DeleteRun(rpb.DeleteRunRequest(run_id=ids[0]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.get(ids[0])
        assert _code(info) == grpc.StatusCode.NOT_FOUND
        assert c.runtime.apply_retention() == [ids[1]]  # keeps the two newest ended runs
        await c.runtime.durable()
        await w.close()
        await client.close()

    async with Coordinator(store_url=url, limits=limits) as c:
        client = Client(c.address)
        listed = await client.stub.ListRuns(rpb.ListRunsRequest())
        assert sorted(r.run_id for r in listed.runs) == sorted([ids[2], ids[3], running])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.events(ids[1])
        assert _code(info) == grpc.StatusCode.NOT_FOUND
        await client.close()


@pytest.mark.asyncio
async def test_snapshots_are_written_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hivegrid.coordinator.snapshot as snapshot_module

    monkeypatch.setattr(snapshot_module, "CHUNK_NODES", 10)
    url = f"sqlite:///{tmp_path}/hg.db"

    async with Coordinator(store_url=url) as c:
        client = Client(c.address)
        run_id = await client.submit(
            *[node(f"n{i}", deps=[f"n{i - 1}"] if i else []) for i in range(35)]
        )
        chunks = snapshot_module.dump(c.runtime.core)
        assert len(chunks) == 4
        before = states(await client.get(run_id))
        await client.close()
    async with Coordinator(store_url=url) as c:  # loads the chunked snapshot of the stop
        assert c.runtime.replayed_events == 1
        client = Client(c.address)
        assert states(await client.get(run_id)) == before
        await client.close()


# --- one coordinator per store; a clean stop leaves one file --------------------------------


@pytest.mark.asyncio
async def test_a_second_coordinator_on_the_same_store_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hg.db"

    async with Coordinator(store_url=url):
        second = Coordinator(store_url=url)
        with pytest.raises(StoreError, match="in use by another coordinator"):
            await second.start()


@pytest.mark.asyncio
async def test_a_clean_stop_leaves_everything_in_the_database_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hg.db"
    copy = tmp_path / "copy"
    copy.mkdir()

    async with Coordinator(store_url=url) as c:
        client = Client(c.address)
        run_id = await client.submit(node("a"), node("b", deps=["a"]))
        await client.close()
    (copy / "hg.db").write_bytes((tmp_path / "hg.db").read_bytes())
    async with Coordinator(store_url=f"sqlite:///{copy}/hg.db") as c:
        client = Client(c.address)
        assert states(await client.get(run_id)) == {"a": "READY", "b": "PENDING"}
        await client.close()


@pytest.mark.asyncio
async def test_a_damaged_snapshot_falls_back_to_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hg.db"
    url = f"sqlite:///{path}"

    async with Coordinator(store_url=url, snapshot_every=2) as c:
        client = Client(c.address)
        w = await RawWorker(c.address).connect()
        run_id = await client.submit(node("a"), node("b", deps=["a"]))
        (a,) = await w.take()
        w.answer(a, b'"A"')
        await w.ack()
        await w.close()
        before = states(await client.get(run_id))
        await client.close()
    _damage_snapshots(path)
    async with Coordinator(store_url=url) as c:
        client = Client(c.address)
        assert states(await client.get(run_id)) == before
        await client.close()
    assert "cannot be loaded" in caplog.text


def _damage_snapshots(path: Path) -> None:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE snapshot_chunks SET data = x'ffffffff0a'")
        conn.commit()


# --- health tells the truth ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_health_says_not_serving_while_the_store_cannot_write_and_recovers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hg.db"

    async with Coordinator(store_url=f"sqlite:///{path}", store_retry_s=0.05) as c:
        client = Client(c.address)
        health = health_pb2_grpc.HealthStub(client.channel)

        async def status() -> int:
            resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
            return int(resp.status)

        assert await status() == health_pb2.HealthCheckResponse.SERVING
        w = await RawWorker(c.address).connect()
        run_id = await client.submit(node("a"))
        (a,) = await w.take()
        conn = fill_disk(c.runtime.store)
        w.answer(a, b'"x" ' * 50_000)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        async for resp in watch:
            if resp.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.submit(node("z"))
        assert _code(info) == grpc.StatusCode.UNAVAILABLE
        assert w.acks.empty()
        conn.execute("PRAGMA max_page_count = 1073741823")  # space is back
        ack = await w.ack()  # the retried write carried the result: now it is acked
        assert ack.status == wpb.ACK_STATUS_COMMITTED
        async for resp in watch:
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                break
        watch.cancel()
        final = await client.wait_end(run_id)
        assert final.run.state == gpb.RUN_STATE_SUCCEEDED
        assert final.nodes[0].result == b'"x" ' * 50_000
        await w.close()
        await client.close()


# --- what the fuzzing tier found ----------------------------------------------------------


@pytest.mark.parametrize("how", ["kill", "clean stop"])
@pytest.mark.asyncio
async def test_ending_the_coordinator_hands_no_attempt_to_a_stream_about_to_end(
    tmp_path: Path, how: str
) -> None:
    url = f"sqlite:///{tmp_path}/hg.db"

    c = Coordinator(store_url=url)
    await c.start()
    client = Client(c.address)
    w1 = await RawWorker(c.address, slots=1, name="w1").connect()
    run_id = await client.submit(node("a"))
    await w1.take()
    w2 = await RawWorker(c.address, slots=1, name="w2").connect()  # idle, same agent
    await c.runtime.durable()
    await client.close()
    if how == "kill":
        await c.abandon()
    else:
        await c.stop()
    for w in (w1, w2):
        await asyncio.wait_for(w.ended.wait(), WAIT)
        await w.channel.close()
    async with Coordinator(store_url=url) as c2:
        client = Client(c2.address)
        (status,) = (await client.get(run_id)).nodes
        assert (status.state, status.attempts) == (gpb.NODE_STATE_READY, 1)
        events = await client.history(run_id)
        dispatched = [
            e.node_dispatched.worker_name for e in events if e.HasField("node_dispatched")
        ]
        assert dispatched == ["w1"]
        await client.close()


@pytest.mark.asyncio
async def test_a_failure_that_reads_like_a_rejection_replays_as_it_was(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hg.db"

    c = Coordinator(store_url=url)
    await c.start()
    client = Client(c.address)
    w = await RawWorker(c.address).connect()
    run_id = await client.submit(node("a", retry=gpb.RetryPolicy(max_attempts=3)))
    (a,) = await w.take()
    forged = gpb.NodeError(
        message="mutations rejected: not really", retryable=False, kind="mutation_rejected"
    )
    w.answer(a, outcome=wpb.OUTCOME_FAILED, error=forged)
    await w.ack()
    live = await client.wait_end(run_id)
    assert live.run.state == gpb.RUN_STATE_FAILED
    await w.close()
    await client.close()
    await c.abandon()
    async with Coordinator(store_url=url) as c2:
        client = Client(c2.address)
        again = await client.get(run_id)
        assert again.run.state == gpb.RUN_STATE_FAILED
        assert (again.nodes[0].state, again.nodes[0].attempts) == (gpb.NODE_STATE_FAILED, 1)
        assert not again.nodes[0].error.retryable
        await client.close()
