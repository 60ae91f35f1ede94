"""Reading runs over RunService, synchronously, for the tiers that run the coordinator as a
process: `RunClient`, whose watches survive coordinator restarts (they resume from the last
sequence number seen), and `Log`, the questions tests ask of a run's event log."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import json_format

from hivegrid.client import Client, Node, Run, RunState, Worker
from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc
from hivegrid.v1 import worker_pb2 as wpb

from .names import run_state_name, state_name
from .wait import wait_until

START_TIMEOUT_S = 30.0


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


class RunClient:
    """What the process tiers ask of a coordinator, synchronously.

    A user's calls go through `hivegrid.client.Client` (submit, read a run, cancel, mutate, list
    and drain workers), so these tiers drive the coordinator as an application does and get
    its types (Run, Node, Worker). Two reads use RunService directly, for what the client does
    not show: the event log as the coordinator sent it (`Log`: leases, which watchers must never
    see, and mutations and transitions as they are on the wire), watched with a deadline and
    resumed across restarts; and `node_errors`, for an error's `retryable` flag."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client = Client(address, timeout=30)
        self.channel = grpc.insecure_channel(address)
        self.stub = run_pb2_grpc.RunServiceStub(self.channel)
        # The latest log seen of each run, for failure reports.
        self.logs: dict[str, Log] = {}

    def close(self) -> None:
        self.client.close()
        self.channel.close()

    def submit(
        self,
        nodes: Iterable[Mapping[str, Any]],
        *,
        max_spawn_depth: int = 0,
        max_nodes: int = 0,
        name: str = "",
    ) -> str:
        """Nodes as graph-file dicts (plain JSON `input`; `deps` or `depends_on`)."""
        graph: dict[str, Any] = {"nodes": [_graph_node(n) for n in nodes]}
        limits = {
            k: v for k, v in (("max_nodes", max_nodes), ("max_spawn_depth", max_spawn_depth)) if v
        }
        if limits:
            graph["limits"] = limits
        if name:
            graph["name"] = name
        return self.client.submit(graph)

    def get_run(self, run_id: str, *, results: bool = True) -> Run:
        """The run with all its nodes."""
        return self.client.get_run(run_id, results=results)

    def nodes(self, run_id: str) -> dict[str, Node]:
        return {n.id: n for n in self.get_run(run_id).nodes}

    def results(self, run_id: str) -> dict[str, Any]:
        """Every node's result (None where it has none)."""
        return {n.id: n.result for n in self.get_run(run_id).nodes}

    def node_errors(self, run_id: str) -> dict[str, gpb.NodeError]:
        """The nodes' errors as GetRun reports them, `retryable` included (the client's Node
        has the message and the kind). For the small runs that ask: one page."""
        page: rpb.GetRunResponse = self.stub.GetRun(
            rpb.GetRunRequest(run_id=run_id, omit_results=True, page_size=10_000), timeout=30
        )
        assert not page.next_page_token, f"run {run_id} has more nodes than node_errors reads"
        return {n.id: n.error for n in page.nodes}

    def cancel(self, run_id: str, reason: str = "conformance") -> RunState:
        return self.client.cancel(run_id, reason)

    def mutate(self, run_id: str, mutations: Iterable[Mapping[str, Any]]) -> int:
        """Mutations in the SDKs' JSON form (docs/protocol.md, "Mutations")."""
        return self.client.mutate(run_id, mutations)

    def list_workers(self) -> list[Worker]:
        return self.client.list_workers()

    def drain_worker(self, worker: str) -> int:
        return self.client.drain(worker)

    def wait_for_workers(
        self, n: int, *, timeout: float = START_TIMEOUT_S, names: Iterable[str] = ()
    ) -> list[Worker]:
        """Waits until `n` workers (not draining; among them every one of `names`) are
        connected. ListWorkers has no watch: this polls it with a short backoff."""
        wanted = set(names)
        seen: list[Worker] = []

        def connected() -> list[Worker]:
            seen[:] = [w for w in self.list_workers() if not w.draining]
            ok = len(seen) >= n and wanted <= {w.name for w in seen}
            return list(seen) if ok else []

        return wait_until(
            connected,
            timeout=timeout,
            what=f"{n} worker(s) {sorted(wanted)}",
            describe=lambda: f"connected: {[(w.name, w.session_id) for w in seen]}",
        )

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


def _graph_node(node: Mapping[str, Any]) -> dict[str, Any]:
    """A test's node dict as a graph file has it: `deps` (the tests' shorthand) joins
    `depends_on`."""
    out = dict(node)
    deps = list(out.pop("depends_on", ())) + list(out.pop("deps", ()))
    if deps:
        out["depends_on"] = deps
    return out
