"""Retention: ended runs deleted once the operator's retention says so (`retain_s`, an age;
`retain_runs`, how many ended runs to keep), from memory, the log and the snapshots."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..core import Core, RunState
from ..journal import Journal
from ..limits import Limits
from .watch import Watchers

log = logging.getLogger("hivegrid.runtime")

# Retention runs this often.
RETAIN_EVERY_S = 30.0


def apply_retention(
    core: Core, journal: Journal, watchers: Watchers, limits: Limits, *, now: float
) -> list[str]:
    """Deletes the ended runs that retention says to; returns their ids."""
    if (not limits.retain_s and not limits.retain_runs) or journal.error is not None:
        return []
    ended = [r for r in core.runs.values() if r.state is not RunState.RUNNING]
    doomed: list[str] = []
    if limits.retain_s:
        horizon = now - limits.retain_s
        doomed = [r.run_id for r in ended if r.ended_at < horizon]
    if limits.retain_runs and len(ended) - len(doomed) > limits.retain_runs:
        gone = set(doomed)
        keep = sorted((r for r in ended if r.run_id not in gone), key=lambda r: r.ended_at)
        doomed.extend(r.run_id for r in keep[: len(keep) - limits.retain_runs])
    for run_id in doomed:
        core.delete_run(run_id)
        watchers.end_run(run_id)
    if doomed:
        journal.delete_runs(doomed)
        log.info("retention deleted %d ended runs", len(doomed))
    return doomed


async def retain(apply: Callable[[], object], every_s: float = RETAIN_EVERY_S) -> None:
    """Applies retention every `every_s`, for ever."""
    while True:
        await asyncio.sleep(every_s)
        apply()


__all__ = ["RETAIN_EVERY_S", "apply_retention", "retain"]
