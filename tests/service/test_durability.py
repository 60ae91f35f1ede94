"""The SQLite store across coordinator restarts, and resumable watches."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

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


@pytest.mark.asyncio
async def test_restart_replays_the_log_and_the_run_completes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hg.db"

    async with Coordinator(store_url=url) as c:
        client = Client(c.address)
        w = await RawWorker(c.address).connect()
        run_id = await client.submit(node("a"), node("b", deps=["a"]), node("c"))
        got = {a.ref.node_id: a for a in await w.take(2)}
        w.answer(got["a"], b'"A"')
        assert (await w.ack()).status == wpb.ACK_STATUS_COMMITTED
        (b,) = await w.take()
        before = await client.get(run_id)
        await w.drop()
        await client.close()
    # A new coordinator on the same file: what was acked is there, leases are expired.
    async with Coordinator(store_url=url) as c:
        client = Client(c.address)
        after = await client.get(run_id)
        assert states(after)["a"] == "SUCCEEDED"
        assert states(after)["b"] == states(after)["c"] == "READY"
        assert after.run.last_seq > before.run.last_seq  # the expiries were logged
        # A worker that still holds `b` reconnects: its current attempt is accepted.
        w = await RawWorker(c.address, held=[b.ref]).connect()
        w.answer(b, b'"B"')
        assert (await w.ack()).status == wpb.ACK_STATUS_COMMITTED
        # `c`'s old attempt was never held by anyone: it is re-dispatched as attempt 2.
        (c2,) = await w.take()
        assert c2.ref.node_id == "c" and c2.ref.attempt == 2
        w.answer(c2)
        run = await client.wait_end(run_id)
        assert run.run.state == gpb.RUN_STATE_SUCCEEDED
        events = await client.events(run_id)
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1))  # gapless across the restart
        ok = [e.attempt_finished.node_id for e in events if e.HasField("attempt_finished")]
        assert sorted(ok) == ["a", "b", "c"]  # each completed exactly once
        await w.close()
        await client.close()


@pytest.mark.asyncio
async def test_watch_resumes_from_any_sequence_number(server: Coordinator, aclient: Client) -> None:
    w = await RawWorker(server.address, slots=5).connect()
    run_id = await aclient.submit(*[node(f"n{i}") for i in range(5)])
    for a in await w.take(5):
        w.answer(a)
    await aclient.wait_end(run_id)
    full = await aclient.events(run_id)
    assert full[0].HasField("run_submitted") and full[-1].HasField("run_ended")
    for start in (1, 3, len(full)):
        tail = await aclient.events(run_id, from_seq=start)
        assert [e.seq for e in tail] == [e.seq for e in full[start - 1 :]]
    await w.close()


@pytest.mark.asyncio
async def test_progress_reaches_a_live_watcher_in_order(
    server: Coordinator, aclient: Client
) -> None:
    w = await RawWorker(server.address).connect()
    run_id = await aclient.submit(node("a"))
    (a,) = await w.take()
    watch = asyncio.create_task(aclient.events(run_id))
    items = [wpb.Progress(ref=a.ref, data=str(i).encode()) for i in range(1, 6)]
    w.send(wpb.ConnectRequest(progress=wpb.ProgressBatch(items=items[:2])))
    w.send(wpb.ConnectRequest(progress=wpb.ProgressBatch(items=items[2:])))
    w.answer(a)
    events = await asyncio.wait_for(watch, 10)
    got = [e.progress.data for e in events if e.HasField("progress")]
    assert got == [b"1", b"2", b"3", b"4", b"5"]
    await w.close()


@pytest.mark.asyncio
async def test_list_runs_newest_first(aclient: Client) -> None:
    first = await aclient.submit(node("a"), name="first")
    second = await aclient.submit(node("a"), name="second")
    runs = (await aclient.stub.ListRuns(rpb.ListRunsRequest())).runs
    assert [r.run_id for r in runs] == [second, first]
    assert runs[0].name == "second" and runs[0].state == gpb.RUN_STATE_RUNNING


@pytest.mark.asyncio
async def test_snapshot_plus_tail_equals_full_replay(tmp_path: Path) -> None:
    """Recovery from (newest snapshot + the events after it) and from the whole log give the
    same runs; snapshots are taken every few events here so that both paths are exercised."""
    url = f"sqlite:///{tmp_path}/hg.db"

    async def workload() -> tuple[str, rpb.GetRunResponse]:
        async with Coordinator(store_url=url, snapshot_every=7) as c:
            client = Client(c.address)
            w = await RawWorker(c.address, slots=3).connect()
            run_id = await client.submit(
                node("root", can_mutate=True), *[node(f"n{i}", deps=["root"]) for i in range(6)]
            )
            (root,) = await w.take()
            spawn = [gpb.Mutation(add_node=gpb.AddNode(node=node("late", deps=["n0", "n1"])))]
            w.answer(root, b'"r"', mutations=spawn)
            done = 0
            while done < 4:  # leave the run unfinished, with attempts in flight
                (a,) = await w.take()
                w.answer(a, str(done).encode())
                done += 1
            for _ in range(4):
                await w.ack()
            live = await client.get(run_id)
            await w.drop()
            await client.close()
            return run_id, live

    run_id, live = await workload()

    async def recovered() -> rpb.GetRunResponse:
        async with Coordinator(store_url=url, snapshot_every=10**9) as c:
            client = Client(c.address)
            run = await client.get(run_id)
            await client.close()
            return run

    from_snapshot = await recovered()
    import sqlite3

    with sqlite3.connect(tmp_path / "hg.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 1
        conn.execute("DELETE FROM snapshots")
    from_log = await recovered()

    def digest(run: rpb.GetRunResponse) -> dict[str, tuple[int, bytes, int]]:
        # Recovery expires every lease: what was RUNNING is READY again, at no retry cost.
        expired = {gpb.NODE_STATE_RUNNING: gpb.NODE_STATE_READY}
        return {n.id: (expired.get(n.state, n.state), n.result, n.attempts) for n in run.nodes}

    assert from_snapshot.nodes == from_log.nodes
    assert digest(from_snapshot) == digest(live)
    assert from_snapshot.run.last_seq == from_log.run.last_seq
    assert {n.id for n in from_log.nodes} == {n.id for n in live.nodes}
    assert "late" in {n.id for n in live.nodes}


@pytest.mark.asyncio
async def test_watch_resumes_across_a_restart_without_gap_or_duplicate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hg.db"

    async def before() -> tuple[str, list[rpb.RunEvent]]:
        async with Coordinator(store_url=url) as c:
            client = Client(c.address)
            w = await RawWorker(c.address, slots=1).connect()
            run_id = await client.submit(node("a"), node("b", deps=["a"]), node("c", deps=["b"]))
            (a,) = await w.take()
            w.answer(a)
            await w.ack()
            seen: list[rpb.RunEvent] = []
            async for r in client.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id)):
                seen.extend(r.events)
                if any(e.HasField("attempt_finished") for e in seen):
                    break
            await w.drop()
            await client.close()
            return run_id, seen

    run_id, seen = await before()

    async def after() -> tuple[list[rpb.RunEvent], list[rpb.RunEvent]]:
        async with Coordinator(store_url=url) as c:
            client = Client(c.address)
            w = await RawWorker(c.address, slots=1).connect()
            resumed = asyncio.create_task(client.events(run_id, from_seq=seen[-1].seq + 1))
            for _ in range(2):
                (x,) = await w.take()
                w.answer(x)
            rest = await asyncio.wait_for(resumed, 10)
            full = await client.events(run_id)
            await w.close()
            await client.close()
            return rest, full

    rest, full = await after()
    assert [e.seq for e in seen + rest] == [e.seq for e in full]
    assert [e.SerializeToString() for e in seen + rest] == [e.SerializeToString() for e in full]
    assert full[-1].run_ended.state == gpb.RUN_STATE_SUCCEEDED


@pytest.mark.asyncio
async def test_snapshots_are_spaced_by_the_size_of_the_state(tmp_path: Path) -> None:
    """A snapshot is taken after max(snapshot_every, 2 x nodes held) events: often while the
    state is small, rarely once it is large (a dump costs time in proportion to the state)."""

    async def scenario(runs: int, nodes_per_run: int) -> int:
        async with Coordinator(store_url=f"sqlite:///{tmp_path}/{runs}.db", snapshot_every=4) as c:
            client = Client(c.address)
            w = await RawWorker(c.address, slots=1).connect()
            for r in range(runs):
                await client.submit(*[node(f"r{r}n{i}") for i in range(nodes_per_run)])
                for _ in range(nodes_per_run):
                    (a,) = await w.take()
                    w.answer(a, b"1")
                    assert (await w.ack()).status == wpb.ACK_STATUS_COMMITTED
            taken = c.runtime.snapshots_taken
            await w.drop()
            await client.close()
            return taken

    # One run of 40 nodes: about 82 events, in 41 commits. A snapshot every 4 events would be
    # about 20 of them; scaled to the state, the first is due after 80 events.
    assert await scenario(runs=1, nodes_per_run=40) <= 1
    # Ten runs of one node: about 40 events while the state grows from 1 to 10 nodes.
    assert await scenario(runs=10, nodes_per_run=1) >= 2


@pytest.mark.asyncio
async def test_calls_made_while_the_log_replays_wait_and_are_served(tmp_path: Path) -> None:
    """The port opens before recovery: health says NOT_SERVING, and a client call or a worker's
    Hello made meanwhile is answered once replay is done, instead of failing UNAVAILABLE."""
    url = f"sqlite:///{tmp_path}/hg.db"

    async def first_life() -> str:
        async with Coordinator(store_url=url) as c:
            client = Client(c.address)
            run_id = await client.submit(node("a"), node("b", deps=["a"]))
            await client.close()
            return run_id

    run_id = await first_life()
    entered, release = threading.Event(), threading.Event()

    async def second_life() -> None:
        c = Coordinator(store_url=url)
        replay = c.runtime.store.replay

        def gated(after: int = 0) -> Iterator[bytes]:
            entered.set()
            release.wait(WAIT)
            yield from replay(after)

        c.runtime.store.replay = gated  # type: ignore[method-assign]
        starting = asyncio.create_task(c.start())
        assert await asyncio.to_thread(entered.wait, WAIT), "recovery never began"
        address = c.address  # bound before recovery began
        async with grpc.aio.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            client = Client(address)
            pending_get = asyncio.create_task(client.get(run_id))
            worker = RawWorker(address, slots=1)
            pending_hello = asyncio.create_task(worker.connect())
            release.set()
            await asyncio.wait_for(starting, WAIT)
            got = await asyncio.wait_for(pending_get, WAIT)
            assert states(got) == {"a": "READY", "b": "PENDING"}
            await asyncio.wait_for(pending_hello, WAIT)
            (a,) = await worker.take()
            assert a.ref.node_id == "a"
            status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            await worker.drop()
            await client.close()
        await c.stop()

    await second_life()
