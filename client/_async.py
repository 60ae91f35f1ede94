"""AsyncClient: the client's one implementation (the sync Client runs it on a loop of its own).

Two things it does for the caller that a raw stub does not: a submission is retried while the
coordinator is unreachable for a moment (safely: a request id makes a retry return the run the
first attempt created), and a watch that breaks (a network blip, a coordinator restart) resumes
from the last sequence number it delivered, so that each event is seen once, in order.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc

from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc
from hivegrid.v1 import worker_pb2 as wpb

from . import _wire
from ._errors import (
    GraphFileError,
    NotFound,
    RunNotFound,
    WorkerNotFound,
    from_rpc_error,
)
from ._graph import Graph, GraphLike, submission
from ._types import Event, Run, RunState, RunSummary, Worker

__all__ = ["ADDRESS_ENV", "DEFAULT_ADDRESS", "AsyncClient", "TlsSource"]

ADDRESS_ENV = "HIVEGRID_COORDINATOR"
DEFAULT_ADDRESS = "127.0.0.1:50051"

# A run's nodes come in pages of this many (a page also ends at about 4 MiB).
_NODES_PER_PAGE = 10_000
_RUNS_PER_PAGE = 1_000
_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
# Reconnects back off like a worker's do (the protocol's constants).
_BACKOFF_FIRST_S = wpb.PROTOCOL_CONSTANT_RECONNECT_FIRST_MS / 1000
_BACKOFF_MAX_S = wpb.PROTOCOL_CONSTANT_RECONNECT_MAX_MS / 1000
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    # gRPC's own reconnect backoff grows to two minutes; a restarted coordinator should be
    # found within about a second, as workers find it.
    ("grpc.initial_reconnect_backoff_ms", wpb.PROTOCOL_CONSTANT_RECONNECT_FIRST_MS),
    ("grpc.min_reconnect_backoff_ms", wpb.PROTOCOL_CONSTANT_RECONNECT_FIRST_MS),
    ("grpc.max_reconnect_backoff_ms", wpb.PROTOCOL_CONSTANT_RECONNECT_MAX_MS),
]
_RETRY_SUBMIT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

# A PEM file's path, or its contents.
TlsSource = str | os.PathLike[str] | bytes


def _pem(value: TlsSource | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {os.fspath(value)!r}: {exc.strerror or exc}") from None


def _credentials(
    ca: TlsSource | None, cert: TlsSource | None, key: TlsSource | None
) -> grpc.ChannelCredentials | None:
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key go together (a client certificate and its key)")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(ca, "tls_ca"),
        private_key=_pem(key, "tls_key"),
        certificate_chain=_pem(cert, "tls_cert"),
    )


class _Backoff:
    """Delays between reconnects; gives up once the coordinator was unreachable for `limit_s`
    in a row (a delivered message resets it)."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.reset()

    def reset(self) -> None:
        self.delay = _BACKOFF_FIRST_S
        self.failing_since: float | None = None

    def exhausted(self) -> bool:
        now = asyncio.get_running_loop().time()
        if self.failing_since is None:
            self.failing_since = now
        return now - self.failing_since > self.limit_s

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, _BACKOFF_MAX_S)


