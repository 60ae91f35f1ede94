"""A live coordinator (a process, on a SQLite file) with the Python conformance worker, shared
by a module's tests, and clients of it. Tests that stop or restart a coordinator start their own
with the `spawn` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from hivegrid.client import AsyncClient, Client
from tests.support.processes import CoordinatorProcess, WorkerProcess

WORKER = "client-tests"


@dataclass
class Cluster:
    address: str
    log_dir: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    coordinator = CoordinatorProcess(tmp_path_factory.mktemp("coordinator"))
    worker = None
    try:
        address = coordinator.start()
        worker = WorkerProcess("python", address, coordinator.log_dir, name=WORKER, slots=8)
        worker.wait_connected()
        yield Cluster(address, coordinator.log_dir)
    except BaseException:
        print("\n" + coordinator.diagnostics())
        if worker is not None:
            print(worker.diagnostics())
        raise
    finally:
        if worker is not None:
            worker.stop()
        coordinator.stop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client(cluster.address) as c:
        yield c


@pytest_asyncio.fixture
async def async_client(cluster: Cluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(cluster.address) as c:
        yield c
