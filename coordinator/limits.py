"""The coordinator's limits: every size and rate a peer could push without bound has one.

The operator sets them (`hivegrid coordinator --limit NAME=VALUE`, or a `[limits]` table in the
`--config` TOML file); the defaults below suit one machine. Everything that arrives over the
network is checked against them before it touches state: a request past a limit fails with
`RESOURCE_EXHAUSTED` (or the attempt it answers fails), and the message names the limit, so an
operator knows which knob a user hit. The worker-facing ones are announced in the Welcome.

The checks here are pure functions over the wire messages; they run where the request is read
(a large submission's in the thread that builds it, never on the event loop).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import worker_pb2 as wpb

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, kw_only=True)
class Limits:
    # Largest gRPC message either way. An assignment that would be larger fails its node.
    max_message_bytes: int = 64 * MiB
    # Nodes in one run (a client may ask for less in SubmitRun.limits, never more).
    max_nodes_per_run: int = 1_000_000
    # Nodes of every run the coordinator holds in memory (ended runs included until retention
    # removes them): what bounds its memory, at about 1 KB per node.
    max_nodes_held: int = 4_000_000
    # Mutations in one batch (a result's or a MutateRun's); a split's replacements count too.
    # A batch is applied atomically on the event loop, about 20 us a spawned node: 2,000 hold
    # it some 45 ms (checking and converting it happens in a thread).
    max_mutations: int = 2_000
    # Node, run, request and session ids, agent and worker names, label and metadata keys and
    # values, in UTF-8 bytes.
    max_id_bytes: int = 256
    # A run's name.
    max_name_bytes: int = 1024
    # A node's input, and a result.
    max_input_bytes: int = 16 * MiB
    max_result_bytes: int = 16 * MiB
    # A worker's error message is kept up to this length (cut, never refused).
    max_error_bytes: int = 16 * KiB
    max_deps_per_node: int = 10_000
    # Progress: one item's size, and the rate per worker stream (items beyond are dropped).
    max_progress_bytes: int = 64 * KiB
    max_progress_per_s: float = 200.0
    # Slots one worker stream may use (Hello.slots is capped to this).
    max_slots: int = 1024
    # Agents one worker may register.
    max_agents: int = 1024
    # Worker streams at once.
    max_streams: int = 4096
    # Watch streams per run and in all. A watcher blocked in sending holds up to two copies of
    # the event it sends (a run's first event holds its whole submission): this bounds them.
    max_watchers_per_run: int = 16
    max_watchers: int = 256
    # Watchers reading a run's history from the store at once; the others wait their turn.
    max_history_readers: int = 4
    # Large submissions built at once (each holds its graph twice while it is built).
    max_concurrent_submits: int = 4
    # Results read from one worker stream and not yet acked: past this the coordinator stops
    # reading that stream until the worker reads its acks (a stream that never reads is then
    # expired like a silent one).
    max_unacked_results: int = 4096
    # Ended runs are deleted once they ended this long ago (0: never) ...
    retain_s: float = 7 * 86400.0
    # ... and beyond this many ended runs, the oldest first (0: no cap).
    retain_runs: int = 10_000

    def worker_facing(self) -> dict[str, int | float]:
        """What the Welcome announces."""
        return {
            "max_message_bytes": self.max_message_bytes,
            "max_result_bytes": self.max_result_bytes,
            "max_progress_bytes": self.max_progress_bytes,
            "max_progress_per_s": self.max_progress_per_s,
            "max_mutations": self.max_mutations,
            "max_id_bytes": self.max_id_bytes,
        }


DEFAULT_LIMITS = Limits()

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": KiB, "ki": KiB, "m": 1000**2}
_UNITS |= {"mb": 1000**2, "mib": MiB, "mi": MiB, "g": 1000**3, "gb": 1000**3, "gib": 1024 * MiB}
_UNITS |= {"gi": 1024 * MiB}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_SECONDS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class LimitsError(ValueError):
    """A limits setting the coordinator cannot use; the message says which and why."""


def _parse(name: str, value: Any, kind: type) -> int | float:
    if isinstance(value, bool):
        raise LimitsError(f"limit {name}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        number: float = value
    elif isinstance(value, str):
        pattern = _DURATION if name.endswith("_s") else _SIZE
        m = pattern.match(value)
        if m is None:
            hint = "a duration like 30s, 12h or 7d" if name.endswith("_s") else "like 64MiB"
            raise LimitsError(f"limit {name}: cannot read {value!r} ({hint})")
        unit = m.group(2)
        if name.endswith("_s"):
            number = float(m.group(1)) * _SECONDS[unit.lower() if unit else None]
        else:
            number = float(m.group(1)) * _UNITS[(unit or "").lower()]
    else:
        raise LimitsError(f"limit {name}: expected a number, got {value!r}")
    if number < 0:
        raise LimitsError(f"limit {name} must not be negative, got {value!r}")
    return int(number) if kind is int else float(number)


def build_limits(
    settings: Mapping[str, Any] = {},
    *,
    base: Limits = DEFAULT_LIMITS,
) -> Limits:
    """`base` with `settings` (name -> number or string such as "64MiB" or "7d") applied."""
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    changes: dict[str, int | float] = {}
    for name, value in settings.items():
        key = name.replace("-", "_")
        field = fields.get(key)
        if field is None:
            known = ", ".join(sorted(fields))
            raise LimitsError(f"unknown limit {name!r}; the limits are: {known}")
        changes[key] = _parse(key, value, int if field.type in ("int", int) else float)
    limits = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    for name in (
        "max_message_bytes",
        "max_slots",
        "max_streams",
        "max_concurrent_submits",
        "max_history_readers",
    ):
        if getattr(limits, name) < 1:
            raise LimitsError(f"limit {name} must be at least 1")
    return limits


def load_limits(config: Path | None, overrides: Iterable[str] = ()) -> Limits:
    """Limits from a TOML file's `[limits]` table, then `NAME=VALUE` overrides."""
    settings: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LimitsError(f"cannot read the config file {config}: {exc}") from exc
        table = data.get("limits", {})
        if not isinstance(table, dict):
            raise LimitsError(f"{config}: [limits] must be a table")
        settings.update(table)
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep:
            raise LimitsError(f"--limit takes NAME=VALUE, got {item!r}")
        settings[name.strip()] = value.strip()
    return build_limits(settings)


