"""Graph mutations: a builder for agents, and the JSON form of docs/protocol.md ("Mutations").

A mutation batch travels with the agent's successful result and commits with it, or not at all.
The SDK does not validate a batch (the coordinator does, against the live graph): a rejected
batch comes back as an `ACK_STATUS_MUTATIONS_REJECTED` and fails the attempt.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from google.protobuf import json_format

from hivegrid.v1 import graph_pb2 as gpb

from ._codec import to_json

__all__ = ["MutationBuilder", "RetryLike", "SpecLike", "mutations_from_json", "node_spec"]

RetryLike = gpb.RetryPolicy | Mapping[str, Any]
# A node description: a NodeSpec, or its JSON form ({"id": ..., "agent": ..., "input": <JSON>}).
SpecLike = gpb.NodeSpec | Mapping[str, Any]


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


def _retry(value: RetryLike) -> gpb.RetryPolicy:
    if isinstance(value, gpb.RetryPolicy):
        return value
    return gpb.RetryPolicy(**value)


def node_spec(
    id: str,
    agent: str,
    input: Any = None,
    *,
    depends_on: Iterable[str] = (),
    retry: RetryLike | None = None,
    timeout_s: float = 0,
    priority: int = 0,
    labels: Mapping[str, str] | None = None,
    can_mutate: bool = False,
    metadata: Mapping[str, str] | None = None,
    run_on_failure: bool = False,
) -> gpb.NodeSpec:
    """Describes a node; `input` is any JSON-serializable value."""
    spec = gpb.NodeSpec(
        id=id,
        agent=agent,
        input=to_json(input),
        depends_on=list(depends_on),
        timeout_s=timeout_s,
        priority=priority,
        labels=labels or {},
        can_mutate=can_mutate,
        metadata=metadata or {},
        run_on_failure=run_on_failure,
    )
    if retry is not None:
        spec.retry.CopyFrom(_retry(retry))
    return spec


def _spec(value: SpecLike) -> gpb.NodeSpec:
    if isinstance(value, gpb.NodeSpec):
        return value
    return json_format.ParseDict(_spec_json(value), gpb.NodeSpec())


def _b64_json(value: Any) -> str:
    return base64.b64encode(to_json(value)).decode("ascii")


def _spec_json(spec: Any) -> Any:
    if not isinstance(spec, Mapping):
        raise ValueError(f"a node must be a JSON object, not {spec!r}")
    out = dict(spec)
    if "input" in out:
        out["input"] = _b64_json(out["input"])
    return out


# The fields of each kind that hold node specs or JSON inputs (plain JSON in the JSON form,
# base64 bytes in protobuf's own JSON mapping).
def _to_protobuf_json(kind: str, body: Any) -> Any:
    if not isinstance(body, Mapping):
        raise ValueError(f"the value of {kind!r} must be a JSON object, not {body!r}")
    out = dict(body)
    if kind in ("add_node", "inject_before") and "node" in out:
        out["node"] = _spec_json(out["node"])
    elif kind == "split_node" and "replacements" in out:
        replacements = out["replacements"]
        if not isinstance(replacements, list):
            raise ValueError("split_node.replacements must be a list of nodes")
        out["replacements"] = [_spec_json(r) for r in replacements]
    elif kind == "modify_node" and "input" in out:
        out["input"] = _b64_json(out["input"])
    return out


def mutations_from_json(items: Iterable[Mapping[str, Any]]) -> list[gpb.Mutation]:
    """Converts mutations in their JSON form, e.g. `{"add_edge": {"from_id": "a", "to_id": "b"}}`.

    Raises ValueError, naming the offending item, when one is malformed.
    """
    out = []
    for i, item in enumerate(items, 1):  # 1-based, as the coordinator counts them
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ValueError(
                f"mutation {i}: expected an object with exactly one key (the kind), got {item!r}"
            )
        ((kind, body),) = item.items()
        if kind not in gpb.Mutation.DESCRIPTOR.fields_by_name:
            raise ValueError(f"mutation {i}: unknown kind {kind!r}")
        try:
            m = json_format.ParseDict({kind: _to_protobuf_json(kind, body)}, gpb.Mutation())
        except (json_format.ParseError, ValueError) as exc:
            raise ValueError(f"mutation {i} ({kind}): {exc}") from exc
        out.append(m)
    return out


class MutationBuilder:
    """Collects a mutation batch; `Context` inherits these methods."""

    __slots__ = ("_mutations",)

    def __init__(self) -> None:
        self._mutations: list[gpb.Mutation] | None = None

    @property
    def mutations(self) -> list[gpb.Mutation]:
        """The batch so far, in order."""
        if self._mutations is None:
            self._mutations = []
        return self._mutations

    def add_mutations(self, mutations: Iterable[gpb.Mutation]) -> None:
        self.mutations.extend(mutations)

    def mutations_from_json(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Appends mutations given in their JSON form (see `worker.mutations_from_json`)."""
        self.mutations.extend(mutations_from_json(items))

    def add_node(
        self,
        id: str,
        agent: str,
        input: Any = None,
        *,
        depends_on: Iterable[str] = (),
        retry: RetryLike | None = None,
        timeout_s: float = 0,
        priority: int = 0,
        labels: Mapping[str, str] | None = None,
        can_mutate: bool = False,
        speculative: bool = False,
        metadata: Mapping[str, str] | None = None,
        run_on_failure: bool = False,
    ) -> None:
        spec = node_spec(
            id,
            agent,
            input,
            depends_on=depends_on,
            retry=retry,
            timeout_s=timeout_s,
            priority=priority,
            labels=labels,
            can_mutate=can_mutate,
            metadata=metadata,
            run_on_failure=run_on_failure,
        )
        self.mutations.append(
            gpb.Mutation(add_node=gpb.AddNode(node=spec, speculative=speculative))
        )

    def add_edge(self, from_id: str, to_id: str) -> None:
        """Makes `to_id` (not started) depend on `from_id`."""
        self.mutations.append(gpb.Mutation(add_edge=gpb.AddEdge(from_id=from_id, to_id=to_id)))

    def remove_edge(self, from_id: str, to_id: str) -> None:
        self.mutations.append(
            gpb.Mutation(remove_edge=gpb.RemoveEdge(from_id=from_id, to_id=to_id))
        )

    def remove_node(self, id: str) -> None:
        self.mutations.append(gpb.Mutation(remove_node=gpb.RemoveNode(id=id)))

    def modify_node(
        self,
        id: str,
        *,
        input: Any = UNSET,
        priority: int | _Unset = UNSET,
        timeout_s: float | _Unset = UNSET,
        retry: RetryLike | None = None,
    ) -> None:
        """Changes a node that has not started; only the arguments given change."""
        m = gpb.ModifyNode(id=id)
        if not isinstance(input, _Unset):
            m.input = to_json(input)
        if not isinstance(priority, _Unset):
            m.priority = priority
        if not isinstance(timeout_s, _Unset):
            m.timeout_s = timeout_s
        if retry is not None:
            m.retry.CopyFrom(_retry(retry))
        self.mutations.append(gpb.Mutation(modify_node=m))

    def split_node(self, id: str, replacements: Sequence[SpecLike]) -> None:
        """Replaces a node that has not started by `replacements` (see `worker.node_spec`)."""
        split = gpb.SplitNode(id=id, replacements=[_spec(r) for r in replacements])
        self.mutations.append(gpb.Mutation(split_node=split))

    def inject_before(self, target_id: str, node: SpecLike) -> None:
        self.mutations.append(
            gpb.Mutation(inject_before=gpb.InjectBefore(target_id=target_id, node=_spec(node)))
        )

    def prune_subgraph(self, root_id: str) -> None:
        self.mutations.append(gpb.Mutation(prune_subgraph=gpb.PruneSubgraph(root_id=root_id)))

    def mark_speculative(self, id: str) -> None:
        self.mutations.append(gpb.Mutation(mark_speculative=gpb.MarkSpeculative(id=id)))

    def confirm_speculative(self, id: str) -> None:
        self.mutations.append(gpb.Mutation(confirm_speculative=gpb.ConfirmSpeculative(id=id)))

    def discard_speculative(self, id: str) -> None:
        self.mutations.append(gpb.Mutation(discard_speculative=gpb.DiscardSpeculative(id=id)))
