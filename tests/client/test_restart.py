"""A wait and a watch outlive a coordinator killed (SIGKILL) and restarted on the same port and
SQLite file: each event arrives once, in order, and the wait returns the ended run."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from hivegrid.client import AsyncClient, Client, Event, RunState
from tests.support.fixtures import Spawned
from tests.support.wait import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

# Nothing runs until a worker connects (there is none at first), so the run is still running
# when the coordinator is killed, whatever the machine's speed.
GRAPH = {
    "nodes": [
        {"id": "a", "agent": "value", "input": {"value": 1}},
        {"id": "b", "agent": "value", "input": {"value": 2}},
        {"id": "total", "agent": "sum", "depends_on": ["a", "b"]},
    ]
}


def _check(events: list[Event], run_id: str) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), [e.seq for e in events]
    assert {e.run_id for e in events} == {run_id}
    assert events[0].kind == "run_submitted"
    assert events[-1].kind == "run_ended" and events[-1].state == RunState.SUCCEEDED
    assert sum(1 for e in events if e.kind == "node_dispatched") >= 3


def test_wait_and_events_survive_a_restart(spawn: Spawned) -> None:
    coordinator = spawn.coordinator(start=False, address=f"127.0.0.1:{free_port()}")
    address = coordinator.start()
    with Client(address) as client, ThreadPoolExecutor(2) as pool:
        run_id = client.submit(GRAPH)
        seen: list[Event] = []
        first = threading.Event()

        def follow() -> list[Event]:
            for event in client.events(run_id):
                seen.append(event)
                first.set()
            return seen

        waited = pool.submit(client.wait, run_id, 60)
        followed = pool.submit(follow)
        assert first.wait(10), "no event before the kill"
        coordinator.kill()
        assert coordinator.start() == address
        spawn.worker("python", address, name="after-restart").wait_connected()
        run = waited.result(timeout=60)
        events = followed.result(timeout=60)
    assert run.state == RunState.SUCCEEDED and run.results["total"] == 3
    _check(events, run_id)
    assert coordinator.generation == 2


@pytest.mark.asyncio
async def test_async_wait_and_events_survive_a_restart(spawn: Spawned) -> None:
    coordinator = spawn.coordinator(start=False, address=f"127.0.0.1:{free_port()}")
    address = await asyncio.to_thread(coordinator.start)
    async with AsyncClient(address) as client:
        run_id = await client.submit(GRAPH)
        first = asyncio.Event()

        async def follow() -> list[Event]:
            out = []
            async for event in client.events(run_id):
                out.append(event)
                first.set()
            return out

        waited = asyncio.create_task(client.wait(run_id, 60))
        followed = asyncio.create_task(follow())
        await asyncio.wait_for(first.wait(), 10)
        await asyncio.to_thread(coordinator.kill)
        assert await asyncio.to_thread(coordinator.start) == address
        worker = spawn.worker("python", address, name="after-restart")
        await asyncio.to_thread(worker.wait_connected)
        run = await asyncio.wait_for(waited, 60)
        events = await asyncio.wait_for(followed, 60)
    assert run.state == RunState.SUCCEEDED and run.results["total"] == 3
    _check(events, run_id)


def test_events_resume_from_a_seq_after_a_restart(spawn: Spawned) -> None:
    """A new watch (say, a new process) picks up from the last seq it had, on a restarted
    coordinator: what it gets is exactly what followed."""
    coordinator = spawn.coordinator(start=False, address=f"127.0.0.1:{free_port()}")
    address = coordinator.start()
    spawn.worker("python", address, name="w").wait_connected()
    with Client(address) as client:
        run_id = client.submit(GRAPH)
        everything = list(client.events(run_id))
        coordinator.kill()
        coordinator.start()
        resumed = list(client.events(run_id, after=2))
    assert resumed == everything[2:] and resumed[-1].kind == "run_ended"
