"""Fixtures of the worker conformance suite.

Choose the SDKs under test with `--sdk python,go` (when pytest is pointed at this folder) or the
environment variable HIVEGRID_SDKS (default: python,go,typescript). Each selected SDK's
conformance worker must be built; the suite fails, and says how to build it, when it is not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.support.fixtures import Spawned, failed
from tests.support.processes import CoordinatorProcess, WorkerProcess, sdk_command
from tests.support.runs import RunClient

from .harness import DEFAULT_SDKS, HEARTBEAT_S, SDK_ENV, SDKS, SESSION_TIMEOUT_S


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
def coordinator(spawn: Spawned) -> CoordinatorProcess:
    """A coordinator subprocess on a sqlite file (so that it can be restarted), with the
    suite's quick heartbeats."""
    return spawn.coordinator(heartbeat_s=HEARTBEAT_S, session_timeout_s=SESSION_TIMEOUT_S)


@pytest.fixture
def client(coordinator: CoordinatorProcess, request: pytest.FixtureRequest) -> Iterator[RunClient]:
    """A RunService client; on failure it prints the event logs of the runs it watched."""
    c = RunClient(coordinator.address)
    try:
        yield c
    finally:
        if failed(request):
            for run_id, log in c.logs.items():
                print(f"\n--- event log of run {run_id} (last events)\n{log.describe(80)}")
        c.close()


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    coordinator: CoordinatorProcess,
    spawn: Spawned,
    sdk_programs: Callable[[str], list[str]],
) -> WorkerFactory:
    """`start_worker(sdk, slots=4, name=None)` starts a conformance worker; all are killed at
    teardown."""

    def start(sdk: str, *, slots: int = 4, name: str | None = None) -> WorkerProcess:
        sdk_programs(sdk)
        return spawn.worker(sdk, coordinator.address, name=name, slots=slots)

    return start
