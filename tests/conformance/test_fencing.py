"""Fencing at the protocol level, with a raw worker (no SDK): the guarantees the conformance
scenarios rely on when a worker's answer comes late or twice (docs/protocol.md, "Fencing")."""

from __future__ import annotations

import pytest

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import worker_pb2 as wpb
from tests.support.names import ack_name, state_name
from tests.support.processes import CoordinatorProcess
from tests.support.runs import RunClient as Client
from tests.support.values import to_json

from .harness import raw_worker


def _failed(ref: wpb.AssignmentRef, message: str = "try again") -> wpb.ConnectRequest:
    res = wpb.Result(
        ref=ref,
        outcome=wpb.OUTCOME_FAILED,
        error=gpb.NodeError(message=message, retryable=True, kind="agent"),
    )
    return wpb.ConnectRequest(results=wpb.Results(items=[res]))


@pytest.mark.timeout(30)
def test_late_success_of_timed_out_attempt_is_stale(
    coordinator: CoordinatorProcess, client: Client
) -> None:
    """A result for an attempt that timed out is acked STALE, even while the node waits out its
    retry backoff (it must not complete the node: the retry is not undone)."""
    with raw_worker(coordinator.address, agents=("slow",), slots=2) as raw:
        run = client.submit(
            [
                {
                    "id": "n",
                    "agent": "slow",
                    "timeout_s": 0.3,
                    "retry": {"max_attempts": 2, "initial_backoff_s": 3.0},
                }
            ]
        )
        (first,) = raw.take()
        cancel = raw.cancel(within=10)
        assert cancel.ref == first.ref and cancel.reason == "timeout", cancel
        raw.answer(first.ref, to_json({"late": True}))  # finished just after the deadline
        ack = raw.ack()
        if ack.status != wpb.ACK_STATUS_STALE:
            status = client.nodes(run)["n"]
            pytest.fail(
                f"a timed-out attempt's result was acked {ack_name(ack.status)}; "
                f"node {state_name(status.state)} with result {status.result} "
                f"after {status.attempts} attempt(s)"
            )
        (second,) = raw.take(within=10)
        assert second.ref.attempt == 2
        raw.answer(second.ref, to_json({"on": "time"}))
        log = client.wait_until_done(run, timeout=15)
        assert client.nodes(run)["n"].result == {"on": "time"}
        assert log.successes() == {"n": 1}


@pytest.mark.timeout(30)
def test_resent_failure_does_not_spend_a_second_retry(
    coordinator: CoordinatorProcess, client: Client
) -> None:
    """Results are idempotent by ref: the same FAILED result sent twice (a worker re-sends
    what was not acked yet) counts once against the retry budget."""
    with raw_worker(coordinator.address, agents=("shaky",), slots=1) as raw:
        run = client.submit(
            [
                {
                    "id": "n",
                    "agent": "shaky",
                    "retry": {"max_attempts": 3, "initial_backoff_s": 0.5},
                }
            ]
        )
        (first,) = raw.take()
        raw.send(_failed(first.ref))
        raw.send(_failed(first.ref))  # the same answer again
        acks = [raw.ack(), raw.ack()]
        assert acks[0].status == wpb.ACK_STATUS_COMMITTED, acks
        (second,) = raw.take(within=10)
        assert second.ref.attempt == 2
        raw.send(_failed(second.ref))
        assert raw.ack().status == wpb.ACK_STATUS_COMMITTED
        # two failures of three attempts: a third attempt is due
        try:
            (third,) = raw.take(within=5)
        except Exception:
            status = client.nodes(run)["n"]
            pytest.fail(
                "no third attempt: the duplicate result spent a retry "
                f"(second ack {ack_name(acks[1].status)}; node "
                f"{state_name(status.state)} after {status.attempts} attempts)"
            )
        raw.answer(third.ref, to_json(3))
        log = client.wait_until_done(run, timeout=10)
        assert log.end_state() == "SUCCEEDED"
