// Graph mutations an agent sends with its successful result (see Mutation in graph.proto).
// The builder collects them in order; the whole batch is committed with the result or rejected
// whole by the coordinator (Ack MUTATIONS_REJECTED), so the builder validates only shapes.

import type { Mutation, NodeSpec, RetryPolicy } from "./gen/hivegrid/v1/graph";
import { encodeJson } from "./json";

export interface RetryPolicyInit {
  /** Total attempts, the first included (0: the coordinator default, 1). */
  maxAttempts?: number;
  initialBackoffS?: number;
  maxBackoffS?: number;
  multiplier?: number;
  /** Fraction of the delay drawn at random, in [0, 1]. */
  jitter?: number;
}

export interface NodeSpecInit {
  /** Unique within the run. */
  id: string;
  agent: string;
  /** Any JSON value. */
  input?: unknown;
  dependsOn?: readonly string[];
  retry?: RetryPolicyInit;
  timeoutS?: number;
  priority?: number;
  labels?: Readonly<Record<string, string>>;
  canMutate?: boolean;
  metadata?: Readonly<Record<string, string>>;
  runOnFailure?: boolean;
}

/** Only the fields present change; `input: null` sets the input to null. */
export interface ModifyNodeInit {
  input?: unknown;
  priority?: number;
  retry?: RetryPolicyInit;
  timeoutS?: number;
}

export class MutationBuilder {
  readonly #items: Mutation[] = [];

  /** Adds a node; its dependencies may be existing nodes or nodes added earlier in the batch. */
  addNode(node: NodeSpecInit, options: { speculative?: boolean } = {}): this {
    return this.#push({
      $case: "addNode",
      addNode: { node: nodeSpec(node), speculative: options.speculative ?? false },
    });
  }

  /** Makes `toId` (not started) depend on `fromId`. */
  addEdge(fromId: string, toId: string): this {
    return this.#push({ $case: "addEdge", addEdge: { fromId, toId } });
  }

  removeEdge(fromId: string, toId: string): this {
    return this.#push({ $case: "removeEdge", removeEdge: { fromId, toId } });
  }

  removeNode(id: string): this {
    return this.#push({ $case: "removeNode", removeNode: { id } });
  }

  modifyNode(id: string, changes: ModifyNodeInit): this {
    return this.#push({
      $case: "modifyNode",
      modifyNode: {
        id,
        input: "input" in changes ? encodeJson(changes.input) : undefined,
        priority: changes.priority,
        retry: changes.retry === undefined ? undefined : retryPolicy(changes.retry),
        timeoutS: changes.timeoutS,
      },
    });
  }

  /** Replaces a node that has not started by `replacements`. */
  splitNode(id: string, replacements: readonly NodeSpecInit[]): this {
    return this.#push({
      $case: "splitNode",
      splitNode: { id, replacements: replacements.map(nodeSpec) },
    });
  }

  /** Adds `node` and makes `targetId` depend on it. */
  injectBefore(targetId: string, node: NodeSpecInit): this {
    return this.#push({ $case: "injectBefore", injectBefore: { targetId, node: nodeSpec(node) } });
  }

  /** Cancels `rootId` and every node downstream of it that has not ended. */
  pruneSubgraph(rootId: string): this {
    return this.#push({ $case: "pruneSubgraph", pruneSubgraph: { rootId } });
  }

  markSpeculative(id: string): this {
    return this.#push({ $case: "markSpeculative", markSpeculative: { id } });
  }

  confirmSpeculative(id: string): this {
    return this.#push({ $case: "confirmSpeculative", confirmSpeculative: { id } });
  }

  discardSpeculative(id: string): this {
    return this.#push({ $case: "discardSpeculative", discardSpeculative: { id } });
  }

  /**
   * Adds mutations given in their JSON form (docs/protocol.md, "Mutations"): each an object with
   * one snake_case key naming the kind, e.g. `{"add_edge": {"from_id": "a", "to_id": "b"}}`.
   * Throws a TypeError naming the offending path for a malformed one.
   */
  addJSON(...mutations: readonly unknown[]): this {
    // Convert them all first, so that a malformed one adds none.
    const kinds = mutations.map((m, i) => mutationFromJson(m, `mutations[${i}]`));
    for (const kind of kinds) this.#push(kind);
    return this;
  }

  get length(): number {
    return this.#items.length;
  }

  /** The batch as protobuf messages, in the order added. */
  toProto(): Mutation[] {
    return [...this.#items];
  }

  #push(kind: NonNullable<Mutation["kind"]>): this {
    this.#items.push({ kind });
    return this;
  }
}

