"""examples/client_demo.py, run as a user runs it, against a live coordinator and worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import REPO, child_env

from .conftest import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def test_the_client_demo_prints_events_and_results(cluster: Cluster) -> None:
    env = child_env() | {"HIVEGRID_COORDINATOR": cluster.address}
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "client_demo.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    events = [line.split() for line in lines[:-3]]
    assert [e[0] for e in events] == [f"#{i}" for i in range(1, len(events) + 1)]
    assert events[0] == ["#1", "run_submitted", "-"]
    assert ["node_dispatched", "total", "running"] in [e[1:] for e in events]
    assert ["attempt_finished", "total", "succeeded"] in [e[1:] for e in events]
    assert events[-1][1:] == ["run_ended", "-", "succeeded"]
    assert lines[-3:] == [
        "value-1: succeeded {'value': 2}",
        "value-2: succeeded {'value': 3}",
        "total: succeeded 5",
    ]
