"""The hand-written encodings agree with the generated protobuf classes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hivegrid.v1 import worker_pb2 as wpb
from hivegrid.worker import _codec

refs = st.builds(
    wpb.AssignmentRef,
    run_id=st.text(max_size=40),
    node_id=st.text(max_size=300),
    attempt=st.integers(0, 2**32 - 1),
    lease=st.integers(0, 2**64 - 1),
)


def unframe(item: bytes) -> bytes:
    assert item[:1] == _codec.ITEM
    batch = wpb.ProgressBatch.FromString(item)  # any message whose field 1 is a repeated LEN
    assert len(batch.items) == 1
    return item[len(item) - len(batch.items[0].SerializeToString()) :]


@given(refs, st.binary(max_size=300))
def test_succeeded_and_cancelled(ref: wpb.AssignmentRef, data: bytes) -> None:
    raw = ref.SerializeToString()
    want = wpb.Result(ref=ref, outcome=wpb.OUTCOME_SUCCEEDED, result=data)
    assert unframe(_codec.succeeded(raw, data)) == want.SerializeToString()
    got = wpb.Result.FromString(unframe(_codec.cancelled(raw)))
    assert got == wpb.Result(ref=ref, outcome=wpb.OUTCOME_CANCELLED)
    assert got.ref.lease == ref.lease


@given(refs, st.binary(max_size=300))
def test_progress(ref: wpb.AssignmentRef, data: bytes) -> None:
    item = _codec.progress(ref.SerializeToString(), data)
    assert wpb.Progress.FromString(unframe(item)) == wpb.Progress(ref=ref, data=data)


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_batch_messages(payloads: list[bytes]) -> None:
    ref = wpb.AssignmentRef(run_id="r", node_id="n", attempt=1, lease=2**63 + 1)
    items = [_codec.succeeded(ref.SerializeToString(), p) for p in payloads]
    msg = wpb.ConnectRequest.FromString(
        _codec.message(_codec.TAG_RESULTS, items, sum(map(len, items)))
    )
    assert msg.WhichOneof("msg") == "results"
    assert [r.result for r in msg.results.items] == payloads
    progress = [_codec.progress(ref.SerializeToString(), p) for p in payloads]
    msg = wpb.ConnectRequest.FromString(
        _codec.message(_codec.TAG_PROGRESS, progress, sum(map(len, progress)))
    )
    assert msg.WhichOneof("msg") == "progress"
    assert [p.data for p in msg.progress.items] == payloads


def test_constant_messages() -> None:
    assert wpb.ConnectRequest.FromString(_codec.HEARTBEAT).WhichOneof("msg") == "heartbeat"
    assert wpb.ConnectRequest.FromString(_codec.DRAIN).WhichOneof("msg") == "drain"


@given(st.integers(0, 2**64 - 1))
def test_varint(n: int) -> None:
    ref = wpb.AssignmentRef(lease=n)
    assert ref.SerializeToString() == (b"\x20" + _codec.varint(n) if n else b"")


def test_json() -> None:
    assert _codec.to_json(None) == b""
    assert _codec.from_json(b"") is None
    assert _codec.to_json({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    with pytest.raises(ValueError):
        _codec.to_json(float("nan"))
    with pytest.raises(TypeError):
        _codec.to_json(object())
