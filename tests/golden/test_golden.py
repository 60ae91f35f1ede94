"""Golden event logs: logs written by earlier versions must replay to the same state. A change
that breaks old logs fails here (regenerate with make_golden.py only on purpose)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from google.protobuf import json_format

from hivegrid.coordinator.server import Coordinator
from hivegrid.coordinator.store import SqliteStore
from hivegrid.v1 import run_pb2 as rpb
from tests.service.harness import Client

from .make_golden import digest

HERE = Path(__file__).parent


def test_golden_log_replays_to_the_recorded_state(tmp_path: Path) -> None:
    lines = (HERE / "mixed_run.jsonl").read_text().splitlines()
    events = [json_format.Parse(line, rpb.RunEvent()) for line in lines]
    kinds = {e.WhichOneof("kind") for e in events}
    assert {
        "run_submitted",
        "node_dispatched",
        "attempt_finished",
        "attempt_lost",
        "mutations_applied",
        "progress",
        "run_ended",
    } <= kinds
    store = SqliteStore(tmp_path / "golden.db")
    store.open()
    store.append([(e.run_id, e.seq, e.SerializeToString()) for e in events])
    store.close()
    expected = json.loads((HERE / "mixed_run.expected.json").read_text())

    async def replay() -> rpb.GetRunResponse:
        async with Coordinator(store_url=f"sqlite:///{tmp_path}/golden.db") as c:
            client = Client(c.address)
            run = await client.get("golden")
            await client.close()
            return run

    assert digest(asyncio.run(replay())) == expected
