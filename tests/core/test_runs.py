"""Runs: submission, failure propagation, cancellation, when and how a run ends, the records
each stimulus leaves, and replay of those records."""

from __future__ import annotations

import pytest

from hivegrid.coordinator.core import (
    AckStatus,
    AddEdge,
    AddNode,
    CancelRun,
    ConfirmSpeculative,
    Core,
    DiscardSpeculative,
    GraphError,
    InjectBefore,
    MarkSpeculative,
    ModifyNode,
    NodeDispatched,
    NodeSpec,
    NodeState,
    PruneSubgraph,
    RemoveEdge,
    RetryPolicy,
    RunCancelled,
    RunEnded,
    RunLimits,
    RunState,
    SplitNode,
    SubmitRun,
)

from .conftest import (
    CX,
    FL,
    OK,
    RD,
    RN,
    SK,
    Driver,
    P,
    kinds,
    node_facts,
    replay,
    retry,
    spec,
    transitions_of,
)

# --- submit ----------------------------------------------------------------------------------


def test_submit_makes_nodes_without_deps_ready(drv: Driver) -> None:
    records = drv.submit([spec("a"), spec("b", "a"), spec("c")])
    assert drv.states() == {"a": RD, "b": P, "c": RD}
    assert drv.node("b").waiting == 1
    assert sorted(drv.node("a").dependents) == ["b"]
    (rec,) = records
    # Submission transitions are implied, not recorded.
    assert (rec.kind, rec.run_id, rec.transitions) == ("submitted", drv.run_id, [])
    assert drv.run.state is RunState.RUNNING


def test_nodes_without_an_id_get_their_position(drv: Driver) -> None:
    (rec,) = drv.submit([spec(""), spec("b", "n1"), spec("", "b")])
    assert list(drv.run.nodes) == ["n1", "b", "n3"]
    assert drv.node("n3").deps == ["b"]
    # The log keeps the run as submitted: a replay fills the ids in again, the same way.
    assert [s.id for s in rec.decision.specs] == ["", "b", ""]
    drv.complete("n1", "b", "n3")
    assert node_facts(replay(drv.log, now=drv.now)) == node_facts(drv.core)


BAD_GRAPHS: dict[str, list[NodeSpec]] = {
    "empty": [],
    "duplicate": [spec("a"), spec("a")],
    "unknown_dep": [spec("a", "zz")],
    "self_cycle": [spec("a", "a")],
    "two_cycle": [spec("a", "b"), spec("b", "a")],
    "three_cycle_behind_a_root": [spec("r"), spec("a", "r", "c"), spec("b", "a"), spec("c", "b")],
    "dep_twice": [spec("a"), spec("b", "a", "a")],
    "default_id_taken": [spec(""), spec("n1")],
    "no_agent": [spec("a", agent="")],
    "negative_timeout": [spec("a", timeout_s=-1)],
    "bad_jitter": [spec("a", retry=RetryPolicy(jitter=2.0))],
    "negative_multiplier": [spec("a", retry=RetryPolicy(multiplier=-1))],
    "over_limit": [spec("a"), spec("b"), spec("c")],
}


@pytest.mark.parametrize("name", sorted(BAD_GRAPHS))
def test_bad_submission_raises_and_creates_nothing(name: str) -> None:
    core = Core(lease_epoch=1)
    with pytest.raises(GraphError):
        core.submit_run(
            SubmitRun("r", tuple(BAD_GRAPHS[name]), RunLimits(max_nodes=2), seed=1), now=0
        )
    assert core.runs == {}
    assert core.take_outbox() == ([], [], [])


def test_duplicate_run_id_is_refused(drv: Driver) -> None:
    drv.submit([spec("a")])
    before = drv.snapshot()
    with pytest.raises(GraphError, match="already exists"):
        drv.submit([spec("b")])
    assert drv.snapshot() == before


# --- failure propagation ---------------------------------------------------------------------


def test_failure_skips_descendants_and_run_on_failure_nodes_run(drv: Driver) -> None:
    drv.submit(
        [
            spec("a"),
            spec("b", "a"),
            spec("c", "b"),
            spec("side"),
            spec("cleanup", "c", run_on_failure=True),
            spec("report", "a", "side", run_on_failure=True),
            spec("after", "cleanup"),
        ]
    )
    drv.open(8)
    got = {x.node_id: x for x in drv.dispatch()}
    drv.fail(got["a"], retryable=False)
    (_, rec) = drv.log[-1]
    assert rec.transitions == [("a", FL), ("b", SK), ("c", SK), ("cleanup", RD)]
    assert drv.node("b").error.kind == "skipped"
    assert drv.state("report") is P  # still waits on side
    drv.succeed(drv.run_to("cleanup"))
    drv.succeed(got["side"])
    assert drv.state("report") is RD
    drv.complete("report", "after")
    assert drv.run.state is RunState.FAILED


def test_run_on_failure_node_runs_after_a_retried_then_failed_dep(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(2)), spec("z", "a", run_on_failure=True)])
    drv.fail(drv.run_to("a"))
    assert drv.state("z") is P  # a is only waiting to retry
    drv.advance(1)
    drv.fail(drv.run_to("a"))
    assert drv.state("z") is RD


