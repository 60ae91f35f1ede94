"""A run's graph: nodes, edges, readiness counters and the node-state transition table.

Theory of operation. Every node keeps `waiting`, the number of its dependencies that are not yet
resolved (a dependency is resolved when it succeeded, or when it ended otherwise and this node
runs on failure). A node that has not started moves PENDING -> READY exactly when `waiting`
drops to 0, so readiness never needs a rescan. A dependency that ends without success makes the
waiting dependents SKIPPED (unless they run on failure), transitively.

Every state change goes through `Run.transition`, which checks it against `TRANSITIONS`, keeps
the per-state counts, and records the change for the run's event (watchers see it).
"""

from __future__ import annotations

from collections.abc import Callable

from .model import (
    NOT_STARTED,
    TERMINAL,
    NodeError,
    NodeSpec,
    NodeState,
    RunLimits,
    RunState,
)

P, RD, RN = NodeState.PENDING, NodeState.READY, NodeState.RUNNING
OK, FL, CX, SK, SP = (
    NodeState.SUCCEEDED,
    NodeState.FAILED,
    NodeState.CANCELLED,
    NodeState.SKIPPED,
    NodeState.SPECULATIVE,
)

SKIPPED_ERROR = NodeError("a dependency did not succeed", kind="skipped")

# Invariant: the only state changes there are. Reasons in comments.
TRANSITIONS: frozenset[tuple[NodeState, NodeState]] = frozenset(
    {
        (P, RD),  # last dependency resolved
        (P, SK),  # a dependency ended without success
        (P, CX),  # run cancelled / pruned
        (P, SP),  # mark_speculative
        (RD, P),  # add_edge / inject_before made it wait again
        (RD, RN),  # dispatched
        (RD, SK),  # add_edge from a failed node
        (RD, CX),  # run cancelled / pruned
        (RD, SP),  # mark_speculative
        (RD, OK),  # late answer of the current attempt after its worker was lost
        (RD, FL),  # likewise, failing for good
        (RN, RD),  # lost worker, or a retryable failure (waiting out the backoff)
        (RN, OK),
        (RN, FL),
        (RN, CX),  # run cancelled / pruned while running
        (SP, P),  # confirm_speculative, dependencies not done
        (SP, RD),  # confirm_speculative, dependencies done
        (SP, SK),  # discard_speculative, or a dependency ended without success
        (SP, CX),  # run cancelled / pruned
    }
)


class Node:
    __slots__ = (
        "answered",
        "attempt",
        "dependents",
        "deps",
        "depth",
        "error",
        "failures",
        "lease",
        "not_before",
        "open",
        "parent_id",
        "queued",
        "result",
        "run",
        "session_id",
        "spec",
        "state",
        "waiting",
    )

    def __init__(self, run: Run, spec: NodeSpec, *, parent_id: str = "", depth: int = 0) -> None:
        self.run = run
        self.spec = spec
        self.deps: list[str] = list(spec.depends_on)
        self.dependents: list[str] = []
        self.state = NodeState.PENDING
        self.waiting = 0
        # Dispatches so far; the attempt number of the latest one.
        self.attempt = 0
        # User-level failures (failed answers, timeouts, rejected mutations); a lost worker
        # is not one.
        self.failures = 0
        # Lease of the latest attempt: the only one whose answer is current. 0 = none yet.
        self.lease = 0
        # Whether the latest attempt may still be answered: from dispatch until it is answered,
        # fails or times out. A lost worker's attempt stays open while the node waits in READY,
        # so a reconnecting worker's result is still taken (docs/design.md).
        self.open = False
        # The ack the latest attempt's answer got (AckStatus.COMMITTED or MUTATIONS_REJECTED),
        # 0 while it has none: a resent answer gets the same ack again.
        self.answered = 0
        self.session_id = ""
        self.result = b""
        self.error: NodeError | None = None
        self.parent_id = parent_id
        self.depth = depth
        # Earliest time a retry may be dispatched.
        self.not_before = 0.0
        # Token of its live ready-queue entry (0: none). Stale entries are dropped when popped.
        self.queued = 0

    @property
    def id(self) -> str:
        return self.spec.id


