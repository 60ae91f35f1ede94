"""The workloads on Hivegrid: a coordinator process, worker processes, and a gRPC client.

Timing: t0 is taken on the client just before SubmitRun; the end is the run's `ended_at` from the
coordinator (same machine, same wall clock). The client notices the end by polling ListRuns
(cheap: counts are kept incrementally), not by watching every event, so that watching does not
load the coordinator it measures; the event log is read afterwards where a figure needs it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc
from hivegrid.v1 import worker_pb2 as wpb

from . import agents
from .procs import CoordinatorProc, WorkerProcs, free_port, peak_rss, rss
from .stats import percentiles

_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
]
FANOUT_SLOTS = 128


class WorkloadError(RuntimeError):
    pass


class Client:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=_OPTIONS)
        self.stub = run_pb2_grpc.RunServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def submit(self, nodes: list[gpb.NodeSpec], run_id: str = "") -> str:
        req = rpb.SubmitRunRequest(nodes=nodes, run_id=run_id, limits=gpb.RunLimits())
        req.limits.max_nodes = max(len(nodes) * 2, 1_000_000)
        return str(self.stub.SubmitRun(req, timeout=600).run_id)

    def run_info(self, run_id: str) -> rpb.RunInfo | None:
        for r in self.stub.ListRuns(rpb.ListRunsRequest(limit=1000), timeout=30).runs:
            if r.run_id == run_id:
                return r
        return None

    def workers(self) -> int:
        return len(self.stub.ListWorkers(rpb.ListWorkersRequest(), timeout=30).workers)

    def wait_workers(self, count: int, timeout: float = 120.0) -> float:
        """Waits until `count` sessions are registered; returns the time it saw them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.workers() >= count:
                return time.time()
            time.sleep(0.01)
        raise WorkloadError(f"only {self.workers()} of {count} worker streams registered")

    def wait_end(self, run_id: str, timeout: float, poll: float = 0.02) -> rpb.RunInfo:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.run_info(run_id)
            if info is not None and info.state != gpb.RUN_STATE_RUNNING:
                return info
            time.sleep(poll)
        raise WorkloadError(f"run {run_id} did not end within {timeout:.0f} s")

    def wait_succeeded(self, run_id: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.run_info(run_id)
            if info is not None and info.counts.succeeded >= count:
                return
            time.sleep(0.005)
        raise WorkloadError(f"run {run_id} did not reach {count} completions")

    def events(self, run_id: str) -> list[rpb.RunEvent]:
        out: list[rpb.RunEvent] = []
        for resp in self.stub.WatchRun(rpb.WatchRunRequest(run_id=run_id, from_seq=1), timeout=600):
            out.extend(resp.events)
        return out

    def get_run(self, run_id: str, results: bool = True) -> rpb.GetRunResponse:
        """The run with all its nodes (every page)."""
        whole = rpb.GetRunResponse()
        token = ""
        while True:
            page = self.stub.GetRun(
                rpb.GetRunRequest(
                    run_id=run_id, omit_results=not results, page_size=10_000, page_token=token
                ),
                timeout=300,
            )
            whole.run.CopyFrom(page.run)
            whole.nodes.extend(page.nodes)
            token = page.next_page_token
            if not token:
                return whole


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
        self.client = Client(self.coord.address)
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


def _noop_nodes(n: int, prefix: str = "n") -> list[gpb.NodeSpec]:
    return [gpb.NodeSpec(id=f"{prefix}{i}", agent="noop") for i in range(n)]


def _check_all_succeeded(info: rpb.RunInfo, expected: int | None) -> None:
    if info.state != gpb.RUN_STATE_SUCCEEDED:
        raise WorkloadError(
            f"run ended {gpb.RunState.Name(info.state)} (counts: {str(info.counts).strip()})"
        )
    c = info.counts
    bad = c.failed + c.cancelled + c.skipped + c.pending + c.ready + c.running
    if bad or (expected is not None and c.succeeded != expected):
        raise WorkloadError(f"expected {expected} succeeded nodes, counts: {c}")


def _measured_run(
    env: Env, nodes: list[gpb.NodeSpec], expected: int | None, timeout: float
) -> dict[str, Any]:
    assert env.client is not None
    cpu0 = env.coord.cpu()
    t0 = time.time()
    run_id = env.client.submit(nodes)
    submitted = time.time()
    info = env.client.wait_end(run_id, timeout)
    cpu1 = env.coord.cpu()
    _check_all_succeeded(info, expected)
    done = int(info.counts.succeeded)
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
    env.client.wait_workers(procs)
    nodes = _noop_nodes(n)
    out = _measured_run(env, nodes, n, timeout)
    out["worker_impl"] = w.impl
    out["slots_per_worker"] = FANOUT_SLOTS
    return out


def chain(env: Env, n: int, timeout: float) -> dict[str, Any]:
    assert env.client is not None
    w = env.start_workers(1)
    env.client.wait_workers(1)
    nodes = [gpb.NodeSpec(id="n0", agent="stamp")]
    nodes += [
        gpb.NodeSpec(id=f"n{i}", agent="stamp", depends_on=[f"n{i - 1}"]) for i in range(1, n)
    ]
    out = _measured_run(env, nodes, n, timeout)
    out["worker_impl"] = w.impl
    run = env.client.get_run(out["run_id"])
    stamps = {}
    import json

    for node in run.nodes:
        stamps[node.id] = json.loads(node.result)
    worker_hops = [stamps[f"n{i + 1}"]["s"] - stamps[f"n{i}"]["e"] for i in range(n - 1)]
    finished: dict[str, float] = {}
    dispatched: dict[str, float] = {}
    for ev in env.client.events(out["run_id"]):
        kind = ev.WhichOneof("kind")
        if kind == "attempt_finished":
            finished[ev.attempt_finished.node_id] = ev.time
        elif kind == "node_dispatched":
            dispatched.setdefault(ev.node_dispatched.node_id, ev.time)
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
    env.client.wait_workers(1)
    root = gpb.NodeSpec(
        id="root",
        agent="spawn",
        can_mutate=True,
        input=agents.spawn_input(
            width, child="spawn", child_input={"count": width, "child": "noop"}
        ),
    )
    expected = 1 + width + width * width + width + 1
    out = _measured_run(env, [root], expected, timeout)
    out["worker_impl"] = w.impl
    out["makespan_s"] = out["seconds"]
    return out


def streams(env: Env, n: int, total_streams: int, procs: int, timeout: float) -> dict[str, Any]:
    assert env.client is not None
    base = rss(env.coord.pid)
    per = -(-total_streams // procs)
    w = env.start_workers(procs, streams=per, slots=1)
    seen = env.client.wait_workers(per * procs, timeout=120)
    registered_s = seen - w.first_ready_at()
    time.sleep(0.3)
    per_stream = (rss(env.coord.pid) - base) / (per * procs)
    out = _measured_run(env, _noop_nodes(n), n, timeout)
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
    env.client.wait_workers(2)
    t0 = time.time()
    run_id = env.client.submit(_noop_nodes(n))
    env.client.wait_succeeded(run_id, int(n * 0.4), timeout)
    killed_at = time.time()
    env.restart()
    client = env.client
    client.close()
    env.client = client = Client(env.coord.address)
    info = client.wait_end(run_id, timeout)
    _check_all_succeeded(info, n)
    succeeded: Counter[str] = Counter()
    dispatches: Counter[str] = Counter()
    first_after = None
    lost_attempts = 0
    for ev in client.events(run_id):
        kind = ev.WhichOneof("kind")
        if kind == "attempt_finished" and ev.attempt_finished.outcome == wpb.OUTCOME_SUCCEEDED:
            succeeded[ev.attempt_finished.node_id] += 1
        elif kind == "node_dispatched":
            dispatches[ev.node_dispatched.node_id] += 1
            if first_after is None and ev.time > killed_at:
                first_after = ev.time
        elif kind == "attempt_lost":
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
    nodes = _noop_nodes(n)
    time.sleep(0.2)
    base = rss(env.coord.pid)
    cpu0 = env.coord.cpu()
    t0 = time.time()
    run_id = env.client.submit(nodes)
    submit_s = time.time() - t0
    info = env.client.run_info(run_id)
    time.sleep(0.5)
    after = rss(env.coord.pid)
    cpu1 = env.coord.cpu()
    if info is None or info.counts.ready + info.counts.pending != n:
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
