"""Domain types of the core: node specs, states, mutations, errors.

These mirror `protos/hivegrid/v1/graph.proto` but belong to the core, which imports nothing
outside itself (the servicers convert). Values users pass around (inputs, results) stay opaque
JSON bytes: the core never parses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class NodeState(IntEnum):
    # Values equal the proto enum's, so conversion is a cast.
    PENDING = 1
    READY = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    CANCELLED = 6
    SKIPPED = 7
    SPECULATIVE = 8


TERMINAL = frozenset(
    {NodeState.SUCCEEDED, NodeState.FAILED, NodeState.CANCELLED, NodeState.SKIPPED}
)
NOT_STARTED = frozenset({NodeState.PENDING, NodeState.READY, NodeState.SPECULATIVE})


class RunState(IntEnum):
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4


class Outcome(IntEnum):
    SUCCEEDED = 1
    FAILED = 2
    CANCELLED = 3


class AckStatus(IntEnum):
    # Values equal the wire's AckStatus.
    COMMITTED = 1
    STALE = 2
    MUTATIONS_REJECTED = 3
    INVALID = 4
    # Committed as the failure it became: it broke one of the operator's limits.
    REFUSED = 5


class GraphError(ValueError):
    """A graph or a mutation batch that the core refuses; the message names the problem."""


class RunExists(GraphError):
    """`install_run`: a run with that id (or made by that request id) exists already."""


class InvariantError(AssertionError):
    """`validate(core)` found the core's state broken; the message names what."""


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.0

    def problem(self) -> str:
        """What is wrong with the policy, or ""."""
        if not 0.0 <= self.jitter <= 1.0:
            return f"retry.jitter must be between 0 and 1, got {self.jitter}"
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 0:
            return "retry backoffs and multiplier must not be negative"
        return ""


DEFAULT_RETRY = RetryPolicy()


@dataclass(slots=True)
class NodeSpec:
    id: str
    agent: str
    input: bytes = b""
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy = DEFAULT_RETRY
    timeout_s: float = 0.0
    priority: int = 0
    # Sorted (key, value) pairs, so equal requirements share one ready queue.
    labels: tuple[tuple[str, str], ...] = ()
    can_mutate: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    run_on_failure: bool = False


@dataclass(slots=True, frozen=True)
class NodeError:
    message: str
    retryable: bool = False
    # "agent", "timeout", "lost_worker", "mutation_rejected", "unknown_agent", "cancelled",
    # "skipped", "abandoned" (answered CANCELLED unasked), "too_large" (undeliverable assignment).
    kind: str = "agent"


@dataclass(slots=True, frozen=True)
class RunLimits:
    """A run's limits. In a submission, a field left 0 takes the core's default."""

    max_nodes: int = 1_000_000
    max_spawn_depth: int = 16


# A rejected batch fails its attempt with an error of this form; a log keeps the attempt as that
# plain failure, and the core recognises it (to give a resent answer the same ack).
REJECTED_PREFIX = "mutations rejected: "
REJECTED_KIND = "mutation_rejected"


def mutations_rejected(reason: str) -> NodeError:
    """The error an attempt fails with when its mutations are rejected (retryable: a later
    attempt may send a batch that fits)."""
    return NodeError(REJECTED_PREFIX + reason, True, REJECTED_KIND)


# --- mutations (graph.proto documents the semantics of each) -------------------------------


@dataclass(slots=True, frozen=True)
class AddNode:
    node: NodeSpec
    speculative: bool = False


@dataclass(slots=True, frozen=True)
class AddEdge:
    from_id: str
    to_id: str


@dataclass(slots=True, frozen=True)
class RemoveEdge:
    from_id: str
    to_id: str


@dataclass(slots=True, frozen=True)
class RemoveNode:
    id: str


@dataclass(slots=True, frozen=True)
class ModifyNode:
    id: str
    input: bytes | None = None
    priority: int | None = None
    retry: RetryPolicy | None = None
    timeout_s: float | None = None


@dataclass(slots=True, frozen=True)
class SplitNode:
    id: str
    replacements: tuple[NodeSpec, ...]


@dataclass(slots=True, frozen=True)
class InjectBefore:
    target_id: str
    node: NodeSpec


@dataclass(slots=True, frozen=True)
class PruneSubgraph:
    root_id: str


@dataclass(slots=True, frozen=True)
class MarkSpeculative:
    id: str


@dataclass(slots=True, frozen=True)
class ConfirmSpeculative:
    id: str


@dataclass(slots=True, frozen=True)
class DiscardSpeculative:
    id: str


@dataclass(slots=True, frozen=True)
class UnknownMutation:
    """A mutation the sender's side could not name: empty, or of a kind from a newer version.
    A batch holding one is rejected whole."""


Mutation = (
    AddNode
    | AddEdge
    | RemoveEdge
    | RemoveNode
    | ModifyNode
    | SplitNode
    | InjectBefore
    | PruneSubgraph
    | MarkSpeculative
    | ConfirmSpeculative
    | DiscardSpeculative
    | UnknownMutation
)
