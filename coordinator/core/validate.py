"""`validate(core)`: every invariant of the core, checked from scratch. Tests run it after every
step; it is far too slow for production."""

from __future__ import annotations

from .model import NOT_STARTED, TERMINAL, NodeState, RunState
from .scheduler import Core


def validate(core: Core) -> None:
    for run in core.runs.values():
        counts = dict.fromkeys(NodeState, 0)
        for node_id, node in run.nodes.items():
            assert node.id == node_id
            assert node.run is run
            counts[node.state] += 1
            for dep in node.deps:
                assert dep in run.nodes, f"{node_id}: unknown dependency {dep}"
                assert node_id in run.nodes[dep].dependents, f"{dep} -> {node_id} not linked"
            assert len(set(node.deps)) == len(node.deps), f"{node_id}: duplicate dependency"
            for child in node.dependents:
                assert child in run.nodes, f"{node_id}: unknown dependent {child}"
                assert node_id in run.nodes[child].deps, f"{node_id} -> {child} dangling"
            if node.state in NOT_STARTED:
                waiting = 0
                for dep in node.deps:
                    d = run.nodes[dep]
                    if d.state is NodeState.SUCCEEDED:
                        continue
                    assert not (d.state in TERMINAL and not node.spec.run_on_failure), (
                        f"{node_id} waits on {dep}, which ended {d.state.name}"
                    )
                    if d.state not in TERMINAL:
                        waiting += 1
                assert node.waiting == waiting, f"{node_id}: waiting {node.waiting} != {waiting}"
                if node.state is NodeState.READY:
                    assert waiting == 0, f"{node_id} READY with {waiting} waiting"
                if node.state is NodeState.PENDING:
                    assert waiting > 0, f"{node_id} PENDING with nothing to wait for"
            if node.state is NodeState.RUNNING:
                assert node.lease != 0 and node.attempt > 0
                session = core.sessions.get(node.session_id)
                if session is not None:
                    assert session.in_flight.get(node.lease) is node
            if node.state is NodeState.SUCCEEDED:
                assert all(run.nodes[d].state in TERMINAL for d in node.deps)
        assert counts == run.counts, f"{run.run_id}: counts {run.counts} != {counts}"
        unfinished = sum(n for s, n in counts.items() if s not in TERMINAL)
        assert run.unfinished == unfinished
        assert (run.state is RunState.RUNNING) == (unfinished > 0), (
            f"{run.run_id}: state {run.state.name} with {unfinished} unfinished"
        )
        _check_acyclic(run.nodes)
    for session in core.sessions.values():
        assert len(session.in_flight) <= session.slots, f"{session.id} over its slots"


def _check_acyclic(nodes: dict) -> None:  # type: ignore[type-arg]
    waiting = {i: len(n.deps) for i, n in nodes.items()}
    stack = [i for i, w in waiting.items() if w == 0]
    seen = 0
    while stack:
        cur = stack.pop()
        seen += 1
        for child in nodes[cur].dependents:
            waiting[child] -= 1
            if waiting[child] == 0:
                stack.append(child)
    assert seen == len(nodes), "the graph has a cycle"
