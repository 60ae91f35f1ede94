"""The core: every run's graph, the worker sessions, the ready queues, the timers.

Theory of operation. The runtime feeds stimuli in order, one call each (`submit_run`,
`finish_attempt`, `open_session`, `advance`, ...), the data of each a typed input of `events.py`,
with the current time and any ids inside the call: the core never reads a clock, makes
randomness of its own, or does I/O. Each call updates the state and leaves its consequences in
the outbox:

- `records`: what must be appended to the run's log, in order: a `Record` per decision (the
  dataclasses of `events.py`), each with the node transitions it caused. A stimulus that changes
  nothing (a stale result) leaves no record.
- `assignments` and `cancels`: what to push to which session. An `Assignment` carries all that
  travels with it, the dependency results included, so nobody else needs to know which do.

Fencing. An attempt belongs to the session it was dispatched to: only that session's answer
counts while the node runs, and a held ref in a Hello reclaims an attempt only when its session is
gone. Leases come from `new_lease` (random, in production), so they cannot be guessed. An answer
resent after it was accepted gets the ack the first one got (`Node.answered`).

`dispatch()` hands ready nodes to sessions with free slots, never more than a session granted.
`replay(run_id, decision)` re-applies one logged decision through the same methods (a logged
dispatch is taken as made, not made again), so the state after replay is the state before the
crash; it is the only way from a log back to state.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

from . import mutations as mutation_batch
from .events import (
    Answer,
    AttemptFinished,
    AttemptLost,
    AttemptRef,
    AttemptTimedOut,
    CancelRun,
    Decision,
    MutateRun,
    MutationsApplied,
    NodeDispatched,
    NodeFailed,
    OpenSession,
    ProgressReported,
    ReportProgress,
    RunCancelled,
    RunEnded,
    RunSubmitted,
    SubmitRun,
)
from .graph import Node, Run
from .model import (
    NOT_STARTED,
    REJECTED_KIND,
    REJECTED_PREFIX,
    TERMINAL,
    AckStatus,
    GraphError,
    Mutation,
    NodeError,
    NodeSpec,
    NodeState,
    Outcome,
    RunExists,
    RunLimits,
    RunState,
    mutations_rejected,
)

QueueKey = tuple[str, tuple[tuple[str, str], ...]]

CANCELLED_ERROR = NodeError("run cancelled", kind="cancelled")
ABANDONED_ERROR = NodeError(
    "the worker gave the attempt up without being asked to (answered CANCELLED)",
    True,
    "abandoned",
)
TIMEOUT_KIND = "timeout"
COMMITTED, MUTATIONS_REJECTED = int(AckStatus.COMMITTED), int(AckStatus.MUTATIONS_REJECTED)
_OUTCOMES = frozenset(int(o) for o in Outcome)
FAILED_WITHOUT_ERROR = NodeError("failed without an error", True, "agent")
INVALID_MESSAGE = "a result needs a ref and an outcome (1, 2 or 3)"


class Record:
    """One entry for a run's log: a decision, and the node transitions it caused (for
    watchers; replay recomputes them). Made by the core only."""

    __slots__ = ("decision", "run_id", "transitions")

    def __init__(self, run: Run, decision: Decision) -> None:
        self.run_id = run.run_id
        self.decision = decision
        self.transitions = run.transitions
        run.transitions = []

    @property
    def kind(self) -> str:
        return self.decision.kind


class RestoredNode(NamedTuple):
    spec: NodeSpec
    state: NodeState
    attempt: int
    failures: int
    lease: int
    result: bytes
    error: NodeError | None
    parent_id: str
    depth: int
    not_before: float
    open: bool
    answered: int = 0


class ReadyQueue:
    """Ready nodes of one (agent, labels) key: highest priority first, FIFO within a priority.
    A FIFO lane per priority makes push and pop O(1) for the usual single priority (a heap cost
    a third of a 100,000-node submission). Entries are dropped lazily: a popped entry whose token
    is no longer the node's is stale."""

    __slots__ = ("lanes", "priorities", "size")

    def __init__(self) -> None:
        self.lanes: dict[int, deque[tuple[int, Node]]] = {}
        # Priorities with a lane, highest first.
        self.priorities: list[int] = []
        self.size = 0

    def push(self, priority: int, token: int, node: Node) -> None:
        lane = self.lanes.get(priority)
        if lane is None:
            lane = self.lanes[priority] = deque()
            bisect.insort(self.priorities, priority, key=lambda p: -p)
        lane.append((token, node))
        self.size += 1

    def pop(self) -> tuple[int, Node]:
        while True:
            top = self.priorities[0]
            lane = self.lanes[top]
            if lane:
                self.size -= 1
                return lane.popleft()
            del self.lanes[top]
            self.priorities.pop(0)


