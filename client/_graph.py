"""A graph builder for code, and what `submit` accepts: a builder, a graph document as a dict,
or the path of a graph file. All three become a submission through `_graphfile`, so that a node
is checked the same way whichever form it came in."""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb

from ._errors import GraphFileError
from ._graphfile import load_graph_file, parse_graph, parse_node

__all__ = ["Graph", "GraphLike", "NodeRef", "submission"]


@dataclass(frozen=True)
class NodeRef:
    """A handle on a node of a Graph: pass it in another node's `after`."""

    id: str
    _graph: Graph = field(repr=False, compare=False)

    def __str__(self) -> str:
        return self.id


Dependency: TypeAlias = NodeRef | str


class Graph:
    """Builds a graph in code. A node may depend only on nodes added before it (by handle or by
    id), so a built graph has no cycles, and each node is checked as it is added.

        g = Graph(name="demo")
        a = g.node("sum", {"values": [1, 2]})          # id "sum-1"
        b = g.node("echo", {"x": 1}, after=[a], id="b")
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        max_nodes: int | None = None,
        max_spawn_depth: int | None = None,
    ) -> None:
        head: dict[str, Any] = {"nodes": [{"agent": "-"}]}
        if name is not None:
            head["name"] = name
        limits = {
            key: value
            for key, value in (("max_nodes", max_nodes), ("max_spawn_depth", max_spawn_depth))
            if value is not None
        }
        if limits:
            head["limits"] = limits
        template = parse_graph(head)  # checks the name and the limits like a file's
        del template.nodes[:]
        self._template = template
        self._head = {k: v for k, v in head.items() if k != "nodes"}
        self._specs: list[gpb.NodeSpec] = []
        self._index: dict[str, int] = {}
        # Per agent: the number its next default id tries first.
        self._counters: dict[str, int] = {}

    @property
    def name(self) -> str | None:
        name: str | None = self._head.get("name")
        return name

    def node(
        self,
        agent: str,
        input: Any = None,
        *,
        id: str | None = None,
        after: Dependency | Iterable[Dependency] = (),
        retry: int | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        can_mutate: bool | None = None,
        run_on_failure: bool | None = None,
    ) -> NodeRef:
        """Adds a node and returns its handle.

        `input` is any JSON value. `id` defaults to "<agent>-<n>". `after`: the nodes it waits
        for (handles or ids). `retry`: total attempts, or a retry policy as in a graph file
        ({"max_attempts": 3, "initial_backoff_s": 1, ...}). `timeout`: seconds per attempt.
        `labels`: what a worker must have to run it. Raises GraphFileError (an InvalidGraph).
        """
        doc: dict[str, Any] = {}
        counted = 0
        if id is not None:
            doc["id"] = id
        elif isinstance(agent, str) and agent:
            doc["id"], counted = self._next_id(agent)
        doc["agent"] = agent
        if input is not None:
            doc["input"] = input
        deps = self._deps(after, doc.get("id"))
        if deps:
            doc["depends_on"] = deps
        if isinstance(retry, int) and not isinstance(retry, bool):
            retry = {"max_attempts": retry}
        options = {
            "retry": retry,
            "timeout_s": timeout,
            "priority": priority,
            "labels": labels,
            "metadata": metadata,
            "can_mutate": can_mutate,
            "run_on_failure": run_on_failure,
        }
        doc.update((key, value) for key, value in options.items() if value is not None)
        spec = parse_node(doc, len(self._specs))
        if spec.id in self._index:
            raise GraphFileError(
                f"node {json.dumps(spec.id)}: duplicate id (the graph already has a node "
                f"{json.dumps(spec.id)})"
            )
        if counted:
            self._counters[agent] = counted + 1
        # Only the checked form is kept: later changes to the caller's objects do not reach
        # the graph, and a large graph is held once.
        self._index[spec.id] = len(self._specs)
        self._specs.append(spec)
        return NodeRef(spec.id, self)

    def _next_id(self, agent: str) -> tuple[str, int]:
        n = self._counters.get(agent, 1)
        while f"{agent}-{n}" in self._index:
            n += 1
        return f"{agent}-{n}", n

    def _deps(self, after: Dependency | Iterable[Dependency], node_id: object) -> list[str]:
        label = f"node {json.dumps(node_id)}" if isinstance(node_id, str) else "the node"
        items = [after] if isinstance(after, NodeRef | str) else list(after)
        out = []
        for dep in items:
            if isinstance(dep, NodeRef):
                if dep._graph is not self:
                    raise GraphFileError(
                        f"{label}: after names node {json.dumps(dep.id)} of another graph"
                    )
                out.append(dep.id)
            elif isinstance(dep, str):
                if dep not in self._index:
                    close = difflib.get_close_matches(dep, list(self._index), n=1, cutoff=0.6)
                    hint = f" (did you mean {json.dumps(close[0])}?)" if close else ""
                    raise GraphFileError(
                        f"{label}: after names {json.dumps(dep)}, which is not a node of this "
                        f"graph{hint} (add a node before the nodes that depend on it)"
                    )
                out.append(dep)
            else:
                raise GraphFileError(
                    f"{label}: after must hold node handles or ids, got {type(dep).__name__}"
                )
        return out

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, node: object) -> bool:
        if isinstance(node, NodeRef):
            return node._graph is self and node.id in self._index
        return isinstance(node, str) and node in self._index

    def __iter__(self) -> Iterator[NodeRef]:
        return (NodeRef(spec.id, self) for spec in self._specs)

    def __getitem__(self, node_id: str) -> NodeRef:
        if node_id not in self._index:
            raise KeyError(node_id)
        return NodeRef(node_id, self)

    def to_dict(self) -> dict[str, Any]:
        """The graph in graph-file form (what `hivegrid submit` reads, as JSON or YAML)."""
        out = copy.deepcopy(self._head)
        out["nodes"] = [_document(spec) for spec in self._specs]
        return out

    def _request(self) -> rpb.SubmitRunRequest:
        if not self._specs:
            raise GraphFileError("the graph has no nodes: a run needs at least one")
        request = rpb.SubmitRunRequest()
        request.CopyFrom(self._template)
        request.nodes.extend(self._specs)
        return request

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"<Graph{name}: {len(self)} nodes>"


_RETRY_FIELDS = ("max_attempts", "initial_backoff_s", "max_backoff_s", "multiplier", "jitter")


def _document(spec: gpb.NodeSpec) -> dict[str, Any]:
    """A node in graph-file form, with only the fields that differ from their defaults."""
    doc: dict[str, Any] = {"id": spec.id, "agent": spec.agent}
    if spec.input:
        doc["input"] = json.loads(spec.input)
    if spec.depends_on:
        doc["depends_on"] = list(spec.depends_on)
    if spec.HasField("retry"):
        doc["retry"] = {
            name: getattr(spec.retry, name) for name in _RETRY_FIELDS if getattr(spec.retry, name)
        }
    for name in ("timeout_s", "priority", "can_mutate", "run_on_failure"):
        if getattr(spec, name):
            doc[name] = getattr(spec, name)
    for name in ("labels", "metadata"):
        if getattr(spec, name):
            doc[name] = dict(getattr(spec, name))
    return doc


GraphLike: TypeAlias = Graph | Mapping[str, Any] | str | os.PathLike[str]


def submission(graph: GraphLike) -> rpb.SubmitRunRequest:
    """The SubmitRunRequest for a builder, a graph document, or a graph file's path."""
    if isinstance(graph, Graph):
        return graph._request()
    if isinstance(graph, Mapping):
        return parse_graph(graph)
    if isinstance(graph, str | os.PathLike):
        return load_graph_file(os.fspath(graph))
    raise TypeError(
        f"a graph is a Graph, a dict shaped like a graph file, or a file's path, "
        f"not {type(graph).__name__}"
    )
