"""Graph documents: the JSON or YAML a user submits (a file, or a dict shaped like one), parsed
strictly into a SubmitRunRequest. The one place that makes a submission from a document: the
client (dicts, files, and the builder's nodes) and the CLI use it.

Strict means every mistake is reported before anything reaches the coordinator, with a
message that names the node and the field: unknown fields (with a "did you mean"), wrong
types, missing agents, duplicate keys, values that are not JSON. A file that parses here may
still be refused by the coordinator (a cycle, a limit): the server owns graph semantics. The
only graph checks made here are per-reference ones a reader can verify line by line: duplicate
node ids and dependencies on ids the file does not define.

The format:

    name: nightly            # optional
    limits: {max_nodes: 1000, max_spawn_depth: 4}   # optional
    nodes:
      - id: a
        agent: echo
        input: {x: 1}        # any JSON value
        depends_on: [b]
        retry: {max_attempts: 3, initial_backoff_s: 1, max_backoff_s: 60,
                multiplier: 2, jitter: 0.2}
        timeout_s: 30
        can_mutate: false
        priority: 0
        labels: {gpu: "a100"}
        metadata: {owner: me}
        run_on_failure: false
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hivegrid.v1 import graph_pb2, run_pb2

from ._errors import GraphFileError

__all__ = [
    "GraphFileError",
    "load_document",
    "load_graph_file",
    "parse_graph",
    "parse_graph_text",
    "parse_node",
]

_TOP_FIELDS = ("nodes", "limits", "name", "run_id")
_NODE_FIELDS = (
    "id",
    "agent",
    "input",
    "depends_on",
    "retry",
    "timeout_s",
    "can_mutate",
    "priority",
    "labels",
    "metadata",
    "run_on_failure",
)
_RETRY_FIELDS = ("max_attempts", "initial_backoff_s", "max_backoff_s", "multiplier", "jitter")
_LIMIT_FIELDS = ("max_nodes", "max_spawn_depth")

_UINT32_MAX = 2**32 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def load_document(path: str, *, what: str = "graph file") -> tuple[object, str]:
    """Reads and decodes a JSON or YAML file (by its extension; by content for `-`, standard
    input, and other names); returns the document and its source name for messages."""
    if path == "-":
        return _decode(sys.stdin.read(), None, "<stdin>"), "<stdin>"
    source = path
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphFileError("no such file", source=source) from None
    except IsADirectoryError:
        raise GraphFileError(f"is a directory, not a {what}", source=source) from None
    except UnicodeDecodeError as exc:
        raise GraphFileError(f"not UTF-8 text ({exc.reason})", source=source) from None
    except OSError as exc:
        raise GraphFileError(f"cannot read: {exc.strerror}", source=source) from None
    fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(Path(path).suffix.lower())
    return _decode(text, fmt, source), source


def load_graph_file(path: str) -> run_pb2.SubmitRunRequest:
    """Reads and parses a graph file; `-` reads standard input (JSON or YAML by content)."""
    data, source = load_document(path)
    return _parse_from(data, source)


def _decode(text: str, fmt: str | None, source: str | None) -> object:
    if fmt is None:
        fmt = "json" if text.lstrip().startswith(("{", "[")) else "yaml"
    return _load_json(text, source) if fmt == "json" else _load_yaml(text, source)


def _parse_from(data: object, source: str | None) -> run_pb2.SubmitRunRequest:
    try:
        return parse_graph(data)
    except GraphFileError as exc:
        raise GraphFileError(exc.detail, source=source) from None


def parse_graph_text(
    text: str, *, fmt: str | None = None, source: str | None = None
) -> run_pb2.SubmitRunRequest:
    """Parses graph text; `fmt` is "json", "yaml" or None (guess: JSON if it opens with `{`)."""
    return _parse_from(_decode(text, fmt, source), source)


def parse_graph(data: object) -> run_pb2.SubmitRunRequest:
    """Turns an already-decoded document (dicts, lists, scalars) into a SubmitRunRequest."""
    if not isinstance(data, Mapping):
        raise GraphFileError(
            f'the graph must be an object with a "nodes" list, got {_describe(data)}'
        )
    _reject_unknown(data, _TOP_FIELDS, where="", what="top-level field")
    request = run_pb2.SubmitRunRequest()
    name = _optional(data, "name", _string, "")
    if name is not None:
        request.name = name
    run_id = _optional(data, "run_id", _nonempty_string, "")
    if run_id is not None:
        request.run_id = run_id
    limits = data.get("limits")
    if limits is not None:
        _parse_limits(limits, request.limits)
    if "nodes" not in data or data["nodes"] is None:
        raise GraphFileError('missing field "nodes" (a list of nodes)')
    nodes = data["nodes"]
    if not isinstance(nodes, list):
        raise GraphFileError(f'"nodes" must be a list, got {_describe(nodes)}')
    if not nodes:
        raise GraphFileError('"nodes" is empty: a run needs at least one node')
    for index, raw in enumerate(nodes):
        _parse_node(raw, index, request.nodes.add())
    _check_references(request.nodes)
    return request


def parse_node(raw: object, index: int = 0) -> graph_pb2.NodeSpec:
    """One node of a document (`index`: its position, for messages that cannot name it)."""
    spec = graph_pb2.NodeSpec()
    _parse_node(raw, index, spec)
    return spec


# --- decoding -------------------------------------------------------------------------------


def _load_json(text: str, source: str | None) -> object:
    def reject_constant(name: str) -> None:
        raise GraphFileError(f"invalid JSON: {name} is not a JSON number", source=source)

    try:
        return json.loads(
            text, object_pairs_hook=_json_object_no_duplicates, parse_constant=reject_constant
        )
    except json.JSONDecodeError as exc:
        raise GraphFileError(
            f"line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}", source=source
        ) from None
    except _DuplicateKey as exc:
        raise GraphFileError(f"invalid JSON: duplicate key {exc.key!r}", source=source) from None


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.line = line


def _json_object_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if duplicate:
                raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str, source: str | None) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except _DuplicateKey as exc:
        raise GraphFileError(
            f"line {exc.line}: invalid YAML: duplicate key {exc.key!r}", source=source
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "malformed"
        raise GraphFileError(f"{where}invalid YAML: {problem}", source=source) from None
    except yaml.YAMLError as exc:
        raise GraphFileError(f"invalid YAML: {exc}", source=source) from None


# --- the document ---------------------------------------------------------------------------


def _node_label(raw: object, index: int) -> str:
    if isinstance(raw, Mapping):
        node_id = raw.get("id")
        if isinstance(node_id, str) and node_id:
            return f"node {json.dumps(node_id)}"
    return f"nodes[{index}]"


def _parse_node(raw: object, index: int, spec: graph_pb2.NodeSpec) -> None:
    label = _node_label(raw, index)
    if not isinstance(raw, Mapping):
        raise GraphFileError(f"{label} must be an object, got {_describe(raw)}")
    _reject_unknown(raw, _NODE_FIELDS, where=label, what="field")

    node_id = _optional(raw, "id", _nonempty_string, label)
    if node_id is not None:
        spec.id = node_id
    if raw.get("agent") is None:
        raise GraphFileError(f'{label}: missing field "agent"')
    spec.agent = _field(raw, "agent", _nonempty_string, label)
    if "input" in raw:
        spec.input = _json_bytes(raw["input"], f"{label}: input")
    depends_on = raw.get("depends_on")
    if depends_on is not None:
        if not isinstance(depends_on, list):
            raise GraphFileError(
                f"{label}: depends_on must be a list of node ids, got {_describe(depends_on)}"
            )
        for position, dep in enumerate(depends_on):
            if not isinstance(dep, str) or not dep:
                raise GraphFileError(
                    f"{label}: depends_on[{position}] must be a node id (a non-empty string), "
                    f"got {_describe(dep)}"
                )
        spec.depends_on.extend(depends_on)
    retry = raw.get("retry")
    if retry is not None:
        _parse_retry(retry, label, spec.retry)
    timeout = _optional(raw, "timeout_s", _non_negative_number, label)
    if timeout is not None:
        spec.timeout_s = timeout
    for flag in ("can_mutate", "run_on_failure"):
        value = _optional(raw, flag, _boolean, label)
        if value is not None:
            setattr(spec, flag, value)
    priority = _optional(raw, "priority", _int32, label)
    if priority is not None:
        spec.priority = priority
    for mapping in ("labels", "metadata"):
        entries = raw.get(mapping)
        if entries is not None:
            getattr(spec, mapping).update(_string_map(entries, f"{label}: {mapping}"))


def _parse_retry(raw: object, label: str, retry: graph_pb2.RetryPolicy) -> None:
    where = f"{label}: retry"
    if not isinstance(raw, Mapping):
        raise GraphFileError(f"{where} must be an object, got {_describe(raw)}")
    _reject_unknown(raw, _RETRY_FIELDS, where=where, what="field")
    max_attempts = _optional(raw, "max_attempts", _uint32, f"{where}.")
    if max_attempts is not None:
        retry.max_attempts = max_attempts
    for name in ("initial_backoff_s", "max_backoff_s", "multiplier"):
        value = _optional(raw, name, _non_negative_number, f"{where}.")
        if value is not None:
            setattr(retry, name, value)
    jitter = _optional(raw, "jitter", _fraction, f"{where}.")
    if jitter is not None:
        retry.jitter = jitter


def _parse_limits(raw: object, limits: graph_pb2.RunLimits) -> None:
    if not isinstance(raw, Mapping):
        raise GraphFileError(f'"limits" must be an object, got {_describe(raw)}')
    _reject_unknown(raw, _LIMIT_FIELDS, where="limits", what="field")
    for name in _LIMIT_FIELDS:
        value = _optional(raw, name, _uint32, "limits.")
        if value is not None:
            setattr(limits, name, value)


def _check_references(nodes: Any) -> None:
    ids: dict[str, int] = {}
    for index, spec in enumerate(nodes):
        if spec.id:
            if spec.id in ids:
                raise GraphFileError(
                    f"node {json.dumps(spec.id)}: duplicate id "
                    f"(nodes[{ids[spec.id]}] and nodes[{index}])"
                )
            ids[spec.id] = index
    for index, spec in enumerate(nodes):
        label = f"node {json.dumps(spec.id)}" if spec.id else f"nodes[{index}]"
        for dep in spec.depends_on:
            if dep == spec.id:
                raise GraphFileError(f"{label}: depends_on names the node itself")
            if dep not in ids:
                hint = _did_you_mean(dep, list(ids))
                raise GraphFileError(
                    f"{label}: depends_on names {json.dumps(dep)}, which is not a node "
                    f"of this graph{hint}"
                )


# --- field checkers -------------------------------------------------------------------------
# Each takes a decoded value and returns the typed value, or raises ValueError with the
# expected shape; _field adds the location.


def _field(raw: Mapping[str, Any], name: str, check: Callable[[Any], Any], where: str) -> Any:
    value = raw[name]
    try:
        return check(value)
    except ValueError as exc:
        sep = "" if where.endswith(".") or not where else ": "
        raise GraphFileError(f"{where}{sep}{name} must be {exc}, got {_describe(value)}") from None


def _optional(raw: Mapping[str, Any], name: str, check: Callable[[Any], Any], where: str) -> Any:
    # null means "not given", so that YAML's `retry:` with nothing after it is accepted.
    if raw.get(name) is None:
        return None
    return _field(raw, name, check, where)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _nonempty_string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _integer_in(value: object, low: int, high: int, shape: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(shape)
    return value


def _uint32(value: object) -> int:
    return _integer_in(value, 0, _UINT32_MAX, "a non-negative integer")


def _int32(value: object) -> int:
    return _integer_in(value, _INT32_MIN, _INT32_MAX, "an integer (32-bit)")


def _non_negative_number(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError("a non-negative number")
    return float(value)


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError("a number from 0 to 1")
    return float(value)


def _string_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise GraphFileError(f"{where} must be an object of strings, got {_describe(value)}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise GraphFileError(f"{where}: key {key!r} must be a string")
        if not isinstance(item, str):
            raise GraphFileError(
                f"{where}[{json.dumps(key)}] must be a string, got {_describe(item)}"
                " (quote it in YAML)"
            )
        out[key] = item
    return out


def _json_bytes(value: object, where: str) -> bytes:
    """Encodes a node input; YAML can produce values JSON cannot carry, so check first."""
    _check_json_value(value, where)
    if value is None:
        return b""  # the wire form of JSON null
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _check_json_value(value: object, where: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GraphFileError(f"{where}: {value} is not a JSON number")
        return
    if isinstance(value, list):
        for position, item in enumerate(value):
            _check_json_value(item, f"{where}[{position}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise GraphFileError(f"{where}: key {key!r} is not a string (JSON keys are)")
            _check_json_value(item, f"{where}.{key}")
        return
    raise GraphFileError(
        f"{where}: {type(value).__name__} value {value!r} is not JSON (quote it in YAML)"
    )


def _reject_unknown(
    raw: Mapping[Any, Any], allowed: tuple[str, ...], *, where: str, what: str
) -> None:
    for key in raw:
        if key not in allowed:
            prefix = f"{where}: " if where else ""
            shown = json.dumps(key) if isinstance(key, str) else repr(key)
            hint = _did_you_mean(str(key), list(allowed))
            raise GraphFileError(f"{prefix}unknown {what} {shown}{hint}")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {json.dumps(close[0])}?)" if close else ""


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown)}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"