def test_long_failure_chain_does_not_recurse(drv: Driver) -> None:
    n = 3000
    drv.check = False
    drv.submit([spec("n0")] + [spec(f"n{i}", f"n{i - 1}") for i in range(1, n)])
    drv.fail(drv.run_to("n0"), retryable=False)
    assert drv.run.counts[SK] == n - 1
    assert drv.run.state is RunState.FAILED


# --- cancellation ----------------------------------------------------------------------------


def test_cancel_run_cancels_everything_and_orders_cancels(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b"), spec("c", "a"), spec("d", agent="x"), spec("e")])
    drv.mutate([MarkSpeculative("e")])
    s1 = drv.open(1)
    s2 = drv.open(1)
    got = {x.node_id: x for x in drv.dispatch()}
    assert sorted(got) == ["a", "b"]
    drv.succeed(got["b"])
    assert drv.cancel_run("user asked") is RunState.CANCELLED
    assert drv.states() == {"a": CX, "b": OK, "c": CX, "d": CX, "e": CX}
    assert drv.node("c").error.kind == "cancelled"
    assert [(o.session_id, o.node_id, o.reason) for o in drv.cancels] == [
        (got["a"].session_id, "a", "run_cancelled")
    ]
    assert {s1, s2} >= {got["a"].session_id}
    records = [r for _, r in drv.log[-2:]]
    assert kinds(records) == ["cancelled", "ended"]
    assert records[0].decision == RunCancelled("user asked")
    assert sorted(transitions_of(records)) == [("a", CX), ("c", CX), ("d", CX), ("e", CX)]
    assert records[1].decision == RunEnded(RunState.CANCELLED)
    # Answers after the cancel change nothing, whatever the outcome.
    logged = len(drv.log)
    assert drv.cancelled(got["a"])[0] is AckStatus.STALE
    assert drv.succeed(got["a"])[0] is AckStatus.STALE
    assert len(drv.log) == logged
    # A second cancel is a no-op.
    assert drv.cancel_run() is RunState.CANCELLED
    assert len(drv.log) == logged


def test_cancel_of_an_ended_run_keeps_its_state(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.complete("a")
    assert drv.cancel_run() is RunState.SUCCEEDED


def test_cancel_of_an_unknown_run_raises_keyerror(drv: Driver) -> None:
    with pytest.raises(KeyError):
        drv.core.cancel_run(CancelRun("nope", ""), now=0)


# --- how a run ends ---------------------------------------------------------------------------


def test_run_ends_exactly_when_the_last_node_ends(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", "a"), spec("c", "a"), spec("d", "b", "c")])
    drv.open(4)
    for node_id in ("a", "b", "c"):
        drv.succeed(drv.run_to(node_id))
        assert drv.run.state is RunState.RUNNING
        assert "ended" not in kinds(r for _, r in drv.log)
        drv.advance(drv.now + 1e6)
    drv.succeed(drv.run_to("d"))
    assert kinds(r for _, r in drv.log[-2:]) == ["finished", "ended"]
    assert drv.run.state is RunState.SUCCEEDED
    assert drv.run.ended_at == drv.now


@pytest.mark.parametrize(
    ("script", "end"),
    [
        ("all_succeed", RunState.SUCCEEDED),
        ("one_fails", RunState.FAILED),
        ("skipped_by_discard", RunState.SUCCEEDED),
        ("pruned", RunState.SUCCEEDED),
        ("cancelled", RunState.CANCELLED),
        ("failed_then_cancelled", RunState.CANCELLED),
    ],
)
def test_run_end_states(script: str, end: RunState, drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", agent="slow")])
    if script == "all_succeed":
        drv.complete("a")
        drv.open(1, agents=["slow"])
        drv.complete("b")
    elif script == "one_fails":
        drv.fail(drv.run_to("a"), retryable=False)
        drv.open(1, agents=["slow"])
        drv.complete("b")
    elif script == "skipped_by_discard":
        drv.complete("a")
        drv.mutate([MarkSpeculative("b")])
        drv.mutate([DiscardSpeculative("b")])
    elif script == "pruned":
        drv.complete("a")
        drv.mutate([PruneSubgraph("b")])
    elif script == "cancelled":
        drv.complete("a")
        drv.cancel_run()
    else:
        drv.fail(drv.run_to("a"), retryable=False)
        drv.cancel_run()
    assert drv.run.state is end
    assert drv.log[-1][1].kind == "ended"
    assert drv.log[-1][1].decision == RunEnded(end)


# --- records -----------------------------------------------------------------------------------


def test_records_of_each_stimulus(drv: Driver) -> None:
    def since(mark: int) -> list[tuple[str, list[tuple[str, NodeState]]]]:
        return [(r.kind, r.transitions) for _, r in drv.log[mark:]]

    drv.submit([spec("a", can_mutate=True), spec("b", "a", timeout_s=2, retry=retry(2))])
    sid = drv.open(1)
    mark = len(drv.log)
    a = drv.dispatch_one("a")
    assert since(mark) == [("dispatched", [("a", RN)])]
    assert drv.log[-1][1].decision == NodeDispatched("a", 1, a.lease, sid, f"w-{sid}")
    mark = len(drv.log)
    drv.succeed(a, mutations=[AddNode(spec("x", "b"))])
    assert since(mark) == [("finished", [("x", P), ("a", OK), ("b", RD)])]
    assert drv.log[-1][1].decision.rejection == ""
    mark = len(drv.log)
    b = drv.dispatch_one("b")
    drv.advance(2)
    assert since(mark) == [("dispatched", [("b", RN)]), ("timed_out", [("b", RD)])]
    drv.cancelled(b)
    drv.advance(3)
    mark = len(drv.log)
    drv.dispatch_one("b")
    drv.close(sid)
    assert since(mark) == [("dispatched", [("b", RN)]), ("lost", [("b", RD)])]
    mark = len(drv.log)
    drv.mutate([RemoveEdge("b", "x")])
    assert since(mark) == [("mutated", [("x", RD)])]
    mark = len(drv.log)
    drv.cancel_run()
    assert since(mark) == [("cancelled", [("b", CX), ("x", CX)]), ("ended", [])]
    assert {r.run_id for _, r in drv.log} == {drv.run_id}


# --- replay ------------------------------------------------------------------------------------


def busy_history(drv: Driver) -> None:
    """A run that goes through every kind of stimulus."""
    drv.submit(
        [
            spec("root", can_mutate=True, retry=retry(3, jitter=0.7)),
            spec("t", "root", timeout_s=3, retry=retry(2, jitter=0.3)),
            spec("lost", "root", retry=retry(1)),
            spec("late", "root"),
            spec("spec", "root"),
            spec("tail", "t", "lost", "late", run_on_failure=True, can_mutate=True),
            spec("bad", "root", can_mutate=True, retry=retry(2)),
        ],
        seed=1234,
    )
    drv.submit([spec("other")], run_id="r2")
    drv.run_id = "r1"
    s1 = drv.open(3)
    drv.now = 1
    got = {a.node_id: a for a in drv.dispatch()}
    drv.fail(got["root"])
    drv.advance(drv.node("root").not_before)
    drv.now += 0.5
    root = drv.run_to("root")
    drv.succeed(
        root,
        mutations=[
            AddNode(spec("kid", "root")),
            InjectBefore("tail", spec("inj")),
            ModifyNode("late", priority=3),
            MarkSpeculative("spec"),
        ],
    )
    drv.mutate([ConfirmSpeculative("spec"), SplitNode("kid", (spec("k1"), spec("k2")))])
    drv.succeed(got["other"])
    drv.now += 1
    got = {a.node_id: a for a in drv.dispatch()}
    s2 = drv.open(8)
    got.update({a.node_id: a for a in drv.dispatch()})
    drv.close(s1)
    drv.succeed(got["late"], session_id="")  # late answer of a lost attempt: accepted
    drv.advance(drv.now + 5)  # t may time out
    drv.dispatch()
    for node_id in ("lost", "k1", "k2", "spec", "inj"):
        if drv.state(node_id) is RN:
            drv.succeed(drv.run_to(node_id))
    bad = drv.run_to("bad")
    drv.succeed(bad, mutations=[AddEdge("zz", "tail")])  # rejected: the attempt fails
    drv.advance(drv.now + 10)
    drv.dispatch()
    if drv.state("t") is RN:
        drv.fail(drv.run_to("t"), retryable=False)
    assert s2 in drv.core.sessions


def test_replaying_the_records_rebuilds_the_same_nodes(drv: Driver) -> None:
    busy_history(drv)
    log = list(drv.log)
    kinds_seen = set(kinds(r for _, r in log))
    assert {"submitted", "dispatched", "finished", "lost", "timed_out", "mutated"} <= kinds_seen
    rejections = [r.decision.rejection for _, r in log if r.kind == "finished"]
    assert any(rejections), "a rejection was logged"
    # The crash: every session goes with the coordinator; recovery replays and expires leases.
    now = drv.now + 1
    restored = replay(log, now=now)
    drv.now = now
    for sid in list(drv.core.sessions):
        drv.close(sid, reason="restart")
    assert node_facts(restored) == node_facts(drv.core)
    assert {r: run.state for r, run in restored.runs.items()} == {
        r: run.state for r, run in drv.core.runs.items()
    }
    assert {r: run.rng_state for r, run in restored.runs.items()} == {
        r: run.rng_state for r, run in drv.core.runs.items()
    }


def test_replay_then_carry_on(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(2, jitter=1.0)), spec("b", "a")], seed=99)
    drv.fail(drv.run_to("a"))
    restored = Driver()
    restored.core = replay(drv.log, now=drv.now)
    restored.now = drv.now
    restored.advance(restored.node("a").not_before)
    restored.complete("a", "b")
    assert restored.run.state is RunState.SUCCEEDED
    assert restored.node("a").attempt == 2
