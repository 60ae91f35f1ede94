"""The worker protocol's wire side (docs/protocol.md): its constants, the framing of what a
session has queued into `Push` messages, and the door's reading of `Results`.

Constants come from the proto's `ProtocolConstant` enum, the one place every SDK reads them too.
"""

from __future__ import annotations

from collections.abc import Iterable

from hivegrid.v1 import worker_pb2 as wpb

from ..core import Answer, Assignment, Mutation, NodeError, Outcome, mutations_rejected
from ..limits import LimitExceeded, Limits, check_mutations, cut_error
from ..runtime.delivery import Link
from .convert import ack_to_pb, assignment_to_pb, cancel_to_pb, error_from_pb, mutations_from_pb

PROTOCOL_VERSION = wpb.PROTOCOL_CONSTANT_VERSION
MAX_BATCH = wpb.PROTOCOL_CONSTANT_MAX_BATCH
# Assignments per Push: a large dispatch goes out in several, the first written while the rest
# are still being encoded.
ASSIGN_CHUNK = 256


# Room kept in every Push for the message's own framing, beyond the items' estimates.
_PUSH_HEADROOM = 4096
# An upper bound on what a ref, an ack or a cancel adds to a Push apart from its strings: tags,
# length prefixes, attempt, lease, status (varints of at most 10 bytes each).
_REF_OVERHEAD = 64


def _assignment_bytes(a: Assignment) -> int:
    """An upper bound on the encoded size of an assignment, without encoding it."""
    spec = a.spec
    size = _REF_OVERHEAD + len(a.run_id) + len(a.node_id) + len(spec.agent) + len(spec.input)
    for dep_id, result in a.deps:
        size += 16 + len(dep_id) + len(result)
    if spec.metadata:
        for key, value in spec.metadata.items():
            size += 16 + len(key) + len(value)
    return size


def take_messages(
    link: Link, max_bytes: int = Limits().max_message_bytes
) -> list[wpb.ConnectResponse]:
    """What is queued for the worker, as few messages as the limits allow: acks, then the
    assignments, then the cancels, in that order across as many Pushes as it takes, so that one
    write carries them and a cancel never travels ahead of an assignment it may name (a worker
    handles a Push's acks, then its assignments, then its cancels). A Push holds at most
    ASSIGN_CHUNK assignments and stays under `max_bytes`, what the worker was told in its
    Welcome; a single assignment over it was failed by the core before it got here."""
    out: list[wpb.ConnectResponse] = []
    acks, assignments, cancels, drain = link.take()
    if acks or assignments or cancels:
        budget = max(max_bytes - _PUSH_HEADROOM, 1)
        push = wpb.Push()
        used = count = 0
        for ack in acks:
            a = ack.answer
            size = _REF_OVERHEAD + len(a.run_id) + len(a.node_id) + len(ack.message)
            if used + size > budget and used:
                out.append(wpb.ConnectResponse(push=push))
                push, used = wpb.Push(), 0
            push.acks.append(ack_to_pb(ack))
            used += size
        for assignment in assignments:
            size = _assignment_bytes(assignment)
            if count == ASSIGN_CHUNK or (used + size > budget and used):
                out.append(wpb.ConnectResponse(push=push))
                push, used, count = wpb.Push(), 0, 0
            push.assignments.append(assignment_to_pb(assignment))
            used += size
            count += 1
        for cancel in cancels:
            size = _REF_OVERHEAD + len(cancel.run_id) + len(cancel.node_id) + len(cancel.reason)
            if used + size > budget and used:
                out.append(wpb.ConnectResponse(push=push))
                push, used = wpb.Push(), 0
            push.cancels.append(cancel_to_pb(cancel))
            used += size
        out.append(wpb.ConnectResponse(push=push))
    if drain:
        out.append(wpb.ConnectResponse(drain_request=wpb.DrainRequest()))
    return out


_SUCCEEDED, _FAILED = int(Outcome.SUCCEEDED), int(Outcome.FAILED)


def judge_results(results: Iterable[wpb.Result], limits: Limits) -> list[Answer]:
    """A message's results as the core's answers, checked against the operator's limits. Pure,
    so a large batch can be judged in a thread.

    The door decides only what breaks a limit: a result too large is failed and acked REFUSED,
    a batch of mutations past a limit is failed as rejected, an error message too long is cut.
    Everything else (a result without a ref or outcome, a mutation of no known kind) is the
    core's to judge. What an answer holds is what the log will record: a result only with
    success, an error only with failure, mutations only with success."""
    out: list[Answer] = []
    max_result = limits.max_result_bytes
    for res in results:
        ref = res.ref
        outcome = int(res.outcome)
        error = error_from_pb(res.error) if res.HasField("error") else None
        if error is not None and (
            len(error.message) * 4 > limits.max_error_bytes or len(error.kind) > 64
        ):
            error = NodeError(cut_error(error.message, limits), error.retryable, error.kind[:64])
        refused = ""
        if outcome == _SUCCEEDED:
            result = res.result
            mutations: tuple[Mutation, ...] = ()
            if len(result) > max_result:
                refused = (
                    f"a result of {len(result)} bytes is over the limit "
                    f"max_result_bytes ({max_result})"
                )
                outcome, result, error = _FAILED, b"", NodeError(refused, False, "too_large")
            elif res.mutations:
                try:
                    check_mutations(res.mutations, limits)
                except LimitExceeded as exc:
                    outcome, result, error = _FAILED, b"", mutations_rejected(str(exc))
                else:
                    mutations = mutations_from_pb(res.mutations)
            if outcome == _SUCCEEDED:
                error = None
            out.append(
                Answer(
                    ref.run_id,
                    ref.node_id,
                    ref.attempt,
                    ref.lease,
                    outcome,
                    result,
                    error,
                    mutations,
                    refused,
                )
            )
        else:
            out.append(
                Answer(
                    ref.run_id,
                    ref.node_id,
                    ref.attempt,
                    ref.lease,
                    outcome,
                    error=error if outcome == _FAILED else None,
                )
            )
    return out


__all__ = ["ASSIGN_CHUNK", "MAX_BATCH", "PROTOCOL_VERSION", "judge_results", "take_messages"]
