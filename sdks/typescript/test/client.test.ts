// The Client and the Graph builder. The Client is tested against a real coordinator (the Python
// daemon, as a subprocess on loopback with a SQLite file) and a real worker of this SDK in the
// test process.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after as afterAll, afterEach, before, describe, test } from "node:test";
import { conformanceAgents } from "../src/conformance-agents";
import {
  type Agent,
  Client,
  DEFAULT_COORDINATOR,
  Graph,
  NodeHandle,
  RpcError,
  type RunEvent,
  TimeoutError,
  Worker,
} from "../src/index";
import { deferred, within } from "./fake-coordinator";
import { after, closeAll, quiet } from "./harness";

const T = { timeout: 60_000 };
afterEach(closeAll);

const PKG = resolve(__dirname, "../..");
const REPO = resolve(PKG, "../..");
const PYTHON = process.env.HIVEGRID_PYTHON || resolve(PKG, "../../.venv/bin/python");
const havePython = existsSync(PYTHON);
// CI must run these; elsewhere a checkout without the venv skips them, saying why.
const skipReal =
  !havePython && process.env.CI !== "true"
    ? `no Python at ${PYTHON} to run the coordinator (make setup, or set HIVEGRID_PYTHON)`
    : false;

describe("Graph", () => {
  test("default ids, dependencies by handle or id, options carried over", () => {
    const g = new Graph("g", { limits: { maxNodes: 10 } });
    const a = g.node("value", { value: 1 });
    const b = g.node("value", { value: 2 }, { id: "b", retry: { maxAttempts: 3 }, labels: { gpu: "yes" } });
    const s = g.node("sum", null, { after: [a, "b"], timeoutS: 5, canMutate: true });
    assert.ok(a instanceof NodeHandle);
    assert.deepEqual([a.id, b.id, s.id], ["value-1", "b", "sum-3"]);
    assert.equal(`${s}`, "sum-3");
    assert.deepEqual(g.nodes, [
      { id: "value-1", agent: "value", input: { value: 1 }, dependsOn: [] },
      {
        id: "b",
        agent: "value",
        input: { value: 2 },
        dependsOn: [],
        retry: { maxAttempts: 3 },
        labels: { gpu: "yes" },
      },
      { id: "sum-3", agent: "sum", input: null, dependsOn: ["value-1", "b"], timeoutS: 5, canMutate: true },
    ]);
    assert.deepEqual(g.limits, { maxNodes: 10 });
    // A default id never takes one already given.
    const h = new Graph();
    h.node("x", null, { id: "x-2" });
    assert.equal(h.node("x").id, "x-3");
  });

  test("mistakes are reported when the node is added, naming it", () => {
    const g = new Graph();
    const a = g.node("echo", 1, { id: "a" });
    assert.throws(() => g.node("echo", 2, { id: "a" }), /^Error: node "a" is already in this graph$/);
    assert.throws(() => g.node("echo", 2, { after: ["zzz"] }), /node "echo-2": dependency "zzz" is not in this graph/);
    const other = new Graph().node("echo", 1, { id: "a" });
    assert.throws(() => g.node("echo", 2, { id: "c", after: [other] }), /dependency "a" belongs to another graph/);
    assert.throws(() => g.node("echo", 10n, { id: "d" }), /node "d": the input is not JSON/);
    assert.throws(() => g.node("", 1), /a node needs an agent name/);
    assert.equal(g.nodes.length, 1, "a refused node is not added");
    g.node("echo", 3, { after: [a] });
    assert.equal(g.nodes.length, 2);
  });
});

