"""The workloads on Hivegrid: a coordinator process, worker processes, and a gRPC client.

Timing: t0 is taken on the client just before SubmitRun (the graph is built before); the end is
the run's `ended_at` from the coordinator (same machine, same wall clock). The client
(hivegrid.client) notices the end by polling ListRuns
(cheap: counts are kept incrementally), not by watching every event, so that watching does not
load the coordinator it measures; the event log is read afterwards where a figure needs it.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hivegrid.client import Client, Graph, NodeState, RunState, RunSummary

from . import agents
from .procs import CoordinatorProc, WorkerProcs, free_port, peak_rss, rss
from .stats import percentiles

FANOUT_SLOTS = 128
# Submitting a million nodes, or reading them back, takes a while on a loaded machine.
_CALL_TIMEOUT_S = 600.0


class WorkloadError(RuntimeError):
    pass


def connect(address: str) -> Client:
    return Client(address, timeout=_CALL_TIMEOUT_S)


def run_info(client: Client, run_id: str) -> RunSummary | None:
    """The run as ListRuns reports it (counts are kept incrementally there: cheap to poll)."""
    for r in client.list_runs(limit=1000):
        if r.id == run_id:
            return r
    return None


def wait_workers(client: Client, count: int, timeout: float = 120.0) -> float:
    """Waits until `count` sessions are registered; returns the time it saw them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(client.list_workers()) >= count:
            return time.time()
        time.sleep(0.01)
    seen = len(client.list_workers())
    raise WorkloadError(f"only {seen} of {count} worker streams registered")


def wait_end(client: Client, run_id: str, timeout: float, poll: float = 0.02) -> RunSummary:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = run_info(client, run_id)
        if info is not None and info.ended:
            return info
        time.sleep(poll)
    raise WorkloadError(f"run {run_id} did not end within {timeout:.0f} s")


