"""Every way the CLI shows runs, nodes, events and workers, as text or as JSON.

The JSON forms are a stable interface for scripts: enum values are lower-case names without
their prefix ("succeeded"), JSON payloads carried as bytes (inputs, results, progress) are
decoded, and an empty payload is null.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from hivegrid.v1 import graph_pb2, run_pb2, worker_pb2

__all__ = [
    "COUNT_ORDER",
    "counts_line",
    "event_json",
    "event_line",
    "node_state_name",
    "run_json",
    "run_state_name",
    "run_summary_line",
    "runs_json",
    "runs_table",
    "status_text",
    "table",
    "workers_json",
    "workers_table",
]

# The order in which counts are listed: where work is, then how it ended.
COUNT_ORDER = (
    "running",
    "ready",
    "pending",
    "speculative",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
)

# Bytes fields of the protocol that carry JSON values rather than opaque bytes.
_JSON_BYTES_FIELDS = frozenset({"input", "result", "data"})


def _enum_prefix(enum: EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_name(enum: EnumDescriptor, number: int) -> str:
    """`NODE_STATE_SUCCEEDED` -> `succeeded`; an unknown number shows as itself."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return value.name.removeprefix(_enum_prefix(enum)).lower()


def node_state_name(state: int) -> str:
    return enum_name(graph_pb2.NodeState.DESCRIPTOR, state)


def run_state_name(state: int) -> str:
    return enum_name(graph_pb2.RunState.DESCRIPTOR, state)


def decode_json(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        # Not ours to judge: show what arrived rather than failing to show anything.
        return payload.decode("utf-8", errors="replace")


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _clock(unix: float) -> str:
    if not unix:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


# --- tables -----------------------------------------------------------------------------------


def table(headers: list[str], rows: Iterable[list[str]]) -> str:
    """Left-aligned columns; the last column is not padded."""
    rows = list(rows)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --- runs ---------------------------------------------------------------------------------------


def node_json(node: run_pb2.NodeStatus) -> dict[str, Any]:
    return {
        "id": node.id,
        "agent": node.agent,
        "state": node_state_name(node.state),
        "attempts": node.attempts,
        "result": decode_json(node.result),
        "error": node.error.message if node.HasField("error") and node.error.message else None,
    }


def run_json(response: run_pb2.GetRunResponse) -> dict[str, Any]:
    return {
        "run_id": response.run.run_id,
        "state": run_state_name(response.run.state),
        "nodes": [node_json(node) for node in response.nodes],
    }


def counts_dict(counts: run_pb2.NodeCounts) -> dict[str, int]:
    return {name: getattr(counts, name) for name in COUNT_ORDER}


def counts_line(counts: Mapping[str, int]) -> str:
    """`2 running, 1 pending, 3 succeeded` (zeros left out); `no nodes` when all are zero."""
    parts = [f"{counts[name]} {name}" for name in COUNT_ORDER if counts.get(name)]
    return ", ".join(parts) if parts else "no nodes"


def run_summary_line(run: run_pb2.RunInfo) -> str:
    name = f" ({run.name})" if run.name else ""
    counts = counts_line(counts_dict(run.counts))
    return f"run {run.run_id}{name}: {run_state_name(run.state)} — {counts}"


def _node_outcome(node: run_pb2.NodeStatus, width: int = 60) -> str:
    if node.state == graph_pb2.NODE_STATE_SUCCEEDED:
        return _short(compact_json(decode_json(node.result)), width)
    if node.HasField("error") and node.error.message:
        kind = f"[{node.error.kind}] " if node.error.kind else ""
        return _short(kind + node.error.message, width)
    return ""


def status_text(response: run_pb2.GetRunResponse) -> str:
    rows = [
        [
            node.id,
            node.agent,
            node_state_name(node.state),
            str(node.attempts),
            _node_outcome(node),
        ]
        for node in response.nodes
    ]
    header = run_summary_line(response.run)
    if not rows:
        return header
    return header + "\n\n" + table(["NODE", "AGENT", "STATE", "ATTEMPTS", "RESULT / ERROR"], rows)


def failed_nodes_text(response: run_pb2.GetRunResponse, limit: int = 20) -> str:
    """The nodes that did not succeed, with their errors: what a user reads after a failed run."""
    bad = [
        node
        for node in response.nodes
        if node.state
        in (
            graph_pb2.NODE_STATE_FAILED,
            graph_pb2.NODE_STATE_CANCELLED,
            graph_pb2.NODE_STATE_SKIPPED,
        )
    ]
    lines = [
        f"  {node.id} ({node.agent}): {node_state_name(node.state)}"
        + (f": {node.error.message}" if node.HasField("error") and node.error.message else "")
        for node in bad[:limit]
    ]
    if len(bad) > limit:
        lines.append(f"  … and {len(bad) - limit} more (hivegrid status {response.run.run_id})")
    return "\n".join(lines)


def runs_json(runs: Iterable[run_pb2.RunInfo]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run.run_id,
            "name": run.name,
            "state": run_state_name(run.state),
            "counts": counts_dict(run.counts),
            "created_at": run.created_at,
            "ended_at": run.ended_at or None,
            "last_seq": run.last_seq,
        }
        for run in runs
    ]


def runs_table(runs: Iterable[run_pb2.RunInfo]) -> str:
    rows = []
    for run in runs:
        total = sum(counts_dict(run.counts).values())
        rows.append(
            [
                run.run_id,
                run.name or "-",
                run_state_name(run.state),
                f"{run.counts.succeeded}/{total}",
                _clock(run.created_at),
            ]
        )
    if not rows:
        return "no runs"
    return table(["RUN", "NAME", "STATE", "DONE", "CREATED"], rows)


