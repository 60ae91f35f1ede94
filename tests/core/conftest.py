"""Helpers that drive a `Core` the way the runtime does, with a clock the test owns.

`Driver` wraps one core and one run. Every call passes the driver's `now` into the core, drains
the outbox into `log` (records, with the time they were made), `assignments` and `cancels`, and
runs `validate(core)` afterwards, so every test checks every invariant after every step.
`replay()` rebuilds a core from a driver's log the way the runtime recovers after a crash: each
logged decision through `Core.replay`, the same path the runtime takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from hivegrid.coordinator.core import (
    AckStatus,
    Answer,
    Assignment,
    AttemptRef,
    CancelOrder,
    CancelRun,
    Core,
    MutateRun,
    Mutation,
    NodeError,
    NodeSpec,
    NodeState,
    OpenSession,
    Outcome,
    Record,
    ReportProgress,
    RetryPolicy,
    RunLimits,
    RunState,
    SubmitRun,
    validate,
)
from hivegrid.coordinator.core import graph as graph_module

# Short names for states, as in the transition table of coordinator/core/graph.py.
P, RD, RN = NodeState.PENDING, NodeState.READY, NodeState.RUNNING
OK, FL, CX, SK, SP = (
    NodeState.SUCCEEDED,
    NodeState.FAILED,
    NodeState.CANCELLED,
    NodeState.SKIPPED,
    NodeState.SPECULATIVE,
)

RUN = "r1"
AGENT = "a"


def spec(node_id: str, *deps: str, agent: str = AGENT, **kw: Any) -> NodeSpec:
    return NodeSpec(id=node_id, agent=agent, depends_on=tuple(deps), **kw)


def retry(max_attempts: int, **kw: Any) -> RetryPolicy:
    kw.setdefault("initial_backoff_s", 1.0)
    return RetryPolicy(max_attempts=max_attempts, **kw)


class Driver:
    def __init__(self, *, lease_epoch: int = 1, check: bool = True, **core_kw: Any) -> None:
        self.core = Core(lease_epoch=lease_epoch, **core_kw)
        self.now = 0.0
        self.run_id = RUN
        self.check = check
        # (time, record) for every record the core made, in order.
        self.log: list[tuple[float, Record]] = []
        self.assignments: list[Assignment] = []
        self.cancels: list[CancelOrder] = []
        self._sessions = 0
        # Refs the last open() kept.
        self.kept: list[AttemptRef] = []

    # --- plumbing ------------------------------------------------------------------------

    def _drain(self) -> list[Record]:
        records, assignments, cancels = self.core.take_outbox()
        self.log.extend((self.now, r) for r in records)
        self.assignments.extend(assignments)
        self.cancels.extend(cancels)
        if self.check:
            validate(self.core)
        return records

    def step(self) -> list[Record]:
        """Takes the outbox (records only are returned) and validates."""
        return self._drain()

    @property
    def run(self) -> Any:
        return self.core.runs[self.run_id]

    def node(self, node_id: str) -> Any:
        return self.run.nodes[node_id]

    def state(self, node_id: str) -> NodeState:
        return NodeState(self.node(node_id).state)

    def states(self) -> dict[str, NodeState]:
        return {i: n.state for i, n in self.run.nodes.items()}

    def snapshot(self) -> dict[str, Any]:
        """What a rejected stimulus must leave untouched."""
        run = self.run
        return {
            "state": run.state,
            "nodes": {
                i: (
                    n.state,
                    tuple(n.deps),
                    tuple(sorted(n.dependents)),
                    n.waiting,
                    n.spec,
                    n.attempt,
                    n.lease,
                )
                for i, n in run.nodes.items()
            },
            "counts": dict(run.counts),
            "unfinished": run.unfinished,
        }

    # --- stimuli -------------------------------------------------------------------------

    def submit(
        self,
        specs: Sequence[NodeSpec],
        *,
        limits: RunLimits | None = None,
        seed: int = 7,
        run_id: str | None = None,
    ) -> list[Record]:
        run_id = run_id or self.run_id
        self.run_id = run_id
        self.core.submit_run(SubmitRun(run_id, tuple(specs), limits, "t", seed), now=self.now)
        return self._drain()

    def open(
        self,
        slots: int = 4,
        *,
        agents: Iterable[str] = (AGENT,),
        labels: dict[str, str] | None = None,
        held: Iterable[AttemptRef | tuple[str, str, int, int]] = (),
        session_id: str | None = None,
    ) -> str:
        if session_id is None:
            self._sessions += 1
            session_id = f"s{self._sessions}"
        refs = tuple(r if isinstance(r, AttemptRef) else AttemptRef(*r) for r in held)
        self.kept = self.core.open_session(
            OpenSession(session_id, f"w-{session_id}", tuple(agents), labels or {}, slots, refs),
            now=self.now,
        )
        self._drain()
        return session_id

    def dispatch(self) -> list[Assignment]:
        """Runs the scheduler; returns the assignments it made now."""
        before = len(self.assignments)
        self.core.dispatch()
        self._drain()
        return self.assignments[before:]

    def dispatch_one(self, node_id: str) -> Assignment:
        got = [a for a in self.dispatch() if a.node_id == node_id]
        assert len(got) == 1, f"{node_id} was not dispatched"
        return got[0]

    def answer(
        self,
        a: Assignment,
        outcome: Outcome,
        *,
        result: bytes = b"",
        error: NodeError | None = None,
        mutations: Sequence[Mutation] = (),
        session_id: str | None = None,
    ) -> tuple[AckStatus, str]:
        sid = a.session_id if session_id is None else session_id
        answer = Answer(
            a.run_id, a.node_id, a.attempt, a.lease, outcome, result, error, tuple(mutations)
        )
        got = self.core.finish_attempt(sid, answer, now=self.now)
        self._drain()
        return got

    def succeed(self, a: Assignment, **kw: Any) -> tuple[AckStatus, str]:
        return self.answer(a, Outcome.SUCCEEDED, **kw)

    def fail(
        self, a: Assignment, *, retryable: bool = True, kind: str = "agent", **kw: Any
    ) -> tuple[AckStatus, str]:
        return self.answer(a, Outcome.FAILED, error=NodeError("boom", retryable, kind), **kw)

    def cancelled(self, a: Assignment, **kw: Any) -> tuple[AckStatus, str]:
        return self.answer(a, Outcome.CANCELLED, **kw)

    def run_to(self, node_id: str) -> Assignment:
        """The current assignment of `node_id`: one already made, or a new dispatch (opening
        a session if there is none)."""
        node = self.node(node_id)
        if node.state is NodeState.RUNNING:
            for a in reversed(self.assignments):
                if a.node_id == node_id and a.run_id == self.run_id and a.lease == node.lease:
                    return a
        if not self.core.sessions:
            self.open(slots=100)
        return self.dispatch_one(node_id)

    def complete(self, *node_ids: str) -> None:
        for node_id in node_ids:
            assert self.succeed(self.run_to(node_id))[0] is AckStatus.COMMITTED

    def close(self, session_id: str, reason: str = "gone") -> None:
        self.core.close_session(session_id, reason=reason, now=self.now)
        self._drain()

    def drain_session(self, session_id: str) -> None:
        self.core.drain_session(session_id)
        self._drain()

    def advance(self, now: float) -> None:
        assert now >= self.now, "time runs forward"
        self.now = now
        self.core.advance(now)
        self._drain()

    def mutate(self, batch: Sequence[Mutation]) -> list[Record]:
        self.core.mutate_run(MutateRun(self.run_id, tuple(batch)), now=self.now)
        return self._drain()

    def cancel_run(self, reason: str = "user") -> RunState:
        got = self.core.cancel_run(CancelRun(self.run_id, reason), now=self.now)
        self._drain()
        return got

    def progress(self, a: Assignment, data: bytes = b"p") -> bool:
        got = self.core.report_progress(
            ReportProgress(a.run_id, a.node_id, a.attempt, a.lease, data), now=self.now
        )
        self._drain()
        return got


def replay(log: Sequence[tuple[float, Record]], *, now: float) -> Core:
    """A fresh core fed the logged decisions the way the runtime recovers (`Core.replay`, one
    decision at a time, each at the time it was made), then every lease expired."""
    core = Core(lease_epoch=2)
    for t, rec in log:
        core.replay(rec.run_id, rec.decision, now=t)
        assert core.take_outbox() == ([], [], []), "a replay logs nothing again"
    core.expire_all_leases(reason="restart", now=now)
    core.take_outbox()
    validate(core)
    return core


def node_facts(core: Core) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Everything about nodes that replay must reproduce."""
    return {
        (run_id, node_id): (
            n.state,
            n.attempt,
            n.failures,
            n.lease,
            tuple(n.deps),
            tuple(sorted(n.dependents)),
            n.result,
            n.error,
            n.not_before,
            n.depth,
            n.parent_id,
            n.open,
            n.answered,
        )
        for run_id, run in core.runs.items()
        for node_id, n in run.nodes.items()
    }


def transitions_of(records: Iterable[Record]) -> list[tuple[str, NodeState]]:
    return [t for r in records for t in r.transitions]


def kinds(records: Iterable[Record]) -> list[str]:
    return [r.kind for r in records]


@pytest.fixture
def drv() -> Driver:
    return Driver()


@pytest.fixture
def seen_transitions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[NodeState, NodeState]]:
    """Every (old, new) state change the graph makes while the test runs."""
    seen: list[tuple[NodeState, NodeState]] = []
    original = graph_module.Run.set_state

    def spy(self: Any, node: Any, new: NodeState) -> None:
        old = node.state
        original(self, node, new)
        seen.append((old, new))

    monkeypatch.setattr(graph_module.Run, "set_state", spy)
    return seen
