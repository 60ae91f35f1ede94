"""`validate(core)`: every invariant of the core, checked from scratch in O(state). Tests run it
after every step; it is far too slow for production. It raises `InvariantError` (an
AssertionError), never a bare `assert`, so it checks under `python -O` too."""

from __future__ import annotations

from .graph import Node, Run
from .model import NOT_STARTED, TERMINAL, InvariantError, NodeState, RunState
from .scheduler import Core


def _fail(message: str) -> None:
    raise InvariantError(message)


def validate(core: Core) -> None:
    for run_id, run in core.runs.items():
        if run.run_id != run_id:
            _fail(f"run {run.run_id} filed as {run_id}")
        _check_run(core, run)
    _check_requests(core)
    _check_scheduler(core)


def _check_run(core: Core, run: Run) -> None:
    counts = dict.fromkeys(NodeState, 0)
    nodes = run.nodes
    for node_id, node in nodes.items():
        if node.id != node_id or node.run is not run:
            _fail(f"{node_id}: filed under the wrong id or run")
        counts[node.state] += 1
        for dep in node.deps:
            if dep not in nodes:
                _fail(f"{node_id}: unknown dependency {dep}")
            if node_id not in nodes[dep].dependents:
                _fail(f"{dep} -> {node_id} not linked")
        if len(set(node.deps)) != len(node.deps):
            _fail(f"{node_id}: duplicate dependency")
        for child in node.dependents:
            if child not in nodes:
                _fail(f"{node_id}: unknown dependent {child}")
            if node_id not in nodes[child].deps:
                _fail(f"{node_id} -> {child} dangling")
        if node.state in NOT_STARTED:
            waiting = 0
            for dep in node.deps:
                d = nodes[dep]
                if d.state is NodeState.SUCCEEDED:
                    continue
                if d.state in TERMINAL and not node.spec.run_on_failure:
                    _fail(f"{node_id} waits on {dep}, which ended {d.state.name}")
                if d.state not in TERMINAL:
                    waiting += 1
            if node.waiting != waiting:
                _fail(f"{node_id}: waiting {node.waiting} != {waiting}")
            if node.state is NodeState.READY and waiting != 0:
                _fail(f"{node_id} READY with {waiting} waiting")
            if node.state is NodeState.PENDING and waiting == 0:
                _fail(f"{node_id} PENDING with nothing to wait for")
        if node.state is NodeState.RUNNING:
            if node.lease == 0 or node.attempt <= 0:
                _fail(f"{node_id} RUNNING without a lease")
            if not node.open:
                _fail(f"{node_id} RUNNING with its attempt closed")
            session = core.sessions.get(node.session_id)
            if session is not None:
                if session.in_flight.get(node.lease) is not node:
                    _fail(f"{node_id} runs on {session.id}, which does not hold it")
            elif node.session_id:
                _fail(f"{node_id} runs on {node.session_id}, which is gone")
        if node.answered not in (0, 1, 3):  # AckStatus COMMITTED, MUTATIONS_REJECTED
            _fail(f"{node_id}: answered {node.answered}")
        if node.answered and node.open:
            _fail(f"{node_id}: answered, and its attempt still open")
        if node.state is NodeState.SUCCEEDED and not all(
            nodes[d].state in TERMINAL for d in node.deps
        ):
            _fail(f"{node_id} SUCCEEDED before its dependencies ended")
    if counts != run.counts:
        _fail(f"{run.run_id}: counts {run.counts} != {counts}")
    unfinished = sum(n for s, n in counts.items() if s not in TERMINAL)
    if run.unfinished != unfinished:
        _fail(f"{run.run_id}: unfinished {run.unfinished} != {unfinished}")
    if (run.state is RunState.RUNNING) != (unfinished > 0):
        _fail(f"{run.run_id}: state {run.state.name} with {unfinished} unfinished")
    _check_acyclic(nodes)


def _check_requests(core: Core) -> None:
    for run_id, run in core.runs.items():
        if run.request_id and core.run_for_request(run.request_id) != run_id:
            _fail(f"{run_id}: request id {run.request_id!r} does not lead to it")
    for request_id, run_id in core._requests.items():
        made = core.runs.get(run_id)
        if made is None or made.request_id != request_id:
            _fail(f"request id {request_id!r} maps to {run_id}, which it did not make")


