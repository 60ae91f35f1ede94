"""The worker conformance scenarios of docs/conformance.md, one test (or more)
per scenario, each run against every selected SDK's conformance worker (`sdk` parameter).

The suite observes what happened through the run's event log (WatchRun): NodeDispatched for each
assignment, AttemptFinished for each accepted answer, AttemptLost / AttemptTimedOut, progress,
client mutations and cancels, and RunEnded.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from hivegrid.v1 import worker_pb2 as wpb
from tests.support.names import outcome_name, state_name
from tests.support.processes import CoordinatorProcess, WorkerProcess
from tests.support.runs import Log
from tests.support.runs import RunClient as Client
from tests.support.values import from_json, mutation, to_json

from .conftest import WorkerFactory
from .harness import SESSION_TIMEOUT_S, raw_worker

SUCCEEDED = wpb.OUTCOME_SUCCEEDED
FAILED = wpb.OUTCOME_FAILED
CANCELLED = wpb.OUTCOME_CANCELLED


# --- helpers ----------------------------------------------------------------------------


def start_pool(
    start_worker: WorkerFactory, client: Client, sdk: str, n: int = 1, slots: int = 4
) -> list[WorkerProcess]:
    workers = [start_worker(sdk, slots=slots) for _ in range(n)]
    for w in workers:
        w.wait_connected()
    client.wait_for_workers(n, names=[w.worker_name for w in workers])
    return workers


def expect_state(log: Log, state: str) -> None:
    got = log.end_state()
    assert got == state, f"run ended {got}, expected {state}; log:\n{log.describe()}"


def node_states(client: Client, run_id: str) -> dict[str, str]:
    return {n.id: state_name(n.state) for n in client.get_run(run_id).nodes}


def fin(log: Log, node_id: str) -> Any:
    """The node's last accepted answer."""
    return log.last("attempt_finished", node_id).attempt_finished


def seq_of_finish(log: Log, node_id: str) -> int:
    return log.last("attempt_finished", node_id).seq


def seq_of_dispatch(log: Log, node_id: str) -> int:
    return log.first("node_dispatched", node_id).seq


def value(n: float) -> dict[str, Any]:
    return {"value": n}


def mutate_node(node_id: str, mutations: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "agent": "mutate",
        "input": {"mutations": mutations},
        "can_mutate": kw.pop("can_mutate", True),
        **kw,
    }


# --- 1. graph shapes --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_s01_single_node_and_chain(sdk: str, client: Client, start_worker: WorkerFactory) -> None:
    start_pool(start_worker, client, sdk)
    info = client.list_workers()[0]
    assert info.language == sdk, f"Hello.language is {info.language!r}"
    assert info.sdk_version == "0.1.0"

    single = client.submit([{"id": "only", "agent": "echo", "input": {"x": [1, "two", None]}}])
    log = client.wait_until_done(single, timeout=30)
    expect_state(log, "SUCCEEDED")
    assert from_json(fin(log, "only").result) == {"input": {"x": [1, "two", None]}, "deps": {}}
    log.check_gapless()

    chain = [{"id": "c0", "agent": "echo", "input": 0}] + [
        {"id": f"c{i}", "agent": "echo", "input": i, "deps": [f"c{i - 1}"]} for i in range(1, 6)
    ]
    run = client.submit(chain)
    log = client.wait_until_done(run, timeout=30)
    expect_state(log, "SUCCEEDED")
    for i in range(1, 6):
        assert seq_of_dispatch(log, f"c{i}") > seq_of_finish(log, f"c{i - 1}"), log.describe()
    results = client.results(run)
    assert results["c1"] == {"input": 1, "deps": {"c0": {"input": 0, "deps": {}}}}
    assert results["c5"]["deps"]["c4"]["deps"]["c3"]["input"] == 3
    assert log.successes() == {f"c{i}": 1 for i in range(6)}


@pytest.mark.timeout(60)
def test_s01_diamond(sdk: str, client: Client, start_worker: WorkerFactory) -> None:
    start_pool(start_worker, client, sdk)
    run = client.submit(
        [
            {"id": "A", "agent": "value", "input": value(1)},
            {"id": "B", "agent": "sleep", "input": {"seconds": 0.3}, "deps": ["A"]},
            {"id": "C", "agent": "value", "input": value(3), "deps": ["A"]},
            {"id": "D", "agent": "echo", "input": "d", "deps": ["B", "C"]},
        ]
    )
    log = client.wait_until_done(run, timeout=30)
    expect_state(log, "SUCCEEDED")
    a_done = seq_of_finish(log, "A")
    assert seq_of_dispatch(log, "B") > a_done and seq_of_dispatch(log, "C") > a_done
    d_start = seq_of_dispatch(log, "D")
    assert d_start > seq_of_finish(log, "B"), f"D ran before B finished:\n{log.describe()}"
    assert d_start > seq_of_finish(log, "C"), f"D ran before C finished:\n{log.describe()}"
    assert from_json(fin(log, "D").result) == {
        "input": "d",
        "deps": {"B": {"slept": 0.3}, "C": {"value": 3}},
    }
    assert log.successes() == dict.fromkeys("ABCD", 1)


@pytest.mark.timeout(120)
def test_s01_fan_out_1000_and_fan_in(sdk: str, client: Client, start_worker: WorkerFactory) -> None:
    start_pool(start_worker, client, sdk, slots=8)
    n = 1000
    nodes = [{"id": "src", "agent": "value", "input": value(0)}]
    nodes += [
        {"id": f"m{i}", "agent": "value", "input": value(i), "deps": ["src"]} for i in range(n)
    ]
    nodes.append({"id": "total", "agent": "sum", "deps": [f"m{i}" for i in range(n)]})
    run = client.submit(nodes)
    log = client.wait_until_done(run, timeout=100)
    expect_state(log, "SUCCEEDED")
    assert from_json(fin(log, "total").result) == n * (n - 1) // 2
    src_done = seq_of_finish(log, "src")
    mappers = [f"m{i}" for i in range(n)]
    assert min(seq_of_dispatch(log, m) for m in mappers) > src_done
    assert seq_of_dispatch(log, "total") > max(seq_of_finish(log, m) for m in mappers)
    successes = log.successes()
    assert len(successes) == n + 2 and set(successes.values()) == {1}
    assert len(log.dispatched()) == n + 2, "some node was dispatched more than once"
    log.check_gapless()


