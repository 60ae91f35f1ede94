"""Worker sessions: credits (slots), routing, lost sessions, held refs, drain, fencing."""

from __future__ import annotations

from hivegrid.coordinator.core import (
    AckStatus,
    AddNode,
    Answer,
    AttemptLost,
    AttemptRef,
    NodeDispatched,
    NodeState,
    Outcome,
    ProgressReported,
    RunState,
)

from .conftest import Driver, kinds, retry, spec, transitions_of

P, RD, RN, OK = NodeState.PENDING, NodeState.READY, NodeState.RUNNING, NodeState.SUCCEEDED


def test_slots_are_never_exceeded(drv: Driver) -> None:
    drv.submit([spec(f"n{i}") for i in range(6)])
    sid = drv.open(2)
    first = drv.dispatch()
    assert len(first) == 2
    assert drv.dispatch() == []
    drv.succeed(first[0])
    (one,) = drv.dispatch()
    assert len(drv.core.sessions[sid].in_flight) == 2
    assert one.node_id not in {a.node_id for a in first}


def test_work_is_spread_over_sessions_within_their_slots(drv: Driver) -> None:
    drv.submit([spec(f"n{i}") for i in range(5)])
    s1, s2 = drv.open(1), drv.open(3)
    got = drv.dispatch()
    assert sorted(a.session_id for a in got) == [s1, s2, s2, s2]
    assert {a.node_id for a in got} <= set(drv.run.nodes)
    assert len({a.lease for a in got}) == 4


def test_nodes_go_only_to_sessions_running_their_agent_with_matching_labels(drv: Driver) -> None:
    drv.submit(
        [
            spec("g", agent="gpu", labels=(("zone", "eu"),)),
            spec("c", agent="cpu"),
        ]
    )
    cpu = drv.open(4, agents=["cpu"])
    us = drv.open(4, agents=["gpu"], labels={"zone": "us"})
    (a,) = drv.dispatch()
    assert (a.node_id, a.session_id) == ("c", cpu)
    eu = drv.open(4, agents=["gpu", "cpu"], labels={"zone": "eu", "extra": "x"})
    (b,) = drv.dispatch()
    assert (b.node_id, b.session_id) == ("g", eu)
    assert us in drv.core.sessions


def test_a_queue_made_after_the_session_opened_reaches_it(drv: Driver) -> None:
    drv.submit([spec("a", agent="x")])
    sid = drv.open(4, agents=["x", "y"])
    drv.dispatch()
    drv.mutate([AddNode(spec("b", agent="y"))])
    (b,) = drv.dispatch()
    assert (b.node_id, b.session_id) == ("b", sid)


def test_higher_priority_first_then_submission_order(drv: Driver) -> None:
    drv.submit([spec("low"), spec("high", priority=5), spec("low2"), spec("mid", priority=2)])
    drv.open(1)
    order = []
    for _ in range(4):
        (a,) = drv.dispatch()
        order.append(a.node_id)
        drv.succeed(a)
    assert order == ["high", "mid", "low", "low2"]


def test_draining_session_gets_nothing_new_but_its_results_count(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b"), spec("c")])
    sid = drv.open(1)
    (a,) = drv.dispatch()
    drv.drain_session(sid)
    assert drv.succeed(a)[0] is AckStatus.COMMITTED
    assert drv.dispatch() == []
    other = drv.open(5)
    assert {x.session_id for x in drv.dispatch()} == {other}


def test_lost_session_requeues_without_spending_a_retry(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(1)), spec("b", "a")])
    for attempt in (1, 2, 3):
        sid = drv.open(1)
        a = drv.dispatch_one("a")
        assert a.attempt == attempt
        drv.close(sid, reason="stream ended")
        node = drv.node("a")
        assert (node.state, node.failures, node.session_id) == (RD, 0, "")
        (_, rec) = drv.log[-1]
        assert rec.kind == "lost"
        assert rec.decision == AttemptLost("a", attempt, a.lease, "stream ended")
        assert rec.transitions == [("a", RD)]
    drv.open(1)
    drv.succeed(drv.dispatch_one("a"))
    assert drv.state("a") is OK and drv.state("b") is RD


