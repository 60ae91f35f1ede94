"""Names of the protocol's enum values as the tests print and compare them: NODE_STATE_SUCCEEDED
reads "SUCCEEDED"."""

from __future__ import annotations

import re
from typing import Any

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import worker_pb2 as wpb


def enum_name(enum: Any, value: int) -> str:
    """The value's name without the enum's prefix (proto style: NodeState -> NODE_STATE_).
    `enum` is a generated enum (gpb.NodeState, wpb.AckStatus, ...)."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:  # a number this build does not know: say so rather than fail here
        return f"<{enum.DESCRIPTOR.name} {value}>"


def state_name(value: int | str) -> str:
    """A node state: "SUCCEEDED", "READY", ... from the wire's number or the client's
    NodeState ("succeeded")."""
    if isinstance(value, str):
        return value.upper()
    return enum_name(gpb.NodeState, value)


def run_state_name(value: int | str) -> str:
    """A run state, from the wire's number or the client's RunState."""
    if isinstance(value, str):
        return value.upper()
    return enum_name(gpb.RunState, value)


def outcome_name(value: int) -> str:
    return enum_name(wpb.Outcome, value)


def ack_name(value: int) -> str:
    return enum_name(wpb.AckStatus, value)


def states(run: Any) -> dict[str, str]:
    """Node id -> state name of a run: a GetRunResponse, or the client's Run."""
    return {n.id: state_name(n.state) for n in run.nodes}
