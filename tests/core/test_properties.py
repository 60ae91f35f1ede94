"""Property tests: random graphs under random stimuli never break `validate(core)` (the driver
runs it after every step), every run ends once workers keep answering, and replaying the log
rebuilds the same nodes.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hivegrid.coordinator.core import (
    AckStatus,
    AddEdge,
    AddNode,
    Assignment,
    ConfirmSpeculative,
    DiscardSpeculative,
    GraphError,
    InjectBefore,
    MarkSpeculative,
    ModifyNode,
    Mutation,
    NodeError,
    NodeSpec,
    NodeState,
    Outcome,
    PruneSubgraph,
    RemoveEdge,
    RemoveNode,
    RetryPolicy,
    RunLimits,
    RunState,
    SplitNode,
)
from hivegrid.coordinator.core.model import TERMINAL

from .conftest import Driver, node_facts, replay

AGENTS = ("a", "b")
SETTINGS = settings(
    max_examples=int(os.environ.get("HIVEGRID_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- graphs ----------------------------------------------------------------------------------


@st.composite
def node_specs(draw: st.DrawFn, node_id: str, candidates: list[str]) -> NodeSpec:
    deps = (
        draw(st.lists(st.sampled_from(candidates), max_size=3, unique=True)) if candidates else []
    )
    return NodeSpec(
        id=node_id,
        agent=draw(st.sampled_from(AGENTS)),
        depends_on=tuple(deps),
        retry=RetryPolicy(
            max_attempts=draw(st.integers(1, 3)),
            initial_backoff_s=draw(st.sampled_from([0.0, 1.0, 2.5])),
            max_backoff_s=4.0,
            jitter=draw(st.sampled_from([0.0, 0.5, 1.0])),
        ),
        timeout_s=draw(st.sampled_from([0.0, 0.0, 2.0, 5.0])),
        priority=draw(st.integers(0, 2)),
        can_mutate=draw(st.booleans()),
        run_on_failure=draw(st.booleans()),
    )


@st.composite
def dags(draw: st.DrawFn) -> list[NodeSpec]:
    n = draw(st.integers(1, 7))
    specs: list[NodeSpec] = []
    for i in range(n):
        specs.append(draw(node_specs(f"n{i}", [s.id for s in specs])))
    return specs


# --- mutation batches (valid and invalid) ------------------------------------------------------

MUTATION_KINDS = (
    "add_node",
    "add_node",
    "add_edge",
    "remove_edge",
    "remove_node",
    "modify_node",
    "split_node",
    "inject_before",
    "prune_subgraph",
    "mark_speculative",
    "confirm_speculative",
    "discard_speculative",
)


def draw_batch(data: st.DataObject, drv: Driver, fresh: list[int]) -> list[Mutation]:
    existing = sorted(drv.run.nodes)
    added: list[str] = []

    def new_id() -> str:
        fresh[0] += 1
        return f"m{fresh[0]}"

    def some_id() -> str:
        # Mostly real ids; sometimes one added earlier in the batch, or an unknown one.
        pool: list[str] = [*existing, *existing, *existing, *added, "zz"]
        return data.draw(st.sampled_from(pool))

    def new_spec(node_id: str, *, allow_deps: bool = True) -> NodeSpec:
        pool = [*existing, *existing, *added] if allow_deps else []
        if pool and data.draw(st.integers(0, 9)) == 0:
            pool.append("zz")
        return data.draw(node_specs(node_id, pool))

    batch: list[Mutation] = []
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(MUTATION_KINDS))
        m: Mutation
        if kind == "add_node":
            nid = data.draw(st.sampled_from([new_id(), new_id(), some_id()]))
            m = AddNode(new_spec(nid), speculative=data.draw(st.booleans()))
            added.append(nid)
        elif kind == "add_edge":
            m = AddEdge(some_id(), some_id())
        elif kind == "remove_edge":
            m = RemoveEdge(some_id(), some_id())
        elif kind == "remove_node":
            m = RemoveNode(some_id())
        elif kind == "modify_node":
            m = ModifyNode(
                some_id(),
                input=data.draw(st.sampled_from([None, b"1"])),
                priority=data.draw(st.sampled_from([None, 0, 5])),
                retry=data.draw(
                    st.sampled_from([None, RetryPolicy(max_attempts=2), RetryPolicy(jitter=3.0)])
                ),
                timeout_s=data.draw(st.sampled_from([None, 0.0, 1.0, -1.0])),
            )
        elif kind == "split_node":
            ids = [new_id() for _ in range(data.draw(st.integers(0, 2)))]
            reps = tuple(new_spec(i, allow_deps=data.draw(st.booleans())) for i in ids)
            m = SplitNode(some_id(), reps)
            added.extend(ids)
        elif kind == "inject_before":
            nid = new_id()
            m = InjectBefore(some_id(), new_spec(nid, allow_deps=data.draw(st.booleans())))
            added.append(nid)
        elif kind == "prune_subgraph":
            m = PruneSubgraph(some_id())
        elif kind == "mark_speculative":
            m = MarkSpeculative(some_id())
        elif kind == "confirm_speculative":
            m = ConfirmSpeculative(some_id())
        else:
            m = DiscardSpeculative(some_id())
        batch.append(m)
    return batch


# --- steering around known bugs ------------------------------------------------------------------


# --- the simulated cluster ------------------------------------------------------------------------


class Cluster:
    """Workers that answer (or not) as the test draws."""

    def __init__(self, drv: Driver) -> None:
        self.drv = drv
        self.answered: set[int] = set()  # id() of answered assignments
        self.owner: dict[int, str] = {}  # lease -> session holding it after a reconnect
        self.fresh = [0]

    def unanswered(self) -> list[Assignment]:
        return [a for a in self.drv.assignments if id(a) not in self.answered]

    def answer(self, a: Assignment, outcome: Outcome, **kw: Any) -> AckStatus:
        self.answered.add(id(a))
        sid = self.owner.get(a.lease, a.session_id)
        if sid not in self.drv.core.sessions:
            sid = ""
        return self.drv.answer(a, outcome, session_id=sid, **kw)[0]

    def open(self, slots: int, agents: list[str], held: list[Assignment]) -> None:
        refs = [(a.run_id, a.node_id, a.attempt, a.lease) for a in held]
        sid = self.drv.open(slots, agents=agents, held=refs)
        for ref in self.drv.kept:
            self.owner[ref.lease] = sid

    def finish(self) -> None:
        """Workers with every agent answer everything with success until the run ends."""
        drv = self.drv
        # Every round answers all there is and waits out any backoff: a node still unfinished
        # after a few rounds without a new record is stuck.
        quiet = 0
        for _ in range(100):
            if quiet >= 3:
                break
            if drv.run.state is not RunState.RUNNING:
                return
            logged = len(drv.log)
            spec_ids = [i for i, n in drv.run.nodes.items() if n.state is NodeState.SPECULATIVE]
            if spec_ids:
                drv.mutate([ConfirmSpeculative(i) for i in spec_ids])
            live = [s for s in drv.core.sessions.values() if not s.draining]
            if not any(set(AGENTS) <= s.agents and len(s.in_flight) < s.slots for s in live):
                self.open(8, list(AGENTS), [])
            drv.dispatch()
            for a in self.unanswered():
                node = drv.run.nodes.get(a.node_id)
                current = node is not None and node.lease == a.lease
                self.answer(a, Outcome.SUCCEEDED if current else Outcome.CANCELLED)
            drv.advance(drv.now + 50)
            quiet = 0 if len(drv.log) > logged else quiet + 1
        raise AssertionError(f"the run did not end: {drv.states()}")


STEPS = [
    "open",
    "dispatch",
    "dispatch",
    "dispatch",
    "succeed",
    "succeed",
    "succeed",
    "succeed",
    "fail",
    "fail",
    "cancelled",
    "stale",
    "close",
    "drain",
    "advance",
    "advance",
    "mutate",
    "mutate",
    "progress",
    "cancel_run",
]


def play(data: st.DataObject, cluster: Cluster, steps: int) -> None:
    drv = cluster.drv
    for _ in range(steps):
        if drv.run.state is not RunState.RUNNING:
            return
        step = data.draw(st.sampled_from(STEPS))
        pending = cluster.unanswered()
        sessions = sorted(drv.core.sessions)
        if step == "open":
            agents = data.draw(st.lists(st.sampled_from(AGENTS), min_size=1, unique=True))
            held = data.draw(st.lists(st.sampled_from(pending), unique=True)) if pending else []
            cluster.open(data.draw(st.integers(1, 3)), agents, held)
        elif step == "dispatch":
            drv.dispatch()
        elif step in ("succeed", "fail", "cancelled", "progress") and pending:
            a = data.draw(st.sampled_from(pending))
            if step == "progress":
                drv.progress(a)
            elif step == "succeed":
                batch: list[Mutation] = []
                if data.draw(st.booleans()):
                    batch = draw_batch(data, drv, cluster.fresh)
                status = cluster.answer(a, Outcome.SUCCEEDED, mutations=batch)
                if batch:
                    event(f"node batch {status.name}")
            elif step == "fail":
                error = NodeError("x", data.draw(st.booleans()), "agent")
                cluster.answer(a, Outcome.FAILED, error=error)
            else:
                cluster.answer(a, Outcome.CANCELLED)
        elif step == "stale" and cluster.answered:
            done = [a for a in drv.assignments if id(a) in cluster.answered]
            a = data.draw(st.sampled_from(done))
            outcome = data.draw(st.sampled_from(list(Outcome)))
            cluster.answer(a, outcome)
        elif step == "close" and sessions:
            drv.close(data.draw(st.sampled_from(sessions)))
        elif step == "drain" and sessions:
            drv.drain_session(data.draw(st.sampled_from(sessions)))
        elif step == "advance":
            drv.advance(drv.now + data.draw(st.sampled_from([0.5, 1.0, 2.0, 6.0])))
        elif step == "mutate":
            batch = draw_batch(data, drv, cluster.fresh)
            before = drv.snapshot()
            try:
                drv.mutate(batch)
                event("client batch committed")
            except GraphError:
                event("client batch rejected")
                assert drv.snapshot() == before
        elif step == "cancel_run" and data.draw(st.integers(0, 9)) == 0:
            drv.cancel_run()


# A passing run takes seconds; shrinking a failure can take minutes, and a timeout in the middle
# of it would hide the real error behind a FlakyFailure.
@pytest.mark.timeout(900)
@SETTINGS
@given(specs=dags(), data=st.data())
def test_random_stimuli_keep_the_core_valid_and_runs_end(
    specs: list[NodeSpec], data: st.DataObject
) -> None:
    drv = Driver()
    drv.submit(
        specs,
        limits=RunLimits(max_nodes=14, max_spawn_depth=2),
        seed=data.draw(st.integers(0, 2**64)),
    )
    cluster = Cluster(drv)
    cluster.open(data.draw(st.integers(1, 3)), list(AGENTS), [])
    play(data, cluster, data.draw(st.integers(10, 60)))
    for kind in {r.kind for _, r in drv.log}:
        event(f"record {kind}")
    cluster.finish()
    assert drv.run.unfinished == 0
    states = set(drv.states().values())
    if drv.run.cancelled:
        assert drv.run.state is RunState.CANCELLED
    elif NodeState.FAILED in states:
        assert drv.run.state is RunState.FAILED
    else:
        assert drv.run.state is RunState.SUCCEEDED
    # Recovery: the records rebuild the same nodes.
    restored = replay(drv.log, now=drv.now)
    for sid in list(drv.core.sessions):
        drv.close(sid)
    assert node_facts(restored) == node_facts(drv.core)
    assert restored.runs[drv.run_id].state is drv.run.state


@pytest.mark.timeout(900)
@SETTINGS
@given(specs=dags(), data=st.data())
def test_runs_end_when_workers_keep_answering(specs: list[NodeSpec], data: st.DataObject) -> None:
    drv = Driver()
    drv.submit(specs)
    drv.open(data.draw(st.integers(1, 3)), agents=list(AGENTS))
    for _ in range(200):
        if drv.run.state is not RunState.RUNNING:
            break
        for a in drv.dispatch():
            if data.draw(st.booleans()):
                drv.succeed(a)
            else:
                drv.fail(a, retryable=data.draw(st.booleans()))
        drv.advance(drv.now + 10)
    assert drv.run.state is not RunState.RUNNING
    failed = any(n.state is NodeState.FAILED for n in drv.run.nodes.values())
    assert drv.run.state is (RunState.FAILED if failed else RunState.SUCCEEDED)
    assert all(n.state in TERMINAL for n in drv.run.nodes.values())
