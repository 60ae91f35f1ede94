"""`validate` is what every other test leans on: it must catch each kind of damage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hivegrid.coordinator.core import NodeState, RunState, validate

from .conftest import Driver, spec


def damaged(drv: Driver) -> Any:
    drv.submit([spec("a"), spec("b", "a"), spec("c")])
    drv.open(1)
    drv.dispatch_one("a")
    return drv.run


DAMAGE: dict[str, Callable[[Any], object]] = {
    "waiting_off": lambda run: setattr(run.nodes["b"], "waiting", 0),
    "count_off": lambda run: run.counts.__setitem__(NodeState.READY, 5),
    "unfinished_off": lambda run: setattr(run, "unfinished", 1),
    "ended_early": lambda run: setattr(run, "state", RunState.SUCCEEDED),
    "dangling_dep": lambda run: run.nodes["b"].deps.append("zz"),
    "unlinked_dependent": lambda run: run.nodes["a"].dependents.clear(),
    "duplicate_dep": lambda run: run.nodes["b"].deps.append("a"),
    "cycle": lambda run: (run.nodes["a"].deps.append("b"), run.nodes["b"].dependents.append("a")),
    "running_without_lease": lambda run: setattr(run.nodes["a"], "lease", 0),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_validate_catches_damage(name: str, drv: Driver) -> None:
    run = damaged(drv)
    validate(drv.core)
    DAMAGE[name](run)
    with pytest.raises(AssertionError):
        validate(drv.core)


def test_validate_catches_a_session_over_its_slots(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b")])
    sid = drv.open(2)
    drv.dispatch()
    drv.core.sessions[sid].slots = 1
    with pytest.raises(AssertionError, match="slots"):
        validate(drv.core)
