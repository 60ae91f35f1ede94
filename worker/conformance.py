"""The Python conformance worker (/work/shared/design/CONFORMANCE.md).

    python -m hivegrid.worker.conformance --coordinator HOST:PORT [--slots N] [--name NAME]

Every SDK's conformance worker runs these agents with exactly the same semantics, so that one
language-neutral suite can check them all.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from ._context import Context
from ._errors import CoordinatorRefusedError, NonRetryableError
from ._worker import ADDRESS_ENV, Worker

__all__ = ["build_worker", "main"]


async def echo(ctx: Context) -> object:
    return {"input": ctx.input, "deps": ctx.deps}


async def fail(ctx: Context) -> object:
    message = str(ctx.input["message"])
    if ctx.input.get("retryable", False):
        raise RuntimeError(message)
    raise NonRetryableError(message)


async def flaky(ctx: Context) -> object:
    if ctx.attempt <= int(ctx.input["fail_times"]):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


async def sleep(ctx: Context) -> object:
    seconds = ctx.input["seconds"]
    await asyncio.sleep(seconds)  # a cancel interrupts it: the answer is OUTCOME_CANCELLED
    return {"slept": seconds}


async def spawn(ctx: Context) -> object:
    args = ctx.input or {}
    count = int(args["count"])
    child_agent = args.get("child_agent") or "echo"
    child_input = args.get("child_input")
    me = ctx.node_id
    children = [f"{me}/c{i}" for i in range(count)]
    for child in children:
        ctx.add_node(child, child_agent, child_input, can_mutate=True)
    ctx.add_node(f"{me}/join", "sum", None, depends_on=children)
    return {"spawned": count}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def sum_(ctx: Context) -> object:
    addends: list[int | float] = []
    for result in ctx.deps.values():
        if _is_number(result):
            addends.append(result)
        elif isinstance(result, dict):
            addends.extend(v for v in result.values() if _is_number(v))
    if all(isinstance(a, int) for a in addends):
        return sum(addends)
    return float(sum(addends))


async def value(ctx: Context) -> object:
    return {"value": ctx.input["value"]}


async def progress(ctx: Context) -> object:
    steps = int(ctx.input["steps"])
    for step in range(1, steps + 1):
        ctx.progress({"step": step})
    return {"steps": steps}


async def mutate(ctx: Context) -> object:
    try:
        ctx.mutations_from_json(ctx.input["mutations"])
    except ValueError as exc:
        raise NonRetryableError(f"bad mutations: {exc}") from exc
    return {}


async def crash(ctx: Context) -> object:
    os._exit(1)


AGENTS = {
    "echo": echo,
    "fail": fail,
    "flaky": flaky,
    "sleep": sleep,
    "spawn": spawn,
    "sum": sum_,
    "value": value,
    "progress": progress,
    "mutate": mutate,
    "crash": crash,
}


def build_worker(*, name: str = "python-conformance", slots: int = 4) -> Worker:
    worker = Worker(name=name, slots=slots)
    for agent, fn in AGENTS.items():
        worker.register(agent, fn)
    return worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hivegrid.worker.conformance", description=__doc__
    )
    parser.add_argument("--coordinator", default=os.environ.get(ADDRESS_ENV, ""))
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--name", default="python-conformance")
    args = parser.parse_args(argv)
    if not args.coordinator:
        parser.error(f"--coordinator HOST:PORT (or {ADDRESS_ENV}) is required")
    # The suite reads "hivegrid worker NAME connected: session ID" from stderr.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("hivegrid.worker").setLevel(logging.INFO)
    worker = build_worker(name=args.name, slots=args.slots)
    try:
        worker.run(coordinator=args.coordinator)
    except CoordinatorRefusedError as exc:
        print(f"hivegrid worker {args.name}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
