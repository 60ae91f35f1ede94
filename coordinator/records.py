"""The event log's record format: the core's decisions to and from bytes.

A record is a `hivegrid.storage.v1.LogRecord` (protos/hivegrid/storage/v1/storage.proto): one
decision of the core in the core's terms, with its run, seq, time and the node transitions it
caused. It is the coordinator's own format, apart from the public `hivegrid.v1.RunEvent` that
watchers are served (the service layer converts a `LogEntry` to one): either may change without
the other.

Old logs. Before store schema 4 the log held `hivegrid.v1.RunEvent` bytes, and a store upgraded
in place keeps those rows. `LogRecord` shares fields 1-3 with `RunEvent` and leaves its other
field numbers unused, so an old row parses as a LogRecord without a decision; `decode` then
reads it as the RunEvent it is, mapping it onto the same decisions (a batch rejected by an older
version was logged as sent: it becomes the failure it was). Old and new rows may follow each
other in one log. Nothing is rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from hivegrid.storage.v1.storage_pb2 import LogRecord
from hivegrid.v1 import run_pb2 as rpb

from .core import (
    Answer,
    AttemptFinished,
    AttemptLost,
    AttemptTimedOut,
    Decision,
    MutationsApplied,
    NodeDispatched,
    NodeFailed,
    NodeState,
    Outcome,
    ProgressReported,
    Record,
    RunCancelled,
    RunEnded,
    RunLimits,
    RunState,
    RunSubmitted,
    mutations_rejected,
)
from .service.graph_pb import (
    error_from_pb,
    fill_error_pb,
    fill_limits_pb,
    fill_mutations_pb,
    fill_spec_pb,
    limits_from_pb,
    mutations_from_pb,
    spec_from_pb,
)


class RecordError(ValueError):
    """Bytes that are no record of either form (the store hands back what it was given: this
    is a damaged log)."""


@dataclass(slots=True, frozen=True)
class LogEntry:
    """One decision as the log holds it. `size`: its encoded length (what a watcher's queue
    counts)."""

    run_id: str
    seq: int
    time: float
    decision: Decision
    transitions: list[tuple[str, NodeState]]
    size: int


# --- encoding --------------------------------------------------------------------------------


def _submitted(msg: Any, d: RunSubmitted) -> None:
    x = msg.submitted
    add = x.nodes.add
    for spec in d.specs:
        fill_spec_pb(add(), spec, spec.depends_on)
    fill_limits_pb(x.limits, d.limits)
    x.name, x.seed, x.request_id = d.name, d.seed, d.request_id


def _dispatched(msg: Any, d: NodeDispatched) -> None:
    x = msg.dispatched
    x.node_id, x.attempt, x.lease, x.session_id, x.worker_name = (
        d.node_id,
        d.attempt,
        d.lease,
        d.session_id,
        d.worker_name,
    )


def _finished(msg: Any, d: AttemptFinished) -> None:
    a = d.answer
    f = msg.finished
    f.node_id, f.attempt, f.lease, f.outcome = a.node_id, a.attempt, a.lease, a.outcome
    if a.result:
        f.result = a.result
    if a.error is not None:
        fill_error_pb(f.error, a.error)
    if a.mutations:
        fill_mutations_pb(f.mutations, a.mutations)
    if d.rejection:
        f.rejection = d.rejection


def _lost(msg: Any, d: AttemptLost) -> None:
    x = msg.lost
    x.node_id, x.attempt, x.lease, x.reason = d.node_id, d.attempt, d.lease, d.reason


def _timed_out(msg: Any, d: AttemptTimedOut) -> None:
    x = msg.timed_out
    x.node_id, x.attempt, x.lease = d.node_id, d.attempt, d.lease


def _progress(msg: Any, d: ProgressReported) -> None:
    x = msg.progress
    x.node_id, x.attempt, x.data = d.node_id, d.attempt, d.data


def _cancelled(msg: Any, d: RunCancelled) -> None:
    msg.cancelled.SetInParent()
    msg.cancelled.reason = d.reason


def _mutated(msg: Any, d: MutationsApplied) -> None:
    msg.mutated.SetInParent()
    fill_mutations_pb(msg.mutated.mutations, d.mutations)


def _node_failed(msg: Any, d: NodeFailed) -> None:
    msg.node_failed.node_id = d.node_id
    fill_error_pb(msg.node_failed.error, d.error)


def _ended(msg: Any, d: RunEnded) -> None:
    msg.ended.state = int(d.state)


_WRITERS: dict[type, Callable[[Any, Any], None]] = {
    RunSubmitted: _submitted,
    NodeDispatched: _dispatched,
    AttemptFinished: _finished,
    AttemptLost: _lost,
    AttemptTimedOut: _timed_out,
    ProgressReported: _progress,
    RunCancelled: _cancelled,
    MutationsApplied: _mutated,
    NodeFailed: _node_failed,
    RunEnded: _ended,
}


def encode(rec: Record, seq: int, time: float) -> bytes:
    """The record's bytes, as the log keeps them."""
    msg = LogRecord(run_id=rec.run_id, seq=seq, time=time)
    _WRITERS[type(rec.decision)](msg, rec.decision)
    if rec.transitions:
        add = msg.transitions.add
        for node_id, state in rec.transitions:
            add(node_id=node_id, state=state)
    return msg.SerializeToString()


# --- decoding --------------------------------------------------------------------------------


_OUTCOMES = frozenset(int(o) for o in Outcome)


def _answer(run_id: str, f: Any, outcome: int, error: Any, mutations: Any, result: bytes) -> Answer:
    if outcome not in _OUTCOMES:  # the core takes no other: none was ever logged
        raise RecordError(f"run {run_id}: an answer with outcome {outcome}")
    return Answer(run_id, f.node_id, f.attempt, f.lease, int(outcome), result, error, mutations)


