"""Graph files: what parses, into what, and the exact message for each malformed file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hivegrid.coordinator.graphfile import (
    GraphFileError,
    load_graph_file,
    parse_graph,
    parse_graph_text,
)

pytestmark = pytest.mark.timeout(10)

FULL_YAML = """
name: nightly
limits: {max_nodes: 100, max_spawn_depth: 3}
nodes:
  - id: a
    agent: echo
    input: {x: 1, y: [true, null, 2.5]}
    retry:
      max_attempts: 3
      initial_backoff_s: 0.5
      max_backoff_s: 10
      multiplier: 2
      jitter: 0.2
    timeout_s: 30
    can_mutate: true
    priority: -2
    labels: {gpu: "a100"}
    metadata: {owner: me}
  - id: b
    agent: sum
    depends_on: [a]
    run_on_failure: true
"""


def test_full_yaml_maps_every_field() -> None:
    request = parse_graph_text(FULL_YAML, fmt="yaml")
    assert request.name == "nightly"
    assert (request.limits.max_nodes, request.limits.max_spawn_depth) == (100, 3)
    a, b = request.nodes
    assert (a.id, a.agent) == ("a", "echo")
    assert json.loads(a.input) == {"x": 1, "y": [True, None, 2.5]}
    assert a.retry.max_attempts == 3
    assert a.retry.initial_backoff_s == 0.5
    assert a.retry.max_backoff_s == 10.0
    assert a.retry.multiplier == 2.0
    assert a.retry.jitter == pytest.approx(0.2)
    assert a.timeout_s == 30.0
    assert a.can_mutate is True
    assert a.priority == -2
    assert dict(a.labels) == {"gpu": "a100"}
    assert dict(a.metadata) == {"owner": "me"}
    assert list(b.depends_on) == ["a"]
    assert b.run_on_failure is True
    assert b.input == b""  # no input: JSON null on the wire


def test_json_and_yaml_give_the_same_request() -> None:
    from_yaml = parse_graph_text(FULL_YAML, fmt="yaml")
    import yaml

    as_json = json.dumps(yaml.safe_load(FULL_YAML))
    assert parse_graph_text(as_json, fmt="json") == from_yaml
    assert parse_graph_text(as_json) == from_yaml  # guessed from the opening brace
    assert parse_graph_text(FULL_YAML) == from_yaml  # guessed: not JSON


def test_minimal_graph_and_optional_nulls() -> None:
    request = parse_graph({"nodes": [{"agent": "echo", "retry": None, "labels": None}]})
    (node,) = request.nodes
    assert node.agent == "echo" and node.id == ""
    assert not node.HasField("retry")
    assert request.name == "" and not request.HasField("limits")


def test_explicit_null_input_is_empty_bytes_and_scalars_encode() -> None:
    request = parse_graph(
        {
            "nodes": [
                {"id": "n", "agent": "a", "input": None},
                {"id": "s", "agent": "a", "input": "héllo"},
                {"id": "i", "agent": "a", "input": 7},
            ]
        }
    )
    assert [n.input for n in request.nodes] == [b"", '"héllo"'.encode(), b"7"]


def test_run_id_is_passed_through() -> None:
    assert parse_graph({"run_id": "r1", "nodes": [{"agent": "a"}]}).run_id == "r1"


def test_load_by_extension(tmp_path: Path) -> None:
    (tmp_path / "g.json").write_text('{"nodes": [{"id": "a", "agent": "echo"}]}')
    (tmp_path / "g.yml").write_text("nodes:\n  - {id: a, agent: echo}\n")
    assert load_graph_file(str(tmp_path / "g.json")) == load_graph_file(str(tmp_path / "g.yml"))


def test_load_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("nodes: [{id: a, agent: echo}]"))
    assert load_graph_file("-").nodes[0].agent == "echo"


def test_yaml_with_json_extension_is_a_json_error(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text("nodes:\n  - agent: echo\n")
    with pytest.raises(GraphFileError, match=r"g\.json: line 1 column 1: invalid JSON"):
        load_graph_file(str(path))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(GraphFileError, match="no such file"):
        load_graph_file(str(tmp_path / "nope.yaml"))
    with pytest.raises(GraphFileError, match="is a directory"):
        load_graph_file(str(tmp_path))


MALFORMED_DOCS = [
    # (document, exact message)
    ([], 'the graph must be an object with a "nodes" list, got a list'),
    ({}, 'missing field "nodes" (a list of nodes)'),
    ({"nodes": {}}, '"nodes" must be a list, got an object'),
    ({"nodes": []}, '"nodes" is empty: a run needs at least one node'),
    ({"node": []}, 'unknown top-level field "node" (did you mean "nodes"?)'),
    (
        {"nodes": [{"agent": "a"}], "limit": {}},
        'unknown top-level field "limit" (did you mean "limits"?)',
    ),
    ({"nodes": [{"agent": "a"}], "name": 3}, "name must be a string, got the number 3"),
    ({"nodes": [{"agent": "a"}], "limits": []}, '"limits" must be an object, got a list'),
    (
        {"nodes": [{"agent": "a"}], "limits": {"max_nodes": -1}},
        "limits.max_nodes must be a non-negative integer, got the number -1",
    ),
    (
        {"nodes": [{"agent": "a"}], "limits": {"max_depth": 1}},
        'limits: unknown field "max_depth" (did you mean "max_spawn_depth"?)',
    ),
    ({"nodes": ["a"]}, 'nodes[0] must be an object, got the string "a"'),
    ({"nodes": [{"id": "a"}]}, 'node "a": missing field "agent"'),
    ({"nodes": [{"id": "a", "agent": None}]}, 'node "a": missing field "agent"'),
    ({"nodes": [{"agent": ""}]}, 'nodes[0]: agent must be a non-empty string, got the string ""'),
    ({"nodes": [{"agent": 5}]}, "nodes[0]: agent must be a non-empty string, got the number 5"),
    (
        {"nodes": [{"id": 5, "agent": "a"}]},
        "nodes[0]: id must be a non-empty string, got the number 5",
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "dependson": ["a"]}]},
        'node "b": unknown field "dependson" (did you mean "depends_on"?)',
    ),
    ({"nodes": [{"id": "b", "agent": "a", "zzz": 1}]}, 'node "b": unknown field "zzz"'),
    (
        {"nodes": [{"id": "b", "agent": "a", "depends_on": "a"}]},
        'node "b": depends_on must be a list of node ids, got the string "a"',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "depends_on": [1]}]},
        'node "b": depends_on[0] must be a node id (a non-empty string), got the number 1',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "retry": 3}]},
        'node "b": retry must be an object, got the number 3',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "retry": {"max_attempt": 3}}]},
        'node "b": retry: unknown field "max_attempt" (did you mean "max_attempts"?)',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "retry": {"max_attempts": "3"}}]},
        'node "b": retry.max_attempts must be a non-negative integer, got the string "3"',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "retry": {"max_attempts": 2.5}}]},
        'node "b": retry.max_attempts must be a non-negative integer, got the number 2.5',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "retry": {"max_attempts": True}}]},
        'node "b": retry.max_attempts must be a non-negative integer, got true',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "retry": {"jitter": 1.5}}]},
        'node "b": retry.jitter must be a number from 0 to 1, got the number 1.5',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "retry": {"initial_backoff_s": -1}}]},
        'node "b": retry.initial_backoff_s must be a non-negative number, got the number -1',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "timeout_s": "10s"}]},
        'node "b": timeout_s must be a non-negative number, got the string "10s"',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "can_mutate": "yes"}]},
        'node "b": can_mutate must be true or false, got the string "yes"',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "run_on_failure": 1}]},
        'node "b": run_on_failure must be true or false, got the number 1',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "priority": 1.5}]},
        'node "b": priority must be an integer (32-bit), got the number 1.5',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "priority": 2**40}]},
        f'node "b": priority must be an integer (32-bit), got the number {2**40}',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "labels": ["gpu"]}]},
        'node "b": labels must be an object of strings, got a list',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "labels": {"gpu": True}}]},
        'node "b": labels["gpu"] must be a string, got true (quote it in YAML)',
    ),
    (
        {"nodes": [{"id": "b", "agent": "a", "metadata": {"n": 2}}]},
        'node "b": metadata["n"] must be a string, got the number 2 (quote it in YAML)',
    ),
    (
        {"nodes": [{"id": "a", "agent": "x"}, {"id": "a", "agent": "y"}]},
        'node "a": duplicate id (nodes[0] and nodes[1])',
    ),
    (
        {"nodes": [{"id": "a", "agent": "x", "depends_on": ["a"]}]},
        'node "a": depends_on names the node itself',
    ),
    (
        {"nodes": [{"id": "ab", "agent": "x"}, {"id": "c", "agent": "x", "depends_on": ["abc"]}]},
        'node "c": depends_on names "abc", which is not a node of this graph (did you mean "ab"?)',
    ),
    (
        {"nodes": [{"agent": "x", "depends_on": ["q"]}]},
        'nodes[0]: depends_on names "q", which is not a node of this graph',
    ),
    (
        {"nodes": [{"id": "a", "agent": "x", "input": {"v": float("nan")}}]},
        'node "a": input.v: nan is not a JSON number',
    ),
]


@pytest.mark.parametrize(("document", "message"), MALFORMED_DOCS)
def test_malformed_document(document: object, message: str) -> None:
    with pytest.raises(GraphFileError) as info:
        parse_graph(document)
    assert str(info.value) == message


MALFORMED_TEXT = [
    # (text, format, exact message with source "g")
    ('{"nodes": [', "json", "g: line 1 column 12: invalid JSON: Expecting value"),
    ('{"nodes": [], "nodes": []}', "json", "g: invalid JSON: duplicate key 'nodes'"),
    (
        '{"nodes": [{"agent": "a", "input": NaN}]}',
        "json",
        "g: invalid JSON: NaN is not a JSON number",
    ),
    (
        "nodes: [\n",
        "yaml",
        "g: line 2 column 1: invalid YAML: expected the node content, but found '<stream end>'",
    ),
    (
        "nodes:\n  - agent: a\n    agent: b\n",
        "yaml",
        "g: line 3: invalid YAML: duplicate key 'agent'",
    ),
    (
        "just a string",
        "yaml",
        'g: the graph must be an object with a "nodes" list, got the string "just a string"',
    ),
    ("", "yaml", 'g: the graph must be an object with a "nodes" list, got null'),
    (
        "nodes:\n  - id: a\n    agent: x\n    input: {when: 2024-01-02}\n",
        "yaml",
        'g: node "a": input.when: date value datetime.date(2024, 1, 2) is not JSON'
        " (quote it in YAML)",
    ),
    (
        "nodes:\n  - id: a\n    agent: x\n    input: {1: one}\n",
        "yaml",
        'g: node "a": input: key 1 is not a string (JSON keys are)',
    ),
    (
        "nodes:\n  - id: a\n    agent: x\n    labels: {version: 2}\n",
        "yaml",
        'g: node "a": labels["version"] must be a string, got the number 2 (quote it in YAML)',
    ),
    ("!!python/object:os.system {}", "yaml", None),  # unsafe tags are refused, not run
]


@pytest.mark.parametrize(("text", "fmt", "message"), MALFORMED_TEXT)
def test_malformed_text(text: str, fmt: str, message: str | None) -> None:
    with pytest.raises(GraphFileError) as info:
        parse_graph_text(text, fmt=fmt, source="g")
    if message is not None:
        assert str(info.value) == message
    else:
        assert "invalid YAML" in str(info.value)


def test_error_keeps_detail_and_source() -> None:
    with pytest.raises(GraphFileError) as info:
        parse_graph_text('{"nodes": []}', source="x.json")
    assert info.value.source == "x.json"
    assert info.value.detail == '"nodes" is empty: a run needs at least one node'
