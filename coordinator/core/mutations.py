"""Atomic mutation batches.

A batch is first played against a `_View`, an overlay over the run that records what the batch
would add, remove, rewire and change, checking every step against the graph as the earlier steps
left it. Only when the whole batch is valid (and creates no cycle) is the overlay committed to the
run; a rejected batch raises `GraphError` and leaves the run untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from .graph import Node, Run
from .model import (
    DEFAULT_RETRY,
    NOT_STARTED,
    TERMINAL,
    AddEdge,
    AddNode,
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
    PruneSubgraph,
    RemoveEdge,
    RemoveNode,
    SplitNode,
    UnknownMutation,
)

PRUNED_ERROR = NodeError("pruned", kind="cancelled")
DISCARDED_ERROR = NodeError("speculative node discarded", kind="skipped")


def check_spec(spec: NodeSpec, where: str) -> None:
    problem = spec_problem(spec)
    if problem:
        raise GraphError(f"{where}: {problem}")


def spec_problem(spec: NodeSpec) -> str:
    """What is wrong with a node on its own, or "". Formats nothing for a good node: a large
    submission checks every node."""
    if not spec.id:
        return "node id must not be empty"
    if not spec.agent:
        return f"node {spec.id!r} has no agent"
    if spec.timeout_s < 0:
        return f"node {spec.id!r}: timeout_s must not be negative"
    deps = spec.depends_on
    if deps:
        if len(set(deps)) != len(deps):
            return f"node {spec.id!r} lists a dependency twice"
        if spec.id in deps:
            return f"node {spec.id!r} depends on itself (cycle)"
    if spec.retry is not DEFAULT_RETRY:
        problem = spec.retry.problem()
        if problem:
            return f"node {spec.id!r}: {problem}"
    return ""


class _View:
    __slots__ = (
        "actor",
        "added",
        "cycle_check_visited",
        "deps",
        "marks",
        "modified",
        "prunes",
        "removed",
        "rev",
        "run",
    )

    def __init__(self, run: Run, actor: Node | None) -> None:
        self.run = run
        self.actor = actor
        self.added: dict[str, tuple[NodeSpec, bool]] = {}
        self.removed: set[str] = set()
        # New dependency lists of the nodes whose edges the batch touches.
        self.deps: dict[str, list[str]] = {}
        # Reverse index of the edges the view holds (into added nodes and into the nodes in
        # `deps`): dependency -> those dependents, in insertion order. With the run's own
        # `dependents` for every other node, it gives a node's dependents in the new graph
        # without scanning the batch.
        self.rev: dict[str, dict[str, None]] = {}
        self.modified: dict[str, NodeSpec] = {}
        self.marks: dict[str, str] = {}
        self.prunes: list[str] = []
        # How many nodes the cycle check looked at (a deterministic measure of its cost).
        self.cycle_check_visited = 0

    def exists(self, node_id: str) -> bool:
        if node_id in self.removed:
            return False
        return node_id in self.added or node_id in self.run.nodes

    def require(self, node_id: str, what: str) -> None:
        if not self.exists(node_id):
            raise GraphError(f"{what}: unknown node {node_id!r}")

    def state(self, node_id: str) -> NodeState:
        mark = self.marks.get(node_id)
        if mark == "mark":
            return NodeState.SPECULATIVE
        if mark == "confirm":
            return NodeState.PENDING
        if mark == "discard":
            return NodeState.SKIPPED
        if node_id in self.added:
            return NodeState.SPECULATIVE if self.added[node_id][1] else NodeState.PENDING
        return self.run.nodes[node_id].state

    def require_not_started(self, node_id: str, what: str) -> None:
        self.require(node_id, what)
        if self.actor is not None and node_id == self.actor.id:
            raise GraphError(f"{what}: node {node_id!r} is the node sending the mutations")
        state = self.state(node_id)
        if state not in NOT_STARTED:
            raise GraphError(f"{what}: node {node_id!r} already started ({state.name})")
        node = self.run.nodes.get(node_id)
        if node is not None and node.attempt > 0 and node_id not in self.added:
            raise GraphError(f"{what}: node {node_id!r} already started (attempt {node.attempt})")

    def deps_of(self, node_id: str) -> list[str]:
        got = self.deps.get(node_id)
        if got is not None:
            return got
        if node_id in self.added:
            return list(self.added[node_id][0].depends_on)
        node = self.run.nodes.get(node_id)
        return node.deps if node is not None else []

    def edit_deps(self, node_id: str) -> list[str]:
        """The node's dependency list in the view, to change through `link` and `unlink`."""
        got = self.deps.get(node_id)
        if got is None:
            got = self.deps[node_id] = list(self.deps_of(node_id))
            if node_id not in self.added:  # an added node's edges are indexed already
                rev = self.rev
                for dep in got:
                    rev.setdefault(dep, {})[node_id] = None
        return got

    def link(self, dep: str, node_id: str) -> None:
        self.edit_deps(node_id).append(dep)
        self.rev.setdefault(dep, {})[node_id] = None

    def unlink(self, dep: str, node_id: str) -> None:
        self.edit_deps(node_id).remove(dep)
        self.rev[dep].pop(node_id, None)

    def dependents_of(self, node_id: str) -> list[str]:
        """The node's dependents in the graph as the batch leaves it: O(its dependents)."""
        out: list[str] = []
        node = self.run.nodes.get(node_id)
        if node is not None and node.dependents:
            removed, deps, added = self.removed, self.deps, self.added
            # Those whose edges the view holds come from the reverse index.
            out.extend(
                d for d in node.dependents if d not in removed and d not in deps and d not in added
            )
        got = self.rev.get(node_id)
        if got:
            removed = self.removed
            out.extend(d for d in got if d not in removed)
        return out

    # --- one method per mutation kind ---------------------------------------------------

    def add_node(self, spec: NodeSpec, speculative: bool, what: str) -> None:
        check_spec(spec, what)
        if self.exists(spec.id) or spec.id in self.removed:
            raise GraphError(f"{what}: duplicate node id {spec.id!r}")
        for dep in spec.depends_on:
            self.require(dep, f"{what}: dependency of {spec.id!r}")
        self.added[spec.id] = (spec, speculative)
        rev = self.rev
        for dep in spec.depends_on:
            rev.setdefault(dep, {})[spec.id] = None

    def add_edge(self, from_id: str, to_id: str, what: str) -> None:
        self.require(from_id, what)
        self.require_not_started(to_id, what)
        if from_id in self.deps_of(to_id):
            raise GraphError(f"{what}: {to_id!r} already depends on {from_id!r}")
        self.link(from_id, to_id)

    def remove_edge(self, from_id: str, to_id: str, what: str) -> None:
        self.require(from_id, what)
        self.require_not_started(to_id, what)
        if from_id not in self.deps_of(to_id):
            raise GraphError(f"{what}: {to_id!r} does not depend on {from_id!r}")
        self.unlink(from_id, to_id)

    def remove_node(self, node_id: str, what: str) -> None:
        self.require_not_started(node_id, what)
        for dependent in self.dependents_of(node_id):
            self.unlink(node_id, dependent)
        self.rev.pop(node_id, None)
        if node_id in self.deps or node_id in self.added:  # its own edges are indexed
            for dep in self.deps_of(node_id):
                got = self.rev.get(dep)
                if got is not None:
                    got.pop(node_id, None)
        self.removed.add(node_id)
        self.deps.pop(node_id, None)

    def modify_node(self, m: ModifyNode, what: str) -> None:
        self.require_not_started(m.id, what)
        base = self.modified.get(m.id)
        if base is None:
            base = self.added[m.id][0] if m.id in self.added else self.run.nodes[m.id].spec
        changes: dict[str, object] = {}
        if m.input is not None:
            changes["input"] = m.input
        if m.priority is not None:
            changes["priority"] = m.priority
        if m.retry is not None:
            problem = m.retry.problem()
            if problem:
                raise GraphError(f"{what}: {problem}")
            changes["retry"] = m.retry
        if m.timeout_s is not None:
            if m.timeout_s < 0:
                raise GraphError(f"{what}: timeout_s must not be negative")
            changes["timeout_s"] = m.timeout_s
        self.modified[m.id] = dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def split_node(self, m: SplitNode, what: str) -> None:
        self.require_not_started(m.id, what)
        if not m.replacements:
            raise GraphError(f"{what}: split of {m.id!r} needs at least one replacement")
        inherited = tuple(self.deps_of(m.id))
        dependents = self.dependents_of(m.id)
        new_ids = [r.id for r in m.replacements]
        self.remove_node(m.id, what)
        for spec in m.replacements:
            if not spec.depends_on:
                spec = dataclasses.replace(spec, depends_on=inherited)
            self.add_node(spec, False, what)
        for dependent in dependents:
            for new_id in new_ids:
                self.link(new_id, dependent)

    def inject_before(self, m: InjectBefore, what: str) -> None:
        self.require_not_started(m.target_id, what)
        spec = m.node
        if not spec.depends_on:
            spec = dataclasses.replace(spec, depends_on=tuple(self.deps_of(m.target_id)))
        self.add_node(spec, False, what)
        self.add_edge(spec.id, m.target_id, what)

    def mark(self, node_id: str, kind: str, what: str) -> None:
        if kind == "mark":
            self.require_not_started(node_id, what)
            if self.state(node_id) is NodeState.SPECULATIVE:
                raise GraphError(f"{what}: node {node_id!r} is already speculative")
        else:
            self.require(node_id, what)
            if self.state(node_id) is not NodeState.SPECULATIVE:
                raise GraphError(f"{what}: node {node_id!r} is not speculative")
        self.marks[node_id] = kind

    def prune(self, root_id: str, what: str) -> None:
        self.require(root_id, what)
        self.prunes.append(root_id)


