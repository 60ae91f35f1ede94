"""For tests that run a `Coordinator` (hivegrid.coordinator.server) in their own event loop: an
async RunService client that returns what the coordinator sent (GetRunResponse, RunEvent),
and store helpers. The coordinator is real: a gRPC server on loopback, a real store."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc

from .wait import WAIT


class Client:
    """RunService over one grpc.aio channel. `stub` is there for the calls a test makes raw
    (to check a status code, or to send what no client would)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = run_pb2_grpc.RunServiceStub(self.channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit(self, *nodes: gpb.NodeSpec, **kw: Any) -> str:
        resp = await self.stub.SubmitRun(rpb.SubmitRunRequest(nodes=list(nodes), **kw))
        return str(resp.run_id)

    async def events(self, run_id: str, from_seq: int = 0) -> list[rpb.RunEvent]:
        """Every event from `from_seq` until the run ends (the watch of an ended run ends)."""
        out = []
        async for r in self.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id, from_seq=from_seq)):
            out.extend(r.events)
        return out

    async def wait_end(self, run_id: str, within: float = WAIT) -> rpb.GetRunResponse:
        """The run once it ended."""
        await asyncio.wait_for(self.events(run_id), within)
        return await self.get(run_id)

    async def get(self, run_id: str) -> rpb.GetRunResponse:
        """The run with all its nodes (every page)."""
        whole = rpb.GetRunResponse()
        token = ""
        while True:
            page = await self.stub.GetRun(
                rpb.GetRunRequest(run_id=run_id, page_size=10_000, page_token=token)
            )
            whole.run.CopyFrom(page.run)
            whole.nodes.extend(page.nodes)
            token = page.next_page_token
            if not token:
                return whole

    async def history(self, run_id: str) -> list[rpb.RunEvent]:
        """The run's events so far (the run may still be running)."""
        page = await self.stub.GetRun(rpb.GetRunRequest(run_id=run_id, page_size=1))
        out: list[rpb.RunEvent] = []
        call = self.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id))
        try:
            async for resp in call:
                out.extend(resp.events)
                if out and out[-1].seq >= page.run.last_seq:
                    break
        finally:
            call.cancel()
        return out

    async def until(self, run_id: str, kind: str, within: float = WAIT) -> list[rpb.RunEvent]:
        """The run's events up to and including the first one of `kind` (e.g. "attempt_lost"),
        watching live; all of them if the run ends first. TimeoutError at the deadline."""

        async def watch() -> list[rpb.RunEvent]:
            seen: list[rpb.RunEvent] = []
            call = self.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id))
            try:
                async for resp in call:
                    for event in resp.events:
                        seen.append(event)
                        if event.WhichOneof("kind") == kind:
                            return seen
            finally:
                call.cancel()
            return seen

        return await asyncio.wait_for(watch(), within)

    async def close(self) -> None:
        await self.channel.close()


async def history(client: Client, run_id: str) -> list[rpb.RunEvent]:
    """The run's events so far (the run may still be running)."""
    return await client.history(run_id)


def fill_disk(store: Any) -> Any:
    """Caps a SqliteStore's database at its current size: its next write fails with
    SQLITE_FULL, exactly as on a full disk. Returns the write connection (raise the cap on it,
    `PRAGMA max_page_count = 1073741823`, to give the space back)."""
    conn = store._write
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    return conn
