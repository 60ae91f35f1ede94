"""The AsyncClient's core paths against a real coordinator process and the Python worker."""

from __future__ import annotations

import asyncio

import pytest

from hivegrid.client import (
    AsyncClient,
    Event,
    Graph,
    InvalidGraph,
    NodeState,
    RunNotFound,
    RunState,
    Unavailable,
)
from tests.support.wait import free_port

from .conftest import WORKER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.mark.asyncio
async def test_submit_a_builder_graph_and_wait(async_client: AsyncClient) -> None:
    g = Graph(name="async")
    a = g.node("value", {"value": 4})
    g.node("sum", after=[a], id="total")
    run_id = await async_client.submit(g)
    run = await async_client.wait(run_id, timeout=30)
    assert (run.state, run.name, run.results) == (
        RunState.SUCCEEDED,
        "async",
        {"value-1": {"value": 4}, "total": 4},
    )
    by_dict = await async_client.submit({"nodes": [{"id": "e", "agent": "echo", "input": 1}]})
    assert (await async_client.wait(by_dict, timeout=30)).node("e").result["input"] == 1


@pytest.mark.asyncio
async def test_events_follow_live_and_resume_from_a_seq(async_client: AsyncClient) -> None:
    run_id = await async_client.submit(
        {"nodes": [{"id": "p", "agent": "progress", "input": {"steps": 2}}]}
    )
    events: list[Event] = [e async for e in async_client.events(run_id)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].kind == "run_ended" and events[-1].state == RunState.SUCCEEDED
    rest = [e async for e in async_client.events(run_id, after=2)]
    assert rest == events[2:]
    snapshot = [e async for e in async_client.events(run_id, after=1, follow=False)]
    assert snapshot == events[1:]


@pytest.mark.asyncio
async def test_cancel_mutate_and_list(async_client: AsyncClient) -> None:
    run_id = await async_client.submit(
        {"nodes": [{"id": "gate", "agent": "sleep", "input": {"seconds": 30}}]}
    )
    try:
        seq = await async_client.mutate(
            run_id, [{"add_node": {"node": {"id": "x", "agent": "value", "input": {"value": 1}}}}]
        )
        async for event in async_client.events(run_id, after=seq - 1):
            if event.kind == "attempt_finished" and event.node_id == "x":
                assert event.result == {"value": 1}
                break
        listed = await async_client.list_runs(state=RunState.RUNNING)
        assert run_id in {r.id for r in listed}
        workers = await async_client.list_workers()
        assert any(w.name == WORKER for w in workers)
    finally:
        assert await async_client.cancel(run_id) == RunState.CANCELLED
    run = await async_client.wait(run_id, timeout=30)
    assert run.node("gate").state == NodeState.CANCELLED
    assert run.node("x").state == NodeState.SUCCEEDED


@pytest.mark.asyncio
async def test_errors(async_client: AsyncClient) -> None:
    with pytest.raises(RunNotFound, match="no run 'missing'"):
        await async_client.get_run("missing")
    with pytest.raises(RunNotFound):
        async for _ in async_client.events("missing"):
            pass
    with pytest.raises(InvalidGraph, match="cycle"):
        await async_client.submit(
            {
                "nodes": [
                    {"id": "a", "agent": "echo", "depends_on": ["b"]},
                    {"id": "b", "agent": "echo", "depends_on": ["a"]},
                ]
            }
        )
    async with AsyncClient(f"127.0.0.1:{free_port()}", submit_retry_s=0.2) as nowhere:
        with pytest.raises(Unavailable):
            await nowhere.list_runs()


@pytest.mark.asyncio
async def test_wait_times_out_and_the_run_goes_on(async_client: AsyncClient) -> None:
    run_id = await async_client.submit({"nodes": [{"id": "u", "agent": "no-such-agent"}]})
    try:
        with pytest.raises(TimeoutError, match=r"did not end within 0\.3 s"):
            await async_client.wait(run_id, timeout=0.3)
        assert (await async_client.get_summary(run_id)).state == RunState.RUNNING
    finally:
        await async_client.cancel(run_id)


@pytest.mark.asyncio
async def test_an_abandoned_watch_is_cancelled_with_its_task(async_client: AsyncClient) -> None:
    run_id = await async_client.submit(
        {"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]}
    )
    first = asyncio.Event()

    async def follow() -> None:
        async for _ in async_client.events(run_id):
            first.set()

    task = asyncio.create_task(follow())
    await asyncio.wait_for(first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The client is still good after one of its watches was cancelled.
    assert await async_client.cancel(run_id) == RunState.CANCELLED
