"""A worker that speaks hivegrid.v1 WorkerService by hand (docs/protocol.md), for the tests that
must misbehave or read the wire, and for the bench's raw worker.

Three layers, each usable alone:

- `Stream`: one `Connect` call. It sends a first message (a Hello, or whatever a test wants to
  send first) and then whatever is put in its outbox, and hands each response to a handler by
  kind. A Push goes whole to `on_push`, whose handler keeps the protocol's order: a Push's acks,
  then its assignments, then its cancels (a Cancel may name an attempt whose Assignment is in
  the same Push). Nothing else runs per message: the bench's reconnecting worker subclasses it.
- `RawWorker`: a `Stream` that says nothing unless told (no heartbeats unless asked to echo the
  coordinator's), and queues what arrives, so that a test controls every message and waits for
  each answer with a deadline. Async.
- `SyncRawWorker`: the same worker for synchronous tests; it runs a `RawWorker` on an event
  loop of its own thread.

This module must not import pytest: the bench imports it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

import grpc

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.v1 import worker_pb2_grpc

from .wait import WAIT

T = TypeVar("T")

VERSION = int(wpb.PROTOCOL_CONSTANT_VERSION)
RECONNECT_FIRST_S = wpb.PROTOCOL_CONSTANT_RECONNECT_FIRST_MS / 1000
RECONNECT_MAX_S = wpb.PROTOCOL_CONSTANT_RECONNECT_MAX_MS / 1000
SDK_VERSION = "0.0.0-test"

Ref = wpb.AssignmentRef
Key = tuple[str, str, int, int]


def key(ref: Ref) -> Key:
    """An attempt's identity, hashable (AssignmentRef messages are not)."""
    return (ref.run_id, ref.node_id, ref.attempt, ref.lease)


def hello(
    name: str,
    agents: Sequence[str],
    slots: int,
    *,
    held: Sequence[Ref] = (),
    version: int = VERSION,
    language: str = "python",
    sdk_version: str = SDK_VERSION,
    labels: dict[str, str] | None = None,
) -> wpb.Hello:
    return wpb.Hello(
        worker_name=name,
        language=language,
        sdk_version=sdk_version,
        protocol_version=version,
        agents=list(agents),
        slots=slots,
        held=list(held),
        labels=labels or {},
    )


def result(
    answered: wpb.Assignment | Ref,
    value: bytes = b"1",
    *,
    outcome: int = wpb.OUTCOME_SUCCEEDED,
    error: gpb.NodeError | None = None,
    mutations: Sequence[gpb.Mutation] = (),
) -> wpb.Result:
    """The Result of an assignment (or of a bare ref: tests answer refs that were never sent)."""
    ref = answered.ref if isinstance(answered, wpb.Assignment) else answered
    res = wpb.Result(ref=ref, outcome=outcome, result=value, mutations=list(mutations))  # type: ignore[arg-type]
    if error is not None:
        res.error.CopyFrom(error)
    return res


