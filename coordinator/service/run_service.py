"""`RunService`: the client API. Requests are decoded into the runtime's terms (and checked
against the operator's limits, at the door), answers encoded back; every decision is the
runtime's and the core's."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc

from ..core import GraphError, RunExists, SubmitRun
from ..limits import LimitExceeded, Limits, check_mutations, check_submit
from ..runtime import Runtime
from ..store import StoreError
from . import convert

_Refused = (GraphError, KeyError, StoreError, LimitExceeded)


async def _fail(
    context: grpc.aio.ServicerContext[Any, Any], exc: Exception, run_id: str = ""
) -> NoReturn:
    if isinstance(exc, RunExists):
        await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
    if isinstance(exc, LimitExceeded):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, GraphError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, KeyError):
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {run_id[:100]!r}")
    if isinstance(exc, StoreError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"the coordinator's store failed: {exc}")
    raise exc


class _Submission:
    """A SubmitRunRequest as the runtime takes it (`runtime.Submission`): decoded, and checked
    against the limits, only when the runtime asks (in a thread, for a large graph)."""

    __slots__ = ("_limits", "_req")

    def __init__(self, req: rpb.SubmitRunRequest, limits: Limits) -> None:
        self._req = req
        self._limits = limits

    @property
    def size(self) -> int:
        return len(self._req.nodes)

    @property
    def request_id(self) -> str:
        return self._req.request_id

    def decode(self) -> SubmitRun:
        check_submit(self._req, self._limits)
        return convert.submit_from_pb(self._req)


class RunServicer(run_pb2_grpc.RunServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def SubmitRun(self, request: Any, context: Any) -> Any:
        try:
            run_id = await self.runtime.submit(_Submission(request, self.runtime.limits))
            await self.runtime.durable()  # a client told "created" must find it after a crash
            return rpb.SubmitRunResponse(run_id=run_id)
        except _Refused as exc:
            await _fail(context, exc)

    async def GetRun(self, request: Any, context: Any) -> Any:
        try:
            page = self.runtime.get_run(
                request.run_id,
                with_results=not request.omit_results,
                page_size=request.page_size,
                page_token=request.page_token,
            )
        except _Refused as exc:
            await _fail(context, exc, request.run_id)
        with_results = not request.omit_results
        node_status = convert.node_status
        return rpb.GetRunResponse(
            run=convert.run_info(page.run),
            nodes=[node_status(n, with_result=with_results) for n in page.nodes],
            next_page_token=page.next_token,
        )

    async def ListRuns(self, request: Any, context: Any) -> Any:
        try:
            runs, token = self.runtime.list_runs(request.limit, request.page_token)
        except _Refused as exc:
            await _fail(context, exc)
        return rpb.ListRunsResponse(runs=[convert.run_info(r) for r in runs], next_page_token=token)

    async def WatchRun(self, request: Any, context: Any) -> Any:
        run_event = convert.run_event
        try:
            async for entries in self.runtime.watch(
                request.run_id, request.from_seq, request.follow_after_end
            ):
                yield rpb.WatchRunResponse(events=[run_event(e) for e in entries])
        except _Refused as exc:
            await _fail(context, exc, request.run_id)

    async def CancelRun(self, request: Any, context: Any) -> Any:
        try:
            state = self.runtime.cancel(request.run_id, request.reason)
            await self.runtime.durable()
            return rpb.CancelRunResponse(state=gpb.RunState.ValueType(state))
        except _Refused as exc:
            await _fail(context, exc, request.run_id)

    async def MutateRun(self, request: Any, context: Any) -> Any:
        try:
            check_mutations(request.mutations, self.runtime.limits)
            batch = convert.mutations_from_pb(request.mutations)
            seq = self.runtime.mutate(request.run_id, batch)
            await self.runtime.durable()
            return rpb.MutateRunResponse(seq=seq)
        except _Refused as exc:
            await _fail(context, exc, request.run_id)

    async def ListWorkers(self, request: Any, context: Any) -> Any:
        workers = self.runtime.list_workers()
        return rpb.ListWorkersResponse(workers=[convert.worker_info(w) for w in workers])

    async def DrainWorker(self, request: Any, context: Any) -> Any:
        count = self.runtime.drain(request.worker)
        if not count:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no worker {request.worker!r}")
        return rpb.DrainWorkerResponse(drained=count)

    async def DeleteRun(self, request: Any, context: Any) -> Any:
        try:
            self.runtime.delete_run(request.run_id)
            await self.runtime.durable()
            return rpb.DeleteRunResponse()
        except GraphError as exc:  # still running
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except _Refused as exc:
            await _fail(context, exc, request.run_id)
