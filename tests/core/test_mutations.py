"""Mutation batches: each kind's effect on readiness, and every rejection leaving the run as it
was (from a client, a GraphError; from a node, a failed attempt the retry policy handles)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from hivegrid.coordinator.core import (
    AckStatus,
    AddEdge,
    AddNode,
    Assignment,
    ConfirmSpeculative,
    DiscardSpeculative,
    GraphError,
    InjectBefore,
    MarkSpeculative,
    ModifyNode,
    Mutation,
    PruneSubgraph,
    RemoveEdge,
    RemoveNode,
    RetryPolicy,
    RunLimits,
    RunState,
    SplitNode,
)

from .conftest import CX, FL, OK, RD, RN, SK, SP, Driver, P, kinds, retry, spec, transitions_of


def ids(assignments: Sequence[Assignment]) -> list[str]:
    return [a.node_id for a in assignments]


# --- effects on readiness ----------------------------------------------------------------


def test_add_node_without_deps_is_ready_and_runs(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.open(4)
    drv.dispatch()
    records = drv.mutate([AddNode(spec("x"))])
    assert kinds(records) == ["mutated"]
    assert transitions_of(records) == [("x", P), ("x", RD)]
    assert ids(drv.dispatch()) == ["x"]


def test_add_node_waits_on_unfinished_deps_and_not_on_succeeded_ones(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", agent="other")])
    drv.complete("a")
    drv.mutate([AddNode(spec("x", "a")), AddNode(spec("y", "a", "b"))])
    assert drv.state("x") is RD
    assert drv.state("y") is P
    assert drv.node("y").waiting == 1


def test_add_node_speculative_is_never_dispatched(drv: Driver) -> None:
    drv.submit([spec("a", agent="other")])
    drv.open(4)
    drv.mutate([AddNode(spec("x"), speculative=True)])
    assert drv.state("x") is SP
    assert drv.dispatch() == []


def test_nodes_added_by_a_node_record_parent_and_depth(drv: Driver) -> None:
    drv.submit([spec("p", can_mutate=True)])
    a = drv.run_to("p")
    status, _ = drv.succeed(a, mutations=[AddNode(spec("c", "p", can_mutate=True))])
    assert status is AckStatus.COMMITTED
    c = drv.node("c")
    assert (c.parent_id, c.depth) == ("p", 1)
    # The child depends on its (now succeeded) parent: ready at once.
    assert c.state is RD
    b = drv.dispatch_one("c")
    drv.succeed(b, mutations=[AddNode(spec("g"))])
    assert (drv.node("g").parent_id, drv.node("g").depth) == ("c", 2)


def test_add_edge_makes_a_ready_target_wait(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("b")])
    drv.open(4)
    records = drv.mutate([AddEdge("a", "b")])
    assert transitions_of(records) == [("b", P)]
    assert drv.dispatch() == []  # the stale queue entry of b is dropped
    drv.open(1, agents=["slow"])
    drv.succeed(drv.dispatch_one("a"))
    assert drv.state("b") is RD
    assert ids(drv.dispatch()) == ["b"]


def test_add_edge_from_a_succeeded_node_keeps_target_ready(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", agent="other")])
    drv.complete("a")
    drv.mutate([AddEdge("a", "b")])
    assert drv.state("b") is RD
    assert drv.node("b").deps == ["a"]


def test_remove_edge_may_make_target_ready(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("b", agent="slow"), spec("t", "a", "b")])
    drv.open(4)
    drv.mutate([RemoveEdge("a", "t")])
    assert drv.state("t") is P  # still waits on b
    records = drv.mutate([RemoveEdge("b", "t")])
    assert transitions_of(records) == [("t", RD)]
    assert ids(drv.dispatch()) == ["t"]


def test_remove_node_takes_it_out_and_frees_dependents(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("m", "a"), spec("t", "m")])
    drv.mutate([RemoveNode("m")])
    assert "m" not in drv.run.nodes
    assert drv.node("t").deps == []
    assert drv.state("t") is RD
    assert "m" not in drv.node("a").dependents


def test_removed_ready_node_is_never_dispatched(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b")])
    drv.mutate([RemoveNode("a")])
    drv.open(4)
    assert ids(drv.dispatch()) == ["b"]


def test_removing_the_last_unfinished_node_ends_the_run(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", agent="other")])
    drv.complete("a")
    records = drv.mutate([RemoveNode("b")])
    assert kinds(records) == ["mutated", "ended"]
    assert drv.run.state is RunState.SUCCEEDED


def test_modify_node_changes_only_given_fields(drv: Driver) -> None:
    before = spec("a", input=b"1", priority=1, timeout_s=5.0, metadata={"k": "v"})
    drv.submit([before])
    new_retry = RetryPolicy(max_attempts=3)
    drv.mutate([ModifyNode("a", input=b"2", retry=new_retry)])
    after = drv.node("a").spec
    assert (after.input, after.retry, after.priority, after.timeout_s) == (b"2", new_retry, 1, 5.0)
    assert after.metadata == {"k": "v"}
    drv.mutate([ModifyNode("a", priority=9, timeout_s=0.5)])
    after = drv.node("a").spec
    assert (after.input, after.priority, after.timeout_s) == (b"2", 9, 0.5)


def test_modify_priority_of_a_ready_node_reorders_the_queue(drv: Driver) -> None:
    drv.submit([spec("a", priority=5), spec("b", priority=1), spec("c", priority=3)])
    drv.mutate([ModifyNode("b", priority=10)])
    drv.open(1)
    order = []
    for _ in range(3):
        (a,) = drv.dispatch()
        order.append(a.node_id)
        drv.succeed(a)
    assert order == ["b", "a", "c"]


def test_split_node_rewires_dependents_onto_replacements(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("s", "a"), spec("d", "s"), spec("e", "s")])
    drv.mutate([SplitNode("s", (spec("s1"), spec("s2"), spec("s3", "a")))])
    assert "s" not in drv.run.nodes
    # Replacements without dependencies inherit the split node's.
    assert [drv.node(i).deps for i in ("s1", "s2", "s3")] == [["a"], ["a"], ["a"]]
    assert sorted(drv.node("d").deps) == ["s1", "s2", "s3"]
    assert sorted(drv.node("e").deps) == ["s1", "s2", "s3"]
    assert sorted(drv.node("a").dependents) == ["s1", "s2", "s3"]
    drv.open(8, agents=["a", "slow"])
    drv.succeed(drv.dispatch_one("a"))
    got = {a.node_id: a for a in drv.dispatch()}
    assert sorted(got) == ["s1", "s2", "s3"]
    drv.succeed(got["s1"])
    drv.succeed(got["s2"])
    assert drv.state("d") is P  # still waits on s3
    drv.succeed(got["s3"])
    assert sorted(ids(drv.dispatch())) == ["d", "e"]


def test_split_node_replacement_keeps_its_own_deps(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("z", agent="slow"), spec("s", "a"), spec("d", "s")])
    drv.mutate([SplitNode("s", (spec("s1", "z"),))])
    assert drv.node("s1").deps == ["z"]
    assert drv.node("d").deps == ["s1"]


def test_split_of_a_ready_node_gives_ready_replacements(drv: Driver) -> None:
    drv.submit([spec("s"), spec("d", "s")])
    drv.mutate([SplitNode("s", (spec("s1"), spec("s2")))])
    assert (drv.state("s1"), drv.state("s2"), drv.state("d")) == (RD, RD, P)


def test_inject_before_inherits_target_deps_and_makes_target_wait(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("t", "a")])
    drv.mutate([InjectBefore("t", spec("x"))])
    assert drv.node("x").deps == ["a"]
    assert drv.node("t").deps == ["a", "x"]
    drv.open(4, agents=["a", "slow"])
    drv.succeed(drv.dispatch_one("a"))
    assert (drv.state("x"), drv.state("t")) == (RD, P)
    drv.succeed(drv.dispatch_one("x"))
    assert drv.state("t") is RD


def test_inject_before_a_ready_target_makes_it_pending(drv: Driver) -> None:
    drv.submit([spec("t")])
    records = drv.mutate([InjectBefore("t", spec("x"))])
    assert ("t", P) in transitions_of(records)
    assert (drv.state("x"), drv.state("t")) == (RD, P)
    drv.open(4)
    assert ids(drv.dispatch()) == ["x"]


def test_prune_cancels_subtree_and_running_nodes_get_cancel_orders(drv: Driver) -> None:
    drv.submit(
        [
            spec("r"),
            spec("b"),
            spec("c", "r"),
            spec("d", "c", "b"),
            spec("other"),
        ]
    )
    sid = drv.open(8)
    got = {a.node_id: a for a in drv.dispatch()}
    assert sorted(got) == ["b", "other", "r"]
    drv.mutate([PruneSubgraph("r")])
    assert {i: drv.state(i) for i in ("r", "c", "d")} == {"r": CX, "c": CX, "d": CX}
    assert drv.state("b") is RN and drv.state("other") is RN
    (order,) = drv.cancels
    assert (order.session_id, order.node_id, order.reason) == (sid, "r", "pruned")
    assert (order.attempt, order.lease) == (got["r"].attempt, got["r"].lease)
    assert drv.node("r").error.kind == "cancelled"
    # The worker acknowledges the cancel: committed, and its slot is free again.
    assert drv.cancelled(got["r"])[0] is AckStatus.COMMITTED
    assert got["r"].lease not in drv.core.sessions[sid].in_flight
    # A result that raced the cancel is stale and resurrects nothing.
    drv.succeed(got["b"])
    drv.succeed(got["other"])
    assert drv.state("d") is CX
    # Pruned nodes do not fail the run.
    assert drv.run.state is RunState.SUCCEEDED


def test_prune_by_a_node_of_its_own_subtree_spares_the_sender(drv: Driver) -> None:
    drv.submit([spec("p", can_mutate=True), spec("c", "p")])
    a = drv.run_to("p")
    assert drv.succeed(a, mutations=[PruneSubgraph("p")])[0] is AckStatus.COMMITTED
    assert (drv.state("p"), drv.state("c")) == (OK, CX)
    assert drv.run.state is RunState.SUCCEEDED


def test_mark_confirm_speculative(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", agent="slow"), spec("c", "b")])
    drv.open(4)
    drv.mutate([MarkSpeculative("a"), MarkSpeculative("c")])
    assert drv.dispatch() == []
    drv.mutate([ConfirmSpeculative("a"), ConfirmSpeculative("c")])
    assert (drv.state("a"), drv.state("c")) == (RD, P)
    assert ids(drv.dispatch()) == ["a"]


def test_speculative_node_whose_deps_finish_waits_for_confirmation(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", "a")])
    drv.mutate([MarkSpeculative("b")])
    drv.complete("a")
    assert drv.state("b") is SP
    assert drv.dispatch() == []
    drv.mutate([ConfirmSpeculative("b")])
    assert ids(drv.dispatch()) == ["b"]


def test_discard_speculative_skips_what_waits_on_it(drv: Driver) -> None:
    drv.submit(
        [
            spec("s", agent="slow"),
            spec("d", "s"),
            spec("e", "d"),
            spec("f", "s", run_on_failure=True),
        ]
    )
    drv.mutate([MarkSpeculative("s")])
    drv.mutate([DiscardSpeculative("s")])
    assert {i: drv.state(i) for i in "sdef"} == {"s": SK, "d": SK, "e": SK, "f": RD}
    assert drv.node("s").error.kind == "skipped"


def test_speculative_added_then_confirmed_in_one_batch(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow")])
    drv.mutate([AddNode(spec("x"), speculative=True), ConfirmSpeculative("x")])
    assert drv.state("x") is RD


def test_a_batch_sees_the_nodes_added_earlier_in_it(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow")])
    drv.mutate(
        [
            AddNode(spec("x")),
            AddNode(spec("y", "x")),
            AddEdge("a", "x"),
            ModifyNode("y", priority=4),
            RemoveEdge("x", "y"),
        ]
    )
    assert drv.node("x").deps == ["a"] and drv.state("x") is P
    assert drv.node("y").deps == [] and drv.state("y") is RD
    assert drv.node("y").spec.priority == 4


# --- rejections --------------------------------------------------------------------------


def rejection_setup(drv: Driver, limits: RunLimits | None = None) -> None:
    """done: SUCCEEDED, run: RUNNING, pend: PENDING on run, ready: READY (nobody runs it)."""
    drv.submit(
        [spec("done"), spec("run"), spec("pend", "run"), spec("ready", agent="nobody")],
        limits=limits,
    )
    drv.complete("done")
    drv.run_to("run")
    assert drv.states() == {"done": OK, "run": RN, "pend": P, "ready": RD}


BAD_JITTER = RetryPolicy(max_attempts=2, jitter=1.5)

REJECTED: dict[str, list[Mutation]] = {
    "cycle_two_edges": [AddEdge("ready", "pend"), AddEdge("pend", "ready")],
    "cycle_new_node": [AddNode(spec("x", "pend")), AddEdge("x", "pend")],
    "cycle_self_dep": [AddNode(spec("x", "x"))],
    "cycle_split": [
        SplitNode("pend", (spec("p1"),)),
        AddEdge("p1", "ready"),
        AddEdge("ready", "p1"),
    ],
    "unknown_add_edge_from": [AddEdge("zz", "pend")],
    "unknown_add_edge_to": [AddEdge("run", "zz")],
    "unknown_remove_edge": [RemoveEdge("zz", "pend")],
    "unknown_remove_node": [RemoveNode("zz")],
    "unknown_modify": [ModifyNode("zz", priority=1)],
    "unknown_split": [SplitNode("zz", (spec("x"),))],
    "unknown_inject": [InjectBefore("zz", spec("x"))],
    "unknown_prune": [PruneSubgraph("zz")],
    "unknown_mark": [MarkSpeculative("zz")],
    "unknown_confirm": [ConfirmSpeculative("zz")],
    "unknown_discard": [DiscardSpeculative("zz")],
    "unknown_dep_of_new_node": [AddNode(spec("x", "zz"))],
    "removed_earlier_in_batch": [RemoveNode("ready"), AddEdge("ready", "pend")],
    "duplicate_existing": [AddNode(spec("pend"))],
    "duplicate_in_batch": [AddNode(spec("x")), AddNode(spec("x"))],
    "duplicate_split_replacement": [SplitNode("pend", (spec("ready"),))],
    "duplicate_inject": [InjectBefore("pend", spec("done"))],
    "started_add_edge_running": [AddEdge("ready", "run")],
    "started_add_edge_done": [AddEdge("ready", "done")],
    "started_remove_edge": [RemoveEdge("done", "run")],
    "started_remove_node": [RemoveNode("run")],
    "started_remove_done": [RemoveNode("done")],
    "started_modify": [ModifyNode("run", priority=3)],
    "started_split": [SplitNode("done", (spec("x"),))],
    "started_inject": [InjectBefore("run", spec("x"))],
    "started_mark": [MarkSpeculative("run")],
    "confirm_not_speculative": [ConfirmSpeculative("pend")],
    "discard_not_speculative": [DiscardSpeculative("ready")],
    "mark_twice": [MarkSpeculative("pend"), MarkSpeculative("pend")],
    "edge_exists": [AddEdge("run", "pend")],
    "remove_missing_edge": [RemoveEdge("ready", "pend")],
    "split_without_replacements": [SplitNode("pend", ())],
    "bad_jitter_add": [AddNode(spec("x", retry=BAD_JITTER))],
    "bad_jitter_negative": [AddNode(spec("x", retry=RetryPolicy(jitter=-0.1)))],
    "bad_jitter_modify": [ModifyNode("pend", retry=BAD_JITTER)],
    "negative_backoff": [ModifyNode("pend", retry=RetryPolicy(initial_backoff_s=-1))],
    "negative_timeout_modify": [ModifyNode("pend", timeout_s=-1.0)],
    "negative_timeout_add": [AddNode(spec("x", timeout_s=-1.0))],
    "empty_id": [AddNode(spec(""))],
    "no_agent": [AddNode(spec("x", agent=""))],
    "dep_listed_twice": [AddNode(spec("x", "run", "run"))],
    # A valid prefix is not applied when a later mutation fails.
    "valid_prefix": [AddNode(spec("x")), ModifyNode("ready", priority=7), RemoveNode("zz")],
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_client_batch_rejected_leaves_run_unchanged(name: str, drv: Driver) -> None:
    rejection_setup(drv)
    before = drv.snapshot()
    logged = len(drv.log)
    with pytest.raises(GraphError):
        drv.mutate(REJECTED[name])
    assert drv.snapshot() == before
    assert len(drv.log) == logged  # a rejected client batch is not logged
    assert drv.cancels == []


def test_over_max_nodes_rejected(drv: Driver) -> None:
    rejection_setup(drv, RunLimits(max_nodes=5))
    drv.mutate([AddNode(spec("x")), AddNode(spec("y")), RemoveNode("ready")])  # 5: fine
    before = drv.snapshot()
    with pytest.raises(GraphError, match="limit"):
        drv.mutate([AddNode(spec("z"))])
    assert drv.snapshot() == before


def test_mutating_an_ended_run_is_rejected(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.complete("a")
    with pytest.raises(GraphError, match="ended"):
        drv.mutate([AddNode(spec("x"))])


# --- rejections of a node's batch ---------------------------------------------------------

NODE_REJECTED: dict[str, list[Mutation]] = {
    "cycle": [AddEdge("ready", "pend"), AddEdge("pend", "ready")],
    "unknown": [RemoveNode("zz")],
    "duplicate": [AddNode(spec("pend"))],
    "started": [ModifyNode("done", priority=1)],
    "self": [MarkSpeculative("m")],
    "bad_jitter": [AddNode(spec("x", retry=BAD_JITTER))],
}


def node_batch_setup(drv: Driver, **m_kw: Any) -> Assignment:
    m_kw.setdefault("can_mutate", True)
    m_kw.setdefault("retry", retry(2))
    drv.submit(
        [
            spec("done"),
            spec("m", **m_kw),
            spec("pend", "m"),
            spec("ready", agent="nobody"),
        ]
    )
    drv.complete("done")
    return drv.run_to("m")


def snapshot_without(drv: Driver, node_id: str) -> dict[str, object]:
    snap = drv.snapshot()
    del snap["nodes"][node_id]
    del snap["counts"]
    return snap


@pytest.mark.parametrize("name", sorted(NODE_REJECTED))
def test_node_batch_rejected_fails_the_attempt_and_retries(name: str, drv: Driver) -> None:
    a = node_batch_setup(drv)
    before = snapshot_without(drv, "m")
    status, message = drv.succeed(a, result=b"{}", mutations=NODE_REJECTED[name])
    assert status is AckStatus.MUTATIONS_REJECTED
    assert message
    assert snapshot_without(drv, "m") == before
    m = drv.node("m")
    assert m.state is RD  # max_attempts 2: the retry policy tries again
    assert (m.error.kind, m.error.retryable) == ("mutation_rejected", True)
    assert message in m.error.message
    assert m.result == b""
    (rec,) = drv.log[-1:]
    assert rec[1].kind == "finished" and rec[1].decision.rejection == message
    assert rec[1].transitions == [("m", RD)]


def test_node_batch_rejected_on_last_attempt_fails_the_node(drv: Driver) -> None:
    a = node_batch_setup(drv, retry=retry(1))
    status, _ = drv.succeed(a, mutations=[RemoveNode("zz")])
    assert status is AckStatus.MUTATIONS_REJECTED
    assert drv.state("m") is FL
    assert drv.state("pend") is SK


def test_node_without_can_mutate_is_rejected(drv: Driver) -> None:
    a = node_batch_setup(drv, can_mutate=False)
    before = snapshot_without(drv, "m")
    status, message = drv.succeed(a, mutations=[AddNode(spec("x"))])
    assert status is AckStatus.MUTATIONS_REJECTED
    assert "can_mutate" in message
    assert snapshot_without(drv, "m") == before
    assert drv.node("m").error.kind == "mutation_rejected"


def test_over_max_spawn_depth_is_rejected(drv: Driver) -> None:
    drv.submit([spec("p", can_mutate=True)], limits=RunLimits(max_spawn_depth=1))
    child = spec("c", can_mutate=True, retry=retry(2))
    assert drv.succeed(drv.run_to("p"), mutations=[AddNode(child)])[0] is AckStatus.COMMITTED
    a = drv.dispatch_one("c")
    before = snapshot_without(drv, "c")
    status, message = drv.succeed(a, mutations=[AddNode(spec("g"))])
    assert status is AckStatus.MUTATIONS_REJECTED
    assert "depth" in message
    assert snapshot_without(drv, "c") == before
    assert drv.state("c") is RD
    # Mutations that add nothing are not limited by depth.
    drv.advance(10)
    b = drv.dispatch_one("c")
    assert drv.succeed(b, mutations=[])[0] is AckStatus.COMMITTED


def test_over_max_nodes_from_a_node_is_rejected(drv: Driver) -> None:
    drv.submit([spec("p", can_mutate=True)], limits=RunLimits(max_nodes=2))
    a = drv.run_to("p")
    status, message = drv.succeed(a, mutations=[AddNode(spec("x")), AddNode(spec("y"))])
    assert status is AckStatus.MUTATIONS_REJECTED
    assert "limit" in message
    assert list(drv.run.nodes) == ["p"]
    assert drv.state("p") is FL


# --- regressions: core bugs found by these tests, now fixed -----------------------------


def applied_or_rejected_cleanly(drv: Driver, batch: Sequence[Mutation]) -> None:
    """A batch either commits (and the run stays valid) or raises GraphError and changes
    nothing; anything else (KeyError, AssertionError) leaves a half-applied batch."""
    before = drv.snapshot()
    try:
        drv.mutate(batch)
    except GraphError:
        assert drv.snapshot() == before


TOUCH_THEN_REMOVE: dict[str, list[Mutation]] = {
    "modify_then_remove": [ModifyNode("b", priority=3), RemoveNode("b")],
    "modify_then_split": [ModifyNode("b", priority=3), SplitNode("b", (spec("b1"),))],
    "mark_then_remove": [MarkSpeculative("b"), RemoveNode("b")],
    "prune_then_remove": [PruneSubgraph("b"), RemoveNode("b")],
    "modify_added_then_remove": [AddNode(spec("x")), ModifyNode("x", priority=1), RemoveNode("x")],
}


@pytest.mark.parametrize("name", sorted(TOUCH_THEN_REMOVE))
def test_touching_then_removing_a_node_in_one_batch(name: str, drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("b", "a"), spec("c", "b")])
    applied_or_rejected_cleanly(drv, TOUCH_THEN_REMOVE[name])


MARK_TWICE: dict[str, list[Mutation]] = {
    "mark_then_confirm_pending": [MarkSpeculative("b"), ConfirmSpeculative("b")],
    "mark_then_confirm_ready": [MarkSpeculative("a"), ConfirmSpeculative("a")],
}


@pytest.mark.parametrize("name", sorted(MARK_TWICE))
def test_mark_and_confirm_in_one_batch(name: str, drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("b", "a")])
    applied_or_rejected_cleanly(drv, MARK_TWICE[name])


def test_confirm_then_mark_in_one_batch(drv: Driver) -> None:
    drv.submit([spec("a", agent="slow"), spec("b", "a")])
    drv.mutate([MarkSpeculative("b")])
    applied_or_rejected_cleanly(drv, [ConfirmSpeculative("b"), MarkSpeculative("b")])


def skipped_waiting_on(drv: Driver) -> None:
    """s is SKIPPED (its dep f failed) but also depends on y, which has not started."""
    drv.submit([spec("f"), spec("w", agent="slow"), spec("y", "w"), spec("s", "f", "y")])
    drv.fail(drv.run_to("f"), retryable=False)
    assert (drv.state("s"), drv.state("y")) == (SK, P)


def pruned_waiting_on(drv: Driver) -> None:
    drv.submit(
        [spec("r", agent="slow"), spec("w", agent="slow"), spec("y", "w"), spec("s", "r", "y")]
    )
    drv.mutate([PruneSubgraph("r")])
    assert (drv.state("s"), drv.state("y")) == (CX, P)


def discarded_waiting_on(drv: Driver) -> None:
    drv.submit([spec("w", agent="slow"), spec("y", "w"), spec("s", "y")])
    drv.mutate([MarkSpeculative("s")])
    drv.mutate([DiscardSpeculative("s")])
    assert (drv.state("s"), drv.state("y")) == (SK, P)


@pytest.mark.parametrize("setup", [skipped_waiting_on, pruned_waiting_on, discarded_waiting_on])
def test_cycle_through_a_terminal_node_that_never_started(
    setup: Callable[[Driver], None], drv: Driver
) -> None:
    setup(drv)
    before = drv.snapshot()
    with pytest.raises(GraphError, match="cycle"):
        drv.mutate([AddEdge("s", "y")])
    assert drv.snapshot() == before


@pytest.mark.parametrize(
    "batch",
    [
        [RemoveNode("a")],
        [ModifyNode("a", input=b"2")],
        [SplitNode("a", (spec("a1"),))],
        [MarkSpeculative("a")],
        [AddEdge("z", "a")],
    ],
    ids=["remove", "modify", "split", "mark", "add_edge"],
)
def test_a_node_that_already_ran_an_attempt_counts_as_started(
    batch: list[Mutation], drv: Driver
) -> None:
    drv.submit([spec("a", retry=retry(3)), spec("z", agent="slow")])
    drv.fail(drv.run_to("a"))
    assert drv.state("a") is RD and drv.node("a").attempt == 1
    before = drv.snapshot()
    with pytest.raises(GraphError, match="started"):
        drv.mutate(batch)
    assert drv.snapshot() == before


def test_a_ready_node_marked_then_discarded_in_one_batch_leaves_its_queue(drv: Driver) -> None:
    # Found by the scheduler invariants of validate: the SKIPPED node kept a live queue entry.
    drv.submit([spec("a", agent="slow"), spec("b")])
    drv.mutate([MarkSpeculative("a"), DiscardSpeculative("a")])
    assert (drv.state("a"), drv.node("a").queued) == (SK, 0)
