"""The mutation builder and the JSON form of mutations."""

from __future__ import annotations

import pytest

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.worker import MutationBuilder, mutations_from_json, node_spec


def test_builder_matches_the_json_form() -> None:
    b = MutationBuilder()
    b.add_node("n", "echo", {"x": 1}, depends_on=["a"], retry={"max_attempts": 3}, priority=2)
    b.add_node("s", "echo", speculative=True, labels={"gpu": "1"}, timeout_s=1.5, can_mutate=True)
    b.add_edge("a", "b")
    b.remove_edge("a", "b")
    b.remove_node("r")
    b.modify_node("m", input=None, timeout_s=2.0)
    b.split_node("p", [node_spec("p1", "echo", 1), {"id": "p2", "agent": "echo", "input": [2]}])
    b.inject_before("t", {"id": "i", "agent": "value", "input": {"value": 3}})
    b.prune_subgraph("root")
    b.mark_speculative("x")
    b.confirm_speculative("y")
    b.discard_speculative("z")
    same = mutations_from_json(
        [
            {
                "add_node": {
                    "node": {
                        "id": "n",
                        "agent": "echo",
                        "input": {"x": 1},
                        "depends_on": ["a"],
                        "retry": {"max_attempts": 3},
                        "priority": 2,
                    }
                }
            },
            {
                "add_node": {
                    "node": {
                        "id": "s",
                        "agent": "echo",
                        "labels": {"gpu": "1"},
                        "timeout_s": 1.5,
                        "can_mutate": True,
                    },
                    "speculative": True,
                }
            },
            {"add_edge": {"from_id": "a", "to_id": "b"}},
            {"remove_edge": {"from_id": "a", "to_id": "b"}},
            {"remove_node": {"id": "r"}},
            {"modify_node": {"id": "m", "input": None, "timeout_s": 2.0}},
            {
                "split_node": {
                    "id": "p",
                    "replacements": [
                        {"id": "p1", "agent": "echo", "input": 1},
                        {"id": "p2", "agent": "echo", "input": [2]},
                    ],
                }
            },
            {
                "inject_before": {
                    "target_id": "t",
                    "node": {"id": "i", "agent": "value", "input": {"value": 3}},
                }
            },
            {"prune_subgraph": {"root_id": "root"}},
            {"mark_speculative": {"id": "x"}},
            {"confirm_speculative": {"id": "y"}},
            {"discard_speculative": {"id": "z"}},
        ]
    )
    assert b.mutations == same


def test_modify_node_sets_only_what_is_given() -> None:
    b = MutationBuilder()
    b.modify_node("a", priority=0)
    b.modify_node("b", input=None)
    a, c = (m.modify_node for m in b.mutations)
    assert a.HasField("priority") and a.priority == 0
    assert not a.HasField("input") and not a.HasField("timeout_s") and not a.HasField("retry")
    assert c.HasField("input") and c.input == b"" and not c.HasField("priority")


def test_inputs_are_json_bytes() -> None:
    (m,) = mutations_from_json([{"add_node": {"node": {"id": "n", "agent": "e", "input": "hi"}}}])
    assert m.add_node.node.input == b'"hi"'
    assert node_spec("n", "e").input == b""


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ([{}], "exactly one key"),
        ([{"add_edge": {}, "remove_edge": {}}], "exactly one key"),
        (["add_edge"], "exactly one key"),
        ([{"explode": {}}], "unknown kind 'explode'"),
        ([{"add_edge": {"from": "a"}}], "mutation 1 \\(add_edge\\)"),
        ([{"add_edge": {"from_id": "a", "to_id": "b"}}, {"add_node": []}], "mutation 2"),
        ([{"split_node": {"id": "a", "replacements": {}}}], "must be a list"),
    ],
)
def test_malformed_json_is_a_clear_error(items: list[object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        mutations_from_json(items)  # type: ignore[arg-type]


def test_retry_policy_message_is_accepted() -> None:
    policy = gpb.RetryPolicy(max_attempts=4, jitter=0.5)
    assert node_spec("n", "e", retry=policy).retry == policy
