import assert from "node:assert/strict";
import { EventEmitter, once } from "node:events";
import { afterEach, describe, test } from "node:test";
import { AckStatus, Outcome, ProtocolConstant, type Result } from "../src/gen/hivegrid/v1/worker";
import {
  CancelledError,
  DrainTimeoutError,
  decodeJson,
  type NodeContext,
  NonRetryableError,
  PROTOCOL_VERSION,
  RefusedError,
  Worker,
} from "../src/index";
import { ackOf, assignment, deferred, FakeCoordinator, within } from "./fake-coordinator";
import { after, closeAll, json, quiet, results, start } from "./harness";

const T = { timeout: 15_000 };

afterEach(closeAll);

describe("session", () => {
  test("hello, welcome and the connected event", T, async () => {
    const { hello, worker } = await start({ echo: async (n) => n.input, sum: async () => 0 }, { slots: 3 });
    assert.equal(hello.workerName, "test-worker");
    assert.equal(hello.language, "typescript");
    assert.equal(hello.sdkVersion, "0.1.0");
    assert.equal(hello.protocolVersion, 2);
    assert.deepEqual([...hello.agents].sort(), ["echo", "sum"]);
    assert.deepEqual(hello.labels, { zone: "a" });
    assert.equal(hello.slots, 3);
    assert.deepEqual(hello.held, []);
    assert.equal(worker.slots, 3);
  });

  test("defaults come from the proto's ProtocolConstant; a second registration of a name throws", T, async () => {
    assert.equal(PROTOCOL_VERSION, ProtocolConstant.PROTOCOL_CONSTANT_VERSION);
    const coordinator = new FakeCoordinator();
    const address = await coordinator.start();
    after(() => coordinator.stop());
    const worker = new Worker({ name: "defaults", logger: quiet });
    assert.equal(worker.slots, ProtocolConstant.PROTOCOL_CONSTANT_DEFAULT_SLOTS);
    worker.register("echo", async (node) => node.input);
    assert.throws(() => worker.register("echo", async () => null), /^Error: agent "echo" is already registered$/);
    void worker.run(address).catch(() => {});
    after(() => within(worker.stop(), 5000, "stop"));
    const { hello } = await coordinator.accept();
    assert.equal(hello.slots, 4);
    assert.equal(hello.protocolVersion, 2);
  });

  test("bad options fail at construction, naming the option", T, () => {
    assert.throws(() => new Worker({ name: "w", slots: 0 }), /slots must be an integer >= 1/);
    assert.throws(() => new Worker({ name: "w", cancelGraceMs: -1 }), /cancelGraceMs must be a number > 0/);
    assert.throws(() => new Worker({ name: "w", welcomeTimeoutMs: 0 }), /welcomeTimeoutMs must be a number > 0/);
    assert.throws(() => new Worker({ name: "w", drainTimeoutMs: -5 }), /drainTimeoutMs must be a number >= 0/);
    assert.throws(() => new Worker({ name: "w", token: "a\nb" }), /token must be a non-empty string/);
    assert.throws(() => new Worker({ name: "w", tls: { cert: Buffer.from("x") } }), /tls.cert and tls.key go together/);
    assert.throws(() => new Worker({ name: "w", tls: { ca: "/nonexistent/ca.pem" } }), /tls.ca: cannot read/);
  });

  test("no Welcome within welcomeTimeoutMs: the stream is dropped and the same Hello sent again", T, async () => {
    const coordinator = new FakeCoordinator();
    const address = await coordinator.start();
    after(() => coordinator.stop());
    const worker = new Worker({
      name: "w",
      logger: quiet,
      welcomeTimeoutMs: 50,
      reconnect: { initialMs: 5, maxMs: 5 },
    });
    worker.register("echo", async (node) => node.input);
    const disconnected = once(worker, "disconnected");
    void worker.run(address).catch(() => {});
    after(() => within(worker.stop(), 5000, "stop"));
    const first = await coordinator.accept();
    // The fake stays silent on the first stream.
    const [reason] = await within(disconnected, 5000, "disconnected");
    assert.equal(reason, "no Welcome within 50 ms");
    await within(first.session.done, 5000, "the first stream to end");
    const { session, hello } = await coordinator.accept();
    assert.deepEqual(hello, first.hello);
    session.welcome({ sessionId: "late" });
    session.assign(assignment("echo", "ok"));
    const [r] = await results(session, 1);
    assert.equal(json(r!), "ok");
  });

  test("a refusal rejects run() with RefusedError and does not reconnect", T, async () => {
    const coordinator = new FakeCoordinator();
    const address = await coordinator.start();
    after(() => coordinator.stop());
    const worker = new Worker({ name: "w", logger: quiet, reconnect: { initialMs: 1, maxMs: 1 } });
    worker.register("echo", async () => null);
    const run = worker.run(address);
    const { session } = await coordinator.accept();
    session.send({ msg: { $case: "refusal", refusal: { reason: "protocol version 1 unsupported" } } });
    await assert.rejects(within(run, 5000, "run() to reject"), (error: unknown) => {
      assert.ok(error instanceof RefusedError);
      assert.match(error.message, /protocol version 1 unsupported/);
      return true;
    });
    assert.equal(coordinator.sessions.pending, 0);
  });

  test("heartbeats when idle, and reconnects when the coordinator goes silent", T, async () => {
    const { coordinator, session, worker } = await start(
      { echo: async () => null },
      { welcome: { heartbeatIntervalS: 0.02, sessionTimeoutS: 0.3 } },
    );
    await session.expect("heartbeat");
    await session.expect("heartbeat");
    // The fake never sends anything: after session_timeout_s the worker gives up on the stream.
    const disconnected = once(worker, "disconnected");
    const { hello } = await coordinator.accept();
    const [reason] = await within(disconnected, 5000, "disconnected");
    assert.match(String(reason), /nothing received/);
    assert.deepEqual(hello.held, []);
  });
});