def play(run: Run, batch: Sequence[Mutation], actor: Node | None) -> _View:
    """Checks a whole batch; raises GraphError naming the first problem."""
    if actor is not None and not actor.spec.can_mutate:
        raise GraphError(f"node {actor.id!r} may not mutate the graph (can_mutate is false)")
    view = _View(run, actor)
    for index, m in enumerate(batch):
        what = f"mutation {index + 1} ({_KIND_NAMES[type(m)]})"
        match m:
            case AddNode():
                view.add_node(m.node, m.speculative, what)
            case AddEdge():
                view.add_edge(m.from_id, m.to_id, what)
            case RemoveEdge():
                view.remove_edge(m.from_id, m.to_id, what)
            case RemoveNode():
                view.remove_node(m.id, what)
            case ModifyNode():
                view.modify_node(m, what)
            case SplitNode():
                view.split_node(m, what)
            case InjectBefore():
                view.inject_before(m, what)
            case PruneSubgraph():
                view.prune(m.root_id, what)
            case MarkSpeculative():
                view.mark(m.id, "mark", what)
            case ConfirmSpeculative():
                view.mark(m.id, "confirm", what)
            case DiscardSpeculative():
                view.mark(m.id, "discard", what)
            case UnknownMutation():
                raise GraphError(
                    f"{what}: a mutation without a kind (empty, or a kind this coordinator "
                    "does not know)"
                )
    total = len(run.nodes) + len(view.added) - len(view.removed)
    if total > run.limits.max_nodes:
        raise GraphError(
            f"the run would have {total} nodes, over its limit of {run.limits.max_nodes}"
        )
    depth = actor.depth + 1 if actor is not None else 0
    if view.added and depth > run.limits.max_spawn_depth:
        raise GraphError(f"spawn depth limit of {run.limits.max_spawn_depth} reached")
    _check_acyclic(view)
    return view


