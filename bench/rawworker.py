"""A minimal worker that speaks the protocol by hand (docs/protocol.md), for two uses:

- the protocol's ceiling: agents run inline, every result of a Push message goes back
  in one Results message, so it measures the coordinator with as little worker overhead as a
  worker can have;
- a fallback when the Python SDK (`worker/`) is not importable.

It keeps each result until acked, sends `held` and re-sends unacked results after a reconnect
(backoff 0.1 s doubling to 2 s), which the recovery workload needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator

import grpc

from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.v1 import worker_pb2_grpc

from . import agents

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def _key(ref: wpb.AssignmentRef) -> tuple[str, str, int, int]:
    return (ref.run_id, ref.node_id, ref.attempt, ref.lease)


def run_assignment(a: wpb.Assignment) -> wpb.Result:
    agent = a.agent
    res = wpb.Result(ref=a.ref, outcome=wpb.OUTCOME_SUCCEEDED)
    if agent == "noop":
        pass
    elif agent == "stamp":
        res.result = agents.stamp()
    elif agent == "join":
        res.result = str(len(a.deps)).encode()
    elif agent == "spawn":
        spec = json.loads(a.input)
        res.mutations.extend(agents.spawn_mutations(a.ref.node_id, spec))
        res.result = b'{"spawned":%d}' % int(spec["count"])
    else:
        res.outcome = wpb.OUTCOME_FAILED
        res.error.message = f"unknown agent {agent}"
        res.error.kind = "unknown_agent"
    return res


class RawStream:
    """One worker stream; reconnects until cancelled."""

    def __init__(self, address: str, *, name: str, slots: int) -> None:
        self.address = address
        self.name = name
        self.slots = slots
        self.unacked: dict[tuple[str, str, int, int], wpb.Result] = {}
        self.connected = asyncio.Event()
        self.sessions = 0

    async def run(self) -> None:
        """Runs until cancelled."""
        backoff = 0.1
        async with grpc.aio.insecure_channel(self.address, options=_OPTIONS) as channel:
            stub = worker_pb2_grpc.WorkerServiceStub(channel)
            while True:
                before = self.sessions
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self._session(stub)
                if self.sessions != before:
                    backoff = 0.1
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 2.0)

    async def _session(self, stub: worker_pb2_grpc.WorkerServiceStub) -> None:
        out: asyncio.Queue[wpb.ConnectRequest | None] = asyncio.Queue()
        hello = wpb.Hello(
            worker_name=self.name,
            language="python",
            sdk_version="bench-raw",
            protocol_version=2,
            agents=list(agents.AGENTS),
            slots=self.slots,
            held=[r.ref for r in self.unacked.values()],
        )

        async def requests() -> AsyncIterator[wpb.ConnectRequest]:
            yield wpb.ConnectRequest(hello=hello)
            while True:
                msg = await out.get()
                if msg is None:
                    return
                yield msg

        call = stub.Connect(requests())
        beat = asyncio.create_task(self._heartbeat(out))
        try:
            async for msg in call:
                kind = msg.WhichOneof("msg")
                if kind == "welcome":
                    self.sessions += 1
                    self.connected.set()
                    items = list(self.unacked.values())
                    for i in range(0, len(items), 256):
                        out.put_nowait(
                            wpb.ConnectRequest(results=wpb.Results(items=items[i : i + 256]))
                        )
                elif kind == "refusal":
                    raise SystemExit(f"refused: {msg.refusal.reason}")
                else:
                    self._handle(msg, out)
        finally:
            beat.cancel()
            out.put_nowait(None)
            self.connected.clear()

    @staticmethod
    async def _heartbeat(out: asyncio.Queue[wpb.ConnectRequest | None]) -> None:
        while True:
            await asyncio.sleep(1.0)
            out.put_nowait(wpb.ConnectRequest(heartbeat=wpb.Heartbeat()))

    def _handle(
        self, msg: wpb.ConnectResponse, out: asyncio.Queue[wpb.ConnectRequest | None]
    ) -> None:
        if msg.WhichOneof("msg") != "push":
            return
        push = msg.push
        for ack in push.acks:
            self.unacked.pop(_key(ack.ref), None)
        # Cancels need nothing: agents run inline and finish at once, so the real result was
        # already sent.
        results = [run_assignment(a) for a in push.assignments]
        for r in results:
            self.unacked[_key(r.ref)] = r
        for i in range(0, len(results), 256):
            out.put_nowait(wpb.ConnectRequest(results=wpb.Results(items=results[i : i + 256])))
