"""Golden event logs: logs written by earlier versions must replay to the same state. A change
that breaks old logs fails here (regenerate with make_golden.py only on purpose).

`mixed_run.jsonl` was written as hivegrid.v1.RunEvent rows, the log's format before store
schema 4; the log has held hivegrid.storage.v1.LogRecord rows since. Old rows are never
rewritten: they must replay as they are, in a store of either schema, also with new rows after
them, and watchers must be served them as before."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from google.protobuf import json_format

from hivegrid.coordinator.server import Coordinator
from hivegrid.coordinator.store import SCHEMA_VERSION, SqliteStore
from hivegrid.storage.v1.storage_pb2 import EventBatch, LogRecord
from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from tests.support.inprocess import Client
from tests.support.values import node

from .make_golden import digest

HERE = Path(__file__).parent


def golden_events() -> list[rpb.RunEvent]:
    lines = (HERE / "mixed_run.jsonl").read_text().splitlines()
    return [json_format.Parse(line, rpb.RunEvent()) for line in lines]


def write_store(path: Path, events: list[rpb.RunEvent]) -> None:
    store = SqliteStore(path)
    store.open()
    store.append([(e.run_id, e.seq, e.SerializeToString()) for e in events])
    store.close()


async def replayed(url: str) -> rpb.GetRunResponse:
    async with Coordinator(store_url=url) as c, Client(c.address) as client:
        return await client.get("golden")


@pytest.mark.asyncio
async def test_golden_log_replays_to_the_recorded_state(tmp_path: Path) -> None:
    events = golden_events()
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
    write_store(tmp_path / "golden.db", events)
    expected = json.loads((HERE / "mixed_run.expected.json").read_text())
    assert digest(await replayed(f"sqlite:///{tmp_path}/golden.db")) == expected


@pytest.mark.asyncio
async def test_golden_records_replay_to_the_recorded_state(tmp_path: Path) -> None:
    """The same scenario in the current format (LogRecord rows): it must keep replaying too."""
    lines = (HERE / "mixed_run.records.jsonl").read_text().splitlines()
    rows = [json_format.Parse(line, LogRecord()) for line in lines]
    kinds = {r.WhichOneof("decision") for r in rows}
    assert {"submitted", "dispatched", "finished", "lost", "mutated", "progress", "ended"} <= kinds
    store = SqliteStore(tmp_path / "golden.db")
    store.open()
    store.append([(r.run_id, r.seq, r.SerializeToString()) for r in rows])
    store.close()
    expected = json.loads((HERE / "mixed_run.expected.json").read_text())
    assert digest(await replayed(f"sqlite:///{tmp_path}/golden.db")) == expected


@pytest.mark.asyncio
async def test_a_schema_3_store_is_upgraded_in_place_and_its_rows_kept(tmp_path: Path) -> None:
    """The file an older coordinator left: RunEvent rows, schema 3. It opens, replays, says
    schema 4, and its rows are the bytes they were."""
    path = tmp_path / "v3.db"
    events = golden_events()
    write_store(path, events)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    expected = json.loads((HERE / "mixed_run.expected.json").read_text())
    assert digest(await replayed(f"sqlite:///{path}")) == expected
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        rows = [
            EventBatch.FromString(d).events for (d,) in conn.execute("SELECT data FROM batches")
        ]
    assert int(version) == SCHEMA_VERSION == 4
    assert [e for batch in rows for e in batch] == [e.SerializeToString() for e in events]


@pytest.mark.asyncio
async def test_old_and_new_rows_replay_together_and_watchers_see_both(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    url = f"sqlite:///{path}"
    events = golden_events()
    write_store(path, events)
    # A new coordinator on the old log: its own records follow the old rows. It dies without a
    # snapshot, so the next one replays the whole log, both forms.
    c = Coordinator(store_url=url)
    await c.start()
    async with Client(c.address) as client:
        new_run = await client.submit(node("a"), node("b", deps=["a"]), name="after")
        await client.stub.CancelRun(rpb.CancelRunRequest(run_id=new_run, reason="enough"))
    await c.runtime.durable()
    await c.abandon()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM snapshots").fetchone() == (0,)
        (last,) = conn.execute("SELECT data FROM batches ORDER BY id DESC LIMIT 1").fetchone()
    (record,) = EventBatch.FromString(last).events[-1:]
    assert LogRecord.FromString(record).WhichOneof("decision") == "ended"

    expected = json.loads((HERE / "mixed_run.expected.json").read_text())
    async with Coordinator(store_url=url) as c2, Client(c2.address) as client:
        assert c2.runtime.replayed_events == len(events) + 3
        assert digest(await client.get("golden")) == expected
        after = await client.get(new_run)
        assert after.run.state == gpb.RUN_STATE_CANCELLED
        assert {n.id: n.state for n in after.nodes} == {
            "a": gpb.NODE_STATE_CANCELLED,
            "b": gpb.NODE_STATE_CANCELLED,
        }
        # The old rows, served as they were written (leases are never shown); the only change:
        # a failure that named no kind shows the kind it was taken as.
        watched = await client.events("golden")
        for e in events:
            kind = e.WhichOneof("kind")
            if kind in ("node_dispatched", "attempt_finished", "attempt_lost"):
                getattr(e, kind).lease = 0
            if kind == "attempt_finished" and e.attempt_finished.HasField("error"):
                e.attempt_finished.error.kind = e.attempt_finished.error.kind or "agent"
        assert watched == events
        # And the new ones, in the same public form.
        fresh = await client.events(new_run)
        assert [e.WhichOneof("kind") for e in fresh] == [
            "run_submitted",
            "run_cancelled",
            "run_ended",
        ]
        submitted = fresh[0].run_submitted
        assert [n.id for n in submitted.nodes] == ["a", "b"]
        assert list(submitted.nodes[1].depends_on) == ["a"]
        assert submitted.name == "after"
        assert fresh[1].run_cancelled.reason == "enough"
        assert fresh[2].run_ended.state == gpb.RUN_STATE_CANCELLED
