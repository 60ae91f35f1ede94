"""Snapshots of the core's state, so that recovery replays only the log's tail.

A snapshot is taken on the event loop (the core is consistent between stimuli) and written by the
journal's writer in the same transaction as every event appended before it, so it covers exactly
the events up to its position in the log. It is written as chunks of bounded size (a run larger
than a chunk continues in the next ones), so no single row of the store holds the whole state.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from hivegrid.storage.v1 import storage_pb2 as spb

from .core import Core, NodeState, RestoredNode, RunLimits
from .core.graph import Run
from .service.graph_pb import error_from_pb, error_to_pb, fill_spec_pb, spec_from_pb

# A chunk ends after this many nodes or about this many bytes of inputs and results.
CHUNK_NODES = 50_000
CHUNK_BYTES = 8 * 1024 * 1024


def dump(core: Core) -> list[bytes]:
    chunks: list[bytes] = []
    snap = spb.Snapshot()
    held_nodes = 0
    held_bytes = 0
    fill_spec = fill_spec_pb
    for run in core.runs.values():
        part = 0
        r = _run_header(snap, run, part)
        add = r.nodes.add
        for node in run.nodes.values():
            if held_nodes >= CHUNK_NODES or held_bytes >= CHUNK_BYTES:
                chunks.append(snap.SerializeToString())
                snap = spb.Snapshot()
                held_nodes = held_bytes = 0
                part += 1
                r = snap.runs.add(run_id=run.run_id, part=part)
                add = r.nodes.add
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
                answered=node.answered,
            )
            fill_spec(n.spec, node.spec, node.deps)
            if node.error is not None:
                n.error.CopyFrom(error_to_pb(node.error))
            held_nodes += 1
            held_bytes += len(node.result) + len(node.spec.input)
    if snap.runs or not chunks:
        chunks.append(snap.SerializeToString())
    return chunks


def _run_header(snap: spb.Snapshot, run: Run, part: int) -> spb.RunSnapshot:
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
        request_id=run.request_id,
        part=part,
    )
    limits = run.limits
    r.limits.max_nodes = limits.max_nodes
    r.limits.max_spawn_depth = limits.max_spawn_depth
    return r


def load(core: Core, chunks: Iterable[bytes], *, now: float, skip: Container[str] = ()) -> int:
    """Restores every run of a snapshot into an empty core, except those in `skip` (deleted
    since); returns how many. Raises DecodeError, ValueError or KeyError on a damaged snapshot,
    possibly with some runs restored already: the caller starts again from an empty core."""
    runs: dict[str, tuple[spb.RunSnapshot, list[spb.NodeSnapshot]]] = {}
    for data in chunks:
        snap = spb.Snapshot.FromString(data)
        for r in snap.runs:
            if r.part == 0:
                if r.run_id in runs:
                    raise ValueError(f"run {r.run_id!r} appears twice in the snapshot")
                runs[r.run_id] = (r, list(r.nodes))
            else:
                entry = runs.get(r.run_id)
                if entry is None:
                    raise ValueError(f"part {r.part} of run {r.run_id!r} has no first part")
                entry[1].extend(r.nodes)
    restored = 0
    for run_id, (r, node_msgs) in runs.items():
        if run_id in skip:
            continue
        nodes = [
            RestoredNode(
                spec=spec_from_pb(n.spec),
                state=NodeState(n.state),
                attempt=n.attempt,
                failures=n.failures,
                lease=n.lease,
                result=n.result,
                error=error_from_pb(n.error) if n.HasField("error") else None,
                parent_id=n.parent_id,
                depth=n.spawn_depth,
                not_before=n.not_before,
                open=n.open_attempt,
                answered=n.answered,
            )
            for n in node_msgs
        ]
        core.restore_run(
            run_id,
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
            request_id=r.request_id,
        )
        restored += 1
    return restored
