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

from hivegrid.client import Client, Graph, RunState

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


def wait_for_workers(client: Client, count: int) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = client.list_workers()
        if len(workers) >= count:
            return {w.name: w.language for w in workers}
        time.sleep(0.1)
    raise SystemExit("the workers did not connect within 30 s; see the logs")


def watch(client: Client, run_id: str, languages: dict[str, str]) -> dict[str, str]:
    ran_on: dict[str, str] = {}
    started = time.monotonic()
    for ev in client.events(run_id):
        t = f"{time.monotonic() - started:5.2f}s"
        if ev.kind == "node_dispatched" and ev.node_id:
            worker = ev.worker_name or ""
            lang = languages.get(worker, "?")
            ran_on[ev.node_id] = lang
            print(f"{t}  {ev.node_id:<12} -> {color(lang, f'{lang} ({worker})')}")
        elif ev.kind == "progress" and ev.node_id:
            lang = ran_on.get(ev.node_id, "")
            print(f"{t}  {ev.node_id:<12}    {color(lang, json.dumps(ev.data))}")
        elif ev.kind == "attempt_finished":
            n = len(ev.mutations)
            grown = f"  (+{n} mutations: the graph grows)" if n else ""
            print(f"{t}  {ev.node_id:<12} done{grown}")
        elif ev.kind == "run_ended":
            print(f"{t}  run {ev.state}")
    return ran_on


def main() -> int:
    data = Path(tempfile.mkdtemp(prefix="hivegrid-demo-"))
    print(f"Hivegrid demo — logs and the SQLite store in {data}")
    coordinator, address = start_coordinator(data)
    print(f"coordinator on {address} (store: sqlite)")
    workers = start_workers(address, data)
    code = 1
    try:
        with Client(address) as client:
            languages = wait_for_workers(client, len(workers))
            print("workers:", ", ".join(f"{n} ({lang})" for n, lang in sorted(languages.items())))
            question = "What makes an agent pipeline reliable?"
            graph = Graph(name="demo")
            plan = graph.node("planner", {"subtopics": SUBTOPICS}, id="plan", can_mutate=True)
            graph.node("report", {"question": question}, id="report", after=[plan])
            run_id = client.submit(graph)
            print(f"submitted run {run_id}: plan -> report (2 nodes; watch it grow)\n")
            ran_on = watch(client, run_id, languages)
            run = client.get_run(run_id)
        print(f"\nrun {run_id}: {run.state}, {len(run.nodes)} nodes")
        by_lang: dict[str, int] = {}
        for lang in ran_on.values():
            by_lang[lang] = by_lang.get(lang, 0) + 1
        print("nodes run per language:", ", ".join(f"{k} {v}" for k, v in sorted(by_lang.items())))
        report = run.node("report").result
        if report:
            print(f"\nreport: {report['question']}")
            for section in report["sections"]:
                print(f"  - {section}")
        code = 0 if run.state == RunState.SUCCEEDED else 1
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
