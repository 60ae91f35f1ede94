"""Retries with jittered exponential backoff, attempt limits, and start-to-close timeouts."""

from __future__ import annotations

import pytest

from hivegrid.coordinator.core import (
    AckStatus,
    AttemptTimedOut,
    NodeError,
    NodeState,
    Outcome,
    RetryPolicy,
    RunState,
)

from .conftest import Driver, kinds, retry, spec, transitions_of

RD, RN, OK, FL, SK = (
    NodeState.READY,
    NodeState.RUNNING,
    NodeState.SUCCEEDED,
    NodeState.FAILED,
    NodeState.SKIPPED,
)


def test_exponential_backoff_holds_the_retry_until_advance(drv: Driver) -> None:
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=2, multiplier=3, max_backoff_s=5)
    drv.submit([spec("a", retry=policy)])
    drv.open(1)
    drv.now = 10
    drv.fail(drv.dispatch_one("a"))
    node = drv.node("a")
    assert (node.state, node.failures, node.not_before) == (RD, 1, 12)
    assert drv.core.next_deadline() == 12
    assert drv.dispatch() == []
    drv.advance(11.999)
    assert drv.dispatch() == []
    drv.advance(12)
    a2 = drv.dispatch_one("a")
    assert (a2.attempt, drv.state("a")) == (2, RN)
    drv.now = 13
    drv.fail(a2)
    assert node.not_before == 13 + 5  # 2 * 3 = 6, capped at max_backoff_s
    drv.advance(17.5)
    assert drv.dispatch() == []
    drv.advance(18)
    a3 = drv.dispatch_one("a")
    drv.now = 20
    drv.fail(a3)
    assert node.not_before == 20 + 5
    drv.advance(100)
    drv.fail(drv.dispatch_one("a"))
    assert (node.state, node.attempt, node.failures) == (FL, 4, 4)
    assert drv.run.state is RunState.FAILED


def test_zero_backoff_retries_at_once(drv: Driver) -> None:
    drv.submit([spec("a", retry=RetryPolicy(max_attempts=2, initial_backoff_s=0))])
    drv.fail(drv.run_to("a"))
    assert drv.dispatch_one("a").attempt == 2


@pytest.mark.parametrize("jitter", [0.25, 0.5, 1.0])
def test_jitter_shortens_the_delay_within_its_fraction(jitter: float) -> None:
    delays = []
    for seed in range(8):
        drv = Driver()
        drv.now = 100
        drv.submit([spec("a", retry=retry(2, initial_backoff_s=4, jitter=jitter))], seed=seed)
        drv.fail(drv.run_to("a"))
        delay = drv.node("a").not_before - 100
        assert 4 * (1 - jitter) <= delay <= 4
        delays.append(delay)
        # Not dispatched a moment before not_before; dispatched at it.
        drv.advance(100 + delay - 1e-6)
        assert drv.dispatch() == []
        drv.advance(100 + delay)
        assert drv.dispatch_one("a").attempt == 2
    assert len(set(delays)) > 1, "jitter draws differ between seeds"


def test_jitter_is_deterministic_per_seed() -> None:
    def delays(seed: int) -> list[float]:
        drv = Driver()
        drv.submit([spec("a", retry=retry(5, jitter=1.0))], seed=seed)
        out = []
        for _ in range(4):
            drv.fail(drv.run_to("a"))
            out.append(drv.node("a").not_before - drv.now)
            drv.advance(drv.node("a").not_before)
        return out

    assert delays(42) == delays(42)
    assert delays(42) != delays(43)


def test_max_attempts_counts_the_first(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(2)), spec("b", "a")])
    drv.fail(drv.run_to("a"))
    drv.advance(5)
    drv.fail(drv.run_to("a"))
    assert (drv.state("a"), drv.node("a").attempt) == (FL, 2)
    assert drv.state("b") is SK