# --- checks at the door -------------------------------------------------------------------


class LimitExceeded(Exception):
    """A request past one of the limits: answered RESOURCE_EXHAUSTED with this message."""


def _too_long(value: str, limit: int) -> bool:
    # A character is at most 4 bytes: most values need no encoding to be judged.
    return len(value) * 4 > limit and len(value.encode()) > limit


def check_id(what: str, value: str, limits: Limits) -> None:
    if _too_long(value, limits.max_id_bytes):
        raise LimitExceeded(
            f"{what} of {len(value.encode())} bytes is over the limit max_id_bytes "
            f"({limits.max_id_bytes})"
        )


def _check_map(what: str, values: Mapping[str, str], limits: Limits) -> None:
    for key, value in values.items():
        check_id(f"{what} key", key, limits)
        check_id(f"{what} {key[:40]!r}", value, limits)


def check_spec(spec: gpb.NodeSpec, limits: Limits, where: str = "") -> None:
    """One node of a submission or of a mutation."""
    max_id = limits.max_id_bytes
    if _too_long(spec.id, max_id):
        check_id(f"{where}node id", spec.id, limits)
    if _too_long(spec.agent, max_id):
        check_id(f"{where}agent name", spec.agent, limits)
    if len(spec.input) > limits.max_input_bytes:
        raise LimitExceeded(
            f"{where}node {spec.id[:64]!r}: an input of {len(spec.input)} bytes is over the limit "
            f"max_input_bytes ({limits.max_input_bytes})"
        )
    deps = spec.depends_on
    if deps:
        if len(deps) > limits.max_deps_per_node:
            raise LimitExceeded(
                f"{where}node {spec.id[:64]!r}: {len(deps)} dependencies is over the limit "
                f"max_deps_per_node ({limits.max_deps_per_node})"
            )
        for dep in deps:
            if _too_long(dep, max_id):
                check_id(f"{where}dependency id", dep, limits)
    if spec.labels:
        _check_map(f"{where}label", spec.labels, limits)
    if spec.metadata:
        _check_map(f"{where}metadata", spec.metadata, limits)


