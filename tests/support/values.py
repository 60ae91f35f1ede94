"""Graph values as tests write them: nodes, mutations, JSON payloads."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from hivegrid.v1 import graph_pb2 as gpb


def to_json(value: Any) -> bytes:
    """JSON value -> the bytes of a proto field (None -> empty, which means null)."""
    if value is None:
        return b""
    return json.dumps(value, separators=(",", ":")).encode()


def from_json(data: bytes) -> Any:
    return json.loads(data) if data else None


def node(node_id: str, agent: str = "echo", deps: Sequence[str] = (), **kw: Any) -> gpb.NodeSpec:
    return gpb.NodeSpec(id=node_id, agent=agent, depends_on=list(deps), **kw)


def spec(value: Mapping[str, Any] | gpb.NodeSpec) -> gpb.NodeSpec:
    """A node described as a dict (plain JSON `input`, `depends_on` or `deps`) -> NodeSpec."""
    if isinstance(value, gpb.NodeSpec):
        return value
    fields = dict(value)
    data = fields.pop("input", None)
    deps = list(fields.pop("depends_on", ())) + list(fields.pop("deps", ()))
    retry = fields.pop("retry", None)
    out = gpb.NodeSpec(input=to_json(data), depends_on=deps, **fields)
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
