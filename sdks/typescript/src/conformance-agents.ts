// The conformance agents (shared/design/CONFORMANCE.md): identical semantics in every SDK.

import { setTimeout as sleep } from "node:timers/promises";
import type { Agent, NodeContext } from "./context";
import { NonRetryableError } from "./errors";

type Obj = Record<string, unknown>;

function inputObject(node: NodeContext): Obj {
  const input = node.input;
  if (input === null) return {};
  if (typeof input !== "object" || Array.isArray(input)) {
    throw new NonRetryableError(`agent ${node.agent} expects an object input`);
  }
  return input as Obj;
}

function field<T>(o: Obj, key: string, type: "number" | "string" | "boolean", fallback?: T): T {
  const value = o[key];
  if (value === undefined || value === null) {
    if (fallback !== undefined) return fallback;
    throw new NonRetryableError(`input field "${key}" is required`);
  }
  if (typeof value !== type) throw new NonRetryableError(`input field "${key}" must be a ${type}`);
  return value as T;
}

function isNumber(value: unknown): value is number {
  return typeof value === "number";
}

/** Sum of the top-level numbers of every dependency result (booleans do not count). */
function sumDeps(deps: Readonly<Record<string, unknown>>): number {
  let total = 0;
  for (const result of Object.values(deps)) {
    if (isNumber(result)) total += result;
    else if (typeof result === "object" && result !== null && !Array.isArray(result)) {
      for (const value of Object.values(result)) if (isNumber(value)) total += value;
    }
  }
  return total;
}

export const conformanceAgents: Readonly<Record<string, Agent>> = {
  echo: async (node) => ({ input: node.input, deps: node.deps }),

  fail: async (node) => {
    const o = inputObject(node);
    const message = field<string>(o, "message", "string", "failed");
    if (field<boolean>(o, "retryable", "boolean", false)) throw new Error(message);
    throw new NonRetryableError(message);
  },

  flaky: async (node) => {
    const failTimes = field<number>(inputObject(node), "fail_times", "number", 0);
    if (node.attempt <= failTimes) throw new Error(`flaky failure on attempt ${node.attempt}`);
    return { attempt: node.attempt };
  },

  sleep: async (node) => {
    const seconds = field<number>(inputObject(node), "seconds", "number", 0);
    await sleep(seconds * 1000, undefined, { signal: node.signal });
    return { slept: seconds };
  },

  spawn: async (node) => {
    const o = inputObject(node);
    const count = field<number>(o, "count", "number");
    const childAgent = field<string>(o, "child_agent", "string", "echo");
    const childInput = o.child_input ?? null;
    const children: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = `${node.nodeId}/c${i}`;
      children.push(id);
      node.mutations.addNode({ id, agent: childAgent, input: childInput, canMutate: true });
    }
    node.mutations.addNode({ id: `${node.nodeId}/join`, agent: "sum", input: null, dependsOn: children });
    return { spawned: count };
  },

  sum: async (node) => sumDeps(node.deps),

  value: async (node) => ({ value: inputObject(node).value ?? null }),

  progress: async (node) => {
    const steps = field<number>(inputObject(node), "steps", "number", 0);
    for (let step = 1; step <= steps; step++) node.progress({ step });
    return { steps };
  },

  mutate: async (node) => {
    const mutations = inputObject(node).mutations ?? [];
    if (!Array.isArray(mutations)) throw new NonRetryableError('input field "mutations" must be a list');
    try {
      node.mutations.addJSON(...mutations);
    } catch (error) {
      // A malformed mutation stays malformed on every attempt.
      throw new NonRetryableError(error instanceof Error ? error.message : String(error));
    }
    return {};
  },

  crash: async () => {
    process.exit(1);
  },
};
