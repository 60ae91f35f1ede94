"""A real coordinator on loopback plus a raw protocol client, for service-level tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc, worker_pb2_grpc
from hivegrid.v1 import worker_pb2 as wpb

WAIT = 10.0


def node(node_id: str, agent: str = "echo", deps: Sequence[str] = (), **kw: Any) -> gpb.NodeSpec:
    return gpb.NodeSpec(id=node_id, agent=agent, depends_on=list(deps), **kw)


class RawWorker:
    """Speaks the worker protocol by hand, so tests control every message."""

    def __init__(
        self,
        address: str,
        *,
        agents: Sequence[str] = ("echo",),
        slots: int = 4,
        name: str = "raw",
        held: Sequence[wpb.AssignmentRef] = (),
        version: int = 2,
    ) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.hello = wpb.Hello(
            worker_name=name,
            language="python",
            protocol_version=version,
            agents=list(agents),
            slots=slots,
            held=list(held),
        )
        self._out: asyncio.Queue[wpb.ConnectRequest | None] = asyncio.Queue()
        self.assignments: asyncio.Queue[wpb.Assignment] = asyncio.Queue()
        self.acks: asyncio.Queue[wpb.Ack] = asyncio.Queue()
        self.cancels: asyncio.Queue[wpb.Cancel] = asyncio.Queue()
        self.welcome: wpb.Welcome | None = None
        self.refusal: wpb.Refusal | None = None
        self.first: wpb.ConnectRequest | None = None
        self._call: Any = None
        self._task: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()
        self.status: grpc.StatusCode | None = None

    async def connect(self) -> RawWorker:
        first = self.first or wpb.ConnectRequest(hello=self.hello)

        async def requests() -> AsyncIterator[wpb.ConnectRequest]:
            yield first
            while True:
                msg = await self._out.get()
                if msg is None:
                    return
                yield msg

        self._call = worker_pb2_grpc.WorkerServiceStub(self.channel).Connect(requests())
        got = asyncio.Event()

        async def pump() -> None:
            try:
                async for msg in self._call:
                    kind = msg.WhichOneof("msg")
                    if kind == "welcome":
                        self.welcome = msg.welcome
                        got.set()
                    elif kind == "refusal":
                        self.refusal = msg.refusal
                        got.set()
                    elif kind == "push":
                        for ack in msg.push.acks:
                            self.acks.put_nowait(ack)
                        for c in msg.push.cancels:
                            self.cancels.put_nowait(c)
                        for a in msg.push.assignments:
                            self.assignments.put_nowait(a)
            except grpc.aio.AioRpcError as exc:
                self.status = exc.code()
            finally:
                self.ended.set()
                got.set()

        self._task = asyncio.create_task(pump())
        await asyncio.wait_for(got.wait(), WAIT)
        return self

    def send(self, msg: wpb.ConnectRequest) -> None:
        self._out.put_nowait(msg)

    def answer(
        self,
        a: wpb.Assignment | wpb.AssignmentRef,
        result: bytes = b"1",
        *,
        outcome: int = wpb.OUTCOME_SUCCEEDED,
        error: gpb.NodeError | None = None,
        mutations: Sequence[gpb.Mutation] = (),
    ) -> None:
        ref = a.ref if isinstance(a, wpb.Assignment) else a
        res = wpb.Result(ref=ref, outcome=outcome, result=result, mutations=list(mutations))
        if error is not None:
            res.error.CopyFrom(error)
        self.send(wpb.ConnectRequest(results=wpb.Results(items=[res])))

    async def take(self, n: int = 1) -> list[wpb.Assignment]:
        return [await asyncio.wait_for(self.assignments.get(), WAIT) for _ in range(n)]

    async def ack(self) -> wpb.Ack:
        return await asyncio.wait_for(self.acks.get(), WAIT)

    async def close(self) -> None:
        self._out.put_nowait(None)
        if self._task is not None:
            await asyncio.wait_for(self.ended.wait(), WAIT)
        await self.channel.close()

    async def drop(self) -> None:
        """Breaks the stream without a goodbye, like a killed process."""
        if self._call is not None:
            self._call.cancel()
        await asyncio.wait_for(self.ended.wait(), WAIT)
        await self.channel.close()


class Client:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = run_pb2_grpc.RunServiceStub(self.channel)

    async def submit(self, *nodes: gpb.NodeSpec, **kw: Any) -> str:
        resp = await self.stub.SubmitRun(rpb.SubmitRunRequest(nodes=list(nodes), **kw))
        return resp.run_id

    async def events(self, run_id: str, from_seq: int = 0) -> list[rpb.RunEvent]:
        out = []
        async for r in self.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id, from_seq=from_seq)):
            out.extend(r.events)
        return out

    async def wait_end(self, run_id: str) -> rpb.GetRunResponse:
        await asyncio.wait_for(self.events(run_id), WAIT)
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

    async def close(self) -> None:
        await self.channel.close()


def fill_disk(store: Any) -> Any:
    """Caps a SqliteStore's database at its current size: its next write fails with
    SQLITE_FULL, exactly as on a full disk. Returns the write connection (raise the cap on it,
    `PRAGMA max_page_count = 1073741823`, to give the space back)."""
    conn = store._write
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    return conn


async def history(client: Client, run_id: str) -> list[rpb.RunEvent]:
    """The run's events so far (the run may still be running)."""
    page = await client.stub.GetRun(rpb.GetRunRequest(run_id=run_id, page_size=1))
    out: list[rpb.RunEvent] = []
    call = client.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id))
    async for resp in call:
        out.extend(resp.events)
        if out and out[-1].seq >= page.run.last_seq:
            break
    call.cancel()
    return out


def states(run: rpb.GetRunResponse) -> dict[str, str]:
    return {n.id: gpb.NodeState.Name(n.state).removeprefix("NODE_STATE_") for n in run.nodes}
