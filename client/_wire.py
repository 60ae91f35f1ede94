"""From the wire (hivegrid.v1 messages) to the client's own types. Nothing public returns a
generated class; this is the one place that reads them."""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb

from ._types import Event, Node, NodeState, Run, RunState, RunSummary, Transition, Worker

# Bytes fields of the protocol that carry JSON values rather than opaque bytes.
_JSON_BYTES_FIELDS = frozenset({"input", "result", "data"})

_COUNT_FIELDS = tuple((NodeState(name), name) for name in rpb.NodeCounts.DESCRIPTOR.fields_by_name)


def _enum_prefix(enum: EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_name(enum: EnumDescriptor, number: int) -> str:
    """`NODE_STATE_SUCCEEDED` -> `succeeded`; an unknown number shows as itself."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return value.name.removeprefix(_enum_prefix(enum)).lower()


_NODE_STATES = {
    number: NodeState(enum_name(gpb.NodeState.DESCRIPTOR, number))
    for number in gpb.NodeState.DESCRIPTOR.values_by_number
}
_RUN_STATES = {
    number: RunState(enum_name(gpb.RunState.DESCRIPTOR, number))
    for number in gpb.RunState.DESCRIPTOR.values_by_number
}
_OUTCOMES = {
    number: enum_name(wpb.Outcome.DESCRIPTOR, number)
    for number in wpb.Outcome.DESCRIPTOR.values_by_number
}


def node_state(number: int) -> NodeState:
    return _NODE_STATES.get(number, NodeState.UNSPECIFIED)


def run_state(number: int) -> RunState:
    return _RUN_STATES.get(number, RunState.UNSPECIFIED)


def decode_json(payload: bytes) -> Any:
    """A JSON payload; empty bytes are JSON null."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        # Not ours to judge: show what arrived rather than failing to show anything.
        return payload.decode("utf-8", errors="replace")


def message_json(message: Message) -> dict[str, Any]:
    """A message as JSON: set fields only, enums by short name, JSON bytes decoded (so that a
    mutation comes out in the SDKs' JSON mutation form)."""
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            out[fd.name] = dict(value)
        elif fd.is_repeated:
            out[fd.name] = [_field_json(fd, item) for item in value]
        else:
            out[fd.name] = _field_json(fd, value)
    return out


def _field_json(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
        return enum_name(fd.enum_type, value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        if fd.name in _JSON_BYTES_FIELDS:
            return decode_json(value)
        return value.hex()
    return value


def _error_message(owner: Any) -> tuple[str | None, str | None]:
    if owner.HasField("error") and owner.error.message:
        return owner.error.message, owner.error.kind or None
    return None, None


def node(status: rpb.NodeStatus) -> Node:
    error, kind = _error_message(status)
    return Node(
        id=status.id,
        agent=status.agent,
        state=node_state(status.state),
        attempts=status.attempts,
        result=decode_json(status.result),
        error=error,
        error_kind=kind,
        deps=tuple(status.depends_on),
        parent=status.parent_id or None,
        spawn_depth=status.spawn_depth,
    )


def _summary_fields(info: rpb.RunInfo) -> dict[str, Any]:
    counts = info.counts
    return {
        "id": info.run_id,
        "name": info.name or None,
        "state": run_state(info.state),
        "counts": {state: getattr(counts, name) for state, name in _COUNT_FIELDS},
        "created_at": info.created_at,
        "ended_at": info.ended_at or None,
        "last_seq": info.last_seq,
    }


def run_summary(info: rpb.RunInfo) -> RunSummary:
    return RunSummary(**_summary_fields(info))


def run(info: rpb.RunInfo, nodes: list[rpb.NodeStatus]) -> Run:
    return Run(**_summary_fields(info), nodes=[node(n) for n in nodes])


def worker(info: rpb.WorkerInfo) -> Worker:
    return Worker(
        session_id=info.session_id,
        name=info.worker_name,
        language=info.language,
        sdk_version=info.sdk_version,
        agents=tuple(info.agents),
        labels=dict(info.labels),
        slots=info.slots,
        in_flight=info.in_flight,
        draining=info.draining,
        connected_at=info.connected_at,
        completed=info.completed,
    )


def event_kind(event: rpb.RunEvent) -> str:
    return event.WhichOneof("kind") or "unknown"


def is_run_ended(event: rpb.RunEvent) -> bool:
    return event.HasField("run_ended")


def event(ev: rpb.RunEvent, run_id: str = "") -> Event:
    kind = event_kind(ev)
    transitions = tuple(Transition(t.node_id, node_state(t.state)) for t in ev.transitions)
    body = getattr(ev, kind) if kind != "unknown" else None
    detail: dict[str, Any] = {"seq": ev.seq, "time": ev.time, "kind": kind}
    if body is not None:
        detail[kind] = message_json(body)
    detail["transitions"] = [{"node_id": t.node_id, "state": str(t.state)} for t in transitions]
    fields: dict[str, Any] = {}
    node_id = getattr(body, "node_id", "") if body is not None else ""
    if node_id:
        fields["node_id"] = node_id
        moved = [t.state for t in transitions if t.node_id == node_id]
        if moved:
            fields["state"] = moved[-1]
    if kind == "run_ended":
        fields["state"] = run_state(ev.run_ended.state)
    elif kind == "run_submitted":
        fields["name"] = ev.run_submitted.name or None
    elif kind == "node_dispatched":
        d = ev.node_dispatched
        fields.update(
            attempt=d.attempt, worker_name=d.worker_name or None, session_id=d.session_id or None
        )
    elif kind == "attempt_finished":
        f = ev.attempt_finished
        fields.update(
            attempt=f.attempt,
            outcome=_OUTCOMES.get(f.outcome, str(f.outcome)),
            result=decode_json(f.result),
            mutations=tuple(detail[kind].get("mutations", ())),
            rejection=f.rejection or None,
        )
        if f.HasField("error"):
            fields.update(
                error=f.error.message or None,
                error_kind=f.error.kind or None,
                retryable=f.error.retryable,
            )
    elif kind == "node_failed":
        e = ev.node_failed.error
        fields.update(error=e.message or None, error_kind=e.kind or None, retryable=e.retryable)
    elif kind in ("attempt_lost", "attempt_timed_out"):
        fields["attempt"] = getattr(ev, kind).attempt
        if kind == "attempt_lost":
            fields["reason"] = ev.attempt_lost.reason or None
    elif kind == "progress":
        fields.update(attempt=ev.progress.attempt, data=decode_json(ev.progress.data))
    elif kind == "run_cancelled":
        fields["reason"] = ev.run_cancelled.reason or None
    elif kind == "mutations_applied":
        fields["mutations"] = tuple(detail[kind].get("mutations", ()))
    return Event(
        seq=ev.seq,
        run_id=ev.run_id or run_id,
        time=ev.time,
        kind=kind,
        transitions=transitions,
        detail=detail,
        **fields,
    )
