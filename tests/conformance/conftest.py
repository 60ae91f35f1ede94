"""Fixtures of the worker conformance suite.

Choose the SDKs under test with `--sdk python,go` (when pytest is pointed at this folder) or the
environment variable HIVEGRID_SDKS (default: python,go,typescript). Each selected SDK's
conformance worker must be built; the suite fails, and says how to build it, when it is not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import (
    DEFAULT_SDKS,
    SDK_ENV,
    SDKS,
    Client,
    CoordinatorProcess,
    WorkerProcess,
    sdk_command,
)


def selected_sdks(config: pytest.Config) -> list[str]:
    raw = None
    try:
        raw = config.getoption("sdk")
    except ValueError:  # the option is unknown when this conftest loaded late
        raw = None
    raw = raw or os.environ.get(SDK_ENV) or DEFAULT_SDKS
    sdks = [s.strip().lower() for s in raw.split(",") if s.strip()]
    unknown = [s for s in sdks if s not in SDKS]
    if unknown:
        raise pytest.UsageError(f"unknown SDK(s) {unknown}: choose from {', '.join(SDKS)}")
    return sdks


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sdk" in metafunc.fixturenames:
        metafunc.parametrize("sdk", selected_sdks(metafunc.config))


@pytest.fixture
def sdk_programs() -> Callable[[str], list[str]]:
    """Fails the test (not skips) with build instructions when a program is missing."""

    def check(sdk: str) -> list[str]:
        try:
            return sdk_command(sdk)
        except LookupError as exc:
            pytest.fail(str(exc), pytrace=False)

    return check


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def coordinator(tmp_path: Path, log_dir: Path) -> Iterator[CoordinatorProcess]:
    """A coordinator subprocess on a sqlite file (so that it can be restarted)."""
    proc = CoordinatorProcess(log_dir, f"sqlite:///{tmp_path / 'hivegrid.db'}")
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


@pytest.fixture
def client(coordinator: CoordinatorProcess, request: pytest.FixtureRequest) -> Iterator[Client]:
    """A RunService client; on failure it prints the event logs of the runs it watched."""
    c = Client(coordinator.address)
    try:
        yield c
    finally:
        if _failed(request):
            for run_id, log in c.logs.items():
                print(f"\n--- event log of run {run_id} (last events)\n{log.describe(80)}")
        c.close()


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    coordinator: CoordinatorProcess,
    log_dir: Path,
    sdk_programs: Callable[[str], list[str]],
) -> Iterator[WorkerFactory]:
    """`start_worker(sdk, slots=4, name=None)` starts a conformance worker; all are killed at
    teardown."""
    started: list[WorkerProcess] = []
    counter = iter(range(1, 1000))

    def start(sdk: str, *, slots: int = 4, name: str | None = None) -> WorkerProcess:
        sdk_programs(sdk)
        name = name or f"{sdk}-w{next(counter)}"
        proc = WorkerProcess(sdk, coordinator.address, log_dir, name=name, slots=slots)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


@pytest.fixture(autouse=True)
def _diagnostics(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[None]:
    """On failure, show the processes' output."""
    yield
    if _failed(request):
        print(f"\nprocess logs: {log_dir}")
        for path in sorted(log_dir.iterdir()):
            text = path.read_text(errors="replace").strip()
            if text:
                print(f"--- {path.name} (last lines)\n" + "\n".join(text.splitlines()[-25:]))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
