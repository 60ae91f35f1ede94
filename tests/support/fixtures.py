"""The pytest fixtures (and the report hook) the tiers share; tests/conftest.py imports them.

- `spawn`: starts coordinator and worker processes for a test, stops them all at its end, and
  shows what they printed when it failed;
- `server` / `aclient`: an in-process `Coordinator` with the default options, and an async
  RunService client on it (async fixtures, run by pytest-asyncio on the test's loop);
- `failed(request)`: whether the test's call phase failed (for fixtures that report).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hivegrid.coordinator.server import Coordinator

from .inprocess import Client
from .processes import CoordinatorProcess, Process, WorkerProcess


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


def log_tails(log_dir: Path, lines: int = 25) -> str:
    """The last lines of every non-empty log file under `log_dir`."""
    out = [f"process logs: {log_dir}"]
    for path in sorted(log_dir.glob("*.log")):
        text = path.read_text(errors="replace").strip()
        if text:
            out.append(f"--- {path.name} (last lines)\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(out)


class Spawned:
    """The processes one test started. Coordinators keep their store in the test's directory
    and every log in `log_dir`."""

    def __init__(self, directory: Path, log_dir: Path) -> None:
        self.directory = directory
        self.log_dir = log_dir
        self.coordinators: list[CoordinatorProcess] = []
        self.processes: list[Process] = []
        self._names = itertools.count(1)

    def coordinator(self, *, start: bool = True, **options: Any) -> CoordinatorProcess:
        """A coordinator on DIRECTORY/hivegrid.db (the first; later ones on their own files),
        started unless `start=False`."""
        n = len(self.coordinators)
        directory = self.directory if n == 0 else self.directory / f"coordinator-{n + 1}"
        directory.mkdir(parents=True, exist_ok=True)
        proc = CoordinatorProcess(directory, log_dir=self.log_dir, **options)
        self.coordinators.append(proc)
        if start:
            proc.start()
        return proc

    def worker(
        self, sdk: str, address: str, *, name: str | None = None, slots: int | None = 4
    ) -> WorkerProcess:
        """An SDK's conformance worker (not waited for: see `wait_connected`)."""
        name = name or f"{sdk}-w{next(self._names)}"
        proc = WorkerProcess(sdk, address, self.log_dir, name=name, slots=slots)
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.processes:
            proc.kill()
        for coordinator in self.coordinators:
            coordinator.stop()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def spawn(tmp_path: Path, log_dir: Path, request: pytest.FixtureRequest) -> Iterator[Spawned]:
    """`spawn.coordinator(...)`, `spawn.worker(sdk, address, ...)`; all killed at teardown, and
    their output printed if the test failed."""
    spawned = Spawned(tmp_path, log_dir)
    try:
        yield spawned
    finally:
        spawned.stop()
        if failed(request):
            print("\n" + log_tails(log_dir))


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Coordinator]:
    """An in-process coordinator with the default options (memory store), stopped at
    teardown."""
    async with Coordinator() as c:
        yield c


@pytest_asyncio.fixture
async def aclient(server: Coordinator) -> AsyncIterator[Client]:
    """An async RunService client on `server`."""
    async with Client(server.address) as client:
        yield client
