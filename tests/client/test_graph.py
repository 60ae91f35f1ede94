"""The graph builder, and the one conversion every graph form goes through (no coordinator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hivegrid.client import Graph, GraphFileError, InvalidGraph, NodeRef
from hivegrid.client._graph import submission
from hivegrid.coordinator.graphfile import parse_graph

pytestmark = pytest.mark.timeout(10)


def test_nodes_get_default_ids_and_depend_by_handle() -> None:
    g = Graph(name="demo")
    a = g.node("sum", {"values": [1, 2]})
    b = g.node("sum", {"values": [3]})
    c = g.node("echo", {"x": 1}, after=[a, b], id="c")
    d = g.node("echo", after=c)  # one handle, not in a list
    assert (a.id, b.id, c.id, d.id) == ("sum-1", "sum-2", "c", "echo-1")
    assert isinstance(a, NodeRef) and str(a) == "sum-1"
    assert g.to_dict() == {
        "name": "demo",
        "nodes": [
            {"id": "sum-1", "agent": "sum", "input": {"values": [1, 2]}},
            {"id": "sum-2", "agent": "sum", "input": {"values": [3]}},
            {"id": "c", "agent": "echo", "input": {"x": 1}, "depends_on": ["sum-1", "sum-2"]},
            {"id": "echo-1", "agent": "echo", "depends_on": ["c"]},
        ],
    }
    assert len(g) == 4 and "c" in g and a in g and [n.id for n in g] == [a.id, b.id, "c", d.id]


def test_dependencies_by_string_id_and_every_option() -> None:
    g = Graph(max_nodes=50, max_spawn_depth=2)
    g.node("value", {"value": 1}, id="v")
    g.node(
        "echo",
        None,
        id="e",
        after=["v"],
        retry=3,
        timeout=2.5,
        priority=-1,
        labels={"gpu": "a100"},
        metadata={"owner": "me"},
        can_mutate=True,
        run_on_failure=True,
    )
    g.node("echo", id="f", retry={"max_attempts": 2, "initial_backoff_s": 0.1})
    request = submission(g)
    assert (request.limits.max_nodes, request.limits.max_spawn_depth) == (50, 2)
    e = request.nodes[1]
    assert list(e.depends_on) == ["v"] and e.retry.max_attempts == 3 and e.timeout_s == 2.5
    assert (e.priority, dict(e.labels), dict(e.metadata)) == (-1, {"gpu": "a100"}, {"owner": "me"})
    assert e.can_mutate and e.run_on_failure and e.input == b""
    assert request.nodes[2].retry.initial_backoff_s == 0.1


def test_a_builder_a_dict_and_a_file_make_the_same_submission(tmp_path: Path) -> None:
    g = Graph(name="same")
    a = g.node("value", {"value": 2}, id="a")
    g.node("sum", after=[a], id="s", retry=2)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(g.to_dict()))
    yaml_path = tmp_path / "g.yaml"
    yaml_path.write_text(
        "name: same\nnodes:\n  - {id: a, agent: value, input: {value: 2}}\n"
        "  - {id: s, agent: sum, depends_on: [a], retry: {max_attempts: 2}}\n"
    )
    built = submission(g)
    assert submission(g.to_dict()) == built
    assert submission(str(path)) == built
    assert submission(yaml_path) == built  # a Path as well as a str
    assert parse_graph(g.to_dict()) == built  # the CLI's parser is the same one


def test_duplicate_id_is_refused_and_the_graph_is_unchanged() -> None:
    g = Graph()
    g.node("echo", id="a")
    with pytest.raises(GraphFileError) as info:
        g.node("sum", id="a")
    assert str(info.value) == 'node "a": duplicate id (the graph already has a node "a")'
    assert isinstance(info.value, InvalidGraph) and isinstance(info.value, ValueError)
    assert len(g) == 1


def test_a_default_id_skips_ids_already_taken() -> None:
    g = Graph()
    g.node("echo", id="echo-1")
    assert g.node("echo").id == "echo-2"


def test_dependency_on_a_node_not_in_the_graph() -> None:
    g = Graph()
    g.node("echo", id="alpha")
    with pytest.raises(GraphFileError) as info:
        g.node("echo", id="b", after=["alpah"])
    assert str(info.value) == (
        'node "b": after names "alpah", which is not a node of this graph (did you mean '
        '"alpha"?) (add a node before the nodes that depend on it)'
    )
    other = Graph().node("echo", id="x")
    with pytest.raises(GraphFileError, match='after names node "x" of another graph'):
        g.node("echo", after=[other])
    with pytest.raises(GraphFileError, match="after must hold node handles or ids, got int"):
        g.node("echo", after=[3])  # type: ignore[list-item]
    assert len(g) == 1
    # A failed node() does not use up a default id.
    assert g.node("echo").id == "echo-1"


def test_options_are_checked_as_a_graph_file_checks_them() -> None:
    g = Graph()
    with pytest.raises(GraphFileError) as info:
        g.node("echo", id="n", retry={"max_attempt": 2})
    assert str(info.value) == (
        'node "n": retry: unknown field "max_attempt" (did you mean "max_attempts"?)'
    )
    with pytest.raises(GraphFileError, match=r'node "n": timeout_s must be a non-negative'):
        g.node("echo", id="n", timeout=-1)
    with pytest.raises(GraphFileError, match=r"input\.v: nan is not a JSON number"):
        g.node("echo", {"v": float("nan")}, id="n")
    with pytest.raises(GraphFileError, match="agent must be a non-empty string"):
        g.node("")
    with pytest.raises(GraphFileError, match="name must be a string"):
        Graph(name=3)  # type: ignore[arg-type]
    with pytest.raises(GraphFileError, match=r"limits\.max_nodes must be a non-negative integer"):
        Graph(max_nodes=-1)


def test_the_graph_keeps_what_it_checked() -> None:
    g = Graph()
    value = {"list": [1]}
    g.node("echo", value, id="a")
    value["list"].append(2)  # the caller's object changes after the fact
    assert g.to_dict()["nodes"][0]["input"] == {"list": [1]}
    assert json.loads(submission(g).nodes[0].input) == {"list": [1]}


def test_an_empty_graph_and_a_non_graph_are_refused() -> None:
    with pytest.raises(GraphFileError, match="the graph has no nodes"):
        submission(Graph())
    with pytest.raises(GraphFileError, match='"nodes" is empty'):
        submission({"nodes": []})
    with pytest.raises(TypeError, match="not int"):
        submission(5)  # type: ignore[arg-type]
    with pytest.raises(GraphFileError, match="no such file"):
        submission("/nonexistent/graph.yaml")