export function nodeSpec(init: NodeSpecInit): NodeSpec {
  return {
    id: init.id,
    agent: init.agent,
    input: encodeJson(init.input),
    dependsOn: [...(init.dependsOn ?? [])],
    retry: init.retry === undefined ? undefined : retryPolicy(init.retry),
    timeoutS: init.timeoutS ?? 0,
    priority: init.priority ?? 0,
    labels: { ...init.labels },
    canMutate: init.canMutate ?? false,
    metadata: { ...init.metadata },
    runOnFailure: init.runOnFailure ?? false,
  };
}

function retryPolicy(init: RetryPolicyInit): RetryPolicy {
  return {
    maxAttempts: init.maxAttempts ?? 0,
    initialBackoffS: init.initialBackoffS ?? 0,
    maxBackoffS: init.maxBackoffS ?? 0,
    multiplier: init.multiplier ?? 0,
    jitter: init.jitter ?? 0,
  };
}

// ---- JSON form -> proto ------------------------------------------------------------------

const KINDS = [
  "add_node",
  "add_edge",
  "remove_edge",
  "remove_node",
  "modify_node",
  "split_node",
  "inject_before",
  "prune_subgraph",
  "mark_speculative",
  "confirm_speculative",
  "discard_speculative",
] as const;

export type Obj = Record<string, unknown>;

export function object(value: unknown, path: string, allowed: readonly string[]): Obj {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(`${path}: expected an object`);
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new TypeError(`${path}: unknown field "${key}" (expected one of ${allowed.join(", ")})`);
    }
  }
  return value as Obj;
}

export function str(o: Obj, key: string, path: string, required = true): string {
  const v = o[key];
  if (v === undefined && !required) return "";
  if (typeof v !== "string") throw new TypeError(`${path}.${key}: expected a string`);
  return v;
}

function num(o: Obj, key: string, path: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new TypeError(`${path}.${key}: expected a number`);
  }
  return v;
}

export function int(o: Obj, key: string, path: string): number | undefined {
  const v = num(o, key, path);
  if (v !== undefined && !Number.isInteger(v)) {
    throw new TypeError(`${path}.${key}: expected an integer`);
  }
  return v;
}

function bool(o: Obj, key: string, path: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new TypeError(`${path}.${key}: expected a boolean`);
  return v;
}

function stringList(o: Obj, key: string, path: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) {
    throw new TypeError(`${path}.${key}: expected a list of strings`);
  }
  return v as string[];
}

function stringMap(o: Obj, key: string, path: string): Record<string, string> | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  const m = object(v, `${path}.${key}`, Object.keys(v as object));
  for (const [k, x] of Object.entries(m)) {
    if (typeof x !== "string") throw new TypeError(`${path}.${key}.${k}: expected a string`);
  }
  return m as Record<string, string>;
}

const RETRY_FIELDS = ["max_attempts", "initial_backoff_s", "max_backoff_s", "multiplier", "jitter"] as const;

function retryFromJson(value: unknown, path: string): RetryPolicyInit | undefined {
  if (value === undefined || value === null) return undefined;
  const o = object(value, path, RETRY_FIELDS);
  return {
    maxAttempts: int(o, "max_attempts", path),
    initialBackoffS: num(o, "initial_backoff_s", path),
    maxBackoffS: num(o, "max_backoff_s", path),
    multiplier: num(o, "multiplier", path),
    jitter: num(o, "jitter", path),
  };
}

