"""Carries out a drawn program against a real coordinator (SQLite store, gRPC on loopback, raw
protocol workers), checking as it goes:

- `validate()` on the live core after every operation;
- every answer is the documented one: the status code of a refused client call, the ack of
  every result (predicted from the core's state before it was sent: the fencing rules of
  docs/protocol.md), the refs a reconnecting worker keeps (`Welcome.held`);
- a refused request changes nothing;
- running attempts the coordinator cancels (CancelRun, a prune) are told to their worker;
- at every crash (`kill`: `abandon()`, then a new coordinator on the same store) and at the
  end (a kill, then a clean stop): the coordinator restarts, the restarted state equals the
  live one (a RUNNING node is READY after a restart), `validate()` holds on both, the log the
  watchers read is the same with one attempt_lost per attempt that was running, and no node
  ever succeeded twice.

It waits on events, never on time: the acks of what it sent, the assignments the core says it
handed out (`settle`), the close of a session. The only sleeps wait out retry backoffs of a
millisecond, whose deadline the core names.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from hypothesis import event, note
from hypothesis.control import currently_in_test_context

from hivegrid.coordinator.core import NodeState, RunState, validate
from hivegrid.coordinator.limits import build_limits
from hivegrid.coordinator.server import Coordinator
from hivegrid.coordinator.store import StoreError
from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb

from ..service.harness import Client, RawWorker
from . import ops as O

# Small limits, so that a short program reaches them.
LIMITS = build_limits(
    {
        "max_nodes_per_run": 12,
        "max_id_bytes": 40,
        "max_name_bytes": 64,
        "max_mutations": 6,
        "max_result_bytes": 256,
        "max_error_bytes": 200,
        "max_progress_bytes": 32,
        "retain_runs": 1,
        "retain_s": 0,
    }
)
WAIT = 10.0
Code = grpc.StatusCode
COMMITTED = wpb.ACK_STATUS_COMMITTED
STALE = wpb.ACK_STATUS_STALE
REJECTED = wpb.ACK_STATUS_MUTATIONS_REJECTED
INVALID = wpb.ACK_STATUS_INVALID
REFUSED = wpb.ACK_STATUS_REFUSED
OUTCOMES = (wpb.OUTCOME_SUCCEEDED, wpb.OUTCOME_FAILED, wpb.OUTCOME_CANCELLED)
UNKNOWN_KIND = b"\xfa\x06\x02\x08\x01"  # a Mutation kind from a newer SDK
REJECTED_PREFIX = "mutations rejected: "


def ack_name(status: int) -> str:
    return wpb.AckStatus.Name(status).removeprefix("ACK_STATUS_")  # type: ignore[arg-type]


def key(ref: wpb.AssignmentRef) -> tuple[str, str, int, int]:
    return (ref.run_id, ref.node_id, ref.attempt, ref.lease)


def short(ref: wpb.AssignmentRef) -> str:
    return f"{ref.run_id[-4:]}/{ref.node_id}#{ref.attempt}"


# --- canonical state ----------------------------------------------------------------------


def canonical(core: Any, *, restarted_view: bool = False) -> dict[str, Any]:
    """Runs and nodes as a comparable value; leases and sessions left out. With
    `restarted_view`, a RUNNING node is shown READY, as a restart leaves it."""
    out: dict[str, Any] = {}
    for run_id, run in core.runs.items():
        nodes = []
        for n in run.nodes.values():
            state = n.state
            if restarted_view and state is NodeState.RUNNING:
                state = NodeState.READY
            spec = n.spec
            err = n.error
            nodes.append(
                (
                    n.id,
                    spec.agent,
                    state.name,
                    n.attempt,
                    n.failures,
                    n.result,
                    None if err is None else (err.message, err.kind, err.retryable),
                    tuple(n.deps),
                    n.parent_id,
                    n.depth,
                    n.open,
                    n.answered,
                    (
                        spec.input,
                        spec.retry,
                        spec.timeout_s,
                        spec.priority,
                        spec.labels,
                        spec.can_mutate,
                        tuple(sorted(spec.metadata.items())),
                        spec.run_on_failure,
                    ),
                )
            )
        out[run_id] = (
            (
                run.state.name,
                run.name,
                run.request_id,
                run.cancelled,
                run.failed,
                (run.limits.max_nodes, run.limits.max_spawn_depth),
                bool(run.ended_at),
            ),
            tuple(nodes),
        )
    return out


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    lines = []
    if list(expected) != list(actual):
        lines.append(f"runs: expected {list(expected)}, got {list(actual)}")
    for run_id in expected:
        if run_id not in actual:
            continue
        (e_run, e_nodes), (a_run, a_nodes) = expected[run_id], actual[run_id]
        if e_run != a_run:
            lines.append(f"run {run_id}: expected {e_run}, got {a_run}")
        e_ids, a_ids = [n[0] for n in e_nodes], [n[0] for n in a_nodes]
        if e_ids != a_ids:
            lines.append(f"run {run_id} nodes: expected {e_ids}, got {a_ids}")
        a_by_id = {n[0]: n for n in a_nodes}
        for e in e_nodes:
            a = a_by_id.get(e[0])
            if a is not None and a != e:
                lines.append(f"run {run_id} node {e[0]}:\n  expected {e}\n  got      {a}")
    return "\n".join(lines)


# --- the oracle of acks ---------------------------------------------------------------------


def door_problem(batch: Sequence[gpb.Mutation]) -> str:
    """Why the coordinator refuses a batch before looking at the graph: "limit" (a limit at the
    door), "kind" (a mutation it cannot read), or ""."""
    count = 0
    limit = LIMITS.max_id_bytes
    unreadable = False
    for m in batch:
        kind = m.WhichOneof("kind")
        count += 1
        specs: list[gpb.NodeSpec] = []
        if kind is None:
            unreadable = True
        elif kind == "add_node":
            specs = [m.add_node.node]
        elif kind == "split_node":
            count += len(m.split_node.replacements)
            specs = list(m.split_node.replacements)
        elif kind == "inject_before":
            specs = [m.inject_before.node]
        for s in specs:
            if any(len(x.encode()) > limit for x in (s.id, s.agent, *s.depends_on)):
                return "limit"
    if count > LIMITS.max_mutations:
        return "limit"
    return "kind" if unreadable else ""


def forged_rejection(res: wpb.Result) -> bool:
    """A FAILED answer whose error reads as a logged rejection (the core takes it for one)."""
    return (
        res.outcome == wpb.OUTCOME_FAILED
        and res.HasField("error")
        and res.error.kind[:64] == "mutation_rejected"
        and res.error.message.startswith(REJECTED_PREFIX)
    )


def predict_ack(core: Any, res: wpb.Result, session_id: str) -> set[int]:
    """The acks docs/protocol.md allows for `res` from `session_id`, given the core's state."""
    ref = res.ref
    if not ref.run_id or not ref.lease or res.outcome not in OUTCOMES:
        return {INVALID}
    if len(ref.run_id) > LIMITS.max_id_bytes or len(ref.node_id) > LIMITS.max_id_bytes:
        return {STALE}
    ok = res.outcome == wpb.OUTCOME_SUCCEEDED
    refused = ok and len(res.result) > LIMITS.max_result_bytes
    door = bool(ok and not refused and res.mutations and door_problem(res.mutations))
    run = core.runs.get(ref.run_id)
    node = run.nodes.get(ref.node_id) if run is not None else None
    if node is None or node.lease != ref.lease or node.attempt != ref.attempt:
        return {STALE}
    if not node.open:  # answered already (the same ack again), or ended by the coordinator
        if not node.answered:
            return {STALE}
        if node.answered == REJECTED:
            return {REJECTED}
        return {REFUSED} if refused else {REJECTED} if door else {COMMITTED}
    if node.state is NodeState.RUNNING and node.session_id != session_id:
        return {STALE}
    if node.state is NodeState.CANCELLED:  # pruned: only the cancel's answer is taken
        cancelled = res.outcome == wpb.OUTCOME_CANCELLED and run.state is RunState.RUNNING
        return {COMMITTED} if cancelled else {STALE}
    if node.state not in (NodeState.RUNNING, NodeState.READY):
        return {STALE}
    if ok:
        if refused:
            return {REFUSED}
        if door:
            return {REJECTED}
        if res.mutations:
            return {COMMITTED, REJECTED} if node.spec.can_mutate else {REJECTED}
        return {COMMITTED}
    if forged_rejection(res):
        return {REJECTED}
    return {COMMITTED}


