"""Every way the CLI shows runs, nodes, events and workers, as text or as JSON.

It shows what the client returns (hivegrid.client's Run, Node, Event, Worker). The JSON forms
are a stable interface for scripts: states are lower-case names ("succeeded"), JSON payloads
(inputs, results, progress) are decoded, and an empty payload is null.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from hivegrid.client import Event, Node, NodeState, Run, RunSummary, Worker

__all__ = [
    "COUNT_ORDER",
    "counts_line",
    "event_json",
    "event_line",
    "failed_nodes_text",
    "run_json",
    "run_summary_line",
    "runs_json",
    "runs_table",
    "status_text",
    "table",
    "tally",
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


def node_json(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "agent": node.agent,
        "state": str(node.state),
        "attempts": node.attempts,
        "result": node.result,
        "error": node.error,
    }


def run_json(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "state": str(run.state),
        "nodes": [node_json(node) for node in run.nodes],
    }


def counts_dict(counts: Mapping[NodeState, int]) -> dict[str, int]:
    return {name: counts.get(NodeState(name), 0) for name in COUNT_ORDER}


def counts_line(counts: Mapping[str, int]) -> str:
    """`2 running, 1 pending, 3 succeeded` (zeros left out); `no nodes` when all are zero."""
    parts = [f"{counts[name]} {name}" for name in COUNT_ORDER if counts.get(name)]
    return ", ".join(parts) if parts else "no nodes"


def run_summary_line(run: RunSummary) -> str:
    name = f" ({run.name})" if run.name else ""
    counts = counts_line(counts_dict(run.counts))
    return f"run {run.id}{name}: {run.state} — {counts}"


def _node_outcome(node: Node, width: int = 60) -> str:
    if node.state == NodeState.SUCCEEDED:
        return _short(compact_json(node.result), width)
    if node.error:
        kind = f"[{node.error_kind}] " if node.error_kind else ""
        return _short(kind + node.error, width)
    return ""


def status_text(run: Run) -> str:
    rows = [
        [node.id, node.agent, str(node.state), str(node.attempts), _node_outcome(node)]
        for node in run.nodes
    ]
    header = run_summary_line(run)
    if not rows:
        return header
    return header + "\n\n" + table(["NODE", "AGENT", "STATE", "ATTEMPTS", "RESULT / ERROR"], rows)


_NOT_SUCCEEDED = (NodeState.FAILED, NodeState.CANCELLED, NodeState.SKIPPED)


def failed_nodes_text(run: Run, limit: int = 20) -> str:
    """The nodes that did not succeed, with their errors: what a user reads after a failed run."""
    bad = [node for node in run.nodes if node.state in _NOT_SUCCEEDED]
    lines = [
        f"  {node.id} ({node.agent}): {node.state}" + (f": {node.error}" if node.error else "")
        for node in bad[:limit]
    ]
    if len(bad) > limit:
        lines.append(f"  … and {len(bad) - limit} more (hivegrid status {run.id})")
    return "\n".join(lines)


def runs_json(runs: Iterable[RunSummary]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run.id,
            "name": run.name or "",
            "state": str(run.state),
            "counts": counts_dict(run.counts),
            "created_at": run.created_at,
            "ended_at": run.ended_at,
            "last_seq": run.last_seq,
        }
        for run in runs
    ]


def runs_table(runs: Iterable[RunSummary]) -> str:
    rows = []
    for run in runs:
        counts = counts_dict(run.counts)
        rows.append(
            [
                run.id,
                run.name or "-",
                str(run.state),
                f"{counts['succeeded']}/{sum(counts.values())}",
                _clock(run.created_at),
            ]
        )
    if not rows:
        return "no runs"
    return table(["RUN", "NAME", "STATE", "DONE", "CREATED"], rows)


# --- workers --------------------------------------------------------------------------------


def workers_json(workers: Iterable[Worker]) -> list[dict[str, Any]]:
    return [
        {
            "session_id": w.session_id,
            "worker_name": w.name,
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


def workers_table(workers: Iterable[Worker]) -> str:
    rows = [
        [
            w.session_id,
            w.name,
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


def event_json(event: Event) -> dict[str, Any]:
    """`{"seq", "time", "kind", <kind>: {...}, "transitions": [{"node_id", "state"}]}`."""
    return event.detail


def _error_text(error: Mapping[str, Any]) -> str:
    retry = "retryable" if error.get("retryable") else "final"
    kind = f"{error['kind']}, " if error.get("kind") else ""
    return f"{error.get('message', '')} ({kind}{retry})"


def event_detail(event: Event) -> str:
    """The event itself in a few words, without its transitions. It reads the event's JSON
    form, where a field left at its default is absent (as on the wire)."""
    kind = event.kind
    body: Mapping[str, Any] = event.detail.get(kind, {})
    if kind == "run_submitted":
        name = f" {body['name']!r}" if body.get("name") else ""
        return f"run submitted{name}: {len(body.get('nodes', ()))} nodes"
    if kind == "node_dispatched":
        where = body.get("worker_name") or body.get("session_id", "")
        return f"{body.get('node_id', '')} dispatched (attempt {body.get('attempt', 0)}) to {where}"
    if kind == "attempt_finished":
        outcome = body.get("outcome", "unspecified")
        text = f"{body.get('node_id', '')} attempt {body.get('attempt', 0)} {outcome}"
        error = body.get("error", {})
        if error.get("message"):
            text += f": {_error_text(error)}"
        elif "result" in body:
            text += f": {_short(compact_json(body['result']), 80)}"
        if body.get("mutations"):
            text += f" (+{len(body['mutations'])} mutations)"
        if body.get("rejection"):
            text += f" [mutations rejected: {body['rejection']}]"
        return text
    if kind == "attempt_lost":
        reason = f": {body['reason']}" if body.get("reason") else ""
        return f"{body.get('node_id', '')} attempt {body.get('attempt', 0)} lost{reason}"
    if kind == "attempt_timed_out":
        return f"{body.get('node_id', '')} attempt {body.get('attempt', 0)} timed out"
    if kind == "progress":
        return f"{body.get('node_id', '')} progress: {_short(compact_json(body.get('data')), 100)}"
    if kind == "run_cancelled":
        cancelled = body.get("reason")
        return "run cancelled" + (f": {cancelled}" if cancelled else "")
    if kind == "mutations_applied":
        return f"{len(body.get('mutations', ()))} mutations applied"
    if kind == "run_ended":
        return f"run ended: {body.get('state', 'unspecified')}"
    return "unknown event"


def transitions_text(event: Event, limit: int = 8) -> str:
    parts = [f"{t.node_id}→{t.state}" for t in event.transitions[:limit]]
    if len(event.transitions) > limit:
        parts.append(f"+{len(event.transitions) - limit} more")
    return " ".join(parts)


def event_line(event: Event) -> str:
    """`#12 14:03:07 a attempt 1 succeeded: {...}  [a→succeeded b→ready]`."""
    clock = time.strftime("%H:%M:%S", time.localtime(event.time)) if event.time else "--:--:--"
    text = f"#{event.seq} {clock} {event_detail(event)}"
    moves = transitions_text(event)
    return f"{text}  [{moves}]" if moves else text


def tally(states: Mapping[str, NodeState]) -> dict[str, int]:
    """Counts of node states, from a node id -> NodeState map."""
    counter = Counter(str(state) for state in states.values())
    return {name: counter.get(name, 0) for name in COUNT_ORDER}
