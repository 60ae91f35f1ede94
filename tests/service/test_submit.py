"""Bad graphs are refused whole with INVALID_ARGUMENT naming the problem; nothing is created."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest

from hivegrid.coordinator.server import Coordinator
from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from tests.support.inprocess import Client
from tests.support.values import node
from tests.support.wait import WAIT

BAD_GRAPHS = {
    "cycle": ([node("a", deps=["c"]), node("b", deps=["a"]), node("c", deps=["b"])], "cycle"),
    "self-dependency": ([node("a", deps=["a"])], "depends on itself"),
    "unknown dependency": ([node("a"), node("b", deps=["zzz"])], "unknown node 'zzz'"),
    "duplicate id": ([node("a"), node("a")], "duplicate node id 'a'"),
    "no agent": ([gpb.NodeSpec(id="a")], "has no agent"),
    "empty graph": ([], "at least one node"),
    "dependency listed twice": ([node("a"), node("b", deps=["a", "a"])], "twice"),
    "bad jitter": (
        [node("a", retry=gpb.RetryPolicy(max_attempts=3, jitter=2.0))],
        "jitter must be between 0 and 1",
    ),
    "negative timeout": ([node("a", timeout_s=-1)], "timeout_s must not be negative"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
@pytest.mark.asyncio
async def test_malformed_graph_is_refused_and_creates_nothing(case: str, aclient: Client) -> None:
    nodes, message = BAD_GRAPHS[case]

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aclient.submit(*nodes)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    listed = await aclient.stub.ListRuns(rpb.ListRunsRequest())
    assert list(listed.runs) == []


@pytest.mark.asyncio
async def test_over_the_node_limit_is_refused(aclient: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aclient.submit(*[node(f"n{i}") for i in range(5)], limits=gpb.RunLimits(max_nodes=4))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit of 4" in info.value.details()


@pytest.mark.asyncio
async def test_unknown_run_is_not_found(aclient: Client) -> None:
    for call in (
        aclient.stub.GetRun(rpb.GetRunRequest(run_id="nope")),
        aclient.stub.CancelRun(rpb.CancelRunRequest(run_id="nope")),
        aclient.stub.MutateRun(rpb.MutateRunRequest(run_id="nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.asyncio
async def test_nodes_without_ids_get_positional_ids(aclient: Client) -> None:
    run_id = await aclient.submit(gpb.NodeSpec(agent="echo"), gpb.NodeSpec(agent="echo"))
    run = await aclient.get(run_id)
    assert sorted(n.id for n in run.nodes) == ["n1", "n2"]


@pytest.mark.asyncio
async def test_invalid_client_mutation_changes_nothing(aclient: Client) -> None:
    run_id = await aclient.submit(node("a"), node("b", deps=["a"]))
    before = await aclient.get(run_id)
    batch = [
        gpb.Mutation(add_node=gpb.AddNode(node=node("x"))),
        gpb.Mutation(add_edge=gpb.AddEdge(from_id="b", to_id="a")),  # cycle
    ]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aclient.stub.MutateRun(rpb.MutateRunRequest(run_id=run_id, mutations=batch))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cycle" in info.value.details()
    after = await aclient.get(run_id)
    assert after.nodes == before.nodes
    assert after.run.last_seq == before.run.last_seq


@pytest.mark.asyncio
async def test_a_large_graph_is_built_off_the_event_loop(
    server: Coordinator, aclient: Client
) -> None:
    """While a large graph is being built, the coordinator keeps answering other calls; the
    run appears whole once built."""
    entered, release = threading.Event(), threading.Event()

    small = await aclient.submit(node("a"))
    core = server.runtime.core
    prepare = core.prepare_run

    def gated(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(WAIT)
        return prepare(*args, **kwargs)

    core.prepare_run = gated  # type: ignore[method-assign]
    big = asyncio.create_task(aclient.submit(*[node(f"n{i}") for i in range(5_000)]))
    assert await asyncio.to_thread(entered.wait, WAIT), "the build never began"
    answered = await asyncio.wait_for(aclient.get(small), WAIT)
    assert answered.run.run_id == small
    assert not big.done(), "answered only after the large graph was built"
    runs = await aclient.stub.ListRuns(rpb.ListRunsRequest())
    assert [r.run_id for r in runs.runs] == [small], "a half-built run is not visible"
    release.set()
    run = await aclient.get(await asyncio.wait_for(big, WAIT))
    assert len(run.nodes) == 5_000


@pytest.mark.asyncio
async def test_a_watch_past_the_end_of_an_ended_run_ends_at_once(aclient: Client) -> None:
    # It used to wait for a RunEnded the watcher had already seen, so a client resuming after
    # the last event of a finished run hung.
    run_id = await aclient.submit(node("a"))
    await aclient.stub.CancelRun(rpb.CancelRunRequest(run_id=run_id, reason="done"))
    ended = await aclient.wait_end(run_id)
    last = ended.run.last_seq
    assert [e.seq for e in await aclient.events(run_id, last)] == [last]
    assert await asyncio.wait_for(aclient.events(run_id, last + 1), WAIT) == []