def _check_acyclic(view: _View) -> None:
    """Raises GraphError if the batch creates a cycle, looking only where one can be.

    The run's graph is acyclic, so a cycle the batch creates goes through a new edge u -> v
    (v depends on u), and every node on it is v or a descendant of v in the new graph. The
    check collects R, the targets of new edges that have dependents (a node nothing depends on
    is on no cycle) and their descendants, then runs one Kahn pass over R: what is left is on
    a cycle or below one. Every target is a node that has not started, so R is the future of
    the graph, never its history: the cost is bounded by what the batch can reach, not by the
    size of the run (`view.cycle_check_visited` counts it)."""
    nodes, added, removed = view.run.nodes, view.added, view.removed
    targets: list[str] = []
    # Sources of the new edges: a cycle needs one of them below its own target.
    sources: set[str] = set()
    for node_id, deps in view.deps.items():
        if node_id in removed:
            continue
        if node_id not in added:
            old = nodes[node_id].deps
            if len(deps) <= len(old) and set(deps) <= set(old):
                continue  # no new edge into it (only removals, or none)
            sources.update(set(deps) - set(old))
        else:
            sources.update(deps)
        targets.append(node_id)
    for node_id, (spec, _) in added.items():
        if spec.depends_on and node_id not in view.deps and node_id not in removed:
            targets.append(node_id)
            sources.update(spec.depends_on)
    # The walk below is the cost of the check: a node's dependents as the run has them, unless
    # the batch touched one of them (then the view's answer).
    touched = removed | view.deps.keys() | added.keys()
    rev = view.rev
    nodes_get = nodes.get
    dependents_of = view.dependents_of

    def below(node_id: str) -> list[str]:
        node = nodes_get(node_id)
        if node is not None and not rev.get(node_id) and touched.isdisjoint(node.dependents):
            return node.dependents
        return dependents_of(node_id)

    # R, closed under dependents; `succ` keeps each member's dependents (all of them in R).
    succ: dict[str, list[str]] = {}
    stack: list[str] = []
    for node_id in targets:
        if node_id not in succ:
            succ[node_id] = out = below(node_id)
            if out:
                stack.append(node_id)
            else:
                del succ[node_id]  # a sink: on no cycle, and nothing below it to look at
    stack.reverse()
    while stack:
        for child in succ[stack.pop()]:
            if child not in succ:
                succ[child] = below(child)
                stack.append(child)
    view.cycle_check_visited = len(succ)
    if not succ or sources.isdisjoint(succ):
        return  # no new edge's source is below a target: no cycle
    indegree = dict.fromkeys(succ, 0)
    for out in succ.values():
        for child in out:
            indegree[child] += 1
    free = [n for n, k in indegree.items() if k == 0]
    while free:
        for child in succ[free.pop()]:
            indegree[child] -= 1
            if indegree[child] == 0:
                free.append(child)
    left = {n for n, k in indegree.items() if k > 0}
    if left:
        dep, node_id = _cycle_edge(view, [t for t in targets if t in left] or sorted(left), left)
        raise GraphError(f"the batch creates a cycle through {dep!r} and {node_id!r}")


