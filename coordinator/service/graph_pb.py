"""graph.proto's types to and from the core's: nodes, retry policies, limits, mutations, errors.

Shared by the wire (the services) and the store (the log codec and the snapshot embed these
messages), so it imports nothing of either. Writers fill a message in place and set only what
differs from the defaults: a node comes out the way a client usually sends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hivegrid.v1 import graph_pb2 as gpb

from .. import core

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


def fill_retry_pb(msg: gpb.RetryPolicy, policy: core.RetryPolicy) -> None:
    """Writes only what differs from the defaults (as a client sends it, mostly), marking the
    message present even when nothing does."""
    d = _DEFAULT_RETRY
    msg.SetInParent()
    if policy.max_attempts != d.max_attempts:
        msg.max_attempts = policy.max_attempts
    if policy.initial_backoff_s != d.initial_backoff_s:
        msg.initial_backoff_s = policy.initial_backoff_s
    if policy.max_backoff_s != d.max_backoff_s:
        msg.max_backoff_s = policy.max_backoff_s
    if policy.multiplier != d.multiplier:
        msg.multiplier = policy.multiplier
    if policy.jitter:
        msg.jitter = policy.jitter


def retry_to_pb(policy: core.RetryPolicy) -> gpb.RetryPolicy:
    msg = gpb.RetryPolicy()
    fill_retry_pb(msg, policy)
    return msg


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


def specs_from_pb(nodes: Iterable[gpb.NodeSpec]) -> tuple[core.NodeSpec, ...]:
    """As sent: a node without an id keeps none (the core gives it one)."""
    return tuple(spec_from_pb(n) for n in nodes)


def fill_spec_pb(msg: gpb.NodeSpec, spec: core.NodeSpec, depends_on: Iterable[str]) -> None:
    """Writes `spec` into an empty message in place, setting only what differs from the
    defaults: snapshots and the log write every node this way (twice as fast as building and
    copying)."""
    msg.id = spec.id
    msg.agent = spec.agent
    if spec.input:
        msg.input = spec.input
    if depends_on:
        msg.depends_on.extend(depends_on)
    if spec.retry is not _DEFAULT_RETRY and spec.retry != _DEFAULT_RETRY:
        fill_retry_pb(msg.retry, spec.retry)
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


def spec_to_pb(spec: core.NodeSpec, depends_on: Iterable[str]) -> gpb.NodeSpec:
    msg = gpb.NodeSpec()
    fill_spec_pb(msg, spec, depends_on)
    return msg


def limits_from_pb(msg: gpb.RunLimits) -> core.RunLimits | None:
    """None, or limits whose zero fields the core fills in with its defaults."""
    if not msg.max_nodes and not msg.max_spawn_depth:
        return None
    return core.RunLimits(max_nodes=msg.max_nodes, max_spawn_depth=msg.max_spawn_depth)


def fill_limits_pb(msg: gpb.RunLimits, limits: core.RunLimits) -> None:
    msg.max_nodes = limits.max_nodes
    msg.max_spawn_depth = limits.max_spawn_depth


def limits_to_pb(limits: core.RunLimits) -> gpb.RunLimits:
    return gpb.RunLimits(max_nodes=limits.max_nodes, max_spawn_depth=limits.max_spawn_depth)


_UNKNOWN = core.UnknownMutation()


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
    # Empty, or a kind from a newer version: the core rejects the batch that holds it.
    return _UNKNOWN


def mutations_from_pb(ms: Iterable[gpb.Mutation]) -> tuple[core.Mutation, ...]:
    return tuple(mutation_from_pb(m) for m in ms)


def fill_mutation_pb(msg: gpb.Mutation, m: core.Mutation) -> None:
    """Writes `m` into an empty message in place."""
    match m:
        case core.AddNode():
            x = msg.add_node
            fill_spec_pb(x.node, m.node, m.node.depends_on)
            if m.speculative:
                x.speculative = True
        case core.AddEdge():
            e = msg.add_edge
            e.SetInParent()
            e.from_id, e.to_id = m.from_id, m.to_id
        case core.RemoveEdge():
            r = msg.remove_edge
            r.SetInParent()
            r.from_id, r.to_id = m.from_id, m.to_id
        case core.RemoveNode():
            msg.remove_node.SetInParent()
            msg.remove_node.id = m.id
        case core.ModifyNode():
            y = msg.modify_node
            y.SetInParent()
            y.id = m.id
            if m.input is not None:
                y.input = m.input
            if m.priority is not None:
                y.priority = m.priority
            if m.retry is not None:
                fill_retry_pb(y.retry, m.retry)
            if m.timeout_s is not None:
                y.timeout_s = m.timeout_s
        case core.SplitNode():
            s = msg.split_node
            s.SetInParent()
            s.id = m.id
            add = s.replacements.add
            for spec in m.replacements:
                fill_spec_pb(add(), spec, spec.depends_on)
        case core.InjectBefore():
            i = msg.inject_before
            i.target_id = m.target_id
            fill_spec_pb(i.node, m.node, m.node.depends_on)
        case core.PruneSubgraph():
            msg.prune_subgraph.SetInParent()
            msg.prune_subgraph.root_id = m.root_id
        case core.MarkSpeculative():
            msg.mark_speculative.SetInParent()
            msg.mark_speculative.id = m.id
        case core.ConfirmSpeculative():
            msg.confirm_speculative.SetInParent()
            msg.confirm_speculative.id = m.id
        case core.DiscardSpeculative():
            msg.discard_speculative.SetInParent()
            msg.discard_speculative.id = m.id
        case core.UnknownMutation():
            # The core rejects every batch holding one: none is ever logged or shown.
            raise ValueError("a mutation of no known kind cannot be written")


def fill_mutations_pb(out: object, mutations: Sequence[core.Mutation]) -> None:
    """Appends `mutations` to a repeated Mutation field."""
    add = out.add  # type: ignore[attr-defined]
    for m in mutations:
        fill_mutation_pb(add(), m)


def mutation_to_pb(m: core.Mutation) -> gpb.Mutation:
    msg = gpb.Mutation()
    fill_mutation_pb(msg, m)
    return msg


def error_from_pb(msg: gpb.NodeError) -> core.NodeError:
    return core.NodeError(msg.message, msg.retryable, msg.kind or "agent")


def error_to_pb(err: core.NodeError) -> gpb.NodeError:
    return gpb.NodeError(message=err.message, retryable=err.retryable, kind=err.kind)


def fill_error_pb(msg: gpb.NodeError, err: core.NodeError) -> None:
    msg.message = err.message
    msg.retryable = err.retryable
    msg.kind = err.kind