# --- workers --------------------------------------------------------------------------------


def workers_json(workers: Iterable[run_pb2.WorkerInfo]) -> list[dict[str, Any]]:
    return [
        {
            "session_id": w.session_id,
            "worker_name": w.worker_name,
            "language": w.language,
            "sdk_version": w.sdk_version,
            "agents": list(w.agents),
            "labels": dict(w.labels),
            "slots": w.slots,
            "in_flight": w.in_flight,
            "draining": w.draining,
            "connected_at": w.connected_at,
            "completed": w.completed,
        }
        for w in workers
    ]


def workers_table(workers: Iterable[run_pb2.WorkerInfo]) -> str:
    rows = [
        [
            w.session_id,
            w.worker_name,
            f"{w.language} {w.sdk_version}".strip(),
            f"{w.in_flight}/{w.slots}",
            str(w.completed),
            "draining" if w.draining else "active",
            _short(",".join(sorted(w.agents)), 60),
        ]
        for w in workers
    ]
    if not rows:
        return "no workers connected"
    return table(["SESSION", "NAME", "SDK", "BUSY", "DONE", "STATE", "AGENTS"], rows)


# --- events -----------------------------------------------------------------------------------


def message_json(message: Message) -> dict[str, Any]:
    """A proto message as JSON: set fields only, enums by short name, JSON bytes decoded."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.is_repeated:
            out[field.name] = [_field_json(field, item) for item in value]
        else:
            out[field.name] = _field_json(field, value)
    return out


def _field_json(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return enum_name(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        if field.name in _JSON_BYTES_FIELDS:
            return decode_json(value)
        return value.hex()
    return value


def event_kind(event: run_pb2.RunEvent) -> str:
    return event.WhichOneof("kind") or "unknown"


def event_json(event: run_pb2.RunEvent) -> dict[str, Any]:
    """`{"seq", "time", "kind", <kind>: {...}, "transitions": [{"node_id", "state"}]}`."""
    kind = event_kind(event)
    out: dict[str, Any] = {"seq": event.seq, "time": event.time, "kind": kind}
    if kind != "unknown":
        out[kind] = message_json(getattr(event, kind))
    out["transitions"] = [
        {"node_id": t.node_id, "state": node_state_name(t.state)} for t in event.transitions
    ]
    return out


def _error_text(error: graph_pb2.NodeError) -> str:
    retry = "retryable" if error.retryable else "final"
    kind = f"{error.kind}, " if error.kind else ""
    return f"{error.message} ({kind}{retry})"


def event_detail(event: run_pb2.RunEvent) -> str:
    """The event itself in a few words, without its transitions."""
    kind = event_kind(event)
    if kind == "run_submitted":
        e = event.run_submitted
        name = f" {e.name!r}" if e.name else ""
        return f"run submitted{name}: {len(e.nodes)} nodes"
    if kind == "node_dispatched":
        d = event.node_dispatched
        return f"{d.node_id} dispatched (attempt {d.attempt}) to {d.worker_name or d.session_id}"
    if kind == "attempt_finished":
        f = event.attempt_finished
        outcome = enum_name(worker_pb2.Outcome.DESCRIPTOR, f.outcome)
        text = f"{f.node_id} attempt {f.attempt} {outcome}"
        if f.HasField("error") and f.error.message:
            text += f": {_error_text(f.error)}"
        elif f.result:
            text += f": {_short(compact_json(decode_json(f.result)), 80)}"
        if f.mutations:
            text += f" (+{len(f.mutations)} mutations)"
        if f.rejection:
            text += f" [mutations rejected: {f.rejection}]"
        return text
    if kind == "attempt_lost":
        lost = event.attempt_lost
        reason = f": {lost.reason}" if lost.reason else ""
        return f"{lost.node_id} attempt {lost.attempt} lost{reason}"
    if kind == "attempt_timed_out":
        t = event.attempt_timed_out
        return f"{t.node_id} attempt {t.attempt} timed out"
    if kind == "progress":
        p = event.progress
        return f"{p.node_id} progress: {_short(compact_json(decode_json(p.data)), 100)}"
    if kind == "run_cancelled":
        reason = event.run_cancelled.reason
        return "run cancelled" + (f": {reason}" if reason else "")
    if kind == "mutations_applied":
        return f"{len(event.mutations_applied.mutations)} mutations applied"
    if kind == "run_ended":
        return f"run ended: {run_state_name(event.run_ended.state)}"
    return "unknown event"


def transitions_text(event: run_pb2.RunEvent, limit: int = 8) -> str:
    parts = [f"{t.node_id}→{node_state_name(t.state)}" for t in event.transitions[:limit]]
    if len(event.transitions) > limit:
        parts.append(f"+{len(event.transitions) - limit} more")
    return " ".join(parts)


def event_line(event: run_pb2.RunEvent) -> str:
    """`#12 14:03:07 a attempt 1 succeeded: {...}  [a→succeeded b→ready]`."""
    clock = time.strftime("%H:%M:%S", time.localtime(event.time)) if event.time else "--:--:--"
    text = f"#{event.seq} {clock} {event_detail(event)}"
    moves = transitions_text(event)
    return f"{text}  [{moves}]" if moves else text


def tally(states: Mapping[str, int]) -> dict[str, int]:
    """Counts of node states, from a node id -> NodeState map."""
    counter = Counter(node_state_name(state) for state in states.values())
    return {name: counter.get(name, 0) for name in COUNT_ORDER}
