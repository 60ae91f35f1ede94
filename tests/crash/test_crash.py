"""Crash test (issue 4): a run of 5,100 nodes that grows by spawns, the coordinator SIGKILLed at 20
random moments and workers SIGKILLed at others, each restarted at once. Whatever was acked
survives, every node completes exactly once in the graph, no spawned child is missing or
duplicated, and every result is right.

The moments are random but reproducible: HIVEGRID_CRASH_SEED picks them (the seed is printed)."""

from __future__ import annotations

import contextlib
import os
import random

import pytest

from tests.support.fixtures import Spawned
from tests.support.names import state_name
from tests.support.processes import HEARTBEAT_S, SESSION_TIMEOUT_S, WorkerProcess
from tests.support.runs import Log, RunClient

SPAWNERS = 50
CHILDREN = 100
COORDINATOR_KILLS = 20
WORKER_KILLS = 6


@pytest.mark.timeout(600)
def test_kill_anything_at_any_moment_loses_nothing_and_does_nothing_twice(spawn: Spawned) -> None:
    seed = int(os.environ.get("HIVEGRID_CRASH_SEED", random.randrange(1 << 30)))
    print(f"HIVEGRID_CRASH_SEED={seed}")
    rng = random.Random(seed)
    coordinator = spawn.coordinator(heartbeat_s=HEARTBEAT_S, session_timeout_s=SESSION_TIMEOUT_S)
    address = coordinator.address
    workers: list[WorkerProcess] = []
    with contextlib.closing(RunClient(address)) as client:
        for i in range(2):
            workers.append(spawn.worker("python", address, name=f"w{i}", slots=8))
        nodes = [
            {
                "id": f"s{i}",
                "agent": "spawn",
                "can_mutate": True,
                "input": {
                    "count": CHILDREN,
                    "child_agent": "sleep",
                    "child_input": {"seconds": 0.01},
                },
            }
            for i in range(SPAWNERS)
        ]
        run = client.submit(nodes)
        # Kill moments: after a random number of further answers, so that each lands while the
        # run is busy (mid-spawn, mid-fan-out, mid-join), wherever the run happens to be.
        worker_moments = set(rng.sample(range(COORDINATOR_KILLS), WORKER_KILLS))
        finished = 0
        for moment in range(COORDINATOR_KILLS):
            finished += rng.randint(40, 220)

            def far_enough(log: Log, n: int = finished) -> bool:
                return len(log.finished()) >= n or bool(log.of("run_ended"))

            log = client.wait_for_event(run, far_enough, what=f"{finished} answers", timeout=120)
            if log.of("run_ended"):
                break
            coordinator.kill()
            if moment in worker_moments:
                victim = workers.pop(rng.randrange(len(workers)))
                victim.kill()
                workers.append(
                    spawn.worker("python", address, name=f"w{len(workers)}-{moment}", slots=8)
                )
            assert coordinator.start() == address
        kills = coordinator.generation - 1
        assert kills == COORDINATOR_KILLS, f"the run ended after only {kills} kills"

        log = client.wait_until_done(run, timeout=240)
        log.check_gapless()
        assert log.end_state() == "SUCCEEDED"
        final = client.get_run(run)
        want = {f"s{i}" for i in range(SPAWNERS)}
        for i in range(SPAWNERS):
            want |= {f"s{i}/c{c}" for c in range(CHILDREN)} | {f"s{i}/join"}
        ids = [n.id for n in final.nodes]
        assert len(ids) == len(set(ids)), "a spawned node exists twice"
        assert set(ids) == want, f"missing: {sorted(want - set(ids))[:5]}"
        states = {n.id: state_name(n.state) for n in final.nodes}
        assert set(states.values()) == {"SUCCEEDED"}
        # Exactly one accepted success per node in the whole history, across every restart.
        successes = log.successes()
        assert successes == dict.fromkeys(want, 1), {k: v for k, v in successes.items() if v != 1}
        results = {n.id: n.result for n in final.nodes}
        for i in range(SPAWNERS):
            assert results[f"s{i}"] == {"spawned": CHILDREN}
            assert results[f"s{i}/join"] == pytest.approx(CHILDREN * 0.01)
            assert results[f"s{i}/c0"] == {"slept": 0.01}
        lost = len(log.lost())
        print(
            f"{kills} coordinator kills, {WORKER_KILLS} worker kills, {lost} attempts lost "
            f"and re-run, 0 lost or duplicated completions"
        )