def _read_record(msg: LogRecord, kind: str) -> Decision:
    run_id = msg.run_id
    if kind == "dispatched":
        x = msg.dispatched
        return NodeDispatched(x.node_id, x.attempt, x.lease, x.session_id, x.worker_name)
    if kind == "finished":
        f = msg.finished
        error = error_from_pb(f.error) if f.HasField("error") else None
        mutations = mutations_from_pb(f.mutations) if f.mutations else ()
        return AttemptFinished(
            _answer(run_id, f, f.outcome, error, mutations, f.result), f.rejection
        )
    if kind == "submitted":
        s = msg.submitted
        specs = tuple(spec_from_pb(n) for n in s.nodes)
        limits = limits_from_pb(s.limits) or _DEFAULT_LIMITS
        return RunSubmitted(specs, limits, s.name, s.seed, s.request_id)
    if kind == "lost":
        y = msg.lost
        return AttemptLost(y.node_id, y.attempt, y.lease, y.reason)
    if kind == "timed_out":
        t = msg.timed_out
        return AttemptTimedOut(t.node_id, t.attempt, t.lease)
    if kind == "progress":
        p = msg.progress
        return ProgressReported(p.node_id, p.attempt, p.data)
    if kind == "cancelled":
        return RunCancelled(msg.cancelled.reason)
    if kind == "mutated":
        return MutationsApplied(mutations_from_pb(msg.mutated.mutations))
    if kind == "node_failed":
        return NodeFailed(msg.node_failed.node_id, error_from_pb(msg.node_failed.error))
    if kind == "ended":
        return RunEnded(RunState(msg.ended.state))
    raise RecordError(f"a record of unknown kind {kind!r}")  # pragma: no cover


def _read_run_event(ev: rpb.RunEvent) -> Decision:
    """A row written before store schema 4, onto the same decisions."""
    run_id = ev.run_id
    kind = ev.WhichOneof("kind")
    if kind == "node_dispatched":
        x = ev.node_dispatched
        return NodeDispatched(x.node_id, x.attempt, x.lease, x.session_id, x.worker_name)
    if kind == "attempt_finished":
        f = ev.attempt_finished
        if f.rejection:
            # Versions before issue 9 logged a rejected batch as sent, without an error: the
            # batch is not looked at again, the attempt failed with the rejection.
            failure = (
                error_from_pb(f.error)
                if int(f.outcome) == Outcome.FAILED and f.HasField("error")
                else mutations_rejected(f.rejection)
            )
            answer = _answer(run_id, f, Outcome.FAILED, failure, (), b"")
        else:
            error = error_from_pb(f.error) if f.HasField("error") else None
            mutations = mutations_from_pb(f.mutations) if f.mutations else ()
            answer = _answer(run_id, f, f.outcome, error, mutations, f.result)
        return AttemptFinished(answer, f.rejection)
    if kind == "run_submitted":
        s = ev.run_submitted
        # Older versions did not log the run's limits: zeros take the coordinator's defaults.
        specs = tuple(spec_from_pb(n) for n in s.nodes)
        limits = limits_from_pb(s.limits) or _DEFAULT_LIMITS
        return RunSubmitted(specs, limits, s.name, s.seed, s.request_id)
    if kind == "attempt_lost":
        y = ev.attempt_lost
        return AttemptLost(y.node_id, y.attempt, y.lease, y.reason)
    if kind == "attempt_timed_out":
        t = ev.attempt_timed_out
        return AttemptTimedOut(t.node_id, t.attempt, t.lease)
    if kind == "progress":
        p = ev.progress
        return ProgressReported(p.node_id, p.attempt, p.data)
    if kind == "run_cancelled":
        return RunCancelled(ev.run_cancelled.reason)
    if kind == "mutations_applied":
        return MutationsApplied(mutations_from_pb(ev.mutations_applied.mutations))
    if kind == "node_failed":
        return NodeFailed(ev.node_failed.node_id, error_from_pb(ev.node_failed.error))
    if kind == "run_ended":
        return RunEnded(RunState(ev.run_ended.state))
    raise RecordError(f"run {run_id}, event {ev.seq}: neither a record nor an event")


# Zeros: the core gives the run its defaults (as it did when the event was first applied).
_DEFAULT_LIMITS = RunLimits(max_nodes=0, max_spawn_depth=0)


def _decode(data: bytes) -> tuple[LogRecord | rpb.RunEvent, Decision]:
    try:
        msg = LogRecord.FromString(data)
        kind = msg.WhichOneof("decision")
        if kind is not None:
            return msg, _read_record(msg, kind)
        old = rpb.RunEvent.FromString(data)
        return old, _read_run_event(old)
    except DecodeError as exc:
        raise RecordError(str(exc)) from exc
    except ValueError as exc:  # an enum value no version writes
        raise RecordError(str(exc)) from exc


def decode_decision(data: bytes) -> tuple[str, int, float, Decision]:
    """(run id, seq, time, decision) of a record of either form, without its transitions
    (replay recomputes them). Raises RecordError."""
    msg, decision = _decode(data)
    return msg.run_id, msg.seq, msg.time, decision


def decode(data: bytes) -> LogEntry:
    """A record of either form, whole. Raises RecordError."""
    msg, decision = _decode(data)
    try:
        transitions = [(t.node_id, NodeState(t.state)) for t in msg.transitions]
    except ValueError as exc:
        raise RecordError(str(exc)) from exc
    return LogEntry(msg.run_id, msg.seq, msg.time, decision, transitions, len(data))


__all__ = ["LogEntry", "RecordError", "decode", "decode_decision", "encode"]