class Run:
    __slots__ = (
        "cancelled",
        "counts",
        "created_at",
        "ended_at",
        "entries",
        "failed",
        "last_seq",
        "limits",
        "name",
        "nodes",
        "on_ready",
        "request_id",
        "rng_state",
        "run_id",
        "state",
        "transitions",
        "unfinished",
    )

    def __init__(
        self,
        run_id: str,
        *,
        name: str,
        limits: RunLimits,
        seed: int,
        created_at: float,
        on_ready: Callable[[Node], None],
        request_id: str = "",
    ) -> None:
        self.run_id = run_id
        self.request_id = request_id
        self.name = name
        self.limits = limits
        self.nodes: dict[str, Node] = {}
        self.state = RunState.RUNNING
        self.counts = dict.fromkeys(NodeState, 0)
        # Nodes not in a terminal state; the run ends when this reaches 0.
        self.unfinished = 0
        self.failed = False
        self.cancelled = False
        self.created_at = created_at
        self.ended_at = 0.0
        self.last_seq = 0
        # Ready-queue entries and timers of the core that hold one of its nodes (live or not):
        # what deleting the run leaves behind for the core to sweep.
        self.entries = 0
        # State of the run's jitter source (a 64-bit LCG): replay draws the same numbers.
        self.rng_state = seed & 0xFFFFFFFFFFFFFFFF
        # Changes since the runtime last took them: they go into the event being logged.
        self.transitions: list[tuple[str, NodeState]] = []
        self.on_ready = on_ready

    # --- state changes ------------------------------------------------------------------

    def add(self, node: Node, state: NodeState) -> None:
        """Adds a node (its edges already set) in `state`: PENDING or SPECULATIVE, or READY for
        a submitted node without dependencies."""
        self.nodes[node.id] = node
        node.state = state
        self.counts[state] += 1
        self.unfinished += 1
        self.transitions.append((node.id, state))

    def discard(self, node: Node) -> None:
        """Takes a not-started node out of the graph (remove_node, split_node)."""
        del self.nodes[node.id]
        self.counts[node.state] -= 1
        self.unfinished -= 1
        node.queued = 0

    def transition(self, node: Node, new: NodeState) -> None:
        self.set_state(node, new)
        if new is NodeState.SUCCEEDED:
            self._resolve_dependents(node)
        elif new in TERMINAL:
            self._propagate_failure(node)
        elif new is NodeState.READY:
            self.on_ready(node)

    def set_state(self, node: Node, new: NodeState) -> None:
        """The table-checked state change alone, without what `transition` sets off (readiness
        of dependents, failure propagation, queueing): for callers that handle those
        themselves, such as a prune that cancels a whole downstream set at once."""
        old = node.state
        if (old, new) not in TRANSITIONS:
            raise AssertionError(f"illegal transition of {node.id}: {old.name} -> {new.name}")
        node.state = new
        counts = self.counts
        counts[old] -= 1
        counts[new] += 1
        self.transitions.append((node.id, new))
        if new in TERMINAL:
            self.unfinished -= 1
            if new is NodeState.FAILED:
                self.failed = True

    def refresh(self, node: Node) -> None:
        """Recomputes `waiting` of a not-started node after its edges changed, and moves it
        between PENDING, READY and SKIPPED accordingly."""
        waiting = 0
        doomed = False
        nodes = self.nodes
        for dep_id in node.deps:
            dep = nodes[dep_id]
            if dep.state is NodeState.SUCCEEDED:
                continue
            if dep.state in TERMINAL:
                if node.spec.run_on_failure:
                    continue
                doomed = True
            waiting += 1
        node.waiting = waiting
        if node.state is NodeState.SPECULATIVE:
            if doomed:
                self._skip(node)
            return
        if doomed:
            self._skip(node)
        elif waiting == 0 and node.state is NodeState.PENDING:
            self.transition(node, NodeState.READY)
        elif waiting > 0 and node.state is NodeState.READY:
            node.queued = 0
            self.transition(node, NodeState.PENDING)

    def release(self, node: Node) -> None:
        """Leaves SPECULATIVE for PENDING or READY."""
        self.transition(node, NodeState.READY if node.waiting == 0 else NodeState.PENDING)

    def _resolve_dependents(self, node: Node) -> None:
        nodes = self.nodes
        for dep_id in node.dependents:
            child = nodes[dep_id]
            child.waiting -= 1
            if child.waiting == 0 and child.state is NodeState.PENDING:
                self.transition(child, NodeState.READY)

    def _propagate_failure(self, node: Node) -> None:
        # Iterative: a failure at the head of a long chain must not exhaust the Python stack.
        nodes = self.nodes
        stack = [node]
        while stack:
            for dep_id in stack.pop().dependents:
                child = nodes[dep_id]
                if child.state not in NOT_STARTED:
                    continue
                if child.spec.run_on_failure:
                    child.waiting -= 1
                    if child.waiting == 0 and child.state is NodeState.PENDING:
                        self.transition(child, NodeState.READY)
                else:
                    self._mark_skipped(child)
                    stack.append(child)

    def _skip(self, node: Node) -> None:
        self._mark_skipped(node)
        self._propagate_failure(node)

    def _mark_skipped(self, node: Node) -> None:
        node.queued = 0
        node.error = SKIPPED_ERROR
        self.set_state(node, NodeState.SKIPPED)

    # --- jitter --------------------------------------------------------------------------

    def random(self) -> float:
        """A number in [0, 1) from the run's own deterministic source."""
        self.rng_state = (self.rng_state * 6364136223846793005 + 1442695040888963407) & (
            0xFFFFFFFFFFFFFFFF
        )
        return (self.rng_state >> 11) / float(1 << 53)

    def end_state(self) -> RunState:
        if self.cancelled:
            return RunState.CANCELLED
        return RunState.FAILED if self.failed else RunState.SUCCEEDED
