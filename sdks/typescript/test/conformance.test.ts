import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { resolve } from "node:path";
import { afterEach, describe, test } from "node:test";
import { conformanceAgents } from "../src/conformance-agents";
import type { DependencyResult, Result } from "../src/gen/hivegrid/v1/worker";
import { Outcome } from "../src/gen/hivegrid/v1/worker";
import { decodeJson } from "../src/index";
import { assignment, FakeCoordinator, within } from "./fake-coordinator";
import { after, closeAll, json, results, start } from "./harness";

const T = { timeout: 20_000 };
afterEach(closeAll);

function dep(nodeId: string, value: unknown): DependencyResult {
  return { nodeId, result: value === null ? Buffer.alloc(0) : Buffer.from(JSON.stringify(value)) };
}

async function runOne(agent: string, input: unknown, extra: Parameters<typeof assignment>[2] = {}): Promise<Result> {
  const { session } = await start(conformanceAgents);
  session.assign(assignment(agent, input, extra));
  const [result] = await results(session, 1);
  return result as Result;
}

describe("conformance agents", () => {
  test("echo returns its input and its dependencies' results", T, async () => {
    const r = await runOne("echo", { x: [1, "two"] }, { deps: [dep("a", { v: 1 }), dep("b", null)] });
    assert.equal(r.outcome, Outcome.OUTCOME_SUCCEEDED);
    assert.deepEqual(json(r), { input: { x: [1, "two"] }, deps: { a: { v: 1 }, b: null } });
  });

  test("sum adds top-level numbers, not booleans, and stays an integer", T, async () => {
    const { session } = await start(conformanceAgents);
    const ints = assignment("sum", null, {
      deps: [dep("a", 3), dep("b", { value: 2, ok: true, s: "7", n: { x: 9 } }), dep("c", { y: 1 })],
    });
    const floats = assignment("sum", null, { deps: [dep("a", 1.5), dep("b", { value: 2.25 })] });
    const none = assignment("sum");
    session.assign(ints, floats, none);
    const got = await results(session, 3);
    const byNode = new Map(got.map((r) => [r.ref?.nodeId, Buffer.from(r.result).toString()]));
    assert.equal(byNode.get(ints.ref?.nodeId), "6");
    assert.equal(byNode.get(floats.ref?.nodeId), "3.75");
    assert.equal(byNode.get(none.ref?.nodeId), "0");
  });

  test("value, progress and sleep", T, async () => {
    const { session } = await start(conformanceAgents);
    const value = assignment("value", { value: 42 });
    const progress = assignment("progress", { steps: 3 });
    const sleep = assignment("sleep", { seconds: 0.01 });
    session.assign(value, progress, sleep);
    const steps: unknown[] = [];
    const got: Result[] = [];
    while (got.length < 3) {
      const msg = (await session.received.next(5000, "message")).msg;
      if (msg?.$case === "progress") steps.push(...msg.progress.items.map((p) => decodeJson(p.data)));
      if (msg?.$case === "results") got.push(...msg.results.items);
    }
    const byNode = new Map(got.map((r) => [r.ref?.nodeId, json(r)]));
    assert.deepEqual(byNode.get(value.ref?.nodeId), { value: 42 });
    assert.deepEqual(byNode.get(progress.ref?.nodeId), { steps: 3 });
    assert.deepEqual(byNode.get(sleep.ref?.nodeId), { slept: 0.01 });
    assert.deepEqual(steps, [{ step: 1 }, { step: 2 }, { step: 3 }]);
  });

  test("a cancelled sleep answers OUTCOME_CANCELLED promptly", T, async () => {
    const { session } = await start(conformanceAgents);
    const a = assignment("sleep", { seconds: 60 });
    session.assign(a);
    // The worker starts the agent when the assignment arrives; a cancel racing it is also fine.
    session.cancel(a.ref!, "timeout");
    const [r] = await results(session, 1);
    assert.equal(r?.outcome, Outcome.OUTCOME_CANCELLED);
  });

  test("flaky fails retryably while attempt <= fail_times", T, async () => {
    const { session } = await start(conformanceAgents);
    const first = assignment("flaky", { fail_times: 1 }, { ref: { runId: "r", nodeId: "f", attempt: 1, lease: 1n } });
    session.assign(first);
    const [r1] = await results(session, 1);
    assert.equal(r1?.outcome, Outcome.OUTCOME_FAILED);
    assert.deepEqual(r1?.error, { message: "flaky failure on attempt 1", retryable: true, kind: "agent" });
    const second = assignment("flaky", { fail_times: 1 }, { ref: { runId: "r", nodeId: "f", attempt: 2, lease: 2n } });
    session.assign(second);
    const [r2] = await results(session, 1);
    assert.deepEqual(json(r2!), { attempt: 2 });
  });

  test("fail honours `retryable`", T, async () => {
    const { session } = await start(conformanceAgents);
    const hard = assignment("fail", { message: "hard", retryable: false });
    const soft = assignment("fail", { message: "soft", retryable: true });
    session.assign(hard, soft);
    const got = await results(session, 2);
    const errors = new Map(got.map((r) => [r.ref?.nodeId, r.error]));
    assert.deepEqual(errors.get(hard.ref?.nodeId), { message: "hard", retryable: false, kind: "agent" });
    assert.deepEqual(errors.get(soft.ref?.nodeId), { message: "soft", retryable: true, kind: "agent" });
  });

  test("spawn adds children and a join in the same result", T, async () => {
    const r = await runOne(
      "spawn",
      { count: 3, child_agent: "value", child_input: { value: 2 } },
      { ref: { runId: "r", nodeId: "p", attempt: 1, lease: 9n }, canMutate: true },
    );
    assert.deepEqual(json(r), { spawned: 3 });
    const added = r.mutations.map((m) => {
      assert.equal(m.kind?.$case, "addNode");
      const node = m.kind.addNode.node!;
      return {
        id: node.id,
        agent: node.agent,
        input: decodeJson(node.input),
        deps: node.dependsOn,
        canMutate: node.canMutate,
      };
    });
    assert.deepEqual(added, [
      { id: "p/c0", agent: "value", input: { value: 2 }, deps: [], canMutate: true },
      { id: "p/c1", agent: "value", input: { value: 2 }, deps: [], canMutate: true },
      { id: "p/c2", agent: "value", input: { value: 2 }, deps: [], canMutate: true },
      { id: "p/join", agent: "sum", input: null, deps: ["p/c0", "p/c1", "p/c2"], canMutate: false },
    ]);
  });

  test("mutate sends its JSON mutations, of every kind", T, async () => {
    const node = { id: "n", agent: "echo", input: { deep: [1] }, depends_on: ["a"], retry: { max_attempts: 2 } };
    const mutations = [
      { add_node: { node, speculative: true } },
      { add_edge: { from_id: "a", to_id: "b" } },
      { remove_edge: { from_id: "a", to_id: "b" } },
      { remove_node: { id: "x" } },
      { modify_node: { id: "y", input: "new", timeout_s: 1.5 } },
      {
        split_node: {
          id: "z",
          replacements: [
            { agent: "echo", id: "z1" },
            { agent: "echo", id: "z2" },
          ],
        },
      },
      { inject_before: { target_id: "t", node: { id: "i", agent: "echo" } } },
      { prune_subgraph: { root_id: "q" } },
      { mark_speculative: { id: "s" } },
      { confirm_speculative: { id: "s" } },
      { discard_speculative: { id: "s2" } },
    ];
    const r = await runOne("mutate", { mutations }, { canMutate: true });
    assert.equal(r.outcome, Outcome.OUTCOME_SUCCEEDED);
    assert.deepEqual(json(r), {});
    assert.deepEqual(
      r.mutations.map((m) => m.kind?.$case),
      [
        "addNode",
        "addEdge",
        "removeEdge",
        "removeNode",
        "modifyNode",
        "splitNode",
        "injectBefore",
        "pruneSubgraph",
        "markSpeculative",
        "confirmSpeculative",
        "discardSpeculative",
      ],
    );
    const add = r.mutations[0]?.kind;
    assert.ok(add?.$case === "addNode");
    assert.equal(add.addNode.speculative, true);
    assert.deepEqual(decodeJson(add.addNode.node!.input), { deep: [1] });
    assert.equal(add.addNode.node!.retry?.maxAttempts, 2);
    const modify = r.mutations[4]?.kind;
    assert.ok(modify?.$case === "modifyNode");
    assert.equal(decodeJson(modify.modifyNode.input!), "new");
    assert.equal(modify.modifyNode.timeoutS, 1.5);
    assert.equal(modify.modifyNode.priority, undefined);
  });

  test("mutate with a malformed mutation fails, not retryable, naming the problem", T, async () => {
    const r = await runOne("mutate", { mutations: [{ add_edge: { from_id: "a", to: "b" } }] }, { canMutate: true });
    assert.equal(r.outcome, Outcome.OUTCOME_FAILED);
    assert.equal(r.error?.retryable, false);
    assert.match(r.error?.message ?? "", /mutations\[0\]\.add_edge: unknown field "to"/);
    assert.deepEqual(r.mutations, []);
  });

  test("an unregistered agent fails with kind unknown_agent", T, async () => {
    const r = await runOne("nope", null);
    assert.deepEqual(r.error, {
      message: 'this worker does not run agent "nope"',
      retryable: false,
      kind: "unknown_agent",
    });
  });
});