def test_default_policy_does_not_retry(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.fail(drv.run_to("a"), retryable=True)
    assert drv.state("a") is FL


def test_non_retryable_failure_fails_at_once(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(5))])
    drv.fail(drv.run_to("a"), retryable=False, kind="unknown_agent")
    node = drv.node("a")
    assert (node.state, node.attempt) == (FL, 1)
    assert node.error == NodeError("boom", False, "unknown_agent")
    assert drv.core.next_deadline() is None


def test_failure_without_error_is_retryable(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(2))])
    drv.answer(drv.run_to("a"), Outcome.FAILED)
    assert drv.state("a") is RD
    assert drv.node("a").error.retryable


def test_success_after_retries_clears_the_error(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(3))])
    drv.fail(drv.run_to("a"))
    drv.advance(1)
    drv.succeed(drv.run_to("a"), result=b'{"ok": 1}')
    node = drv.node("a")
    assert (node.state, node.error, node.result) == (OK, None, b'{"ok": 1}')


# --- timeouts ------------------------------------------------------------------------------


def test_timeout_cancels_on_worker_and_retries(drv: Driver) -> None:
    drv.submit([spec("a", timeout_s=5, retry=retry(2)), spec("b", "a")])
    sid = drv.open(1)
    a1 = drv.dispatch_one("a")
    drv.advance(4.999)
    assert drv.state("a") is RN and drv.cancels == []
    drv.advance(5)
    (order,) = drv.cancels
    assert (order.session_id, order.node_id, order.reason) == (sid, "a", "timeout")
    assert (order.attempt, order.lease) == (a1.attempt, a1.lease)
    node = drv.node("a")
    assert (node.state, node.error.kind, node.failures) == (RD, "timeout", 1)
    (rec,) = drv.log[-1:]
    assert rec[1].kind == "timed_out"
    assert rec[1].decision == AttemptTimedOut("a", 1, a1.lease)
    assert rec[1].transitions == [("a", RD)]
    # The slot stays taken until the worker answers the cancel.
    drv.advance(5.5)
    assert drv.dispatch() == []
    assert drv.cancelled(a1)[0] is AckStatus.STALE  # the timed-out attempt is over
    assert drv.node("a").failures == 1  # the cancelled answer costs nothing more
    drv.advance(6)
    a2 = drv.dispatch_one("a")
    assert a2.attempt == 2
    drv.advance(6 + 5)
    assert len(drv.cancels) == 2
    assert (drv.state("a"), drv.state("b")) == (FL, SK)
    assert drv.run.state is RunState.FAILED
    assert kinds(r for _, r in drv.log[-2:]) == ["timed_out", "ended"]


def test_timeout_counts_from_each_dispatch(drv: Driver) -> None:
    drv.submit([spec("a", timeout_s=5, retry=retry(1))])
    sid = drv.open(1)
    drv.dispatch_one("a")
    drv.advance(1)
    drv.close(sid)
    drv.open(1)
    a2 = drv.dispatch_one("a")
    drv.advance(5.5)  # the first attempt's deadline is gone with its lease
    assert drv.state("a") is RN
    drv.advance(6)
    assert drv.state("a") is FL
    assert drv.cancels[-1].lease == a2.lease


def test_no_timeout_after_the_attempt_ended(drv: Driver) -> None:
    drv.submit([spec("a", timeout_s=5), spec("b", agent="other")])
    drv.succeed(drv.run_to("a"))
    drv.advance(50)
    assert drv.state("a") is OK and drv.cancels == []


def test_timeout_of_a_node_whose_worker_is_gone_orders_no_cancel(drv: Driver) -> None:
    drv.submit([spec("a", timeout_s=5, retry=retry(2))])
    drv.run_to("a")
    # As after a restart: the lease outlived its session.
    drv.core.sessions.clear()
    drv.core._hungry.clear()
    drv.advance(5)
    assert drv.state("a") is RD and drv.cancels == []


