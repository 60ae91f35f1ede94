"""The worker's runtime: one stream to the coordinator, the agents it runs, and reconnection.

Theory of operation. Everything below runs on one event loop thread; sync agents run in a
thread pool and come back to the loop through `call_soon_threadsafe` (progress) and their
futures (results).

- An assignment becomes a `Context` in `running` plus the agent's own task (or a pool future);
  the task's done callback encodes the answer once, as protobuf bytes, and files it in
  `unacked` (kept until its Ack) and `outbox` (to be written on the current stream).
- One writer coroutine per stream sends whatever is pending as one message per kind: it flushes
  at once when idle, and what finishes while a write is in flight is gathered for the next one.
- One reader coroutine per stream starts assignments, drops acked results, and cancels tasks.
- When the stream breaks, agents keep running; the next Hello lists every running and unacked
  ref in `held`, and `outbox` is refilled from `unacked`.

Invariant: a ref is in at most one of `running`, `queued` and `unacked`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from hivegrid.v1 import worker_pb2 as wpb

from . import _codec
from ._codec import RefKey
from ._context import Context
from ._errors import CoordinatorRefusedError, NonRetryableError

log = logging.getLogger("hivegrid.worker")

PROTOCOL_VERSION = 2
SDK_VERSION = "0.1.0"
_CONNECT = "/hivegrid.v1.WorkerService/Connect"
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]
_WELCOME_TIMEOUT_S = 30.0
# Reconnecting is cheap (a refused connect); a short ceiling gets work going again soon after
# a coordinator restart.
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 1.0
# Used until a Welcome says otherwise.
_DEFAULT_MAX_BATCH = 256
_DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

Agent = Callable[[Context], Any]


class _StreamLost(Exception):
    """The stream is unusable; reconnect."""


class Runner:
    """The state of one `Worker.serve()` call."""

    def __init__(
        self, *, name: str, slots: int, labels: Mapping[str, str], agents: Mapping[str, Agent]
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self._name = name
        self._slots = slots
        self._labels = dict(labels)
        self._agents = {agent: (fn, _is_async(fn)) for agent, fn in agents.items()}
        self._pool: ThreadPoolExecutor | None = None
        if not all(is_async for _, is_async in self._agents.values()):
            self._pool = ThreadPoolExecutor(slots, thread_name_prefix=f"hivegrid-{name}")
        self._running: dict[RefKey, Context] = {}
        self._queued: deque[wpb.Assignment] = deque()
        self._unacked: dict[RefKey, bytes] = {}
        self._outbox: list[bytes] = []
        self._progress: list[bytes] = []
        self._wake = asyncio.Event()
        self._drain_wanted = asyncio.Event()
        self._draining = False
        self._drain_sent = False
        self._write_closed = False
        self._max_batch = _DEFAULT_MAX_BATCH
        self._max_bytes = _DEFAULT_MAX_MESSAGE_BYTES
        self._heartbeat_s = 5.0
        self._session_timeout_s = 15.0
        self._last_received = 0.0
        self.session_id = ""

    # --- the connection loop ----------------------------------------------------------------

    async def serve(self, address: str) -> None:
        delay = _BACKOFF_FIRST_S
        try:
            while not (self._draining and not self._holds_anything()):
                welcomed = False
                try:
                    welcomed, finished = await self._session(address)
                    if finished:
                        return
                    reason = "the coordinator ended the stream"
                except CoordinatorRefusedError:
                    raise
                except grpc.aio.AioRpcError as exc:
                    reason = f"{exc.code().name}: {exc.details()}"
                except _StreamLost as exc:
                    reason = str(exc)
                except Exception as exc:  # a broken stream surfaces in several shapes
                    log.debug("stream error", exc_info=True)
                    reason = f"{type(exc).__name__}: {exc}"
                if welcomed:
                    delay = _BACKOFF_FIRST_S
                pause = random.uniform(delay / 2, delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                log.warning(
                    "hivegrid worker %s: stream to %s lost (%s); reconnecting in %.2f s",
                    self._name,
                    address,
                    reason,
                    pause,
                )
                # A drain while disconnected with nothing held ends serve() at once.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._drain_wanted.wait()
        finally:
            self._stop_agents()

    async def _session(self, address: str) -> tuple[bool, bool]:
        """One stream, from Hello to its end. Returns (welcomed, finished after a drain)."""
        channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        call = None
        welcomed = False
        try:
            connect = channel.stream_stream(
                _CONNECT, response_deserializer=wpb.ConnectResponse.FromString
            )
            call = connect()
            await call.write(self._hello())
            try:
                async with asyncio.timeout(_WELCOME_TIMEOUT_S):
                    first = await call.read()
            except TimeoutError:
                raise _StreamLost("no Welcome within 30 s") from None
            if first is grpc.aio.EOF:
                raise _StreamLost("the stream ended before Welcome")
            kind = first.WhichOneof("msg")
            if kind == "refusal":
                raise CoordinatorRefusedError(first.refusal.reason)
            if kind != "welcome":
                raise _StreamLost(f"expected Welcome, got {kind}")
            welcomed = True
            self._welcome(first.welcome)
            reader = asyncio.create_task(self._read(call))
            writer = asyncio.create_task(self._write(call))
            try:
                done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
                if writer in done:
                    writer.result()  # the writer ends only by half-closing after a drain, or raises
                    async with asyncio.timeout(self._session_timeout_s):
                        await reader
                    return welcomed, True
                reader.result()
                return welcomed, False
            finally:
                tasks = (reader, writer)
                for task in tasks:
                    task.cancel()
                # Not gather(): a cancel of serve() itself must still propagate from here.
                await asyncio.wait(tasks)
                for task in tasks:
                    if not task.cancelled():
                        task.exception()  # retrieved: the one that mattered was raised above
        except TimeoutError:
            raise _StreamLost("the coordinator did not close the stream after the drain") from None
        finally:
            if call is not None:
                call.cancel()
            await channel.close()

    def _hello(self) -> bytes:
        held = [_codec.ref_from_key(k) for k in self._running]
        held += [q.ref for q in self._queued]
        held += [_codec.ref_from_key(k) for k in self._unacked]
        hello = wpb.Hello(
            worker_name=self._name,
            language="python",
            sdk_version=SDK_VERSION,
            protocol_version=PROTOCOL_VERSION,
            agents=sorted(self._agents),
            labels=self._labels,
            slots=self._slots,
            held=held,
        )
        return wpb.ConnectRequest(hello=hello).SerializeToString()

    def _welcome(self, welcome: wpb.Welcome) -> None:
        self.session_id = welcome.session_id
        self._max_batch = welcome.max_batch or _DEFAULT_MAX_BATCH
        self._max_bytes = welcome.max_message_bytes or _DEFAULT_MAX_MESSAGE_BYTES
        if welcome.heartbeat_interval_s > 0:
            self._heartbeat_s = welcome.heartbeat_interval_s
        if welcome.session_timeout_s > 0:
            self._session_timeout_s = welcome.session_timeout_s
        self._last_received = self.loop.time()
        self._drain_sent = False
        self._write_closed = False
        # Re-send every unacked result, in the order they were produced.
        self._outbox = list(self._unacked.values())
        log.info("hivegrid worker %s connected: session %s", self._name, welcome.session_id)

    async def _read(self, call: Any) -> None:
        loop = self.loop
        read = call.read
        eof = grpc.aio.EOF
        while (msg := await read()) is not eof:
            self._last_received = loop.time()
            kind = msg.WhichOneof("msg")
            if kind == "push":
                push = msg.push
                if push.acks:
                    self._on_acks(push.acks)
                if push.cancels:
                    self._on_cancels(push.cancels)
                # Once we half-closed we could not answer: the coordinator re-queues those.
                if push.assignments and not self._write_closed:
                    start = self._start
                    for item in push.assignments:
                        start(item)
            elif kind == "drain_request":
                log.info("hivegrid worker %s: the coordinator asked it to drain", self._name)
                self.request_drain()
            elif kind == "refusal":
                raise CoordinatorRefusedError(msg.refusal.reason)

    async def _write(self, call: Any) -> None:
        loop = self.loop
        wake = self._wake
        last_sent = loop.time()
        while True:
            if self._draining and not self._drain_sent:
                self._drain_sent = True
                await call.write(_codec.DRAIN)
                last_sent = loop.time()
                continue
            if self._progress:
                await call.write(self._take(_codec.TAG_PROGRESS, self._progress))
                last_sent = loop.time()
                continue
            if self._outbox:
                await call.write(self._take(_codec.TAG_RESULTS, self._outbox))
                last_sent = loop.time()
                continue
            if self._draining and not self._holds_anything():
                self._write_closed = True
                await call.done_writing()
                return
            wake.clear()
            now = loop.time()
            silent = now - self._last_received
            if silent > self._session_timeout_s:
                raise _StreamLost(f"nothing received for {silent:.1f} s")
            wait = self._heartbeat_s - (now - last_sent)
            if wait <= 0:
                await call.write(_codec.HEARTBEAT)
                last_sent = loop.time()
                continue
            wait = min(wait, self._session_timeout_s - silent)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()

    def _take(self, tag: bytes, items: list[bytes]) -> bytes:
        """Removes the first batch (at most max_batch items, under max_message_bytes) from
        `items` and returns it as one message."""
        limit = self._max_batch
        budget = self._max_bytes - 16  # the message's own tag and length
        size = 0
        count = 0
        for item in items:
            if count == limit or (count and size + len(item) > budget):
                break
            size += len(item)
            count += 1
        if count == len(items):
            batch = items[:]
            items.clear()
        else:
            batch = items[:count]
            del items[:count]
        return _codec.message(tag, batch, size)

    # --- assignments and their answers ------------------------------------------------------

    def _start(self, assignment: wpb.Assignment) -> None:
        key = _codec.ref_key(assignment.ref)
        if key in self._running or key in self._unacked:
            return  # already ours (a re-sent assignment after a reconnect)
        if len(self._running) >= self._slots:
            # The coordinator should never do this; queueing keeps the slot promise anyway.
            self._queued.append(assignment)
            return
        entry = self._agents.get(assignment.agent)
        if entry is None:
            self._answer(
                key,
                _codec.failed(
                    assignment.ref,
                    f"this worker does not run agent {assignment.agent!r}",
                    retryable=False,
                    kind="unknown_agent",
                ),
            )
            return
        fn, is_async = entry
        ctx = Context(self, assignment, key)
        self._running[key] = ctx
        job: asyncio.Future[Any]
        if is_async:
            try:
                job = self.loop.create_task(self._drive(ctx, fn(ctx)))
            except Exception as exc:  # the function raised before returning its coroutine
                job = self.loop.create_future()
                job.set_exception(exc)
        else:
            assert self._pool is not None
            ctx._sync = True
            job = self.loop.run_in_executor(self._pool, fn, ctx)
        ctx._job = job
        job.add_done_callback(ctx._on_done)

    async def _drive(self, ctx: Context, coro: Awaitable[Any]) -> None:
        """Runs an async agent and answers for it in the task step that sees it end, so the
        answer is queued one event-loop turn sooner than from the done callback (which stays,
        for a task cancelled before it ever ran)."""
        try:
            value = await coro
        except asyncio.CancelledError:
            self._finish(ctx, None, None, cancelled=True)
            raise
        except Exception as exc:
            self._finish(ctx, None, exc)
        else:
            self._finish(ctx, value, None)

    def finish(self, ctx: Context, job: asyncio.Future[Any]) -> None:
        """The done callback of an agent's job: encodes its answer, unless already done."""
        if ctx._key not in self._running:
            return
        if job.cancelled():
            self._finish(ctx, None, None, cancelled=True)
        elif (exc := job.exception()) is not None:
            self._finish(ctx, None, exc)
        else:
            self._finish(ctx, job.result(), None)

    def _finish(
        self, ctx: Context, value: Any, exc: BaseException | None, *, cancelled: bool = False
    ) -> None:
        key = ctx._key
        if self._running.pop(key, None) is None:
            return
        if cancelled:
            item = _codec.cancelled(ctx._serialized_ref())
        elif exc is None and not (ctx._sync and ctx._cancelled):
            item = self._succeeded(ctx, value)
        elif ctx._cancelled or exc is None:
            item = _codec.cancelled(ctx._serialized_ref())
        elif isinstance(exc, NonRetryableError):
            item = _codec.failed(ctx.ref, _message(exc), retryable=False, kind="agent")
        else:
            log.warning("agent %s failed on %r", ctx.agent, ctx, exc_info=exc)
            item = _codec.failed(ctx.ref, _message(exc), retryable=True, kind="agent")
        self._answer(key, item)
        if self._queued and len(self._running) < self._slots:
            self._start(self._queued.popleft())

    def _succeeded(self, ctx: Context, value: Any) -> bytes:
        try:
            result = _codec.to_json(value)
        except (TypeError, ValueError) as exc:
            message = f"the agent's result is not JSON-serializable: {exc}"
            return _codec.failed(ctx.ref, message, retryable=False, kind="agent")
        mutations = ctx._mutations
        if mutations:
            item = _codec.succeeded_with_mutations(ctx.ref, result, mutations)
        else:
            item = _codec.succeeded(ctx._serialized_ref(), result)
        if len(item) > self._max_bytes - 16:
            message = (
                f"the agent's result ({len(item)} bytes with its mutations) is larger than the "
                f"coordinator accepts ({self._max_bytes} bytes per message)"
            )
            return _codec.failed(ctx.ref, message, retryable=False, kind="agent")
        return item

    def _answer(self, key: RefKey, item: bytes) -> None:
        self._unacked[key] = item
        self._outbox.append(item)
        self._wake.set()

    def add_progress(self, item: bytes) -> None:
        self._progress.append(item)
        self._wake.set()

    def _on_acks(self, acks: Any) -> None:
        unacked = self._unacked
        for ack in acks:
            r = ack.ref
            if unacked.pop((r.run_id, r.node_id, r.attempt, r.lease), None) is None:
                continue
            status = ack.status
            if status == wpb.ACK_STATUS_MUTATIONS_REJECTED:
                log.warning("mutations of %s/%s rejected: %s", r.run_id, r.node_id, ack.message)
            elif status == wpb.ACK_STATUS_REFUSED:
                log.warning(
                    "the result of %s/%s broke a coordinator limit (the attempt failed): %s",
                    r.run_id,
                    r.node_id,
                    ack.message,
                )
            elif status == wpb.ACK_STATUS_INVALID:
                log.error(
                    "the coordinator found the result for %s/%s malformed: %s (an SDK bug)",
                    r.run_id,
                    r.node_id,
                    ack.message,
                )
        if self._draining:
            self._wake.set()

    def _on_cancels(self, cancels: Any) -> None:
        for cancel in cancels:
            key = _codec.ref_key(cancel.ref)
            ctx = self._running.get(key)
            if ctx is not None:
                ctx._cancel()
                continue
            for queued in self._queued:
                if _codec.ref_key(queued.ref) == key:
                    self._queued.remove(queued)
                    self._answer(key, _codec.cancelled(queued.ref.SerializeToString()))
                    break

    # --- draining and stopping --------------------------------------------------------------

    def _holds_anything(self) -> bool:
        return bool(self._running or self._queued or self._unacked)

    def request_drain(self) -> None:
        """Stop taking work, finish what is held, then end (loop thread only)."""
        if self._draining:
            return
        self._draining = True
        self._drain_wanted.set()
        self._wake.set()

    def _stop_agents(self) -> None:
        for ctx in list(self._running.values()):
            if ctx._job is not None:
                ctx._job.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _is_async(fn: Agent) -> bool:
    # Async callables include instances with an `async def __call__`.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
