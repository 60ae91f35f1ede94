"""Processes and clients for the worker conformance suite (/work/shared/design/CONFORMANCE.md).

Everything here is language-neutral: the coordinator and the conformance workers run as
subprocesses, the suite speaks to the coordinator over gRPC only (RunService, plus a raw
WorkerService client for the fencing checks), and observes what happened through the run's
event log (`WatchRun`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import json_format

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc, worker_pb2_grpc
from hivegrid.v1 import worker_pb2 as wpb

REPO = Path(__file__).resolve().parents[2]

SDKS = ("python", "go", "typescript")
DEFAULT_SDKS = "python,go,typescript"
SDK_ENV = "HIVEGRID_SDKS"

# Timing the suite gives the coordinator: quick heartbeats so that lost workers show quickly.
HEARTBEAT_S = 0.2
SESSION_TIMEOUT_S = 1.5
START_TIMEOUT_S = 30.0

LISTENING = re.compile(r"hivegrid coordinator listening on (\S+)")
CONNECTED = re.compile(r"hivegrid worker (\S+) connected: session (\S+)")


# --- values -----------------------------------------------------------------------------


def to_json(value: Any) -> bytes:
    """JSON value -> the bytes of a proto field (None -> empty, which means null)."""
    if value is None:
        return b""
    return json.dumps(value, separators=(",", ":")).encode()


def from_json(data: bytes) -> Any:
    return json.loads(data) if data else None


def state_name(value: int) -> str:
    return gpb.NodeState.Name(gpb.NodeState.ValueType(value)).removeprefix("NODE_STATE_")


def run_state_name(value: int) -> str:
    return gpb.RunState.Name(gpb.RunState.ValueType(value)).removeprefix("RUN_STATE_")


def outcome_name(value: int) -> str:
    return wpb.Outcome.Name(wpb.Outcome.ValueType(value)).removeprefix("OUTCOME_")


def spec(node: Mapping[str, Any] | gpb.NodeSpec) -> gpb.NodeSpec:
    """A node described as a dict (plain JSON `input`, `depends_on` or `deps`) -> NodeSpec."""
    if isinstance(node, gpb.NodeSpec):
        return node
    fields = dict(node)
    value = fields.pop("input", None)
    deps = list(fields.pop("depends_on", ())) + list(fields.pop("deps", ()))
    retry = fields.pop("retry", None)
    out = gpb.NodeSpec(input=to_json(value), depends_on=deps, **fields)
    if retry is not None:
        out.retry.CopyFrom(gpb.RetryPolicy(**retry))
    return out


def _b64_json(value: Any) -> str:
    return base64.b64encode(to_json(value)).decode()


def mutation(m: Mapping[str, Any] | gpb.Mutation) -> gpb.Mutation:
    """The JSON form of docs/protocol.md ("Mutations", plain JSON inputs) -> Mutation."""
    if isinstance(m, gpb.Mutation):
        return m
    data = json.loads(json.dumps(m))
    (kind, body), *rest = data.items()
    if rest:
        raise ValueError(f"a mutation has exactly one key, got {sorted(data)}")

    def fix_spec(s: dict[str, Any]) -> None:
        if "input" in s:
            s["input"] = _b64_json(s["input"])

    if kind in ("add_node", "inject_before") and "node" in body:
        fix_spec(body["node"])
    if kind == "split_node":
        for s in body.get("replacements", ()):
            fix_spec(s)
    if kind == "modify_node" and "input" in body:
        body["input"] = _b64_json(body["input"])
    return json_format.ParseDict({kind: body}, gpb.Mutation())


# --- the event log ----------------------------------------------------------------------


class Log:
    """A run's events, with the questions the tests ask of them."""

    def __init__(self, events: Sequence[rpb.RunEvent]) -> None:
        self.events = list(events)

    def __len__(self) -> int:
        return len(self.events)

    def of(self, kind: str, node_id: str | None = None) -> list[rpb.RunEvent]:
        out = []
        for e in self.events:
            if e.WhichOneof("kind") != kind:
                continue
            if node_id is not None and getattr(e, kind).node_id != node_id:
                continue
            out.append(e)
        return out

    def dispatched(self, node_id: str | None = None) -> list[rpb.RunEvent]:
        return self.of("node_dispatched", node_id)

    def finished(self, node_id: str | None = None) -> list[rpb.RunEvent]:
        return self.of("attempt_finished", node_id)

    def lost(self, node_id: str | None = None) -> list[rpb.RunEvent]:
        return self.of("attempt_lost", node_id)

    def timed_out(self, node_id: str | None = None) -> list[rpb.RunEvent]:
        return self.of("attempt_timed_out", node_id)

    def progress(self, node_id: str | None = None) -> list[rpb.RunEvent]:
        return self.of("progress", node_id)

    def first(self, kind: str, node_id: str | None = None) -> rpb.RunEvent:
        found = self.of(kind, node_id)
        assert found, f"no {kind} event{f' for {node_id!r}' if node_id else ''} in the log"
        return found[0]

    def last(self, kind: str, node_id: str | None = None) -> rpb.RunEvent:
        found = self.of(kind, node_id)
        assert found, f"no {kind} event{f' for {node_id!r}' if node_id else ''} in the log"
        return found[-1]

    def end_state(self) -> str:
        ended = self.of("run_ended")
        assert ended, "the log has no RunEnded event"
        return run_state_name(ended[-1].run_ended.state)

    def successes(self) -> Counter[str]:
        """Accepted successful answers per node."""
        return Counter(
            e.attempt_finished.node_id
            for e in self.finished()
            if e.attempt_finished.outcome == wpb.OUTCOME_SUCCEEDED
            and not e.attempt_finished.rejection
        )

    def final_states(self) -> dict[str, str]:
        """Each node's last state according to the events' transitions."""
        out: dict[str, str] = {}
        for e in self.events:
            for t in e.transitions:
                out[t.node_id] = state_name(t.state)
        return out

    def sessions(self) -> dict[str, set[str]]:
        """Node id -> the sessions it was dispatched to."""
        out: dict[str, set[str]] = defaultdict(set)
        for e in self.dispatched():
            out[e.node_dispatched.node_id].add(e.node_dispatched.session_id)
        return out

    def check_gapless(self) -> None:
        seqs = [e.seq for e in self.events]
        assert seqs == list(range(1, len(seqs) + 1)), f"the log's seqs are not 1..n: {seqs[:20]}"

    def max_in_flight_per_session(self) -> dict[str, int]:
        """Replays the log: + at dispatch, - at the attempt's answer, loss or timeout."""
        holder: dict[tuple[str, int], str] = {}
        current: Counter[str] = Counter()
        peak: Counter[str] = Counter()
        for e in self.events:
            kind = e.WhichOneof("kind")
            if kind == "node_dispatched":
                d = e.node_dispatched
                holder[(d.node_id, d.attempt)] = d.session_id
                current[d.session_id] += 1
                peak[d.session_id] = max(peak[d.session_id], current[d.session_id])
            elif kind in ("attempt_finished", "attempt_lost"):
                body = getattr(e, kind)
                session = holder.pop((body.node_id, body.attempt), None)
                if session is not None:
                    current[session] -= 1
        return dict(peak)

    def describe(self, limit: int = 60) -> str:
        lines = []
        for e in self.events[-limit:]:
            kind = e.WhichOneof("kind") or "?"
            body = getattr(e, kind) if kind != "?" else None
            text = json_format.MessageToJson(body, indent=None) if body is not None else ""
            trans = ",".join(f"{t.node_id}->{state_name(t.state)}" for t in e.transitions)
            lines.append(f"  #{e.seq} {e.time:.3f} {kind} {text[:200]} [{trans[:200]}]")
        return "\n".join(lines)