def test_late_answer_of_the_lost_attempt_is_accepted_while_ready(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", "a")])
    sid = drv.open(1)
    a = drv.dispatch_one("a")
    drv.close(sid)
    status, _ = drv.succeed(a, result=b"1", session_id="")
    assert status is AckStatus.COMMITTED
    assert (drv.state("a"), drv.node("a").result, drv.state("b")) == (OK, b"1", RD)
    # The queue entry the loss made is dropped: a is not dispatched again.
    drv.open(4)
    assert [x.node_id for x in drv.dispatch()] == ["b"]


def test_answer_after_redispatch_is_stale(drv: Driver) -> None:
    drv.submit([spec("a")])
    s1 = drv.open(1)
    old = drv.dispatch_one("a")
    drv.close(s1)
    drv.open(1)
    new = drv.dispatch_one("a")
    assert (new.attempt, new.lease != old.lease) == (2, True)
    logged = len(drv.log)
    before = drv.snapshot()
    assert drv.succeed(old)[0] is AckStatus.STALE
    assert drv.fail(old, retryable=False)[0] is AckStatus.STALE
    assert drv.snapshot() == before
    assert len(drv.log) == logged  # a stale answer leaves no record
    assert drv.succeed(new)[0] is AckStatus.COMMITTED


def test_unknown_refs_are_stale(drv: Driver) -> None:
    drv.submit([spec("a")])
    a = drv.run_to("a")
    core = drv.core
    for ref in [("nope", "a", 1, a.lease), ("r1", "nope", 1, a.lease), ("r1", "a", 2, a.lease)]:
        status, _ = core.finish_attempt(a.session_id, Answer(*ref, Outcome.SUCCEEDED), now=0)
        assert status is AckStatus.STALE
    assert drv.state("a") is RN


def test_answer_resent_for_a_finished_node_gets_the_first_ack(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b")])
    a = drv.run_to("a")
    drv.succeed(a, result=b"1")
    before = drv.snapshot()
    logged = len(drv.log)
    assert drv.succeed(a, result=b"2") == (AckStatus.COMMITTED, "")
    assert drv.fail(a) == (AckStatus.COMMITTED, "")
    assert drv.snapshot() == before
    assert drv.node("a").result == b"1"
    assert len(drv.log) == logged


def test_held_refs_do_not_take_an_attempt_from_a_live_session(drv: Driver) -> None:
    # Issue 9: a Hello naming another live session's attempt took it over; the owner was not
    # told and its slot was refilled, so it ran more than its slots.
    drv.submit([spec("a"), spec("b"), spec("c")])
    s1 = drv.open(2)
    got = {a.node_id: a for a in drv.dispatch()}
    a = got["a"]
    logged = len(drv.log)
    s2 = drv.open(2, held=[(drv.run_id, "a", a.attempt, a.lease)])
    assert drv.kept == []
    node = drv.node("a")
    assert (node.state, node.session_id) == (RN, s1)
    assert drv.core.sessions[s1].in_flight[a.lease] is node
    assert drv.core.sessions[s2].in_flight == {}
    assert len(drv.log) == logged
    assert [(x.node_id, x.session_id) for x in drv.dispatch()] == [("c", s2)]
    assert len(drv.core.sessions[s1].in_flight) == 2
    # Once s1 is gone, the attempt is the reconnected worker's to keep.
    drv.close(s1)
    s3 = drv.open(2, held=[(drv.run_id, "a", a.attempt, a.lease), (drv.run_id, "a", 9, a.lease)])
    assert drv.kept == [AttemptRef(drv.run_id, "a", a.attempt, a.lease)]
    assert (node.state, node.session_id, node.attempt, node.lease) == (RN, s3, 1, a.lease)
    (_, rec) = drv.log[-1]
    assert rec.decision == NodeDispatched("a", 1, a.lease, s3, f"w-{s3}")
    assert drv.succeed(a, session_id=s3)[0] is AckStatus.COMMITTED


def test_held_ref_of_a_lost_attempt_is_leased_again(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b")])
    s1 = drv.open(1)
    a = drv.dispatch_one("a")
    drv.close(s1)
    assert drv.state("a") is RD
    s2 = drv.open(1, held=[(drv.run_id, "a", a.attempt, a.lease)])
    assert len(drv.kept) == 1
    (_, rec) = drv.log[-1]
    assert rec.transitions == [("a", RN)]
    # It holds the only slot, and the stale queue entry of a is not dispatched.
    assert drv.dispatch() == []
    s3 = drv.open(4)
    assert [(x.node_id, x.session_id) for x in drv.dispatch()] == [("b", s3)]
    assert drv.succeed(a, session_id=s2)[0] is AckStatus.COMMITTED


def test_held_refs_past_the_slots_or_stale_are_dropped(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b"), spec("c")])
    s1 = drv.open(3)
    got = {x.node_id: x for x in drv.dispatch()}
    drv.succeed(got["c"])
    drv.close(s1)
    held = [(drv.run_id, i, got[i].attempt, got[i].lease) for i in ("a", "b", "c")]
    s2 = drv.open(1, held=held)
    assert drv.kept == [AttemptRef(*held[0])]
    assert drv.node("a").session_id == s2
    assert (drv.state("b"), drv.node("b").open) == (RD, True)
    assert drv.state("c") is OK


def test_time_passing_does_not_expire_a_session(drv: Driver) -> None:
    # Session liveness belongs to the runtime: the core only loses a session when told.
    drv.submit([spec("a")])
    drv.run_to("a")
    drv.advance(1e6)
    assert drv.state("a") is RN


def test_close_of_an_unknown_session_does_nothing(drv: Driver) -> None:
    drv.submit([spec("a")])
    logged = len(drv.log)
    drv.close("nope")
    assert len(drv.log) == logged


def test_progress_is_recorded_only_for_the_current_running_attempt(drv: Driver) -> None:
    drv.submit([spec("a")])
    s1 = drv.open(1)
    a = drv.dispatch_one("a")
    assert drv.progress(a)
    (_, rec) = drv.log[-1]
    assert (rec.decision, rec.transitions) == (ProgressReported("a", a.attempt, b"p"), [])
    drv.close(s1)
    logged = len(drv.log)
    assert not drv.progress(a)  # READY: not running any more
    drv.open(1)
    b = drv.dispatch_one("a")
    logged = len(drv.log)
    assert not drv.progress(a)  # an older attempt
    assert len(drv.log) == logged
    assert drv.progress(b)


def test_lost_sessions_across_runs(drv: Driver) -> None:
    drv.submit([spec("a")], run_id="r1")
    drv.submit([spec("a")], run_id="r2")
    sid = drv.open(2)
    assert len(drv.dispatch()) == 2
    drv.close(sid)
    records = [r for _, r in drv.log[-2:]]
    assert kinds(records) == ["lost", "lost"]
    assert {r.run_id for r in records} == {"r1", "r2"}
    assert transitions_of(records) == [("a", RD), ("a", RD)]
    assert drv.core.runs["r1"].state is RunState.RUNNING