class Session:
    __slots__ = (
        "agents",
        "completed",
        "draining",
        "id",
        "in_flight",
        "labels",
        "queue_keys",
        "slots",
        "worker_name",
    )

    def __init__(
        self,
        session_id: str,
        worker_name: str,
        agents: Iterable[str],
        labels: Mapping[str, str],
        slots: int,
    ) -> None:
        self.id = session_id
        self.worker_name = worker_name
        self.agents = frozenset(agents)
        self.labels = dict(labels)
        self.slots = slots
        # Invariant: unanswered assignments, by lease; never more than `slots`.
        self.in_flight: dict[int, Node] = {}
        self.draining = False
        self.completed = 0
        self.queue_keys: list[QueueKey] = []

    def matches(self, key: QueueKey) -> bool:
        agent, labels = key
        return agent in self.agents and all(self.labels.get(k) == v for k, v in labels)


class Assignment:
    """An attempt to push to a session, with everything that travels with it: the node's spec
    (agent, input, timeout, metadata, whether it may mutate) and the results of the
    dependencies that succeeded, in dependency order. Not logged (its NodeDispatched is)."""

    __slots__ = ("attempt", "deps", "lease", "node_id", "run_id", "session_id", "spec")

    def __init__(
        self,
        session_id: str,
        run_id: str,
        spec: NodeSpec,
        attempt: int,
        lease: int,
        deps: list[tuple[str, bytes]],
    ) -> None:
        self.session_id = session_id
        self.run_id = run_id
        self.node_id = spec.id
        self.spec = spec
        self.attempt = attempt
        self.lease = lease
        self.deps = deps


class CancelOrder:
    __slots__ = ("attempt", "lease", "node_id", "reason", "run_id", "session_id")

    def __init__(self, session_id: str, node: Node, reason: str) -> None:
        self.session_id = session_id
        self.run_id = node.run.run_id
        self.node_id = node.id
        self.attempt = node.attempt
        self.lease = node.lease
        self.reason = reason


class PreparedRun(NamedTuple):
    """A run built by `Core.prepare_run`, not yet live; `submitted` is what its log begins
    with."""

    run: Run
    ready: list[Node]
    submitted: RunSubmitted


