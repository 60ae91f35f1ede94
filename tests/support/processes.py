"""Real processes for the tiers that test what a user runs: the coordinator
(`python -m hivegrid.coordinator coordinator`) and the SDKs' conformance workers.

Each child's stdout and stderr are read by threads, copied to log files and kept as lines, so
that a test waits for a line (readiness is announced, never guessed by sleeping) and a failure
shows what the process said.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .wait import WAIT

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0

# Quick timing for the tiers that lose workers on purpose (conformance, crash): a silent or
# dead worker's session ends after 1.5 s.
HEARTBEAT_S = 0.2
SESSION_TIMEOUT_S = 1.5

LISTENING = re.compile(r"hivegrid coordinator listening on (\S+)")

SDKS = ("python", "go", "typescript")


def child_env() -> dict[str, str]:
    """The environment of a child: this repository importable, output unbuffered, and no
    coordinator address from the caller's shell (every address is passed explicitly)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("HIVEGRID_COORDINATOR", None)
    return env


class Lines:
    """Reads a pipe line by line on a thread; waiters wake on each line (no polling)."""

    def __init__(self, pipe: IO[bytes], copy_to: Path) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._pipe = pipe
        self._copy = copy_to.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._pump, daemon=True, name=copy_to.name)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for raw in self._pipe:
                line = raw.decode(errors="replace").rstrip("\n")
                self._copy.write(line + "\n")
                self._copy.flush()
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def wait_for(
        self, pattern: re.Pattern[str], *, count: int = 1, timeout: float = START_TIMEOUT_S
    ) -> list[re.Match[str]]:
        """Waits until `count` lines matched `pattern`; returns the matches."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in map(pattern.search, self.lines) if m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    tail = "\n".join(self.lines[-30:])
                    why = "the stream ended" if self.closed else f"{timeout:.0f} s passed"
                    raise AssertionError(
                        f"waited for {count} line(s) matching {pattern.pattern!r}, but {why}; "
                        f"last lines:\n{tail}"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._pipe.close()
        self._copy.close()

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])


class Process:
    """A child process whose stdout and stderr are read by threads and copied to
    LOG_DIR/NAME.stdout.log and LOG_DIR/NAME.stderr.log."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.stdout = Lines(self.popen.stdout, log_dir / f"{name}.stdout.log")
        self.stderr = Lines(self.popen.stderr, log_dir / f"{name}.stderr.log")
        self._closed = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; fails (showing stderr) if the process is still running at the
        deadline."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) did not exit within {timeout} s; stderr:\n"
                f"{self.stderr.tail()}"
            ) from None

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM (a clean drain or shutdown), then the exit code; SIGKILL if it hangs (the
        code is then -9, which a test asserting a clean exit sees)."""
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        self.kill()
        code = self.popen.returncode
        assert code is not None
        return code

    def kill(self) -> None:
        """SIGKILL (if still running) and reap; idempotent."""
        if self._closed:
            return
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self.stdout.close()
        self.stderr.close()
        self._closed = True

    def diagnostics(self) -> str:
        return (
            f"--- {self.name} {self.argv} rc={self.popen.returncode}\n"
            f"stdout:\n{self.stdout.tail(10)}\nstderr:\n{self.stderr.tail(40)}"
        )


class CoordinatorProcess:
    """`python -m hivegrid.coordinator coordinator` on loopback, on a SQLite file.

    `start()` returns the address once the coordinator is ready: by default once it printed
    "hivegrid coordinator listening on ADDRESS" (after recovery), or, with `ready="health"`,
    once the gRPC health check says SERVING. The first start takes a free port; later starts
    (after `kill()`, a kill -9, or `stop()`) reuse the same port and store. Every generation's
    output is in LOG_DIR/coordinator-N.{stdout,stderr}.log; `diagnostics()` shows the last."""

    def __init__(
        self,
        directory: Path,
        *,
        store: str | None = None,
        log_dir: Path | None = None,
        heartbeat_s: float | None = None,
        session_timeout_s: float | None = None,
        args: Sequence[str] = (),
        address: str = "",
    ) -> None:
        self.directory = directory
        self.db_path = directory / "hivegrid.db"
        self.store = store or f"sqlite:///{self.db_path}"
        self.log_dir = log_dir or directory / "logs"
        self.heartbeat_s = heartbeat_s
        self.session_timeout_s = session_timeout_s
        self.args = list(args)
        self.address = address
        self.proc: Process | None = None
        self.generation = 0
        self.history: list[Process] = []
        # Wall-clock times of the last start: before the process was spawned, and when it was
        # seen ready (a restart's cost, for whoever measures it).
        self.spawned_at = 0.0
        self.ready_at = 0.0

    def argv(self, listen: str) -> list[str]:
        argv = [sys.executable, "-m", "hivegrid.coordinator", "coordinator"]
        argv += ["--listen", listen, "--store", self.store]
        if self.heartbeat_s is not None:
            argv += ["--heartbeat-interval", str(self.heartbeat_s)]
        if self.session_timeout_s is not None:
            argv += ["--session-timeout", str(self.session_timeout_s)]
        return argv + self.args

    def start(self, *, ready: str = "line", timeout: float = START_TIMEOUT_S) -> str:
        if self.proc is not None and self.proc.alive():
            raise RuntimeError(f"the coordinator is already running at {self.address}")
        if ready not in ("line", "health"):
            raise ValueError(f"ready must be 'line' or 'health', not {ready!r}")
        if ready == "health" and not self.address:
            raise ValueError("ready='health' needs a fixed address (pass address=...)")
        self.generation += 1
        self.spawned_at = time.time()
        proc = Process(
            f"coordinator-{self.generation}", self.argv(self.address or "127.0.0.1:0"), self.log_dir
        )
        self.proc = proc
        self.history.append(proc)
        try:
            if ready == "line":
                (match,) = proc.stdout.wait_for(LISTENING, timeout=timeout)[:1]
                self.address = match.group(1)
            else:
                self.wait_serving(timeout)
        except AssertionError as exc:
            raise AssertionError(
                f"the coordinator did not start: {exc}\n{proc.diagnostics()}"
            ) from None
        self.ready_at = time.time()
        return self.address

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> None:
        """Waits until the health of the whole server is SERVING (it is NOT_SERVING while the
        log replays), by watching it: the watch waits for the port to open, and wakes when the
        status changes."""
        request = health_pb2.HealthCheckRequest(service="")
        last: object = None
        with grpc.insecure_channel(self.address) as channel:
            call = health_pb2_grpc.HealthStub(channel).Watch(
                request, timeout=timeout, wait_for_ready=True
            )
            try:
                for resp in call:
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError as exc:
                last = exc.code()
            finally:
                call.cancel()
        raise AssertionError(
            f"the coordinator at {self.address} was not SERVING within {timeout} s (last: {last})"
        )

    def kill(self) -> None:
        """SIGKILL: no goodbye, nothing flushed that was not already durable."""
        if self.proc is not None:
            self.proc.kill()

    def stop(self, timeout: float = WAIT) -> int | None:
        """SIGTERM to every generation still running; returns the exit code of the last one
        (None if it never started)."""
        code = None
        for proc in self.history:
            code = proc.stop(timeout)
        return code

    def diagnostics(self) -> str:
        return self.proc.diagnostics() if self.proc is not None else "(the coordinator never ran)"


def sdk_command(sdk: str) -> list[str]:
    """The conformance worker program of an SDK; LookupError (saying how to build it) when it is
    missing."""
    if sdk == "python":
        if not (REPO / "worker" / "conformance.py").is_file():
            raise LookupError("the Python conformance worker worker/conformance.py is missing")
        return [sys.executable, "-m", "hivegrid.worker.conformance"]
    if sdk == "go":
        binary = REPO / "sdks" / "go" / "bin" / "conformance-worker"
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise LookupError(
                f"the Go conformance worker {binary} is missing: build it with "
                "`make -C sdks/go build`"
            )
        return [str(binary)]
    if sdk == "typescript":
        script = REPO / "sdks" / "typescript" / "dist" / "conformance.js"
        if not script.is_file():
            raise LookupError(
                f"the TypeScript conformance worker {script} is missing: build it with "
                "`npm --prefix sdks/typescript run build`"
            )
        if shutil.which("node") is None:
            raise LookupError("`node` is not on PATH: install Node.js 20+ to run the TS worker")
        return ["node", str(script)]
    raise LookupError(f"unknown SDK {sdk!r}: choose from {', '.join(SDKS)}")


class WorkerProcess(Process):
    """An SDK's conformance worker, connected to `address`. `slots=None` passes no --slots
    (the worker's default)."""

    def __init__(
        self, sdk: str, address: str, log_dir: Path, *, name: str, slots: int | None = 4
    ) -> None:
        self.sdk = sdk
        self.worker_name = name
        self.slots = slots
        argv = [*sdk_command(sdk), "--coordinator", address]
        if slots is not None:
            argv += ["--slots", str(slots)]
        super().__init__(name, [*argv, "--name", name], log_dir)

    def wait_connected(self, count: int = 1, timeout: float = START_TIMEOUT_S) -> str:
        """Waits for the `count`-th 'connected: session ID' line; returns that session id."""
        pattern = re.compile(
            rf"hivegrid worker {re.escape(self.worker_name)} connected: session (\S+)"
        )
        try:
            return self.stderr.wait_for(pattern, count=count, timeout=timeout)[count - 1].group(1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnostics()}") from None
