"""What goes into the core and what it logs: typed, frozen events.

Inputs are the stimuli that carry data from outside (`SubmitRun`, `Answer`, `CancelRun`,
`MutateRun`, `ReportProgress`, `OpenSession`), already in the core's terms: the service layer
decodes the wire into them, and the core decides everything about them from there (an answer
without a ref, a mutation of a kind nobody knows, a node without an id).

Decisions (`RunSubmitted` ... `RunEnded`) are what the core leaves in its outbox for the run's
log, each in a `Record` with the node transitions it caused. A decision holds what was decided,
not what was asked: an answer whose mutations were rejected is logged as the failure it became.
`Core.replay` is the one place where a logged decision turns back into state: recovery and the
tests' replays both go through it.

Every class is a frozen dataclass with slots: events are values, shared between the core, the log
codec and the watchers without copies, and never changed once made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from .model import Mutation, NodeError, NodeSpec, RunLimits, RunState


@dataclass(slots=True, frozen=True)
class AttemptRef:
    """One attempt of one node, as a worker names it (an assignment's ref, a held ref)."""

    run_id: str
    node_id: str
    attempt: int
    lease: int


# --- inputs ------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class SubmitRun:
    """A new run. A node without an id gets `n<position>` (1-based); `limits` None takes the
    core's defaults."""

    run_id: str
    specs: tuple[NodeSpec, ...]
    limits: RunLimits | None = None
    name: str = ""
    seed: int = 0
    request_id: str = ""


@dataclass(slots=True, frozen=True)
class Answer:
    """A worker's answer to an attempt.

    `outcome` is an `Outcome` value, or whatever else the worker sent: the core answers an
    outcome it does not know, or a ref without a run or a lease, as invalid. `result` matters for
    SUCCEEDED only, `error` for FAILED only (None: the core supplies one), `mutations` for
    SUCCEEDED only. `refused` is set by the door when the answer broke one of the operator's
    limits: it then comes as the FAILED answer it became, and is acked REFUSED with this
    message."""

    run_id: str
    node_id: str
    attempt: int
    lease: int
    outcome: int
    result: bytes = b""
    error: NodeError | None = None
    mutations: tuple[Mutation, ...] = ()
    refused: str = ""


@dataclass(slots=True, frozen=True)
class CancelRun:
    run_id: str
    reason: str


@dataclass(slots=True, frozen=True)
class MutateRun:
    """A client's mutation batch: all of it applies, or none."""

    run_id: str
    mutations: tuple[Mutation, ...]


@dataclass(slots=True, frozen=True)
class ReportProgress:
    run_id: str
    node_id: str
    attempt: int
    lease: int
    data: bytes


@dataclass(slots=True, frozen=True)
class OpenSession:
    """A worker stream that registered. `held`: attempts it says it still runs (reconnecting)."""

    session_id: str
    worker_name: str
    agents: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    slots: int = 1
    held: tuple[AttemptRef, ...] = ()


# --- decisions (what the log records) ----------------------------------------------------
#
# `kind` names each in messages and in tests; the log codec (coordinator/records.py) has its own
# numbering and never reads it.


@dataclass(slots=True, frozen=True)
class RunSubmitted:
    """The run as submitted (node ids as given: the core fills in the missing ones again on
    replay), with the limits it got and the seed of its jitter source."""

    kind: ClassVar[str] = "submitted"
    specs: tuple[NodeSpec, ...]
    limits: RunLimits
    name: str = ""
    seed: int = 0
    request_id: str = ""


@dataclass(slots=True, frozen=True)
class NodeDispatched:
    kind: ClassVar[str] = "dispatched"
    node_id: str
    attempt: int
    lease: int
    session_id: str = ""
    worker_name: str = ""


@dataclass(slots=True, frozen=True)
class AttemptFinished:
    """The answer as the core took it. When the core rejected the answer's mutations,
    `answer` is the failure that became of it (no result, no mutations, the rejection as its
    error) and `rejection` says why; a replay takes the same path either way."""

    kind: ClassVar[str] = "finished"
    answer: Answer
    rejection: str = ""


@dataclass(slots=True, frozen=True)
class AttemptLost:
    """The worker holding the attempt went away; the attempt does not count as a failure."""

    kind: ClassVar[str] = "lost"
    node_id: str
    attempt: int
    lease: int
    reason: str = ""


@dataclass(slots=True, frozen=True)
class AttemptTimedOut:
    kind: ClassVar[str] = "timed_out"
    node_id: str
    attempt: int
    lease: int


@dataclass(slots=True, frozen=True)
class ProgressReported:
    kind: ClassVar[str] = "progress"
    node_id: str
    attempt: int
    data: bytes


@dataclass(slots=True, frozen=True)
class RunCancelled:
    kind: ClassVar[str] = "cancelled"
    reason: str = ""


@dataclass(slots=True, frozen=True)
class MutationsApplied:
    """A client's batch, applied whole."""

    kind: ClassVar[str] = "mutated"
    mutations: tuple[Mutation, ...]


@dataclass(slots=True, frozen=True)
class NodeFailed:
    """A READY node failed without running (its assignment would be too large to deliver)."""

    kind: ClassVar[str] = "node_failed"
    node_id: str
    error: NodeError


@dataclass(slots=True, frozen=True)
class RunEnded:
    """Follows the decision that finished the run's last node. Replay recomputes it."""

    kind: ClassVar[str] = "ended"
    state: RunState


Decision = (
    RunSubmitted
    | NodeDispatched
    | AttemptFinished
    | AttemptLost
    | AttemptTimedOut
    | ProgressReported
    | RunCancelled
    | MutationsApplied
    | NodeFailed
    | RunEnded
)

__all__ = [
    "Answer",
    "AttemptFinished",
    "AttemptLost",
    "AttemptRef",
    "AttemptTimedOut",
    "CancelRun",
    "Decision",
    "MutateRun",
    "MutationsApplied",
    "NodeDispatched",
    "NodeFailed",
    "OpenSession",
    "ProgressReported",
    "ReportProgress",
    "RunCancelled",
    "RunEnded",
    "RunSubmitted",
    "SubmitRun",
]