def check_submit(req: rpb.SubmitRunRequest, limits: Limits) -> None:
    check_id("run id", req.run_id, limits)
    check_id("request id", req.request_id, limits)
    if _too_long(req.name, limits.max_name_bytes):
        raise LimitExceeded(
            f"a run name of {len(req.name.encode())} bytes is over the limit max_name_bytes "
            f"({limits.max_name_bytes})"
        )
    if len(req.nodes) > limits.max_nodes_per_run:
        raise LimitExceeded(
            f"{len(req.nodes)} nodes is over the limit max_nodes_per_run "
            f"({limits.max_nodes_per_run})"
        )
    if req.limits.max_nodes > limits.max_nodes_per_run:
        raise LimitExceeded(
            f"limits.max_nodes {req.limits.max_nodes} is over the coordinator's limit "
            f"max_nodes_per_run ({limits.max_nodes_per_run})"
        )
    for spec in req.nodes:
        check_spec(spec, limits)


def check_mutations(mutations: Iterable[gpb.Mutation], limits: Limits) -> None:
    """A batch's size and every node it carries. Ids it names are checked too."""
    count = 0
    for m in mutations:
        count += 1
        kind = m.WhichOneof("kind")
        if kind == "add_node":
            check_spec(m.add_node.node, limits, "add_node: ")
        elif kind == "split_node":
            count += len(m.split_node.replacements)
            for r in m.split_node.replacements:
                check_spec(r, limits, "split_node: ")
        elif kind == "inject_before":
            check_spec(m.inject_before.node, limits, "inject_before: ")
        elif kind == "modify_node":
            x = m.modify_node
            if x.HasField("input") and len(x.input) > limits.max_input_bytes:
                raise LimitExceeded(
                    f"modify_node: an input of {len(x.input)} bytes is over the limit "
                    f"max_input_bytes ({limits.max_input_bytes})"
                )
        if count > limits.max_mutations:
            raise LimitExceeded(
                f"a batch of more than {limits.max_mutations} mutations is over the limit "
                "max_mutations"
            )


def check_hello(hello: wpb.Hello, limits: Limits) -> None:
    check_id("worker_name", hello.worker_name, limits)
    check_id("language", hello.language, limits)
    check_id("sdk_version", hello.sdk_version, limits)
    if len(hello.agents) > limits.max_agents:
        raise LimitExceeded(
            f"{len(hello.agents)} agents is over the limit max_agents ({limits.max_agents})"
        )
    for agent in hello.agents:
        check_id("agent name", agent, limits)
    _check_map("label", hello.labels, limits)
    if len(hello.held) > limits.max_slots:
        raise LimitExceeded(
            f"Hello.held lists {len(hello.held)} attempts, over the limit max_slots "
            f"({limits.max_slots})"
        )


def cut_error(message: str, limits: Limits) -> str:
    if len(message) * 4 <= limits.max_error_bytes:
        return message
    data = message.encode()
    if len(data) <= limits.max_error_bytes:
        return message
    cut = data[: max(0, limits.max_error_bytes - 40)].decode(errors="ignore")
    return f"{cut}... [cut: {len(data)} bytes in all]"


__all__ = [
    "DEFAULT_LIMITS",
    "LimitExceeded",
    "Limits",
    "LimitsError",
    "build_limits",
    "check_hello",
    "check_id",
    "check_mutations",
    "check_spec",
    "check_submit",
    "cut_error",
    "load_limits",
]
