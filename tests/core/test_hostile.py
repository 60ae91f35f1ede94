"""Issue 9, hostile and faulty input: fencing of attempts to their session, resent answers,
undeliverable assignments, the cost of cycle checks, run deletion and request ids, and the
record contract the runtime replays."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import FrozenInstanceError, fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hivegrid.coordinator.core import (
    AckStatus,
    AddEdge,
    AddNode,
    Answer,
    AttemptFinished,
    AttemptRef,
    CancelRun,
    Core,
    GraphError,
    InvariantError,
    MutateRun,
    Mutation,
    NodeDispatched,
    NodeError,
    NodeFailed,
    NodeSpec,
    OpenSession,
    Outcome,
    PruneSubgraph,
    RemoveNode,
    RestoredNode,
    RunExists,
    RunState,
    SplitNode,
    SubmitRun,
    mutations_rejected,
    validate,
)
from hivegrid.coordinator.core import mutations as mutation_batch
from hivegrid.coordinator.core import scheduler as scheduler_module

from .conftest import (
    CX,
    FL,
    OK,
    RD,
    RN,
    SK,
    Driver,
    kinds,
    node_facts,
    replay,
    retry,
    spec,
)
from .test_properties import dags, draw_batch

# --- fencing: an attempt belongs to one session ---------------------------------------------------


def test_a_result_from_another_live_session_is_stale_and_changes_nothing(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", "a")])
    s1 = drv.open(1)
    a = drv.dispatch_one("a")
    s2 = drv.open(1)
    before = drv.snapshot()
    logged = len(drv.log)
    for outcome in Outcome:
        got = drv.answer(a, outcome, result=b"forged", session_id=s2)
        assert got == (AckStatus.STALE, "the attempt belongs to another session")
    assert drv.snapshot() == before
    assert len(drv.log) == logged
    assert drv.core.sessions[s1].in_flight == {a.lease: drv.node("a")}
    # A session that is not live at all is no better.
    assert drv.succeed(a, session_id="nobody")[0] is AckStatus.STALE
    assert drv.succeed(a, result=b"1", session_id=s1) == (AckStatus.COMMITTED, "")
    assert drv.node("a").result == b"1"


def test_the_open_attempt_of_a_lost_worker_may_be_answered_by_any_session(drv: Driver) -> None:
    drv.submit([spec("a")])
    s1 = drv.open(1)
    a = drv.dispatch_one("a")
    drv.close(s1)
    s2 = drv.open(1)
    assert drv.succeed(a, result=b"1", session_id=s2) == (AckStatus.COMMITTED, "")
    assert drv.state("a") is OK


@pytest.mark.parametrize("wrong", ["run", "node", "attempt"])
def test_a_ref_with_the_right_lease_and_a_wrong_name_changes_nothing(
    wrong: str, drv: Driver
) -> None:
    # Issue 9: the result was acked STALE, yet it freed the attempt's bookkeeping, so when the
    # worker left, the node stayed RUNNING for ever.
    drv.submit([spec("a", agent="nobody"), spec("b", agent="nobody")], run_id="r2")
    drv.submit([spec("a"), spec("b")], run_id="r1")
    sid = drv.open(1)
    a = drv.dispatch_one("a")
    ref = {"run": "r1", "node": "a", "attempt": a.attempt}
    ref[wrong] = {"run": "r2", "node": "b", "attempt": a.attempt + 1}[wrong]
    before = drv.snapshot()
    answer = Answer(ref["run"], ref["node"], ref["attempt"], a.lease, Outcome.SUCCEEDED)
    status, _ = drv.core.finish_attempt(sid, answer, now=drv.now)
    drv.step()
    assert status is AckStatus.STALE
    assert drv.snapshot() == before
    session = drv.core.sessions[sid]
    assert session.in_flight == {a.lease: drv.node("a")} and session.completed == 0
    assert drv.dispatch() == []  # the slot is still taken
    drv.close(sid)
    assert drv.state("a") is RD


def test_a_cancelled_attempts_answer_frees_its_slot(drv: Driver) -> None:
    drv.submit([spec("a", timeout_s=5, retry=retry(2, initial_backoff_s=0)), spec("b")])
    sid = drv.open(1)
    a1 = drv.dispatch_one("a")
    drv.advance(5)  # timed out: the slot stays taken until the worker answers
    assert drv.dispatch() == []
    assert drv.cancelled(a1)[0] is AckStatus.STALE
    assert drv.core.sessions[sid].in_flight == {}
    assert len(drv.dispatch()) == 1


def test_held_ref_of_a_running_attempt_whose_session_is_gone_is_kept() -> None:
    # During a replay, before leases expire, attempts run on no live session.
    core = Core(lease_epoch=3)
    core.submit_run(SubmitRun("r1", (spec("a"),), name="t", seed=7), now=0)
    core.replay("r1", NodeDispatched("a", 1, 99, "s-before", "w"), now=0)
    assert core.runs["r1"].nodes["a"].state is RN
    ref = AttemptRef("r1", "a", 1, 99)
    kept = core.open_session(OpenSession("s9", "w", ("a",), slots=1, held=(ref,)), now=0)
    assert kept == [ref]
    assert core.runs["r1"].nodes["a"].session_id == "s9"
    validate(core)


def test_leases_are_drawn_from_new_lease_and_redrawn_when_unusable() -> None:
    draws = iter([0, 5, 5, 7, 5, 9, 11])
    drv = Driver(new_lease=lambda: next(draws))
    drv.submit([spec("a", retry=retry(2, initial_backoff_s=0)), spec("b")])
    drv.open(2)
    got = {x.node_id: x for x in drv.dispatch()}
    # 0 is never a lease; 5 is taken in the session already.
    assert (got["a"].lease, got["b"].lease) == (5, 7)
    drv.fail(got["a"])
    # 5 again would be the node's previous lease: its old attempt must stay stale.
    assert drv.dispatch_one("a").lease == 9
    assert drv.succeed(got["a"])[0] is AckStatus.STALE


def test_leases_without_new_lease_count_up_from_the_epoch() -> None:
    drv = Driver(lease_epoch=3)
    drv.submit([spec("a"), spec("b")])
    drv.open(2)
    assert sorted(x.lease for x in drv.dispatch()) == [(3 << 32) + 1, (3 << 32) + 2]


def test_a_cancelled_answer_for_a_lost_attempt_costs_nothing(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(1))])
    sid = drv.open(1)
    a1 = drv.dispatch_one("a")
    drv.close(sid)
    assert drv.cancelled(a1, session_id="")[0] is AckStatus.COMMITTED
    node = drv.node("a")
    assert (node.state, node.failures, node.open, node.error) == (RD, 0, False, None)
    drv.open(1)
    assert drv.dispatch_one("a").attempt == 2


def test_unsolicited_cancelled_replays_as_the_failure_it_was(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(3, jitter=0.9)), spec("b", "a")], seed=5)
    drv.cancelled(drv.run_to("a"))
    drv.advance(drv.node("a").not_before)
    drv.cancelled(drv.run_to("a"))
    restored = replay(drv.log, now=drv.now)
    for sid in list(drv.core.sessions):
        drv.close(sid)
    assert node_facts(restored) == node_facts(drv.core)
    assert drv.node("a").failures == 2
    assert restored.runs["r1"].rng_state == drv.run.rng_state


# --- resent answers ----------------------------------------------------------------------------


def test_a_resent_rejection_gets_the_same_ack_and_changes_nothing(drv: Driver) -> None:
    drv.submit([spec("m", can_mutate=True, retry=retry(3)), spec("x")])
    a = drv.run_to("m")
    first = drv.succeed(a, mutations=[RemoveNode("zz")])
    assert first[0] is AckStatus.MUTATIONS_REJECTED and "unknown node 'zz'" in first[1]
    before = drv.snapshot()
    logged = len(drv.log)
    failures = drv.node("m").failures
    assert drv.succeed(a, mutations=[RemoveNode("zz")]) == first
    assert drv.succeed(a) == first  # whatever it says now: the attempt was answered
    assert drv.cancelled(a) == first
    assert drv.snapshot() == before and len(drv.log) == logged
    assert drv.node("m").failures == failures
    # Once the node is dispatched again, the old attempt is simply stale.
    drv.advance(drv.node("m").not_before)
    drv.dispatch_one("m")
    assert drv.succeed(a)[0] is AckStatus.STALE


def test_a_resent_cancel_acknowledgement_gets_the_same_ack(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", agent="nobody")])
    a = drv.run_to("a")
    drv.mutate([PruneSubgraph("a")])
    assert drv.state("a") is CX and drv.run.state is RunState.RUNNING
    assert drv.succeed(a)[0] is AckStatus.STALE  # not the answer to a cancel: changes nothing
    assert drv.node("a").open
    assert drv.cancelled(a) == (AckStatus.COMMITTED, "")
    logged = len(drv.log)
    assert drv.cancelled(a) == (AckStatus.COMMITTED, "")
    assert len(drv.log) == logged


def test_a_cancel_acknowledged_after_the_run_ended_is_stale(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b")])
    a = drv.run_to("a")
    drv.cancel_run()
    logged = len(drv.log)
    assert drv.cancelled(a)[0] is AckStatus.STALE  # the run has ended: nothing to log
    assert len(drv.log) == logged


def test_answered_is_restored_from_a_snapshot(drv: Driver) -> None:
    assert RestoredNode._fields[-1] == "answered"
    assert RestoredNode._field_defaults == {"answered": 0}
    drv.submit([spec("m", can_mutate=True, retry=retry(3))])
    a = drv.run_to("m")
    first = drv.succeed(a, mutations=[RemoveNode("zz")])
    core = Core(lease_epoch=2)
    run = drv.run
    core.restore_run(
        run.run_id,
        name=run.name,
        limits=run.limits,
        created_at=run.created_at,
        ended_at=run.ended_at,
        last_seq=run.last_seq,
        rng_state=run.rng_state,
        cancelled=run.cancelled,
        failed=run.failed,
        nodes=[
            RestoredNode(
                n.spec,
                n.state,
                n.attempt,
                n.failures,
                n.lease,
                n.result,
                n.error,
                n.parent_id,
                n.depth,
                n.not_before,
                n.open,
                n.answered,
            )
            for n in run.nodes.values()
        ],
        now=drv.now,
    )
    validate(core)
    got = core.finish_attempt(
        "s", Answer(run.run_id, "m", a.attempt, a.lease, Outcome.SUCCEEDED), now=drv.now
    )
    assert got == first
    assert core.take_outbox()[0] == []


# --- assignments that can never be delivered ------------------------------------------------------


def test_assignment_deps_are_the_succeeded_dependencies_in_order(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b"), spec("c"), spec("j", "c", "b", "a", run_on_failure=True)])
    drv.succeed(drv.run_to("a"), result=b"A")
    drv.fail(drv.run_to("b"), retryable=False)
    drv.succeed(drv.run_to("c"), result=b"CC")
    j = drv.node("j")
    assert drv.core.assignment_deps(j) == [("c", b"CC"), ("a", b"A")]
    assert drv.core.assignment_deps(drv.node("a")) == []
    extra = len("j") + len("a") + len(drv.run_id) + 128
    assert drv.core.assignment_bytes(j) == extra + (1 + 2 + 16) + (1 + 1 + 16)


def test_assignment_bytes_is_not_less_than_the_encoded_assignment(drv: Driver) -> None:
    wpb = pytest.importorskip("hivegrid.v1.worker_pb2")
    drv.submit(
        [
            spec("a"),
            spec("b"),
            spec(
                "ü" * 40,
                "a",
                "b",
                input=b"x" * 300,
                timeout_s=2.5,
                can_mutate=True,
                metadata={"k": "v", "ключ": "значение" * 10},
            ),
        ]
    )
    drv.succeed(drv.run_to("a"), result=b"r" * 1000)
    drv.succeed(drv.run_to("b"), result=b"")
    a = drv.run_to("ü" * 40)
    assert a.deps == [("a", b"r" * 1000), ("b", b"")]
    msg = wpb.Assignment(
        ref=wpb.AssignmentRef(
            run_id=drv.run_id, node_id=a.node_id, attempt=a.attempt, lease=2**64 - 1
        ),
        agent=a.spec.agent,
        input=a.spec.input,
        timeout_s=a.spec.timeout_s,
        can_mutate=True,
    )
    for dep_id, result in a.deps:
        msg.deps.add(node_id=dep_id, result=result)
    msg.metadata.update(a.spec.metadata)
    assert msg.ByteSize() <= drv.core.assignment_bytes(drv.node(a.node_id))


def big_fanin(drv: Driver, *, result_size: int) -> None:
    """a succeeded with a large result, so "big" is ready; "small" (agent "late", no
    dependencies) is ready too. No session is open."""
    drv.submit(
        [
            spec("a"),
            spec("big", "a"),
            spec("after", "big"),
            spec("cleanup", "big", run_on_failure=True),
            spec("small", agent="late"),
        ]
    )
    drv.succeed(drv.run_to("a"), result=b"x" * result_size)
    for sid in list(drv.core.sessions):
        drv.close(sid)


def test_an_assignment_over_the_limit_fails_the_node_without_running_it() -> None:
    drv = Driver(max_assignment_bytes=1000)
    big_fanin(drv, result_size=2000)
    drv.open(2, agents=["a", "late"])
    # "big" is failed, and the rest still goes out in the same dispatch.
    got = drv.dispatch()
    assert sorted(x.node_id for x in got) == ["cleanup", "small"]
    size = drv.core.assignment_bytes(drv.node("big"))
    assert size > 2000
    error = NodeError(
        f"its assignment would be {size} bytes, over the coordinator's limit of 1000 bytes",
        retryable=False,
        kind="too_large",
    )
    big = drv.node("big")
    assert (big.state, big.attempt, big.error) == (FL, 0, error)
    assert (drv.state("after"), drv.state("cleanup")) == (SK, RN)
    (rec,) = [r for _, r in drv.log if r.kind == "node_failed"]
    assert rec.decision == NodeFailed("big", error)
    assert ("big", FL) in rec.transitions and ("after", SK) in rec.transitions
    for x in got:
        drv.succeed(x)
    assert drv.run.state is RunState.FAILED
    assert kinds(r for _, r in drv.log[-2:]) == ["finished", "ended"]
    # Replay fails it the same way, to the same state.
    restored = replay(drv.log, now=drv.now)
    assert node_facts(restored) == node_facts(drv.core)


def test_node_failed_can_end_the_run() -> None:
    drv = Driver(max_assignment_bytes=200)
    drv.submit([spec("a", input=b"x" * 500)])
    drv.open(1)
    assert drv.dispatch() == []
    assert kinds(r for _, r in drv.log[-2:]) == ["node_failed", "ended"]
    assert drv.run.state is RunState.FAILED


def test_an_assignment_within_the_limit_goes_out() -> None:
    drv = Driver(max_assignment_bytes=10_000)
    big_fanin(drv, result_size=2000)
    drv.open(4, agents=["a", "late"])
    assert sorted(x.node_id for x in drv.dispatch()) == ["big", "small"]


def test_a_lost_attempt_of_a_too_large_node_is_closed() -> None:
    drv = Driver()
    big_fanin(drv, result_size=2000)
    sid = drv.open(4)
    a = drv.dispatch_one("big")
    drv.close(sid)
    drv.core.max_assignment_bytes = 1000
    drv.open(4)
    drv.dispatch()
    assert drv.state("big") is FL
    assert drv.succeed(a, session_id="")[0] is AckStatus.STALE


def test_no_size_is_computed_without_a_limit(drv: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = scheduler_module.Core.assignment_bytes

    def counting(self: Core, node: Any) -> int:
        calls.append(node.id)
        return original(self, node)

    monkeypatch.setattr(scheduler_module.Core, "assignment_bytes", counting)
    drv.submit([spec(f"n{i}") for i in range(10)])
    drv.open(10)
    assert len(drv.dispatch()) == 10
    assert calls == []
    limited = Driver(max_assignment_bytes=10_000)
    limited.submit([spec(f"n{i}") for i in range(10)])
    limited.open(10)
    assert len(limited.dispatch()) == 10
    assert len(calls) == 10  # once per dispatch


# --- cycle checks bounded by what the batch can reach ---------------------------------------------


def chain(n: int, *, tail: list[NodeSpec] | None = None) -> Core:
    core = Core(lease_epoch=1)
    specs = [spec("c0")] + [spec(f"c{i}", f"c{i - 1}") for i in range(1, n)]
    core.submit_run(SubmitRun("r", (*specs, *(tail or []))), now=0)
    return core


def test_edges_at_the_end_of_a_long_chain_visit_only_what_they_reach() -> None:
    # Issue 9: 200 add_edge at the end of a 50,000-node chain visited 10,000,000 nodes
    # (every ancestor once per edge) and held the event loop for 10 s.
    n = 50_000
    core = chain(n, tail=[spec(f"x{i}", agent="slow") for i in range(200)])
    run = core.runs["r"]
    batch: list[Mutation] = [AddEdge(f"c{n - 1}", f"x{i}") for i in range(200)]
    # Sinks (nothing depends on x_i) can be on no cycle: nothing to walk.
    assert mutation_batch.play(run, batch, None).cycle_check_visited == 0
    # Make every x_i a link in a chain of its own: each edge's target now has dependents.
    batch += [AddEdge(f"x{i}", f"x{i + 1}") for i in range(199)]
    view = mutation_batch.play(run, batch, None)
    assert view.cycle_check_visited == 200
    core.mutate_run(MutateRun("r", tuple(batch)), now=0)
    assert run.nodes["x199"].waiting == 2
    # And closing the loop is found, naming an edge the batch added.
    with pytest.raises(GraphError, match=r"the batch creates a cycle through 'x\d+' and 'c1'"):
        core.mutate_run(MutateRun("r", (AddEdge("x199", "c1"),)), now=0)


def test_a_spawn_does_not_walk_the_actors_ancestry() -> None:
    core = chain(5_000, tail=[spec("actor", "c4999", can_mutate=True)])
    run = core.runs["r"]
    actor = run.nodes["actor"]
    kids = [AddNode(spec(f"k{i}", "actor")) for i in range(1_000)]
    assert mutation_batch.play(run, kids, actor).cycle_check_visited == 0
    join = AddNode(spec("join", *(f"k{i}" for i in range(1_000))))
    assert mutation_batch.play(run, [*kids, join], actor).cycle_check_visited == 1_001


def test_the_cycle_message_names_an_edge_of_the_batch(drv: Driver) -> None:
    drv.submit([spec("run"), spec("pend", "run"), spec("ready", agent="nobody")])
    drv.run_to("run")
    with pytest.raises(GraphError) as exc:
        drv.mutate([AddEdge("ready", "pend"), AddEdge("pend", "ready")])
    assert str(exc.value) == "the batch creates a cycle through 'ready' and 'pend'"
    with pytest.raises(GraphError) as exc:
        drv.mutate([AddNode(spec("x", "pend")), AddEdge("x", "pend")])
    assert str(exc.value) == "the batch creates a cycle through 'x' and 'pend'"
    with pytest.raises(GraphError) as exc:
        drv.mutate([SplitNode("pend", (spec("p1"), spec("p2", "ready"))), AddEdge("p2", "ready")])
    assert str(exc.value) == "the batch creates a cycle through 'p2' and 'ready'"


class CountingDict(dict):  # type: ignore[type-arg]
    scans = 0

    def items(self) -> Any:
        CountingDict.scans += 1
        return super().items()


def test_dependents_in_a_batch_come_from_an_index_not_a_scan() -> None:
    # Issue 9: every remove_node or split_node scanned every edited node of the batch.
    n = 2_000
    core = Core(lease_epoch=1)
    specs = [spec(f"a{i}", agent="slow") for i in range(n)] + [spec(f"b{i}") for i in range(n)]
    core.submit_run(SubmitRun("r", tuple(specs)), now=0)
    view = mutation_batch._View(core.runs["r"], None)
    view.deps = CountingDict()
    CountingDict.scans = 0
    for i in range(n):
        view.add_edge(f"a{i}", f"b{i}", "m")
    for i in range(n):
        view.remove_node(f"a{i}", "m")
    assert CountingDict.scans == 0
    assert all(view.deps[f"b{i}"] == [] for i in range(n))


def new_graph_has_cycle(view: Any) -> bool:
    run = view.run
    ids = [i for i in [*run.nodes, *view.added] if view.exists(i)]
    waiting = {i: len(view.deps_of(i)) for i in ids}
    children: dict[str, list[str]] = {}
    for i in ids:
        for d in view.deps_of(i):
            children.setdefault(d, []).append(i)
    free = [i for i, w in waiting.items() if w == 0]
    seen = 0
    while free:
        seen += 1
        for c in children.get(free.pop(), ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                free.append(c)
    return seen != len(ids)


@pytest.mark.timeout(900)
@settings(
    max_examples=int(os.environ.get("HIVEGRID_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(specs=dags(), data=st.data())
def test_the_bounded_cycle_check_agrees_with_a_full_one(
    specs: list[NodeSpec], data: st.DataObject
) -> None:
    drv = Driver(check=False)
    drv.submit(specs)
    drv.open(8, agents=["a", "b"])
    for a in drv.dispatch():  # some history: a few nodes ended
        if data.draw(st.booleans()):
            drv.answer(a, data.draw(st.sampled_from([Outcome.SUCCEEDED, Outcome.FAILED])))
    check = mutation_batch._check_acyclic
    fresh = [0]
    for _ in range(5):
        batch = draw_batch(data, drv, fresh) + draw_batch(data, drv, fresh)
        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(mutation_batch, "_check_acyclic", lambda view: None)
                view = mutation_batch.play(drv.run, batch, None)
        except GraphError:
            continue  # rejected for another reason
        expected = new_graph_has_cycle(view)
        try:
            check(view)
        except GraphError as exc:
            assert expected, f"a cycle reported where there is none: {exc}"
            continue
        assert not expected, "a cycle was missed"
        if drv.run.state is RunState.RUNNING:
            drv.mutate(batch)
            validate(drv.core)


# --- deleting runs, request ids ----------------------------------------------------------------


def test_delete_run(drv: Driver) -> None:
    core = drv.core
    with pytest.raises(KeyError):
        core.delete_run("nope")
    drv.submit([spec("a")])
    with pytest.raises(GraphError, match=r"^run 'r1' is still running; cancel it first$"):
        core.delete_run("r1")
    drv.complete("a")
    core.take_outbox()
    core.delete_run("r1")
    assert "r1" not in core.runs
    assert core.take_outbox() == ([], [], [])
    validate(core)
    with pytest.raises(KeyError):
        core.delete_run("r1")


def test_nothing_of_a_deleted_run_fires_later(drv: Driver) -> None:
    drv.submit(
        [
            spec("t", timeout_s=1000),
            spec("q", agent="later"),
            spec("w", retry=retry(3, initial_backoff_s=500)),
        ]
    )
    sid = drv.open(2)
    got = {x.node_id: x for x in drv.dispatch()}
    drv.fail(got["w"])  # waits out a backoff until 500
    drv.cancel_run()
    core = drv.core
    assert core.run_for_request("x") is None
    core.delete_run("r1")
    # Its timers and queue entries are swept (they were all there was).
    assert core._timers == [] and core._queued == 0
    validate(core)
    core.open_session(OpenSession("s9", "w", ("a", "later"), slots=5), now=0)
    core.advance(10_000)
    core.dispatch()
    assert core.take_outbox() == ([], [], [])
    # The worker acknowledging the cancel of the deleted run's attempt gets its slot back.
    t = got["t"]
    status, _ = core.finish_attempt(
        sid, Answer("r1", "t", t.attempt, t.lease, Outcome.CANCELLED), now=10_000
    )
    assert status is AckStatus.STALE
    assert core.sessions[sid].in_flight == {}
    validate(core)


def test_deleting_many_runs_sweeps_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    sweeps = []
    original = scheduler_module.Core._sweep

    def counting(self: Core) -> None:
        sweeps.append(self._queued + len(self._timers))
        original(self)

    monkeypatch.setattr(scheduler_module.Core, "_sweep", counting)
    core = Core(lease_epoch=1)
    core.submit_run(SubmitRun("live", tuple(spec(f"n{i}") for i in range(1_000))), now=0)
    for r in range(3_000):
        core.submit_run(SubmitRun(f"r{r}", (spec("a"),)), now=0)
        core.cancel_run(CancelRun(f"r{r}", "x"), now=0)
    for r in range(3_000):
        core.delete_run(f"r{r}")
    validate(core)
    # One sweep, once the dead entries were half of all (4,000 entries, 2,000 of deleted runs),
    # not one per deletion. It dropped the stale entries of the cancelled runs left too.
    assert sweeps == [4_000]
    assert core._queued == 1_000


def test_request_ids(drv: Driver) -> None:
    core = drv.core
    core.submit_run(SubmitRun("r1", (spec("a"),), request_id="q1"), now=0)
    assert core.run_for_request("q1") == "r1"
    assert core.run_for_request("") is None and core.run_for_request("q2") is None
    assert core.runs["r1"].request_id == "q1"
    # A taken run id is RunExists (a GraphError), as is a request id that made a live run.
    with pytest.raises(RunExists, match=r"^run 'r1' already exists$"):
        core.submit_run(SubmitRun("r1", (spec("a"),)), now=0)
    assert issubclass(RunExists, GraphError)
    # Prepared while "q1" made nothing yet, installed after it made r1.
    prepared = core.prepare_run(SubmitRun("r2", (spec("a"),), request_id="q1"), now=0)
    with pytest.raises(RunExists, match="q1"):
        core.install_run(prepared, now=0)
    assert "r2" not in core.runs
    prepared = core.prepare_run(SubmitRun("r2", (spec("a"),), request_id="q2"), now=0)
    core.install_run(prepared, now=0)
    assert core.run_for_request("q2") == "r2"
    validate(core)
    core.cancel_run(CancelRun("r1", "x"), now=0)
    core.delete_run("r1")
    assert core.run_for_request("q1") is None
    core.submit_run(SubmitRun("r3", (spec("a"),), request_id="q1"), now=0)
    assert core.run_for_request("q1") == "r3"
    core.restore_run(
        "r4",
        name="",
        limits=core.default_limits,
        created_at=0,
        ended_at=0,
        last_seq=1,
        rng_state=1,
        cancelled=False,
        failed=False,
        nodes=[RestoredNode(spec("a"), OK, 1, 0, 9, b"", None, "", 0, 0.0, False, 1)],
        now=0,
        request_id="q4",
    )
    assert core.run_for_request("q4") == "r4"
    validate(core)


# --- validate ------------------------------------------------------------------------------------


def scheduled(drv: Driver) -> None:
    drv.submit(
        [
            spec("run"),
            spec("run2"),
            spec("ready", agent="nobody"),
            spec("back", retry=retry(2, initial_backoff_s=100)),
        ]
    )
    drv.core.submit_run(SubmitRun("r0", (spec("x"),), request_id="q"), now=0)
    drv.open(3)
    got = {x.node_id: x for x in drv.dispatch()}
    assert set(got) == {"run", "run2", "back"}
    drv.open(2, session_id="s2")
    drv.fail(got["back"])
    assert drv.node("back").queued == 0
    validate(drv.core)


def _steal(drv: Driver) -> None:
    node = drv.node("run")
    drv.core.sessions["s2"].in_flight[node.lease] = node


def _drop_queue_entry(drv: Driver) -> None:
    drv.node("ready").queued = 0


def _live_entry_for_a_running_node(drv: Driver) -> None:
    node = drv.node("run")
    node.queued = 424242
    drv.core._queues[("a", ())].push(0, 424242, node)
    drv.core._queued += 1
    drv.run.entries += 1


SCHEDULER_DAMAGE: dict[str, Callable[[Driver], object]] = {
    "ready_not_queued": _drop_queue_entry,
    "backoff_without_timer": lambda drv: drv.core._timers.clear(),
    "queued_count_off": lambda drv: setattr(drv.core, "_queued", drv.core._queued + 1),
    "entries_off": lambda drv: setattr(drv.run, "entries", drv.run.entries + 3),
    "queued_while_running": _live_entry_for_a_running_node,
    "held_by_two_sessions": _steal,
    "held_under_another_session": lambda drv: setattr(drv.node("run"), "session_id", "s2"),
    "running_on_a_gone_session": lambda drv: setattr(drv.node("run"), "session_id", "zz"),
    "running_closed": lambda drv: setattr(drv.node("run"), "open", False),
    "answered_and_open": lambda drv: setattr(drv.node("run"), "answered", 1),
    "request_id_lost": lambda drv: setattr(drv.core.runs["r0"], "request_id", "q9"),
    # A token with no entry behind it, on a node that is not READY.
    "queued_token_while_running": lambda drv: setattr(drv.node("run"), "queued", 99),
    # Free slots: a session with room is offered work, a draining or gone one is not.
    "free_slots_not_offered": lambda drv: drv.core._hungry.discard("s2"),
    "draining_and_offered": lambda drv: setattr(drv.core.sessions["s2"], "draining", True),
    "gone_and_offered": lambda drv: drv.core._hungry.add("zz"),
    "queue_not_listed": lambda drv: drv.core.sessions["s2"].queue_keys.clear(),
    "queue_listed_twice": lambda drv: drv.core.sessions["s2"].queue_keys.append(("a", ())),
}


@pytest.mark.parametrize("name", sorted(SCHEDULER_DAMAGE))
def test_validate_catches_scheduler_damage(name: str, drv: Driver) -> None:
    scheduled(drv)
    assert drv.core._hungry == {"s1", "s2"}
    SCHEDULER_DAMAGE[name](drv)
    with pytest.raises(InvariantError):
        validate(drv.core)


def test_validate_raises_under_python_O() -> None:
    code = (
        "from hivegrid.coordinator.core import Core, InvariantError, NodeSpec, SubmitRun\n"
        "from hivegrid.coordinator.core import validate\n"
        "core = Core(lease_epoch=1)\n"
        "core.submit_run(SubmitRun('r', (NodeSpec(id='a', agent='x'),)), now=0)\n"
        "core.runs['r'].unfinished = 7\n"
        "try:\n"
        "    validate(core)\n"
        "except InvariantError as exc:\n"
        "    print('caught', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-O", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.startswith("caught r: unfinished 7")


# --- the record contract -----------------------------------------------------------------------


def test_a_rejected_batch_replayed_as_a_plain_failure_gives_the_same_state(
    drv: Driver,
) -> None:
    drv.submit(
        [spec("m", can_mutate=True, retry=retry(3, jitter=0.8)), spec("after", "m")], seed=42
    )
    a = drv.run_to("m")
    status, rejection = drv.succeed(a, mutations=[AddEdge("zz", "after")])
    assert status is AckStatus.MUTATIONS_REJECTED
    live = drv.node("m")
    assert live.error == NodeError(f"mutations rejected: {rejection}", True, "mutation_rejected")
    # The log keeps the failure it became: no result, no mutations, the rejection as its error.
    (finished,) = [r.decision for _, r in drv.log if r.kind == "finished"]
    assert isinstance(finished, AttemptFinished) and finished.rejection == rejection
    assert finished.answer == Answer(
        "r1", "m", a.attempt, a.lease, Outcome.FAILED, error=mutations_rejected(rejection)
    )
    # An older log kept the rejection only in the error, as a plain failure: the same replay.
    log = []
    for t, rec in drv.log:
        if rec.kind == "finished":
            rec = scheduler_module.Record(drv.run, AttemptFinished(finished.answer))
        log.append((t, rec))
    as_failure = replay(log, now=drv.now)
    as_rejection = replay(drv.log, now=drv.now)
    for sid in list(drv.core.sessions):
        drv.close(sid)
    facts = node_facts(drv.core)
    assert node_facts(as_failure) == facts == node_facts(as_rejection)
    node = as_failure.runs["r1"].nodes["m"]
    assert (node.failures, node.not_before, node.error) == (1, live.not_before, live.error)
    assert as_failure.runs["r1"].rng_state == drv.run.rng_state
    # A worker resending the answer after the restart gets the rejection again.
    got = as_failure.finish_attempt(
        "s", Answer("r1", "m", a.attempt, a.lease, Outcome.SUCCEEDED), now=drv.now
    )
    assert got == (AckStatus.MUTATIONS_REJECTED, rejection)


def test_record_kinds_stay_within_the_contract() -> None:
    drv = Driver(max_assignment_bytes=300)
    drv.submit([spec("a", can_mutate=True), spec("big", input=b"x" * 400), spec("c", "a")])
    drv.open(1)
    a = drv.dispatch_one("a")
    drv.progress(a)
    drv.succeed(a, mutations=[AddNode(spec("d"))])
    drv.dispatch()
    drv.close("s1")
    drv.mutate([AddNode(spec("e"))])
    drv.cancel_run()
    contract = {
        "submitted",
        "dispatched",
        "finished",
        "lost",
        "timed_out",
        "progress",
        "cancelled",
        "mutated",
        "ended",
        "node_failed",
    }
    seen = set(kinds(r for _, r in drv.log))
    assert seen <= contract
    assert {"node_failed", "lost", "progress", "ended"} <= seen
    # Every decision is a value: frozen, so the log codec and watchers may share it.
    for _, rec in drv.log:
        first = fields(rec.decision)[0].name
        with pytest.raises(FrozenInstanceError):
            setattr(rec.decision, first, None)
