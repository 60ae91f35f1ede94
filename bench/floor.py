"""The transport floor: what bare grpc.aio carries over the streams workload's shape.

`python -m bench.floor serve` is a server whose Connect method answers every request with one
empty Push and does nothing else; `python -m bench.floor client ADDRESS STREAMS ROUNDS` opens
STREAMS streams on one channel and, on each, sends a message and waits for the answer ROUNDS
times. That is the least any coordinator in Python could do per node at one slot per stream (one
message in, one out), so the streams workload is reported against it as well as against fanout.
The same messages as the real protocol, over the same number of streams and processes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import grpc
import psutil

from hivegrid.v1 import worker_pb2 as wpb

from .procs import ROOT, cpu_seconds

_SERVICE = "hivegrid.v1.WorkerService"
_METHOD = f"/{_SERVICE}/Connect"


async def _serve() -> None:
    answer = wpb.ConnectResponse(push=wpb.Push())

    async def connect(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        while await context.read() is not grpc.aio.EOF:
            await context.write(answer)

    handler = grpc.stream_stream_rpc_method_handler(
        connect,
        request_deserializer=wpb.ConnectRequest.FromString,
        response_serializer=wpb.ConnectResponse.SerializeToString,
    )
    server = grpc.aio.server()
    generic = grpc.method_handlers_generic_handler(_SERVICE, {"Connect": handler})
    server.add_generic_rpc_handlers([generic])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


async def _client(address: str, streams: int, rounds: int) -> None:
    channel = grpc.aio.insecure_channel(address)
    connect = channel.stream_stream(
        _METHOD,
        request_serializer=wpb.ConnectRequest.SerializeToString,
        response_deserializer=wpb.ConnectResponse.FromString,
    )
    # One result per round, as a worker would send it.
    request = wpb.ConnectRequest(
        results=wpb.Results(
            items=[wpb.Result(ref=wpb.AssignmentRef(run_id="r", node_id="n", attempt=1, lease=1))]
        )
    )

    async def one() -> None:
        call = connect()
        for _ in range(rounds):
            await call.write(request)
            await call.read()
        await call.done_writing()

    await channel.channel_ready()
    print("ready", flush=True)
    sys.stdin.readline()  # the go signal: every process starts at once
    await asyncio.gather(*(one() for _ in range(streams)))
    await channel.close()


def measure(streams: int, procs: int, rounds_total: int, timeout: float) -> dict[str, Any]:
    """Runs the floor with `streams` streams over `procs` client processes; returns round
    trips per second and the server's CPU per 1,000 round trips."""
    per_proc = max(1, streams // procs)
    rounds = max(1, rounds_total // (per_proc * procs))
    cmd = [sys.executable, "-m", "bench.floor"]
    server = subprocess.Popen([*cmd, "serve"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    clients: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None
        address = server.stdout.readline().split()[-1]
        for _ in range(procs):
            clients.append(
                subprocess.Popen(
                    [*cmd, "client", address, str(per_proc), str(rounds)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
            )
        for c in clients:
            assert c.stdout is not None
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("a floor client failed to connect")
        ps = psutil.Process(server.pid)
        cpu0, t0 = cpu_seconds([ps]), time.perf_counter()
        for c in clients:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        for c in clients:
            if c.wait(timeout=timeout) != 0:
                raise RuntimeError(f"a floor client exited with {c.returncode}")
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds([ps]) - cpu0
    finally:
        for p in (*clients, server):
            if p.poll() is None:
                p.kill()
                p.wait()
    total = rounds * per_proc * procs
    return {
        "nodes": total,
        "seconds": seconds,
        "throughput": total / seconds,
        "coord_cpu_s_per_1k": cpu / total * 1000,
        "streams": per_proc * procs,
        "processes": procs,
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        asyncio.run(_serve())
    elif argv[:1] == ["client"] and len(argv) == 4:
        asyncio.run(_client(argv[1], int(argv[2]), int(argv[3])))
    elif argv[:1] == ["measure"] and len(argv) == 4:
        print(json.dumps(measure(int(argv[1]), int(argv[2]), int(argv[3]), timeout=300)))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
