"""`make demo`: a coordinator on its SQLite store, workers in three languages, and an agent graph
that grows while it runs, watched live.

The graph starts as two nodes, plan -> report. The planner (Python) adds a research and a summary
node per subtopic and makes the report wait for every summary; research nodes stream progress
and run on whichever worker has a free slot (Go, TypeScript or Python); the report joins them.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from hivegrid.v1 import graph_pb2 as gpb
from hivegrid.v1 import run_pb2 as rpb
from hivegrid.v1 import run_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
GO_WORKER = ROOT / "sdks/go/bin/conformance-worker"
TS_WORKER = ROOT / "sdks/typescript/dist/conformance.js"
SUBTOPICS = [
    "retrieval quality",
    "tool-call latency",
    "cost per answer",
    "failure modes",
    "evaluation sets",
    "guardrails",
]
STATE = {v: k.removeprefix("NODE_STATE_").lower() for k, v in gpb.NodeState.items()}
COLORS = {"python": "\033[33m", "go": "\033[36m", "typescript": "\033[35m"}
RESET = "\033[0m"


def color(lang: str, text: str) -> str:
    return f"{COLORS.get(lang, '')}{text}{RESET}" if sys.stdout.isatty() else text


def start_coordinator(data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hivegrid.coordinator",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--store",
            f"sqlite:///{data / 'hivegrid.db'}",
        ],
        stdout=subprocess.PIPE,
        stderr=open(data / "coordinator.log", "w"),  # noqa: SIM115 - the child owns it
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise SystemExit(f"the coordinator did not start; see {data / 'coordinator.log'}")
    return proc, line.rsplit(" ", 1)[1].strip()


def start_workers(address: str, data: Path) -> dict[str, subprocess.Popen[bytes]]:
    workers: dict[str, list[str]] = {
        "python": [
            sys.executable,
            "-m",
            "hivegrid.coordinator",
            "worker",
            "--coordinator",
            address,
            "examples.demo.agents:worker",
        ],
    }
    if GO_WORKER.exists():
        workers["go"] = [
            str(GO_WORKER),
            "--coordinator",
            address,
            "--slots",
            "3",
            "--name",
            "go-worker",
        ]
    else:
        print("  (no Go worker: Go is missing or `make build-go` failed; running without it)")
    if TS_WORKER.exists() and shutil.which("node"):
        workers["typescript"] = [
            "node",
            str(TS_WORKER),
            "--coordinator",
            address,
            "--slots",
            "3",
            "--name",
            "typescript-worker",
        ]
    else:
        print("  (no TypeScript worker: Node is missing or `make build-ts` failed)")
    return {
        lang: subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(data / f"worker-{lang}.log", "wb")
        )
        for lang, cmd in workers.items()
    }


def wait_for_workers(stub: run_pb2_grpc.RunServiceStub, count: int) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = stub.ListWorkers(rpb.ListWorkersRequest()).workers
        if len(workers) >= count:
            return {w.worker_name: w.language for w in workers}
        time.sleep(0.1)
    raise SystemExit("the workers did not connect within 30 s; see the logs")


def watch(
    stub: run_pb2_grpc.RunServiceStub, run_id: str, languages: dict[str, str]
) -> dict[str, str]:
    ran_on: dict[str, str] = {}
    started = time.monotonic()
    events = (
        ev for resp in stub.WatchRun(rpb.WatchRunRequest(run_id=run_id)) for ev in resp.events
    )
    for ev in events:
        t = f"{time.monotonic() - started:5.2f}s"
        kind = ev.WhichOneof("kind")
        if kind == "node_dispatched":
            d = ev.node_dispatched
            lang = languages.get(d.worker_name, "?")
            ran_on[d.node_id] = lang
            print(f"{t}  {d.node_id:<12} -> {color(lang, f'{lang} ({d.worker_name})')}")
        elif kind == "progress":
            p = ev.progress
            lang = ran_on.get(p.node_id, "")
            print(f"{t}  {p.node_id:<12}    {color(lang, json.dumps(json.loads(p.data)))}")
        elif kind == "attempt_finished":
            f = ev.attempt_finished
            grown = f"  (+{len(f.mutations)} mutations: the graph grows)" if f.mutations else ""
            print(f"{t}  {f.node_id:<12} done{grown}")
        elif kind == "run_ended":
            print(f"{t}  run {gpb.RunState.Name(ev.run_ended.state)[10:].lower()}")
    return ran_on


def main() -> int:
    data = Path(tempfile.mkdtemp(prefix="hivegrid-demo-"))
    print(f"Hivegrid demo — logs and the SQLite store in {data}")
    coordinator, address = start_coordinator(data)
    print(f"coordinator on {address} (store: sqlite)")
    workers = start_workers(address, data)
    code = 1
    try:
        channel = grpc.insecure_channel(address)
        stub = run_pb2_grpc.RunServiceStub(channel)
        languages = wait_for_workers(stub, len(workers))
        print("workers:", ", ".join(f"{n} ({lang})" for n, lang in sorted(languages.items())))
        question = "What makes an agent pipeline reliable?"
        graph = [
            gpb.NodeSpec(
                id="plan",
                agent="planner",
                can_mutate=True,
                input=json.dumps({"subtopics": SUBTOPICS}).encode(),
            ),
            gpb.NodeSpec(
                id="report",
                agent="report",
                depends_on=["plan"],
                input=json.dumps({"question": question}).encode(),
            ),
        ]
        run_id = stub.SubmitRun(rpb.SubmitRunRequest(nodes=graph, name="demo")).run_id
        print(f"submitted run {run_id}: plan -> report (2 nodes; watch it grow)\n")
        ran_on = watch(stub, run_id, languages)
        run = stub.GetRun(rpb.GetRunRequest(run_id=run_id))
        print(
            f"\nrun {run_id}: {gpb.RunState.Name(run.run.state)[10:].lower()}, "
            f"{len(run.nodes)} nodes"
        )
        by_lang: dict[str, int] = {}
        for lang in ran_on.values():
            by_lang[lang] = by_lang.get(lang, 0) + 1
        print("nodes run per language:", ", ".join(f"{k} {v}" for k, v in sorted(by_lang.items())))
        report = next(n for n in run.nodes if n.id == "report")
        if report.result:
            result = json.loads(report.result)
            print(f"\nreport: {result['question']}")
            for section in result["sections"]:
                print(f"  - {section}")
        code = 0 if run.run.state == gpb.RUN_STATE_SUCCEEDED else 1
        channel.close()
    finally:
        for proc in workers.values():
            proc.send_signal(signal.SIGTERM)
        for lang, proc in workers.items():
            try:
                rc = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            if rc != 0:
                print(f"  ({lang} worker exited with {rc}; see {data}/worker-{lang}.log)")
        coordinator.send_signal(signal.SIGTERM)
        coordinator.wait(timeout=15)
    print("\nstopped the workers (drained) and the coordinator.")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
