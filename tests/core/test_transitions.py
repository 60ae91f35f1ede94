"""Every row of the transition table in graph.py, reached through the public stimuli; and every
pair outside the table refused."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from hivegrid.coordinator.core import (
    AddEdge,
    Assignment,
    ConfirmSpeculative,
    DiscardSpeculative,
    MarkSpeculative,
    NodeState,
)
from hivegrid.coordinator.core.graph import TRANSITIONS

from .conftest import CX, FL, OK, RD, RN, SK, SP, Driver, P, spec


def chain(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b", "a")])


def p_rd(drv: Driver) -> None:
    chain(drv)
    drv.complete("a")
    assert drv.state("b") is RD


def p_sk(drv: Driver) -> None:
    chain(drv)
    drv.fail(drv.run_to("a"), retryable=False)
    assert drv.state("b") is SK


def p_cx(drv: Driver) -> None:
    chain(drv)
    drv.cancel_run()
    assert drv.state("b") is CX


def p_sp(drv: Driver) -> None:
    chain(drv)
    drv.mutate([MarkSpeculative("b")])
    assert drv.state("b") is SP


def rd_p(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b")])
    drv.mutate([AddEdge("a", "b")])
    assert drv.state("b") is P


def rd_rn(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.run_to("a")
    assert drv.state("a") is RN


def rd_sk(drv: Driver) -> None:
    drv.submit([spec("f"), spec("b", agent="nobody")])
    drv.fail(drv.run_to("f"), retryable=False)
    drv.mutate([AddEdge("f", "b")])
    assert drv.state("b") is SK


def rd_cx(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.cancel_run()
    assert drv.state("a") is CX


def rd_sp(drv: Driver) -> None:
    drv.submit([spec("a"), spec("b")])
    drv.mutate([MarkSpeculative("a")])
    assert drv.state("a") is SP


def lost(drv: Driver) -> Assignment:
    drv.submit([spec("a")])
    sid = drv.open(1)
    a = drv.dispatch_one("a")
    drv.close(sid)
    assert drv.state("a") is RD
    return a


def rd_ok(drv: Driver) -> None:
    a = lost(drv)
    drv.succeed(a)
    assert drv.state("a") is OK


def rd_fl(drv: Driver) -> None:
    a = lost(drv)
    drv.fail(a, retryable=False)
    assert drv.state("a") is FL


def rn_rd(drv: Driver) -> None:
    lost(drv)
    assert drv.node("a").failures == 0


def rn_ok(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.complete("a")
    assert drv.state("a") is OK


def rn_fl(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.fail(drv.run_to("a"), retryable=False)
    assert drv.state("a") is FL


def rn_cx(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.run_to("a")
    drv.cancel_run()
    assert drv.state("a") is CX


def sp_p(drv: Driver) -> None:
    chain(drv)
    drv.mutate([MarkSpeculative("b")])
    drv.mutate([ConfirmSpeculative("b")])
    assert drv.state("b") is P


def sp_rd(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.mutate([MarkSpeculative("a")])
    drv.mutate([ConfirmSpeculative("a")])
    assert drv.state("a") is RD


def sp_sk(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.mutate([MarkSpeculative("a")])
    drv.mutate([DiscardSpeculative("a")])
    assert drv.state("a") is SK


def sp_cx(drv: Driver) -> None:
    drv.submit([spec("a")])
    drv.mutate([MarkSpeculative("a")])
    drv.cancel_run()
    assert drv.state("a") is CX


SCENARIOS: dict[tuple[NodeState, NodeState], Callable[[Driver], None]] = {
    (P, RD): p_rd,
    (P, SK): p_sk,
    (P, CX): p_cx,
    (P, SP): p_sp,
    (RD, P): rd_p,
    (RD, RN): rd_rn,
    (RD, SK): rd_sk,
    (RD, CX): rd_cx,
    (RD, SP): rd_sp,
    (RD, OK): rd_ok,
    (RD, FL): rd_fl,
    (RN, RD): rn_rd,
    (RN, OK): rn_ok,
    (RN, FL): rn_fl,
    (RN, CX): rn_cx,
    (SP, P): sp_p,
    (SP, RD): sp_rd,
    (SP, SK): sp_sk,
    (SP, CX): sp_cx,
}


def test_every_row_of_the_table_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(TRANSITIONS)


@pytest.mark.parametrize("pair", sorted(SCENARIOS), ids=lambda p: f"{p[0].name}->{p[1].name}")
def test_transition_is_reached(
    pair: tuple[NodeState, NodeState],
    drv: Driver,
    seen_transitions: list[tuple[NodeState, NodeState]],
) -> None:
    SCENARIOS[pair](drv)
    assert pair in seen_transitions
    assert set(seen_transitions) <= TRANSITIONS


ILLEGAL = sorted(set(itertools.product(NodeState, NodeState)) - TRANSITIONS)


def test_table_is_what_the_design_says() -> None:
    # Terminal states are final; nothing re-enters SPECULATIVE but from not-started states.
    terminal = {OK, FL, CX, SK}
    assert not [p for p in TRANSITIONS if p[0] in terminal]
    assert {p[0] for p in TRANSITIONS if p[1] is SP} == {P, RD}
    assert len(ILLEGAL) == 64 - 19


@pytest.mark.parametrize("pair", ILLEGAL, ids=lambda p: f"{p[0].name}->{p[1].name}")
def test_illegal_transition_raises(pair: tuple[NodeState, NodeState], drv: Driver) -> None:
    old, new = pair
    drv.submit([spec("a")])
    run, node = drv.run, drv.node("a")
    # Put the node in `old` by hand, keeping the run's counters consistent.
    run.counts[node.state] -= 1
    node.state = old
    run.counts[old] += 1
    with pytest.raises(AssertionError, match="illegal transition"):
        run.transition(node, new)
    assert node.state is old
