"""Client: the AsyncClient, for code without an event loop. It runs the AsyncClient on a loop
of its own, on a daemon thread, so that there is one implementation; that also lets it be used
from any thread, and from code that has a loop running (a notebook) without nesting loops."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Generator, Iterable, Mapping
from typing import Any, TypeVar

from ._async import AsyncClient, TlsSource
from ._graph import GraphLike
from ._types import Event, Run, RunState, RunSummary, Worker

__all__ = ["Client"]

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.closed = False
        self._thread = threading.Thread(target=self._main, name="hivegrid-client", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on the loop and returns its result. An interrupt (Ctrl-C) cancels it and
        waits for it to unwind (so that its streams are closed) before propagating."""
        if self.closed:
            coro.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a Client's method was called from its own loop")
        done = threading.Event()
        box: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self.loop.create_task(coro)
            task.add_done_callback(lambda _: done.set())
            box.append(task)

        def cancel() -> None:
            if box:
                box[0].cancel()

        self.loop.call_soon_threadsafe(start)
        try:
            done.wait()
        except BaseException:
            self.loop.call_soon_threadsafe(cancel)
            done.wait(5.0)
            raise
        return box[0].result()

    def stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(10.0)


async def _next(iterator: AsyncIterator[T]) -> tuple[bool, T | None]:
    try:
        return True, await anext(iterator)
    except StopAsyncIteration:
        return False, None


class Client:
    """The coordinator's RunService, blocking. The same methods and options as AsyncClient
    (see there); `with Client(...) as c:` closes it at the end.

        with Client() as c:                      # $HIVEGRID_COORDINATOR, else 127.0.0.1:50051
            run = c.wait(c.submit("graph.yaml"))
            print(run.state, run.results)
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
        self._async = AsyncClient(
            address,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            token=token,
            timeout=timeout,
            submit_retry_s=submit_retry_s,
            resume_s=resume_s,
        )
        self._loop = _LoopThread()
        # A client dropped without close() does not leave its thread running.
        self._finalizer = weakref.finalize(self, self._loop.stop)

    @property
    def address(self) -> str:
        return self._async.address

    def __repr__(self) -> str:
        return f"<Client {self.address}>"

    def close(self) -> None:
        if not self._loop.closed:
            self._loop.run(self._async.close())
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self, graph: GraphLike, *, name: str | None = None, request_id: str | None = None
    ) -> str:
        return self._loop.run(self._async.submit(graph, name=name, request_id=request_id))

    def get_run(self, run_id: str, *, results: bool = True) -> Run:
        return self._loop.run(self._async.get_run(run_id, results=results))

    def get_summary(self, run_id: str) -> RunSummary:
        return self._loop.run(self._async.get_summary(run_id))

    def wait(self, run_id: str, timeout: float | None = None, *, results: bool = True) -> Run:
        return self._loop.run(self._async.wait(run_id, timeout, results=results))

    def events(self, run_id: str, after: int = 0, follow: bool = True) -> Generator[Event]:
        """As AsyncClient.events; stopping early (break, close()) ends the watch."""
        lists = self._async._event_lists(run_id, after, follow)
        try:
            while True:
                more, batch = self._loop.run(_next(lists))
                if not more or batch is None:
                    return
                yield from batch
        finally:
            if not self._loop.closed:
                self._loop.run(lists.aclose())

    def cancel(self, run_id: str, reason: str = "") -> RunState:
        return self._loop.run(self._async.cancel(run_id, reason))

    def mutate(self, run_id: str, mutations: Iterable[Mapping[str, Any]]) -> int:
        return self._loop.run(self._async.mutate(run_id, mutations))

    def list_runs(
        self, state: RunState | str | None = None, limit: int | None = None
    ) -> list[RunSummary]:
        return self._loop.run(self._async.list_runs(state, limit))

    def list_workers(self) -> list[Worker]:
        return self._loop.run(self._async.list_workers())

    def drain(self, worker: str) -> int:
        return self._loop.run(self._async.drain(worker))

    def delete_run(self, run_id: str) -> None:
        self._loop.run(self._async.delete_run(run_id))


# The sync methods say what the async ones do.
for _name, _method in list(vars(Client).items()):
    _twin = getattr(AsyncClient, _name, None)
    if callable(_method) and _method.__doc__ is None and _twin is not None and _twin.__doc__:
        _method.__doc__ = _twin.__doc__
