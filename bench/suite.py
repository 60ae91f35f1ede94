"""Runs the workloads on the chosen systems, then compares them (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from . import hivegrid_sys as hg
from .procs import ROOT

WORKLOADS = ("fanout", "chain", "dynamic", "streams", "floor", "recovery", "size")
HIVEGRID = ("hivegrid-memory", "hivegrid-sqlite")
PEERS = ("ray", "dask")
SYSTEMS = HIVEGRID + PEERS

QUICK: dict[str, Any] = {
    "fanout": 2_000,
    "chain": 300,
    "dynamic": 10,
    "streams": {"nodes": 2_000, "streams": 20, "processes": 2},
    "recovery": 2_000,
    "size": 20_000,
    "timeout_s": 20,
}
# The sizes of docs/benchmarks.md (the whole suite takes ~10 minutes on 2 cores).
FULL: dict[str, Any] = {
    "fanout": 100_000,
    "chain": 10_000,
    "dynamic": 100,
    "streams": {"nodes": 100_000, "streams": 1_000, "processes": 4},
    "recovery": 100_000,
    "size": 1_000_000,
    "timeout_s": 600,
}
PEER_FULL = {"fanout": 100_000, "chain": 10_000, "dynamic": 100}
PEER_QUICK = {"fanout": 2_000, "chain": 300, "dynamic": 10}
NOTES = [
    "peers run fanout with their own 2 worker processes (Ray num_cpus=2; Dask 2 single-thread "
    "workers), not 1 and 4; streams, recovery and size have no Ray/Dask equivalent: Hivegrid only",
    "recovery: a 100,000-node fanout on sqlite, coordinator killed (-9) after 40% completed",
    "size: nodes submitted with no worker connected, so all stay READY (pending work)",
    "floor: bare grpc.aio, one message each way per round trip over the streams workload's "
    "streams and processes, nothing else done; nodes/s = round trips/s",
]


def _row(workload: str, variant: str, system: str) -> dict[str, Any]:
    return {"workload": workload, "variant": variant, "system": system, "ok": True}


def _run_hivegrid(
    system: str, workloads: list[str], sizes: dict[str, Any], impl: str, log_dir: Path
) -> list[dict[str, Any]]:
    store = system.removeprefix("hivegrid-")
    timeout = sizes["timeout_s"]
    jobs: list[tuple[str, str, Callable[[hg.Env], dict[str, Any]]]] = []
    for w in workloads:
        if w == "fanout":
            for procs in (1, 4):
                variant = f"{procs} worker process" + ("es" if procs > 1 else "")
                job = partial(hg.fanout, n=sizes["fanout"], procs=procs, timeout=timeout)
                jobs.append(("fanout", variant, job))
        elif w == "chain":
            jobs.append(("chain", "", partial(hg.chain, n=sizes["chain"], timeout=timeout)))
        elif w == "dynamic":
            width = sizes["dynamic"]
            job = partial(hg.dynamic, width=width, timeout=timeout)
            jobs.append(("dynamic", f"{width}x{width}", job))
        elif w == "streams":
            s = sizes["streams"]
            variant = f"{s['streams']} streams / {s['processes']} procs"
            job = partial(
                hg.streams,
                n=s["nodes"],
                total_streams=s["streams"],
                procs=s["processes"],
                timeout=timeout,
            )
            jobs.append(("streams", variant, job))
        elif w == "recovery":
            if store == "memory":
                continue  # nothing survives a kill of a memory store: durable stores only
            job = partial(hg.recovery, n=sizes["recovery"], timeout=timeout)
            jobs.append(("recovery", "kill -9 mid-fanout", job))
        elif w == "size":
            jobs.append(("size", "", partial(hg.size, n=sizes["size"])))
    rows: list[dict[str, Any]] = []
    for workload, variant, run_job in jobs:
        row = _row(workload, variant, system)
        print(f"  {system:16} {workload:9} {variant} ...", end="", flush=True)
        started = time.monotonic()
        try:
            with hg.environment(store, impl, log_dir, fixed_port=workload == "recovery") as env:
                row.update(run_job(env))
        except Exception as exc:
            row["ok"] = False
            row["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        row["wall_s"] = time.monotonic() - started
        print(
            f" {'ok' if row['ok'] else 'FAILED: ' + row['error']} ({row['wall_s']:.1f} s)",
            flush=True,
        )
        rows.append(row)
    return rows


def _run_floor(s: dict[str, int], timeout: float) -> dict[str, Any]:
    from . import floor

    row = _row("floor", f"{s['streams']} streams / {s['processes']} procs", "grpc.aio")
    print(f"  {'grpc.aio':16} {'floor':9} {row['variant']} ...", end="", flush=True)
    started = time.monotonic()
    try:
        row.update(floor.measure(s["streams"], s["processes"], s["nodes"], timeout))
    except Exception as exc:
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    row["wall_s"] = time.monotonic() - started
    print(f" {'ok' if row['ok'] else 'FAILED: ' + row['error']} ({row['wall_s']:.1f} s)")
    return row


def _run_peer(
    system: str, workloads: list[str], sizes: dict[str, Any], timeout: float
) -> list[dict[str, Any]]:
    params = {w: sizes[w] for w in ("fanout", "chain", "dynamic") if w in workloads}
    variants = {
        "fanout": "2 worker processes",
        "chain": "",
        "dynamic": f"{sizes['dynamic']}x{sizes['dynamic']}",
    }
    rows: list[dict[str, Any]] = []
    if not params:
        return rows
    print(f"  {system:16} {', '.join(params)} ...", end="", flush=True)
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    error = ""
    got: dict[str, Any] = {}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.peers", system, json.dumps(params)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            error = f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"
        else:
            got = json.loads(lines[-1])
    except subprocess.TimeoutExpired:
        error = f"did not finish within {timeout:.0f} s"
    wall = time.monotonic() - started
    if "unavailable" in got:
        print(f" not installed ({wall:.1f} s)", flush=True)
        for w in params:
            row = _row(w, variants[w], system)
            row.update(ok=True, skipped=got["unavailable"])
            rows.append(row)
        return rows
    print(f" {'ok' if not error else 'FAILED: ' + error} ({wall:.1f} s)", flush=True)
    for w in params:
        row = _row(w, variants[w], system)
        if error:
            row.update(ok=False, error=error)
        else:
            row.update(got[w])
        rows.append(row)
    return rows


def run(
    *,
    quick: bool,
    workloads: list[str],
    systems: list[str],
    impl: str,
    overrides: dict[str, int] | None = None,
) -> dict[str, Any]:
    from .report import compare
    from .stats import environment

    sizes = dict(QUICK if quick else FULL)
    peer_sizes = dict(PEER_QUICK if quick else PEER_FULL)
    for key, value in (overrides or {}).items():
        if key in ("streams", "streams.nodes"):
            sizes["streams"] = dict(sizes["streams"], nodes=value)
        elif key.startswith("streams."):
            sizes["streams"] = dict(sizes["streams"], **{key.split(".", 1)[1]: value})
        else:
            sizes[key] = value
            if key in peer_sizes:
                peer_sizes[key] = value
    log_dir = Path(tempfile.mkdtemp(prefix="hivegrid-bench-logs-"))
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    if "floor" in workloads:
        rows.append(_run_floor(sizes["streams"], sizes["timeout_s"]))
    for system in systems:
        if system in HIVEGRID:
            rows += _run_hivegrid(system, workloads, sizes, impl, log_dir)
        else:
            rows += _run_peer(system, workloads, peer_sizes, timeout=900)
    doc: dict[str, Any] = {
        "suite": "hivegrid-bench",
        "mode": "quick" if quick else "full",
        "environment": environment(),
        "stores": sorted({s.removeprefix("hivegrid-") for s in systems if s in HIVEGRID}),
        "sizes": {"hivegrid": sizes, "peers": peer_sizes},
        "notes": NOTES,
        "worker_impl": impl,
        "logs": str(log_dir),
        "results": rows,
        "total_s": time.monotonic() - started,
    }
    doc.update(compare(rows))
    return doc
