// Starts a Worker against a FakeCoordinator and gets it to a welcomed session.

import assert from "node:assert/strict";
import { once } from "node:events";
import type { ServerCredentials } from "@grpc/grpc-js";
import type { Result } from "../src/gen/hivegrid/v1/worker";
import { type Agent, decodeJson, Worker, type WorkerOptions } from "../src/index";
import { FakeCoordinator, type FakeSession, within } from "./fake-coordinator";

export const quiet = { info: () => {}, warn: () => {} };

const cleanups: (() => Promise<void> | void)[] = [];

/** Stops every worker and coordinator started by the test that just ended (use in afterEach). */
export async function closeAll(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
}

/** Registers a cleanup for closeAll(). */
export function after(cleanup: () => Promise<void> | void): void {
  cleanups.push(cleanup);
}

export interface Harness {
  coordinator: FakeCoordinator;
  worker: Worker;
  run: Promise<void>;
  session: FakeSession;
  hello: Awaited<ReturnType<FakeCoordinator["accept"]>>["hello"];
}

export async function start(
  agents: Readonly<Record<string, Agent>>,
  options: {
    slots?: number;
    welcome?: Parameters<FakeSession["welcome"]>[0];
    cancelGraceMs?: number;
    /** Further worker options (TLS, token, timeouts). */
    worker?: Partial<WorkerOptions>;
    /** The fake coordinator's server credentials (default plaintext). */
    server?: ServerCredentials;
  } = {},
): Promise<Harness> {
  const coordinator = new FakeCoordinator();
  const address = await coordinator.start(options.server);
  after(() => coordinator.stop());
  const worker = new Worker({
    name: "test-worker",
    slots: options.slots ?? 4,
    labels: { zone: "a" },
    logger: quiet,
    reconnect: { initialMs: 10, maxMs: 50 },
    cancelGraceMs: options.cancelGraceMs,
    ...options.worker,
  });
  for (const [name, agent] of Object.entries(agents)) worker.register(name, agent);
  const run = worker.run(address);
  run.catch(() => {});
  after(() => within(worker.stop(), 5000, "worker.stop()"));
  const { session, hello } = await coordinator.accept();
  const connected = once(worker, "connected");
  session.welcome(options.welcome);
  await within(connected, 5000, "connected event");
  return { coordinator, worker, run, session, hello };
}

export function json(result: Result): unknown {
  return decodeJson(result.result);
}

/** Collects exactly `count` results from the session's next Results messages. */
export async function results(session: FakeSession, count: number): Promise<Result[]> {
  const out: Result[] = [];
  while (out.length < count) out.push(...(await session.expect("results")).results.items);
  assert.equal(out.length, count);
  return out;
}