describe("Client without a coordinator", () => {
  test("the address defaults to HIVEGRID_COORDINATOR, then 127.0.0.1:50051", () => {
    const saved = process.env.HIVEGRID_COORDINATOR;
    try {
      process.env.HIVEGRID_COORDINATOR = "10.1.2.3:4567";
      const fromEnv = new Client();
      fromEnv.close();
      assert.equal(fromEnv.address, "10.1.2.3:4567");
      delete process.env.HIVEGRID_COORDINATOR;
      const fallback = new Client();
      fallback.close();
      assert.equal(fallback.address, DEFAULT_COORDINATOR);
      const given = new Client("h:1");
      given.close();
      assert.equal(given.address, "h:1");
    } finally {
      if (saved === undefined) delete process.env.HIVEGRID_COORDINATOR;
      else process.env.HIVEGRID_COORDINATOR = saved;
    }
  });

  test("a malformed graph is refused before anything is sent", async () => {
    const client = new Client("127.0.0.1:1", { retryForMs: 0 });
    after(() => client.close());
    await assert.rejects(client.submit(new Graph()), /the graph is empty/);
    await assert.rejects(client.submit({ nodes: [] }), /"nodes" is empty/);
    await assert.rejects(
      client.submit({ nodes: [{ agent: "echo", depends: ["a"] }] }),
      /graph.nodes\[0\]: unknown field "depends"/,
    );
    await assert.rejects(client.submit({ nodes: [{ agent: "echo" }], nmae: "x" }), /graph: unknown field "nmae"/);
    assert.throws(() => client.watch(""), /a run id must be a non-empty string/);
    assert.throws(() => new Client("h:1", { token: "" }), /token must be a non-empty string/);
  });

  test("a coordinator that stays away: UNAVAILABLE once retryForMs is spent", T, async () => {
    const client = new Client("127.0.0.1:1", { retryForMs: 200 });
    after(() => client.close());
    await assert.rejects(client.getRun("r"), (error: unknown) => {
      assert.ok(error instanceof RpcError);
      assert.equal(error.code, "UNAVAILABLE");
      assert.match(error.message, /^getRun\("r"\): UNAVAILABLE: /);
      return true;
    });
  });
});

// ---- against a real coordinator -----------------------------------------------------------

const LISTENING = /hivegrid coordinator listening on (\S+)/;

class Coordinator {
  private constructor(
    readonly child: ChildProcess,
    readonly address: string,
    readonly log: { stderr: string },
  ) {}

  /** Starts `python -m hivegrid.coordinator coordinator` and resolves once it listens. */
  static async start(store: string, listen = "127.0.0.1:0"): Promise<Coordinator> {
    if (!havePython) throw new Error(`no Python at ${PYTHON} to run the coordinator (CI=true: required)`);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PYTHONPATH: [REPO, process.env.PYTHONPATH].filter(Boolean).join(":"),
    };
    delete env.HIVEGRID_COORDINATOR;
    const argv = ["-m", "hivegrid.coordinator", "coordinator", "--listen", listen, "--store", store];
    argv.push("--heartbeat-interval", "0.2", "--session-timeout", "1.5");
    const child = spawn(PYTHON, argv, { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
    const log = { stderr: "" };
    child.stderr?.on("data", (chunk: Buffer) => {
      log.stderr += chunk.toString();
    });
    const address = await within(
      new Promise<string>((ok, fail) => {
        let stdout = "";
        child.stdout?.on("data", (chunk: Buffer) => {
          stdout += chunk.toString();
          const match = LISTENING.exec(stdout);
          if (match?.[1]) ok(match[1]);
        });
        child.once("exit", (code) =>
          fail(new Error(`the coordinator exited (${code}) before listening:\n${log.stderr}`)),
        );
      }),
      30_000,
      "the coordinator to listen",
    ).catch((error: unknown) => {
      child.kill("SIGKILL");
      throw error;
    });
    return new Coordinator(child, address, log);
  }

  /** The end of its log, for failure messages. */
  get stderr(): string {
    return this.log.stderr.slice(-4000);
  }

  /** SIGKILL: nothing flushed that was not already durable. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, "exit");
    this.child.kill("SIGKILL");
    await within(exited, 10_000, "the coordinator to die");
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, "exit");
    this.child.kill("SIGTERM");
    await within(exited, 10_000, "the coordinator to stop").catch(() => this.kill());
  }
}

/** Gates a test opens: the `gate` agent waits for the one named by its input's `key`. */
const gates = new Map<string, ReturnType<typeof deferred<void>>>();
function gate(key: string): ReturnType<typeof deferred<void>> {
  let g = gates.get(key);
  if (!g) {
    g = deferred<void>();
    gates.set(key, g);
  }
  return g;
}

const gateAgent: Agent = async (node) => {
  const { key } = node.input as { key: string };
  await Promise.race([
    gate(key).promise,
    new Promise((_, reject) => node.signal.addEventListener("abort", () => reject(node.signal.reason))),
  ]);
  return { opened: key };
};

async function startWorker(coordinator: Coordinator, name: string): Promise<Worker> {
  const worker = new Worker({ name, slots: 4, logger: quiet, reconnect: { initialMs: 20, maxMs: 200 } });
  for (const [agent, fn] of Object.entries(conformanceAgents)) worker.register(agent, fn);
  worker.register("gate", gateAgent);
  let lastReason = "";
  worker.on("disconnected", (reason) => {
    lastReason = reason;
  });
  const connected = once(worker, "connected");
  void worker.run(coordinator.address).catch(() => {});
  try {
    await within(connected, 15_000, `worker ${name} to connect`);
  } catch (error) {
    await worker.stop();
    throw new Error(`${error}; last stream error: ${lastReason}; coordinator log:\n${coordinator.stderr}`);
  }
  return worker;
}

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

/** The events until (and with) the first that matches. */
async function until(iterator: AsyncIterator<RunEvent>, match: (e: RunEvent) => boolean): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for (;;) {
    const next = await within(iterator.next(), 30_000, "the next event");
    assert.ok(!next.done, `the watch ended before the awaited event; saw ${out.map((e) => e.kind).join(", ")}`);
    out.push(next.value);
    if (match(next.value)) return out;
  }
}

function assertGapless(events: RunEvent[], from = 1): void {
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => from + i),
  );
}