# --- subprocesses -----------------------------------------------------------------------


class _Lines:
    """Reads a pipe line by line on a thread; waiters wake on each line (no polling)."""

    def __init__(self, pipe: IO[bytes], copy_to: Path) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._pipe = pipe
        self._copy = copy_to.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._pump, daemon=True)
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
    """A child process whose stdout and stderr are read by threads and copied to log files."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.pop("HIVEGRID_COORDINATOR", None)
        self.popen = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.stdout = _Lines(self.popen.stdout, log_dir / f"{name}.stdout.log")
        self.stderr = _Lines(self.popen.stderr, log_dir / f"{name}.stderr.log")
        self._closed = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) did not exit within {timeout} s; stderr:\n"
                f"{self.stderr.tail()}"
            ) from None

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
    """`python -m hivegrid.coordinator coordinator` on loopback; restartable on port and store."""

    def __init__(self, log_dir: Path, store: str) -> None:
        self.log_dir = log_dir
        self.store = store
        self.address = ""
        self.proc: Process | None = None
        self.generation = 0
        self.history: list[Process] = []

    def start(self) -> str:
        listen = self.address or "127.0.0.1:0"
        self.generation += 1
        proc = Process(
            f"coordinator-{self.generation}",
            [
                sys.executable,
                "-m",
                "hivegrid.coordinator",
                "coordinator",
                "--listen",
                listen,
                "--store",
                self.store,
                "--heartbeat-interval",
                str(HEARTBEAT_S),
                "--session-timeout",
                str(SESSION_TIMEOUT_S),
            ],
            self.log_dir,
        )
        self.proc = proc
        self.history.append(proc)
        try:
            (match,) = proc.stdout.wait_for(LISTENING, timeout=START_TIMEOUT_S)[:1]
        except AssertionError as exc:
            raise AssertionError(
                f"the coordinator did not start: {exc}\n{proc.diagnostics()}"
            ) from None
        self.address = match.group(1)
        return self.address

    def kill(self) -> None:
        """SIGKILL: no goodbye, nothing flushed that was not already durable."""
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        for proc in self.history:
            if proc.alive():
                proc.signal(signal.SIGTERM)
                with contextlib.suppress(AssertionError):
                    proc.wait(5)
            proc.kill()


def sdk_command(sdk: str) -> list[str]:
    """The conformance worker program of an SDK; fails (not skips) when it is not built."""
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
    def __init__(self, sdk: str, address: str, log_dir: Path, *, name: str, slots: int = 4) -> None:
        self.sdk = sdk
        self.worker_name = name
        self.slots = slots
        argv = [*sdk_command(sdk), "--coordinator", address, "--slots", str(slots)]
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


# --- the client -------------------------------------------------------------------------


class Client:
    """RunService over one channel; synchronous, every call bounded by a deadline."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address)
        self.stub = run_pb2_grpc.RunServiceStub(self.channel)
        # The latest log seen of each run, for failure reports.
        self.logs: dict[str, Log] = {}

    def close(self) -> None:
        self.channel.close()

    def submit(
        self,
        nodes: Iterable[Mapping[str, Any] | gpb.NodeSpec],
        *,
        max_spawn_depth: int = 0,
        max_nodes: int = 0,
        name: str = "",
        run_id: str = "",
    ) -> str:
        req = rpb.SubmitRunRequest(
            nodes=[spec(n) for n in nodes],
            limits=gpb.RunLimits(max_nodes=max_nodes, max_spawn_depth=max_spawn_depth),
            name=name,
            run_id=run_id,
        )
        resp: rpb.SubmitRunResponse = self.stub.SubmitRun(req, timeout=30, wait_for_ready=True)
        return resp.run_id

    def get_run(self, run_id: str, *, omit_results: bool = False) -> rpb.GetRunResponse:
        """The run with all its nodes (every page)."""
        whole = rpb.GetRunResponse()
        token = ""
        while True:
            req = rpb.GetRunRequest(
                run_id=run_id, omit_results=omit_results, page_size=10_000, page_token=token
            )
            page: rpb.GetRunResponse = self.stub.GetRun(req, timeout=30, wait_for_ready=True)
            whole.run.CopyFrom(page.run)
            whole.nodes.extend(page.nodes)
            token = page.next_page_token
            if not token:
                return whole

    def nodes(self, run_id: str) -> dict[str, rpb.NodeStatus]:
        return {n.id: n for n in self.get_run(run_id).nodes}

    def results(self, run_id: str) -> dict[str, Any]:
        return {n.id: from_json(n.result) for n in self.get_run(run_id).nodes}

    def cancel(self, run_id: str, reason: str = "conformance") -> rpb.CancelRunResponse:
        req = rpb.CancelRunRequest(run_id=run_id, reason=reason)
        resp: rpb.CancelRunResponse = self.stub.CancelRun(req, timeout=30)
        return resp

    def mutate(self, run_id: str, mutations: Iterable[Mapping[str, Any] | gpb.Mutation]) -> int:
        req = rpb.MutateRunRequest(run_id=run_id, mutations=[mutation(m) for m in mutations])
        resp: rpb.MutateRunResponse = self.stub.MutateRun(req, timeout=30)
        return resp.seq

    def list_workers(self) -> list[rpb.WorkerInfo]:
        return list(
            self.stub.ListWorkers(rpb.ListWorkersRequest(), timeout=30, wait_for_ready=True).workers
        )

    def drain_worker(self, worker: str) -> int:
        req = rpb.DrainWorkerRequest(worker=worker)
        resp: rpb.DrainWorkerResponse = self.stub.DrainWorker(req, timeout=30)
        return resp.drained

    def wait_for_workers(
        self, n: int, *, timeout: float = START_TIMEOUT_S, names: Iterable[str] = ()
    ) -> list[rpb.WorkerInfo]:
        """Polls ListWorkers (there is no watch for workers) with a short backoff."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            workers = [w for w in self.list_workers() if not w.draining]
            if len(workers) >= n and wanted <= {w.worker_name for w in workers}:
                return workers
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"waited {timeout} s for {n} worker(s) {sorted(wanted)}; connected: "
                    f"{[(w.worker_name, w.session_id) for w in workers]}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def watch(
        self, run_id: str, *, from_seq: int = 1, timeout: float = 60.0
    ) -> Iterator[rpb.RunEvent]:
        """Events from `from_seq` until the run ends; survives a coordinator restart by
        resuming from the last seq + 1. Raises AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        next_seq = from_seq
        delay = 0.05
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"run {run_id} did not end within {timeout} s (saw up to seq {next_seq - 1})"
                )
            req = rpb.WatchRunRequest(run_id=run_id, from_seq=next_seq)
            call = self.stub.WatchRun(req, timeout=left, wait_for_ready=True)
            try:
                for resp in call:
                    for event in resp.events:
                        if event.seq < next_seq:
                            continue
                        next_seq = event.seq + 1
                        yield event
                        if event.WhichOneof("kind") == "run_ended":
                            call.cancel()
                            return
                return  # the stream ended without RunEnded (e.g. follow ended): done anyway
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise AssertionError(
                        f"run {run_id} did not end within {timeout} s "
                        f"(saw up to seq {next_seq - 1})"
                    ) from None
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
                time.sleep(delay)  # the coordinator went away: resume once it is back
                delay = min(delay * 2, 0.5)
            finally:
                call.cancel()

    def wait_until_done(self, run_id: str, timeout: float = 60.0) -> Log:
        """The whole log of the run, once it has ended (WatchRun until RunEnded)."""
        seen: list[rpb.RunEvent] = []
        self.logs[run_id] = Log(seen)
        for event in self.watch(run_id, timeout=timeout):
            seen.append(event)
        log = self.logs[run_id] = Log(seen)
        assert log.of("run_ended"), f"the watch of {run_id} ended without RunEnded"
        return log

    def events(self, run_id: str, timeout: float = 30.0) -> Log:
        """The log of an ended run (WatchRun from seq 1 returns it all and ends)."""
        log = self.logs[run_id] = Log(list(self.watch(run_id, timeout=timeout)))
        return log

    def wait_for_event(
        self,
        run_id: str,
        predicate: Callable[[Log], bool],
        *,
        timeout: float = 30.0,
        what: str = "the condition",
    ) -> Log:
        """Watches the run live until `predicate(log so far)` holds; returns the log so far."""
        seen: list[rpb.RunEvent] = []
        self.logs[run_id] = Log(seen)
        try:
            for event in self.watch(run_id, timeout=timeout):
                seen.append(event)
                if predicate(Log(seen)):
                    return Log(seen)
        except AssertionError as exc:
            raise AssertionError(f"waiting for {what}: {exc}\n{Log(seen).describe()}") from None
        raise AssertionError(f"the run ended before {what}:\n{Log(seen).describe()}")


