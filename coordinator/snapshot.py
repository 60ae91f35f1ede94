"""Snapshots of the core's state, so that recovery replays only the log's tail.

A snapshot is taken on the event loop (the core is consistent between stimuli) and written by the
journal's writer in the same transaction as every event appended before it, so it covers exactly
the events up to its position in the log.
"""

from __future__ import annotations

from hivegrid.storage.v1 import storage_pb2 as spb

from . import convert
from .core import Core, NodeState, RestoredNode, RunLimits


def dump(core: Core) -> bytes:
    snap = spb.Snapshot()
    for run in core.runs.values():
        r = snap.runs.add(
            run_id=run.run_id,
            name=run.name,
            state=int(run.state),
            created_at=run.created_at,
            ended_at=run.ended_at,
            last_seq=run.last_seq,
            rng_state=run.rng_state,
            cancelled=run.cancelled,
            failed=run.failed,
        )
        r.limits.max_nodes = run.limits.max_nodes
        r.limits.max_spawn_depth = run.limits.max_spawn_depth
        add = r.nodes.add
        fill_spec = convert.fill_spec_pb
        for node in run.nodes.values():
            n = add(
                state=int(node.state),
                attempt=node.attempt,
                failures=node.failures,
                lease=node.lease,
                result=node.result,
                parent_id=node.parent_id,
                spawn_depth=node.depth,
                not_before=node.not_before,
                open_attempt=node.open,
            )
            fill_spec(n.spec, node.spec, node.deps)
            if node.error is not None:
                n.error.CopyFrom(convert.error_to_pb(node.error))
    return snap.SerializeToString()


def load(core: Core, data: bytes, *, now: float) -> int:
    """Restores every run of a snapshot into an empty core; returns how many."""
    snap = spb.Snapshot.FromString(data)
    for r in snap.runs:
        nodes = [
            RestoredNode(
                spec=convert.spec_from_pb(n.spec),
                state=NodeState(n.state),
                attempt=n.attempt,
                failures=n.failures,
                lease=n.lease,
                result=n.result,
                error=convert.error_from_pb(n.error) if n.HasField("error") else None,
                parent_id=n.parent_id,
                depth=n.spawn_depth,
                not_before=n.not_before,
                open=n.open_attempt,
            )
            for n in r.nodes
        ]
        core.restore_run(
            r.run_id,
            name=r.name,
            limits=RunLimits(
                max_nodes=r.limits.max_nodes, max_spawn_depth=r.limits.max_spawn_depth
            ),
            created_at=r.created_at,
            ended_at=r.ended_at,
            last_seq=r.last_seq,
            rng_state=r.rng_state,
            cancelled=r.cancelled,
            failed=r.failed,
            nodes=nodes,
            now=now,
        )
    return len(snap.runs)