describe("Client against a real coordinator", { skip: skipReal }, () => {
  let dir: string;
  let coordinator: Coordinator;
  let worker: Worker;
  let client: Client;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "hivegrid-client-"));
    coordinator = await Coordinator.start(`sqlite:///${join(dir, "hivegrid.db")}`);
    worker = await startWorker(coordinator, "ts-client-worker");
    client = new Client(coordinator.address);
  });

  afterAll(async () => {
    client?.close();
    await worker?.stop();
    await coordinator?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("submit a built graph, watch it to the end, wait for it: results by node", T, async () => {
    const g = new Graph("ts-client");
    const a = g.node("value", { value: 2 });
    const b = g.node("value", { value: 3 });
    const s = g.node("sum", null, { after: [a, b] });
    g.node("echo", { hello: "world" }, { after: [s, a] });
    const runId = await client.submit(g);
    assert.match(runId, /\S/);

    const events = await within(collect(client.watch(runId)), 30_000, "the watch to end");
    assertGapless(events);
    const first = events[0];
    assert.ok(first?.kind === "run_submitted");
    assert.equal(first.name, "ts-client");
    assert.deepEqual(
      first.nodes.map((n) => [n.id, n.agent, n.dependsOn]),
      [
        ["value-1", "value", []],
        ["value-2", "value", []],
        ["sum-3", "sum", ["value-1", "value-2"]],
        ["echo-4", "echo", ["sum-3", "value-1"]],
      ],
    );
    const last = events.at(-1);
    assert.ok(last?.kind === "run_ended");
    assert.equal(last.state, "succeeded");
    assert.equal(last.nodeId, undefined);
    const dispatched = events.filter((e) => e.kind === "node_dispatched");
    assert.deepEqual(dispatched.map((e) => e.nodeId).sort(), ["echo-4", "sum-3", "value-1", "value-2"]);
    assert.ok(dispatched.every((e) => e.kind === "node_dispatched" && e.workerName === "ts-client-worker"));
    const sum = events.find((e) => e.kind === "attempt_finished" && e.nodeId === "sum-3");
    assert.ok(sum?.kind === "attempt_finished");
    assert.equal(sum.outcome, "succeeded");
    assert.equal(sum.result, 5);
    assert.ok(events.every((e) => e.runId === runId && e.time instanceof Date));

    const run = await client.wait(runId, { timeoutMs: 30_000 });
    assert.equal(run.id, runId);
    assert.equal(run.name, "ts-client");
    assert.equal(run.state, "succeeded");
    assert.equal(run.lastSeq, last.seq);
    assert.ok(run.endedAt instanceof Date && run.endedAt >= run.createdAt);
    const byId = Object.fromEntries(run.nodes.map((n) => [n.id, n]));
    assert.deepEqual(
      run.nodes.map((n) => [n.id, n.agent, n.state, n.attempts]),
      [
        ["value-1", "value", "succeeded", 1],
        ["value-2", "value", "succeeded", 1],
        ["sum-3", "sum", "succeeded", 1],
        ["echo-4", "echo", "succeeded", 1],
      ],
    );
    assert.deepEqual(byId["value-1"]?.result, { value: 2 });
    assert.equal(byId["sum-3"]?.result, 5);
    assert.deepEqual(byId["echo-4"]?.result, {
      input: { hello: "world" },
      deps: { "sum-3": 5, "value-1": { value: 2 } },
    });
    assert.deepEqual(byId["echo-4"]?.dependsOn, ["sum-3", "value-1"]);
    assert.equal(byId["echo-4"]?.error, undefined);

    // Every page is fetched: one node per page gives the same run.
    assert.deepEqual((await client.getRun(runId, { pageSize: 1 })).nodes, run.nodes);
    const bare = await client.getRun(runId, { results: false });
    assert.ok(bare.nodes.every((n) => n.result === undefined));
    // A watch resumes after a given seq, and a watch of an ended run ends by itself.
    const tail = await collect(client.watch(runId, { after: 3 }));
    assert.deepEqual(tail, events.slice(3));
  });

  test("a graph file's object form, the request id, and the coordinator's refusals", T, async () => {
    const graph = {
      name: "from-a-file",
      nodes: [
        { id: "a", agent: "value", input: { value: 1 } },
        { id: "b", agent: "echo", depends_on: ["a"], retry: { max_attempts: 2 } },
      ],
    };
    const requestId = `req-${process.pid}-${Date.now()}`;
    const runId = await client.submit(graph, { requestId });
    assert.equal(await client.submit(graph, { requestId }), runId, "the same request id starts no second run");
    const run = await client.wait(runId, { timeoutMs: 30_000 });
    assert.equal(run.name, "from-a-file");
    assert.equal(run.state, "succeeded");
    assert.deepEqual(
      run.nodes.map((n) => n.result),
      [{ value: 1 }, { input: null, deps: { a: { value: 1 } } }],
    );

    const cycle = {
      nodes: [
        { id: "x", agent: "echo", depends_on: ["y"] },
        { id: "y", agent: "echo", depends_on: ["x"] },
      ],
    };
    await assert.rejects(client.submit(cycle), (error: unknown) => {
      assert.ok(error instanceof RpcError);
      assert.equal(error.code, "INVALID_ARGUMENT");
      assert.match(error.message, /^submit: INVALID_ARGUMENT: /);
      return true;
    });
    await assert.rejects(client.getRun("no-such-run"), (error: unknown) => {
      assert.ok(error instanceof RpcError);
      assert.equal(error.code, "NOT_FOUND");
      return true;
    });
    await assert.rejects(collect(client.watch("no-such-run")), /NOT_FOUND/);
  });

  test("cancel a running run: its agent is cancelled on the worker and the run ends CANCELLED", T, async () => {
    const g = new Graph("to-cancel");
    const slow = g.node("sleep", { seconds: 600 });
    g.node("echo", null, { after: [slow] });
    const runId = await client.submit(g);
    const watch = client.watch(runId);
    await until(watch, (e) => e.kind === "node_dispatched" && e.nodeId === slow.id);
    assert.equal(await client.cancel(runId, "from the ts test"), "cancelled");
    const rest = await within(collect(watch), 30_000, "the watch to end");
    const cancelled = rest.find((e) => e.kind === "run_cancelled");
    assert.ok(cancelled?.kind === "run_cancelled");
    assert.equal(cancelled.reason, "from the ts test");
    assert.equal(rest.at(-1)?.kind, "run_ended");
    const run = await client.wait(runId, { timeoutMs: 30_000 });
    assert.equal(run.state, "cancelled");
    assert.deepEqual(
      run.nodes.map((n) => n.state),
      ["cancelled", "cancelled"],
    );
    // The worker answered the cancel at once (the sleep honours its signal), so its slots are all
    // free again: four gated nodes run side by side.
    const wide = new Graph("after-cancel");
    for (let i = 0; i < 4; i++) wide.node("gate", { key: `wide-${i}` });
    const wideId = await client.submit(wide);
    const watchWide = client.watch(wideId);
    let running = 0;
    await until(watchWide, (e) => e.kind === "node_dispatched" && ++running === 4);
    for (let i = 0; i < 4; i++) gate(`wide-${i}`).resolve();
    assert.equal((await client.wait(wideId, { timeoutMs: 30_000 })).state, "succeeded");
    await watchWide.return?.();
  });

  test("wait gives up with TimeoutError after timeoutMs; the run goes on", T, async () => {
    const g = new Graph("slow-wait");
    g.node("gate", { key: "wait-timeout" });
    const runId = await client.submit(g);
    await assert.rejects(client.wait(runId, { timeoutMs: 100 }), (error: unknown) => {
      assert.ok(error instanceof TimeoutError);
      assert.match(error.message, /did not end within 100 ms/);
      return true;
    });
    gate("wait-timeout").resolve();
    const run = await client.wait(runId, { timeoutMs: 30_000 });
    assert.equal(run.state, "succeeded");
    assert.deepEqual(run.nodes[0]?.result, { opened: "wait-timeout" });
  });

  test("the example program submits, follows and prints a run", T, async () => {
    const example = resolve(PKG, "dist-test/examples/client.js");
    const child = spawn(process.execPath, [example], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, HIVEGRID_COORDINATOR: coordinator.address },
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const [code] = await within(once(child, "exit"), 30_000, "the example to exit");
    assert.equal(code, 0, stderr);
    const lines = stdout.trim().split("\n");
    assert.equal(lines[0], "1 run_submitted ");
    assert.match(stdout, /^\d+ run_ended $/m);
    assert.deepEqual(lines.slice(-3), [
      'value-1 succeeded {"value":2}',
      'value-2 succeeded {"value":3}',
      "sum-3 succeeded 5",
    ]);
  });
});