def _check_scheduler(core: Core) -> None:
    """Ready queues, timers and sessions agree with the nodes."""
    live_runs = core.runs
    entries: dict[int, int] = {}  # id(run) -> queue entries and timers holding its nodes

    def count(node: Node) -> None:
        entries[id(node.run)] = entries.get(id(node.run), 0) + 1

    # Queue entries: token -> node, for the live ones (token equal to the node's).
    queued: dict[int, Node] = {}
    total = 0
    for key, queue in core._queues.items():
        size = 0
        for lane in queue.lanes.values():
            size += len(lane)
            for token, node in lane:
                count(node)
                if node.queued != token:
                    continue
                if (node.spec.agent, node.spec.labels) != key:
                    _fail(f"{node.id} queued under {key}")
                if live_runs.get(node.run.run_id) is not node.run:
                    _fail(f"{node.id} of a deleted run is queued")
                if node.run.nodes.get(node.id) is not node:
                    _fail(f"{node.id} is queued, and not in its run")
                if node.state is not NodeState.READY:
                    _fail(f"{node.id} is queued in state {node.state.name}")
                if token in queued:
                    _fail(f"token {token} queued twice")
                queued[token] = node
        if size != queue.size:
            _fail(f"queue {key}: size {queue.size} != {size}")
        total += size
    if total != core._queued:
        _fail(f"{core._queued} queued, {total} in the queues")
    backoffs: set[tuple[int, int, float]] = set()
    for deadline, _order, kind, node, token in core._timers:
        count(node)
        if kind == "backoff":
            backoffs.add((id(node), token, deadline))
        elif kind != "timeout":
            _fail(f"timer of unknown kind {kind!r}")
    for run in live_runs.values():
        if run.entries != entries.get(id(run), 0):
            _fail(f"{run.run_id}: {run.entries} entries counted, {entries.get(id(run), 0)} held")
        for node in run.nodes.values():
            if node.state is not NodeState.READY:
                if node.queued:
                    _fail(f"{node.id} is queued (token {node.queued}) in state {node.state.name}")
                continue
            if node.queued:
                if queued.get(node.queued) is not node:
                    _fail(f"{node.id} READY with token {node.queued} and no queue entry")
            elif (id(node), node.lease, node.not_before) not in backoffs:
                _fail(f"{node.id} READY, neither queued nor waiting out a backoff")
    # Sessions: each in-flight entry is the session's running attempt, or an attempt the
    # coordinator ended (timed out, cancelled, pruned) whose worker has not answered yet:
    # it keeps its slot until then.
    holder: dict[int, str] = {}
    for session_id, session in core.sessions.items():
        if session.id != session_id:
            _fail(f"session {session.id} filed as {session_id}")
        if len(session.in_flight) > session.slots:
            _fail(f"{session_id} over its slots ({len(session.in_flight)} > {session.slots})")
        for lease, node in session.in_flight.items():
            if node.lease != lease:
                continue  # an older attempt, re-dispatched since
            if node.state is NodeState.RUNNING:
                if node.session_id != session_id:
                    _fail(f"{session_id} holds {node.id}, which runs on {node.session_id!r}")
            elif node.open and node.state is NodeState.READY:
                _fail(f"{session_id} holds {node.id}, whose attempt was given up as lost")
            if id(node) in holder:
                _fail(f"{node.id} is held by {holder[id(node)]} and {session_id}")
            holder[id(node)] = session_id
        # Free slots: a session is offered work while it is hungry, so one with a free slot
        # that is not (and is not draining) would never be given any again.
        hungry = session_id in core._hungry
        if session.draining and hungry:
            _fail(f"{session_id} is draining and still offered work")
        if not session.draining and len(session.in_flight) < session.slots and not hungry:
            _fail(
                f"{session_id} has {session.slots - len(session.in_flight)} free slots and is "
                "not offered work"
            )
        # The queues it may take from: every one it matches, once each.
        keys = session.queue_keys
        if len(set(keys)) != len(keys):
            _fail(f"{session_id} lists a ready queue twice")
        matching = {key for key in core._queues if session.matches(key)}
        if set(keys) != matching:
            _fail(f"{session_id} takes from queues {sorted(keys)}, it matches {sorted(matching)}")
    for session_id in core._hungry:
        if session_id not in core.sessions:
            _fail(f"{session_id} is offered work and gone")


def _check_acyclic(nodes: dict[str, Node]) -> None:
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
    if seen != len(nodes):
        _fail("the graph has a cycle")