def test_long_running_node_keeps_the_run_running(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b")])
    drv.succeed(drv.run_to("a"))
    drv.run_to("b")
    for t in (60, 3600, 86400 * 365):
        drv.advance(t)
        assert drv.run.state is RunState.RUNNING and drv.state("b") is RN
    assert drv.core.next_deadline() is None
    drv.succeed(drv.run_to("b"))
    assert drv.run.state is RunState.SUCCEEDED


def test_unsolicited_cancelled_answer_costs_an_attempt(drv: Driver) -> None:
    # Issue 9: a worker answering CANCELLED unasked got a free retry every time (one node ran
    # 697 attempts with max_attempts=3). Now it is a failed attempt, through the retry policy.
    drv.submit([spec("a", retry=retry(2, initial_backoff_s=0))])
    a1 = drv.run_to("a")
    records_before = len(drv.log)
    assert drv.cancelled(a1)[0] is AckStatus.COMMITTED
    assert transitions_of(r for _, r in drv.log[records_before:]) == [("a", RD)]
    node = drv.node("a")
    assert node.failures == 1
    assert (node.error.kind, node.error.retryable) == ("abandoned", True)
    assert "without being asked" in node.error.message
    a2 = drv.dispatch_one("a")
    assert a2.attempt == 2
    assert drv.cancelled(a2)[0] is AckStatus.COMMITTED
    assert drv.state("a") is FL
    assert drv.run.state is RunState.FAILED


def test_unsolicited_cancelled_answers_cannot_retry_forever(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(3, initial_backoff_s=0))])
    drv.open(1)
    attempts = 0
    for _ in range(100):
        got = drv.dispatch()
        if not got:
            break
        attempts += 1
        drv.cancelled(got[0])
    assert attempts == 3
    assert drv.state("a") is FL


# --- known core bugs -------------------------------------------------------------------------


def test_late_result_of_a_timed_out_attempt_is_stale(drv: Driver) -> None:
    drv.submit([spec("a", timeout_s=5, retry=retry(2))])
    a1 = drv.run_to("a")
    drv.advance(5)
    assert drv.state("a") is RD
    before = drv.snapshot()
    assert drv.succeed(a1)[0] is AckStatus.STALE
    assert drv.snapshot() == before


def test_resent_failure_is_idempotent(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(3))])
    a1 = drv.run_to("a")
    assert drv.fail(a1)[0] is AckStatus.COMMITTED
    before = drv.snapshot()
    logged = len(drv.log)
    # The same ack as the first time (the worker may have lost it), and nothing changes.
    assert drv.fail(a1) == (AckStatus.COMMITTED, "")
    assert drv.snapshot() == before
    assert len(drv.log) == logged
    assert drv.node("a").failures == 1


def test_held_ref_of_a_failed_attempt_is_not_kept(drv: Driver) -> None:
    drv.submit([spec("a", retry=retry(3))])
    sid = drv.open(1)
    a1 = drv.dispatch_one("a")
    drv.fail(a1)
    drv.close(sid)
    drv.open(1, held=[(drv.run_id, "a", a1.attempt, a1.lease)])
    assert drv.kept == []
    assert drv.state("a") is RD


def test_cancel_answer_after_the_backoff_elapsed_does_not_strand_the_node(drv: Driver) -> None:
    drv.submit([spec("a", timeout_s=5, retry=retry(2))])
    drv.open(2)
    a1 = drv.dispatch_one("a")
    drv.advance(5)  # timed out: a cancel is on its way, retry at 6
    drv.advance(7)  # the backoff is over: the node is queued again
    drv.cancelled(a1)  # the worker acknowledges the cancel
    assert drv.dispatch_one("a").attempt == 2


def test_cancel_answer_of_a_lost_attempt_does_not_strand_the_node(drv: Driver) -> None:
    drv.submit([spec("a")])
    sid = drv.open(1)
    a1 = drv.dispatch_one("a")
    drv.close(sid)
    drv.cancelled(a1, session_id="")
    drv.open(1)
    assert drv.dispatch_one("a").attempt == 2
