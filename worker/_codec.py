"""Wire encoding for the hot path.

Results and progress items are encoded to protobuf bytes once, when they are produced, and kept
as bytes: a batch is then the concatenation of its items under one length prefix, and a result
re-sent after a reconnect costs no encoding at all. The layouts below are the proto3 encodings of
`hivegrid.v1.Result`, `Progress`, `Results`, `ProgressBatch` and `ConnectRequest`; the tests
check them against the generated classes.
"""

from __future__ import annotations

import json
from typing import Any

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import worker_pb2 as wpb

# (run_id, node_id, attempt, lease): how the worker recognises an assignment in acks and cancels.
RefKey = tuple[str, str, int, int]

# Field tags (field number << 3 | wire type).
_TAG_REF = b"\x0a"  # Result.ref / Progress.ref, and Results.items / ProgressBatch.items
_TAG_RESULT_BYTES = b"\x1a"  # Result.result
_TAG_PROGRESS_DATA = b"\x12"  # Progress.data
_OUTCOME_SUCCEEDED = b"\x10\x01"
_OUTCOME_CANCELLED = b"\x10\x03"
TAG_RESULTS = b"\x12"  # ConnectRequest.results
TAG_PROGRESS = b"\x1a"  # ConnectRequest.progress
ITEM = b"\x0a"  # Results.items / ProgressBatch.items

HEARTBEAT = wpb.ConnectRequest(heartbeat=wpb.Heartbeat()).SerializeToString()
DRAIN = wpb.ConnectRequest(drain=wpb.Drain()).SerializeToString()

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_decode = json.loads


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def to_json(value: Any) -> bytes:
    """JSON bytes for a value; `None` is the empty byte string (the protocol's null)."""
    if value is None:
        return b""
    return _encode(value).encode()


def from_json(data: bytes) -> Any:
    return _decode(data) if data else None


def ref_key(ref: wpb.AssignmentRef) -> RefKey:
    return (ref.run_id, ref.node_id, ref.attempt, ref.lease)


def ref_from_key(key: RefKey) -> wpb.AssignmentRef:
    return wpb.AssignmentRef(run_id=key[0], node_id=key[1], attempt=key[2], lease=key[3])


def frame(item: bytes) -> bytes:
    """An item of a repeated message field (`Results.items`, `ProgressBatch.items`)."""
    return ITEM + varint(len(item)) + item


def succeeded(ref: bytes, result: bytes) -> bytes:
    """A framed `Result{ref, OUTCOME_SUCCEEDED, result}`; `ref` is the serialized ref."""
    body = _TAG_REF + varint(len(ref)) + ref + _OUTCOME_SUCCEEDED
    if result:
        body += _TAG_RESULT_BYTES + varint(len(result)) + result
    return ITEM + varint(len(body)) + body


def cancelled(ref: bytes) -> bytes:
    body = _TAG_REF + varint(len(ref)) + ref + _OUTCOME_CANCELLED
    return ITEM + varint(len(body)) + body


def failed(ref: wpb.AssignmentRef, message: str, *, retryable: bool, kind: str) -> bytes:
    msg = wpb.Result(
        ref=ref,
        outcome=wpb.OUTCOME_FAILED,
        error=gpb.NodeError(message=message, retryable=retryable, kind=kind),
    )
    return frame(msg.SerializeToString())


def succeeded_with_mutations(
    ref: wpb.AssignmentRef, result: bytes, mutations: list[gpb.Mutation]
) -> bytes:
    msg = wpb.Result(ref=ref, outcome=wpb.OUTCOME_SUCCEEDED, result=result, mutations=mutations)
    return frame(msg.SerializeToString())


def progress(ref: bytes, data: bytes) -> bytes:
    body = _TAG_REF + varint(len(ref)) + ref
    if data:
        body += _TAG_PROGRESS_DATA + varint(len(data)) + data
    return ITEM + varint(len(body)) + body


def message(tag: bytes, items: list[bytes], size: int) -> bytes:
    """A `ConnectRequest` whose `results` or `progress` holds the framed `items`."""
    return tag + varint(size) + b"".join(items)
