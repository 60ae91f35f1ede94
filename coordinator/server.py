"""The coordinator process: a gRPC server (worker + run services, health, reflection) around one
runtime. `Coordinator` is the in-process form tests use; `run_coordinator` is the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hivegrid.v1 import run_pb2, run_pb2_grpc, worker_pb2, worker_pb2_grpc

from .limits import DEFAULT_LIMITS, Limits
from .runtime import Runtime
from .service.run_service import RunServicer
from .service.worker_service import WorkerServicer
from .store import StoreError, default_store_url, open_store

log = logging.getLogger("hivegrid.coordinator")


class _AfterRecovery(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # untyped in the stubs
    """Holds every call but health checks and reflection until recovery is over. The port is
    open from the start, so workers that reconnect while the log replays are served the moment
    it is done, rather than at their next backoff step, and client calls wait instead of
    failing."""

    def __init__(self, ready: asyncio.Event, exempt: tuple[str, ...]) -> None:
        self._ready = ready
        self._exempt = exempt

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not self._ready.is_set() and not handler_call_details.method.startswith(self._exempt):
            await self._ready.wait()
        return await continuation(handler_call_details)


class Coordinator:
    """A running coordinator: `async with Coordinator(...) as c:` serves on `c.address`."""

    def __init__(
        self,
        *,
        listen: str = "127.0.0.1:0",
        store_url: str = "memory",
        heartbeat_interval_s: float = 2.0,
        session_timeout_s: float = 6.0,
        snapshot_every: int = 200_000,
        limits: Limits = DEFAULT_LIMITS,
        store_retry_s: float = 1.0,
    ) -> None:
        self.listen = listen
        self.limits = limits
        self.runtime = Runtime(
            open_store(store_url, holder=f"listening on {listen}"),
            heartbeat_interval_s=heartbeat_interval_s,
            session_timeout_s=session_timeout_s,
            snapshot_every=snapshot_every,
            limits=limits,
            on_health=self._store_health,
            store_retry_s=store_retry_s,
        )
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._served: tuple[str, ...] = ()
        self._health_tasks: set[asyncio.Task[None]] = set()

    def _store_health(self, serving: bool) -> None:
        """The journal's word on the store: NOT_SERVING while it cannot write."""
        task = asyncio.get_running_loop().create_task(self._set_health(serving))
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    async def _set_health(self, serving: bool) -> None:
        if self._health is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._served:
            await self._health.set(name, status)

    async def start(self) -> None:
        """Opens the port, recovers from the store, then serves (see `_AfterRecovery`)."""
        ready = asyncio.Event()
        exempt = (
            "/" + health_pb2.DESCRIPTOR.services_by_name["Health"].full_name + "/",
            "/grpc.reflection.",
        )
        server = self._server = grpc.aio.server(
            interceptors=[_AfterRecovery(ready, exempt)],
            options=[
                ("grpc.max_receive_message_length", self.limits.max_message_bytes),
                ("grpc.max_send_message_length", self.limits.max_message_bytes),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(self.runtime), server)
        run_pb2_grpc.add_RunServiceServicer_to_server(RunServicer(self.runtime), server)
        health_servicer = self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        services = (
            worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
            run_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(services, server)
        port = server.add_insecure_port(self.listen)
        if port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        host = self.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        await server.start()
        self._served = ("", *services[:2])
        await self._set_health(False)
        try:
            await self.runtime.start()
        except BaseException:
            await server.stop(None)
            raise
        ready.set()
        await self._set_health(True)

    async def stop(self, grace: float = 1.0) -> None:
        await self.runtime.stop_sessions()
        if self._server is not None:
            await self._server.stop(grace)
        await self.runtime.stop()

    async def abandon(self) -> None:
        """Ends the coordinator the way a killed process ends: streams drop, nothing that was
        not committed is written, no snapshot, the store is released. For crash tests."""
        self.runtime.freeze()  # before the streams end: their teardown must not be logged
        if self._server is not None:
            await self._server.stop(None)
        await self.runtime.abandon()

    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(coordinator: Coordinator) -> None:
    await coordinator.start()
    # The daemon keeps large, long-lived graphs: what recovery built stays out of every later
    # collection, and young collections run less often than CPython's default of every 700
    # allocations. No full collection first: recovery leaves next to no garbage, and it would
    # cost 0.1 s per 100,000 nodes before the first worker is served.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    print(f"hivegrid coordinator listening on {coordinator.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await coordinator.stop()


def run_coordinator(
    *,
    listen: str = "127.0.0.1:50051",
    store_url: str | None = None,
    heartbeat_interval_s: float = 2.0,
    session_timeout_s: float = 6.0,
    limits: Limits = DEFAULT_LIMITS,
) -> int:
    """Runs the daemon until SIGTERM/SIGINT. Returns the process exit code."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        coordinator = Coordinator(
            listen=listen,
            store_url=store_url or default_store_url(),
            heartbeat_interval_s=heartbeat_interval_s,
            session_timeout_s=session_timeout_s,
            limits=limits,
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(coordinator))
    except StoreError as exc:
        print(f"hivegrid coordinator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hivegrid coordinator: {exc}", file=sys.stderr)
        return 2
    return 0
