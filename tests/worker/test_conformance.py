"""The conformance agents (CONFORMANCE.md) and `python -m hivegrid.worker.conformance`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.worker.conformance import build_worker

from .conftest import WAIT, FakeCoordinator, assignment

Run = Callable[..., None]
ROOT = Path(__file__).resolve().parents[2]


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def run_agents(with_fake: Run, *items: wpb.Assignment) -> dict[str, wpb.Result]:
    """Runs the assignments on the conformance worker; returns the results by node id."""
    w = build_worker(slots=len(items))
    out: dict[str, wpb.Result] = {}

    async def body(fake: FakeCoordinator) -> None:
        task = asyncio.create_task(w.serve(coordinator=fake.address))
        session = await fake.session(0)
        session.assign(*items)
        out.update((r.ref.node_id, r) for r in await session.wait_results(len(items)))
        w.drain()
        async with asyncio.timeout(WAIT):
            await task

    with_fake(body, auto_ack=True)
    return out


def ok(result: wpb.Result) -> Any:
    assert result.outcome == wpb.OUTCOME_SUCCEEDED, result.error
    return json.loads(result.result) if result.result else None


def test_echo_value_sum(with_fake: Run) -> None:
    deps = [("a", b'{"value":2,"flag":true,"s":"x"}'), ("b", b"3"), ("c", b'{"n":{"deep":1}}')]
    results = run_agents(
        with_fake,
        assignment("e", "echo", b'{"x":[1,2]}', deps=[("a", b'{"k":1}'), ("z", b"")]),
        assignment("e0", "echo"),
        assignment("v", "value", b'{"value":7.5}'),
        assignment("s", "sum", b"null", deps=deps),
        assignment("sf", "sum", deps=[("a", b"1.5"), ("b", b'{"v":2}')]),
        assignment("s0", "sum"),
    )
    assert ok(results["e"]) == {"input": {"x": [1, 2]}, "deps": {"a": {"k": 1}, "z": None}}
    assert ok(results["e0"]) == {"input": None, "deps": {}}
    assert ok(results["v"]) == {"value": 7.5}
    assert results["s"].result == b"5", "an integer when every addend is (booleans excluded)"
    assert ok(results["sf"]) == 3.5
    assert results["s0"].result == b"0"


def test_fail_and_flaky(with_fake: Run) -> None:
    results = run_agents(
        with_fake,
        assignment("f1", "fail", b'{"message":"nope","retryable":false}'),
        assignment("f2", "fail", b'{"message":"again","retryable":true}'),
        assignment("k1", "flaky", b'{"fail_times":2}', attempt=2),
        assignment("k3", "flaky", b'{"fail_times":2}', attempt=3),
        assignment("u", "no-such-agent"),
    )
    errors = {
        n: (r.error.message, r.error.retryable, r.error.kind)
        for n, r in results.items()
        if r.outcome == wpb.OUTCOME_FAILED
    }
    assert errors == {
        "f1": ("nope", False, "agent"),
        "f2": ("again", True, "agent"),
        "k1": ("flaky failure on attempt 2", True, "agent"),
        "u": ("this worker does not run agent 'no-such-agent'", False, "unknown_agent"),
    }
    assert ok(results["k3"]) == {"attempt": 3}


def test_spawn(with_fake: Run) -> None:
    results = run_agents(
        with_fake,
        assignment("p", "spawn", b'{"count":3,"child_agent":"value","child_input":{"value":1}}'),
        assignment("q", "spawn", b'{"count":1}'),
    )
    p = results["p"]
    assert ok(p) == {"spawned": 3}
    adds = [m.add_node for m in p.mutations]
    assert [m.WhichOneof("kind") for m in p.mutations] == ["add_node"] * 4
    for i, add in enumerate(adds[:3]):
        n = add.node
        assert (n.id, n.agent, json.loads(n.input), list(n.depends_on), n.can_mutate) == (
            f"p/c{i}",
            "value",
            {"value": 1},
            [],
            True,
        )
    join = adds[3].node
    assert (join.id, join.agent, join.input) == ("p/join", "sum", b"")
    assert list(join.depends_on) == ["p/c0", "p/c1", "p/c2"]
    q_child = results["q"].mutations[0].add_node.node
    assert (q_child.id, q_child.agent, q_child.input) == ("q/c0", "echo", b"")


def test_progress(with_fake: Run) -> None:
    w = build_worker()

    async def body(fake: FakeCoordinator) -> None:
        task = asyncio.create_task(w.serve(coordinator=fake.address))
        session = await fake.session(0)
        session.assign(assignment("p", "progress", b'{"steps":5}'))
        (result,) = await session.wait_results(1)
        assert ok(result) == {"steps": 5}
        assert [json.loads(p.data) for p in session.progress()] == [
            {"step": i} for i in range(1, 6)
        ]
        w.drain()
        async with asyncio.timeout(WAIT):
            await task

    with_fake(body, auto_ack=True)


def test_mutate_json_form(with_fake: Run) -> None:
    mutations = [
        {
            "add_node": {
                "node": {"id": "n2", "agent": "echo", "input": {"x": 1}, "depends_on": ["m"]}
            }
        },
        {"add_edge": {"from_id": "a", "to_id": "b"}},
        {"modify_node": {"id": "b", "input": [1, 2], "priority": 3}},
        {"split_node": {"id": "c", "replacements": [{"id": "c1", "agent": "echo", "input": "s"}]}},
        {"inject_before": {"target_id": "b", "node": {"id": "i", "agent": "value"}}},
        {"prune_subgraph": {"root_id": "d"}},
        {
            "add_node": {
                "node": {"id": "sp", "agent": "echo", "retry": {"max_attempts": 3}},
                "speculative": True,
            }
        },
    ]
    results = run_agents(
        with_fake,
        assignment("m", "mutate", js({"mutations": mutations}), can_mutate=True),
        assignment("bad", "mutate", js({"mutations": [{"explode": {}}]}), can_mutate=True),
    )
    m = results["m"]
    assert ok(m) == {}
    got = m.mutations
    assert [x.WhichOneof("kind") for x in got] == [
        "add_node",
        "add_edge",
        "modify_node",
        "split_node",
        "inject_before",
        "prune_subgraph",
        "add_node",
    ]
    assert got[0].add_node.node.input == b'{"x":1}'
    assert got[2].modify_node.input == b"[1,2]" and got[2].modify_node.priority == 3
    assert not got[2].modify_node.HasField("timeout_s")
    assert got[3].split_node.replacements[0].input == b'"s"'
    assert got[6].add_node.speculative and got[6].add_node.node.retry.max_attempts == 3
    bad = results["bad"]
    assert bad.outcome == wpb.OUTCOME_FAILED and not bad.error.retryable
    assert "explode" in bad.error.message


def test_sleep_is_cancelled_promptly(with_fake: Run) -> None:
    w = build_worker()

    async def body(fake: FakeCoordinator) -> None:
        task = asyncio.create_task(w.serve(coordinator=fake.address))
        session = await fake.session(0)
        short, long = (
            assignment("s", "sleep", b'{"seconds":0.01}'),
            assignment("l", "sleep", b'{"seconds":600}'),
        )
        session.assign(short, long)
        (first,) = await session.wait_results(1)
        assert first.ref == short.ref and ok(first) == {"slept": 0.01}
        session.cancel(long.ref)
        results = await session.wait_results(2)
        assert results[1].ref == long.ref and results[1].outcome == wpb.OUTCOME_CANCELLED
        w.drain()
        async with asyncio.timeout(WAIT):
            await task

    with_fake(body, auto_ack=True)


# --- the program ------------------------------------------------------------------------------


async def start_program(address: str, *args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hivegrid.worker.conformance",
        "--coordinator",
        address,
        *args,
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )


def test_program_connects_and_drains_on_sigterm(with_fake: Run) -> None:
    async def body(fake: FakeCoordinator) -> None:
        proc = await start_program(fake.address, "--name", "pyconf", "--slots", "3")
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(WAIT):
                line = await proc.stderr.readline()
            assert line.decode().strip() == "hivegrid worker pyconf connected: session s1"
            session = await fake.session(0)
            assert session.hello.worker_name == "pyconf" and session.hello.slots == 3
            assert set(session.hello.agents) >= {"echo", "sum", "spawn", "mutate", "crash"}
            # Progress from `p` shows that the worker has started both assignments.
            session.assign(
                assignment("p", "progress", b'{"steps":1}'),
                assignment("x", "sleep", b'{"seconds":0.3}'),
            )
            await fake.wait_until(lambda: bool(session.progress()))
            proc.send_signal(signal.SIGTERM)
            results = {r.ref.node_id: r for r in await session.wait_results(2)}
            assert ok(results["x"]) == {"slept": 0.3}, "in-flight work finishes during a drain"
            kinds = [m.WhichOneof("msg") for m in session.received]
            assert "drain" in kinds
            assert kinds.index("drain") < max(
                i for i, m in enumerate(session.received) if m.results.items
            )
            async with asyncio.timeout(WAIT):
                code = await proc.wait()
            assert code == 0
            assert session.half_closed
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    with_fake(body, auto_ack=True)


def test_program_exits_2_when_refused(with_fake: Run) -> None:
    async def body(fake: FakeCoordinator) -> None:
        proc = await start_program(fake.address)
        async with asyncio.timeout(WAIT):
            _, err = await proc.communicate()
        assert proc.returncode == 2
        assert "refused this worker: go away" in err.decode()

    with_fake(body, refuse="go away")


def test_crash_exits_1_without_goodbye(with_fake: Run) -> None:
    async def body(fake: FakeCoordinator) -> None:
        proc = await start_program(fake.address)
        session = await fake.session(0)
        session.assign(assignment("x", "crash", b"{}"))
        async with asyncio.timeout(WAIT):
            await proc.communicate()
        assert proc.returncode == 1
        assert not session.results() and not session.messages("drain")

    with_fake(body)