class AsyncClient:
    """The coordinator's RunService, for asyncio code. Use one client on one event loop.

    `address` defaults to $HIVEGRID_COORDINATOR, else 127.0.0.1:50051. `tls_ca` (and for a
    client certificate `tls_cert` with `tls_key`: paths or PEM bytes) makes the connection TLS;
    `token` is sent as "authorization: Bearer TOKEN". `timeout` bounds each call (not a watch);
    `submit_retry_s` is how long `submit` keeps trying an unreachable coordinator, `resume_s`
    how long a broken watch keeps trying to resume.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        tls_ca: TlsSource | None = None,
        tls_cert: TlsSource | None = None,
        tls_key: TlsSource | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        submit_retry_s: float = 10.0,
        resume_s: float = 30.0,
    ) -> None:
        self.address = address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
        self.timeout = timeout
        self.submit_retry_s = submit_retry_s
        self.resume_s = resume_s
        self._credentials = _credentials(tls_ca, tls_cert, tls_key)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        # Made on first use, inside the loop that will run it.
        self._channel: grpc.aio.Channel | None = None
        self._stub_: run_pb2_grpc.RunServiceStub | None = None

    def __repr__(self) -> str:
        return f"<AsyncClient {self.address}>"

    @property
    def _stub(self) -> run_pb2_grpc.RunServiceStub:
        if self._stub_ is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(
                    self.address, self._credentials, options=_CHANNEL_OPTIONS
                )
            else:
                channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
            self._channel = channel
            self._stub_ = run_pb2_grpc.RunServiceStub(channel)
        return self._stub_

    async def close(self) -> None:
        """Closes the connection; calls in flight fail."""
        channel, self._channel, self._stub_ = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- calls --------------------------------------------------------------------------------

    async def _unary(self, method: str, request: Any) -> Any:
        return await getattr(self._stub, method)(
            request, timeout=self.timeout, metadata=self._metadata
        )

    async def _call(
        self, method: str, request: Any, *, not_found: type[NotFound] = RunNotFound
    ) -> Any:
        try:
            return await self._unary(method, request)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, address=self.address, not_found=not_found) from None

    async def _read(self, method: str, request: Any) -> Any:
        """A call that changes nothing, retried while the coordinator is unreachable for up to
        `resume_s` (for the calls inside a wait or a watch, which outlive restarts)."""
        backoff = _Backoff(self.resume_s)
        while True:
            try:
                return await self._unary(method, request)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or backoff.exhausted():
                    raise from_rpc_error(exc, address=self.address) from None
            await backoff.sleep()

    async def _summary(self, run_id: str) -> RunSummary:
        page = await self._read(
            "GetRun", rpb.GetRunRequest(run_id=run_id, omit_results=True, page_size=1)
        )
        return _wire.run_summary(page.run)

    async def submit(
        self, graph: GraphLike, *, name: str | None = None, request_id: str | None = None
    ) -> str:
        """Starts a run; returns its id. `graph`: a Graph, a dict shaped like a graph file, or a
        graph file's path (JSON or YAML). `name` overrides the graph's. A malformed graph raises
        GraphFileError before anything is sent; one the coordinator refuses, InvalidGraph."""
        if isinstance(graph, Graph | Mapping):
            request = submission(graph)
        else:
            request = await asyncio.to_thread(submission, graph)
        if name is not None:
            request.name = name
        request.request_id = request_id or uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.submit_retry_s
        backoff = _Backoff(self.submit_retry_s)
        while True:
            try:
                response = await self._unary("SubmitRun", request)
                return str(response.run_id)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRY_SUBMIT or loop.time() >= deadline:
                    raise from_rpc_error(exc, address=self.address) from None
            await backoff.sleep()

    async def _run_pages(self, run_id: str, *, results: bool, retry: bool = False) -> Run:
        call = self._read if retry else self._call
        nodes: list[rpb.NodeStatus] = []
        token = ""
        while True:
            page = await call(
                "GetRun",
                rpb.GetRunRequest(
                    run_id=run_id,
                    omit_results=not results,
                    page_size=_NODES_PER_PAGE,
                    page_token=token,
                ),
            )
            nodes.extend(page.nodes)
            token = page.next_page_token
            if not token:
                return _wire.run(page.run, nodes)

    async def get_run(self, run_id: str, *, results: bool = True) -> Run:
        """The run with all of its nodes (every page); `results=False` leaves results out."""
        return await self._run_pages(run_id, results=results)

    async def get_summary(self, run_id: str) -> RunSummary:
        """The run without its nodes: one small call, for polling its state or counts."""
        page = await self._call(
            "GetRun", rpb.GetRunRequest(run_id=run_id, omit_results=True, page_size=1)
        )
        return _wire.run_summary(page.run)

    async def list_runs(
        self, state: RunState | str | None = None, limit: int | None = None
    ) -> list[RunSummary]:
        """Runs, newest first: all of them, or the first `limit`; only those in `state` if
        given (the coordinator does not filter: the client pages until it has `limit`)."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 (or None: every run), not {limit}")
        wanted = RunState(state) if state is not None else None
        out: list[RunSummary] = []
        token = ""
        while limit is None or len(out) < limit:
            page_limit = _RUNS_PER_PAGE
            if limit is not None and wanted is None:
                page_limit = min(page_limit, limit - len(out))
            page = await self._call(
                "ListRuns", rpb.ListRunsRequest(limit=page_limit, page_token=token)
            )
            for info in page.runs:
                summary = _wire.run_summary(info)
                if wanted is None or summary.state == wanted:
                    out.append(summary)
            token = page.next_page_token
            if not token:
                break
        return out if limit is None else out[:limit]

    async def cancel(self, run_id: str, reason: str = "") -> RunState:
        """Cancels a run; returns its state (an ended run stays as it ended)."""
        response = await self._call("CancelRun", rpb.CancelRunRequest(run_id=run_id, reason=reason))
        return _wire.run_state(response.state)

    async def mutate(self, run_id: str, mutations: Iterable[Mapping[str, Any]]) -> int:
        """Applies a batch of mutations, atomically, in the SDKs' JSON form, e.g.
        `[{"add_node": {"node": {"id": "x", "agent": "echo", "input": 1}}}]`; returns the seq of
        the event that applied it. A malformed batch raises GraphFileError before anything is
        sent; one the coordinator refuses, InvalidGraph with its reason."""
        # The worker SDK owns the JSON mutation form (agents send the same batches).
        from hivegrid.worker._mutations import mutations_from_json

        items = list(mutations)
        for i, item in enumerate(items, 1):
            if not isinstance(item, Mapping):
                raise GraphFileError(
                    f"mutation {i}: expected an object with exactly one key (the kind), "
                    f"got {type(item).__name__}"
                )
        try:
            batch = mutations_from_json(items)
        except ValueError as exc:
            raise GraphFileError(str(exc)) from None
        response = await self._call(
            "MutateRun", rpb.MutateRunRequest(run_id=run_id, mutations=batch)
        )
        return int(response.seq)

    async def list_workers(self) -> list[Worker]:
        response = await self._call("ListWorkers", rpb.ListWorkersRequest())
        return [_wire.worker(w) for w in response.workers]

    async def drain(self, worker: str) -> int:
        """Drains every session of a worker name (or one session id): each finishes its work,
        takes no more, and exits. Returns how many; WorkerNotFound if none."""
        response = await self._call(
            "DrainWorker", rpb.DrainWorkerRequest(worker=worker), not_found=WorkerNotFound
        )
        return int(response.drained)

    async def delete_run(self, run_id: str) -> None:
        """Removes an ended run for good; Conflict while it runs (cancel it first)."""
        await self._call("DeleteRun", rpb.DeleteRunRequest(run_id=run_id))

    # --- watching -----------------------------------------------------------------------------

    async def events(
        self, run_id: str, after: int = 0, follow: bool = True
    ) -> AsyncIterator[Event]:
        """The run's events with seq > `after`, in order, each once, across broken streams and
        coordinator restarts. With `follow`, live ones too until the run ends (the last event
        is then "run_ended"); without, only those that existed when asked."""
        async for batch in self._event_lists(run_id, after, follow):
            for event in batch:
                yield event

    async def _event_lists(
        self, run_id: str, after: int = 0, follow: bool = True
    ) -> AsyncGenerator[list[Event]]:
        async for batch in self._watch(run_id, after, follow):
            yield [_wire.event(ev, run_id) for ev in batch]

    async def _watch(
        self, run_id: str, after: int, follow: bool
    ) -> AsyncIterator[list[rpb.RunEvent]]:
        if after < 0:
            raise ValueError(f"after must be 0 or more, not {after}")
        until: int | None = None
        if not follow:
            # A look at what is there, not a wait: an unreachable coordinator fails it at once.
            until = (await self.get_summary(run_id)).last_seq
            if after >= until:
                return
        elif after > 0:
            # The coordinator's watch of an ended run from past its last event waits for one
            # that never comes; an ended run has nothing past its last seq to follow.
            summary = await self._summary(run_id)
            if summary.ended and after >= summary.last_seq:
                return
        next_seq = after + 1
        backoff = _Backoff(self.resume_s)
        while True:
            try:
                call = self._stub.WatchRun(
                    rpb.WatchRunRequest(run_id=run_id, from_seq=next_seq), metadata=self._metadata
                )
                try:
                    async for response in call:
                        backoff.reset()
                        batch = [ev for ev in response.events if ev.seq >= next_seq]
                        if until is not None:
                            batch = [ev for ev in batch if ev.seq <= until]
                        ended = next(
                            (i for i, ev in enumerate(batch) if _wire.is_run_ended(ev)), None
                        )
                        if ended is not None:
                            del batch[ended + 1 :]
                        if batch:
                            next_seq = batch[-1].seq + 1
                            yield batch
                        if ended is not None or (until is not None and next_seq > until):
                            return
                finally:
                    call.cancel()
                # The stream ended before the run did (a coordinator shutting down cleanly):
                # trust the run's own word, and follow again if there is more to see.
                info = (
                    await self._unary(
                        "GetRun", rpb.GetRunRequest(run_id=run_id, omit_results=True, page_size=1)
                    )
                ).run
                if _wire.run_state(info.state).ended and next_seq > info.last_seq:
                    return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or backoff.exhausted():
                    raise from_rpc_error(exc, address=self.address) from None
            await backoff.sleep()

    # `timeout` as a parameter: the sync and async clients have the same signatures.
    async def wait(
        self,
        run_id: str,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        results: bool = True,
    ) -> Run:
        """Waits for the run to end (watching, not polling, and across coordinator restarts);
        returns it. TimeoutError after `timeout` seconds."""
        if timeout is None:
            return await self._wait(run_id, results)
        try:
            async with asyncio.timeout(timeout):
                return await self._wait(run_id, results)
        except TimeoutError:
            raise TimeoutError(f"run {run_id} did not end within {timeout:g} s") from None

    async def _wait(self, run_id: str, results: bool) -> Run:
        summary = await self._summary(run_id)
        if not summary.ended:
            async for _ in self._watch(run_id, summary.last_seq, True):
                pass
        return await self._run_pages(run_id, results=results, retry=True)