def predict_kept(core: Any, held: Sequence[wpb.AssignmentRef], slots: int) -> list[tuple]:
    """The refs of a Hello.held a new session keeps: attempts still current that no live
    session runs, in order, up to its slots."""
    kept: list[tuple] = []
    leases: set[int] = set()
    for ref in held:
        run = core.runs.get(ref.run_id)
        node = run.nodes.get(ref.node_id) if run is not None else None
        if node is None or node.lease != ref.lease or node.attempt != ref.attempt:
            continue
        if not node.open or len(kept) >= slots or ref.lease in leases:
            continue
        if node.state is NodeState.RUNNING:
            if node.session_id in core.sessions:
                continue
        elif node.state is not NodeState.READY:
            continue
        kept.append(key(ref))
        leases.add(ref.lease)
    return kept


# --- the driver -------------------------------------------------------------------------------


@dataclass
class Worker:
    index: int
    name: str
    agents: tuple[str, ...]
    slots: int
    raw: RawWorker | None = None
    session: str = ""
    # Leases it was given on this stream (assignments, and what the Welcome let it keep).
    known: set[int] = field(default_factory=set)
    # What it holds and has not answered, by lease: claimed again after a reconnect.
    held: dict[int, wpb.AssignmentRef] = field(default_factory=dict)


class Refusal(Exception):
    pass