def _cycle_edge(view: _View, starts: list[str], left: set[str]) -> tuple[str, str]:
    """A (dependency, node) edge the batch added on a cycle within `left` (what the Kahn pass
    could not resolve: every node there has a dependency there too)."""
    path = [starts[0]]
    index = {starts[0]: 0}
    while True:
        nxt = next(d for d in view.deps_of(path[-1]) if d in left)
        if nxt in index:
            cycle = path[index[nxt] :]
            break
        index[nxt] = len(path)
        path.append(nxt)
    # cycle[i] depends on cycle[i + 1], and the last one on cycle[0].
    edges = [(cycle[(i + 1) % len(cycle)], cycle[i]) for i in range(len(cycle))]
    nodes = view.run.nodes
    for dep, node_id in edges:
        if node_id in view.added or dep not in nodes[node_id].deps:
            return dep, node_id
    return edges[0]  # pragma: no cover - a cycle of old edges only cannot exist


def commit(view: _View, *, make_node: Callable[[NodeSpec, int], Node]) -> list[Node]:
    """Applies a checked batch. Returns the running nodes it pruned (their workers must be told)."""
    run, nodes = view.run, view.run.nodes
    depth = view.actor.depth + 1 if view.actor is not None else 0
    for node_id in view.removed:
        node = nodes.get(node_id)
        if node is None:
            continue
        for dep in node.deps:
            if dep in nodes:
                nodes[dep].dependents.remove(node_id)
        run.discard(node)
    fresh: list[Node] = []
    for node_id, (spec, speculative) in view.added.items():
        if node_id in view.removed:
            continue
        node = make_node(view.modified.pop(node_id, spec), depth)
        node.deps = view.deps.pop(node_id, list(spec.depends_on))
        run.add(node, NodeState.SPECULATIVE if speculative else NodeState.PENDING)
        fresh.append(node)
    for node in fresh:
        for dep in node.deps:
            nodes[dep].dependents.append(node.id)
    touched: list[Node] = []
    for node_id, new_deps in view.deps.items():
        node = nodes[node_id]
        old = set(node.deps)
        new = set(new_deps)
        for dep in old - new:
            if dep in nodes:
                nodes[dep].dependents.remove(node_id)
        for dep in new - old:
            nodes[dep].dependents.append(node_id)
        node.deps = new_deps
        touched.append(node)
    for node_id, spec in view.modified.items():
        node = nodes.get(node_id)
        if node is None:  # removed later in the same batch
            continue
        if node.state is NodeState.READY and spec.priority != node.spec.priority:
            node.spec = spec
            run.on_ready(node)  # requeue at the new priority
        node.spec = spec
    for node in fresh:
        run.refresh(node)
    for node in touched:
        if node.state in NOT_STARTED:
            run.refresh(node)
    # Only the last mark of a node counts; applied against the state it has now.
    for node_id, kind in view.marks.items():
        node = nodes.get(node_id)
        if node is None or node.state in TERMINAL:
            continue
        speculative = node.state is NodeState.SPECULATIVE
        if kind == "mark":
            if not speculative:
                node.queued = 0
                run.transition(node, NodeState.SPECULATIVE)
        elif kind == "confirm":
            if speculative:
                run.release(node)
        else:  # a READY node marked and discarded in this batch leaves its queue too
            node.queued = 0
            node.error = DISCARDED_ERROR
            run.transition(node, NodeState.SKIPPED)
    return _prune(view)


