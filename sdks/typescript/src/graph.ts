// A graph built in code, for Client.submit. Nodes are added in order and a node can depend only
// on nodes added before it, so a built graph has no cycle and no unknown dependency.

import { encodeJson } from "./json";
import type { NodeSpecInit } from "./mutations";

/** A node of a Graph, returned by `graph.node(...)`; pass it in `after` to depend on it. */
export class NodeHandle {
  /** @internal Made by Graph.node. */
  constructor(
    readonly id: string,
    readonly agent: string,
  ) {}

  toString(): string {
    return this.id;
  }
}

/** A dependency: a handle from the same graph, or the id of a node already in it. */
export type NodeRef = NodeHandle | string;

export interface NodeOptions extends Omit<NodeSpecInit, "id" | "agent" | "input" | "dependsOn"> {
  /** Unique within the graph; default: `<agent>-<n>`, n counting the graph's nodes from 1. */
  id?: string;
  /** Nodes that must succeed before this one runs. */
  after?: readonly NodeRef[];
}

export interface GraphLimits {
  maxNodes?: number;
  maxSpawnDepth?: number;
}

export class Graph {
  readonly name: string;
  readonly limits: Readonly<GraphLimits>;
  readonly #nodes: NodeSpecInit[] = [];
  readonly #ids = new Set<string>();
  readonly #handles = new WeakSet<NodeHandle>();

  constructor(name = "", options: { limits?: GraphLimits } = {}) {
    if (typeof name !== "string") throw new TypeError("the graph's name must be a string");
    this.name = name;
    this.limits = { ...options.limits };
  }

  /** Adds a node running `agent` on `input` (any JSON value); returns its handle. */
  node(agent: string, input: unknown = null, options: NodeOptions = {}): NodeHandle {
    if (typeof agent !== "string" || agent === "") throw new TypeError("a node needs an agent name");
    const { id: given, after = [], ...rest } = options;
    const id = given ?? this.#freshId(agent);
    if (typeof id !== "string" || id === "")
      throw new TypeError(`node of agent "${agent}": id must be a non-empty string`);
    if (this.#ids.has(id)) throw new Error(`node "${id}" is already in this graph`);
    const dependsOn = after.map((ref) => this.#resolve(ref, id));
    try {
      encodeJson(input);
    } catch (error) {
      throw new TypeError(`node "${id}": the input is not JSON: ${error instanceof Error ? error.message : error}`);
    }
    this.#nodes.push({ ...rest, id, agent, input, dependsOn });
    this.#ids.add(id);
    const handle = new NodeHandle(id, agent);
    this.#handles.add(handle);
    return handle;
  }

  /** The nodes so far, in the order added. */
  get nodes(): readonly Readonly<NodeSpecInit>[] {
    return this.#nodes;
  }

  #resolve(ref: NodeRef, id: string): string {
    if (ref instanceof NodeHandle) {
      if (!this.#handles.has(ref)) throw new Error(`node "${id}": dependency "${ref.id}" belongs to another graph`);
      return ref.id;
    }
    if (typeof ref !== "string" || !this.#ids.has(ref)) {
      throw new Error(`node "${id}": dependency ${JSON.stringify(ref)} is not in this graph (add it first)`);
    }
    return ref;
  }

  #freshId(agent: string): string {
    for (let n = this.#nodes.length + 1; ; n++) {
      const id = `${agent}-${n}`;
      if (!this.#ids.has(id)) return id;
    }
  }
}
