"""Damaged storage is reported clearly, and a store that cannot write refuses new work."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import pytest

from hivegrid.coordinator.server import Coordinator
from hivegrid.coordinator.store import StoreError
from hivegrid.storage.v1.storage_pb2 import EventBatch
from hivegrid.v1 import graph_pb2 as gpb
from tests.support.inprocess import Client, fill_disk
from tests.support.rawworker import RawWorker
from tests.support.values import node


async def _make_log(url: str) -> None:
    async with Coordinator(store_url=url) as c:
        client = Client(c.address)
        w = await RawWorker(c.address).connect()
        run_id = await client.submit(node("a"), node("b", deps=["a"]))
        for _ in range(2):
            (a,) = await w.take()
            w.answer(a)
        await client.wait_end(run_id)
        await w.close()
        await client.close()


async def _start(url: str) -> None:
    async with Coordinator(store_url=url):
        pass


def _edit(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM snapshots")  # force a replay of the whole log
        conn.execute(sql)


_LAST_BATCH = "(SELECT MAX(id) FROM batches)"


@pytest.mark.asyncio
async def test_an_unreadable_batch_is_detected_and_named(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    await _make_log(f"sqlite:///{path}")
    _edit(path, f"UPDATE batches SET data = x'ffffffff0a' WHERE id = {_LAST_BATCH}")
    with pytest.raises(
        StoreError, match=r"event log is damaged: the batch at log position \d+ cannot be read"
    ):
        await _start(f"sqlite:///{path}")


@pytest.mark.asyncio
async def test_an_unreadable_event_is_detected_and_named(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    await _make_log(f"sqlite:///{path}")
    garbage = EventBatch(events=[b"\xff\xff\xff\xff\x0a"]).SerializeToString()
    _edit(path, f"UPDATE batches SET data = x'{garbage.hex()}' WHERE id = {_LAST_BATCH}")
    with pytest.raises(StoreError, match=r"event log is damaged: event \d+ cannot be read"):
        await _start(f"sqlite:///{path}")


@pytest.mark.asyncio
async def test_missing_events_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    await _make_log(f"sqlite:///{path}")
    _edit(path, "DELETE FROM batches WHERE first_seq <= 3 AND last_seq >= 3")
    with pytest.raises(StoreError, match=r"jumps from event [12] to [4-9]"):
        await _start(f"sqlite:///{path}")


@pytest.mark.asyncio
async def test_full_disk_refuses_new_work_and_acks_nothing_it_cannot_keep(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"

    async with Coordinator(store_url=f"sqlite:///{path}") as c:
        client = Client(c.address)
        w = await RawWorker(c.address).connect()
        run_id = await client.submit(node("a"))
        (a,) = await w.take()
        fill_disk(c.runtime.store)
        w.answer(a, b'"x" ' * 50_000)
        # The ack must never come: there is no event to wait on, so give it a second.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(w.acks.get(), 1.0)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.submit(node("z"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "full" in info.value.details()
        # What is in memory is ahead of the log: the coordinator shows none of it.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.get(run_id)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await w.drop()
        await client.close()

    # Space is back (a new connection has no cap): a restart carries on from the log.
    async with Coordinator(store_url=f"sqlite:///{path}") as c:
        client = Client(c.address)
        run = await client.get(run_id)
        assert [(n.id, n.state) for n in run.nodes] == [("a", gpb.NODE_STATE_READY)]
        await client.close()
