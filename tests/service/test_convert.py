"""The wire form of a node and the core's agree field by field."""

from __future__ import annotations

from coordinator import convert
from coordinator.core import NodeSpec, RetryPolicy
from hivegrid.v1 import graph_pb2 as gpb


def test_every_node_field_lands_in_its_own_place() -> None:
    # Distinct values everywhere, and the two flags set opposite ways both times, so that a
    # field read into its neighbour's slot shows.
    for can_mutate in (True, False):
        msg = gpb.NodeSpec(
            id="a",
            agent="summarise",
            input=b'{"x":1}',
            depends_on=["p", "q"],
            retry=gpb.RetryPolicy(
                max_attempts=3, initial_backoff_s=0.5, max_backoff_s=9, multiplier=3, jitter=0.1
            ),
            timeout_s=7.5,
            priority=4,
            labels={"zone": "b", "gpu": "1"},
            can_mutate=can_mutate,
            metadata={"k": "v"},
            run_on_failure=not can_mutate,
        )
        assert convert.spec_from_pb(msg) == NodeSpec(
            id="a",
            agent="summarise",
            input=b'{"x":1}',
            depends_on=("p", "q"),
            retry=RetryPolicy(
                max_attempts=3, initial_backoff_s=0.5, max_backoff_s=9, multiplier=3, jitter=0.1
            ),
            timeout_s=7.5,
            priority=4,
            labels=(("gpu", "1"), ("zone", "b")),
            can_mutate=can_mutate,
            metadata={"k": "v"},
            run_on_failure=not can_mutate,
        )


def test_unset_fields_take_the_defaults() -> None:
    spec = convert.spec_from_pb(gpb.NodeSpec(agent="echo"), "n1")
    assert spec == NodeSpec(id="n1", agent="echo")
