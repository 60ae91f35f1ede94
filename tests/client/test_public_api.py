"""The client's public API speaks its own types: no generated protobuf class in a signature, a
field, or anything a call returns."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from typing import Any

import pytest
from google.protobuf.message import Message

import hivegrid.client
from hivegrid.client import Client, Graph

pytestmark = pytest.mark.timeout(60)

_FORBIDDEN = ("hivegrid.v1", "hivegrid.storage", "google.protobuf", "grpc")


def _types_in(hint: Any) -> typing.Iterator[Any]:
    yield hint
    for arg in typing.get_args(hint):
        yield from _types_in(arg)


def _check_hints(where: str, hints: dict[str, Any]) -> list[str]:
    bad = []
    for name, hint in hints.items():
        for t in _types_in(hint):
            module = getattr(t, "__module__", "") or ""
            if module.startswith(_FORBIDDEN):
                bad.append(f"{where} {name}: {t!r}")
    return bad


def _public_members(cls: type) -> typing.Iterator[tuple[str, Any]]:
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in ("__init__", "__enter__", "__aenter__"):
            continue
        if isinstance(member, property):
            member = member.fget
        if inspect.isfunction(member) or inspect.ismethod(member):
            yield name, member


def test_no_generated_class_in_any_public_signature() -> None:
    bad: list[str] = []
    checked = 0
    for name in hivegrid.client.__all__:
        obj = getattr(hivegrid.client, name)
        if isinstance(obj, types.UnionType | typing._GenericAlias):  # type: ignore[attr-defined]
            bad += _check_hints(name, {"alias": obj})
            continue
        if not isinstance(obj, type) or issubclass(obj, enum.Enum):
            continue
        if dataclasses.is_dataclass(obj):
            bad += _check_hints(name, typing.get_type_hints(obj))
            checked += 1
        for member_name, member in _public_members(obj):
            bad += _check_hints(f"{name}.{member_name}", typing.get_type_hints(member))
            checked += 1
    assert checked > 40  # the walk reached the classes and their methods
    assert bad == []


def _walk(value: Any, path: str, seen: set[int]) -> typing.Iterator[str]:
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, Message) or type(value).__module__.startswith(_FORBIDDEN):
        yield f"{path}: {type(value).__module__}.{type(value).__name__}"
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name), f"{path}.{f.name}", seen)
    elif isinstance(value, dict | types.MappingProxyType):
        for k, v in value.items():
            yield from _walk(k, f"{path}[key]", seen)
            yield from _walk(v, f"{path}[{k!r}]", seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]", seen)


@pytest.mark.slow
def test_nothing_a_call_returns_holds_a_generated_class(client: Client) -> None:
    g = Graph(name="plain")
    a = g.node("progress", {"steps": 2})
    g.node("fail", {"message": "no"}, after=[a], id="f")
    run_id = client.submit(g)
    returned: dict[str, Any] = {
        "submit": run_id,
        "wait": client.wait(run_id, timeout=30),
        "get_run": client.get_run(run_id),
        "get_summary": client.get_summary(run_id),
        "events": list(client.events(run_id)),
        "list_runs": client.list_runs(limit=5),
        "list_workers": client.list_workers(),
        "cancel": client.cancel(run_id),
    }
    running = client.submit({"nodes": [{"id": "s", "agent": "sleep", "input": {"seconds": 30}}]})
    added = {"add_node": {"node": {"id": "x", "agent": "echo"}}}
    returned["mutate"] = client.mutate(running, [added])
    returned["mutated_events"] = list(client.events(running, follow=False))
    client.cancel(running)
    kinds = {e.kind for e in returned["events"] + returned["mutated_events"]}
    assert {"run_submitted", "node_dispatched", "progress", "attempt_finished"} <= kinds
    assert {"run_ended", "mutations_applied"} <= kinds
    bad = [problem for name, value in returned.items() for problem in _walk(value, name, set())]
    assert bad == []
