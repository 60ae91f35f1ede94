"""The sync Client against a real coordinator process and the Python conformance worker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest

from hivegrid.client import (
    Client,
    Conflict,
    Graph,
    GraphFileError,
    InvalidGraph,
    LimitExceeded,
    NodeState,
    RunNotFound,
    RunState,
    Unavailable,
    WorkerNotFound,
)
from hivegrid.v1 import run_pb2, run_pb2_grpc
from tests.support.processes import WorkerProcess
from tests.support.wait import free_port

from .conftest import WORKER, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _sum_graph() -> Graph:
    g = Graph(name="sums")
    a = g.node("value", {"value": 2})
    b = g.node("value", {"value": 3})
    g.node("sum", after=[a, b], id="total")
    return g


def test_submit_a_builder_graph_and_wait_for_its_results(client: Client) -> None:
    run_id = client.submit(_sum_graph())
    run = client.wait(run_id, timeout=30)
    assert run.id == run_id and run.name == "sums"
    assert run.state == RunState.SUCCEEDED and run.state == "succeeded" and run.ended
    assert run.results == {"value-1": {"value": 2}, "value-2": {"value": 3}, "total": 5}
    total = run.node("total")
    assert (total.agent, total.state, total.attempts, total.error) == (
        "sum",
        NodeState.SUCCEEDED,
        1,
        None,
    )
    assert total.deps == ("value-1", "value-2") and total.parent is None
    assert run.counts[NodeState.SUCCEEDED] == 3 and run.counts[NodeState.FAILED] == 0
    assert run.created_at > 0 and run.ended_at is not None and run.ended_at >= run.created_at
    with pytest.raises(KeyError, match="no node 'nope'"):
        run.node("nope")


def test_submit_a_dict_and_a_file(client: Client, tmp_path: Path) -> None:
    doc = {"nodes": [{"id": "a", "agent": "echo", "input": {"x": 1}}]}
    by_dict = client.wait(client.submit(doc, name="from-dict"), timeout=30)
    assert by_dict.name == "from-dict"
    assert by_dict.node("a").result == {"input": {"x": 1}, "deps": {}}
    path = tmp_path / "g.yaml"
    path.write_text("name: from-file\nnodes:\n  - {id: a, agent: value, input: {value: 7}}\n")
    by_file = client.wait(client.submit(path), timeout=30)
    assert (by_file.name, by_file.results) == ("from-file", {"a": {"value": 7}})


def test_a_failed_run_reports_its_errors(client: Client) -> None:
    run = client.wait(
        client.submit(
            {
                "nodes": [
                    {"id": "x", "agent": "fail", "input": {"message": "boom"}},
                    {"id": "y", "agent": "echo", "depends_on": ["x"]},
                ]
            }
        ),
        timeout=30,
    )
    assert run.state == RunState.FAILED
    assert (run.node("x").state, run.node("x").error) == (NodeState.FAILED, "boom")
    assert run.node("x").error_kind == "agent"
    assert run.node("y").state == NodeState.SKIPPED and run.results == {}


def test_request_id_makes_a_retried_submit_return_the_first_run(client: Client) -> None:
    first = client.submit(_sum_graph(), request_id="client-test-idempotent")
    again = client.submit(_sum_graph(), request_id="client-test-idempotent")
    assert again == first
    assert client.submit(_sum_graph()) != first  # without one, each submit is a new run


def test_events_in_order_and_resumed_from_a_seq(client: Client) -> None:
    run_id = client.submit({"nodes": [{"id": "p", "agent": "progress", "input": {"steps": 3}}]})
    events = list(client.events(run_id))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].kind == "run_submitted" and events[0].run_id == run_id
    last = events[-1]
    assert last.kind == "run_ended" and last.run_ended and last.state == RunState.SUCCEEDED
    assert [e.data for e in events if e.kind == "progress"] == [{"step": i} for i in (1, 2, 3)]
    done = next(e for e in events if e.kind == "attempt_finished")
    assert (done.node_id, done.state, done.outcome) == ("p", "succeeded", "succeeded")
    assert done.attempt == 1
    assert done.result == {"steps": 3}
    dispatched = next(e for e in events if e.kind == "node_dispatched")
    assert dispatched.worker_name == WORKER and dispatched.state == NodeState.RUNNING
    assert dispatched.detail["node_dispatched"]["node_id"] == "p"
    # Resuming from a seq gives exactly the rest.
    rest = list(client.events(run_id, after=3))
    assert [e.seq for e in rest] == [e.seq for e in events[3:]]
    assert rest == events[3:]
    assert list(client.events(run_id, after=last.seq)) == []
    assert [e.seq for e in client.events(run_id, after=2, follow=False)] == [
        e.seq for e in events[2:]
    ]


def test_events_without_follow_stop_at_what_existed(client: Client) -> None:
    run_id = client.submit({"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
    try:
        # The first event is there at once; without follow the iteration ends, run or not.
        seen = list(client.events(run_id, follow=False))
        assert seen and seen[0].kind == "run_submitted"
        assert all(e.kind != "run_ended" for e in seen)
    finally:
        client.cancel(run_id)


def test_stopping_early_ends_the_watch(client: Client) -> None:
    run_id = client.submit({"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
    events = client.events(run_id)
    first = next(events)
    events.close()
    assert first.seq == 1
    assert client.cancel(run_id, reason="done looking") == RunState.CANCELLED


def test_cancel_ends_a_waited_run(client: Client) -> None:
    run_id = client.submit({"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
    assert client.cancel(run_id, reason="from a test") == RunState.CANCELLED
    run = client.wait(run_id, timeout=30)
    assert run.state == RunState.CANCELLED and run.node("s").state == NodeState.CANCELLED
    cancelled = next(e for e in client.events(run_id) if e.kind == "run_cancelled")
    assert cancelled.reason == "from a test"
    # Cancelling an ended run leaves it as it ended.
    done = client.wait(client.submit(_sum_graph()), timeout=30)
    assert client.cancel(done.id) == RunState.SUCCEEDED


def test_mutate_adds_a_node_to_a_running_run(client: Client) -> None:
    run_id = client.submit({"nodes": [{"id": "gate", "agent": "sleep", "input": {"seconds": 30}}]})
    try:
        seq = client.mutate(
            run_id,
            [
                {"add_node": {"node": {"id": "added", "agent": "value", "input": {"value": 9}}}},
                {"add_node": {"node": {"id": "after-gate", "agent": "echo"}}},
                {"add_edge": {"from_id": "gate", "to_id": "after-gate"}},
            ],
        )
        assert seq > 1
        finished = None
        for event in client.events(run_id):
            if event.seq == seq:
                assert event.kind == "mutations_applied" and len(event.mutations) == 3
                assert event.mutations[0] == {
                    "add_node": {"node": {"id": "added", "agent": "value", "input": {"value": 9}}}
                }
            if event.kind == "attempt_finished" and event.node_id == "added":
                finished = event
                break
        assert finished is not None and finished.result == {"value": 9}
        run = client.get_run(run_id)
        assert run.node("after-gate").deps == ("gate",)
        assert run.node("after-gate").state == NodeState.PENDING
        with pytest.raises(InvalidGraph) as info:
            client.mutate(run_id, [{"add_edge": {"from_id": "nope", "to_id": "after-gate"}}])
        assert "nope" in str(info.value) and info.value.code == "invalid_argument"
        with pytest.raises(GraphFileError, match="mutation 1: unknown kind 'add_nod'"):
            client.mutate(run_id, [{"add_nod": {}}])
    finally:
        client.cancel(run_id)


def test_list_runs_newest_first_by_state_and_limit(client: Client) -> None:
    done = client.wait(client.submit(_sum_graph()), timeout=30).id
    running = client.submit({"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
    try:
        runs = client.list_runs()
        assert [r.id for r in runs[:2]] == [running, done]
        assert client.list_runs(limit=1)[0].id == running
        by_state = client.list_runs(state="running")
        assert running in {r.id for r in by_state} and done not in {r.id for r in by_state}
        assert all(r.state == RunState.RUNNING for r in by_state)
        succeeded = client.list_runs(state=RunState.SUCCEEDED, limit=1)
        assert [r.id for r in succeeded] == [done]
        assert succeeded[0].counts[NodeState.SUCCEEDED] == 3 and succeeded[0].last_seq > 1
        with pytest.raises(ValueError, match="limit must be at least 1"):
            client.list_runs(limit=0)
        with pytest.raises(ValueError, match="'sleeping' is not a valid RunState"):
            client.list_runs(state="sleeping")
        summary = client.get_summary(running)
        assert (summary.id, summary.state, summary.ended) == (running, RunState.RUNNING, False)
    finally:
        client.cancel(running)


def test_list_workers_and_drain(cluster: Cluster, client: Client) -> None:
    (mine,) = [w for w in client.list_workers() if w.name == WORKER]
    assert mine.language == "python" and mine.slots == 8 and not mine.draining
    assert {"echo", "sum", "sleep", "value"} <= set(mine.agents)
    extra = WorkerProcess("python", cluster.address, cluster.log_dir, name="drain-me", slots=1)
    try:
        session = extra.wait_connected()
        assert session in {w.session_id for w in client.list_workers() if w.name == "drain-me"}
        assert client.drain("drain-me") == 1
        assert extra.wait(timeout=20) == 0  # a drained worker exits cleanly
    finally:
        extra.kill()
    with pytest.raises(WorkerNotFound, match="no worker 'nobody'"):
        client.drain("nobody")


def test_delete_an_ended_run_and_not_a_running_one(client: Client) -> None:
    done = client.wait(client.submit(_sum_graph()), timeout=30).id
    running = client.submit({"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
    try:
        with pytest.raises(Conflict, match="still running") as info:
            client.delete_run(running)
        assert info.value.code == "failed_precondition"
        client.delete_run(done)
        with pytest.raises(RunNotFound):
            client.get_run(done)
        assert done not in {r.id for r in client.list_runs()}
    finally:
        client.cancel(running)


def test_unknown_run_is_run_not_found(client: Client) -> None:
    for call in (
        lambda: client.get_run("no-such-run"),
        lambda: client.get_summary("no-such-run"),
        lambda: client.wait("no-such-run"),
        lambda: client.cancel("no-such-run"),
        lambda: list(client.events("no-such-run")),
        lambda: client.mutate("no-such-run", [{"remove_node": {"id": "a"}}]),
        lambda: client.delete_run("no-such-run"),
    ):
        with pytest.raises(RunNotFound) as info:
            call()
        assert info.value.details == "no run 'no-such-run'" and isinstance(info.value, LookupError)


def _raw_details(address: str, request: run_pb2.SubmitRunRequest) -> tuple[grpc.StatusCode, str]:
    """What the coordinator answers the same request, seen without the client."""
    with grpc.insecure_channel(address) as channel:
        try:
            run_pb2_grpc.RunServiceStub(channel).SubmitRun(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    raise AssertionError("the coordinator accepted the request")


def test_a_graph_the_coordinator_refuses_keeps_its_message(
    cluster: Cluster, client: Client
) -> None:
    cycle = {
        "nodes": [
            {"id": "a", "agent": "echo", "depends_on": ["b"]},
            {"id": "b", "agent": "echo", "depends_on": ["a"]},
        ]
    }
    with pytest.raises(InvalidGraph) as info:
        client.submit(cycle)
    raw = run_pb2.SubmitRunRequest()
    for node in cycle["nodes"]:
        raw.nodes.add(id=node["id"], agent=node["agent"], depends_on=node["depends_on"])
    code, details = _raw_details(cluster.address, raw)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value) == info.value.details == details and "cycle" in details.lower()
    assert info.value.code == "invalid_argument"
    assert not isinstance(info.value, GraphFileError)


def test_a_graph_over_a_limit_is_limit_exceeded(client: Client) -> None:
    with pytest.raises(LimitExceeded, match="over the limit max_id_bytes") as info:
        client.submit({"nodes": [{"id": "n" * 300, "agent": "echo"}]})
    assert info.value.code == "resource_exhausted"


def test_a_malformed_graph_fails_before_anything_is_sent() -> None:
    nowhere = Client(f"127.0.0.1:{free_port()}")  # nothing listens there
    with nowhere, pytest.raises(GraphFileError) as info:
        nowhere.submit({"nodes": [{"id": "b", "agent": "echo", "dependson": ["a"]}]})
    assert str(info.value) == 'node "b": unknown field "dependson" (did you mean "depends_on"?)'


def test_an_agent_no_worker_runs_waits_for_one(client: Client) -> None:
    run_id = client.submit({"nodes": [{"id": "u", "agent": "no-such-agent"}]})
    try:
        with pytest.raises(TimeoutError, match=re.escape(f"run {run_id} did not end within 0.5 s")):
            client.wait(run_id, timeout=0.5)
        run = client.get_run(run_id)
        assert run.state == RunState.RUNNING and run.node("u").state == NodeState.READY
    finally:
        assert client.cancel(run_id) == RunState.CANCELLED


def test_an_unreachable_coordinator_is_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    with Client(address, submit_retry_s=0.2) as nowhere:
        with pytest.raises(Unavailable) as info:
            nowhere.list_workers()
        assert info.value.address == address and info.value.code == "unavailable"
        assert str(info.value).startswith(f"cannot reach the coordinator at {address}: ")
        assert isinstance(info.value, ConnectionError)
        with pytest.raises(Unavailable):
            nowhere.submit({"nodes": [{"agent": "echo"}]})  # retried for 0.2 s, then given up


def test_the_address_comes_from_the_environment(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIVEGRID_COORDINATOR", cluster.address)
    with Client() as c:
        assert c.address == cluster.address
        assert any(w.name == WORKER for w in c.list_workers())
    monkeypatch.delenv("HIVEGRID_COORDINATOR")
    with Client() as c:
        assert c.address == "127.0.0.1:50051"


def test_a_closed_client_says_so(cluster: Cluster) -> None:
    c = Client(cluster.address)
    c.close()
    c.close()  # twice is fine
    with pytest.raises(RuntimeError, match="the client is closed"):
        c.list_workers()


def test_run_ids_and_results_survive_json(client: Client) -> None:
    """What the client returns is plain data: a run's results serialize as they came."""
    run = client.wait(client.submit(_sum_graph()), timeout=30)
    assert json.loads(json.dumps(run.results)) == run.results