# --- 2. dependency results as inputs; map-reduce ----------------------------------------


@pytest.mark.timeout(60)
def test_s02_dependency_results_and_map_reduce(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    start_pool(start_worker, client, sdk)
    nodes: list[dict[str, Any]] = [
        {"id": "a", "agent": "value", "input": value(2)},
        {"id": "b", "agent": "echo", "input": "bee"},
        {"id": "e", "agent": "echo", "input": {"k": "v"}, "deps": ["a", "b"]},
        # sum: integers stay integers, floats add up, booleans and nested values are ignored
        {"id": "f1", "agent": "value", "input": value(0.5)},
        {"id": "f2", "agent": "value", "input": value(True)},
        {"id": "f3", "agent": "echo", "input": 4},
        {"id": "fsum", "agent": "sum", "deps": ["f1", "f2", "f3", "a"]},
    ]
    values = list(range(1, 41))
    nodes += [{"id": f"v{i}", "agent": "value", "input": value(v)} for i, v in enumerate(values)]
    reducers = []
    for r in range(4):
        reducers.append(f"r{r}")
        nodes.append(
            {"id": f"r{r}", "agent": "sum", "deps": [f"v{i}" for i in range(r * 10, r * 10 + 10)]}
        )
    nodes.append({"id": "reduce", "agent": "sum", "deps": reducers})
    run = client.submit(nodes)
    log = client.wait_until_done(run, timeout=40)
    expect_state(log, "SUCCEEDED")
    results = client.results(run)
    assert results["e"] == {
        "input": {"k": "v"},
        "deps": {"a": {"value": 2}, "b": {"input": "bee", "deps": {}}},
    }
    for r in range(4):
        want = sum(values[r * 10 : r * 10 + 10])
        assert results[f"r{r}"] == want and isinstance(results[f"r{r}"], int)
    assert results["reduce"] == sum(values) and isinstance(results["reduce"], int)
    assert results["fsum"] == pytest.approx(0.5 + 4 + 2)


# --- 3. spawn ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_s03_spawn_children_run_and_join_sees_all(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    start_pool(start_worker, client, sdk)
    count = 12
    run = client.submit(
        [
            {
                "id": "sp",
                "agent": "spawn",
                "input": {"count": count, "child_agent": "value", "child_input": value(1)},
                "can_mutate": True,
            },
            {"id": "echoes", "agent": "spawn", "input": {"count": 3}, "can_mutate": True},
        ]
    )
    log = client.wait_until_done(run, timeout=40)
    expect_state(log, "SUCCEEDED")
    nodes = client.nodes(run)
    children = [f"sp/c{i}" for i in range(count)]
    assert set(nodes) == {"sp", "sp/join", *children, "echoes", "echoes/join"} | {
        f"echoes/c{i}" for i in range(3)
    }
    assert nodes["sp"].result == {"spawned": count}
    assert nodes["sp/join"].result == count
    for child in children:
        assert state_name(nodes[child].state) == "SUCCEEDED"
        assert nodes[child].parent == "sp" and nodes[child].spawn_depth == 1
    assert sorted(nodes["sp/join"].deps) == sorted(children)
    assert seq_of_dispatch(log, "sp/join") > max(seq_of_finish(log, c) for c in children)
    # the mutations travelled with the result: count children + the join
    kinds = [m.WhichOneof("kind") for m in fin(log, "sp").mutations]
    assert kinds == ["add_node"] * (count + 1)
    # default child agent echo with a null input; the join of echoes sums nothing numeric
    assert nodes["echoes/c0"].result == {"input": None, "deps": {}}
    assert nodes["echoes/join"].result == 0


@pytest.mark.timeout(90)
def test_s03_nested_spawn_to_depth_limit(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    start_pool(start_worker, client, sdk)

    def nested(levels: int, count: int) -> dict[str, Any]:
        """A spawn input `levels` deep whose leaves are value(1) nodes."""
        inp: dict[str, Any] = {"count": count, "child_agent": "value", "child_input": value(1)}
        for _ in range(levels - 1):
            inp = {"count": count, "child_agent": "spawn", "child_input": inp}
        return inp

    limit = 3
    # Within the limit: the root (depth 0) spawns depth 1, ..., the leaves sit at depth 3.
    ok = client.submit(
        [{"id": "r", "agent": "spawn", "input": nested(limit, 2), "can_mutate": True}],
        max_spawn_depth=limit,
    )
    log = client.wait_until_done(ok, timeout=60)
    expect_state(log, "SUCCEEDED")
    nodes = client.nodes(ok)
    assert nodes["r/c1/c0/c1"].spawn_depth == limit
    assert nodes["r/c1/c0/c1"].result == value(1)
    assert nodes["r/c0/c1/join"].result == 2  # two value(1) leaves
    assert nodes["r/c0/join"].result == 4  # two {"spawned": 2}
    assert nodes["r/join"].result == 4
    assert not [e for e in log.finished() if e.attempt_finished.rejection]

    # One level more: the spawns at the limit depth send a batch that would go past it.
    past = client.submit(
        [{"id": "r", "agent": "spawn", "input": nested(limit + 1, 2), "can_mutate": True}],
        max_spawn_depth=limit,
    )
    log = client.wait_until_done(past, timeout=60)
    expect_state(log, "FAILED")
    nodes = client.nodes(past)
    deepest = [n for n in nodes.values() if n.spawn_depth == limit and n.agent == "spawn"]
    assert len(deepest) == 8, sorted(nodes)
    for node in deepest:
        f = fin(log, node.id)
        assert f.rejection, f"{node.id}: the batch past the depth limit was not rejected"
        assert "depth" in f.rejection, f.rejection
        assert state_name(node.state) == "FAILED"
        assert node.error_kind == "mutation_rejected", node.error
        assert f"{node.id}/c0" not in nodes, "a rejected batch added nodes"
    # the joins that waited on the failed spawns are skipped
    assert state_name(nodes["r/c0/c0/join"].state) == "SKIPPED"
    assert max(n.spawn_depth for n in nodes.values()) == limit


# --- 4. mutations -----------------------------------------------------------------------

MUTATION_CASES: dict[str, list[dict[str, Any]]] = {
    "add_node": [
        mutate_node(
            "m",
            [
                {
                    "add_node": {
                        "node": {"id": "x", "agent": "echo", "input": "x", "depends_on": ["m"]}
                    }
                }
            ],
        ),
    ],
    "add_edge": [
        {"id": "g", "agent": "sleep", "input": {"seconds": 0.8}},
        mutate_node("m", [{"add_edge": {"from_id": "g", "to_id": "t"}}]),
        {"id": "t", "agent": "echo", "deps": ["m"]},
    ],
    "remove_edge": [
        {"id": "g", "agent": "sleep", "input": {"seconds": 2.0}},
        mutate_node("m", [{"remove_edge": {"from_id": "g", "to_id": "t"}}]),
        {"id": "t", "agent": "echo", "deps": ["m", "g"]},
    ],
    "remove_node": [
        mutate_node("m", [{"remove_node": {"id": "x"}}]),
        {"id": "x", "agent": "echo", "deps": ["m"]},
        {"id": "t", "agent": "echo", "deps": ["x", "m"]},
    ],
    "modify_node": [
        mutate_node("m", [{"modify_node": {"id": "t", "input": {"new": True}, "priority": 3}}]),
        {"id": "t", "agent": "echo", "input": "old", "deps": ["m"]},
    ],
    "split_node": [
        mutate_node(
            "m",
            [
                {
                    "split_node": {
                        "id": "s",
                        "replacements": [
                            {"id": "s1", "agent": "value", "input": value(1)},
                            {"id": "s2", "agent": "value", "input": value(2)},
                        ],
                    }
                }
            ],
        ),
        {"id": "s", "agent": "echo", "deps": ["m"]},
        {"id": "d", "agent": "echo", "deps": ["s"]},
    ],
    "inject_before": [
        mutate_node(
            "m",
            [
                {
                    "inject_before": {
                        "target_id": "t",
                        "node": {"id": "i", "agent": "value", "input": value(5)},
                    }
                }
            ],
        ),
        {"id": "t", "agent": "echo", "deps": ["m"]},
    ],
    "prune_subgraph": [
        mutate_node("m", [{"prune_subgraph": {"root_id": "p"}}]),
        {"id": "p", "agent": "echo", "deps": ["m"]},
        {"id": "q", "agent": "echo", "deps": ["p"]},
        {"id": "r", "agent": "echo", "deps": ["m"]},
    ],
    "mark_speculative+confirm_speculative": [
        mutate_node("m1", [{"mark_speculative": {"id": "t"}}]),
        {"id": "z", "agent": "sleep", "input": {"seconds": 0.5}, "deps": ["m1"]},
        mutate_node("m2", [{"confirm_speculative": {"id": "t"}}], deps=["z"]),
        {"id": "t", "agent": "echo", "deps": ["m1"]},
    ],
    "add_node(speculative)+confirm_speculative": [
        mutate_node(
            "m1",
            [
                {
                    "add_node": {
                        "node": {"id": "t", "agent": "echo", "depends_on": ["m1"]},
                        "speculative": True,
                    }
                }
            ],
        ),
        {"id": "z", "agent": "sleep", "input": {"seconds": 0.5}, "deps": ["m1"]},
        mutate_node("m2", [{"confirm_speculative": {"id": "t"}}], deps=["z"]),
    ],
    "discard_speculative": [
        mutate_node("m1", [{"mark_speculative": {"id": "t"}}]),
        mutate_node("m2", [{"discard_speculative": {"id": "t"}}], deps=["m1"]),
        {"id": "t", "agent": "echo", "deps": ["m1"]},
        {"id": "u", "agent": "echo", "deps": ["t"]},
    ],
}


def _transitions_at(log: Log, node_id: str) -> dict[str, str]:
    """Transitions recorded with the node's accepted answer."""
    e = log.last("attempt_finished", node_id)
    return {t.node_id: state_name(t.state) for t in e.transitions}


def _check_mutation(kind: str, log: Log, client: Client, run_id: str) -> None:
    nodes = client.nodes(run_id)
    states = {k: state_name(v.state) for k, v in nodes.items()}
    results = {k: v.result for k, v in nodes.items()}
    rejected = [
        e.attempt_finished.rejection for e in log.finished() if e.attempt_finished.rejection
    ]
    assert not rejected, f"valid batch rejected: {rejected}"
    if kind == "add_node":
        assert states["x"] == "SUCCEEDED"
        assert results["x"] == {"input": "x", "deps": {"m": {}}}
        assert seq_of_dispatch(log, "x") > seq_of_finish(log, "m")
    elif kind == "add_edge":
        assert seq_of_finish(log, "m") < seq_of_finish(log, "g"), "precondition: m before g"
        assert _transitions_at(log, "m").get("t") != "READY", "t became ready despite the edge"
        assert seq_of_dispatch(log, "t") > seq_of_finish(log, "g"), "t did not wait for g"
        assert set(results["t"]["deps"]) == {"m", "g"}
    elif kind == "remove_edge":
        assert _transitions_at(log, "m").get("t") == "READY", "t did not become ready"
        assert seq_of_dispatch(log, "t") < seq_of_finish(log, "g"), "t still waited for g"
        assert set(results["t"]["deps"]) == {"m"}
    elif kind == "remove_node":
        assert "x" not in nodes and not log.dispatched("x")
        assert results["t"] == {"input": None, "deps": {"m": {}}}
    elif kind == "modify_node":
        assert results["t"]["input"] == {"new": True}
    elif kind == "split_node":
        assert "s" not in nodes and not log.dispatched("s")
        assert list(nodes["s1"].deps) == ["m"] and list(nodes["s2"].deps) == ["m"]
        assert sorted(nodes["d"].deps) == ["s1", "s2"]
        assert results["d"]["deps"] == {"s1": value(1), "s2": value(2)}
    elif kind == "inject_before":
        assert list(nodes["i"].deps) == ["m"]
        assert sorted(nodes["t"].deps) == ["i", "m"]
        assert seq_of_dispatch(log, "t") > seq_of_finish(log, "i")
        assert results["t"]["deps"] == {"m": {}, "i": value(5)}
    elif kind == "prune_subgraph":
        assert states["p"] == "CANCELLED" and states["q"] == "CANCELLED", states
        assert not log.dispatched("p") and not log.dispatched("q")
        assert states["r"] == "SUCCEEDED"
    elif kind in (
        "mark_speculative+confirm_speculative",
        "add_node(speculative)+confirm_speculative",
    ):
        assert _transitions_at(log, "m1").get("t") == "SPECULATIVE", _transitions_at(log, "m1")
        assert seq_of_dispatch(log, "t") > seq_of_finish(log, "m2"), "t ran before confirmation"
        assert states["t"] == "SUCCEEDED"
    elif kind == "discard_speculative":
        assert states["t"] == "SKIPPED" and states["u"] == "SKIPPED", states
        assert not log.dispatched("t") and not log.dispatched("u")
    else:  # pragma: no cover
        raise AssertionError(kind)
    if kind not in ("prune_subgraph", "discard_speculative"):
        assert log.end_state() == "SUCCEEDED"
        assert set(states.values()) == {"SUCCEEDED"}, states


@pytest.mark.timeout(90)
def test_s04_each_mutation_kind_changes_readiness(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    start_pool(start_worker, client, sdk, slots=16)
    runs = {kind: client.submit(nodes, name=kind) for kind, nodes in MUTATION_CASES.items()}
    problems = []
    for kind, run_id in runs.items():
        log = client.wait_until_done(run_id, timeout=30)
        try:
            _check_mutation(kind, log, client, run_id)
        except AssertionError as exc:
            problems.append(f"[{kind}] {exc}\n{log.describe(25)}")
    assert not problems, "\n\n".join(problems)


def _extra(node_id: str = "extra", deps: tuple[str, ...] = ("m",)) -> dict[str, Any]:
    return {"add_node": {"node": {"id": node_id, "agent": "echo", "depends_on": list(deps)}}}


INVALID_CASES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "cycle": (
        "cycle",
        [
            mutate_node("m", [_extra(), {"add_edge": {"from_id": "b", "to_id": "a"}}]),
            {"id": "a", "agent": "echo", "deps": ["m"]},
            {"id": "b", "agent": "echo", "deps": ["a"]},
        ],
    ),
    "unknown id": (
        "unknown",
        [
            mutate_node("m", [_extra(), {"add_edge": {"from_id": "nope", "to_id": "a"}}]),
            {"id": "a", "agent": "echo", "deps": ["m"]},
        ],
    ),
    "started node": (
        "start",
        [
            {"id": "s", "agent": "value", "input": value(1)},
            mutate_node("m", [_extra(), {"modify_node": {"id": "s", "input": 2}}], deps=["s"]),
            {"id": "a", "agent": "echo", "deps": ["m"]},
        ],
    ),
    "duplicate id (existing)": (
        "duplicate",
        [
            mutate_node("m", [_extra(), _extra("a")]),
            {"id": "a", "agent": "echo", "deps": ["m"]},
        ],
    ),
    "duplicate id (in batch)": (
        "duplicate",
        [
            mutate_node("m", [_extra(), _extra()]),
            {"id": "a", "agent": "echo", "deps": ["m"]},
        ],
    ),
    "without can_mutate": (
        "can_mutate",
        [
            mutate_node("m", [_extra()], can_mutate=False),
            {"id": "a", "agent": "echo", "deps": ["m"]},
        ],
    ),
    # submitted with max_nodes = 3 (below): two more nodes would make 4
    "past the run's max_nodes": (
        "limit",
        [
            mutate_node("m", [_extra(), _extra("extra2")]),
            {"id": "a", "agent": "echo", "deps": ["m"]},
        ],
    ),
}
INVALID_LIMITS = {"past the run's max_nodes": 3}


@pytest.mark.timeout(90)
def test_s04_invalid_batches_are_rejected_whole(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    start_pool(start_worker, client, sdk, slots=8)
    runs = {
        case: client.submit(nodes, name=case, max_nodes=INVALID_LIMITS.get(case, 0))
        for case, (_, nodes) in INVALID_CASES.items()
    }
    problems = []
    for case, run_id in runs.items():
        keyword = INVALID_CASES[case][0]
        log = client.wait_until_done(run_id, timeout=30)
        try:
            f = fin(log, "m")
            assert f.rejection, f"not rejected (outcome {outcome_name(f.outcome)})"
            assert keyword in f.rejection.lower(), f"reason {f.rejection!r} lacks {keyword!r}"
            nodes = client.nodes(run_id)
            assert "extra" not in nodes, "the batch was applied in part: 'extra' exists"
            assert not log.dispatched("extra")
            m = nodes["m"]
            assert state_name(m.state) == "FAILED", state_name(m.state)
            assert m.error_kind == "mutation_rejected", m.error
            assert m.error is not None and keyword in m.error.lower(), m.error
            assert state_name(nodes["a"].state) == "SKIPPED"
            expect_state(log, "FAILED")
        except AssertionError as exc:
            problems.append(f"[{case}] {exc}\n{log.describe(12)}")
    assert not problems, "\n\n".join(problems)


@pytest.mark.timeout(30)
def test_s04_rejection_reason_reaches_the_worker(
    coordinator: CoordinatorProcess, client: Client
) -> None:
    """Protocol level (no SDK): the worker that sent the bad batch is acked
    MUTATIONS_REJECTED with the reason."""
    with raw_worker(coordinator.address, agents=("mutate",), slots=1) as raw:
        run = client.submit(
            [
                {"id": "m", "agent": "mutate", "can_mutate": True},
                {"id": "a", "agent": "echo", "deps": ["m"]},
            ]
        )
        (a,) = raw.take()
        res = wpb.Result(
            ref=a.ref,
            outcome=SUCCEEDED,
            result=b"{}",
            mutations=[mutation({"add_edge": {"from_id": "a", "to_id": "m"}})],
        )
        raw.send(wpb.ConnectRequest(results=wpb.Results(items=[res])))
        ack = raw.ack()
        assert ack.status == wpb.ACK_STATUS_MUTATIONS_REJECTED, ack
        assert ack.ref == a.ref
        assert ack.message, "the worker was not told why"
        log = client.wait_until_done(run, timeout=10)
        assert fin(log, "m").rejection == ack.message or ack.message in fin(log, "m").rejection


# --- 5. non-retryable failure -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_s05_fail_skips_descendants(sdk: str, client: Client, start_worker: WorkerFactory) -> None:
    start_pool(start_worker, client, sdk)
    run = client.submit(
        [
            {"id": "a", "agent": "value", "input": value(1)},
            {
                "id": "f",
                "agent": "fail",
                "input": {"message": "boom", "retryable": False},
                "deps": ["a"],
                "retry": {"max_attempts": 3, "initial_backoff_s": 0.05},
            },
            {"id": "d1", "agent": "echo", "deps": ["f"]},
            {"id": "d2", "agent": "echo", "deps": ["d1", "a"]},
            {"id": "free", "agent": "echo", "deps": ["a"]},
            {"id": "unknown", "agent": "no-such-agent-anywhere", "deps": ["f"]},
        ]
    )
    log = client.wait_until_done(run, timeout=30)
    expect_state(log, "FAILED")
    nodes = client.nodes(run)
    f = nodes["f"]
    assert state_name(f.state) == "FAILED"
    err = client.node_errors(run)["f"]
    assert (err.message, err.retryable, err.kind) == ("boom", False, "agent")
    assert len(log.dispatched("f")) == 1, "a non-retryable failure was retried"
    assert outcome_name(fin(log, "f").outcome) == "FAILED"
    for d in ("d1", "d2", "unknown"):
        assert state_name(nodes[d].state) == "SKIPPED", (d, state_name(nodes[d].state))
        assert not log.dispatched(d)
    assert state_name(nodes["free"].state) == "SUCCEEDED"


@pytest.mark.timeout(60)
def test_s05_node_for_an_agent_nobody_runs_waits(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    """Routing: a node whose agent no worker runs is never dispatched (it waits, READY, until
    the run is cancelled), while the rest of the run goes on."""
    start_pool(start_worker, client, sdk)
    run = client.submit([{"id": "n", "agent": "nobody-runs-this"}, {"id": "e", "agent": "echo"}])
    client.wait_for_event(
        run, lambda log: bool(log.finished("e")), what="the echo node to finish", timeout=20
    )
    client.cancel(run)
    log = client.wait_until_done(run, timeout=20)
    assert not log.dispatched("n"), "a node was dispatched to a worker that lacks its agent"
    expect_state(log, "CANCELLED")


# --- 6. retries -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_s06_flaky_succeeds_on_the_right_attempt_with_backoff(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    start_pool(start_worker, client, sdk)
    backoff, multiplier, jitter = 0.2, 2.0, 0.0
    retry = {
        "max_attempts": 4,
        "initial_backoff_s": backoff,
        "multiplier": multiplier,
        "jitter": jitter,
    }
    run = client.submit(
        [
            {"id": "flaky", "agent": "flaky", "input": {"fail_times": 2}, "retry": retry},
            {
                "id": "gives_up",
                "agent": "flaky",
                "input": {"fail_times": 5},
                "retry": {"max_attempts": 3, "initial_backoff_s": 0.05},
            },
            {
                "id": "retryable_fail",
                "agent": "fail",
                "input": {"message": "again", "retryable": True},
                "retry": {"max_attempts": 2, "initial_backoff_s": 0.05},
            },
        ]
    )
    log = client.wait_until_done(run, timeout=40)
    expect_state(log, "FAILED")
    nodes = client.nodes(run)

    assert state_name(nodes["flaky"].state) == "SUCCEEDED"
    assert nodes["flaky"].result == {"attempt": 3}
    dispatches = log.dispatched("flaky")
    finishes = log.finished("flaky")
    assert [e.node_dispatched.attempt for e in dispatches] == [1, 2, 3]
    assert [outcome_name(e.attempt_finished.outcome) for e in finishes] == [
        "FAILED",
        "FAILED",
        "SUCCEEDED",
    ]
    for k, e in enumerate(finishes[:2], start=1):
        err = e.attempt_finished.error
        assert err.message == f"flaky failure on attempt {k}" and err.retryable, err
        delay = dispatches[k].time - e.time
        want = backoff * multiplier ** (k - 1) * (1 - jitter)
        assert delay >= want - 0.005, f"attempt {k + 1} started {delay:.3f} s after failure {k}"
        assert delay < want + 3.0, f"attempt {k + 1} waited {delay:.3f} s (backoff {want})"

    g = nodes["gives_up"]
    assert state_name(g.state) == "FAILED" and len(log.dispatched("gives_up")) == 3
    errors = client.node_errors(run)
    assert errors["gives_up"].message == "flaky failure on attempt 3"
    assert errors["gives_up"].retryable
    r = nodes["retryable_fail"]
    assert state_name(r.state) == "FAILED" and len(log.dispatched("retryable_fail")) == 2
    err = errors["retryable_fail"]
    assert (err.message, err.retryable, err.kind) == ("again", True, "agent")


# --- 7. timeouts ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_s07_sleep_past_timeout_is_cancelled_and_retried_per_policy(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    # One slot: a second attempt (or the next node) can only start once the worker answered
    # the timed-out attempt's cancel, so the run's pace shows the worker honoured the cancel.
    (worker,) = start_pool(start_worker, client, sdk, slots=1)
    started = time.monotonic()
    run = client.submit(
        [
            {
                "id": "retried",
                "agent": "sleep",
                "input": {"seconds": 30},
                "timeout_s": 0.5,
                "retry": {"max_attempts": 2, "initial_backoff_s": 0.1},
                "priority": 2,
            },
            {
                "id": "once",
                "agent": "sleep",
                "input": {"seconds": 30},
                "timeout_s": 0.5,
                "priority": 1,
            },
            {"id": "quick", "agent": "sleep", "input": {"seconds": 0.1}, "timeout_s": 5},
        ]
    )
    log = client.wait_until_done(run, timeout=40)
    elapsed = time.monotonic() - started
    expect_state(log, "FAILED")
    nodes = client.nodes(run)
    assert [e.attempt_timed_out.attempt for e in log.timed_out("retried")] == [1, 2]
    assert len(log.dispatched("retried")) == 2
    assert state_name(nodes["retried"].state) == "FAILED"
    assert nodes["retried"].error_kind == "timeout", nodes["retried"].error
    assert len(log.timed_out("once")) == 1 and len(log.dispatched("once")) == 1
    assert state_name(nodes["once"].state) == "FAILED"
    assert nodes["quick"].result == {"slept": 0.1}
    assert not log.lost(), "the worker lost its session"
    # four slot-holding attempts in sequence: ~0.5 * 3 + 0.1 s; a worker that ignored the
    # cancels would hold its only slot for 10 s or more
    assert elapsed < 9.0, f"the run took {elapsed:.1f} s: cancels were not honoured promptly"
    # the worker's answer to a timeout's cancel may be logged (CANCELLED, changing nothing) or
    # dropped as stale; it never completes or fails the node
    for e in log.finished():
        f = e.attempt_finished
        if f.node_id in ("retried", "once"):
            assert outcome_name(f.outcome) == "CANCELLED", f"late answer accepted: {f}"
            assert not e.transitions, f"a timed-out attempt's answer changed the graph: {e}"
    assert worker.alive()


# --- 8. lost workers --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_s08_crash_returns_leases_and_another_worker_finishes(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    workers = start_pool(start_worker, client, sdk, n=2, slots=2)
    by_name = {w.worker_name: w for w in workers}
    # four nodes for four slots: every one is dispatched at once, two per worker
    sleepers = ["s0", "s1", "s2"]
    run = client.submit(
        [{"id": s, "agent": "sleep", "input": {"seconds": 3}} for s in sleepers]
        + [{"id": "crash", "agent": "crash", "input": {}}]
    )
    seen = client.wait_for_event(
        run, lambda log: bool(log.lost("crash")), what="the crash node's loss", timeout=20
    )
    # Take the crash node out before a free slot would hand it to the surviving worker.
    client.mutate(run, [{"prune_subgraph": {"root_id": "crash"}}])
    log = client.wait_until_done(run, timeout=30)

    crash_dispatch = seen.first("node_dispatched", "crash").node_dispatched
    dead_session = crash_dispatch.session_id
    dead = by_name[crash_dispatch.worker_name]
    assert dead.wait(10) == 1, "the crash agent should end its worker with exit code 1"
    survivor = next(w for w in workers if w is not dead)
    assert survivor.alive()

    held = [
        e.node_dispatched.node_id
        for e in log.dispatched()
        if e.node_dispatched.session_id == dead_session
    ]
    assert "crash" in held and len(held) == 2, held
    for node_id in held:
        lost = log.first("attempt_lost", node_id)
        assert {t.node_id: state_name(t.state) for t in lost.transitions}.get(node_id) in (
            "READY",
            "RUNNING",
        ), f"{node_id} did not return to READY on loss: {lost}"
        delay = lost.time - seen.first("node_dispatched", "crash").time
        assert delay < SESSION_TIMEOUT_S + 1.5, f"the loss of {node_id} took {delay:.2f} s"
    (partner,) = [n for n in held if n != "crash"]
    # default retry policy (one attempt), yet the lost attempt is run again: not counted
    final = log.last("node_dispatched", partner).node_dispatched
    assert final.session_id != dead_session and final.attempt >= 2
    assert outcome_name(fin(log, partner).outcome) == "SUCCEEDED"
    nodes = client.nodes(run)
    for s in sleepers:
        assert state_name(nodes[s].state) == "SUCCEEDED", s
        assert nodes[s].result == {"slept": 3}
    assert log.successes() == dict.fromkeys(sleepers, 1)
    assert state_name(nodes["crash"].state) == "CANCELLED"


@pytest.mark.timeout(60)
def test_s08_late_result_from_dead_session_is_stale(
    sdk: str, client: Client, start_worker: WorkerFactory, coordinator: CoordinatorProcess
) -> None:
    raw = raw_worker(coordinator.address, agents=("echo",), slots=1, name="doomed")
    try:
        run = client.submit([{"id": "n", "agent": "echo", "input": "real"}])
        (assignment,) = raw.take()
        old = wpb.AssignmentRef()
        old.CopyFrom(assignment.ref)
    finally:
        raw.drop()  # like a killed process: no goodbye
    client.wait_for_event(run, lambda log: bool(log.lost("n")), what="the lost lease")

    start_pool(start_worker, client, sdk)
    log = client.wait_until_done(run, timeout=30)
    expect_state(log, "SUCCEEDED")

    with raw_worker(
        coordinator.address, agents=("echo",), slots=1, name="doomed", held=[old]
    ) as again:
        welcome = again.expect_welcome()
        assert old not in welcome.held, "the coordinator kept a lease that was re-dispatched"
        again.answer(old, to_json({"forged": True}))
        ack = again.ack()
        assert ack.status == wpb.ACK_STATUS_STALE, ack
        assert ack.ref == old

    log = client.events(run)
    first = log.first("node_dispatched", "n").node_dispatched
    assert (first.attempt, first.worker_name) == (old.attempt, "doomed")
    answers = log.finished("n")
    assert len(answers) == 1 and answers[0].attempt_finished.attempt != old.attempt
    # Leases are the credentials of attempts: watchers never see them.
    assert all(e.node_dispatched.lease == 0 for e in log.dispatched("n"))
    result = client.nodes(run)["n"].result
    assert result == {"input": "real", "deps": {}}


@pytest.mark.timeout(60)
def test_s08_frozen_worker_expires_and_its_late_results_are_stale(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    """A worker that goes silent (SIGSTOP: no heartbeats, the TCP stream stays open) loses its
    session after the session timeout; another worker finishes its nodes; when it wakes up its
    results are for attempts that are no longer current and change nothing, and it reconnects."""
    (frozen,) = start_pool(start_worker, client, sdk, slots=2)
    ids = ["a", "b"]
    run = client.submit([{"id": i, "agent": "sleep", "input": {"seconds": 1.0}} for i in ids])
    client.wait_for_event(run, lambda log: len(log.dispatched()) == 2, what="both nodes to start")
    frozen.signal(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        helper = start_worker(sdk, slots=2)
        helper.wait_connected()
        log = client.wait_until_done(run, timeout=30)
    finally:
        frozen.signal(signal.SIGCONT)
    expect_state(log, "SUCCEEDED")
    first_session = log.first("node_dispatched", "a").node_dispatched.session_id
    for node_id in ids:
        lost = log.first("attempt_lost", node_id)
        assert lost.time - stopped_at < SESSION_TIMEOUT_S + 1.5, "the silent session lingered"
        answer = log.last("attempt_finished", node_id)
        final = log.last("node_dispatched", node_id).node_dispatched
        assert (
            final.session_id != first_session and answer.attempt_finished.attempt == final.attempt
        )
    # the woken worker reconnects; its old results are dropped (never logged, never counted)
    frozen.wait_connected(count=2, timeout=20)
    client.wait_for_workers(2, names=[frozen.worker_name, helper.worker_name])
    log = client.events(run)
    assert log.successes() == dict.fromkeys(ids, 1)
    stale = [e for e in log.finished() if e.attempt_finished.attempt == 1]
    assert not stale, f"a result of the expired session was logged: {stale}"
    assert frozen.alive()


# --- 9. cancel and prune ----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_s09_prune_and_cancel_while_running(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    (worker,) = start_pool(start_worker, client, sdk, slots=3)
    started = time.monotonic()
    sleep30 = {"seconds": 30}
    run = client.submit(
        [
            {"id": "p", "agent": "sleep", "input": sleep30, "priority": 10},
            {"id": "p_child", "agent": "echo", "deps": ["p"]},
            {"id": "q1", "agent": "sleep", "input": sleep30, "priority": 5},
            {"id": "q2", "agent": "sleep", "input": sleep30, "priority": 5},
            {"id": "q3", "agent": "sleep", "input": sleep30, "priority": 1},
            {"id": "q4", "agent": "sleep", "input": sleep30, "priority": 0},
        ]
    )
    client.wait_for_event(
        run,
        lambda log: {"p", "q1", "q2"} <= {e.node_dispatched.node_id for e in log.dispatched()},
        what="p, q1 and q2 to run",
    )
    client.mutate(run, [{"prune_subgraph": {"root_id": "p"}}])
    # the worker answers the prune's cancel, which frees a slot for q3
    client.wait_for_event(
        run,
        lambda log: bool(log.finished("p")) and bool(log.dispatched("q3")),
        what="p's cancelled answer and q3's start",
    )
    client.cancel(run, "conformance: cancel while running")
    log = client.wait_until_done(run, timeout=20)
    expect_state(log, "CANCELLED")

    p = fin(log, "p")
    assert outcome_name(p.outcome) == "CANCELLED", p
    assert log.of("mutations_applied"), "the client's prune is not in the log"
    nodes = client.nodes(run)
    assert state_name(nodes["p"].state) == "CANCELLED"
    assert state_name(nodes["p_child"].state) == "CANCELLED"
    assert not log.dispatched("p_child")

    cancelled_at = log.first("run_cancelled").seq
    late = [e.node_dispatched.node_id for e in log.dispatched() if e.seq > cancelled_at]
    assert not late, f"dispatched after the cancel: {late}"
    assert not log.dispatched("q4"), "q4 was waiting for a slot and must never start"
    # The run ends as soon as every node is CANCELLED; the workers' answers to the cancels may
    # come after RunEnded (then they are stale and not logged). If logged, they say CANCELLED.
    for q in ("q1", "q2", "q3"):
        for e in log.finished(q):
            assert outcome_name(e.attempt_finished.outcome) == "CANCELLED", e
    assert {state_name(n.state) for n in nodes.values()} == {"CANCELLED"}, node_states(client, run)
    # The worker got the cancels and answered them: its three slots are free again, so a new
    # run's three nodes all start at once (an unanswered assignment keeps its slot taken).
    follow = client.submit(
        [{"id": f"f{i}", "agent": "sleep", "input": {"seconds": 0.3}} for i in range(3)]
    )
    after = client.wait_until_done(follow, timeout=20)
    expect_state(after, "SUCCEEDED")
    assert list(after.max_in_flight_per_session().values()) == [3], (
        "the slots held by the cancelled attempts were not freed"
    )
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"cancelling took {elapsed:.1f} s: the worker did not stop promptly"
    assert worker.alive()


# --- 10. slots --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_s10_two_slots_never_more_than_two_at_once(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    start_pool(start_worker, client, sdk, slots=2)
    (info,) = client.list_workers()
    assert info.slots == 2
    run = client.submit(
        [{"id": f"n{i}", "agent": "sleep", "input": {"seconds": 0.05}} for i in range(20)]
    )
    log = client.wait_until_done(run, timeout=40)
    expect_state(log, "SUCCEEDED")
    peaks = log.max_in_flight_per_session()
    assert peaks == {info.session_id: 2}, f"in flight per session: {peaks}"
    assert len(log.successes()) == 20


# --- 11. progress -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_s11_progress_reaches_watchers_in_order(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    start_pool(start_worker, client, sdk)
    steps = 40
    ids = ["p0", "p1", "p2"]
    run = client.submit([{"id": i, "agent": "progress", "input": {"steps": steps}} for i in ids])
    log = client.wait_until_done(run, timeout=30)
    expect_state(log, "SUCCEEDED")
    for node_id in ids:
        items = log.progress(node_id)
        data = [from_json(e.progress.data) for e in items]
        assert data == [{"step": i} for i in range(1, steps + 1)], data
        assert {e.progress.attempt for e in items} == {1}
        assert items[-1].seq < seq_of_finish(log, node_id), "progress after the result"
        assert from_json(fin(log, node_id).result) == {"steps": steps}


# --- 12. graceful drain -----------------------------------------------------------------


def _drain_scenario(
    sdk: str,
    client: Client,
    start_worker: WorkerFactory,
    drain: Callable[[WorkerProcess], None],
) -> None:
    (w1,) = start_pool(start_worker, client, sdk, slots=4)
    ids = [f"n{i}" for i in range(8)]
    run = client.submit([{"id": i, "agent": "sleep", "input": {"seconds": 1.0}} for i in ids])
    seen = client.wait_for_event(
        run, lambda log: len(log.dispatched()) >= 4, what="four nodes to start"
    )
    drain(w1)
    assert w1.wait(20) == 0, f"the drained worker exited non-zero:\n{w1.diagnostics()}"
    in_flight = {e.node_dispatched.node_id for e in seen.dispatched()}
    session = seen.first("node_dispatched").node_dispatched.session_id

    w2 = start_worker(sdk, slots=4)
    w2.wait_connected()
    log = client.wait_until_done(run, timeout=30)
    expect_state(log, "SUCCEEDED")
    on_w1 = [
        e.node_dispatched.node_id
        for e in log.dispatched()
        if e.node_dispatched.session_id == session
    ]
    assert set(on_w1) == in_flight and len(on_w1) == 4, (
        f"dispatched to the draining worker: {on_w1}"
    )
    for node_id in in_flight:
        answer = fin(log, node_id)
        assert outcome_name(answer.outcome) == "SUCCEEDED" and answer.attempt == 1, answer
    assert not log.lost(), "the drained worker's session was lost rather than closed"
    assert log.successes() == dict.fromkeys(ids, 1)


@pytest.mark.timeout(60)
def test_s12_sigterm_drains_gracefully(
    sdk: str, client: Client, start_worker: WorkerFactory
) -> None:
    _drain_scenario(sdk, client, start_worker, lambda w: w.signal(signal.SIGTERM))


@pytest.mark.timeout(60)
def test_s12_operator_drain_request(sdk: str, client: Client, start_worker: WorkerFactory) -> None:
    def drain(w: WorkerProcess) -> None:
        assert client.drain_worker(w.worker_name) == 1

    _drain_scenario(sdk, client, start_worker, drain)


# --- 13. coordinator restart ------------------------------------------------------------


@pytest.mark.timeout(90)
def test_s13_worker_reconnects_after_coordinator_restart(
    sdk: str, client: Client, start_worker: WorkerFactory, coordinator: CoordinatorProcess
) -> None:
    """SIGKILL the coordinator twice during a run and start it again on the same sqlite file and
    port: the worker reconnects each time (with its held attempts and unacked results), and
    the run completes with exactly one accepted success per node."""
    (worker,) = start_pool(start_worker, client, sdk, slots=4)
    ids = [f"n{i}" for i in range(32)]
    nodes: list[dict[str, Any]] = [
        {"id": i, "agent": "sleep", "input": {"seconds": 0.25}} for i in ids
    ]
    # a node that is still running across the restarts
    nodes.append({"id": "long", "agent": "sleep", "input": {"seconds": 2.5}, "priority": 9})
    nodes.append({"id": "end", "agent": "echo", "input": "end", "deps": [*ids, "long"]})
    run = client.submit(nodes)
    address = coordinator.address
    for restart, after in enumerate((5, 14), start=1):

        def enough(log: Log, n: int = after) -> bool:
            return len(log.finished()) >= n

        client.wait_for_event(run, enough, what=f"{after} nodes to finish", timeout=30)
        coordinator.kill()
        coordinator.start()
        assert coordinator.address == address
        worker.wait_connected(count=restart + 1, timeout=30)
    log = client.wait_until_done(run, timeout=60)
    expect_state(log, "SUCCEEDED")
    log.check_gapless()
    want = dict.fromkeys([*ids, "long", "end"], 1)
    assert log.successes() == want, f"accepted successes per node: {log.successes()}"
    states = node_states(client, run)
    assert set(states.values()) == {"SUCCEEDED"}, states
    result = client.nodes(run)["end"].result
    assert result["deps"] == {**{i: {"slept": 0.25} for i in ids}, "long": {"slept": 2.5}}
    assert worker.alive()
