"""Peers, each in its own process: `python -m bench.peers ray|dask PARAMS_JSON` prints one JSON
object with a result per workload (or {"unavailable": reason} when the peer is not installed).

- Ray: `ray.init(num_cpus=2)`, `@ray.remote` no-op tasks; spawns are nested remote calls whose
  join is a task taking the children's refs as arguments (no blocking `ray.get` inside tasks,
  which would make Ray start extra worker processes). "Head" = gcs_server + raylet processes.
- Dask distributed: a scheduler process and 2 single-threaded worker processes (the topology of
  `LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`, but with the scheduler in
  its own process so that its CPU and memory can be measured); `client.submit`, and
  `worker_client` for spawns. "Head" = the scheduler process.

Chain hops are measured as for Hivegrid: each task stamps its start and end (wall clock), and a
hop is start(i+1) - end(i).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from .procs import cpu_seconds, free_port, peak_rss
from .stats import percentiles


def _stamp_value() -> tuple[float, float]:
    t = time.time()
    return (t, time.time())


def _chain_figures(stamps: list[tuple[float, float]], seconds: float) -> dict[str, Any]:
    hops = [stamps[i + 1][0] - stamps[i][1] for i in range(len(stamps) - 1)]
    p = percentiles(hops)
    return {
        "p50_ms": p["p50"] * 1000,
        "p99_ms": p["p99"] * 1000,
        "hop_worker_ms": {k: v * 1000 for k, v in p.items()},
        "end_to_end_per_node_ms": seconds / len(stamps) * 1000,
    }


def _measure(
    heads: Callable[[], list[psutil.Process]], nodes: int, body: Callable[[], Any]
) -> tuple[dict[str, Any], Any]:
    procs = heads()
    me = [psutil.Process()]
    cpu0, driver0 = cpu_seconds(procs), cpu_seconds(me)
    t0 = time.time()
    value = body()
    seconds = time.time() - t0
    cpu1, driver1 = cpu_seconds(procs), cpu_seconds(me)
    out: dict[str, Any] = {"nodes": nodes, "seconds": seconds, "throughput": nodes / seconds}
    # The client/driver process: for Ray it is the tasks' owner and does part of the scheduling.
    out["driver_cpu_s_per_1k"] = (driver1 - driver0) / nodes * 1000
    if procs:
        out["coord_cpu_s_per_1k"] = (cpu1 - cpu0) / nodes * 1000
        out["peak_rss_mb"] = sum(peak_rss(p.pid) for p in procs) / 2**20
    return out, value


def _dynamic_nodes(width: int) -> int:
    return 1 + width + width * width + width + 1


# --- Ray ------------------------------------------------------------------------------------


def run_ray(params: dict[str, Any]) -> dict[str, Any]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")

    @ray.remote
    def noop() -> None:
        return None

    @ray.remote
    def stamp(prev: Any) -> tuple[float, float]:
        return _stamp_value()

    @ray.remote
    def join(*xs: Any) -> int:
        return len(xs)

    @ray.remote
    def child(width: int) -> Any:
        return join.remote(*[noop.remote() for _ in range(width)])

    @ray.remote
    def join_children(*refs: Any) -> int:
        return sum(ray.get(list(refs)))

    @ray.remote
    def root(width: int) -> Any:
        return join_children.remote(*[child.remote(width) for _ in range(width)])

    me = psutil.Process()

    def heads() -> list[psutil.Process]:
        return [
            p
            for p in me.children(recursive=True)
            if any(k in p.name() for k in ("gcs_server", "raylet"))
        ]

    ray.get([noop.remote() for _ in range(200)])  # warm: worker processes started
    results: dict[str, Any] = {}
    if "fanout" in params:
        n = params["fanout"]
        results["fanout"], _ = _measure(
            heads, n, lambda: ray.get([noop.remote() for _ in range(n)])
        )
    if "chain" in params:
        n = params["chain"]

        def body() -> list[Any]:
            refs = [stamp.remote(None)]
            for _ in range(n - 1):
                refs.append(stamp.remote(refs[-1]))
            return ray.get(refs)

        out, stamps = _measure(heads, n, body)
        out.update(_chain_figures(stamps, out["seconds"]))
        results["chain"] = out
    if "dynamic" in params:
        w = params["dynamic"]
        out, total = _measure(heads, _dynamic_nodes(w), lambda: ray.get(ray.get(root.remote(w))))
        if total != w * w:
            raise RuntimeError(f"dynamic: joined {total} results, expected {w * w}")
        out["makespan_s"] = out["seconds"]
        results["dynamic"] = out
    ray.shutdown()
    return results


# --- Dask -----------------------------------------------------------------------------------


def _dask_noop(i: Any = None) -> None:
    return None


def _dask_stamp(prev: Any) -> tuple[float, float]:
    return _stamp_value()


def _dask_join(xs: list[Any]) -> int:
    return len(xs)


def _dask_child(width: int) -> int:
    from distributed import worker_client

    with worker_client() as c:
        futs = [c.submit(_dask_noop, pure=False) for _ in range(width)]
        return int(c.submit(_dask_join, futs).result())


def _dask_root(width: int) -> int:
    from distributed import worker_client

    with worker_client() as c:
        futs = [c.submit(_dask_child, width, pure=False) for _ in range(width)]
        return int(sum(c.gather(futs)))


def run_dask(params: dict[str, Any]) -> dict[str, Any]:
    from distributed import Client, wait

    port = free_port()
    env = dict(os.environ, DASK_DISTRIBUTED__LOGGING__DISTRIBUTED="error")
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = cwd + os.pathsep + env.get("PYTHONPATH", "")
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    worker_args = ["--nworkers", "2", "--nthreads", "1", "--no-dashboard", "--memory-limit", "0"]
    sched = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = subprocess.Popen(
        [dask, "worker", f"tcp://127.0.0.1:{port}", *worker_args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = Client(f"tcp://127.0.0.1:{port}", timeout=60)
        client.wait_for_workers(2, timeout=120)
        head = psutil.Process(sched.pid)

        def heads() -> list[psutil.Process]:
            return [head]

        wait(client.map(_dask_noop, range(200), pure=False))  # warm
        results: dict[str, Any] = {}
        if "fanout" in params:
            n = params["fanout"]
            results["fanout"], _ = _measure(
                heads, n, lambda: wait(client.map(_dask_noop, range(n), pure=False))
            )
        if "chain" in params:
            n = params["chain"]

            def body() -> list[Any]:
                futs = [client.submit(_dask_stamp, None, pure=False)]
                for _ in range(n - 1):
                    futs.append(client.submit(_dask_stamp, futs[-1], pure=False))
                return list(client.gather(futs))

            out, stamps = _measure(heads, n, body)
            out.update(_chain_figures(stamps, out["seconds"]))
            results["chain"] = out
        if "dynamic" in params:
            w = params["dynamic"]
            out, total = _measure(
                heads,
                _dynamic_nodes(w),
                lambda: client.submit(_dask_root, w, pure=False).result(),
            )
            if total != w * w:
                raise RuntimeError(f"dynamic: joined {total} results, expected {w * w}")
            out["makespan_s"] = out["seconds"]
            results["dynamic"] = out
        client.close()
        return results
    finally:
        for p in (workers, sched):
            p.terminate()
        for p in (workers, sched):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


RUNNERS = {"ray": (run_ray, "ray"), "dask": (run_dask, "distributed")}


def main() -> int:
    system, params = sys.argv[1], json.loads(sys.argv[2])
    runner, module = RUNNERS[system]
    try:
        __import__(module)
    except ImportError as exc:
        print(json.dumps({"unavailable": f"{module} is not installed ({exc})"}))
        return 0
    print(json.dumps(runner(params)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
