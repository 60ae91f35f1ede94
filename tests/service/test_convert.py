"""The wire form of a node and the core's agree field by field."""

from __future__ import annotations

from hivegrid.coordinator import snapshot
from hivegrid.coordinator.core import Core, NodeSpec, RetryPolicy, SubmitRun
from hivegrid.coordinator.service import convert
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


def test_a_spec_survives_the_round_trip_through_a_snapshot() -> None:
    full = gpb.NodeSpec(
        id="a",
        agent="summarise",
        input=b'{"x":1}',
        retry=gpb.RetryPolicy(
            max_attempts=3, initial_backoff_s=0.5, max_backoff_s=9, multiplier=3, jitter=0.1
        ),
        timeout_s=7.5,
        priority=-2,
        labels={"zone": "b"},
        can_mutate=True,
        metadata={"k": "v"},
        run_on_failure=True,
    )
    plain = gpb.NodeSpec(id="b", agent="echo", depends_on=["a"])
    core = Core(lease_epoch=1)
    specs = [convert.spec_from_pb(full), convert.spec_from_pb(plain)]
    core.submit_run(SubmitRun(run_id="r", specs=tuple(specs), seed=1), now=0.0)
    restored = Core(lease_epoch=2)
    snapshot.load(restored, snapshot.dump(core), now=0.0)
    nodes = restored.runs["r"].nodes
    assert [nodes[s.id].spec for s in specs] == specs
    assert nodes["b"].deps == ["a"]
    # Only what differs from the defaults is written.
    assert convert.spec_to_pb(specs[1], ["a"]) == plain
    assert convert.spec_to_pb(specs[0], []) == full
