"""Writes a golden event log of the current format, `mixed_run.records.jsonl` (the store's rows,
hivegrid.storage.v1.LogRecord as JSON), from the scenario below, and checks that the run ends as
`mixed_run.expected.json` says.

`mixed_run.jsonl` is the same scenario as an earlier version logged it (hivegrid.v1.RunEvent,
the format before store schema 4): it is never written again. Run this only when the record
format changes on purpose, keeping the file it replaces as a golden of its own (and say so in
the commit):
    .venv/bin/python -m tests.golden.make_golden
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from google.protobuf import json_format

from hivegrid.coordinator.server import Coordinator
from hivegrid.coordinator.store import SqliteStore
from hivegrid.storage.v1.storage_pb2 import LogRecord
from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb
from tests.service.harness import Client, RawWorker, node

HERE = Path(__file__).parent


def digest(run: rpb.GetRunResponse) -> dict[str, object]:
    return {
        "state": gpb.RunState.Name(run.run.state),
        "nodes": {
            n.id: {
                "state": gpb.NodeState.Name(n.state),
                "attempts": n.attempts,
                "result": n.result.decode(),
                "error": n.error.kind,
                "depends_on": list(n.depends_on),
            }
            for n in run.nodes
        },
    }


async def scenario(store_url: str) -> tuple[list[rpb.RunEvent], rpb.GetRunResponse]:
    async with Coordinator(store_url=store_url) as c:
        client = Client(c.address)
        w1 = await RawWorker(c.address, agents=["echo"], slots=3, name="w1").connect()
        retry = gpb.RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
        run_id = await client.submit(
            node("plan", can_mutate=True),
            node("flaky", retry=retry),
            node("lost"),
            node("report", deps=["plan"]),
            node("pruned", deps=["lost"]),
            run_id="golden",
        )
        got = {a.ref.node_id: a for a in await w1.take(3)}
        w1.answer(
            got["plan"],
            b'{"plan": 2}',
            mutations=[
                gpb.Mutation(add_node=gpb.AddNode(node=node("step1", deps=["plan"]))),
                gpb.Mutation(add_node=gpb.AddNode(node=node("step2", deps=["step1"]))),
                gpb.Mutation(add_edge=gpb.AddEdge(from_id="step2", to_id="report")),
            ],
        )
        w1.answer(
            got["flaky"],
            outcome=wpb.OUTCOME_FAILED,
            error=gpb.NodeError(message="boom", retryable=True),
        )
        await w1.ack()
        await w1.ack()
        await client.stub.MutateRun(
            rpb.MutateRunRequest(
                run_id=run_id,
                mutations=[gpb.Mutation(prune_subgraph=gpb.PruneSubgraph(root_id="pruned"))],
            )
        )
        await w1.drop()  # holding "lost": its attempt is lost, at no retry cost
        w2 = await RawWorker(c.address, agents=["echo"], slots=2, name="w2").connect()
        while True:
            run = await client.get(run_id)
            if run.run.state != gpb.RUN_STATE_RUNNING:
                break
            (a,) = await w2.take()
            w2.send(
                wpb.ConnectRequest(
                    progress=wpb.ProgressBatch(items=[wpb.Progress(ref=a.ref, data=b'{"pct": 50}')])
                )
            )
            w2.answer(a, json.dumps({"done": a.ref.node_id}).encode())
            await w2.ack()
        events = await client.events(run_id)
        final = await client.get(run_id)
        await w2.close()
        await client.close()
        return events, final


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "golden.db"
        _, final = asyncio.run(scenario(f"sqlite:///{path}"))
        store = SqliteStore(path)
        store.open()
        rows = [LogRecord.FromString(data) for data in store.replay()]
        store.close()
    expected = json.loads((HERE / "mixed_run.expected.json").read_text())
    if digest(final) != expected:
        raise SystemExit("the scenario no longer ends as mixed_run.expected.json says")
    with open(HERE / "mixed_run.records.jsonl", "w") as f:
        for row in rows:
            f.write(json_format.MessageToJson(row, indent=None, sort_keys=True) + "\n")
    print(f"wrote {len(rows)} records")


if __name__ == "__main__":
    main()
