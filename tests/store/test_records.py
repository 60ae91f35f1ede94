"""The log's record format (coordinator/records.py): every decision the core makes comes back
from its bytes as it was; rows of the old format (hivegrid.v1.RunEvent) decode onto the same
decisions; bytes of neither form are refused, never misread."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from google.protobuf import descriptor_pb2

from hivegrid.coordinator import records
from hivegrid.coordinator.core import (
    AddEdge,
    AddNode,
    Answer,
    AttemptFinished,
    AttemptLost,
    AttemptTimedOut,
    ConfirmSpeculative,
    Core,
    Decision,
    DiscardSpeculative,
    InjectBefore,
    MarkSpeculative,
    ModifyNode,
    MutationsApplied,
    NodeDispatched,
    NodeError,
    NodeFailed,
    NodeSpec,
    NodeState,
    OpenSession,
    Outcome,
    ProgressReported,
    PruneSubgraph,
    Record,
    RemoveEdge,
    RemoveNode,
    RetryPolicy,
    RunCancelled,
    RunEnded,
    RunLimits,
    RunState,
    RunSubmitted,
    SplitNode,
    SubmitRun,
    UnknownMutation,
    mutations_rejected,
)
from hivegrid.storage.v1.storage_pb2 import LogRecord
from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb


def record(decision: Decision, transitions: Sequence[tuple[str, NodeState]] = ()) -> Record:
    """A record as the core makes them, without a run around it."""
    rec = Record.__new__(Record)
    rec.run_id, rec.decision, rec.transitions = "r-1", decision, list(transitions)
    return rec


FULL = NodeSpec(
    id="n",
    agent="summarise",
    input=b'{"x": 1}',
    depends_on=("p", "q"),
    retry=RetryPolicy(3, 0.5, 9.0, 3.0, 0.25),
    timeout_s=7.5,
    priority=-2,
    labels=(("gpu", "1"), ("zone", "b")),
    can_mutate=True,
    metadata={"k": "v"},
    run_on_failure=True,
)
PLAIN = NodeSpec(id="m", agent="echo")
EVERY_MUTATION = (
    AddNode(FULL),
    AddNode(PLAIN, speculative=True),
    AddEdge("a", "b"),
    RemoveEdge("c", "d"),
    RemoveNode("e"),
    ModifyNode("f", input=b"", priority=0, retry=RetryPolicy(), timeout_s=0.0),
    ModifyNode("g", priority=5),
    SplitNode("h", (PLAIN, FULL)),
    InjectBefore("i", PLAIN),
    PruneSubgraph("j"),
    MarkSpeculative("k"),
    ConfirmSpeculative("l"),
    DiscardSpeculative("m"),
)
EVERY_DECISION: list[Decision] = [
    RunSubmitted((FULL, PLAIN, NodeSpec("", "echo")), RunLimits(10, 3), "name", 2**63 - 1, "q"),
    NodeDispatched("n", 2, 2**64 - 1, "s-1", "w"),
    AttemptFinished(Answer("r-1", "n", 2, 7, Outcome.SUCCEEDED, b"{}", None, EVERY_MUTATION)),
    AttemptFinished(Answer("r-1", "n", 1, 7, Outcome.FAILED, error=mutations_rejected("no")), "no"),
    AttemptFinished(Answer("r-1", "n", 3, 8, Outcome.FAILED, error=NodeError("x", True, "k"))),
    AttemptFinished(Answer("r-1", "n", 4, 9, Outcome.CANCELLED)),
    AttemptLost("n", 1, 5, "stream ended"),
    AttemptTimedOut("n", 1, 6),
    ProgressReported("n", 1, b'{"pct": 5}'),
    RunCancelled("enough"),
    RunCancelled(""),
    MutationsApplied(EVERY_MUTATION),
    NodeFailed("n", NodeError("too big", False, "too_large")),
    RunEnded(RunState.FAILED),
]


@pytest.mark.parametrize("decision", EVERY_DECISION, ids=lambda d: d.kind)
def test_every_decision_comes_back_as_it_was(decision: Decision) -> None:
    transitions = [("n", NodeState.RUNNING), ("m", NodeState.SKIPPED)]
    data = records.encode(record(decision, transitions), 12, 1234.5)
    assert records.decode(data) == records.LogEntry(
        "r-1", 12, 1234.5, decision, transitions, len(data)
    )
    assert records.decode_decision(data) == ("r-1", 12, 1234.5, decision)
    assert LogRecord.FromString(data).WhichOneof("decision") is not None


def test_the_records_of_a_real_run_come_back_as_they_were() -> None:
    core = Core(lease_epoch=1, max_assignment_bytes=300)
    specs = (
        NodeSpec("a", "x", can_mutate=True),
        NodeSpec("big", "x", input=b"x" * 400),
        NodeSpec("c", "x", depends_on=("a",)),
    )
    core.submit_run(SubmitRun("r", specs, seed=3), now=1.0)
    core.open_session(OpenSession("s", "w", ("x",), slots=2), now=1.0)
    core.dispatch()
    (a,) = core.assignments
    spawn = (AddNode(PLAIN),)
    answer = Answer("r", "a", a.attempt, a.lease, Outcome.SUCCEEDED, b"1", None, spawn)
    core.finish_attempt("s", answer, now=2.0)
    core.dispatch()
    core.close_session("s", reason="gone", now=3.0)
    recs, _, _ = core.take_outbox()
    assert {r.kind for r in recs} >= {"submitted", "dispatched", "finished", "node_failed", "lost"}
    for seq, rec in enumerate(recs, 1):
        entry = records.decode(records.encode(rec, seq, 9.0))
        assert (entry.decision, entry.transitions) == (rec.decision, rec.transitions)


def test_a_mutation_of_no_known_kind_is_never_written() -> None:
    with pytest.raises(ValueError, match="no known kind"):
        records.encode(record(MutationsApplied((UnknownMutation(),))), 1, 0.0)


# --- rows of the old form --------------------------------------------------------------------


def old(**kind: object) -> bytes:
    return rpb.RunEvent(run_id="r-1", seq=4, time=2.5, **kind).SerializeToString()  # type: ignore[arg-type]


def test_the_two_forms_share_only_run_seq_and_time() -> None:
    record_fields = {f.number for f in LogRecord.DESCRIPTOR.fields}
    event_fields = {f.number for f in rpb.RunEvent.DESCRIPTOR.fields}
    assert record_fields & event_fields == {1, 2, 3}
    proto = descriptor_pb2.DescriptorProto()
    LogRecord.DESCRIPTOR.CopyToProto(proto)
    reserved = {n for r in proto.reserved_range for n in range(r.start, r.end)}
    assert event_fields - {1, 2, 3} <= reserved, "a number RunEvent uses is free in LogRecord"


def test_an_old_row_decodes_onto_the_same_decisions() -> None:
    nodes = [gpb.NodeSpec(id="a", agent="echo"), gpb.NodeSpec(agent="echo", depends_on=["a"])]
    got = records.decode_decision(old(run_submitted=rpb.RunSubmitted(nodes=nodes, seed=9)))
    # No limits logged (older versions): zeros, which the core fills in with its defaults.
    assert got == (
        "r-1",
        4,
        2.5,
        RunSubmitted(
            (NodeSpec("a", "echo"), NodeSpec("", "echo", depends_on=("a",))),
            RunLimits(0, 0),
            "",
            9,
            "",
        ),
    )
    finished = rpb.AttemptFinished(
        node_id="a", attempt=1, lease=3, outcome=wpb.OUTCOME_SUCCEEDED, result=b"1"
    )
    finished.mutations.add().add_edge.CopyFrom(gpb.AddEdge(from_id="a", to_id="b"))
    assert records.decode_decision(old(attempt_finished=finished))[3] == AttemptFinished(
        Answer("r-1", "a", 1, 3, Outcome.SUCCEEDED, b"1", None, (AddEdge("a", "b"),))
    )
    entry = records.decode(
        old(
            attempt_lost=rpb.AttemptLost(node_id="a", attempt=1, lease=3, reason="x"),
            transitions=[rpb.NodeTransition(node_id="a", state=gpb.NODE_STATE_READY)],
        )
    )
    assert (entry.decision, entry.transitions) == (
        AttemptLost("a", 1, 3, "x"),
        [("a", NodeState.READY)],
    )


def test_an_old_rejected_batch_decodes_as_the_failure_it_was() -> None:
    # Versions before issue 9 logged the batch as sent, with the rejection and no error.
    f = rpb.AttemptFinished(
        node_id="a", attempt=1, lease=3, outcome=wpb.OUTCOME_SUCCEEDED, result=b"1", rejection="no"
    )
    f.mutations.add().remove_node.id = "zz"
    (_, _, _, decision) = records.decode_decision(old(attempt_finished=f))
    assert decision == AttemptFinished(
        Answer("r-1", "a", 1, 3, Outcome.FAILED, error=mutations_rejected("no")), "no"
    )
    # Later ones logged the failure with its error: kept as it is.
    f = rpb.AttemptFinished(node_id="a", attempt=1, lease=3, outcome=wpb.OUTCOME_FAILED)
    f.rejection = "no"
    f.error.CopyFrom(gpb.NodeError(message="mutations rejected: no", retryable=True, kind="x"))
    (_, _, _, decision) = records.decode_decision(old(attempt_finished=f))
    assert decision.answer.error == NodeError("mutations rejected: no", True, "x")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xff\xff\xff\x0a",
        rpb.RunEvent(run_id="r", seq=1).SerializeToString(),  # a RunEvent without a kind
        LogRecord(run_id="r", seq=1).SerializeToString(),
        old(run_ended=rpb.RunEnded(state=gpb.RUN_STATE_UNSPECIFIED)),
        old(attempt_finished=rpb.AttemptFinished(node_id="a", attempt=1, lease=2)),
    ],
    ids=[
        "empty",
        "garbage",
        "event_without_kind",
        "record_without_decision",
        "bad_state",
        "no_outcome",
    ],
)
def test_bytes_of_neither_form_are_refused(data: bytes) -> None:
    with pytest.raises(records.RecordError):
        records.decode(data)
    with pytest.raises(records.RecordError):
        records.decode_decision(data)
