"""What the client returns: runs, nodes, events and workers as plain frozen values.

Enum values are the lower-case names the CLI prints ("succeeded"); being `StrEnum`s, they
compare equal to those strings. JSON payloads (results, progress data) arrive decoded.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "Node", "NodeState", "Run", "RunState", "RunSummary", "Transition", "Worker"]


class RunState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # The coordinator sent no state, or one this client does not know.
    UNSPECIFIED = "unspecified"

    @property
    def ended(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class NodeState(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    SPECULATIVE = "speculative"
    UNSPECIFIED = "unspecified"

    @property
    def ended(self) -> bool:
        return self in _ENDED_NODE_STATES


_ENDED_NODE_STATES = frozenset(
    {NodeState.SUCCEEDED, NodeState.FAILED, NodeState.CANCELLED, NodeState.SKIPPED}
)


@dataclass(frozen=True)
class Node:
    """One node of a run, as GetRun reports it."""

    id: str
    agent: str
    state: NodeState
    # Attempts dispatched so far.
    attempts: int
    # The decoded JSON result when the node succeeded (None when the result was left out).
    result: Any
    # The last error's message: the node failed, was cancelled or skipped, or an attempt failed.
    error: str | None
    # Its kind: "agent", "timeout", "lost_worker", "mutation_rejected", "unknown_agent", ...
    error_kind: str | None
    deps: tuple[str, ...]
    # The node whose agent added this one; None for submitted nodes.
    parent: str | None
    spawn_depth: int

    @property
    def ended(self) -> bool:
        return self.state.ended


@dataclass(frozen=True)
class RunSummary:
    """A run without its nodes (what ListRuns reports)."""

    id: str
    name: str | None
    state: RunState
    # Nodes per state, every state present (zeros included).
    counts: Mapping[NodeState, int]
    # Unix time, seconds.
    created_at: float
    ended_at: float | None
    # The last event's sequence number: `events(run_id, after=last_seq)` follows from here.
    last_seq: int

    @property
    def ended(self) -> bool:
        return self.state.ended


@dataclass(frozen=True)
class Run(RunSummary):
    """A run with all of its nodes, in the order they were added."""

    nodes: list[Node] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"run {self.id} has no node {node_id!r}")

    @property
    def results(self) -> dict[str, Any]:
        """The results of the nodes that succeeded, by node id."""
        return {n.id: n.result for n in self.nodes if n.state == NodeState.SUCCEEDED}


@dataclass(frozen=True)
class Transition:
    """A node changed state as a consequence of an event."""

    node_id: str
    state: NodeState


@dataclass(frozen=True, repr=False)
class Event:
    """One entry of a run's event log.

    `kind` names what happened, as the CLI's `events --json` does: "run_submitted",
    "node_dispatched", "attempt_finished", "attempt_lost", "attempt_timed_out", "progress",
    "run_cancelled", "mutations_applied", "run_ended", "node_failed" ("unknown" for a kind this
    client does not know). The typed fields below are set where the kind has them (None
    otherwise); `detail` holds the whole event in its JSON form, as `events --json` prints it.
    """

    seq: int
    run_id: str
    # Unix time, seconds.
    time: float
    kind: str
    # The node the event is about.
    node_id: str | None = None
    # run_ended: the run's final state; otherwise the state the event moved its node to.
    state: RunState | NodeState | None = None
    attempt: int | None = None
    # attempt_finished: "succeeded", "failed" or "cancelled".
    outcome: str | None = None
    # attempt_finished: the decoded result.
    result: Any = None
    error: str | None = None
    error_kind: str | None = None
    retryable: bool | None = None
    # progress: the decoded payload.
    data: Any = None
    # run_cancelled, attempt_lost: why.
    reason: str | None = None
    # node_dispatched: where it went.
    worker_name: str | None = None
    session_id: str | None = None
    # run_submitted: the run's name.
    name: str | None = None
    # attempt_finished, mutations_applied: the batch in the SDKs' JSON mutation form.
    mutations: tuple[dict[str, Any], ...] = ()
    # attempt_finished: why the coordinator rejected the mutations (which failed the attempt).
    rejection: str | None = None
    transitions: tuple[Transition, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def run_ended(self) -> bool:
        return self.kind == "run_ended"

    def __repr__(self) -> str:
        # Only what the event has: most of the typed fields belong to other kinds.
        shown = [f"seq={self.seq}", f"kind={self.kind!r}"]
        for name in _EVENT_OPTIONAL:
            value = getattr(self, name)
            if value is not None and value != ():
                shown.append(f"{name}={value!r}")
        return f"Event({', '.join(shown)})"


_EVENT_OPTIONAL = (
    "node_id",
    "state",
    "attempt",
    "outcome",
    "result",
    "error",
    "error_kind",
    "retryable",
    "data",
    "reason",
    "worker_name",
    "session_id",
    "name",
    "mutations",
    "rejection",
)


@dataclass(frozen=True)
class Worker:
    """A connected worker session."""

    session_id: str
    name: str
    language: str
    sdk_version: str
    agents: tuple[str, ...]
    labels: Mapping[str, str]
    slots: int
    in_flight: int
    draining: bool
    # Unix time, seconds.
    connected_at: float
    # Attempts it answered.
    completed: int
