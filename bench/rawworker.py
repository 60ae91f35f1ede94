"""A minimal worker that speaks the protocol by hand (docs/protocol.md), for two uses:

- the protocol's ceiling: agents run inline, every result of a Push message goes back
  in one Results message, so it measures the coordinator with as little worker overhead as a
  worker can have;
- a fallback when the Python SDK (`worker/`) is not importable.

It is the test kit's raw stream (tests/support/rawworker.py: the Hello, the request stream,
responses dispatched by kind) plus what a long-lived worker needs: it keeps each result until
acked, sends `held` and re-sends unacked results after a reconnect (backoff from the protocol's
RECONNECT_FIRST_MS doubling to RECONNECT_MAX_MS), and heartbeats at the Welcome's interval.
The recovery workload needs the reconnect.
"""

from __future__ import annotations

import asyncio
import json
import random

import grpc

from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.v1 import worker_pb2_grpc
from tests.support.rawworker import RECONNECT_FIRST_S, RECONNECT_MAX_S, Key, Stream, hello, key

from . import agents

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
_CHUNK = 256  # results per Results message


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


class _Session(Stream):
    """One stream of a RawStream: answers every Push at once, inline."""

    def __init__(self, owner: RawStream) -> None:
        super().__init__(
            hello(
                owner.name,
                agents.AGENTS,
                owner.slots,
                held=[r.ref for r in owner.unacked.values()],
                sdk_version="bench-raw",
            )
        )
        self.owner = owner
        self.beat: asyncio.Task[None] | None = None

    def on_welcome(self, welcome: wpb.Welcome) -> None:
        owner = self.owner
        owner.sessions += 1
        owner.connected.set()
        self._send_results(list(owner.unacked.values()))
        self.beat = asyncio.create_task(self._heartbeat(welcome.heartbeat_interval_s or 1.0))

    def on_refusal(self, refusal: wpb.Refusal) -> None:
        raise SystemExit(f"refused: {refusal.reason}")

    def on_push(self, push: wpb.Push) -> None:
        # The protocol's order: acks, then assignments, then cancels. Cancels need nothing:
        # agents run inline and finish at once, so the real result was already sent.
        unacked = self.owner.unacked
        for ack in push.acks:
            unacked.pop(key(ack.ref), None)
        results = [run_assignment(a) for a in push.assignments]
        for r in results:
            unacked[key(r.ref)] = r
        self._send_results(results)

    def _send_results(self, results: list[wpb.Result]) -> None:
        put = self.outbox.put_nowait
        for i in range(0, len(results), _CHUNK):
            put(wpb.ConnectRequest(results=wpb.Results(items=results[i : i + _CHUNK])))

    async def _heartbeat(self, interval: float) -> None:
        beat = wpb.ConnectRequest(heartbeat=wpb.Heartbeat())
        while True:
            await asyncio.sleep(interval)
            self.outbox.put_nowait(beat)


class RawStream:
    """One worker stream; reconnects until cancelled."""

    def __init__(self, address: str, *, name: str, slots: int) -> None:
        self.address = address
        self.name = name
        self.slots = slots
        self.unacked: dict[Key, wpb.Result] = {}
        self.connected = asyncio.Event()
        self.sessions = 0

    async def run(self) -> None:
        """Runs until cancelled."""
        backoff = RECONNECT_FIRST_S
        async with grpc.aio.insecure_channel(self.address, options=_OPTIONS) as channel:
            stub = worker_pb2_grpc.WorkerServiceStub(channel)
            while True:
                before = self.sessions
                session = _Session(self)
                try:
                    await session.serve(stub)  # an RPC error ends the stream, not the worker
                finally:
                    if session.beat is not None:
                        session.beat.cancel()
                    self.connected.clear()
                if self.sessions != before:
                    backoff = RECONNECT_FIRST_S
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, RECONNECT_MAX_S)
