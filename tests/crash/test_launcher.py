"""The test kit's coordinator launcher, as the crash tier uses it: a fixed port, readiness by the
health check, SIGKILL, and a restart on the same port and store that keeps what was acked."""

from __future__ import annotations

import contextlib

import grpc
import pytest

from hivegrid.v1 import worker_pb2 as wpb
from tests.support.fixtures import Spawned
from tests.support.names import states
from tests.support.rawworker import SyncRawWorker
from tests.support.runs import RunClient
from tests.support.values import to_json
from tests.support.wait import free_port


@pytest.mark.timeout(60)
def test_a_killed_coordinator_restarts_on_its_port_and_store(spawn: Spawned) -> None:
    address = f"127.0.0.1:{free_port()}"
    coordinator = spawn.coordinator(address=address, start=False)
    assert coordinator.start(ready="health") == address
    with contextlib.closing(RunClient(address)) as client:
        run = client.submit(
            [{"id": "a", "agent": "echo"}, {"id": "b", "deps": ["a"], "agent": "echo"}]
        )
        with SyncRawWorker(address, slots=1) as raw:
            raw.connect().expect_welcome()
            (a,) = raw.take()
            raw.answer(a, to_json("A"))
            assert raw.ack().status == wpb.ACK_STATUS_COMMITTED
            (b,) = raw.take()
            assert b.ref.node_id == "b"
            coordinator.kill()
            raw.wait_ended()
            assert raw.status not in (None, grpc.StatusCode.OK), raw.status
        assert coordinator.proc is not None and not coordinator.proc.alive()
        assert coordinator.start() == address  # this time ready by its printed line
        assert coordinator.generation == 2
        run_now = client.get_run(run)
        # The acked answer survived; b's attempt died with the stream and waits again.
        assert states(run_now) == {"a": "SUCCEEDED", "b": "READY"}
        assert client.nodes(run)["a"].result == "A"
    assert coordinator.stop() == 0, coordinator.diagnostics()
