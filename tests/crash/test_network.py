"""A worker's connection cut mid-stream (by a proxy on loopback), again and again: the worker
reconnects, nothing is lost, nothing completes twice."""

from __future__ import annotations

import contextlib

import pytest

from tests.support.fixtures import Spawned
from tests.support.names import state_name
from tests.support.processes import HEARTBEAT_S, SESSION_TIMEOUT_S
from tests.support.runs import Log, RunClient

from .proxy import CuttableProxy

NODES = 400
CUTS = 5


@pytest.mark.timeout(300)
def test_cut_connections_lose_nothing(spawn: Spawned) -> None:
    coordinator = spawn.coordinator(heartbeat_s=HEARTBEAT_S, session_timeout_s=SESSION_TIMEOUT_S)
    address = coordinator.address
    proxy = CuttableProxy(address)
    with contextlib.closing(proxy), contextlib.closing(RunClient(address)) as client:
        worker = spawn.worker("python", proxy.address, name="behind-proxy", slots=8)
        worker.wait_connected()
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
        assert all(n.result == {"slept": 0.01} for n in final.nodes)
        assert proxy.accepted >= CUTS + 1
