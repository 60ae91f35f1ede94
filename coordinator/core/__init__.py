"""The core of the coordinator: a pure state machine (no I/O, no clock, no asyncio).

Read `scheduler.py` for the theory of operation, `graph.py` for readiness and the transition
table, `mutations.py` for atomic mutation batches. The runtime (`coordinator/runtime.py`) is the
only caller.
"""

from .model import (
    DEFAULT_RETRY,
    AckStatus,
    AddEdge,
    AddNode,
    ConfirmSpeculative,
    DiscardSpeculative,
    GraphError,
    InjectBefore,
    InvariantError,
    MarkSpeculative,
    ModifyNode,
    Mutation,
    NodeError,
    NodeSpec,
    NodeState,
    Outcome,
    PruneSubgraph,
    RemoveEdge,
    RemoveNode,
    RetryPolicy,
    RunExists,
    RunLimits,
    RunState,
    SplitNode,
)
from .scheduler import (
    Assignment,
    CancelOrder,
    Core,
    PreparedRun,
    Record,
    RestoredNode,
    Session,
)
from .validate import validate

__all__ = [
    "DEFAULT_RETRY",
    "AckStatus",
    "AddEdge",
    "AddNode",
    "Assignment",
    "CancelOrder",
    "ConfirmSpeculative",
    "Core",
    "DiscardSpeculative",
    "GraphError",
    "InjectBefore",
    "InvariantError",
    "MarkSpeculative",
    "ModifyNode",
    "Mutation",
    "NodeError",
    "NodeSpec",
    "NodeState",
    "Outcome",
    "PreparedRun",
    "PruneSubgraph",
    "Record",
    "RemoveEdge",
    "RemoveNode",
    "RestoredNode",
    "RetryPolicy",
    "RunExists",
    "RunLimits",
    "RunState",
    "Session",
    "SplitNode",
    "validate",
]
