"""An in-process fake coordinator: a real grpc.aio server on loopback implementing WorkerService,
which records what workers send and lets a test decide every message they receive."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import pytest

from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.v1 import worker_pb2_grpc

WAIT = 10.0

_END = object()
_leases = itertools.count(2**60)  # leases above 2**53 must survive the round trip exactly


class Changes:
    """Wakes whoever waits for a state change. `notify()` is synchronous, so agents in tests
    (running on the same loop as the fake) can call it too."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def reset(self) -> None:
        self._event = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = WAIT) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                if self._event is None:
                    self._event = asyncio.Event()
                await self._event.wait()


changes = Changes()


class FakeSession:
    """One stream, seen from the coordinator's side."""

    def __init__(self, fake: FakeCoordinator, hello: wpb.Hello, session_id: str) -> None:
        self.fake = fake
        self.hello = hello
        self.id = session_id
        self.received: list[wpb.ConnectRequest] = []
        self.outgoing: asyncio.Queue[Any] = asyncio.Queue()
        self.half_closed = False
        self.ended = False

    # --- what the worker sent ---

    def messages(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.received if m.WhichOneof("msg") == kind]

    def results(self) -> list[wpb.Result]:
        return [r for m in self.messages("results") for r in m.items]

    def progress(self) -> list[wpb.Progress]:
        return [p for m in self.messages("progress") for p in m.items]

    async def wait_results(self, count: int) -> list[wpb.Result]:
        await self.fake.wait_until(lambda: len(self.results()) >= count)
        return self.results()

    # --- what the worker receives ---

    def send(self, msg: wpb.ConnectResponse) -> None:
        self.outgoing.put_nowait(msg)

    def assign(self, *items: wpb.Assignment) -> None:
        self.send(wpb.ConnectResponse(push=wpb.Push(assignments=list(items))))

    def ack(
        self, refs: Iterable[wpb.AssignmentRef], status: int = wpb.ACK_STATUS_COMMITTED
    ) -> None:
        acks = [wpb.Ack(ref=r, status=status) for r in refs]  # type: ignore[arg-type]
        self.send(wpb.ConnectResponse(push=wpb.Push(acks=acks)))

    def cancel(self, ref: wpb.AssignmentRef, reason: str = "run_cancelled") -> None:
        self.send(wpb.ConnectResponse(push=wpb.Push(cancels=[wpb.Cancel(ref=ref, reason=reason)])))

    def request_drain(self) -> None:
        self.send(wpb.ConnectResponse(drain_request=wpb.DrainRequest()))

    def kill(self) -> None:
        """Ends the stream with UNAVAILABLE, as a coordinator restart would."""
        self.outgoing.put_nowait(_END)


class FakeCoordinator(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self,
        *,
        heartbeat_interval_s: float = 5.0,
        session_timeout_s: float = 15.0,
        max_batch: int = 512,
        max_message_bytes: int = 64 * 1024 * 1024,
        refuse: str = "",
        auto_ack: bool = False,
    ) -> None:
        self.welcome = wpb.Welcome(
            protocol_version=2,
            heartbeat_interval_s=heartbeat_interval_s,
            session_timeout_s=session_timeout_s,
            max_message_bytes=max_message_bytes,
            max_batch=max_batch,
        )
        self.refuse = refuse
        self.auto_ack = auto_ack
        self.sessions: list[FakeSession] = []
        self.hellos: list[wpb.Hello] = []
        self._ids = itertools.count(1)
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> FakeCoordinator:
        self.server = grpc.aio.server()
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)

    def notify(self) -> None:
        changes.notify()

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = WAIT) -> None:
        await changes.wait_until(predicate, within_s)

    async def session(self, index: int) -> FakeSession:
        await self.wait_until(lambda: len(self.sessions) > index)
        return self.sessions[index]

    async def Connect(
        self, request_iterator: AsyncIterator[wpb.ConnectRequest], context: Any
    ) -> AsyncIterator[wpb.ConnectResponse]:
        first = await anext(request_iterator)
        self.hellos.append(first.hello)
        self.notify()
        if self.refuse:
            yield wpb.ConnectResponse(refusal=wpb.Refusal(reason=self.refuse))
            return
        session = FakeSession(self, first.hello, f"s{next(self._ids)}")
        welcome = wpb.Welcome()
        welcome.CopyFrom(self.welcome)
        welcome.session_id = session.id
        yield wpb.ConnectResponse(welcome=welcome)
        self.sessions.append(session)
        self.notify()
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            while True:
                msg = await session.outgoing.get()
                if msg is None:
                    return
                if msg is _END:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "killed by the test")
                yield msg
        finally:
            reader.cancel()
            session.ended = True
            self.notify()

    async def _read(
        self, request_iterator: AsyncIterator[wpb.ConnectRequest], session: FakeSession
    ) -> None:
        try:
            async for msg in request_iterator:
                session.received.append(msg)
                if self.auto_ack and msg.WhichOneof("msg") == "results":
                    session.ack(r.ref for r in msg.results.items)
                self.notify()
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            return
        session.half_closed = True
        session.outgoing.put_nowait(None)  # end the stream, as the coordinator does
        self.notify()


def assignment(
    node_id: str,
    agent: str = "echo",
    input: bytes = b"",
    *,
    run_id: str = "r1",
    attempt: int = 1,
    lease: int | None = None,
    deps: Iterable[tuple[str, bytes]] = (),
    can_mutate: bool = False,
) -> wpb.Assignment:
    return wpb.Assignment(
        ref=wpb.AssignmentRef(
            run_id=run_id,
            node_id=node_id,
            attempt=attempt,
            lease=lease if lease is not None else next(_leases),
        ),
        agent=agent,
        input=input,
        deps=[wpb.DependencyResult(node_id=n, result=r) for n, r in deps],
        can_mutate=can_mutate,
    )


FakeBody = Callable[[FakeCoordinator], Awaitable[None]]


@pytest.fixture
def with_fake() -> Callable[..., None]:
    """Runs `body(fake)` in a fresh event loop with a fake coordinator listening."""

    def run(body: FakeBody, **options: Any) -> None:
        async def main() -> None:
            changes.reset()  # events belong to one loop; each test has its own
            fake = await FakeCoordinator(**options).start()
            try:
                await body(fake)
            finally:
                await fake.stop()

        asyncio.run(main())

    return run