describe("conformance program", () => {
  const program = resolve(__dirname, "../../dist/conformance.js");

  async function launch(
    args: string[],
  ): Promise<{ child: ChildProcess; stderr: () => string; exit: Promise<number | null> }> {
    const child = spawn(process.execPath, [program, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let text = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      text += chunk.toString();
    });
    const exit = once(child, "exit").then(([code]) => code as number | null);
    after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    return { child, stderr: () => text, exit };
  }

  test("connects, runs, drains on SIGTERM and exits 0", T, async () => {
    const coordinator = new FakeCoordinator();
    const address = await coordinator.start();
    after(() => coordinator.stop());
    const { child, stderr, exit } = await launch(["--coordinator", address, "--slots", "2", "--name", "ts-conf"]);
    const { session, hello } = await coordinator.accept(10_000);
    assert.equal(hello.workerName, "ts-conf");
    assert.equal(hello.language, "typescript");
    assert.equal(hello.slots, 2);
    assert.deepEqual([...hello.agents].sort(), [
      "crash",
      "echo",
      "fail",
      "flaky",
      "mutate",
      "progress",
      "sleep",
      "spawn",
      "sum",
      "value",
    ]);
    session.welcome({ sessionId: "s-bin" });
    const a = assignment("value", { value: 5 });
    session.assign(a);
    const [r] = await results(session, 1);
    assert.deepEqual(json(r!), { value: 5 });
    assert.match(stderr(), /hivegrid worker ts-conf connected: session s-bin\n/);
    child.kill("SIGTERM");
    await session.expect("drain");
    session.ack([a.ref!]);
    await within(session.halfClosed, 5000, "half-close");
    session.end();
    assert.equal(await within(exit, 5000, "exit"), 0);
  });

  test("crash ends the process with exit code 1", T, async () => {
    const coordinator = new FakeCoordinator();
    const address = await coordinator.start();
    after(() => coordinator.stop());
    const { exit } = await launch(["--coordinator", address]);
    const { session, hello } = await coordinator.accept(10_000);
    assert.equal(hello.slots, 4);
    assert.equal(hello.workerName, "typescript-conformance");
    session.welcome();
    session.assign(assignment("crash", {}));
    assert.equal(await within(exit, 5000, "exit"), 1);
  });

  test("a refusal exits 2", T, async () => {
    const coordinator = new FakeCoordinator();
    const address = await coordinator.start();
    after(() => coordinator.stop());
    const child = spawn(process.execPath, [program], {
      stdio: "ignore",
      env: { ...process.env, HIVEGRID_COORDINATOR: address },
    });
    const exit = once(child, "exit");
    const { session } = await coordinator.accept(10_000);
    session.send({ msg: { $case: "refusal", refusal: { reason: "no" } } });
    const [code] = await within(exit, 5000, "exit");
    assert.equal(code, 2);
  });
});
