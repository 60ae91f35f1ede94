"""What the worker conformance suite (docs/conformance) adds to the test kit (tests/support):
the timing it gives the coordinator, which SDKs it runs, and its raw worker's defaults.

Everything is language-neutral: the coordinator and the conformance workers run as
subprocesses (tests/support/processes.py), the suite speaks to the coordinator over gRPC only
(RunService through tests/support/runs.py, plus a raw WorkerService client for the protocol-level
checks), and observes what happened through the run's event log (`WatchRun`).
"""

from __future__ import annotations

from typing import Any

from tests.support.processes import HEARTBEAT_S, SDKS, SESSION_TIMEOUT_S
from tests.support.rawworker import SyncRawWorker

__all__ = ["DEFAULT_SDKS", "HEARTBEAT_S", "SDKS", "SDK_ENV", "SESSION_TIMEOUT_S", "raw_worker"]

DEFAULT_SDKS = ",".join(SDKS)
SDK_ENV = "HIVEGRID_SDKS"
# The timing the suite gives the coordinator (HEARTBEAT_S, SESSION_TIMEOUT_S): quick heartbeats,
# so that lost workers show quickly.


def raw_worker(
    address: str, *, agents: tuple[str, ...] = ("echo",), slots: int = 1, **options: Any
) -> SyncRawWorker:
    """A raw worker, connected, that keeps its session alive (it answers the coordinator's
    heartbeats: with a 1.5 s session timeout a test's pauses would otherwise end it) and says
    nothing else unless told."""
    options.setdefault("name", "raw-worker")
    raw = SyncRawWorker(address, agents=agents, slots=slots, echo_heartbeats=True, **options)
    try:
        raw.connect().expect_welcome()
    except BaseException:
        raw.drop()
        raise
    return raw