def wait_succeeded(client: Client, run_id: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = run_info(client, run_id)
        if info is not None and info.counts[NodeState.SUCCEEDED] >= count:
            return
        time.sleep(0.005)
    raise WorkloadError(f"run {run_id} did not reach {count} completions")


class Env:
    """A coordinator (and its store) plus worker processes, torn down on exit."""

    def __init__(self, store: str, *, impl: str, log_dir: Path, listen: str = "127.0.0.1:0"):
        self.kind = store
        self.impl = impl
        self.log_dir = log_dir
        self._tmp = tempfile.TemporaryDirectory(prefix="hivegrid-bench-")
        self.store_url = (
            "memory" if store == "memory" else f"sqlite:///{Path(self._tmp.name) / 'bench.db'}"
        )
        self.listen = listen
        self.coord = CoordinatorProc(self.store_url, listen, log_dir / "coordinator.log")
        self.workers: list[WorkerProcs] = []
        self.client: Client | None = None

    def __enter__(self) -> Env:
        self.coord.start()
        self.client = connect(self.coord.address)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        for w in self.workers:
            w.stop()
        self.coord.kill9()
        self._tmp.cleanup()

    def start_workers(
        self, count: int, *, streams: int = 1, slots: int = FANOUT_SLOTS
    ) -> WorkerProcs:
        w = WorkerProcs(
            self.coord.address,
            count=count,
            streams=streams,
            slots=slots,
            impl=self.impl,
            log_path=self.log_dir / "workers.log",
        )
        self.workers.append(w)
        w.wait_ready()
        return w

    def restart(self) -> None:
        """kill -9 the coordinator and start a new one on the same store and port."""
        self.coord.kill9()
        self.coord = CoordinatorProc(self.store_url, self.listen, self.log_dir / "coordinator.log")
        self.coord.start()


def _graph(n: int) -> Graph:
    """Built before the clock starts: what is timed is the submission, as before."""
    return Graph(max_nodes=max(n * 2, 1_000_000))


def _noop_graph(n: int, prefix: str = "n") -> Graph:
    g = _graph(n)
    for i in range(n):
        g.node("noop", id=f"{prefix}{i}")
    return g


def _check_all_succeeded(info: RunSummary, expected: int | None) -> None:
    counts = {str(state): count for state, count in info.counts.items()}
    if info.state != RunState.SUCCEEDED:
        raise WorkloadError(f"run ended {info.state} (counts: {counts})")
    bad = sum(counts[s] for s in ("failed", "cancelled", "skipped", "pending", "ready", "running"))
    if bad or (expected is not None and counts["succeeded"] != expected):
        raise WorkloadError(f"expected {expected} succeeded nodes, counts: {counts}")


def _measured_run(env: Env, graph: Graph, expected: int | None, timeout: float) -> dict[str, Any]:
    assert env.client is not None
    cpu0 = env.coord.cpu()
    t0 = time.time()
    run_id = env.client.submit(graph)
    submitted = time.time()
    info = wait_end(env.client, run_id, timeout)
    cpu1 = env.coord.cpu()
    _check_all_succeeded(info, expected)
    assert info.ended_at is not None
    done = int(info.counts[NodeState.SUCCEEDED])
    elapsed = max(info.ended_at - t0, 1e-9)
    return {
        "run_id": run_id,
        "nodes": done,
        "seconds": elapsed,
        "submit_s": submitted - t0,
        "throughput": done / elapsed,
        "coord_cpu_s_per_1k": (cpu1 - cpu0) / done * 1000,
        "peak_rss_mb": peak_rss(env.coord.pid) / 2**20,
    }


# --- workloads -------------------------------------------------------------------------------


def fanout(env: Env, n: int, procs: int, timeout: float) -> dict[str, Any]:
    assert env.client is not None
    w = env.start_workers(procs)
    wait_workers(env.client, procs)
    out = _measured_run(env, _noop_graph(n), n, timeout)
    out["worker_impl"] = w.impl
    out["slots_per_worker"] = FANOUT_SLOTS
    return out


def chain(env: Env, n: int, timeout: float) -> dict[str, Any]:
    assert env.client is not None
    w = env.start_workers(1)
    wait_workers(env.client, 1)
    graph = _graph(n)
    previous = graph.node("stamp", id="n0")
    for i in range(1, n):
        previous = graph.node("stamp", id=f"n{i}", after=previous)
    out = _measured_run(env, graph, n, timeout)
    out["worker_impl"] = w.impl
    run = env.client.get_run(out["run_id"])
    stamps = {node.id: node.result for node in run.nodes}
    worker_hops = [stamps[f"n{i + 1}"]["s"] - stamps[f"n{i}"]["e"] for i in range(n - 1)]
    finished: dict[str, float] = {}
    dispatched: dict[str, float] = {}
    for ev in env.client.events(out["run_id"]):
        if ev.kind == "attempt_finished" and ev.node_id:
            finished[ev.node_id] = ev.time
        elif ev.kind == "node_dispatched" and ev.node_id:
            dispatched.setdefault(ev.node_id, ev.time)
    log_hops = [dispatched[f"n{i + 1}"] - finished[f"n{i}"] for i in range(n - 1)]
    wp = percentiles(worker_hops)
    lp = percentiles(log_hops)
    out["p50_ms"], out["p99_ms"] = wp["p50"] * 1000, wp["p99"] * 1000
    out["hop_worker_ms"] = {k: v * 1000 for k, v in wp.items()}
    out["hop_eventlog_ms"] = {k: v * 1000 for k, v in lp.items()}
    out["end_to_end_per_node_ms"] = out["seconds"] / n * 1000
    return out


def dynamic(env: Env, width: int, timeout: float) -> dict[str, Any]:
    assert env.client is not None
    w = env.start_workers(1)
    wait_workers(env.client, 1)
    expected = 1 + width + width * width + width + 1
    graph = _graph(expected)
    root_input = agents.spawn_input(
        width, child="spawn", child_input={"count": width, "child": "noop"}
    )
    graph.node("spawn", json.loads(root_input), id="root", can_mutate=True)
    out = _measured_run(env, graph, expected, timeout)
    out["worker_impl"] = w.impl
    out["makespan_s"] = out["seconds"]
    return out


def streams(env: Env, n: int, total_streams: int, procs: int, timeout: float) -> dict[str, Any]:
    assert env.client is not None
    base = rss(env.coord.pid)
    per = -(-total_streams // procs)
    w = env.start_workers(procs, streams=per, slots=1)
    seen = wait_workers(env.client, per * procs, timeout=120)
    registered_s = seen - w.first_ready_at()
    time.sleep(0.3)
    per_stream = (rss(env.coord.pid) - base) / (per * procs)
    out = _measured_run(env, _noop_graph(n), n, timeout)
    out.update(
        worker_impl=w.impl,
        streams=per * procs,
        processes=procs,
        register_s=registered_s,
        rss_per_stream_kb=per_stream / 1024,
    )
    return out


def recovery(env: Env, n: int, timeout: float) -> dict[str, Any]:
    assert env.client is not None
    w = env.start_workers(2)
    wait_workers(env.client, 2)
    graph = _noop_graph(n)
    t0 = time.time()
    run_id = env.client.submit(graph)
    wait_succeeded(env.client, run_id, int(n * 0.4), timeout)
    killed_at = time.time()
    env.restart()
    env.client.close()
    env.client = client = connect(env.coord.address)
    info = wait_end(client, run_id, timeout)
    _check_all_succeeded(info, n)
    assert info.ended_at is not None
    succeeded: Counter[str] = Counter()
    dispatches: Counter[str] = Counter()
    first_after = None
    lost_attempts = 0
    for ev in client.events(run_id):
        if ev.kind == "attempt_finished" and ev.outcome == "succeeded" and ev.node_id:
            succeeded[ev.node_id] += 1
        elif ev.kind == "node_dispatched" and ev.node_id:
            dispatches[ev.node_id] += 1
            if first_after is None and ev.time > killed_at:
                first_after = ev.time
        elif ev.kind == "attempt_lost":
            lost_attempts += 1
    lost = sum(1 for i in range(n) if succeeded[f"n{i}"] == 0)
    duplicated = sum(c - 1 for c in succeeded.values() if c > 1)
    if first_after is None:
        raise WorkloadError("no node was dispatched after the restart")
    return {
        "run_id": run_id,
        "nodes": n,
        "seconds": info.ended_at - t0,
        "throughput": n / (info.ended_at - t0),
        "worker_impl": w.impl,
        "killed_after_succeeded": int(n * 0.4),
        "restart_to_listening_s": env.coord.listening_at - env.coord.spawned_at,
        "listening_to_first_dispatch_s": first_after - env.coord.listening_at,
        "restart_to_first_dispatch_s": first_after - env.coord.spawned_at,
        "lost_completions": lost,
        "duplicated_completions": duplicated,
        "re_executions": sum(c - 1 for c in dispatches.values() if c > 1),
        "attempts_lost_by_restart": lost_attempts,
        "peak_rss_mb": peak_rss(env.coord.pid) / 2**20,
    }


def size(env: Env, n: int) -> dict[str, Any]:
    assert env.client is not None
    graph = _noop_graph(n)
    time.sleep(0.2)
    base = rss(env.coord.pid)
    cpu0 = env.coord.cpu()
    t0 = time.time()
    run_id = env.client.submit(graph)
    submit_s = time.time() - t0
    info = run_info(env.client, run_id)
    time.sleep(0.5)
    after = rss(env.coord.pid)
    cpu1 = env.coord.cpu()
    if info is None or info.counts[NodeState.READY] + info.counts[NodeState.PENDING] != n:
        raise WorkloadError(f"the run does not hold {n} waiting nodes: {info}")
    return {
        "run_id": run_id,
        "nodes": n,
        "submit_s": submit_s,
        "throughput": n / submit_s,
        "rss_per_node_bytes": (after - base) / n,
        "coord_cpu_s_per_1k": (cpu1 - cpu0) / n * 1000,
        "peak_rss_mb": peak_rss(env.coord.pid) / 2**20,
        "rss_before_mb": base / 2**20,
        "rss_after_mb": after / 2**20,
    }


@contextlib.contextmanager
def environment(store: str, impl: str, log_dir: Path, fixed_port: bool = False) -> Iterator[Env]:
    listen = f"127.0.0.1:{free_port()}" if fixed_port else "127.0.0.1:0"
    with Env(store, impl=impl, log_dir=log_dir, listen=listen) as env:
        yield env
