"""Conversions between the wire (hivegrid.v1 protos) and the coordinator's domain types.

The graph types (nodes, mutations, errors, limits) are in `graph_pb.py`, shared with the store
(its formats embed graph.proto's messages); they are re-exported here. The rest is the services'
own: requests in the core's terms, runs and nodes as clients see them, decisions as watchers see
them (`run_event`), assignments, cancels and acks as workers see them. Only the service layer
and the store's codecs meet generated classes; the runtime and the core never do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb

from .. import core
from ..core import events as ev
from ..core import graph as core_graph
from ..runtime.delivery import Ack, WorkerHello, WorkerInfo
from .graph_pb import (
    error_from_pb,
    error_to_pb,
    fill_error_pb,
    fill_limits_pb,
    fill_mutation_pb,
    fill_mutations_pb,
    fill_retry_pb,
    fill_spec_pb,
    limits_from_pb,
    limits_to_pb,
    mutation_from_pb,
    mutation_to_pb,
    mutations_from_pb,
    retry_from_pb,
    retry_to_pb,
    spec_from_pb,
    spec_to_pb,
    specs_from_pb,
)

if TYPE_CHECKING:
    from ..records import LogEntry

# --- runs and nodes, as clients see them ------------------------------------------------------


def submit_from_pb(req: rpb.SubmitRunRequest) -> ev.SubmitRun:
    """The request in the core's terms; the run id may be empty and the seed is 0 (the runtime
    draws both)."""
    return ev.SubmitRun(
        req.run_id,
        specs_from_pb(req.nodes),
        limits_from_pb(req.limits),
        req.name,
        0,
        req.request_id,
    )


def run_info(run: core_graph.Run) -> rpb.RunInfo:
    c = run.counts
    S = core.NodeState
    return rpb.RunInfo(
        run_id=run.run_id,
        name=run.name,
        state=gpb.RunState.ValueType(run.state),
        counts=rpb.NodeCounts(
            pending=c[S.PENDING],
            ready=c[S.READY],
            running=c[S.RUNNING],
            succeeded=c[S.SUCCEEDED],
            failed=c[S.FAILED],
            cancelled=c[S.CANCELLED],
            skipped=c[S.SKIPPED],
            speculative=c[S.SPECULATIVE],
        ),
        created_at=run.created_at,
        ended_at=run.ended_at,
        last_seq=run.last_seq,
    )


def node_status(node: core_graph.Node, *, with_result: bool) -> rpb.NodeStatus:
    msg = rpb.NodeStatus(
        id=node.id,
        agent=node.spec.agent,
        state=gpb.NodeState.ValueType(node.state),
        attempts=node.attempt,
        depends_on=node.deps,
        parent_id=node.parent_id,
        spawn_depth=node.depth,
    )
    if with_result and node.state is core.NodeState.SUCCEEDED:
        msg.result = node.result
    if node.error is not None and node.state is not core.NodeState.SUCCEEDED:
        msg.error.CopyFrom(error_to_pb(node.error))
    return msg


def worker_info(w: WorkerInfo) -> rpb.WorkerInfo:
    return rpb.WorkerInfo(
        session_id=w.session_id,
        worker_name=w.worker_name,
        language=w.language,
        sdk_version=w.sdk_version,
        agents=w.agents,
        labels=w.labels,
        slots=w.slots,
        in_flight=w.in_flight,
        draining=w.draining,
        connected_at=w.connected_at,
        completed=w.completed,
    )


# --- decisions, as watchers see them ---------------------------------------------------------
#
# The public RunEvent of one logged decision. Leases are left out: they are the credentials of
# attempts. Nodes and mutations are written as the coordinator took them (fields at their
# defaults left out).


def _submitted(e: rpb.RunEvent, d: ev.RunSubmitted) -> None:
    x = e.run_submitted
    add = x.nodes.add
    for spec in d.specs:
        fill_spec_pb(add(), spec, spec.depends_on)
    fill_limits_pb(x.limits, d.limits)
    x.name, x.seed, x.request_id = d.name, d.seed, d.request_id


def _dispatched(e: rpb.RunEvent, d: ev.NodeDispatched) -> None:
    x = e.node_dispatched
    x.node_id, x.attempt, x.session_id, x.worker_name = (
        d.node_id,
        d.attempt,
        d.session_id,
        d.worker_name,
    )


def _finished(e: rpb.RunEvent, d: ev.AttemptFinished) -> None:
    a = d.answer
    f = e.attempt_finished
    f.node_id, f.attempt, f.outcome = a.node_id, a.attempt, a.outcome  # type: ignore[assignment]
    if a.result:
        f.result = a.result
    if a.error is not None:
        fill_error_pb(f.error, a.error)
    if a.mutations:
        fill_mutations_pb(f.mutations, a.mutations)
    if d.rejection:
        f.rejection = d.rejection


def _lost(e: rpb.RunEvent, d: ev.AttemptLost) -> None:
    x = e.attempt_lost
    x.node_id, x.attempt, x.reason = d.node_id, d.attempt, d.reason


def _timed_out(e: rpb.RunEvent, d: ev.AttemptTimedOut) -> None:
    x = e.attempt_timed_out
    x.node_id, x.attempt = d.node_id, d.attempt


def _progress(e: rpb.RunEvent, d: ev.ProgressReported) -> None:
    x = e.progress
    x.node_id, x.attempt, x.data = d.node_id, d.attempt, d.data


def _cancelled(e: rpb.RunEvent, d: ev.RunCancelled) -> None:
    e.run_cancelled.SetInParent()
    e.run_cancelled.reason = d.reason


def _mutated(e: rpb.RunEvent, d: ev.MutationsApplied) -> None:
    e.mutations_applied.SetInParent()
    fill_mutations_pb(e.mutations_applied.mutations, d.mutations)


def _node_failed(e: rpb.RunEvent, d: ev.NodeFailed) -> None:
    e.node_failed.node_id = d.node_id
    fill_error_pb(e.node_failed.error, d.error)


def _ended(e: rpb.RunEvent, d: ev.RunEnded) -> None:
    e.run_ended.state = gpb.RunState.ValueType(d.state)


_EVENT_WRITERS: dict[type, object] = {
    ev.RunSubmitted: _submitted,
    ev.NodeDispatched: _dispatched,
    ev.AttemptFinished: _finished,
    ev.AttemptLost: _lost,
    ev.AttemptTimedOut: _timed_out,
    ev.ProgressReported: _progress,
    ev.RunCancelled: _cancelled,
    ev.MutationsApplied: _mutated,
    ev.NodeFailed: _node_failed,
    ev.RunEnded: _ended,
}


def run_event(entry: LogEntry) -> rpb.RunEvent:
    e = rpb.RunEvent(run_id=entry.run_id, seq=entry.seq, time=entry.time)
    _EVENT_WRITERS[type(entry.decision)](e, entry.decision)  # type: ignore[operator]
    if entry.transitions:
        add = e.transitions.add
        for node_id, state in entry.transitions:
            add(node_id=node_id, state=state)
    return e


# --- workers -----------------------------------------------------------------------------


def hello_from_pb(hello: wpb.Hello) -> WorkerHello:
    return WorkerHello(
        worker_name=hello.worker_name,
        language=hello.language,
        sdk_version=hello.sdk_version,
        agents=tuple(hello.agents),
        labels=dict(hello.labels),
        slots=hello.slots,
        held=tuple(ev.AttemptRef(r.run_id, r.node_id, r.attempt, r.lease) for r in hello.held),
    )


def ref_to_pb(ref: ev.AttemptRef) -> wpb.AssignmentRef:
    return wpb.AssignmentRef(
        run_id=ref.run_id, node_id=ref.node_id, attempt=ref.attempt, lease=ref.lease
    )


def assignment_to_pb(a: core.Assignment) -> wpb.Assignment:
    spec = a.spec
    msg = wpb.Assignment(
        ref=wpb.AssignmentRef(run_id=a.run_id, node_id=a.node_id, attempt=a.attempt, lease=a.lease),
        agent=spec.agent,
        input=spec.input,
        timeout_s=spec.timeout_s,
        can_mutate=spec.can_mutate,
    )
    if a.deps:
        add = msg.deps.add
        for dep_id, result in a.deps:
            add(node_id=dep_id, result=result)
    if spec.metadata:
        msg.metadata.update(spec.metadata)
    return msg


def cancel_to_pb(c: core.CancelOrder) -> wpb.Cancel:
    return wpb.Cancel(
        ref=wpb.AssignmentRef(run_id=c.run_id, node_id=c.node_id, attempt=c.attempt, lease=c.lease),
        reason=c.reason,
    )


def ack_to_pb(ack: Ack) -> wpb.Ack:
    a = ack.answer
    return wpb.Ack(
        ref=wpb.AssignmentRef(run_id=a.run_id, node_id=a.node_id, attempt=a.attempt, lease=a.lease),
        status=int(ack.status),  # type: ignore[arg-type]
        message=ack.message,
    )


__all__ = [
    "ack_to_pb",
    "assignment_to_pb",
    "cancel_to_pb",
    "error_from_pb",
    "error_to_pb",
    "fill_error_pb",
    "fill_limits_pb",
    "fill_mutation_pb",
    "fill_mutations_pb",
    "fill_retry_pb",
    "fill_spec_pb",
    "hello_from_pb",
    "limits_from_pb",
    "limits_to_pb",
    "mutation_from_pb",
    "mutation_to_pb",
    "mutations_from_pb",
    "node_status",
    "ref_to_pb",
    "retry_from_pb",
    "retry_to_pb",
    "run_event",
    "run_info",
    "spec_from_pb",
    "spec_to_pb",
    "specs_from_pb",
    "submit_from_pb",
    "worker_info",
]