describe("Client across a coordinator restart", { skip: skipReal }, () => {
  test("a watch resumes after the last seq; a submit retries until the coordinator is back", T, async () => {
    const dir = mkdtempSync(join(tmpdir(), "hivegrid-restart-"));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const store = `sqlite:///${join(dir, "hivegrid.db")}`;
    let coordinator = await Coordinator.start(store);
    after(() => coordinator.stop());
    const address = coordinator.address;
    const worker = await startWorker(coordinator, "ts-restart-worker");
    after(() => worker.stop());
    const client = new Client(address, { retryForMs: 30_000 });
    after(() => client.close());

    const g = new Graph("across-a-restart");
    const a = g.node("value", { value: 1 });
    const held = g.node("gate", { key: "restart" }, { after: [a] });
    g.node("sum", null, { after: [held, a] });
    const runId = await client.submit(g);
    const watch = client.watch(runId);
    const before = await until(watch, (e) => e.kind === "node_dispatched" && e.nodeId === held.id);

    await coordinator.kill();
    // Submitted while the coordinator is down: the call retries until it is back.
    const later = new Graph("submitted-while-down");
    later.node("value", { value: 9 });
    const submitted = client.submit(later);
    coordinator = await Coordinator.start(store, address);
    gate("restart").resolve();

    const rest = await within(collect(watch), 30_000, "the watch to end");
    const events = [...before, ...rest];
    assertGapless(events);
    const last = events.at(-1);
    assert.ok(last?.kind === "run_ended");
    assert.equal(last.state, "succeeded", coordinator.stderr);
    const run = await client.wait(runId, { timeoutMs: 30_000 });
    assert.deepEqual(
      run.nodes.map((n) => [n.id, n.state]),
      [
        ["value-1", "succeeded"],
        ["gate-2", "succeeded"],
        ["sum-3", "succeeded"],
      ],
    );
    const laterId = await within(submitted, 30_000, "the submit made while the coordinator was down");
    const laterRun = await client.wait(laterId, { timeoutMs: 30_000 });
    assert.equal(laterRun.name, "submitted-while-down");
    assert.deepEqual(laterRun.nodes[0]?.result, { value: 9 });
  });
});
