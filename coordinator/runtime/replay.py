"""Recovery: the newest snapshot that loads, then the log after it, into a fresh core.

Each logged record is decoded (coordinator/records.py reads both the current and the old form)
and handed to `Core.replay`, the core's one way from a decision back to state; this module only
checks that the log is whole (every run's seqs follow on) and says what to do when it is not.
Runs in a thread, before anything is served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf.message import DecodeError

from .. import records, snapshot
from ..core import Core, GraphError
from ..store import Store, StoreError

log = logging.getLogger("hivegrid.runtime")


def recover(store: Store, new_core: Callable[[], Core], *, now: float) -> tuple[Core, int]:
    """The recovered core, and how many things were loaded (runs of the snapshot, events)."""
    for position in store.snapshots():
        core = new_core()
        try:
            chunks = store.load_snapshot(position)
            # Runs deleted after the snapshot was taken are still in it.
            deleted = store.deleted_runs(since=position)
            count = snapshot.load(core, chunks, now=now, skip=deleted)
        except (StoreError, DecodeError, ValueError, KeyError) as exc:
            log.warning(
                "the snapshot at log position %d cannot be loaded (%s); falling back to an "
                "older one, or to the whole log",
                position,
                exc,
            )
            continue
        return core, count + replay_log(core, store, after=position)
    core = new_core()
    return core, replay_log(core, store, after=0)


def replay_log(core: Core, store: Store, *, after: int) -> int:
    """Replays every record past log position `after`; returns how many. Raises StoreError,
    naming the record, if the log is damaged or does not replay."""
    count = 0
    runs = core.runs
    decode = records.decode_decision
    for data in store.replay(after):
        count += 1
        try:
            run_id, seq, time, decision = decode(data)
        except records.RecordError as exc:
            raise StoreError(
                f"the event log is damaged: event {after + count} cannot be read ({exc}); "
                "restore the store from a backup, or move it aside to start empty"
            ) from exc
        run = runs.get(run_id)
        expected = run.last_seq + 1 if run is not None else 1
        if seq != expected:
            raise StoreError(
                f"the event log is damaged: run {run_id} jumps from event "
                f"{expected - 1} to {seq}; restore the store from a backup"
            )
        try:
            core.replay(run_id, decision, now=time)
        except (GraphError, KeyError, AssertionError) as exc:
            raise StoreError(
                f"the event log does not replay: event {seq} of run {run_id} "
                f"({decision.kind}) fails with {exc!r}"
            ) from exc
        run = runs.get(run_id)
        if run is not None:
            run.last_seq = seq
    return count


__all__ = ["recover", "replay_log"]
