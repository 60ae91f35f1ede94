"""Processes the suite starts and measures: the coordinator, worker processes, and psutil
figures (CPU seconds, peak RSS) of any process."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import psutil

ROOT = Path(__file__).resolve().parent.parent
# The Go SDK's benchmark worker (`make -C sdks/go build`), for `--worker go`.
GO_WORKER = ROOT / "sdks" / "go" / "bin" / "bench-worker"
LISTEN_PREFIX = "hivegrid coordinator listening on "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def peak_rss(pid: int) -> int:
    """The process's high-water RSS (VmHWM) in bytes, or its current RSS where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def rss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def coordinator_command(listen: str, store: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hivegrid.coordinator",
        "coordinator",
        "--listen",
        listen,
        "--store",
        store,
        # The size workload holds a 1,000,000-node run and asks for room to grow.
        "--limit",
        "max_nodes_per_run=2000000",
    ]


class CoordinatorProc:
    """A coordinator in its own process; `address` once it printed its listening line."""

    def __init__(self, store: str, listen: str = "127.0.0.1:0", log_path: Path | None = None):
        self.store = store
        self.listen = listen
        self.log_path = log_path
        self.address = ""
        self.proc: subprocess.Popen[str] | None = None
        self.ps: psutil.Process | None = None
        self.spawned_at = 0.0
        self.listening_at = 0.0

    def start(self, timeout: float = 120.0) -> CoordinatorProc:
        log = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.spawned_at = time.time()
        self.proc = subprocess.Popen(
            coordinator_command(self.listen, self.store),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
        )
        if log is not subprocess.DEVNULL:
            log.close()
        self.ps = psutil.Process(self.proc.pid)
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the coordinator exited with {self.proc.returncode} before listening"
                    ) from None
                continue
            if line.startswith(LISTEN_PREFIX):
                self.listening_at = time.time()
                self.address = line[len(LISTEN_PREFIX) :].strip()
                return self
        raise RuntimeError("the coordinator did not start listening in time")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds([self.ps]) if self.ps else 0.0

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill9()


class WorkerProcs:
    """Benchmark worker processes (`bench.hg_worker`)."""

    def __init__(
        self,
        address: str,
        *,
        count: int,
        streams: int = 1,
        slots: int = 64,
        impl: str = "auto",
        log_path: Path | None = None,
    ) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.ready: list[dict[str, object]] = []
        log = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115
        program = [str(GO_WORKER)] if impl == "go" else [sys.executable, "-m", "bench.hg_worker"]
        if impl == "go" and not GO_WORKER.exists():
            raise RuntimeError(f"{GO_WORKER} is missing: run `make -C sdks/go build`")
        for i in range(count):
            self.procs.append(
                subprocess.Popen(
                    [
                        *(*program, "--coordinator", address),
                        *("--streams", str(streams), "--slots", str(slots), "--impl", impl),
                        *("--name", f"bench-w{i}"),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    cwd=ROOT,
                )
            )
        if log is not subprocess.DEVNULL:
            log.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits for every process's `ready` line (imports done, about to connect)."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError("a worker process failed to start")
            self.ready.append(json.loads(line))

    @property
    def impl(self) -> str:
        return str(self.ready[0]["ready"]) if self.ready else "?"

    def first_ready_at(self) -> float:
        return min(float(str(r["time"])) for r in self.ready)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
