"""A benchmark worker process: `python -m bench.hg_worker --coordinator HOST:PORT [--streams K]
[--slots N] [--impl sdk|raw|auto]`.

Opens K worker streams (K > 1 only for the streams workload) with N slots each and runs the
agents of `bench.agents`. `sdk` uses the Python worker SDK (`worker.Worker`), `raw` the
hand-written protocol client of `bench.rawworker`; `auto` takes the SDK when it is importable.
Prints `bench-worker ready IMPL TIME` once imported (before connecting), then runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from . import agents


def sdk_available() -> bool:
    try:
        from hivegrid.worker import Worker  # noqa: F401
    except ImportError:
        return False
    return True


def _build_sdk_worker(name: str, slots: int) -> Any:
    from hivegrid.worker import Worker

    w = Worker(name=name, slots=slots)

    @w.agent("noop")
    async def noop(ctx: Any) -> None:
        return None

    @w.agent("stamp")
    async def stamp(ctx: Any) -> Any:
        t = time.time()
        return {"s": t, "e": time.time()}

    @w.agent("join")
    async def join(ctx: Any) -> Any:
        return len(ctx.deps)

    @w.agent("spawn")
    async def spawn(ctx: Any) -> Any:
        spec = ctx.input
        ctx.add_mutations(agents.spawn_mutations(ctx.node_id, spec))
        return {"spawned": int(spec["count"])}

    return w


async def _run_sdk(address: str, name: str, streams: int, slots: int) -> None:
    workers = [_build_sdk_worker(f"{name}-{i}", slots) for i in range(streams)]
    await asyncio.gather(*(w.serve(address) for w in workers))


async def _run_raw(address: str, name: str, streams: int, slots: int) -> None:
    from .rawworker import RawStream

    tasks = [RawStream(address, name=f"{name}-{i}", slots=slots) for i in range(streams)]
    await asyncio.gather(*(t.run() for t in tasks))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hg_worker")
    p.add_argument("--coordinator", required=True)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--name", default=f"bench-{os.getpid()}")
    p.add_argument("--impl", choices=("sdk", "raw", "auto"), default="auto")
    args = p.parse_args(argv)
    impl = args.impl
    if impl == "auto":
        impl = "sdk" if sdk_available() else "raw"
    # Benchmarks need no graceful drain: SIGTERM ends the process at once.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(json.dumps({"ready": impl, "time": time.time()}), flush=True)
    run = _run_sdk if impl == "sdk" else _run_raw
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.coordinator, args.name, args.streams, args.slots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