const NODE_FIELDS = [
  "id",
  "agent",
  "input",
  "depends_on",
  "retry",
  "timeout_s",
  "priority",
  "labels",
  "can_mutate",
  "metadata",
  "run_on_failure",
] as const;

export function nodeFromJson(value: unknown, path: string): NodeSpec {
  const o = object(value, path, NODE_FIELDS);
  return nodeSpec({
    id: str(o, "id", path, false),
    agent: str(o, "agent", path),
    input: o.input,
    dependsOn: stringList(o, "depends_on", path),
    retry: retryFromJson(o.retry, `${path}.retry`),
    timeoutS: num(o, "timeout_s", path),
    priority: int(o, "priority", path),
    labels: stringMap(o, "labels", path),
    canMutate: bool(o, "can_mutate", path),
    metadata: stringMap(o, "metadata", path),
    runOnFailure: bool(o, "run_on_failure", path),
  });
}

/** Converts one JSON-form mutation to its proto message; throws a TypeError naming `path`. */
export function mutationFromJson(value: unknown, path = "mutation"): NonNullable<Mutation["kind"]> {
  const outer = object(value, path, KINDS);
  const keys = Object.keys(outer);
  if (keys.length !== 1) {
    throw new TypeError(`${path}: expected exactly one key naming the kind (${KINDS.join(", ")})`);
  }
  const kind = keys[0] as (typeof KINDS)[number];
  const p = `${path}.${kind}`;
  const body = outer[kind];
  switch (kind) {
    case "add_node": {
      const o = object(body, p, ["node", "speculative"]);
      return {
        $case: "addNode",
        addNode: { node: nodeFromJson(o.node, `${p}.node`), speculative: bool(o, "speculative", p) ?? false },
      };
    }
    case "add_edge":
    case "remove_edge": {
      const o = object(body, p, ["from_id", "to_id"]);
      const edge = { fromId: str(o, "from_id", p), toId: str(o, "to_id", p) };
      return kind === "add_edge" ? { $case: "addEdge", addEdge: edge } : { $case: "removeEdge", removeEdge: edge };
    }
    case "remove_node":
      return { $case: "removeNode", removeNode: { id: str(object(body, p, ["id"]), "id", p) } };
    case "modify_node": {
      const o = object(body, p, ["id", "input", "priority", "retry", "timeout_s"]);
      return {
        $case: "modifyNode",
        modifyNode: {
          id: str(o, "id", p),
          input: "input" in o ? encodeJson(o.input) : undefined,
          priority: int(o, "priority", p),
          retry:
            o.retry === undefined || o.retry === null
              ? undefined
              : retryPolicy(retryFromJson(o.retry, `${p}.retry`) ?? {}),
          timeoutS: num(o, "timeout_s", p),
        },
      };
    }
    case "split_node": {
      const o = object(body, p, ["id", "replacements"]);
      const reps = o.replacements ?? [];
      if (!Array.isArray(reps)) throw new TypeError(`${p}.replacements: expected a list`);
      return {
        $case: "splitNode",
        splitNode: {
          id: str(o, "id", p),
          replacements: reps.map((r, i) => nodeFromJson(r, `${p}.replacements[${i}]`)),
        },
      };
    }
    case "inject_before": {
      const o = object(body, p, ["target_id", "node"]);
      return {
        $case: "injectBefore",
        injectBefore: { targetId: str(o, "target_id", p), node: nodeFromJson(o.node, `${p}.node`) },
      };
    }
    case "prune_subgraph":
      return { $case: "pruneSubgraph", pruneSubgraph: { rootId: str(object(body, p, ["root_id"]), "root_id", p) } };
    case "mark_speculative":
      return { $case: "markSpeculative", markSpeculative: { id: str(object(body, p, ["id"]), "id", p) } };
    case "confirm_speculative":
      return { $case: "confirmSpeculative", confirmSpeculative: { id: str(object(body, p, ["id"]), "id", p) } };
    case "discard_speculative":
      return { $case: "discardSpeculative", discardSpeculative: { id: str(object(body, p, ["id"]), "id", p) } };
  }
}
