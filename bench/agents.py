"""The agents every benchmark worker runs, as plain functions of (node id, input) -> (result,
mutations), so that the SDK worker and the raw protocol worker run exactly the same work.

- noop: returns null.
- stamp: returns {"s": start, "e": end} (wall clock), so that chain hops can be measured where the
  worker sees them: result of node i sent -> assignment of node i+1 started.
- spawn: input {"count": n, "child": agent, "child_input": any}: adds n children
  "<id>/c<i>" (can_mutate) and a join "<id>/join" depending on all of them.
- join: returns the number of dependency results it received.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hivegrid.v1 import graph_pb2 as gpb

AGENTS = ("noop", "stamp", "spawn", "join")


def stamp() -> bytes:
    t = time.time()
    return b'{"s":%r,"e":%r}' % (t, time.time())


def spawn_mutations(node_id: str, spec: dict[str, Any]) -> list[gpb.Mutation]:
    count = int(spec["count"])
    child = spec.get("child", "noop")
    child_input = json.dumps(spec.get("child_input")).encode()
    if child_input == b"null":
        child_input = b""
    out = []
    ids = []
    for i in range(count):
        cid = f"{node_id}/c{i}"
        ids.append(cid)
        out.append(
            gpb.Mutation(
                add_node=gpb.AddNode(
                    node=gpb.NodeSpec(id=cid, agent=child, input=child_input, can_mutate=True)
                )
            )
        )
    out.append(
        gpb.Mutation(
            add_node=gpb.AddNode(
                node=gpb.NodeSpec(id=f"{node_id}/join", agent="join", depends_on=ids)
            )
        )
    )
    return out


def spawn_input(count: int, child: str = "noop", child_input: Any = None) -> bytes:
    return json.dumps({"count": count, "child": child, "child_input": child_input}).encode()
