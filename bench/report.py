"""Ratios to peers, the targets of docs/benchmarks.md, and the printed table."""

from __future__ import annotations

import math
from typing import Any

PEERS = ("ray", "dask")


def _num(row: dict[str, Any] | None, key: str) -> float | None:
    if not row or not row.get("ok") or row.get("skipped"):
        return None
    v = row.get(key)
    return float(v) if isinstance(v, int | float) and not math.isnan(v) else None


def _find(rows: list[dict[str, Any]], workload: str, system: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["workload"] == workload and r["system"] == system]


def _best(rows: list[dict[str, Any]], workload: str, system: str, key: str) -> float | None:
    vals = [v for r in _find(rows, workload, system) if (v := _num(r, key)) is not None]
    return max(vals) if vals else None


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Adds `vs_<peer>` to each Hivegrid row (throughput ratio; for chain, how many times
    lower the hop p50 is) and evaluates the targets."""
    floor = next((r for r in rows if r["workload"] == "floor"), None)
    for row in rows:
        if not row["system"].startswith("hivegrid"):
            continue
        if row["workload"] == "streams":
            mine, ceiling = _num(row, "throughput"), _num(floor, "throughput")
            if mine and ceiling:
                row["share_of_floor"] = mine / ceiling
        for peer in PEERS:
            peer_rows = _find(rows, row["workload"], peer)
            if not peer_rows:
                continue
            if row["workload"] == "chain":
                mine, theirs = _num(row, "p50_ms"), _num(peer_rows[0], "p50_ms")
                ratio = theirs / mine if mine and theirs else None
            else:
                mine, theirs = _num(row, "throughput"), _num(peer_rows[0], "throughput")
                ratio = mine / theirs if mine and theirs else None
            if ratio is not None:
                row[f"vs_{peer}"] = ratio
    return {"targets": targets(rows)}


def _target(name: str, value: float | None, ok: bool | None, want: str) -> dict[str, Any]:
    return {
        "target": name,
        "want": want,
        "measured": value,
        "met": None if value is None else bool(ok),
    }


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    f = _best(rows, "fanout", "hivegrid-sqlite", "throughput")
    out.append(_target("fanout sqlite nodes/s", f, f is not None and f >= 20_000, ">= 20,000"))
    ray_f = _best(rows, "fanout", "ray", "throughput")
    ratio = f / ray_f if f and ray_f else None
    out.append(_target("fanout sqlite vs Ray", ratio, ratio is not None and ratio >= 15, ">= 15x"))
    for store, limit in (("memory", 0.5), ("sqlite", 1.5)):
        rows_c = _find(rows, "chain", f"hivegrid-{store}")
        p50 = _num(rows_c[0], "p50_ms") if rows_c else None
        out.append(
            _target(
                f"chain hop p50 {store} (ms)", p50, p50 is not None and p50 <= limit, f"<= {limit}"
            )
        )
        ray_rows = _find(rows, "chain", "ray")
        ray_p50 = _num(ray_rows[0], "p50_ms") if ray_rows else None
        r = ray_p50 / p50 if p50 and ray_p50 else None
        out.append(
            _target(f"chain hop p50 {store} vs Ray", r, r is not None and r >= 4, ">= 4x faster")
        )
    for store in ("memory", "sqlite"):
        d = _best(rows, "dynamic", f"hivegrid-{store}", "throughput")
        out.append(
            _target(f"dynamic {store} nodes/s", d, d is not None and d >= 15_000, ">= 15,000")
        )
    for store in ("memory", "sqlite"):
        s_rows = _find(rows, "streams", f"hivegrid-{store}")
        s = s_rows[0] if s_rows else None
        fan = _best(rows, "fanout", f"hivegrid-{store}", "throughput")
        st = _num(s, "throughput")
        share = st / fan if st and fan else None
        out.append(
            _target(
                f"streams {store} share of fanout",
                share,
                share is not None and share >= 0.75,
                ">= 0.75",
            )
        )
        reg = _num(s, "register_s")
        out.append(
            _target(f"streams {store} register (s)", reg, reg is not None and reg <= 3, "<= 3")
        )
        mem = _num(s, "rss_per_stream_kb")
        out.append(
            _target(f"streams {store} KB/stream", mem, mem is not None and mem <= 100, "<= 100")
        )
    r_rows = _find(rows, "recovery", "hivegrid-sqlite")
    r = r_rows[0] if r_rows else None
    lost, dup = _num(r, "lost_completions"), _num(r, "duplicated_completions")
    out.append(_target("recovery lost completions", lost, lost == 0, "0"))
    out.append(_target("recovery duplicated completions", dup, dup == 0, "0"))
    first = _num(r, "restart_to_first_dispatch_s")
    out.append(
        _target(
            "recovery process start to first assignment (s)",
            first,
            first is not None and first <= 1,
            "<= 1",
        )
    )
    for store in ("memory", "sqlite"):
        z_rows = _find(rows, "size", f"hivegrid-{store}")
        per = _num(z_rows[0], "rss_per_node_bytes") if z_rows else None
        out.append(
            _target(
                f"size {store} bytes/pending node", per, per is not None and per <= 1024, "<= 1024"
            )
        )
    return out


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}" if abs(v) >= 1 or v == 0 else f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _notes(row: dict[str, Any]) -> str:
    if row.get("skipped"):
        return row["skipped"]
    if not row.get("ok"):
        return "FAILED: " + str(row.get("error", ""))[:120]
    w = row["workload"]
    parts = []
    if w == "chain":
        if "hop_eventlog_ms" in row:
            parts.append(f"event-log hop p50 {_fmt(row['hop_eventlog_ms']['p50'], 3)} ms")
        parts.append(f"e2e {_fmt(row.get('end_to_end_per_node_ms'), 2)} ms/node")
    elif w == "dynamic":
        parts.append(f"makespan {_fmt(row.get('makespan_s'), 2)} s")
    elif w == "streams":
        parts.append(
            f"register {_fmt(row.get('register_s'), 2)} s, "
            f"{_fmt(row.get('rss_per_stream_kb'))} KB/stream"
        )
        if row.get("share_of_floor"):
            parts.append(f"{row['share_of_floor']:.0%} of the transport floor")
    elif w == "floor":
        parts.append("bare grpc.aio echo: the ceiling at 1 slot/stream")
    elif w == "recovery":
        parts.append(
            f"restart->listen {_fmt(row.get('restart_to_listening_s'), 2)} s, listen->dispatch "
            f"{_fmt(row.get('listening_to_first_dispatch_s'), 2)} s, "
            f"lost {row.get('lost_completions')}, "
            f"dup {row.get('duplicated_completions')}, re-run {row.get('re_executions')}"
        )
    elif w == "size":
        parts.append(
            f"submit {_fmt(row.get('submit_s'), 2)} s, {_fmt(row.get('rss_per_node_bytes'))} B/node"
        )
    if row.get("worker_impl") and row["worker_impl"] != "sdk":
        parts.append(f"worker={row['worker_impl']}")
    return "; ".join(parts)


COLUMNS = (
    ("workload", 9),
    ("variant", 22),
    ("system", 16),
    ("nodes", 9),
    ("secs", 7),
    ("nodes/s", 8),
    ("p50 ms", 7),
    ("p99 ms", 7),
    ("cpu s/1k", 8),
    ("rss MB", 7),
    ("vs ray", 7),
    ("vs dask", 7),
)


def table(doc: dict[str, Any]) -> str:
    lines = []
    head = " ".join(f"{name:<{w}}" for name, w in COLUMNS) + " notes"
    lines.append(head)
    lines.append("-" * len(head))
    for r in doc["results"]:
        vals = [
            r["workload"],
            r.get("variant", ""),
            r["system"],
            _fmt(r.get("nodes")),
            _fmt(r.get("seconds", r.get("submit_s")), 2),
            _fmt(r.get("throughput")),
            _fmt(r.get("p50_ms"), 2),
            _fmt(r.get("p99_ms"), 2),
            _fmt(r.get("coord_cpu_s_per_1k"), 3),
            _fmt(r.get("peak_rss_mb")),
            _fmt(r.get("vs_ray"), 2) + ("x" if r.get("vs_ray") else ""),
            _fmt(r.get("vs_dask"), 2) + ("x" if r.get("vs_dask") else ""),
        ]
        cells = " ".join(f"{v:<{w}}" for v, (_, w) in zip(vals, COLUMNS, strict=True))
        lines.append(f"{cells} {_notes(r)}".rstrip())
    lines.append("")
    if doc.get("mode") == "quick":
        lines.append("targets (docs/benchmarks.md; a quick run is too small to judge them):")
    else:
        lines.append("targets (docs/benchmarks.md):")
    for t in doc.get("targets", []):
        met = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        lines.append(
            f"  {t['target']:<44} want {t['want']:<14} got {_fmt(t['measured'], 2):<10} {met}"
        )
    env = doc["environment"]
    lines.append("")
    lines.append(
        f"grpcio {env['grpcio']}, protobuf {env['protobuf']} ({env['protobuf_backend']}), "
        f"{env['cores']} cores ({env['cpu_model']}), {env['memory_gb']} GB, "
        f"python {env['python']}, "
        f"{env['date']}; stores {', '.join(doc['stores'])}; worker {doc['worker_impl']}"
    )
    for note in doc.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