class Stream:
    """One WorkerService.Connect call spoken by hand. Override the `on_*` handlers; they run on
    the task reading the stream, one message at a time, in the order the messages came."""

    def __init__(self, hello: wpb.Hello) -> None:
        self.hello = hello
        # What to send first instead of ConnectRequest(hello=self.hello), e.g. to test that a
        # stream must begin with a Hello.
        self.first: wpb.ConnectRequest | None = None
        self.outbox: asyncio.Queue[wpb.ConnectRequest | None] = asyncio.Queue()
        self.call: Any = None
        # How the stream ended: OK when the coordinator closed it, else the RPC's error code.
        self.status: grpc.StatusCode | None = None
        self.details = ""
        self._dropping = False

    # --- what the worker sends ---

    def send(self, msg: wpb.ConnectRequest) -> None:
        self.outbox.put_nowait(msg)

    def end(self) -> None:
        """Half-closes the stream once what is queued has been sent (a goodbye)."""
        self.outbox.put_nowait(None)

    async def _requests(self) -> AsyncIterator[wpb.ConnectRequest]:
        yield self.first or wpb.ConnectRequest(hello=self.hello)
        get = self.outbox.get
        while (msg := await get()) is not None:
            yield msg

    # --- what the worker receives ---

    def on_welcome(self, welcome: wpb.Welcome) -> None:
        pass

    def on_refusal(self, refusal: wpb.Refusal) -> None:
        pass

    def on_push(self, push: wpb.Push) -> None:
        pass

    def on_heartbeat(self) -> None:
        pass

    def on_drain_request(self) -> None:
        pass

    async def serve(
        self, stub: worker_pb2_grpc.WorkerServiceStub, *, wait_for_ready: bool = False
    ) -> None:
        """Runs the stream to its end. An RPC error ends it too: its code is kept in `status`,
        not raised (a test asks how its stream ended; a reconnecting worker tries again)."""
        self.call = call = stub.Connect(self._requests(), wait_for_ready=wait_for_ready)
        try:
            async for msg in call:
                kind = msg.WhichOneof("msg")
                if kind == "push":
                    self.on_push(msg.push)
                elif kind == "heartbeat":
                    self.on_heartbeat()
                elif kind == "welcome":
                    self.on_welcome(msg.welcome)
                elif kind == "refusal":
                    self.on_refusal(msg.refusal)
                elif kind == "drain_request":
                    self.on_drain_request()
            self.status = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.status = exc.code()
            self.details = exc.details() or ""
        except asyncio.CancelledError:
            if not self._dropping:
                raise
            self.status = grpc.StatusCode.CANCELLED  # our own drop(): the stream is gone
        finally:
            self.outbox.put_nowait(None)  # ends the request iterator if it still waits

    def cancel_call(self) -> None:
        """Breaks the stream without a goodbye, like a killed process."""
        self._dropping = True
        if self.call is not None:
            self.call.cancel()


