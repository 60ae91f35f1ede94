"""`WorkerService.Connect`: one bidirectional stream per worker (docs/protocol.md).

A reader task decodes what the worker sends into the runtime's terms and hands it over; the
stream's own task writes what the runtime queued on the session's link, framed by
`protocol.take_messages`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc

from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.v1 import worker_pb2_grpc

from ..core import ReportProgress
from ..limits import LimitExceeded, check_hello
from ..runtime import Link, Runtime
from . import convert
from .protocol import MAX_BATCH, PROTOCOL_VERSION, judge_results, take_messages

log = logging.getLogger("hivegrid.service.worker")

_HEARTBEAT = wpb.ConnectResponse(heartbeat=wpb.Heartbeat())
# Results messages carrying more mutations than this are judged in a thread.
_JUDGE_IN_THREAD = 500


def _refuse(reason: str) -> wpb.ConnectResponse:
    return wpb.ConnectResponse(refusal=wpb.Refusal(reason=reason))


def _check_hello(msg: wpb.ConnectRequest) -> str:
    if msg.WhichOneof("msg") != "hello":
        return "the first message of a stream must be Hello"
    hello = msg.hello
    if hello.protocol_version != PROTOCOL_VERSION:
        return (
            f"protocol version {hello.protocol_version} is not supported; this coordinator "
            f"speaks version {PROTOCOL_VERSION}"
        )
    if not hello.agents:
        return "Hello.agents is empty: a worker must run at least one agent"
    if hello.slots < 1:
        return "Hello.slots must be at least 1"
    return ""


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # Reads and writes go through the context rather than an iterator and a generator: the
    # bare transport costs about 15% less per message that way (docs/benchmarks.md). The
    # generated stub only knows the generator form, hence the ignore.
    async def Connect(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[wpb.ConnectRequest],
        context: grpc.aio.ServicerContext[wpb.ConnectRequest, wpb.ConnectResponse],
    ) -> None:
        runtime = self.runtime
        try:
            first = await asyncio.wait_for(context.read(), runtime.session_timeout_s)
        except TimeoutError:
            return
        if first is grpc.aio.EOF:
            return
        assert isinstance(first, wpb.ConnectRequest)
        problem = _check_hello(first)
        if problem:
            await context.write(_refuse(problem))
            return
        try:
            check_hello(first.hello, runtime.limits)
            link, kept = runtime.open_session(convert.hello_from_pb(first.hello))
        except LimitExceeded as exc:
            await context.write(_refuse(str(exc)))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        link.task = asyncio.current_task()
        limits = runtime.limits
        log.info(
            "worker %s (%s) connected as %s with %d slots",
            link.worker_name,
            link.language,
            link.id,
            link.slots,
        )
        await context.write(
            wpb.ConnectResponse(
                welcome=wpb.Welcome(
                    session_id=link.id,
                    protocol_version=PROTOCOL_VERSION,
                    heartbeat_interval_s=runtime.heartbeat_interval_s,
                    session_timeout_s=runtime.session_timeout_s,
                    max_message_bytes=limits.max_message_bytes,
                    max_batch=MAX_BATCH,
                    held=[convert.ref_to_pb(r) for r in kept],
                    max_result_bytes=limits.max_result_bytes,
                    max_progress_bytes=limits.max_progress_bytes,
                    max_progress_per_s=limits.max_progress_per_s,
                    max_slots=link.slots,
                    max_mutations=limits.max_mutations,
                    max_id_bytes=limits.max_id_bytes,
                )
            )
        )
        reader = asyncio.create_task(self._read(context, link))
        reason = "stream closed"
        max_bytes = limits.max_message_bytes
        heartbeat = runtime.heartbeat_interval_s
        loop = asyncio.get_running_loop()
        # One timer per stream wakes the writer often enough to heartbeat; waiting on the wake
        # event alone (no wait_for) costs no task per message.
        ticker: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal ticker
            link.wake.set()
            ticker = loop.call_later(heartbeat / 2, tick)

        ticker = loop.call_later(heartbeat / 2, tick)
        try:
            last_sent = time.monotonic()
            while True:
                messages = take_messages(link, max_bytes)
                if messages:
                    # A write that does not end is a worker that does not read: the reaper
                    # cuts the stream off once it has lasted a session timeout.
                    link.writing_since = time.monotonic()
                    for m in messages:
                        await context.write(m)
                    link.writing_since = 0.0
                    last_sent = time.monotonic()
                    continue
                if link.closed:
                    reason = link.closed
                    break
                if time.monotonic() - last_sent >= heartbeat:
                    link.writing_since = time.monotonic()
                    await context.write(_HEARTBEAT)
                    link.writing_since = 0.0
                    last_sent = time.monotonic()
                    continue
                # Invariant: nothing runs between take_messages() above and this clear(), so
                # a wake-up cannot be lost.
                link.wake.clear()
                await link.wake.wait()
        except asyncio.CancelledError:
            # The reaper cut off a stream stuck in a write, or the server is stopping.
            reason = link.closed or "stream cancelled"
        except Exception as exc:  # a write on a stream the worker already broke
            reason = link.closed or f"stream failed: {exc!r}"
        finally:
            if ticker is not None:
                ticker.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            runtime.close_session(link, reason)
            log.info("session %s (%s) ended: %s", link.id, link.worker_name, reason)
        if link.closed.startswith("protocol error"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, link.closed)

    async def _read(
        self, context: grpc.aio.ServicerContext[wpb.ConnectRequest, wpb.ConnectResponse], link: Link
    ) -> None:
        runtime = self.runtime
        eof = grpc.aio.EOF
        try:
            while True:
                msg = await context.read()
                if msg is eof:
                    link.closed = link.closed or "closed by the worker"
                    break
                assert isinstance(msg, wpb.ConnectRequest)
                link.last_seen = time.monotonic()
                kind = msg.WhichOneof("msg")
                if kind == "results":
                    items = msg.results.items
                    if len(items) > MAX_BATCH:
                        link.closed = (
                            f"protocol error: {len(items)} results in one message "
                            f"(max_batch is {MAX_BATCH})"
                        )
                        break
                    if sum(len(r.mutations) for r in items) > _JUDGE_IN_THREAD:
                        # Checking and converting a large batch takes a while (10,000 spawns:
                        # 0.15 s); it needs no state, so it is done off the event loop.
                        answers = await asyncio.to_thread(judge_results, items, runtime.limits)
                    else:
                        answers = judge_results(items, runtime.limits)
                    runtime.on_results(link, answers)
                    if link.unacked >= link.max_unacked:
                        # Backpressure: read nothing more until the worker has read its acks.
                        link.readable.clear()
                        if link.unacked >= link.max_unacked:
                            await link.readable.wait()
                elif kind == "progress":
                    runtime.on_progress(
                        link,
                        [
                            ReportProgress(
                                p.ref.run_id, p.ref.node_id, p.ref.attempt, p.ref.lease, p.data
                            )
                            for p in msg.progress.items
                        ],
                    )
                elif kind == "drain":
                    runtime.on_drain(link)
                elif kind == "hello":
                    link.closed = "protocol error: Hello sent twice on one stream"
                    break
        except grpc.aio.AioRpcError as exc:
            link.closed = link.closed or f"stream failed: {exc.code().name}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken stream surfaces in several shapes
            link.closed = link.closed or f"stream failed: {exc}"
        link.wake.set()