describe("assignments", () => {
  test("at most `slots` agents run at once", T, async () => {
    const gate = deferred();
    let active = 0;
    let peak = 0;
    const started: string[] = [];
    const startedEvent = new EventEmitter();
    const { session } = await start(
      {
        block: async (node) => {
          active++;
          peak = Math.max(peak, active);
          started.push(node.nodeId);
          startedEvent.emit("started");
          await gate.promise;
          active--;
          return null;
        },
      },
      { slots: 2 },
    );
    // The coordinator would never do this; the worker must still hold to its slots.
    const items = [assignment("block"), assignment("block"), assignment("block")];
    const twoStarted = new Promise<void>((resolve) =>
      startedEvent.on("started", () => started.length === 2 && resolve()),
    );
    session.assign(...items);
    await within(twoStarted, 5000, "two agents to start");
    assert.equal(active, 2);
    const third = once(startedEvent, "started");
    gate.resolve();
    await within(third, 5000, "the third agent to start");
    const got = await results(session, 3);
    assert.equal(peak, 2);
    assert.deepEqual(
      started,
      items.map((a) => a.ref?.nodeId),
    );
    assert.ok(got.every((r) => r.outcome === Outcome.OUTCOME_SUCCEEDED));
  });

  test("results that finish together travel in one message, at most max_batch each", T, async () => {
    const gate = deferred();
    const { session, worker } = await start(
      {
        wait: async () => {
          await gate.promise;
          return null;
        },
      },
      { slots: 8, welcome: { maxBatch: 3 } },
    );
    const items = Array.from({ length: 7 }, () => assignment("wait"));
    session.assign(...items);
    gate.resolve();
    const sizes: number[] = [];
    const got: Result[] = [];
    while (got.length < 7) {
      const batch = (await session.expect("results")).results.items;
      sizes.push(batch.length);
      got.push(...batch);
    }
    assert.deepEqual(sizes, [3, 3, 1]);
    assert.deepEqual(
      got.map((r) => r.ref?.nodeId),
      items.map((a) => a.ref?.nodeId),
    );
    // Acks release the results: a drain then completes at once.
    let acked = 0;
    worker.on("ack", () => acked++);
    session.ack(got.map((r) => r.ref!));
    const drained = worker.drain();
    await session.expect("drain");
    await within(session.halfClosed, 5000, "half-close");
    session.end();
    await within(drained, 5000, "drain");
    assert.equal(acked, 7);
  });

  test("a cancel aborts the agent's signal and answers OUTCOME_CANCELLED", T, async () => {
    const running = deferred();
    let reason: unknown;
    const { session } = await start({
      hang: async (node) => {
        running.resolve();
        await new Promise((_, reject) =>
          node.signal.addEventListener("abort", () => {
            reason = node.signal.reason;
            reject(node.signal.reason);
          }),
        );
      },
    });
    const a = assignment("hang");
    session.assign(a);
    await within(running.promise, 5000, "agent start");
    session.cancel(a.ref!, "pruned");
    const [result] = await results(session, 1);
    assert.equal(result?.outcome, Outcome.OUTCOME_CANCELLED);
    assert.deepEqual(result?.ref, a.ref);
    assert.ok(reason instanceof CancelledError);
    assert.equal(reason.reason, "pruned");
  });

  test("an agent that finishes despite a cancel sends its real result", T, async () => {
    const running = deferred();
    const { session } = await start({
      stubborn: async () => {
        running.resolve();
        return { done: true };
      },
    });
    const a = assignment("stubborn");
    session.assign(a);
    await within(running.promise, 5000, "agent start");
    session.cancel(a.ref!);
    const [result] = await results(session, 1);
    // Either answer is allowed: the agent may have finished before the cancel arrived.
    assert.equal(result?.outcome, Outcome.OUTCOME_SUCCEEDED);
  });

  test("an agent that ignores its cancel is answered CANCELLED after the grace period", T, async () => {
    const forever = deferred();
    const running = deferred();
    const { session } = await start(
      {
        deaf: async () => {
          running.resolve();
          await forever.promise;
          return "too late";
        },
        echo: async (node) => node.input,
      },
      { slots: 1, cancelGraceMs: 50 },
    );
    const deaf = assignment("deaf");
    session.assign(deaf);
    await within(running.promise, 5000, "agent start");
    session.cancel(deaf.ref!);
    const [r] = await results(session, 1);
    assert.equal(r?.outcome, Outcome.OUTCOME_CANCELLED);
    // The slot is free again; the abandoned agent's late value is dropped.
    session.assign(assignment("echo", "next"));
    forever.resolve();
    const [next] = await results(session, 1);
    assert.equal(json(next!), "next");
    assert.equal(session.received.pending, 0);
  });

  test("a cancel for an assignment still waiting for a slot answers CANCELLED without running it", T, async () => {
    const gate = deferred();
    const ran: string[] = [];
    const { session } = await start(
      {
        work: async (node) => {
          ran.push(node.nodeId);
          await gate.promise;
          return null;
        },
      },
      { slots: 1 },
    );
    const first = assignment("work");
    const queued = assignment("work");
    session.assign(first, queued);
    session.cancel(queued.ref!);
    const [r] = await results(session, 1);
    assert.deepEqual(r?.ref, queued.ref);
    assert.equal(r?.outcome, Outcome.OUTCOME_CANCELLED);
    gate.resolve();
    const [done] = await results(session, 1);
    assert.deepEqual(done?.ref, first.ref);
    assert.deepEqual(ran, [first.ref!.nodeId]);
  });

  test("a Cancel in the same Push as its Assignment cancels it and frees the slot", T, async () => {
    let started = 0;
    const { session } = await start(
      {
        // Runs until aborted: only a cancel that finds the attempt can end it.
        long: async (node) => {
          started++;
          await new Promise((_, reject) => node.signal.addEventListener("abort", () => reject(node.signal.reason)));
        },
        echo: async (node) => node.input,
      },
      { slots: 1 },
    );
    const a = assignment("long");
    session.push({ assignments: [a], cancels: [{ ref: a.ref, reason: "pruned" }] });
    const [r] = await results(session, 1);
    assert.deepEqual(r?.ref, a.ref);
    assert.equal(r?.outcome, Outcome.OUTCOME_CANCELLED);
    assert.equal(r?.error?.kind, "cancelled");
    // The only slot is free again.
    const next = assignment("echo", "after");
    session.assign(next);
    const [n] = await results(session, 1);
    assert.deepEqual(n?.ref, next.ref);
    assert.equal(json(n!), "after");
    assert.equal(started, 0, "an attempt cancelled in the Push that assigned it never starts");
  });

  test("one Push is handled acks first, then assignments, then cancels", T, async () => {
    const events: string[] = [];
    const running = deferred();
    const { session, worker } = await start(
      {
        quick: async () => "quick",
        hang: async (node) => {
          running.resolve();
          await new Promise((_, reject) =>
            node.signal.addEventListener("abort", () => {
              events.push(`cancel ${node.nodeId}`);
              reject(node.signal.reason);
            }),
          );
        },
        next: async (node) => {
          events.push(`start ${node.nodeId}`);
          return "next";
        },
      },
      { slots: 1 },
    );
    worker.on("ack", (ack) => events.push(`ack ${ack.ref?.nodeId}`));
    const done = assignment("quick");
    session.assign(done);
    const [unacked] = await results(session, 1);
    assert.deepEqual(unacked?.ref, done.ref);
    const hung = assignment("hang");
    session.assign(hung);
    await within(running.promise, 5000, "agent start");
    // `hung` holds the only slot until it is cancelled: `fresh` runs only once the cancel is handled.
    const fresh = assignment("next");
    session.push({ acks: [ackOf(done.ref!)], cancels: [{ ref: hung.ref, reason: "pruned" }], assignments: [fresh] });
    const got = await results(session, 2);
    assert.deepEqual(
      got.map((r) => [r.ref?.nodeId, r.outcome]),
      [
        [hung.ref?.nodeId, Outcome.OUTCOME_CANCELLED],
        [fresh.ref?.nodeId, Outcome.OUTCOME_SUCCEEDED],
      ],
    );
    assert.deepEqual(events, [`ack ${done.ref?.nodeId}`, `cancel ${hung.ref?.nodeId}`, `start ${fresh.ref?.nodeId}`]);
  });

  test("progress arrives in order, before the result", T, async () => {
    const { session } = await start({
      steps: async (node) => {
        for (let i = 1; i <= 5; i++) node.progress({ step: i });
        await new Promise((r) => setImmediate(r));
        for (let i = 6; i <= 250; i++) node.progress({ step: i });
        return "ok";
      },
    });
    const a = assignment("steps");
    session.assign(a);
    const steps: number[] = [];
    for (;;) {
      const message = await session.received.next(5000, "progress or result");
      const msg = message.msg;
      if (msg?.$case === "progress") {
        assert.ok(msg.progress.items.length <= 64);
        for (const item of msg.progress.items) {
          assert.deepEqual(item.ref, a.ref);
          steps.push((decodeJson(item.data) as { step: number }).step);
        }
      } else if (msg?.$case === "results") {
        assert.equal(json(msg.results.items[0]!), "ok");
        break;
      }
    }
    assert.deepEqual(
      steps,
      Array.from({ length: 250 }, (_, i) => i + 1),
    );
  });

  test("a lease above 2^53 round-trips exactly", T, async () => {
    const { session } = await start({ echo: async (n) => n.input });
    const leases = [2n ** 53n + 1n, 2n ** 64n - 3n];
    for (const lease of leases) assert.notEqual(BigInt(Number(lease)), lease); // a double would lose it
    const items = leases.map((lease, i) =>
      assignment("echo", i, { ref: { runId: "r", nodeId: `big${i}`, attempt: 7, lease } }),
    );
    session.assign(...items);
    const got = await results(session, 2);
    assert.deepEqual(
      got.map((r) => r.ref),
      items.map((a) => a.ref),
    );
    assert.deepEqual(
      got.map((r) => r.ref?.lease),
      leases,
    );
  });

  test("unknown agents, thrown errors and non-retryable errors", T, async () => {
    const { session } = await start({
      boom: async () => {
        throw new Error("boom");
      },
      fatal: async () => {
        throw new NonRetryableError("fatal");
      },
    });
    session.assign(assignment("nope"), assignment("boom"), assignment("fatal"));
    const got = await results(session, 3);
    const byAgentError = got.map((r) => [r.outcome, r.error?.kind, r.error?.retryable, r.error?.message]);
    assert.deepEqual(
      byAgentError.sort((x, y) => String(x[3]).localeCompare(String(y[3]))),
      [
        [Outcome.OUTCOME_FAILED, "agent", true, "boom"],
        [Outcome.OUTCOME_FAILED, "agent", false, "fatal"],
        [Outcome.OUTCOME_FAILED, "unknown_agent", false, 'this worker does not run agent "nope"'],
      ],
    );
  });
});