# --- a raw worker-protocol client -------------------------------------------------------


class RawWorker:
    """Speaks WorkerService/Connect by hand (sync gRPC), so a test controls every message."""

    def __init__(
        self,
        address: str,
        *,
        agents: Sequence[str] = ("echo",),
        slots: int = 1,
        name: str = "raw-worker",
        held: Sequence[wpb.AssignmentRef] = (),
    ) -> None:
        self.channel = grpc.insecure_channel(address)
        self.hello = wpb.Hello(
            worker_name=name,
            language="python",
            sdk_version="0.0.0-test",
            protocol_version=2,
            agents=list(agents),
            slots=slots,
            held=list(held),
        )
        self._out: queue.Queue[wpb.ConnectRequest | None] = queue.Queue()
        self.welcome: queue.Queue[wpb.Welcome | wpb.Refusal] = queue.Queue()
        self.assignments: queue.Queue[wpb.Assignment] = queue.Queue()
        self.acks: queue.Queue[wpb.Ack] = queue.Queue()
        self.cancels: queue.Queue[wpb.Cancel] = queue.Queue()
        self.ended = threading.Event()
        self.status: grpc.StatusCode | None = None
        self._call: Any = None
        self._thread: threading.Thread | None = None

    def connect(self, timeout: float = 10.0) -> wpb.Welcome:
        def requests() -> Iterator[wpb.ConnectRequest]:
            yield wpb.ConnectRequest(hello=self.hello)
            while True:
                msg = self._out.get()
                if msg is None:
                    return
                yield msg

        stub = worker_pb2_grpc.WorkerServiceStub(self.channel)
        self._call = stub.Connect(requests(), wait_for_ready=True)

        def pump() -> None:
            try:
                for msg in self._call:
                    kind = msg.WhichOneof("msg")
                    if kind == "welcome":
                        self.welcome.put(msg.welcome)
                    elif kind == "refusal":
                        self.welcome.put(msg.refusal)
                    elif kind == "push":
                        for ack in msg.push.acks:
                            self.acks.put(ack)
                        for c in msg.push.cancels:
                            self.cancels.put(c)
                        for a in msg.push.assignments:
                            self.assignments.put(a)
                    elif kind == "heartbeat":
                        self.send(wpb.ConnectRequest(heartbeat=wpb.Heartbeat()))
            except grpc.RpcError as exc:
                self.status = exc.code()
            finally:
                self.ended.set()

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()
        got = self.welcome.get(timeout=timeout)
        assert isinstance(got, wpb.Welcome), f"the coordinator refused the raw worker: {got}"
        return got

    def send(self, msg: wpb.ConnectRequest) -> None:
        self._out.put(msg)

    def answer(self, ref: wpb.AssignmentRef, value: Any) -> None:
        res = wpb.Result(ref=ref, outcome=wpb.OUTCOME_SUCCEEDED, result=to_json(value))
        self.send(wpb.ConnectRequest(results=wpb.Results(items=[res])))

    def take(self, timeout: float = 10.0) -> wpb.Assignment:
        return self.assignments.get(timeout=timeout)

    def ack(self, timeout: float = 10.0) -> wpb.Ack:
        return self.acks.get(timeout=timeout)

    def drop(self) -> None:
        """Breaks the stream without a goodbye, like a killed process."""
        if self._call is not None:
            self._call.cancel()
        if self._thread is not None:
            self.ended.wait(10)
        self._out.put(None)
        self.channel.close()

    def close(self) -> None:
        self._out.put(None)
        if self._thread is not None:
            self.ended.wait(5)
        if self._call is not None:
            self._call.cancel()
        self.channel.close()