def _prune(view: _View) -> list[Node]:
    run, nodes = view.run, view.run.nodes
    doomed: dict[str, Node] = {}
    stack = list(view.prunes)
    while stack:
        node_id = stack.pop()
        if node_id in doomed or node_id not in nodes:  # removed later in the same batch
            continue
        node = nodes[node_id]
        doomed[node_id] = node
        stack.extend(node.dependents)
    running: list[Node] = []
    for node in doomed.values():
        if node.state in TERMINAL or node is view.actor:
            continue
        if node.state is NodeState.RUNNING:
            running.append(node)
        node.queued = 0
        node.error = PRUNED_ERROR
        # The whole downstream set is cancelled here, so no failure propagation is needed.
        run.set_state(node, NodeState.CANCELLED)
    return running


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


# Named once: a batch of 10,000 spawns formatted the name 10,000 times (a third of its check).
_KIND_NAMES: dict[type, str] = {
    kind: _snake(kind.__name__)
    for kind in (
        AddNode,
        AddEdge,
        RemoveEdge,
        RemoveNode,
        ModifyNode,
        SplitNode,
        InjectBefore,
        PruneSubgraph,
        MarkSpeculative,
        ConfirmSpeculative,
        DiscardSpeculative,
    )
}
_KIND_NAMES[UnknownMutation] = "unknown"
