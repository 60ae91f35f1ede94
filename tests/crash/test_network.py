"""A worker's connection cut mid-stream (by a proxy on loopback), again and again: the worker
reconnects, nothing is lost, nothing completes twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.harness import (
    Client,
    CoordinatorProcess,
    Log,
    WorkerProcess,
    from_json,
    state_name,
)

from .proxy import CuttableProxy

NODES = 400
CUTS = 5


@pytest.mark.timeout(300)
def test_cut_connections_lose_nothing(tmp_path: Path) -> None:
    coordinator = CoordinatorProcess(tmp_path, f"sqlite:///{tmp_path}/hivegrid.db")
    worker: WorkerProcess | None = None
    proxy: CuttableProxy | None = None
    client: Client | None = None
    try:
        address = coordinator.start()
        proxy = CuttableProxy(address)
        worker = WorkerProcess("python", proxy.address, tmp_path, name="behind-proxy", slots=8)
        worker.wait_connected()
        client = Client(address)
        nodes = [
            {"id": f"n{i}", "agent": "sleep", "input": {"seconds": 0.01}} for i in range(NODES)
        ]
        run = client.submit(nodes)
        for cut in range(1, CUTS + 1):

            def far_enough(log: Log, n: int = cut * NODES // (CUTS + 1)) -> bool:
                return len(log.finished()) >= n

            client.wait_for_event(run, far_enough, what="progress before the cut", timeout=60)
            assert proxy.cut() >= 1
            worker.wait_connected(count=cut + 1, timeout=30)
        log = client.wait_until_done(run, timeout=120)
        assert log.end_state() == "SUCCEEDED"
        assert log.successes() == {f"n{i}": 1 for i in range(NODES)}
        final = client.get_run(run)
        assert {state_name(n.state) for n in final.nodes} == {"SUCCEEDED"}
        assert all(from_json(n.result) == {"slept": 0.01} for n in final.nodes)
        assert proxy.accepted >= CUTS + 1
    finally:
        if client is not None:
            client.close()
        if worker is not None:
            worker.kill()
        if proxy is not None:
            proxy.close()
        coordinator.stop()