class Core:
    def __init__(
        self,
        *,
        lease_epoch: int,
        default_limits: RunLimits | None = None,
        new_lease: Callable[[], int] | None = None,
        max_assignment_bytes: int = 0,
    ) -> None:
        """`new_lease`, if given, is where every dispatch draws its lease (the runtime passes
        random 64-bit numbers, so that a lease cannot be guessed); without it leases count up
        from `lease_epoch << 32` (the epoch is bumped at every start, so they are unique across
        restarts). `max_assignment_bytes` > 0: a node whose assignment would be larger
        (`assignment_bytes`) is failed instead of dispatched, since it could never be
        delivered."""
        self.runs: dict[str, Run] = {}
        self.sessions: dict[str, Session] = {}
        self.default_limits = default_limits or RunLimits()
        self._lease_ids = itertools.count((lease_epoch << 32) + 1)
        self._new_lease = new_lease
        self.max_assignment_bytes = max_assignment_bytes
        # request id -> the run it created (while that run exists).
        self._requests: dict[str, str] = {}
        # Queue entries and timers still holding nodes of deleted runs (swept in bulk).
        self._garbage = 0
        self._queues: dict[QueueKey, ReadyQueue] = {}
        self._queued = 0
        self._order = itertools.count(1)
        self._timers: list[tuple[float, int, str, Node, int]] = []
        self._hungry: set[str] = set()
        self.now = 0.0
        self.records: list[Record] = []
        self.assignments: list[Assignment] = []
        self.cancels: list[CancelOrder] = []

    # --- runs ----------------------------------------------------------------------------

    def submit_run(self, cmd: SubmitRun, *, now: float, checked: bool = False) -> Run:
        """Starts a run; raises GraphError (creating nothing) if the graph is malformed, and
        RunExists if the run id, or the request id, is taken.

        `checked=True` skips the graph checks, for a replay of a graph that passed them when
        it was submitted."""
        return self.install_run(self.prepare_run(cmd, now=now, checked=checked), now=now)

    def prepare_run(self, cmd: SubmitRun, *, now: float, checked: bool = False) -> PreparedRun:
        """The expensive half of `submit_run`: checks the graph and builds the run without
        touching the core, so a caller may do it off its event loop. Raises GraphError."""
        run_id, name, seed, request_id = cmd.run_id, cmd.name, cmd.seed, cmd.request_id
        specs = _with_default_ids(cmd.specs)
        limits = _resolve(cmd.limits, self.default_limits)
        if not checked:
            _check_graph(specs, limits)
        run = Run(
            run_id,
            name=name,
            limits=limits,
            seed=seed,
            created_at=now,
            on_ready=self._on_ready,
            request_id=request_id,
        )
        nodes: dict[str, Node] = {}
        for spec in specs:
            node = nodes[spec.id] = Node(run, spec)
            node.waiting = len(node.deps)
        ready: list[Node] = []
        pending, ready_state = NodeState.PENDING, NodeState.READY
        for node in nodes.values():
            if node.waiting:
                run.add(node, pending)
                for dep in node.deps:
                    nodes[dep].dependents.append(node.id)
            else:
                # Straight to READY: the PENDING -> READY step would be implied anyway, and
                # skipping it saves a third of a large submission.
                run.add(node, ready_state)
                ready.append(node)
        # A submission's transitions are implied (PENDING, READY without dependencies): keeping
        # them would make the first event as large as the graph twice over.
        run.transitions.clear()
        submitted = RunSubmitted(cmd.specs, limits, name, seed, request_id)
        return PreparedRun(run, ready, submitted)

    def install_run(self, prepared: PreparedRun, *, now: float) -> Run:
        """The cheap half of `submit_run`: makes a prepared run live and queues its ready
        nodes. Raises RunExists if a run with its id exists by now, or if its request id made a
        run that still exists: ask `run_for_request` which."""
        self.now = now
        run = prepared.run
        if run.run_id in self.runs:
            raise RunExists(f"run {run.run_id!r} already exists")
        request_id = run.request_id
        if request_id:
            existing = self.run_for_request(request_id)
            if existing is not None:
                raise RunExists(f"request {request_id!r} already made run {existing!r}")
            self._requests[request_id] = run.run_id
        self.runs[run.run_id] = run
        on_ready = self._on_ready
        for node in prepared.ready:
            on_ready(node)
        self._settle(run, prepared.submitted)
        return run

    def restore_run(
        self,
        run_id: str,
        *,
        name: str,
        limits: RunLimits,
        created_at: float,
        ended_at: float,
        last_seq: int,
        rng_state: int,
        cancelled: bool,
        failed: bool,
        nodes: Sequence[RestoredNode],
        now: float,
        request_id: str = "",
    ) -> Run:
        """Rebuilds a run from a snapshot (nodes as they were, with their current edges)."""
        self.now = now
        run = Run(
            run_id,
            name=name,
            limits=limits,
            seed=0,
            created_at=created_at,
            on_ready=self._on_ready,
            request_id=request_id,
        )
        run.rng_state, run.cancelled, run.failed = rng_state, cancelled, failed
        run.ended_at, run.last_seq = ended_at, last_seq
        table = run.nodes
        for r in nodes:
            node = Node(run, r.spec, parent_id=r.parent_id, depth=r.depth)
            node.state, node.attempt, node.failures, node.lease = (
                r.state,
                r.attempt,
                r.failures,
                r.lease,
            )
            node.result, node.error, node.not_before = r.result, r.error, r.not_before
            node.open, node.answered = r.open, r.answered
            table[node.id] = node
            run.counts[node.state] += 1
            if node.state not in TERMINAL:
                run.unfinished += 1
        for node in table.values():
            for dep in node.deps:
                table[dep].dependents.append(node.id)
        for node in table.values():
            if node.state in NOT_STARTED:
                node.waiting = sum(1 for d in node.deps if table[d].state not in TERMINAL)
        if run.unfinished == 0:
            run.state = run.end_state()
        self.runs[run_id] = run
        if request_id:
            self._requests[request_id] = run_id
        for node in table.values():
            if node.state is NodeState.READY:
                self._on_ready(node)
        return run

    def delete_run(self, run_id: str) -> None:
        """Forgets an ended run (retention, or a client's DeleteRun); nothing is logged.
        Raises KeyError if there is no such run, GraphError while it is running."""
        run = self._run(run_id)
        if run.state is RunState.RUNNING:
            raise GraphError(f"run {run_id!r} is still running; cancel it first")
        del self.runs[run_id]
        if run.request_id and self._requests.get(run.request_id) == run_id:
            del self._requests[run.request_id]
        # Every node has ended, so no queue entry or timer of the run can fire (they check
        # the node's state); what is left of them is swept once it makes up half of all.
        if run.entries:
            self._garbage += run.entries
            if 2 * self._garbage >= len(self._timers) + self._queued:
                self._sweep()

    def run_for_request(self, request_id: str) -> str | None:
        """The id of the run that request id made, while that run exists."""
        if not request_id:
            return None
        run_id = self._requests.get(request_id)
        return run_id if run_id is not None and run_id in self.runs else None

    def cancel_run(self, cmd: CancelRun, *, now: float) -> RunState:
        """Cancels a running run (its running attempts are told); an ended run stays as it
        ended. Raises KeyError for an unknown run."""
        self.now = now
        run = self._run(cmd.run_id)
        if run.state is not RunState.RUNNING:
            return run.state
        run.cancelled = True
        for node in run.nodes.values():
            if node.state in TERMINAL:
                continue
            if node.state is NodeState.RUNNING:
                self._cancel_on_worker(node, "run_cancelled")
            node.queued = 0
            node.error = CANCELLED_ERROR
            run.set_state(node, NodeState.CANCELLED)
        self._settle(run, RunCancelled(cmd.reason))
        return run.state

    def mutate_run(self, cmd: MutateRun, *, now: float) -> None:
        """A client's batch; raises GraphError (changing nothing) if it is invalid, KeyError
        for an unknown run."""
        self.now = now
        run = self._run(cmd.run_id)
        if run.state is not RunState.RUNNING:
            raise GraphError(f"run {cmd.run_id!r} has ended ({run.state.name})")
        self._apply_mutations(run, cmd.mutations, None)
        self._settle(run, MutationsApplied(cmd.mutations))

    # --- attempts ------------------------------------------------------------------------

    def finish_attempt(
        self, session_id: str, answer: Answer, *, now: float
    ) -> tuple[AckStatus, str]:
        """A worker's answer to an assignment. Returns the ack to send once it is durable.

        An answer without a run or a lease, or with an outcome that is none of the three, is
        INVALID and changes nothing. Fencing: the answer counts only if it names the node's
        current attempt (run, node, attempt and lease) and, while the node runs, comes from the
        session running it. A READY node's open attempt (its worker was lost) may be answered
        from anywhere (docs/design.md). An answer resent after it was accepted gets the same ack
        again. A stale answer changes nothing, except that it frees the session's slot if it is
        the session's own entry for exactly that attempt (a cancelled or timed-out attempt)."""
        if not answer.run_id or not answer.lease or answer.outcome not in _OUTCOMES:
            return AckStatus.INVALID, INVALID_MESSAGE
        self.now = now
        refused = answer.refused
        if refused:
            # Its error says it already; the log keeps the failure, not the door's verdict.
            answer = replace(answer, refused="")
        status, message = self._finish(session_id, answer)
        if refused and status is AckStatus.COMMITTED:
            return AckStatus.REFUSED, refused
        return status, message

    def _finish(self, session_id: str, answer: Answer) -> tuple[AckStatus, str]:
        run_id, node_id, attempt, lease = (
            answer.run_id,
            answer.node_id,
            answer.attempt,
            answer.lease,
        )
        outcome = answer.outcome
        session = self.sessions.get(session_id)
        if session is not None:
            held = session.in_flight.get(lease)
            # Only the entry of exactly the attempt named: a ref with the right lease and a
            # wrong node must not free a running attempt's bookkeeping.
            if (
                held is not None
                and held.spec.id == node_id
                and held.run.run_id == run_id
                and (held.attempt == attempt or held.lease != lease)
            ):
                del session.in_flight[lease]
                session.completed += 1
                if not session.draining:
                    self._hungry.add(session_id)
        run = self.runs.get(run_id)
        node = run.nodes.get(node_id) if run is not None else None
        if node is None or node.lease != lease or node.attempt != attempt:
            return AckStatus.STALE, "the attempt is no longer current"
        state = node.state
        if not node.open:
            if node.answered:
                return self._answered_again(node)
            return AckStatus.STALE, "the attempt is no longer current"
        if state is NodeState.RUNNING:
            if node.session_id != session_id:
                return AckStatus.STALE, "the attempt belongs to another session"
        elif state is NodeState.CANCELLED:
            # The worker acknowledges the cancel (logged, so the attempt closes in replay too);
            # any other answer is stale and, like every stale answer, changes nothing.
            if outcome == Outcome.CANCELLED and node.run.state is RunState.RUNNING:
                node.open = False
                node.answered = COMMITTED
                self._settle(node.run, AttemptFinished(answer))
                return AckStatus.COMMITTED, ""
            return AckStatus.STALE, "the node was cancelled"
        elif state is not NodeState.READY:
            return AckStatus.STALE, "the attempt is no longer current"
        run = node.run
        node.open = False
        node.answered = COMMITTED
        if outcome == Outcome.CANCELLED:
            if state is NodeState.RUNNING:
                # Nobody asked (a cancelled, pruned or timed-out attempt is answered above):
                # giving an attempt up costs one, or a worker could retry a node forever.
                self._fail(node, ABANDONED_ERROR)
            # A READY node (its worker was lost) is queued already: the attempt just closes.
            self._settle(run, AttemptFinished(answer))
            return AckStatus.COMMITTED, ""
        node.queued = 0
        status, rejection = AckStatus.COMMITTED, ""
        if outcome == Outcome.SUCCEEDED:
            try:
                if answer.mutations:
                    self._apply_mutations(run, answer.mutations, node)
            except GraphError as exc:
                rejection = str(exc)
                status = AckStatus.MUTATIONS_REJECTED
                node.answered = MUTATIONS_REJECTED
                error = mutations_rejected(rejection)
                self._fail(node, error)
                # Logged as the failure it became: the batch is not kept, so a replay never
                # judges it again.
                answer = replace(
                    answer, outcome=Outcome.FAILED, result=b"", error=error, mutations=()
                )
            else:
                node.result = answer.result
                node.error = None
                run.transition(node, NodeState.SUCCEEDED)
        else:
            failure = answer.error or FAILED_WITHOUT_ERROR
            if failure.kind == REJECTED_KIND and failure.message.startswith(REJECTED_PREFIX):
                # A rejected batch as the log keeps it (a plain failure): the same ack.
                rejection = failure.message[len(REJECTED_PREFIX) :]
                status = AckStatus.MUTATIONS_REJECTED
                node.answered = MUTATIONS_REJECTED
            self._fail(node, failure)
        self._settle(run, AttemptFinished(answer, rejection))
        return status, rejection

    def _answered_again(self, node: Node) -> tuple[AckStatus, str]:
        """The ack a resent answer gets: the one the first got."""
        if node.answered == MUTATIONS_REJECTED:
            error = node.error
            if error is not None and error.message.startswith(REJECTED_PREFIX):
                return AckStatus.MUTATIONS_REJECTED, error.message[len(REJECTED_PREFIX) :]
            return AckStatus.MUTATIONS_REJECTED, "the mutations were rejected"
        return AckStatus(node.answered), ""

    def report_progress(self, progress: ReportProgress, *, now: float) -> bool:
        """Logged if it names the running attempt; says whether it did."""
        self.now = now
        node = self._current(progress.run_id, progress.node_id, progress.attempt, progress.lease)
        if node is None or node.state is not NodeState.RUNNING:
            return False
        self.records.append(
            Record(node.run, ProgressReported(node.id, node.attempt, progress.data))
        )
        return True

    # --- sessions ------------------------------------------------------------------------

    def open_session(self, cmd: OpenSession, *, now: float) -> list[AttemptRef]:
        """Registers a session. Of the refs the worker says it still holds, keeps (and returns)
        those whose attempt is still current and whose session is gone (a READY node whose
        attempt is still open, or a RUNNING node of no live session); they occupy slots on the
        new session. An attempt another live session runs stays there."""
        self.now = now
        session_id, worker_name, slots = cmd.session_id, cmd.worker_name, cmd.slots
        session = Session(session_id, worker_name, cmd.agents, cmd.labels, slots)
        session.queue_keys = [k for k in self._queues if session.matches(k)]
        self.sessions[session_id] = session
        kept = []
        in_flight = session.in_flight
        for ref in cmd.held:
            lease = ref.lease
            node = self._current(ref.run_id, ref.node_id, ref.attempt, lease)
            if node is None or len(in_flight) >= slots or lease in in_flight:
                continue
            if node.state is NodeState.RUNNING:
                if node.session_id in self.sessions:
                    continue  # another live session runs it (or this one holds it already)
            elif node.state is NodeState.READY:
                node.queued = 0
                node.run.set_state(node, NodeState.RUNNING)
            else:
                continue
            node.session_id = session_id
            session.in_flight[lease] = node
            self._arm_timeout(node)
            self.records.append(
                Record(
                    node.run,
                    NodeDispatched(node.id, node.attempt, lease, session_id, worker_name),
                )
            )
            kept.append(ref)
        self._hungry.add(session_id)
        return kept

    def drain_session(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        session.draining = True
        self._hungry.discard(session_id)
        return True

    def close_session(self, session_id: str, *, reason: str, now: float) -> None:
        """The stream ended or went silent: what it held goes back to READY at no retry cost."""
        self.now = now
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        self._hungry.discard(session_id)
        for lease, node in session.in_flight.items():
            if (
                node.state is NodeState.RUNNING
                and node.lease == lease
                and node.session_id == session_id
            ):
                self._requeue(node)
                self._settle(node.run, AttemptLost(node.id, node.attempt, lease, reason))

    def _lose_attempt(self, run_id: str, node_id: str, lease: int, reason: str) -> None:
        """One attempt's worker is gone (replaying a logged loss: no session exists)."""
        node = self._run(run_id).nodes.get(node_id)
        if node is None or node.lease != lease or node.state is not NodeState.RUNNING:
            return
        self._requeue(node)
        self._settle(node.run, AttemptLost(node.id, node.attempt, lease, reason))

    # --- time ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def advance(self, now: float) -> None:
        """Fires the timers that are due: retry backoffs end, attempts time out."""
        self.now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, node, token = heapq.heappop(timers)
            node.run.entries -= 1
            if kind == "backoff":
                if node.state is NodeState.READY and node.queued == 0 and node.lease == token:
                    self._enqueue(node)
            elif node.state is NodeState.RUNNING and node.lease == token:
                self._time_out(node)

    def _time_out(self, node: Node) -> None:
        attempt, lease = node.attempt, node.lease
        node.open = False
        self._cancel_on_worker(node, "timeout")
        self._fail(
            node, NodeError(f"timed out after {node.spec.timeout_s:g} s", True, TIMEOUT_KIND)
        )
        self._settle(node.run, AttemptTimedOut(node.id, attempt, lease))

    # --- assignments ---------------------------------------------------------------------

    def assignment_deps(self, node: Node) -> list[tuple[str, bytes]]:
        """What travels with the node's assignment: the results of its dependencies that
        succeeded, in dependency order (a dependency that ended otherwise, for a node that runs
        on failure, sends nothing)."""
        deps = node.deps
        if not deps:
            return []
        nodes = node.run.nodes
        succeeded = NodeState.SUCCEEDED
        out = []
        for dep_id in deps:
            dep = nodes[dep_id]
            if dep.state is succeeded:
                out.append((dep_id, dep.result))
        return out

    def assignment_bytes(self, node: Node) -> int:
        """A conservative estimate of the node's encoded Assignment: its input, the
        dependency results that go with it (`assignment_deps`), metadata, ids and agent, each
        with room for its framing."""
        spec = node.spec
        size = len(spec.input) + 128
        for text in (spec.id, spec.agent, node.run.run_id):
            size += len(text) if text.isascii() else len(text.encode())
        deps = node.deps
        if deps:
            nodes = node.run.nodes
            succeeded = NodeState.SUCCEEDED
            for dep_id in deps:
                dep = nodes[dep_id]
                if dep.state is succeeded:
                    size += len(dep_id.encode()) + len(dep.result) + 16
        if spec.metadata:
            for key, value in spec.metadata.items():
                size += len(key.encode()) + len(value.encode()) + 16
        return size

    # --- dispatch ------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Gives ready nodes to sessions with free slots, never past a session's slots. Work is
        shared out in rounds, so that ready nodes spread over every hungry session instead of
        filling the first one."""
        while self._queued and self._hungry:
            hungry = list(self._hungry)
            share = max(1, self._queued // len(hungry))
            progressed = False
            for session_id in hungry:
                session = self.sessions[session_id]
                free = session.slots - len(session.in_flight)
                got = self._fill(session, min(free, share))
                progressed = progressed or got > 0
                if got == free:
                    self._hungry.discard(session_id)
                if not self._queued:
                    return
            if not progressed:
                return

    def _fill(self, session: Session, want: int) -> int:
        got = 0
        queues = self._queues
        limit = self.max_assignment_bytes
        for key in session.queue_keys:
            queue = queues[key]
            while got < want and queue.size:
                token, node = queue.pop()
                self._queued -= 1
                node.run.entries -= 1
                if node.queued != token or node.state is not NodeState.READY:
                    continue
                if limit and self.assignment_bytes(node) > limit:
                    # It could never be delivered: resending it would only kill streams.
                    self._too_large(node, limit)
                    continue
                self._start(node, session)
                got += 1
            if got == want:
                break
        return got

    def replay(self, run_id: str, decision: Decision, *, now: float) -> None:
        """Re-applies one logged decision: the only way from a log back to state (recovery,
        and the tests' replays, go through here). The decision is taken as made (a dispatch is
        not made again, an answer is not judged again: it is the answer the core took), through
        the same paths as live; what it leaves in the outbox is dropped, being in the log
        already. Raises KeyError for a run the log did not submit, and GraphError or
        AssertionError for a decision the state cannot take (a damaged log)."""
        self.now = now
        records, assignments, cancels = (
            len(self.records),
            len(self.assignments),
            len(self.cancels),
        )
        match decision:
            case NodeDispatched():
                self._replay_dispatch(run_id, decision)
            case AttemptFinished():
                # No session exists during replay, and a replayed dispatch belongs to none.
                self._finish("", decision.answer)
            case AttemptLost():
                self._lose_attempt(run_id, decision.node_id, decision.lease, decision.reason)
            case AttemptTimedOut():
                node = self._run(run_id).nodes.get(decision.node_id)
                if (
                    node is not None
                    and node.lease == decision.lease
                    and node.state is NodeState.RUNNING
                ):
                    self._time_out(node)
            case RunSubmitted():
                cmd = SubmitRun(
                    run_id,
                    decision.specs,
                    decision.limits,
                    decision.name,
                    decision.seed,
                    decision.request_id,
                )
                self.submit_run(cmd, now=now, checked=True)
            case RunCancelled():
                self.cancel_run(CancelRun(run_id, decision.reason), now=now)
            case MutationsApplied():
                self.mutate_run(MutateRun(run_id, decision.mutations), now=now)
            case NodeFailed():
                node = self._run(run_id).nodes.get(decision.node_id)
                if node is not None and node.state is NodeState.READY:
                    self._fail_unrun(node, decision.error)
            case ProgressReported() | RunEnded():
                pass  # nothing changes: the end is recomputed from the nodes
        del self.records[records:], self.assignments[assignments:], self.cancels[cancels:]

    def _replay_dispatch(self, run_id: str, d: NodeDispatched) -> None:
        node = self._run(run_id).nodes[d.node_id]
        node.attempt, node.lease, node.session_id, node.open = d.attempt, d.lease, "", True
        node.queued = node.answered = 0
        if node.state is NodeState.READY:
            node.run.set_state(node, NodeState.RUNNING)
        node.run.transitions.clear()

    def expire_all_leases(self, *, reason: str, now: float) -> None:
        """After replay: every attempt that was running belongs to a session that is gone."""
        self.now = now
        for run in self.runs.values():
            for node in run.nodes.values():
                if node.state is NodeState.RUNNING and node.session_id not in self.sessions:
                    self._requeue(node)
                    self._settle(run, AttemptLost(node.id, node.attempt, node.lease, reason))

    def take_outbox(self) -> tuple[list[Record], list[Assignment], list[CancelOrder]]:
        out = self.records, self.assignments, self.cancels
        self.records, self.assignments, self.cancels = [], [], []
        return out

    # --- internals -----------------------------------------------------------------------

    def _run(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        return run

    def _current(self, run_id: str, node_id: str, attempt: int, lease: int) -> Node | None:
        run = self.runs.get(run_id)
        node = run.nodes.get(node_id) if run is not None else None
        if node is None or node.lease != lease or node.attempt != attempt or not node.open:
            return None
        return node

    def _start(self, node: Node, session: Session) -> None:
        node.queued = node.answered = 0
        node.attempt += 1
        new_lease = self._new_lease
        if new_lease is None:
            lease = next(self._lease_ids)
        else:
            lease = new_lease()
            while lease == 0 or lease == node.lease or lease in session.in_flight:
                lease = new_lease()
        node.lease = lease
        node.open = True
        node.session_id = session.id
        session.in_flight[lease] = node
        node.run.transition(node, NodeState.RUNNING)
        self._arm_timeout(node)
        run = node.run
        spec = node.spec
        self.assignments.append(
            Assignment(
                session.id,
                run.run_id,
                spec,
                node.attempt,
                lease,
                self.assignment_deps(node) if node.deps else [],
            )
        )
        self.records.append(
            Record(
                run,
                NodeDispatched(spec.id, node.attempt, lease, session.id, session.worker_name),
            )
        )

    def _too_large(self, node: Node, limit: int) -> None:
        size = self.assignment_bytes(node)
        self._fail_unrun(
            node,
            NodeError(
                f"its assignment would be {size} bytes, over the coordinator's limit of "
                f"{limit} bytes",
                False,
                "too_large",
            ),
        )

    def _fail_unrun(self, node: Node, error: NodeError) -> None:
        """READY -> FAILED without a dispatch; an open attempt of a lost worker closes."""
        node.queued = 0
        node.open = False
        node.error = error
        node.run.transition(node, NodeState.FAILED)
        self._settle(node.run, NodeFailed(node.id, error))

    def _sweep(self) -> None:
        """Drops the queue entries and timers that hold nodes of deleted runs (and the stale
        queue entries of live ones, while at it)."""
        runs = self.runs
        self._timers = [t for t in self._timers if runs.get(t[3].run.run_id) is t[3].run]
        heapq.heapify(self._timers)
        total = 0
        for queue in self._queues.values():
            size = 0
            for priority, lane in queue.lanes.items():
                kept: deque[tuple[int, Node]] = deque()
                for entry in lane:
                    token, node = entry
                    run = node.run
                    if runs.get(run.run_id) is not run:
                        continue
                    if node.queued == token:
                        kept.append(entry)
                    else:
                        run.entries -= 1
                queue.lanes[priority] = kept
                size += len(kept)
            queue.size = size
            total += size
        self._queued = total
        self._garbage = 0

    def _arm_timeout(self, node: Node) -> None:
        if node.spec.timeout_s > 0:
            heapq.heappush(
                self._timers,
                (self.now + node.spec.timeout_s, next(self._order), "timeout", node, node.lease),
            )
            node.run.entries += 1

    def _on_ready(self, node: Node) -> None:
        if node.not_before > self.now:
            heapq.heappush(
                self._timers, (node.not_before, next(self._order), "backoff", node, node.lease)
            )
            node.run.entries += 1
        else:
            self._enqueue(node)

    def _enqueue(self, node: Node) -> None:
        spec = node.spec
        key = (spec.agent, spec.labels)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = ReadyQueue()
            for session in self.sessions.values():
                if session.matches(key):
                    session.queue_keys.append(key)
        node.queued = token = next(self._order)
        queue.push(spec.priority, token, node)
        self._queued += 1
        node.run.entries += 1

    def _requeue(self, node: Node) -> None:
        """RUNNING -> READY without spending a retry (lost worker, attempt given up)."""
        node.session_id = ""
        node.not_before = 0.0
        node.run.transition(node, NodeState.READY)

    def _fail(self, node: Node, error: NodeError) -> None:
        node.failures += 1
        node.error = error
        retry = node.spec.retry
        if error.retryable and node.failures < retry.max_attempts:
            delay = min(
                retry.max_backoff_s,
                retry.initial_backoff_s * retry.multiplier ** (node.failures - 1),
            )
            if retry.jitter:
                delay *= 1.0 - retry.jitter * node.run.random()
            node.not_before = self.now + delay
            node.session_id = ""
            if node.state is NodeState.RUNNING:
                node.run.transition(node, NodeState.READY)
            else:  # a late answer for a READY node: re-arm it behind the backoff
                node.queued = 0
                self._on_ready(node)
        else:
            node.run.transition(node, NodeState.FAILED)

    def _cancel_on_worker(self, node: Node, reason: str) -> None:
        if node.session_id in self.sessions:
            self.cancels.append(CancelOrder(node.session_id, node, reason))

    def _apply_mutations(self, run: Run, batch: Sequence[Mutation], actor: Node | None) -> None:
        view = mutation_batch.play(run, batch, actor)
        parent_id = actor.id if actor is not None else ""

        def make_node(spec: NodeSpec, depth: int) -> Node:
            return Node(run, spec, parent_id=parent_id, depth=depth)

        for node in mutation_batch.commit(view, make_node=make_node):
            self._cancel_on_worker(node, "pruned")

    def _settle(self, run: Run, decision: Decision) -> None:
        self.records.append(Record(run, decision))
        if run.unfinished == 0 and run.state is RunState.RUNNING:
            run.state = run.end_state()
            run.ended_at = self.now
            self.records.append(Record(run, RunEnded(run.state)))


def _resolve(limits: RunLimits | None, default: RunLimits) -> RunLimits:
    """A run's limits: what was asked, the default for what was not (None, or a zero)."""
    if limits is None:
        return default
    if limits.max_nodes and limits.max_spawn_depth:
        return limits
    return RunLimits(
        limits.max_nodes or default.max_nodes, limits.max_spawn_depth or default.max_spawn_depth
    )


def _with_default_ids(specs: Sequence[NodeSpec]) -> Sequence[NodeSpec]:
    """Nodes submitted without an id get `n<position>` (1-based)."""
    for spec in specs:
        if not spec.id:
            break
    else:
        return specs
    return [s if s.id else replace(s, id=f"n{i}") for i, s in enumerate(specs, 1)]


def _check_graph(specs: Sequence[NodeSpec], limits: RunLimits) -> None:
    if not specs:
        raise GraphError("a run needs at least one node")
    if len(specs) > limits.max_nodes:
        raise GraphError(f"{len(specs)} nodes is over the run's limit of {limits.max_nodes}")
    ids: set[str] = set()
    spec_problem = mutation_batch.spec_problem
    with_deps: list[NodeSpec] = []
    for index, spec in enumerate(specs):
        problem = spec_problem(spec)
        if problem:
            raise GraphError(f"node {index + 1}: {problem}")
        if spec.id in ids:
            raise GraphError(f"duplicate node id {spec.id!r}")
        ids.add(spec.id)
        if spec.depends_on:
            with_deps.append(spec)
    for spec in with_deps:
        for dep in spec.depends_on:
            if dep not in ids:
                raise GraphError(f"node {spec.id!r} depends on unknown node {dep!r}")
    # Kahn's algorithm over the nodes with edges: whatever is left unresolved sits on a cycle.
    # A graph without edges (a fanout) has none to look at.
    waiting = {s.id: len(s.depends_on) for s in with_deps}
    dependents: dict[str, list[str]] = {}
    for spec in with_deps:
        for dep in spec.depends_on:
            dependents.setdefault(dep, []).append(spec.id)
    stack = [i for i in dependents if i not in waiting]
    resolved = 0
    while stack:
        for d in dependents.get(stack.pop(), ()):
            waiting[d] -= 1
            if waiting[d] == 0:
                resolved += 1
                stack.append(d)
    if resolved != len(waiting):
        on_cycle = sorted(i for i, n in waiting.items() if n > 0)[:5]
        raise GraphError(f"the graph has a cycle through {', '.join(map(repr, on_cycle))}")


__all__ = [
    "NOT_STARTED",
    "Assignment",
    "CancelOrder",
    "Core",
    "Record",
    "RestoredNode",
    "Session",
]
