"""`Worker`: the agents a process runs, and the entry points that connect it to a coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._context import Context
from ._runner import Runner

__all__ = ["Worker"]

log = logging.getLogger("hivegrid.worker")

AgentFn = TypeVar("AgentFn", bound=Callable[[Context], Any])

ADDRESS_ENV = "HIVEGRID_COORDINATOR"


class Worker:
    """A worker process's agents and settings.

    `slots` is how many agents run at once; plain (sync) functions run in a pool of that many
    threads, async ones as tasks on the event loop. `labels` let nodes require this worker.
    """

    def __init__(
        self,
        *,
        name: str = "python-worker",
        slots: int = 4,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.name = name
        self.slots = slots
        self.labels: dict[str, str] = dict(labels or {})
        self._agents: dict[str, Callable[[Context], Any]] = {}
        self._runner: Runner | None = None

    @property
    def agents(self) -> list[str]:
        return sorted(self._agents)

    def agent(self, name: str) -> Callable[[AgentFn], AgentFn]:
        """Decorator: registers the function as the agent `name`."""

        def register(fn: AgentFn) -> AgentFn:
            self.register(name, fn)
            return fn

        return register

    def register(self, name: str, fn: Callable[[Context], Any]) -> None:
        """Registers `fn` (async or plain, taking a `Context`) as the agent `name`."""
        if not name:
            raise ValueError("an agent needs a name")
        if name in self._agents:
            raise ValueError(f"agent {name!r} is already registered on this worker")
        if not callable(fn):
            raise TypeError(f"agent {name!r}: {fn!r} is not callable")
        self._agents[name] = fn

    def run(self, coordinator: str | None = None) -> None:
        """Connects and runs agents until drained; blocks.

        The address defaults to the HIVEGRID_COORDINATOR environment variable. SIGTERM or
        SIGINT drains (a second one stops at once); the call then returns. Raises
        CoordinatorRefusedError if the coordinator refuses the worker.
        """
        asyncio.run(self._run_until_signalled(coordinator))

    async def serve(self, coordinator: str | None = None) -> None:
        """The async form of `run()`, without signal handling: returns once drained."""
        address = coordinator or os.environ.get(ADDRESS_ENV, "")
        if not address:
            raise ValueError(
                f"no coordinator address: pass coordinator='HOST:PORT' or set {ADDRESS_ENV}"
            )
        if not self._agents:
            raise ValueError("this worker has no agents: register one with @worker.agent(name)")
        if self._runner is not None:
            raise RuntimeError("this worker is already serving")
        runner = Runner(name=self.name, slots=self.slots, labels=self.labels, agents=self._agents)
        self._runner = runner
        try:
            await runner.serve(address)
        finally:
            self._runner = None

    def drain(self) -> None:
        """Asks a serving worker to drain: it takes no new work, finishes and reports what it
        holds, then `serve()`/`run()` return. Safe to call from any thread."""
        runner = self._runner
        if runner is None:
            return
        if threading.get_ident() == runner.loop_thread:
            runner.request_drain()
        else:
            runner.loop.call_soon_threadsafe(runner.request_drain)

    @property
    def session_id(self) -> str:
        """The current (or last) session id; empty before the first Welcome."""
        return self._runner.session_id if self._runner is not None else ""

    async def _run_until_signalled(self, coordinator: str | None) -> None:
        loop = asyncio.get_running_loop()
        serving = asyncio.create_task(self.serve(coordinator))
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info("%s: draining (signal %d)", self.name, signum)
                self.drain()
            else:
                log.warning("%s: stopping without draining (signal %d)", self.name, signum)
                serving.cancel()

        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
        try:
            await serving
        except asyncio.CancelledError:
            if signals_seen < 2:
                raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
