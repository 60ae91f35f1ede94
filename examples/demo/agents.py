"""The demo's Python worker: a planner that grows the graph while it runs, and a writer that
joins what the other workers (Python, Go, TypeScript) produced.

Run it on its own with: hivegrid worker --coordinator HOST:PORT examples.demo.agents:worker
"""

from __future__ import annotations

import asyncio
import random

from hivegrid.worker import Context, Worker

worker = Worker(name="python-demo", slots=4)


@worker.agent("planner")
async def planner(ctx: Context) -> object:
    """Splits a question into research subtasks and wires them into the report."""
    subtopics: list[str] = ctx.input["subtopics"]
    for i, topic in enumerate(subtopics):
        ctx.progress({"planning": topic})
        await asyncio.sleep(0.05)  # stands in for a model call
        research = f"research/{i}"
        ctx.add_node(research, "progress", {"steps": random.randint(3, 6)}, depends_on=["plan"])
        ctx.add_node(f"summary/{i}", "echo", {"topic": topic}, depends_on=[research])
        ctx.add_edge(f"summary/{i}", "report")
    return {"subtasks": len(subtopics)}


@worker.agent("progress")
async def progress(ctx: Context) -> object:
    steps = int(ctx.input["steps"])
    for step in range(1, steps + 1):
        await asyncio.sleep(0.1)
        ctx.progress({"step": step})
    return {"steps": steps}


@worker.agent("echo")
async def echo(ctx: Context) -> object:
    return {"input": ctx.input, "deps": ctx.deps}


@worker.agent("report")
def report(ctx: Context) -> object:
    """A plain function: the SDK runs it in a thread."""
    sections = []
    total_steps = 0
    for node_id, result in sorted(ctx.deps.items()):
        if not node_id.startswith("summary/"):
            continue
        topic = result["input"]["topic"]
        steps = sum(r.get("steps", 0) for r in result["deps"].values())
        total_steps += steps
        sections.append(f"{topic} ({steps} research steps)")
    return {"question": ctx.input["question"], "sections": sections, "steps": total_steps}
