"""What the core decides about its inputs (issue 10, point 3): answers it cannot take, mutations of
no known kind, answers the door refused, the limits of a run, and what an assignment carries.
These were decided outside the core before; now a replay and a live run cannot disagree."""

from __future__ import annotations

import pytest

from hivegrid.coordinator.core import (
    AckStatus,
    AddNode,
    Answer,
    AttemptFinished,
    Core,
    GraphError,
    MutateRun,
    NodeError,
    Outcome,
    RunLimits,
    SubmitRun,
    UnknownMutation,
)

from .conftest import FL, RN, Driver, node_facts, replay, retry, spec

UNKNOWN_MESSAGE = "a mutation without a kind (empty, or a kind this coordinator does not know)"


@pytest.mark.parametrize(
    "fields",
    [{"run_id": ""}, {"lease": 0}, {"outcome": 0}, {"outcome": 4}, {"outcome": -1}],
    ids=["no_run", "no_lease", "no_outcome", "outcome_4", "outcome_negative"],
)
def test_an_answer_without_a_ref_or_an_outcome_is_invalid_and_changes_nothing(
    fields: dict[str, object], drv: Driver
) -> None:
    drv.submit([spec("a")])
    sid = drv.open(1)
    a = drv.dispatch_one("a")
    before = drv.snapshot()
    logged = len(drv.log)
    ref = {"run_id": a.run_id, "lease": a.lease, "outcome": Outcome.SUCCEEDED} | fields
    answer = Answer(ref["run_id"], "a", a.attempt, ref["lease"], ref["outcome"])  # type: ignore[arg-type]
    status, message = drv.core.finish_attempt(sid, answer, now=drv.now)
    drv.step()
    assert (status, message) == (
        AckStatus.INVALID,
        "a result needs a ref and an outcome (1, 2 or 3)",
    )
    assert drv.snapshot() == before and len(drv.log) == logged
    assert drv.core.sessions[sid].in_flight == {a.lease: drv.node("a")}  # still its slot


def test_a_mutation_of_no_known_kind_rejects_the_whole_batch(drv: Driver) -> None:
    drv.submit([spec("m", can_mutate=True, retry=retry(2))])
    a = drv.run_to("m")
    status, rejection = drv.succeed(a, mutations=[AddNode(spec("kid")), UnknownMutation()])
    assert status is AckStatus.MUTATIONS_REJECTED
    assert rejection == f"mutation 2 (unknown): {UNKNOWN_MESSAGE}"
    assert "kid" not in drv.run.nodes
    (finished,) = [r.decision for _, r in drv.log if r.kind == "finished"]
    assert isinstance(finished, AttemptFinished) and finished.answer.mutations == ()
    # From a client, the same batch is refused whole.
    with pytest.raises(GraphError, match="mutation 1 \\(unknown\\): a mutation without a kind"):
        drv.core.mutate_run(MutateRun(drv.run_id, (UnknownMutation(),)), now=drv.now)


def test_an_answer_the_door_refused_is_acked_refused_and_logged_as_its_failure(
    drv: Driver,
) -> None:
    drv.submit([spec("a")])
    a = drv.run_to("a")
    error = NodeError("a result of 99 bytes is over the limit", False, "too_large")
    refused = Answer(
        a.run_id, "a", a.attempt, a.lease, Outcome.FAILED, error=error, refused="too big"
    )
    assert drv.core.finish_attempt(a.session_id, refused, now=drv.now) == (
        AckStatus.REFUSED,
        "too big",
    )
    drv.step()
    node = drv.node("a")
    assert (node.state, node.error) == (FL, error)
    (finished,) = [r.decision for _, r in drv.log if r.kind == "finished"]
    assert finished == AttemptFinished(
        Answer(a.run_id, "a", a.attempt, a.lease, Outcome.FAILED, error=error)
    )
    # Sent again, it is refused again (and changes nothing more).
    again = drv.core.finish_attempt(a.session_id, refused, now=drv.now)
    assert again == (AckStatus.REFUSED, "too big")


def test_a_failure_without_an_error_gets_one_and_replays_the_same(drv: Driver) -> None:
    drv.submit([spec("a")])
    a = drv.run_to("a")
    assert drv.answer(a, Outcome.FAILED)[0] is AckStatus.COMMITTED
    assert drv.node("a").error == NodeError("failed without an error", True, "agent")
    assert node_facts(replay(drv.log, now=drv.now)) == node_facts(drv.core)


@pytest.mark.parametrize(
    ("asked", "got"),
    [
        (None, RunLimits(50, 4)),
        (RunLimits(0, 0), RunLimits(50, 4)),
        (RunLimits(10, 0), RunLimits(10, 4)),
        (RunLimits(0, 2), RunLimits(50, 2)),
        (RunLimits(7, 1), RunLimits(7, 1)),
    ],
)
def test_a_runs_limits_are_what_was_asked_and_the_defaults_for_the_rest(
    asked: RunLimits | None, got: RunLimits
) -> None:
    core = Core(lease_epoch=1, default_limits=RunLimits(50, 4))
    run = core.submit_run(SubmitRun("r", (spec("a"),), asked), now=0)
    assert run.limits == got
    (rec,) = core.take_outbox()[0]
    assert rec.decision.limits == got  # the log keeps what the run got


def test_an_assignment_carries_the_succeeded_dependencies_results(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b"), spec("j", "b", "a", run_on_failure=True)])
    drv.succeed(drv.run_to("a"), result=b"A")
    drv.fail(drv.run_to("b"), retryable=False)
    j = drv.run_to("j")
    assert drv.state("j") is RN
    assert (j.run_id, j.node_id, j.spec, j.deps) == (
        drv.run_id,
        "j",
        drv.node("j").spec,
        [("a", b"A")],
    )
    drv.submit([spec("x")], run_id="r2")
    assert drv.run_to("x").deps == []