class Driver:
    def __init__(self, url: str, workers: int, snapshot_every: int) -> None:
        self.url = url
        self.snapshot_every = snapshot_every
        self.workers = [Worker(i, *spec) for i, spec in enumerate(O.WORKERS[:workers])]
        self.c: Coordinator | None = None
        self.client: Client | None = None
        self.closed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # Every run ever created (deleted ones stay: they answer NOT_FOUND).
        self.runs: list[str] = []
        self.requests: list[str] = []
        self.refs: list[wpb.AssignmentRef] = []  # every ref ever handed out
        self.answers: list[tuple[wpb.Result, int]] = []  # what was answered, first ack
        self.ids = itertools.count(1)
        self.restarts = 0

    # --- plumbing ------------------------------------------------------------------------

    @property
    def core(self) -> Any:
        assert self.c is not None
        return self.c.runtime.core

    def log(self, text: str) -> None:
        """What happened, shown with a failing example (printed outside hypothesis)."""
        if currently_in_test_context():
            note(text)
        else:
            print(text)

    def event(self, text: str) -> None:
        """Counted in --hypothesis-show-statistics: what the programs reached."""
        if currently_in_test_context():
            event(text)

    def fresh(self, prefix: str = "m") -> str:
        return f"{prefix}{next(self.ids)}"

    async def start(self) -> None:
        c = Coordinator(
            store_url=self.url,
            limits=LIMITS,
            heartbeat_interval_s=30.0,
            session_timeout_s=120.0,
            snapshot_every=self.snapshot_every,
        )
        try:
            await c.start()
        except StoreError as exc:
            raise AssertionError(f"the coordinator does not restart: {exc}") from exc
        runtime = c.runtime
        original = runtime.close_session
        closed = self.closed

        def close_session(link: Any, reason: str) -> None:
            original(link, reason)
            closed[link.id].set()

        runtime.close_session = close_session  # type: ignore[method-assign]
        self.c = c
        self.client = Client(c.address)

    async def settle(self) -> None:
        """Waits until everything is committed, the retries due within a moment have been
        dispatched, and every worker holds what the core handed it."""
        assert self.c is not None
        runtime = self.c.runtime
        for _ in range(500):
            await runtime.durable()
            core = runtime.core
            deadline = core.next_deadline()
            now = time.time()
            if deadline is not None and deadline - now < 0.25:
                await asyncio.sleep(max(0.0, deadline - now) + 0.002)
                continue
            moved = False
            for w in self.workers:
                if w.raw is None:
                    continue
                session = core.sessions.get(w.session)
                assert session is not None, f"{w.name}: its session {w.session} is gone"
                missing = [lease for lease in session.in_flight if lease not in w.known]
                if missing:
                    try:
                        got = await w.raw.take(len(missing))
                    except TimeoutError as exc:
                        raise AssertionError(
                            f"{w.name} was never sent {len(missing)} assignments the core "
                            "says it holds"
                        ) from exc
                    for a in got:
                        w.known.add(a.ref.lease)
                        w.held[a.ref.lease] = a.ref
                        self.refs.append(a.ref)
                    moved = True
            if not moved:
                return
        raise AssertionError("the coordinator never settled")

    def check(self) -> None:
        validate(self.core)

    async def run(self, program: Sequence[Any]) -> None:
        await self.start()
        try:
            for w in self.workers:
                await self.connect(w, [])
            await self.settle()
            self.event(f"program of {len(program) // 10 * 10}-{len(program) // 10 * 10 + 9} ops")
            for step, op in enumerate(program):
                self.log(f"[{step}] {op}")
                running = self.running()
                await getattr(self, "op_" + type(op).__name__)(op)
                await self.settle()
                self.check()
                if not isinstance(op, O.Crash):
                    await self.check_cancels(running)
            self.log("[end] crash")
            await self.crash(("own",) * len(self.workers))
            self.log("[end] clean stop")
            await self.clean_restart()
        finally:
            await self.shutdown()

    def running(self) -> dict[tuple[str, str], tuple[int, str]]:
        """(run, node) -> (lease, session) of every RUNNING attempt."""
        return {
            (run_id, n.id): (n.lease, n.session_id)
            for run_id, run in self.core.runs.items()
            for n in run.nodes.values()
            if n.state is NodeState.RUNNING
        }

    async def check_cancels(self, before: dict[tuple[str, str], tuple[int, str]]) -> None:
        """Every attempt that was running and that the coordinator cancelled (run cancelled,
        subtree pruned) was told to the worker holding it, if that one is still connected."""
        sessions = {w.session: w for w in self.workers if w.raw is not None}
        expected: dict[str, set[int]] = defaultdict(set)
        for (run_id, node_id), (lease, session) in before.items():
            run = self.core.runs.get(run_id)
            node = run.nodes.get(node_id) if run is not None else None
            if (
                node is not None
                and node.state is NodeState.CANCELLED
                and node.lease == lease
                and session in sessions
            ):
                expected[session].add(lease)
        for session, leases in expected.items():
            w = sessions[session]
            assert w.raw is not None
            got: set[int] = set()
            while not leases <= got:
                try:
                    cancel = await asyncio.wait_for(w.raw.cancels.get(), WAIT)
                except TimeoutError as exc:
                    raise AssertionError(
                        f"{w.name} was never told of the cancel of {sorted(leases - got)}"
                    ) from exc
                assert cancel.reason in ("run_cancelled", "pruned"), cancel.reason
                got.add(cancel.ref.lease)
            self.event("a worker was told of a cancel")

    async def shutdown(self) -> None:
        for w in self.workers:
            if w.raw is not None:
                with contextlib.suppress(Exception):
                    await w.raw.close()
                w.raw = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.c is not None:
            with contextlib.suppress(Exception):
                await self.c.stop()
            self.c = None

    async def rpc(self, call: Any) -> Any:
        """Runs a client call; returns its response, or the Refusal naming its status code."""
        try:
            return await asyncio.wait_for(call, WAIT)
        except grpc.aio.AioRpcError as exc:
            return Refusal(exc.code(), exc.details())

    def run_id(self, k: int) -> str | None:
        return self.runs[k % len(self.runs)] if self.runs else None

    # --- client operations -----------------------------------------------------------------

    def graph(self, op: O.Submit) -> tuple[rpb.SubmitRunRequest, Code | None]:
        """The request for a drawn graph and the code it must fail with (None: it is valid)."""
        specs: list[gpb.NodeSpec] = []
        for i, n in enumerate(op.nodes):
            deps = list(dict.fromkeys(specs[d % i].id for d in n.deps)) if i else []
            spec = gpb.NodeSpec(
                id=f"a{i}",
                agent=O.AGENTS[n.agent],
                depends_on=deps,
                can_mutate=n.can_mutate,
                run_on_failure=n.run_on_failure,
                priority=n.priority,
                input=b'{"i": %d}' % i,
            )
            if n.retry == 1:
                spec.retry.CopyFrom(
                    gpb.RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)
                )
            elif n.retry == 2:
                spec.retry.CopyFrom(gpb.RetryPolicy(max_attempts=4, initial_backoff_s=1000.0))
            elif n.retry == 3:
                spec.retry.CopyFrom(
                    gpb.RetryPolicy(max_attempts=2, initial_backoff_s=0.001, jitter=0.5)
                )
            specs.append(spec)
        # Submitted without an id, a node is named n<position>: after every dependency is named.
        for i, n in enumerate(op.nodes):
            if n.empty_id and not any(specs[i].id in s.depends_on for s in specs):
                specs[i].id = ""
        req = rpb.SubmitRunRequest(name=f"run {next(self.ids)}")
        if op.limits:
            req.limits.max_spawn_depth = op.limits  # 1 to 3
            req.limits.max_nodes = min(len(specs) + 2 * op.limits, LIMITS.max_nodes_per_run)
        code: Code | None = None
        first, last = specs[0], specs[-1]
        defect = op.defect
        if defect == "cycle":
            if len(specs) == 1:
                first.depends_on.append(first.id or "n1")
            else:
                first.id = first.id or "a0"
                last.id = last.id or f"a{len(specs) - 1}"
                first.depends_on.append(last.id)
                if first.id not in last.depends_on:
                    last.depends_on.append(first.id)
            code = Code.INVALID_ARGUMENT
        elif defect == "duplicate_id":
            specs.append(gpb.NodeSpec(id=first.id or "n1", agent="echo"))
            code = Code.INVALID_ARGUMENT
        elif defect == "empty_id_collision":
            first.id = ""
            specs.append(gpb.NodeSpec(id="n1", agent="echo"))
            code = Code.INVALID_ARGUMENT
        elif defect == "unknown_dep":
            last.depends_on.append("nowhere")
            code = Code.INVALID_ARGUMENT
        elif defect == "self_dep":
            last.id = last.id or f"a{len(specs) - 1}"
            last.depends_on.append(last.id)
            code = Code.INVALID_ARGUMENT
        elif defect == "twice_dep":
            specs.append(gpb.NodeSpec(id="tw", agent="echo", depends_on=["a0", "a0"]))
            first.id = "a0"
            code = Code.INVALID_ARGUMENT
        elif defect == "no_agent":
            last.agent = ""
            code = Code.INVALID_ARGUMENT
        elif defect == "bad_jitter":
            last.retry.jitter = 1.5
            code = Code.INVALID_ARGUMENT
        elif defect == "negative_timeout":
            last.timeout_s = -1.0
            code = Code.INVALID_ARGUMENT
        elif defect == "empty_graph":
            del req.nodes[:]
            specs = []
            code = Code.INVALID_ARGUMENT
        elif defect == "small_run_limit":
            specs.append(gpb.NodeSpec(id="extra", agent="echo"))
            req.limits.max_nodes = len(specs) - 1
            code = Code.INVALID_ARGUMENT
        elif defect == "long_id":
            last.id = "x" * (LIMITS.max_id_bytes + 1)
            code = Code.RESOURCE_EXHAUSTED
        elif defect == "long_agent":
            last.agent = "y" * (LIMITS.max_id_bytes + 1)
            code = Code.RESOURCE_EXHAUSTED
        elif defect == "long_name":
            req.name = "z" * (LIMITS.max_name_bytes + 1)
            code = Code.RESOURCE_EXHAUSTED
        elif defect == "too_many_nodes":
            for i in range(LIMITS.max_nodes_per_run + 1 - len(specs)):
                specs.append(gpb.NodeSpec(id=f"t{i}", agent="echo"))
            code = Code.RESOURCE_EXHAUSTED
        elif defect == "run_limit_over":
            req.limits.max_nodes = LIMITS.max_nodes_per_run + 1
            code = Code.RESOURCE_EXHAUSTED
        elif defect == "taken_run_id":
            live = [r for r in self.runs if r in self.core.runs]
            if live:
                req.run_id = live[0]
                code = Code.ALREADY_EXISTS
            else:
                req.run_id = self.fresh("mine-")
        req.nodes.extend(specs)
        if op.request is not None and code is None:
            req.request_id = f"q{op.request}"
        return req, code

    async def submit(self, req: rpb.SubmitRunRequest, code: Code | None) -> None:
        assert self.client is not None
        before = list(self.core.runs)
        existing = self.core.run_for_request(req.request_id) if req.request_id else None
        got = await self.rpc(self.client.stub.SubmitRun(req))
        if isinstance(got, Refusal):
            self.log(f"    -> {got.args[0].name}: {got.args[1]}")
            self.event(f"submit {got.args[0].name}")
            assert code is not None, f"a valid graph was refused: {got.args}"
            assert got.args[0] == code, f"expected {code.name}, got {got.args}"
            assert list(self.core.runs) == before, "a refused submission created something"
            return
        run_id = got.run_id
        self.log(f"    -> run {run_id}")
        self.event("submit OK" if existing is None else "submit: same run again")
        assert code is None, f"expected {code.name}, the run {run_id} was created"
        if existing is not None:
            assert run_id == existing, f"request {req.request_id} made {existing}, not {run_id}"
            assert list(self.core.runs) == before
            return
        assert run_id not in before
        assert run_id in self.core.runs
        run = self.core.runs[run_id]
        assert len(run.nodes) == len(req.nodes) and run.request_id == req.request_id
        self.runs.append(run_id)
        if req.request_id and req.request_id not in self.requests:
            self.requests.append(req.request_id)

    async def op_Submit(self, op: O.Submit) -> None:
        req, code = self.graph(op)
        await self.submit(req, code)

    async def op_Resubmit(self, op: O.Resubmit) -> None:
        if not self.requests:
            return
        request_id = self.requests[op.k % len(self.requests)]
        req = rpb.SubmitRunRequest(
            request_id=request_id, nodes=[gpb.NodeSpec(id="other", agent="echo")]
        )
        await self.submit(req, None)

    async def op_Cancel(self, op: O.Cancel) -> None:
        run_id = self.run_id(op.k)
        if run_id is None:
            return
        assert self.client is not None
        run = self.core.runs.get(run_id)
        before = run.state if run is not None else None
        got = await self.rpc(
            self.client.stub.CancelRun(rpb.CancelRunRequest(run_id=run_id, reason="r" * 300))
        )
        if run is None:
            assert isinstance(got, Refusal) and got.args[0] == Code.NOT_FOUND, got
            return
        assert not isinstance(got, Refusal), got
        expected = RunState.CANCELLED if before is RunState.RUNNING else before
        assert got.state == int(expected), (got.state, expected)  # type: ignore[arg-type]
        assert self.core.runs[run_id].state is expected

    def mutations(self, run: Any, drawn: Sequence[O.M], actor: str = "") -> list[gpb.Mutation]:
        """A batch built from drawn mutations against the run's nodes."""
        added: list[str] = []
        out: list[gpb.Mutation] = []

        def pick(i: int) -> str:
            pool = [*run.nodes, *added]
            return pool[i % len(pool)]

        def deps_of(node_id: str) -> list[str]:
            node = run.nodes.get(node_id)
            return list(node.deps) if node is not None else []

        for m in drawn:
            kind = m.kind
            agent = O.AGENTS[m.agent]
            if kind == "add_node":
                node_id = self.fresh()
                deps = [pick(m.b)] if m.flag else []
                spec = gpb.NodeSpec(
                    id=node_id, agent=agent, depends_on=deps, can_mutate=bool(m.a % 2)
                )
                out.append(gpb.Mutation(add_node=gpb.AddNode(node=spec, speculative=m.a % 5 == 0)))
                added.append(node_id)
            elif kind == "duplicate_id":
                spec = gpb.NodeSpec(id=pick(m.a), agent=agent)
                out.append(gpb.Mutation(add_node=gpb.AddNode(node=spec)))
            elif kind == "unknown_dep":
                spec = gpb.NodeSpec(id=self.fresh(), agent=agent, depends_on=["nowhere"])
                out.append(gpb.Mutation(add_node=gpb.AddNode(node=spec)))
            elif kind == "add_edge":
                out.append(gpb.Mutation(add_edge=gpb.AddEdge(from_id=pick(m.a), to_id=pick(m.b))))
            elif kind == "remove_edge":
                to_id = pick(m.a)
                deps = deps_of(to_id)
                from_id = deps[m.b % len(deps)] if deps and m.flag else pick(m.b)
                out.append(gpb.Mutation(remove_edge=gpb.RemoveEdge(from_id=from_id, to_id=to_id)))
            elif kind == "remove_node":
                out.append(gpb.Mutation(remove_node=gpb.RemoveNode(id=pick(m.a))))
            elif kind == "modify_node":
                mod = gpb.ModifyNode(id=pick(m.a))
                choice = m.b % 5
                if choice == 0:
                    mod.input = b'{"modified": true}'
                elif choice == 1:
                    mod.priority = m.b % 3 - 1
                elif choice == 2:
                    mod.retry.CopyFrom(
                        gpb.RetryPolicy(max_attempts=2, initial_backoff_s=0.001, jitter=0.25)
                    )
                elif choice == 3:
                    mod.retry.CopyFrom(gpb.RetryPolicy(jitter=2.0))  # invalid
                else:
                    mod.timeout_s = -1.0 if m.flag else 0.0
                out.append(gpb.Mutation(modify_node=mod))
            elif kind == "split_node":
                parts = [] if m.b % 4 == 0 else [self.fresh(), self.fresh()][: 1 + m.b % 2]
                replacements = [gpb.NodeSpec(id=p, agent=agent) for p in parts]
                out.append(
                    gpb.Mutation(split_node=gpb.SplitNode(id=pick(m.a), replacements=replacements))
                )
                added.extend(parts)
            elif kind == "inject_before":
                node_id = self.fresh()
                out.append(
                    gpb.Mutation(
                        inject_before=gpb.InjectBefore(
                            target_id=pick(m.a), node=gpb.NodeSpec(id=node_id, agent=agent)
                        )
                    )
                )
                added.append(node_id)
            elif kind == "prune":
                out.append(gpb.Mutation(prune_subgraph=gpb.PruneSubgraph(root_id=pick(m.a))))
            elif kind == "mark_speculative":
                out.append(gpb.Mutation(mark_speculative=gpb.MarkSpeculative(id=pick(m.a))))
            elif kind == "confirm_speculative":
                out.append(gpb.Mutation(confirm_speculative=gpb.ConfirmSpeculative(id=pick(m.a))))
            elif kind == "discard_speculative":
                out.append(gpb.Mutation(discard_speculative=gpb.DiscardSpeculative(id=pick(m.a))))
            elif kind == "empty":
                out.append(gpb.Mutation())
            elif kind == "unknown_kind":
                out.append(gpb.Mutation.FromString(UNKNOWN_KIND))
            elif kind == "too_many":
                for _ in range(LIMITS.max_mutations + 1):
                    spec = gpb.NodeSpec(id=self.fresh(), agent="echo")
                    out.append(gpb.Mutation(add_node=gpb.AddNode(node=spec)))
            elif kind == "long_id":
                spec = gpb.NodeSpec(id="L" * (LIMITS.max_id_bytes + 1), agent="echo")
                out.append(gpb.Mutation(add_node=gpb.AddNode(node=spec)))
            else:  # pragma: no cover
                raise AssertionError(kind)
        return out

    async def op_Mutate(self, op: O.Mutate) -> None:
        run_id = self.run_id(op.k)
        if run_id is None:
            return
        assert self.client is not None
        run = self.core.runs.get(run_id)
        if run is None:
            batch = self.mutations(_Empty(), op.mutations)
        else:
            batch = self.mutations(run, op.mutations)
        door = door_problem(batch)
        state_before = canonical(self.core).get(run_id)
        seq_before = run.last_seq if run is not None else 0
        running = run is not None and run.state is RunState.RUNNING
        got = await self.rpc(
            self.client.stub.MutateRun(rpb.MutateRunRequest(run_id=run_id, mutations=batch))
        )
        self.log(
            f"    -> {got.args[0].name}: {got.args[1]}" if isinstance(got, Refusal) else "    -> ok"
        )
        if door == "limit":
            allowed = {Code.RESOURCE_EXHAUSTED}
        elif door == "kind":
            allowed = {Code.INVALID_ARGUMENT}
        elif run is None:
            allowed = {Code.NOT_FOUND}
        elif not running:
            allowed = {Code.INVALID_ARGUMENT}
        else:
            allowed = {Code.INVALID_ARGUMENT, None}
        code = got.args[0] if isinstance(got, Refusal) else None
        self.event(f"mutate {code.name if code else 'OK'}")
        assert code in allowed, f"MutateRun answered {got}; expected one of {allowed}"
        await self.c.runtime.durable()  # type: ignore[union-attr]
        if code is not None:
            assert canonical(self.core).get(run_id) == state_before, "a refused batch changed it"
            if run is not None:
                assert run.last_seq == seq_before, "a refused batch was logged"
        else:
            assert seq_before < got.seq <= self.core.runs[run_id].last_seq

    async def op_Delete(self, op: O.Delete) -> None:
        run_id = self.run_id(op.k)
        if run_id is None:
            return
        assert self.client is not None
        run = self.core.runs.get(run_id)
        got = await self.rpc(self.client.stub.DeleteRun(rpb.DeleteRunRequest(run_id=run_id)))
        if run is None:
            expected: Code | None = Code.NOT_FOUND
        elif run.state is RunState.RUNNING:
            expected = Code.FAILED_PRECONDITION
        else:
            expected = None
        code = got.args[0] if isinstance(got, Refusal) else None
        self.event(f"delete {code.name if code else 'OK'}")
        assert code == expected, f"DeleteRun answered {got}, expected {expected}"
        if expected is None:
            assert run_id not in self.core.runs
            again = await self.rpc(self.client.stub.GetRun(rpb.GetRunRequest(run_id=run_id)))
            assert isinstance(again, Refusal) and again.args[0] == Code.NOT_FOUND, again

    async def op_Retain(self, op: O.Retain) -> None:
        assert self.c is not None
        ended_before = {r for r, run in self.core.runs.items() if run.state is not RunState.RUNNING}
        deleted = self.c.runtime.apply_retention()
        self.log(f"    -> deleted {deleted}")
        if deleted:
            self.event("retention deleted runs")
        assert set(deleted) <= ended_before
        ended = [r for r in self.core.runs.values() if r.state is not RunState.RUNNING]
        assert len(ended) <= LIMITS.retain_runs

    async def op_Inspect(self, op: O.Inspect) -> None:
        run_id = self.run_id(op.k)
        if run_id is None:
            return
        await self.check_get_run(run_id, op.page_size)
        await self.check_list_runs(op.page_size)

    async def check_get_run(self, run_id: str, page_size: int) -> None:
        """GetRun (every page) says what the core holds."""
        assert self.client is not None
        run = self.core.runs.get(run_id)
        nodes: list[rpb.NodeStatus] = []
        token = ""
        info = None
        for _ in range(100):
            page = await self.rpc(
                self.client.stub.GetRun(
                    rpb.GetRunRequest(run_id=run_id, page_size=page_size, page_token=token)
                )
            )
            if run is None:
                assert isinstance(page, Refusal) and page.args[0] == Code.NOT_FOUND, page
                return
            assert not isinstance(page, Refusal), page
            info = page.run
            nodes.extend(page.nodes)
            token = page.next_page_token
            if not token:
                break
        assert info is not None and not token
        assert (info.run_id, info.name, info.state) == (run_id, run.name, int(run.state))
        assert info.last_seq == run.last_seq
        c = info.counts
        counts = (c.pending, c.ready, c.running, c.succeeded, c.failed, c.cancelled, c.skipped)
        assert (*counts, c.speculative) == tuple(run.counts[s] for s in NodeState)
        assert [n.id for n in nodes] == list(run.nodes), "GetRun pages lost or repeated nodes"
        for status, node in zip(nodes, run.nodes.values(), strict=True):
            want = (
                node.spec.agent,
                int(node.state),
                node.attempt,
                node.result if node.state is NodeState.SUCCEEDED else b"",
                list(node.deps),
                node.parent_id,
                node.depth,
            )
            got = (
                status.agent,
                status.state,
                status.attempts,
                status.result,
                list(status.depends_on),
                status.parent_id,
                status.spawn_depth,
            )
            assert got == want, f"GetRun {run_id}/{node.id}: {got} != {want}"
            err = node.error if node.state is not NodeState.SUCCEEDED else None
            if err is not None:
                assert (status.error.message, status.error.kind, status.error.retryable) == (
                    err.message,
                    err.kind,
                    err.retryable,
                )
            else:
                assert not status.HasField("error")

    async def check_list_runs(self, limit: int) -> None:
        assert self.client is not None
        ids: list[str] = []
        token = ""
        for _ in range(100):
            page = await self.rpc(
                self.client.stub.ListRuns(rpb.ListRunsRequest(limit=limit, page_token=token))
            )
            assert not isinstance(page, Refusal), page
            ids.extend(r.run_id for r in page.runs)
            token = page.next_page_token
            if not token:
                break
        assert ids == list(reversed(self.core.runs)), "ListRuns disagrees with the core"

    # --- worker operations -----------------------------------------------------------------

    def worker(self, i: int) -> Worker:
        return self.workers[i % len(self.workers)]

    def busy(self, i: int) -> Worker | None:
        """A connected worker that holds something (else any connected one, else None)."""
        connected = [w for w in self.workers if w.raw is not None]
        holding = [w for w in connected if w.held] or connected
        return holding[i % len(holding)] if holding else None

    def claims(self, w: Worker, choice: str) -> list[wpb.AssignmentRef]:
        """What a reconnecting worker names in Hello.held."""
        other = self.workers[(w.index + 1) % len(self.workers)]
        own = list(w.held.values())
        if choice == "own":
            return own
        if choice == "none":
            return []
        if choice == "other":
            return list(other.held.values())
        if choice == "both":
            return own + list(other.held.values())
        made_up = wpb.AssignmentRef(run_id="r-made-up", node_id="a0", attempt=1, lease=12345)
        return [made_up, *self.refs[-3:], *own]

    async def connect(self, w: Worker, held: list[wpb.AssignmentRef]) -> None:
        assert self.c is not None and w.raw is None
        await self.settle()
        expected = predict_kept(self.core, held, min(w.slots, LIMITS.max_slots))
        raw = RawWorker(self.c.address, agents=w.agents, slots=w.slots, name=w.name, held=held)
        await raw.connect()
        assert raw.welcome is not None, f"{w.name} refused: {raw.refusal}"
        kept = [key(r) for r in raw.welcome.held]
        self.log(
            f"    {w.name} connects as {raw.welcome.session_id}, keeps {len(kept)}/{len(held)}"
        )
        assert kept == expected, f"Welcome.held {kept}, expected {expected} of {held}"
        if kept:
            self.event("a reconnecting worker kept attempts")
        if len(kept) < len(held):
            self.event("a reconnecting worker was refused attempts")
        w.raw = raw
        w.session = raw.welcome.session_id
        w.known = {r.lease for r in raw.welcome.held}
        w.held = {r.lease: r for r in raw.welcome.held}

    async def disconnect(self, w: Worker, drop: bool) -> None:
        assert w.raw is not None
        raw, session = w.raw, w.session
        if drop:
            await raw.drop()
        else:
            await raw.close()
        try:
            await asyncio.wait_for(self.closed[session].wait(), WAIT)
        except TimeoutError as exc:
            raise AssertionError(f"{w.name}: the coordinator never closed {session}") from exc
        assert session not in self.core.sessions
        w.raw = None
        w.session = ""

    async def op_Connect(self, op: O.Connect) -> None:
        w = self.worker(op.w)
        if w.raw is None:
            await self.connect(w, self.claims(w, op.held))

    async def op_Disconnect(self, op: O.Disconnect) -> None:
        w = self.worker(op.w)
        if w.raw is not None:
            await self.disconnect(w, op.drop)

    async def send_results(self, w: Worker, results: list[wpb.Result]) -> list[int]:
        """Sends results in one message; checks each ack against the prediction (after a
        result with mutations, the later ones in the batch may have been made stale)."""
        assert w.raw is not None
        expected = []
        relaxed = False
        for res in results:
            allowed = predict_ack(self.core, res, w.session)
            if relaxed and allowed != {INVALID}:
                allowed = {COMMITTED, STALE, REJECTED, REFUSED}
            expected.append(allowed)
            relaxed = relaxed or bool(res.mutations)
        w.raw.send(wpb.ConnectRequest(results=wpb.Results(items=results)))
        statuses = []
        for res, allowed in zip(results, expected, strict=True):
            try:
                ack = await w.raw.ack()
            except TimeoutError as exc:
                raise AssertionError(f"{w.name}: no ack for {short(res.ref)}") from exc
            assert key(ack.ref) == key(res.ref), f"ack for {short(ack.ref)}, not {short(res.ref)}"
            self.log(f"    {w.name} {short(res.ref)} -> {ack_name(ack.status)} {ack.message[:80]}")
            assert ack.status in allowed, (
                f"{w.name}: {short(res.ref)} (outcome {res.outcome}) acked "
                f"{ack_name(ack.status)} {ack.message!r}, expected {[ack_name(s) for s in allowed]}"
            )
            statuses.append(ack.status)
            self.event(f"ack {ack_name(ack.status)}")
            mine = w.held.get(res.ref.lease)
            if mine is not None and key(mine) == key(res.ref) and ack.status != INVALID:
                del w.held[res.ref.lease]
        return statuses

    def result(self, w: Worker, ref: wpb.AssignmentRef, a: O.A) -> wpb.Result:
        if a.outcome == "ok":
            body = b"" if a.size == 0 else b'"' + b"x" * (LIMITS.max_result_bytes + 1) + b'"'
            if a.size in (1, 2):
                body = b'{"v": %d}' % a.size
            res = wpb.Result(ref=ref, outcome=wpb.OUTCOME_SUCCEEDED, result=body)
            run = self.core.runs.get(ref.run_id)
            if a.mutations and run is not None:
                res.mutations.extend(self.mutations(run, a.mutations, ref.node_id))
            return res
        outcome = wpb.OUTCOME_FAILED if a.outcome == "fail" else wpb.OUTCOME_CANCELLED
        res = wpb.Result(ref=ref, outcome=outcome)
        if a.error != "none":
            message = {"long": "e" * 600, "forged": REJECTED_PREFIX + "not really"}.get(
                a.error, "boom"
            )
            kind = {"no_kind": "", "long_kind": "k" * 100, "forged": "mutation_rejected"}.get(
                a.error, "agent"
            )
            res.error.CopyFrom(gpb.NodeError(message=message, retryable=a.retryable, kind=kind))
        return res

    async def op_Answer(self, op: O.Answer) -> None:
        w = self.busy(op.w)
        if w is None or w.raw is None or not w.held:
            ready = sum(run.counts[NodeState.READY] for run in self.core.runs.values())
            self.event(f"answer: nothing held ({ready} ready, {len(self.core.sessions)} sessions)")
            return
        left = list(w.held.values())
        results = []
        for a in op.answers:
            if not left:
                break
            ref = left.pop(a.k % len(left))
            results.append(self.result(w, ref, a))
        if op.again:
            results.append(results[0])
        statuses = await self.send_results(w, results)
        self.answers.extend(zip(results, statuses, strict=True))
        if op.again and len(results) == 2:  # nothing between them: the same ack again
            assert statuses[1] == statuses[0], [ack_name(s) for s in statuses]

    async def op_BadAnswer(self, op: O.BadAnswer) -> None:
        w = self.busy(op.w)
        if w is None or w.raw is None:
            return
        own = list(w.held.values())
        base = own[op.k % len(own)] if own else None
        ref = wpb.AssignmentRef()
        kind = op.kind
        if kind == "stale" and self.refs:
            ref.CopyFrom(self.refs[op.k % len(self.refs)])
        elif kind == "other":
            others = [r for v in self.workers if v is not w for r in v.held.values()]
            if not others:
                return
            ref.CopyFrom(others[op.k % len(others)])
        elif kind in ("wrong_node", "wrong_attempt", "wrong_run") and base is not None:
            ref.CopyFrom(base)
            if kind == "wrong_node":
                run = self.core.runs.get(ref.run_id)
                names = [n for n in (run.nodes if run is not None else ()) if n != ref.node_id]
                ref.node_id = names[op.k % len(names)] if names else "nope"
            elif kind == "wrong_attempt":
                ref.attempt += 1 + op.k % 2
            else:
                others = [r for r in self.runs if r != ref.run_id]
                ref.run_id = others[op.k % len(others)] if others else "r-nope"
        elif kind == "no_outcome" and base is not None:
            ref.CopyFrom(base)
        elif kind == "no_lease" and base is not None:
            ref.CopyFrom(base)
            ref.lease = 0
        elif kind == "no_run" and base is not None:
            ref.CopyFrom(base)
            ref.run_id = ""
        elif kind == "long_ref":
            ref.run_id, ref.node_id, ref.attempt, ref.lease = "r" * 500, "n", 1, 7
        else:
            ref.run_id, ref.node_id, ref.attempt, ref.lease = "r-made-up", "a0", 1, 4242 + op.k
        outcome = wpb.OUTCOME_UNSPECIFIED if kind == "no_outcome" else wpb.OUTCOME_SUCCEEDED
        res = wpb.Result(ref=ref, outcome=outcome, result=b'"forged"')
        statuses = await self.send_results(w, [res])
        self.answers.append((res, statuses[0]))

    async def op_Duplicate(self, op: O.Duplicate) -> None:
        w = self.worker(op.w)
        if w.raw is None or not self.answers:
            return
        res, first = self.answers[op.k % len(self.answers)]
        run = self.core.runs.get(res.ref.run_id)
        node = run.nodes.get(res.ref.node_id) if run is not None else None
        same_attempt = (
            node is not None
            and (node.lease, node.attempt) == (res.ref.lease, res.ref.attempt)
            and not node.open
        )
        (status,) = await self.send_results(w, [res])
        if same_attempt and first in (COMMITTED, REJECTED, REFUSED):
            self.event(f"duplicate of a {ack_name(first)} answer")
            assert status == first, (
                f"a resent answer for {short(res.ref)} got {ack_name(status)}, the first "
                f"{ack_name(first)}"
            )

    async def probe(self, w: Worker) -> None:
        """A made-up answer: its ack says everything sent before it was handled."""
        ref = wpb.AssignmentRef(run_id="r-probe", node_id="p", attempt=1, lease=next(self.ids))
        (status,) = await self.send_results(w, [wpb.Result(ref=ref, outcome=wpb.OUTCOME_SUCCEEDED)])
        assert status == STALE

    async def op_Progress(self, op: O.Progress) -> None:
        w = self.busy(op.w)
        if w is None or w.raw is None:
            return
        pool = self.refs if op.stale or not w.held else list(w.held.values())
        if not pool:
            return
        ref = pool[op.k % len(pool)]
        data = b'"' + b"p" * (LIMITS.max_progress_bytes + 1) + b'"' if op.big else b'{"p": 1}'
        w.raw.send(
            wpb.ConnectRequest(progress=wpb.ProgressBatch(items=[wpb.Progress(ref=ref, data=data)]))
        )
        await self.probe(w)

    async def op_Heartbeat(self, op: O.Heartbeat) -> None:
        w = self.worker(op.w)
        if w.raw is not None:
            w.raw.send(wpb.ConnectRequest(heartbeat=wpb.Heartbeat()))
            await self.probe(w)

    async def op_Drain(self, op: O.Drain) -> None:
        w = self.worker(op.w)
        if w.raw is not None:
            w.raw.send(wpb.ConnectRequest(drain=wpb.Drain()))
            await self.probe(w)
            assert self.core.sessions[w.session].draining

    async def op_HelloTwice(self, op: O.HelloTwice) -> None:
        w = self.worker(op.w)
        if w.raw is None:
            return
        raw, session = w.raw, w.session
        raw.send(wpb.ConnectRequest(hello=raw.hello))
        try:
            await asyncio.wait_for(self.closed[session].wait(), WAIT)
            await asyncio.wait_for(raw.ended.wait(), WAIT)
        except TimeoutError as exc:
            raise AssertionError(f"{w.name}: a second Hello did not end {session}") from exc
        assert raw.status == Code.INVALID_ARGUMENT, raw.status
        await raw.close()
        w.raw = None
        w.session = ""

    # --- crashes ---------------------------------------------------------------------------

    async def history(self, run_id: str, last_seq: int) -> list[rpb.RunEvent]:
        """The run's log as a watcher reads it, up to `last_seq`."""
        assert self.client is not None
        events: list[rpb.RunEvent] = []
        if last_seq == 0:
            return events
        call = self.client.stub.WatchRun(
            rpb.WatchRunRequest(run_id=run_id, from_seq=1, follow_after_end=True)
        )

        async def read() -> None:
            async for resp in call:
                events.extend(resp.events)
                if events[-1].seq >= last_seq:
                    return

        try:
            await asyncio.wait_for(read(), WAIT)
        except TimeoutError as exc:
            raise AssertionError(
                f"WatchRun {run_id} stopped at {len(events)} events of {last_seq}"
            ) from exc
        finally:
            call.cancel()
        assert [e.seq for e in events] == list(range(1, last_seq + 1)), "a gap in the log"
        successes: dict[str, int] = defaultdict(int)
        for e in events:
            if e.HasField("attempt_finished"):
                f = e.attempt_finished
                if f.outcome == wpb.OUTCOME_SUCCEEDED:
                    successes[f.node_id] += 1
                    assert successes[f.node_id] == 1, f"{run_id}/{f.node_id} succeeded twice"
            if e.HasField("progress"):
                assert len(e.progress.data) <= LIMITS.max_progress_bytes
        return events

    async def crash(self, helds: Sequence[str]) -> None:
        """Kills the coordinator at a quiet point, restarts it on the same store, and compares."""
        assert self.c is not None
        await self.settle()
        core = self.core
        validate(core)
        expected = canonical(core, restarted_view=True)
        seqs = {r: run.last_seq for r, run in core.runs.items()}
        running = {
            r: sorted(n.id for n in run.nodes.values() if n.state is NodeState.RUNNING)
            for r, run in core.runs.items()
        }
        before = {r: await self.history(r, s) for r, s in seqs.items()}
        for run_id in list(seqs)[-2:]:
            await self.check_get_run(run_id, 2)
        connected = [w for w in self.workers if w.raw is not None]
        await self.kill()
        await self.after_kill()
        await self.start()
        self.restarts += 1
        self.event(f"restart with {sum(len(v) for v in running.values())} running")
        core = self.core
        validate(core)
        actual = canonical(core)
        diff = differences(expected, actual)
        assert not diff, f"the restarted state differs from the live one:\n{diff}"
        for run_id, seq in seqs.items():
            lost = running[run_id]
            after = await self.history(run_id, core.runs[run_id].last_seq)
            old = [e.SerializeToString() for e in before[run_id]]
            assert [e.SerializeToString() for e in after[:seq]] == old, "the log changed"
            extra = after[seq:]
            kinds = {e.WhichOneof("kind") for e in extra}
            assert kinds <= {"attempt_lost"}, f"{run_id}: the restart logged {kinds}"
            assert sorted(e.attempt_lost.node_id for e in extra) == lost, (
                f"{run_id}: attempts lost at the restart {[e.attempt_lost for e in extra]}, "
                f"expected one for each of {lost}"
            )
        for run_id in list(seqs)[-2:]:
            await self.check_get_run(run_id, 1)
        await self.check_list_runs(0)
        for w in connected:
            await self.connect(w, self.claims(w, helds[w.index % len(helds)]))

    async def kill(self) -> None:
        """As a kill -9: nothing more reaches the store, the streams drop."""
        assert self.c is not None
        await self.c.abandon()

    async def after_kill(self) -> None:
        """The old streams are dead: let the raw workers notice, close what they hold."""
        for w in self.workers:
            raw = w.raw
            if raw is None:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(raw.ended.wait(), WAIT)
            raw._out.put_nowait(None)
            await raw.channel.close()
            w.raw = None
            w.session = ""
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def op_Crash(self, op: O.Crash) -> None:
        await self.crash(op.held)

    async def clean_restart(self) -> None:
        """A clean stop (a snapshot) and a start: the same state again."""
        assert self.c is not None
        expected = canonical(self.core, restarted_view=True)
        await self.c.stop()
        await self.after_kill()
        self.c = None
        await self.start()
        validate(self.core)
        diff = differences(expected, canonical(self.core))
        assert not diff, f"the state after a clean restart differs:\n{diff}"


class _Empty:
    """Stands for a run that does not exist when building a batch for it."""

    nodes: dict[str, Any] = {"a0": None}


__all__ = ["LIMITS", "Driver", "canonical", "predict_ack", "predict_kept"]
