"""`Context`: what an agent sees of its assignment, and its channel back to the coordinator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hivegrid.v1 import worker_pb2 as wpb

from . import _codec
from ._codec import RefKey
from ._mutations import MutationBuilder

if TYPE_CHECKING:
    from ._runner import Runner

_UNPARSED: Any = object()


class Context(MutationBuilder):
    """One attempt of one node, as handed to an agent.

    `input` and `deps` are parsed from JSON on first use. Mutations added through the builder
    methods (`add_node`, `add_edge`, ...) are sent with the agent's successful result and commit
    with it, or not at all; they are dropped if the attempt fails.
    """

    __slots__ = (
        "_assignment",
        "_cancel_event",
        "_cancelled",
        "_deps",
        "_input",
        "_job",
        "_key",
        "_ref_bytes",
        "_runner",
        "_sync",
    )

    def __init__(self, runner: Runner, assignment: wpb.Assignment, key: RefKey) -> None:
        self._mutations = None
        self._runner = runner
        self._assignment = assignment
        self._key = key
        self._input: Any = _UNPARSED
        self._deps: dict[str, Any] | None = None
        self._ref_bytes: bytes | None = None
        self._cancelled = False
        self._cancel_event: asyncio.Event | None = None
        self._job: asyncio.Future[Any] | None = None
        self._sync = False

    def __repr__(self) -> str:
        run_id, node_id, attempt, _ = self._key
        return f"<Context {self.agent} run={run_id} node={node_id} attempt={attempt}>"

    @property
    def run_id(self) -> str:
        return self._key[0]

    @property
    def node_id(self) -> str:
        return self._key[1]

    @property
    def attempt(self) -> int:
        """1 for the first attempt of the node, 2 for its first retry, ..."""
        return self._key[2]

    @property
    def agent(self) -> str:
        return self._assignment.agent

    @property
    def ref(self) -> wpb.AssignmentRef:
        return self._assignment.ref

    @property
    def input(self) -> Any:
        """The node's input, parsed from JSON (`None` when it has none)."""
        if self._input is _UNPARSED:
            self._input = _codec.from_json(self._assignment.input)
        return self._input

    @property
    def deps(self) -> dict[str, Any]:
        """The results of the dependencies that succeeded, by node id."""
        if self._deps is None:
            self._deps = {d.node_id: _codec.from_json(d.result) for d in self._assignment.deps}
        return self._deps

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._assignment.metadata

    @property
    def can_mutate(self) -> bool:
        """Whether the coordinator will accept mutations from this node."""
        return self._assignment.can_mutate

    @property
    def timeout_s(self) -> float:
        """The attempt's start-to-close timeout (0: none); the coordinator enforces it."""
        return self._assignment.timeout_s

    @property
    def cancelled(self) -> bool:
        """Whether the coordinator cancelled this attempt. Plain (sync) agents poll it and return
        early; whatever a cancelled sync agent returns is answered as cancelled."""
        return self._cancelled

    async def wait_cancelled(self) -> None:
        """Returns once the attempt is cancelled (for async agents that watch for it)."""
        if self._cancelled:
            return
        if self._cancel_event is None:
            self._cancel_event = asyncio.Event()
        await self._cancel_event.wait()

    def progress(self, data: Any) -> None:
        """Reports progress (any JSON value). Clients watching the run see it in order sent.

        Safe to call from the agent's thread when the agent is a plain function.
        """
        item = _codec.progress(self._serialized_ref(), _codec.to_json(data))
        runner = self._runner
        if threading.get_ident() == runner.loop_thread:
            runner.add_progress(item)
        else:
            runner.loop.call_soon_threadsafe(runner.add_progress, item)

    def _serialized_ref(self) -> bytes:
        ref = self._ref_bytes
        if ref is None:
            ref = self._ref_bytes = self._assignment.ref.SerializeToString()
        return ref

    def _cancel(self) -> None:
        self._cancelled = True
        if self._cancel_event is not None:
            self._cancel_event.set()
        # A sync agent's thread cannot be interrupted: it sees `cancelled` and returns, and only
        # then is the slot answered (answering earlier would free a slot its thread still holds).
        if self._job is not None and not self._sync:
            self._job.cancel()

    def _on_done(self, job: asyncio.Future[Any]) -> None:
        self._runner.finish(self, job)