class RawWorker(Stream):
    """An async raw worker: says only what the test tells it, and queues what it receives.

    `await RawWorker(address, agents=..., slots=...).connect()` returns once the coordinator
    answered the Hello (with a Welcome, kept in `welcome`, or a Refusal, in `refusal`) or ended
    the stream. Then `take()`, `ack()` and `cancel()` wait for what the coordinator pushes,
    `answer()`, `progress()`, `heartbeat()`, `drain()` and `send()` talk back, and `close()`
    (a goodbye) or `drop()` (a broken stream) end it."""

    def __init__(
        self,
        address: str,
        *,
        agents: Sequence[str] = ("echo",),
        slots: int = 4,
        name: str = "raw",
        held: Sequence[Ref] = (),
        version: int = VERSION,
        language: str = "python",
        sdk_version: str = SDK_VERSION,
        labels: dict[str, str] | None = None,
        echo_heartbeats: bool = False,
        wait_for_ready: bool = False,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        super().__init__(
            hello(
                name,
                agents,
                slots,
                held=held,
                version=version,
                language=language,
                sdk_version=sdk_version,
                labels=labels,
            )
        )
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=list(options))
        self.echo_heartbeats = echo_heartbeats
        self.wait_for_ready = wait_for_ready
        self.welcome: wpb.Welcome | None = None
        self.refusal: wpb.Refusal | None = None
        self.assignments: asyncio.Queue[wpb.Assignment] = asyncio.Queue()
        self.acks: asyncio.Queue[wpb.Ack] = asyncio.Queue()
        self.cancels: asyncio.Queue[wpb.Cancel] = asyncio.Queue()
        self.heartbeats = 0  # heartbeats received from the coordinator
        self.drain_requested = asyncio.Event()
        self.ended = asyncio.Event()
        self._answered = asyncio.Event()  # a Welcome, a Refusal, or the end
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def _out(self) -> asyncio.Queue[wpb.ConnectRequest | None]:
        """The outbox under the name tests/fuzz/driver.py uses (`end()` is the public way)."""
        return self.outbox

    # --- the stream ---

    async def connect(self, within: float = WAIT) -> RawWorker:
        """Opens the stream and waits for the coordinator's answer to the first message."""
        stub = worker_pb2_grpc.WorkerServiceStub(self.channel)
        self._task = asyncio.create_task(
            self._run(stub), name=f"raw worker {self.hello.worker_name}"
        )
        await asyncio.wait_for(self._answered.wait(), within)
        return self

    async def _run(self, stub: worker_pb2_grpc.WorkerServiceStub) -> None:
        try:
            await self.serve(stub, wait_for_ready=self.wait_for_ready)
        finally:
            self.ended.set()
            self._answered.set()

    def expect_welcome(self) -> wpb.Welcome:
        """The Welcome; fails naming the refusal (or how the stream ended) if there is none."""
        if self.welcome is None:
            why = (
                f"refused: {self.refusal.reason}"
                if self.refusal is not None
                else f"the stream ended ({self.status} {self.details})"
            )
            raise AssertionError(f"raw worker {self.hello.worker_name} got no Welcome: {why}")
        return self.welcome

    def on_welcome(self, welcome: wpb.Welcome) -> None:
        self.welcome = welcome
        self._answered.set()

    def on_refusal(self, refusal: wpb.Refusal) -> None:
        self.refusal = refusal
        self._answered.set()

    def on_push(self, push: wpb.Push) -> None:
        for ack in push.acks:
            self.acks.put_nowait(ack)
        for a in push.assignments:
            self.assignments.put_nowait(a)
        for c in push.cancels:
            self.cancels.put_nowait(c)

    def on_heartbeat(self) -> None:
        self.heartbeats += 1
        if self.echo_heartbeats:
            self.heartbeat()

    def on_drain_request(self) -> None:
        self.drain_requested.set()

    # --- talking back ---

    def answer(
        self,
        answered: wpb.Assignment | Ref,
        value: bytes = b"1",
        *,
        outcome: int = wpb.OUTCOME_SUCCEEDED,
        error: gpb.NodeError | None = None,
        mutations: Sequence[gpb.Mutation] = (),
    ) -> None:
        """One Result in one Results message."""
        res = result(answered, value, outcome=outcome, error=error, mutations=mutations)
        self.send(wpb.ConnectRequest(results=wpb.Results(items=[res])))

    def answer_all(self, items: Sequence[wpb.Result]) -> None:
        """Many results in one Results message."""
        self.send(wpb.ConnectRequest(results=wpb.Results(items=list(items))))

    def progress(self, ref: Ref, *data: bytes) -> None:
        items = [wpb.Progress(ref=ref, data=d) for d in data]
        self.send(wpb.ConnectRequest(progress=wpb.ProgressBatch(items=items)))

    def heartbeat(self) -> None:
        self.send(wpb.ConnectRequest(heartbeat=wpb.Heartbeat()))

    def drain(self) -> None:
        """The worker's own Drain: it takes no new assignments."""
        self.send(wpb.ConnectRequest(drain=wpb.Drain()))

    # --- waiting for the coordinator ---

    async def take(self, n: int = 1, within: float = WAIT) -> list[wpb.Assignment]:
        """The next `n` assignments; TimeoutError if any takes longer than `within` seconds."""
        return [await asyncio.wait_for(self.assignments.get(), within) for _ in range(n)]

    async def ack(self, within: float = WAIT) -> wpb.Ack:
        return await asyncio.wait_for(self.acks.get(), within)

    async def cancel(self, within: float = WAIT) -> wpb.Cancel:
        return await asyncio.wait_for(self.cancels.get(), within)

    # --- the end ---

    async def close(self, within: float = WAIT) -> None:
        """A goodbye: half-closes the stream and waits until the coordinator ends it."""
        if self._closed:
            return
        self._closed = True
        try:
            self.end()
            if self._task is not None:
                await asyncio.wait_for(self.ended.wait(), within)
        finally:
            await self._release()

    async def drop(self, within: float = WAIT) -> None:
        """Breaks the stream without a goodbye, like a killed process."""
        if self._closed:
            return
        self._closed = True
        try:
            self.cancel_call()
            if self._task is not None:
                await asyncio.wait_for(self.ended.wait(), within)
        finally:
            await self._release()

    async def _release(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.channel.close()


class SyncRawWorker:
    """`RawWorker` for synchronous tests: the same calls, blocking. The worker lives on an event
    loop in a thread of its own, which `close()` or `drop()` ends (either may be called twice).
    Usable as a context manager, which closes it."""

    def __init__(self, address: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sync raw worker", daemon=True
        )
        self._thread.start()
        self._done = False

        async def make() -> RawWorker:  # grpc.aio objects belong to the loop they are made on
            return RawWorker(address, **options)

        self.raw = self._do(make(), WAIT)

    def _do(self, coro: Coroutine[Any, Any, T], within: float) -> T:
        # The coroutine keeps its own deadline; this one only guards against a stuck loop.
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(within + WAIT)

    def __enter__(self) -> SyncRawWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the async worker knows ---

    @property
    def hello(self) -> wpb.Hello:
        return self.raw.hello

    @property
    def welcome(self) -> wpb.Welcome | None:
        return self.raw.welcome

    @property
    def refusal(self) -> wpb.Refusal | None:
        return self.raw.refusal

    @property
    def status(self) -> grpc.StatusCode | None:
        return self.raw.status

    def expect_welcome(self) -> wpb.Welcome:
        return self.raw.expect_welcome()

    # --- the calls, blocking ---

    def connect(self, within: float = WAIT) -> SyncRawWorker:
        self._do(self.raw.connect(within), within)
        return self

    def send(self, msg: wpb.ConnectRequest) -> None:
        self._loop.call_soon_threadsafe(self.raw.send, msg)

    def answer(self, answered: wpb.Assignment | Ref, value: bytes = b"1", **kw: Any) -> None:
        res = result(answered, value, **kw)
        self.send(wpb.ConnectRequest(results=wpb.Results(items=[res])))

    def answer_all(self, items: Sequence[wpb.Result]) -> None:
        self.send(wpb.ConnectRequest(results=wpb.Results(items=list(items))))

    def progress(self, ref: Ref, *data: bytes) -> None:
        items = [wpb.Progress(ref=ref, data=d) for d in data]
        self.send(wpb.ConnectRequest(progress=wpb.ProgressBatch(items=items)))

    def heartbeat(self) -> None:
        self.send(wpb.ConnectRequest(heartbeat=wpb.Heartbeat()))

    def drain(self) -> None:
        self.send(wpb.ConnectRequest(drain=wpb.Drain()))

    def take(self, n: int = 1, within: float = WAIT) -> list[wpb.Assignment]:
        return self._do(self.raw.take(n, within), within * n)

    def ack(self, within: float = WAIT) -> wpb.Ack:
        return self._do(self.raw.ack(within), within)

    def cancel(self, within: float = WAIT) -> wpb.Cancel:
        return self._do(self.raw.cancel(within), within)

    def wait_ended(self, within: float = WAIT) -> None:
        self._do(asyncio.wait_for(self.raw.ended.wait(), within), within)

    def close(self, within: float = WAIT) -> None:
        self._end(self.raw.close(within), within)

    def drop(self, within: float = WAIT) -> None:
        self._end(self.raw.drop(within), within)

    def _end(self, how: Coroutine[Any, Any, None], within: float) -> None:
        if self._done:
            how.close()
            return
        self._done = True
        try:
            self._do(how, within)
        finally:
            self._do(_shutdown(), WAIT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(WAIT)
            self._loop.close()


async def _shutdown() -> None:
    """Whatever still runs on the loop ends before the loop does (no task left pending)."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()
