"""`hivegrid mutate`, the command the client API brought (the others are in test_cli_e2e.py),
against a real coordinator process and the Python conformance worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hivegrid.client import Client, NodeState
from hivegrid.coordinator import cli
from tests.support.processes import CoordinatorProcess, WorkerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    coordinator = CoordinatorProcess(tmp_path_factory.mktemp("coordinator"))
    worker = None
    try:
        address = coordinator.start()
        worker = WorkerProcess("python", address, coordinator.log_dir, name="cli-mutate")
        worker.wait_connected()
        yield address
    finally:
        if worker is not None:
            worker.stop()
        coordinator.stop()


def _hivegrid(capsys: pytest.CaptureFixture[str], address: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([*argv, "--coordinator", address])
    out, err = capsys.readouterr()
    return code, out, err


def _write(tmp_path: Path, name: str, doc: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_mutate_adds_nodes_to_a_running_run(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(address) as client:
        run_id = client.submit({"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
        try:
            batch = [
                {"add_node": {"node": {"id": "x", "agent": "value", "input": {"value": 1}}}},
                {"add_node": {"node": {"id": "y", "agent": "echo", "depends_on": ["s"]}}},
            ]
            path = _write(tmp_path, "m.json", batch)
            code, out, err = _hivegrid(capsys, address, "mutate", run_id, path)
            assert code == 0, err
            seq = int(out.strip().rsplit("#", 1)[1].rstrip(")"))
            assert out == f"run {run_id}: 2 mutations applied (event #{seq})\n"
            applied = next(e for e in client.events(run_id, after=seq - 1))
            assert applied.kind == "mutations_applied" and applied.mutations == tuple(batch)
            assert client.get_run(run_id).node("y").state == NodeState.PENDING

            # The {"mutations": [...]} form, in YAML.
            yaml_path = tmp_path / "m.yaml"
            yaml_path.write_text("mutations:\n  - remove_node: {id: y}\n")
            code, out, _ = _hivegrid(capsys, address, "mutate", run_id, str(yaml_path))
            assert code == 0 and out.startswith(f"run {run_id}: 1 mutation applied")
            assert "y" not in {n.id for n in client.get_run(run_id).nodes}
        finally:
            client.cancel(run_id)


def test_mutate_errors(address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(address) as client:
        run_id = client.submit({"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
        try:
            refused = _write(tmp_path, "r.json", [{"add_edge": {"from_id": "nope", "to_id": "s"}}])
            code, out, err = _hivegrid(capsys, address, "mutate", run_id, refused)
            assert code == 2 and out == ""
            assert err.startswith("hivegrid: the coordinator refused the mutations: ")
            assert "nope" in err and err.count("\n") == 1

            bad_kind = _write(tmp_path, "k.json", [{"add_nod": {}}])
            code, _, err = _hivegrid(capsys, address, "mutate", run_id, bad_kind)
            assert (code, err) == (2, f"hivegrid: {bad_kind}: mutation 1: unknown kind 'add_nod'\n")

            not_a_list = _write(tmp_path, "o.json", {"add_node": {}})
            code, _, err = _hivegrid(capsys, address, "mutate", run_id, not_a_list)
            assert code == 2 and "expected a non-empty list of mutations" in err

            missing = str(tmp_path / "missing.json")
            code, _, err = _hivegrid(capsys, address, "mutate", run_id, missing)
            assert (code, err) == (2, f"hivegrid: {missing}: no such file\n")

            ok = _write(tmp_path, "ok.json", [{"remove_node": {"id": "zzz"}}])
            code, _, err = _hivegrid(capsys, address, "mutate", "no-such-run", ok)
            assert (code, err) == (1, "hivegrid: no run 'no-such-run'\n")
        finally:
            client.cancel(run_id)