describe("reconnect and drain", () => {
  test("after a broken stream, held refs go in Hello.held and unacked results are re-sent", T, async () => {
    const gate = deferred();
    const { coordinator, session } = await start({
      quick: async () => "quick",
      slow: async () => {
        await gate.promise;
        return "slow";
      },
    });
    const quick = assignment("quick");
    const slow = assignment("slow");
    session.assign(quick, slow);
    const [first] = await results(session, 1);
    assert.deepEqual(first?.ref, quick.ref);
    session.fail(); // no ack for `quick`
    const { session: second, hello } = await coordinator.accept();
    const held = hello.held.map((r) => r.nodeId).sort();
    assert.deepEqual(held, [quick.ref!.nodeId, slow.ref!.nodeId].sort());
    second.welcome({ sessionId: "s-2" });
    const [resent] = await results(second, 1);
    assert.deepEqual(resent?.ref, quick.ref);
    assert.equal(json(resent!), "quick");
    second.ack([quick.ref!]);
    gate.resolve();
    const [late] = await results(second, 1);
    assert.deepEqual(late?.ref, slow.ref);
    second.ack([slow.ref!], AckStatus.ACK_STATUS_STALE);
  });

  test(
    "Welcome.held: kept attempts go on; a stale running one is cancelled, stale queued ones dropped",
    T,
    async () => {
      const gates = new Map<string, ReturnType<typeof deferred<void>>>();
      const started: string[] = [];
      const aborted: string[] = [];
      const startedEvent = new EventEmitter();
      const startedCount = (n: number) =>
        within(
          new Promise<void>((resolve) => {
            const check = () => {
              if (started.length < n) return;
              startedEvent.off("started", check);
              resolve();
            };
            startedEvent.on("started", check);
            check();
          }),
          5000,
          `${n} agents to start`,
        );
      const { coordinator, session } = await start(
        {
          block: async (node) => {
            started.push(node.nodeId);
            node.signal.addEventListener("abort", () => aborted.push(`${node.nodeId}: ${node.signal.reason.reason}`));
            const gate = deferred();
            gates.set(node.nodeId, gate);
            startedEvent.emit("started");
            await Promise.race([
              gate.promise,
              new Promise((_, reject) => node.signal.addEventListener("abort", () => reject(node.signal.reason))),
            ]);
            return node.nodeId;
          },
        },
        { slots: 2 },
      );
      const [kept, stale, queuedKept, queuedStale] = [1, 2, 3, 4].map(() => assignment("block"));
      session.assign(kept!, stale!, queuedKept!, queuedStale!);
      await startedCount(2);
      assert.deepEqual(started, [kept!.ref!.nodeId, stale!.ref!.nodeId]);
      session.fail();
      const { session: second, hello } = await coordinator.accept();
      assert.equal(hello.held.length, 4);
      second.welcome({ sessionId: "s-2", held: [kept!.ref!, queuedKept!.ref!] });
      // The stale running attempt is stopped and answered (the coordinator will ack it STALE).
      const [r1] = await results(second, 1);
      assert.deepEqual(r1?.ref, stale!.ref);
      assert.equal(r1?.outcome, Outcome.OUTCOME_CANCELLED);
      assert.deepEqual(aborted, [`${stale!.ref!.nodeId}: stale after reconnect`]);
      second.ack([stale!.ref!], AckStatus.ACK_STATUS_STALE);
      // Its slot went to the kept queued attempt, never to the stale queued one.
      await startedCount(3);
      assert.deepEqual(started.slice(2), [queuedKept!.ref!.nodeId]);
      gates.get(kept!.ref!.nodeId)!.resolve();
      gates.get(queuedKept!.ref!.nodeId)!.resolve();
      const got = await results(second, 2);
      assert.deepEqual(got.map((r) => json(r)).sort(), [kept!.ref!.nodeId, queuedKept!.ref!.nodeId].sort());
      second.ack(got.map((r) => r.ref!));
      assert.equal(started.length, 3, "the stale queued attempt never ran");
      assert.equal(second.received.pending, 0, "and it was not answered");
    },
  );

  test("a stream that fails before its Welcome is retried with the same Hello", T, async () => {
    const coordinator = new FakeCoordinator();
    const address = await coordinator.start();
    after(() => coordinator.stop());
    const worker = new Worker({ name: "w", logger: quiet, reconnect: { initialMs: 5, maxMs: 20 } });
    worker.register("echo", async (node) => node.input);
    const run = worker.run(address);
    after(() => within(worker.stop(), 5000, "stop"));
    const disconnects: string[] = [];
    worker.on("disconnected", (reason) => disconnects.push(reason));
    for (let i = 0; i < 3; i++) {
      const { session } = await coordinator.accept();
      session.fail(`down ${i}`);
    }
    const { session, hello } = await coordinator.accept();
    assert.equal(hello.workerName, "w");
    session.welcome({ sessionId: "finally" });
    session.assign(assignment("echo", 1));
    const [r] = await results(session, 1);
    assert.equal(json(r!), 1);
    assert.equal(disconnects.length, 3);
    assert.match(disconnects[0] ?? "", /UNAVAILABLE: down 0/);
    await worker.stop();
    await within(run, 5000, "run()");
  });

  test("drain: Drain{}, in-flight work finishes and is acked, then half-close and run() resolves", T, async () => {
    const gate = deferred();
    const running = deferred();
    const { session, worker, run } = await start({
      work: async () => {
        running.resolve();
        await gate.promise;
        return 1;
      },
    });
    const a = assignment("work");
    session.assign(a);
    await within(running.promise, 5000, "agent start");
    const drained = worker.drain();
    await session.expect("drain");
    gate.resolve();
    const [result] = await results(session, 1);
    assert.equal(json(result!), 1);
    let closedEarly = false;
    void session.halfClosed.then(() => (closedEarly = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(closedEarly, false, "must wait for the ack before closing");
    session.ack([a.ref!]);
    await within(session.halfClosed, 5000, "half-close");
    session.end();
    await within(drained, 5000, "drain()");
    await within(run, 5000, "run()");
  });

  test(
    "drainTimeoutMs: an unfinished drain cancels the agents and run() rejects with DrainTimeoutError",
    T,
    async () => {
      const running = deferred();
      let reason: unknown;
      const { session, worker, run } = await start(
        {
          hang: async (node) => {
            running.resolve();
            await new Promise((_, reject) =>
              node.signal.addEventListener("abort", () => {
                reason = node.signal.reason;
                reject(node.signal.reason);
              }),
            );
          },
        },
        { worker: { drainTimeoutMs: 50 } },
      );
      session.assign(assignment("hang"));
      await within(running.promise, 5000, "agent start");
      const drained = worker.drain();
      await session.expect("drain");
      await assert.rejects(within(run, 5000, "run() to reject"), (error: unknown) => {
        assert.ok(error instanceof DrainTimeoutError);
        assert.equal(error.unfinished, 1);
        assert.match(error.message, /did not finish within 50 ms/);
        return true;
      });
      await within(drained, 5000, "drain()");
      assert.ok(reason instanceof CancelledError);
      assert.equal(reason.reason, "drain_timeout");
    },
  );

  test("a DrainRequest from the coordinator drains the worker", T, async () => {
    const { session, run } = await start({ echo: async () => null });
    session.send({ msg: { $case: "drainRequest", drainRequest: {} } });
    await session.expect("drain");
    await within(session.halfClosed, 5000, "half-close");
    session.end();
    await within(run, 5000, "run()");
  });
});

describe("mutations", () => {
  test("the builder's mutations travel with a successful result only", T, async () => {
    const { session } = await start({
      grow: async (node: NodeContext) => {
        node.mutations
          .addNode({ id: "x", agent: "echo", input: { a: 1 }, dependsOn: ["y"], retry: { maxAttempts: 3 } })
          .addEdge("x", "z")
          .modifyNode("z", { input: null, priority: 2 })
          .pruneSubgraph("q");
        return "grown";
      },
      growThenFail: async (node: NodeContext) => {
        node.mutations.removeNode("x");
        throw new Error("nope");
      },
    });
    session.assign(
      assignment("grow", null, { canMutate: true }),
      assignment("growThenFail", null, { canMutate: true }),
    );
    const got = await results(session, 2);
    const ok = got.find((r) => r.outcome === Outcome.OUTCOME_SUCCEEDED)!;
    const failed = got.find((r) => r.outcome === Outcome.OUTCOME_FAILED)!;
    assert.deepEqual(failed.mutations, []);
    const kinds = ok.mutations.map((m) => m.kind?.$case);
    assert.deepEqual(kinds, ["addNode", "addEdge", "modifyNode", "pruneSubgraph"]);
    const add = ok.mutations[0]?.kind;
    assert.ok(add?.$case === "addNode");
    assert.deepEqual(decodeJson(add.addNode.node!.input), { a: 1 });
    assert.deepEqual(add.addNode.node!.dependsOn, ["y"]);
    assert.equal(add.addNode.node!.retry?.maxAttempts, 3);
    const modify = ok.mutations[2]?.kind;
    assert.ok(modify?.$case === "modifyNode");
    assert.equal(modify.modifyNode.input?.length, 0); // present: set to null
    assert.equal(modify.modifyNode.priority, 2);
    assert.equal(modify.modifyNode.timeoutS, undefined); // absent: unchanged
  });
});
