"""Conversions between the wire (hivegrid.v1 protos) and the core's domain types."""

from __future__ import annotations

from collections.abc import Iterable

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb

from . import core
from .core import graph as core_graph

# The core's own instance: its checks skip it by identity.
_DEFAULT_RETRY = core.DEFAULT_RETRY


def retry_from_pb(msg: gpb.RetryPolicy) -> core.RetryPolicy:
    d = _DEFAULT_RETRY
    return core.RetryPolicy(
        max_attempts=msg.max_attempts or d.max_attempts,
        initial_backoff_s=msg.initial_backoff_s or d.initial_backoff_s,
        max_backoff_s=msg.max_backoff_s or d.max_backoff_s,
        multiplier=msg.multiplier or d.multiplier,
        jitter=msg.jitter,
    )


def spec_from_pb(msg: gpb.NodeSpec, node_id: str | None = None) -> core.NodeSpec:
    # Positional, and each map read once: replaying a 100,000-node submission spends a
    # quarter of its time here (keywords cost 25% more).
    labels = msg.labels
    metadata = msg.metadata
    return core.NodeSpec(
        node_id if node_id is not None else msg.id,
        msg.agent,
        msg.input,
        tuple(msg.depends_on),
        retry_from_pb(msg.retry) if msg.HasField("retry") else _DEFAULT_RETRY,
        msg.timeout_s,
        msg.priority,
        tuple(sorted(labels.items())) if labels else (),
        msg.can_mutate,
        dict(metadata) if metadata else {},
        msg.run_on_failure,
    )


def specs_for_submit(nodes: Iterable[gpb.NodeSpec]) -> list[core.NodeSpec]:
    """Nodes submitted without an id get `n<position>` (1-based)."""
    return [spec_from_pb(n, n.id or f"n{i}") for i, n in enumerate(nodes, 1)]


def limits_from_pb(msg: gpb.RunLimits, default: core.RunLimits) -> core.RunLimits:
    return core.RunLimits(
        max_nodes=msg.max_nodes or default.max_nodes,
        max_spawn_depth=msg.max_spawn_depth or default.max_spawn_depth,
    )


def limits_to_pb(limits: core.RunLimits) -> gpb.RunLimits:
    return gpb.RunLimits(max_nodes=limits.max_nodes, max_spawn_depth=limits.max_spawn_depth)


def mutation_from_pb(m: gpb.Mutation) -> core.Mutation:
    kind = m.WhichOneof("kind")
    if kind == "add_node":
        return core.AddNode(spec_from_pb(m.add_node.node), m.add_node.speculative)
    if kind == "add_edge":
        return core.AddEdge(m.add_edge.from_id, m.add_edge.to_id)
    if kind == "remove_edge":
        return core.RemoveEdge(m.remove_edge.from_id, m.remove_edge.to_id)
    if kind == "remove_node":
        return core.RemoveNode(m.remove_node.id)
    if kind == "modify_node":
        x = m.modify_node
        return core.ModifyNode(
            x.id,
            input=x.input if x.HasField("input") else None,
            priority=x.priority if x.HasField("priority") else None,
            retry=retry_from_pb(x.retry) if x.HasField("retry") else None,
            timeout_s=x.timeout_s if x.HasField("timeout_s") else None,
        )
    if kind == "split_node":
        return core.SplitNode(
            m.split_node.id, tuple(spec_from_pb(r) for r in m.split_node.replacements)
        )
    if kind == "inject_before":
        return core.InjectBefore(m.inject_before.target_id, spec_from_pb(m.inject_before.node))
    if kind == "prune_subgraph":
        return core.PruneSubgraph(m.prune_subgraph.root_id)
    if kind == "mark_speculative":
        return core.MarkSpeculative(m.mark_speculative.id)
    if kind == "confirm_speculative":
        return core.ConfirmSpeculative(m.confirm_speculative.id)
    if kind == "discard_speculative":
        return core.DiscardSpeculative(m.discard_speculative.id)
    raise core.GraphError(
        "a mutation without a kind (empty, or a kind this coordinator does not know)"
    )


def mutations_from_pb(ms: Iterable[gpb.Mutation]) -> list[core.Mutation]:
    return [mutation_from_pb(m) for m in ms]


def error_from_pb(msg: gpb.NodeError) -> core.NodeError:
    return core.NodeError(msg.message, msg.retryable, msg.kind or "agent")


def error_to_pb(err: core.NodeError) -> gpb.NodeError:
    return gpb.NodeError(message=err.message, retryable=err.retryable, kind=err.kind)


def run_info(run: core_graph.Run) -> rpb.RunInfo:
    c = run.counts
    S = core.NodeState
    return rpb.RunInfo(
        run_id=run.run_id,
        name=run.name,
        state=gpb.RunState.ValueType(run.state),
        counts=rpb.NodeCounts(
            pending=c[S.PENDING],
            ready=c[S.READY],
            running=c[S.RUNNING],
            succeeded=c[S.SUCCEEDED],
            failed=c[S.FAILED],
            cancelled=c[S.CANCELLED],
            skipped=c[S.SKIPPED],
            speculative=c[S.SPECULATIVE],
        ),
        created_at=run.created_at,
        ended_at=run.ended_at,
        last_seq=run.last_seq,
    )


def node_status(node: core_graph.Node, *, with_result: bool) -> rpb.NodeStatus:
    msg = rpb.NodeStatus(
        id=node.id,
        agent=node.spec.agent,
        state=gpb.NodeState.ValueType(node.state),
        attempts=node.attempt,
        depends_on=node.deps,
        parent_id=node.parent_id,
        spawn_depth=node.depth,
    )
    if with_result and node.state is core.NodeState.SUCCEEDED:
        msg.result = node.result
    if node.error is not None and node.state is not core.NodeState.SUCCEEDED:
        msg.error.CopyFrom(error_to_pb(node.error))
    return msg


def retry_to_pb(policy: core.RetryPolicy) -> gpb.RetryPolicy:
    return gpb.RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_backoff_s=policy.initial_backoff_s,
        max_backoff_s=policy.max_backoff_s,
        multiplier=policy.multiplier,
        jitter=policy.jitter,
    )


def spec_to_pb(spec: core.NodeSpec, depends_on: Iterable[str]) -> gpb.NodeSpec:
    msg = gpb.NodeSpec()
    fill_spec_pb(msg, spec, depends_on)
    return msg


def fill_spec_pb(msg: gpb.NodeSpec, spec: core.NodeSpec, depends_on: Iterable[str]) -> None:
    """Writes `spec` into an empty message in place, setting only what differs from the
    defaults: snapshots write every node this way (twice as fast as building and copying)."""
    msg.id = spec.id
    msg.agent = spec.agent
    if spec.input:
        msg.input = spec.input
    if depends_on:
        msg.depends_on.extend(depends_on)
    if spec.retry is not _DEFAULT_RETRY and spec.retry != _DEFAULT_RETRY:
        msg.retry.CopyFrom(retry_to_pb(spec.retry))
    if spec.timeout_s:
        msg.timeout_s = spec.timeout_s
    if spec.priority:
        msg.priority = spec.priority
    if spec.labels:
        msg.labels.update(spec.labels)
    if spec.can_mutate:
        msg.can_mutate = True
    if spec.metadata:
        msg.metadata.update(spec.metadata)
    if spec.run_on_failure:
        msg.run_on_failure = True
