"""The `hivegrid` command against a real coordinator process and the Python conformance worker.

Client commands run in-process through `cli.main` (fast, and their output is captured); the
coordinator and the workers are subprocesses, as a user would run them. Nothing waits by
sleeping: readiness is read from the processes' own announcement lines, and run ends from the
CLI's own --wait / watch.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from hivegrid.coordinator import cli
from tests.support.processes import REPO, CoordinatorProcess, WorkerProcess, child_env
from tests.support.wait import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def _read_line_matching(stream: IO[str], needle: str, timeout: float) -> str:
    """Reads lines until one contains `needle`; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    seen = []
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = stream.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line.strip()
    finally:
        selector.close()
    raise AssertionError(f"no line with {needle!r} within {timeout}s; got {seen!r}")


@dataclass
class Cluster:
    address: str
    db: Path
    log_dir: Path


def _start_worker(cluster: Cluster, name: str) -> WorkerProcess:
    """The Python conformance worker with its default slots, once it announced its session."""
    proc = WorkerProcess("python", cluster.address, cluster.log_dir, name=name, slots=None)
    proc.wait_connected(timeout=20)
    return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One coordinator (default timing, SQLite store) and one worker for the whole module; both
    must exit cleanly (code 0) on SIGTERM at the end."""
    coordinator = CoordinatorProcess(tmp_path_factory.mktemp("coordinator"))
    worker = None
    try:
        address = coordinator.start(timeout=20)
        cluster = Cluster(address, coordinator.db_path, coordinator.log_dir)
        worker = _start_worker(cluster, "cli-e2e")
        yield cluster
    except BaseException:
        print("\n" + coordinator.diagnostics())
        raise
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.diagnostics()
        assert coordinator.stop() == 0, coordinator.diagnostics()


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def hivegrid(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("HIVEGRID_COORDINATOR", cluster.address)

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def _graph(tmp_path: Path, doc: dict[str, Any], name: str = "g.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_submit_wait_json_succeeds(hivegrid: Any, tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "name: sums\n"
        "nodes:\n"
        "  - {id: a, agent: value, input: {value: 2}}\n"
        "  - {id: b, agent: value, input: {value: 3}}\n"
        "  - {id: c, agent: sum, depends_on: [a, b]}\n"
    )
    result = hivegrid("submit", str(path), "--wait", "--json")
    assert result.code == 0, result.err
    run = result.json()
    assert run["state"] == "succeeded"
    assert run["run_id"]
    assert run["nodes"] == [
        {
            "id": "a",
            "agent": "value",
            "state": "succeeded",
            "attempts": 1,
            "result": {"value": 2},
            "error": None,
        },
        {
            "id": "b",
            "agent": "value",
            "state": "succeeded",
            "attempts": 1,
            "result": {"value": 3},
            "error": None,
        },
        {
            "id": "c",
            "agent": "sum",
            "state": "succeeded",
            "attempts": 1,
            "result": 5,
            "error": None,
        },
    ]

    status = hivegrid("status", run["run_id"], "--json")
    assert status.code == 0
    assert status.json() == run

    table = hivegrid("status", run["run_id"])
    assert table.code == 0
    assert f"run {run['run_id']} (sums): succeeded" in table.out
    assert "c     sum    succeeded  1         5" in table.out

    runs = hivegrid("runs")
    assert runs.code == 0
    assert any(
        line.split()[:3] == [run["run_id"], "sums", "succeeded"] for line in runs.out.splitlines()
    )


def test_submit_plain_prints_run_id_and_name_flag(hivegrid: Any, tmp_path: Path) -> None:
    path = _graph(tmp_path, {"nodes": [{"id": "a", "agent": "echo", "input": 1}]})
    result = hivegrid("submit", path, "--name", "renamed")
    assert result.code == 0
    run_id = result.out.strip()
    assert run_id and "\n" not in run_id
    listed = hivegrid("runs", "--json").json()
    assert {"run_id": run_id, "name": "renamed"}.items() <= next(
        r for r in listed if r["run_id"] == run_id
    ).items()


def test_failed_run_exits_1_and_names_the_error(hivegrid: Any, tmp_path: Path) -> None:
    path = _graph(
        tmp_path,
        {
            "nodes": [
                {"id": "x", "agent": "fail", "input": {"message": "boom", "retryable": False}},
                {"id": "y", "agent": "echo", "depends_on": ["x"]},
            ]
        },
    )
    result = hivegrid("submit", path, "--wait", "--json")
    assert result.code == 1
    run = result.json()
    assert run["state"] == "failed"
    by_id = {n["id"]: n for n in run["nodes"]}
    assert by_id["x"]["state"] == "failed"
    assert by_id["x"]["error"] == "boom"
    assert by_id["y"]["state"] == "skipped"

    plain = hivegrid("submit", path, "--wait")
    assert plain.code == 1
    assert "failed" in plain.out and "x (fail): failed: boom" in plain.out


def test_retries_show_in_attempts(hivegrid: Any, tmp_path: Path) -> None:
    path = _graph(
        tmp_path,
        {
            "nodes": [
                {
                    "id": "f",
                    "agent": "flaky",
                    "input": {"fail_times": 2},
                    "retry": {"max_attempts": 3, "initial_backoff_s": 0.01, "max_backoff_s": 0.02},
                }
            ]
        },
    )
    run = hivegrid("submit", path, "--wait", "--json").json()
    assert run["state"] == "succeeded"
    assert run["nodes"][0]["attempts"] == 3
    assert run["nodes"][0]["result"] == {"attempt": 3}


def test_events_show_progress_in_order(hivegrid: Any, tmp_path: Path) -> None:
    path = _graph(tmp_path, {"nodes": [{"id": "p", "agent": "progress", "input": {"steps": 3}}]})
    run = hivegrid("submit", path, "--wait", "--json").json()
    events = hivegrid("events", run["run_id"], "--json")
    assert events.code == 0
    lines = [json.loads(line) for line in events.out.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert lines[0]["kind"] == "run_submitted"
    assert lines[-1] == {**lines[-1], "kind": "run_ended", "run_ended": {"state": "succeeded"}}
    progress = [e["progress"]["data"] for e in lines if e["kind"] == "progress"]
    assert progress == [{"step": 1}, {"step": 2}, {"step": 3}]

    later = hivegrid("events", run["run_id"], "--json", "--from", "3")
    assert [json.loads(x)["seq"] for x in later.out.splitlines()] == [e["seq"] for e in lines[2:]]

    text = hivegrid("events", run["run_id"])
    assert text.code == 0
    assert "#1 " in text.out and 'p progress: {"step":2}' in text.out
    assert "run ended: succeeded" in text.out.splitlines()[-1]


def test_cancel_ends_a_watched_run(cluster: Cluster, hivegrid: Any, tmp_path: Path) -> None:
    path = _graph(tmp_path, {"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
    run_id = hivegrid("submit", path).out.strip()
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hivegrid.coordinator",
            "watch",
            run_id,
            "--coordinator",
            cluster.address,
        ],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        # The first line is the snapshot; the watch follows from there on.
        _read_line_matching(watch.stdout, f"run {run_id}", timeout=20)
        cancelled = hivegrid("cancel", run_id)
        assert cancelled.code == 0, cancelled.err
        assert cancelled.out.startswith(f"run {run_id}: ")
        out, err = watch.communicate(timeout=20)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(timeout=5)
    assert watch.returncode == 1, err
    assert "run cancelled" in out
    assert f"run {run_id}: cancelled" in out
    assert "Traceback" not in err
    status = hivegrid("status", run_id, "--json").json()
    assert status["state"] == "cancelled"
    assert status["nodes"][0]["state"] == "cancelled"


def test_watch_of_an_ended_run_returns_at_once(hivegrid: Any, tmp_path: Path) -> None:
    path = _graph(tmp_path, {"nodes": [{"id": "a", "agent": "echo"}]})
    run_id = hivegrid("submit", path, "--wait", "--json").json()["run_id"]
    result = hivegrid("watch", run_id)
    assert result.code == 0
    assert f"run {run_id}: succeeded" in result.out


def test_runs_delete_removes_an_ended_run_and_refuses_a_running_one(
    hivegrid: Any, tmp_path: Path
) -> None:
    done = hivegrid("submit", _graph(tmp_path, {"nodes": [{"id": "a", "agent": "echo"}]}), "--wait")
    assert done.code == 0
    run_id = done.out.splitlines()[0]
    slow = hivegrid(
        "submit",
        _graph(tmp_path, {"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]}),
    )
    running = slow.out.strip()
    refused = hivegrid("runs", "delete", running)
    assert refused.code == 1 and "still running" in refused.err
    deleted = hivegrid("runs", "delete", run_id)
    assert deleted.code == 0 and f"run {run_id}: deleted" in deleted.out
    gone = hivegrid("status", run_id)
    assert gone.code == 1 and "no run" in gone.err
    listed = hivegrid("runs", "--json")
    assert run_id not in {r["run_id"] for r in listed.json()}
    assert hivegrid("cancel", running).code == 0


def test_backup_copies_a_live_store(cluster: Cluster, hivegrid: Any, tmp_path: Path) -> None:
    done = hivegrid("submit", _graph(tmp_path, {"nodes": [{"id": "a", "agent": "echo"}]}), "--wait")
    run_id = done.out.splitlines()[0]
    copy = tmp_path / "copy.db"
    out = hivegrid("backup", str(copy), "--store", f"sqlite:///{cluster.db}")
    assert out.code == 0, out.err
    again = hivegrid("backup", str(copy), "--store", f"sqlite:///{cluster.db}")
    assert again.code == 1 and "exists" in again.err
    # The copy is a whole store: a coordinator started on it serves the run's log, from its
    # submission to its end (read as any client reads it, not in the store's own format).
    restored = CoordinatorProcess(tmp_path / "restored", store=f"sqlite:///{copy}")
    try:
        address = restored.start(timeout=20)
        events = hivegrid("events", run_id, "--json", "--coordinator", address)
        assert events.code == 0, events.err
    finally:
        assert restored.stop() == 0, restored.diagnostics()
    kinds = [json.loads(line)["kind"] for line in events.out.splitlines()]
    assert kinds[0] == "run_submitted" and kinds[-1] == "run_ended", kinds


def test_workers_lists_the_conformance_worker(hivegrid: Any) -> None:
    result = hivegrid("workers")
    assert result.code == 0
    assert "cli-e2e" in result.out and "python 0.1.0" in result.out
    workers = hivegrid("workers", "--json").json()
    mine = next(w for w in workers if w["worker_name"] == "cli-e2e")
    assert {"echo", "sum", "sleep", "fail"} <= set(mine["agents"])
    assert mine["slots"] == 4 and not mine["draining"]


def test_drain_stops_a_worker(cluster: Cluster, hivegrid: Any) -> None:
    proc = _start_worker(cluster, "drain-me")
    try:
        result = hivegrid("drain", "drain-me")
        assert result.code == 0, result.err
        assert "draining 1 session" in result.out
        assert proc.wait(timeout=20) == 0
    finally:
        proc.stop()


def test_unknown_run_and_worker_are_errors(hivegrid: Any) -> None:
    for argv in (("status", "no-such-run"), ("cancel", "no-such-run"), ("drain", "nobody")):
        result = hivegrid(*argv)
        assert result.code == 1, argv
        assert result.err.startswith("hivegrid: ") and result.err.count("\n") == 1


def test_graph_refused_by_the_server_exits_2(hivegrid: Any, tmp_path: Path) -> None:
    path = _graph(
        tmp_path,
        {
            "limits": {"max_nodes": 1},
            "nodes": [{"id": "a", "agent": "echo"}, {"id": "b", "agent": "echo"}],
        },
    )
    result = hivegrid("submit", path)
    assert result.code == 2
    assert result.err.startswith("hivegrid: the coordinator refused the graph: ")
    assert result.out == ""


def test_cycle_refused_by_the_server(hivegrid: Any, tmp_path: Path) -> None:
    path = _graph(
        tmp_path,
        {
            "nodes": [
                {"id": "a", "agent": "echo", "depends_on": ["b"]},
                {"id": "b", "agent": "echo", "depends_on": ["a"]},
            ]
        },
    )
    result = hivegrid("submit", path)
    assert result.code == 2
    assert "cycle" in result.err.lower()


def test_bad_file_exits_2_before_connecting(hivegrid: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  - id: b\n    agent: echo\n    dependson: [a]\n")
    result = hivegrid("submit", str(path), "--coordinator", "127.0.0.1:1")
    assert result.code == 2
    assert result.err == (
        f'hivegrid: {path}: node "b": unknown field "dependson" (did you mean "depends_on"?)\n'
    )


@pytest.mark.timeout(30)
def test_unreachable_coordinator_exits_3(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    graph = _graph(tmp_path, {"nodes": [{"id": "a", "agent": "echo"}]})
    for argv in (["submit", graph, "--wait"], ["runs"], ["status", "r"], ["workers"]):
        proc = subprocess.run(
            [sys.executable, "-m", "hivegrid.coordinator", *argv, "--coordinator", address],
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert proc.returncode == 3, (argv, proc.stderr)
        assert proc.stderr.startswith(f"hivegrid: cannot reach the coordinator at {address}: ")
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.timeout(30)
def test_env_address_is_used(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("HIVEGRID_COORDINATOR", address)
    assert cli.main(["runs"]) == 3
    assert f"cannot reach the coordinator at {address}" in capsys.readouterr().err


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["submit"],
        ["events", "r", "--from", "x"],
        ["coordinator", "--listen", "nonsense"],
        ["coordinator", "--heartbeat-interval", "5", "--session-timeout", "2"],
        ["worker", "not-a-target"],
        ["worker", "no_such_module_xyz:w"],
        ["worker", "json:dumps"],
        ["coordinator", "--limit", "nonsense"],
        ["coordinator", "--limit", "no_such_limit=1"],
        ["coordinator", "--limit", "max_slots=-1"],
        ["coordinator", "--retain", "forever"],
        ["runs", "delete"],
        ["runs", "r-1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors leave through SystemExit
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert "hivegrid" in err and "Traceback" not in err
