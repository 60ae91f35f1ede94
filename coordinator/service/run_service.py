"""`RunService`: the client API, translated to runtime calls."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc

from ..core import GraphError, RunExists
from ..limits import LimitExceeded
from ..runtime import Runtime
from ..store import StoreError

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


class RunServicer(run_pb2_grpc.RunServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def SubmitRun(self, request: Any, context: Any) -> Any:
        try:
            run_id = await self.runtime.submit(request)
            await self.runtime.durable()  # a client told "created" must find it after a crash
            return rpb.SubmitRunResponse(run_id=run_id)
        except _Refused as exc:
            await _fail(context, exc)

    async def GetRun(self, request: Any, context: Any) -> Any:
        try:
            return self.runtime.get_run(
                request.run_id,
                with_results=not request.omit_results,
                page_size=request.page_size,
                page_token=request.page_token,
            )
        except _Refused as exc:
            await _fail(context, exc, request.run_id)

    async def ListRuns(self, request: Any, context: Any) -> Any:
        try:
            runs, token = self.runtime.list_runs(request.limit, request.page_token)
            return rpb.ListRunsResponse(runs=runs, next_page_token=token)
        except _Refused as exc:
            await _fail(context, exc)

    async def WatchRun(self, request: Any, context: Any) -> Any:
        try:
            async for events in self.runtime.watch(
                request.run_id, request.from_seq, request.follow_after_end
            ):
                yield rpb.WatchRunResponse(events=events)
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
            seq = self.runtime.mutate(request.run_id, request.mutations)
            await self.runtime.durable()
            return rpb.MutateRunResponse(seq=seq)
        except _Refused as exc:
            await _fail(context, exc, request.run_id)

    async def ListWorkers(self, request: Any, context: Any) -> Any:
        return rpb.ListWorkersResponse(workers=self.runtime.list_workers())

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
