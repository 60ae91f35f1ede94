// The client API: submit graphs to a coordinator, follow their runs, cancel them. It speaks
// RunService (protos/hivegrid/v1/run.proto) and hands out plain types of its own, never the
// generated messages.

import { randomUUID } from "node:crypto";
import type { CallOptions, ChannelOptions, ClientUnaryCall, Metadata, ServiceError } from "@grpc/grpc-js";
import { status as grpcStatus } from "@grpc/grpc-js";
import { authMetadata, channelCredentials, type TlsOptions } from "./connection";
import { RpcError, TimeoutError } from "./errors";
import type { NodeError as NodeErrorProto, NodeSpec } from "./gen/hivegrid/v1/graph";
import { NodeState as NodeStateProto, RunState as RunStateProto } from "./gen/hivegrid/v1/graph";
import {
  type GetRunResponse,
  type NodeStatus,
  type RunEvent as RunEventProto,
  type RunInfo,
  RunServiceClient,
  type SubmitRunRequest,
  type WatchRunResponse,
} from "./gen/hivegrid/v1/run";
import { Outcome, ProtocolConstant } from "./gen/hivegrid/v1/worker";
import { Graph } from "./graph";
import { decodeJson } from "./json";
import { int, nodeFromJson, nodeSpec, object, str } from "./mutations";

/** The coordinator's address when neither the constructor nor HIVEGRID_COORDINATOR gives one. */
export const DEFAULT_COORDINATOR = "127.0.0.1:50051";

export type RunState = "running" | "succeeded" | "failed" | "cancelled";
export type NodeState =
  | "pending"
  | "ready"
  | "running"
  | "succeeded"
  | "failed"
  | "cancelled"
  | "skipped"
  | "speculative";

export interface NodeError {
  message: string;
  retryable: boolean;
  /** "agent", "timeout", "lost_worker", "mutation_rejected", "unknown_agent", "cancelled", "skipped", ... */
  kind: string;
}

export interface Node {
  id: string;
  agent: string;
  state: NodeState;
  /** The JSON result when the node succeeded (`null` for an empty one); otherwise undefined. */
  result: unknown;
  /** The last error, when the node failed, was cancelled or skipped, or an attempt failed. */
  error?: NodeError;
  /** Attempts dispatched so far. */
  attempts: number;
  dependsOn: string[];
  /** The node whose agent added this one; undefined for submitted nodes. */
  parentId?: string;
}

export interface Run {
  id: string;
  name: string;
  state: RunState;
  /** Every node, in the order they were added. */
  nodes: Node[];
  createdAt: Date;
  endedAt?: Date;
  /** The sequence number of the run's last event. */
  lastSeq: number;
}

export interface NodeTransition {
  nodeId: string;
  state: NodeState;
}

interface EventBase {
  runId: string;
  /** Gapless, from 1, per run. */
  seq: number;
  time: Date;
  /** Nodes whose state changed as the consequence of this event. */
  transitions: NodeTransition[];
}

/** Run-level events carry no node id; the field is there so that `event.nodeId` always reads. */
interface RunLevel {
  nodeId?: undefined;
}

/** One entry of a run's log, as `Client.watch` yields it. Narrow on `kind`. */
export type RunEvent = EventBase &
  (
    | (RunLevel & { kind: "run_submitted"; name: string; nodes: { id: string; agent: string; dependsOn: string[] }[] })
    | { kind: "node_dispatched"; nodeId: string; attempt: number; workerName: string; sessionId: string }
    | {
        kind: "attempt_finished";
        nodeId: string;
        attempt: number;
        outcome: "succeeded" | "failed" | "cancelled";
        /** The JSON result when the attempt succeeded; otherwise undefined. */
        result: unknown;
        error?: NodeError;
        /** How many mutations were committed with the result. */
        mutationCount: number;
        /** Why the core rejected the attempt's mutations (and so failed it). */
        rejection?: string;
      }
    | { kind: "attempt_lost"; nodeId: string; attempt: number; reason: string }
    | { kind: "attempt_timed_out"; nodeId: string; attempt: number }
    | { kind: "progress"; nodeId: string; attempt: number; data: unknown }
    | (RunLevel & { kind: "run_cancelled"; reason: string })
    | (RunLevel & { kind: "mutations_applied"; mutationCount: number })
    | (RunLevel & { kind: "run_ended"; state: RunState })
    | { kind: "node_failed"; nodeId: string; error?: NodeError }
    /** An event of a newer coordinator than this client knows. */
    | (RunLevel & { kind: "unknown" })
  );

/**
 * What a graph file holds, as an object: `{name?, run_id?, limits?: {max_nodes, max_spawn_depth},
 * nodes: [{id, agent, input, depends_on, retry, timeout_s, priority, labels, can_mutate, metadata,
 * run_on_failure}]}` (snake_case, as in the file).
 */
export type GraphSpec = { nodes: readonly unknown[] } & Readonly<Record<string, unknown>>;

export interface ClientOptions {
  /** TLS to the coordinator (default: plaintext). */
  tls?: TlsOptions;
  /** Sent as `authorization: Bearer <token>` metadata on every call. */
  token?: string;
  /** Deadline of each unary call, in ms (default 30 000). */
  callTimeoutMs?: number;
  /** How long unary calls keep retrying while the coordinator is UNAVAILABLE, in ms (default 15 000). */
  retryForMs?: number;
  /** Extra gRPC channel options. */
  channelOptions?: ChannelOptions;
}

export interface SubmitOptions {
  /** The run id to use (default: the coordinator makes one). A taken id fails with ALREADY_EXISTS. */
  runId?: string;
  /** Overrides the graph's name. */
  name?: string;
  /** Idempotency key; default: a random one, kept across this call's retries. */
  requestId?: string;
}

export interface WatchOptions {
  /** Yield events after this sequence number (default 0: from the start). */
  after?: number;
  /** Stops the watch; the iterator then throws the signal's reason. */
  signal?: AbortSignal;
}

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

const RUN_STATES: Record<number, RunState> = {
  [RunStateProto.RUN_STATE_RUNNING]: "running",
  [RunStateProto.RUN_STATE_SUCCEEDED]: "succeeded",
  [RunStateProto.RUN_STATE_FAILED]: "failed",
  [RunStateProto.RUN_STATE_CANCELLED]: "cancelled",
};

const NODE_STATES: Record<number, NodeState> = {
  [NodeStateProto.NODE_STATE_PENDING]: "pending",
  [NodeStateProto.NODE_STATE_READY]: "ready",
  [NodeStateProto.NODE_STATE_RUNNING]: "running",
  [NodeStateProto.NODE_STATE_SUCCEEDED]: "succeeded",
  [NodeStateProto.NODE_STATE_FAILED]: "failed",
  [NodeStateProto.NODE_STATE_CANCELLED]: "cancelled",
  [NodeStateProto.NODE_STATE_SKIPPED]: "skipped",
  [NodeStateProto.NODE_STATE_SPECULATIVE]: "speculative",
};

const OUTCOMES: Record<number, "succeeded" | "failed" | "cancelled"> = {
  [Outcome.OUTCOME_SUCCEEDED]: "succeeded",
  [Outcome.OUTCOME_FAILED]: "failed",
  [Outcome.OUTCOME_CANCELLED]: "cancelled",
};

function runState(value: RunStateProto): RunState {
  const state = RUN_STATES[value];
  if (!state) throw new Error(`the coordinator sent an unknown run state ${value}`);
  return state;
}

function nodeState(value: NodeStateProto): NodeState {
  const state = NODE_STATES[value];
  if (!state) throw new Error(`the coordinator sent an unknown node state ${value}`);
  return state;
}

function nodeError(error: NodeErrorProto | undefined): NodeError | undefined {
  return error && { message: error.message, retryable: error.retryable, kind: error.kind };
}

function date(unixSeconds: number): Date {
  return new Date(unixSeconds * 1000);
}

function toNode(status: NodeStatus, withResult: boolean): Node {
  const state = nodeState(status.state);
  const node: Node = {
    id: status.id,
    agent: status.agent,
    state,
    result: withResult && state === "succeeded" ? decodeJson(status.result) : undefined,
    attempts: status.attempts,
    dependsOn: status.dependsOn,
  };
  const error = nodeError(status.error);
  if (error) node.error = error;
  if (status.parentId) node.parentId = status.parentId;
  return node;
}

function toEvent(event: RunEventProto): RunEvent {
  const base: EventBase = {
    runId: event.runId,
    seq: Number(event.seq),
    time: date(event.time),
    transitions: event.transitions.map((t) => ({ nodeId: t.nodeId, state: nodeState(t.state) })),
  };
  const kind = event.kind;
  switch (kind?.$case) {
    case "runSubmitted":
      return {
        ...base,
        kind: "run_submitted",
        name: kind.runSubmitted.name,
        nodes: kind.runSubmitted.nodes.map((n) => ({ id: n.id, agent: n.agent, dependsOn: n.dependsOn })),
      };
    case "nodeDispatched": {
      const d = kind.nodeDispatched;
      return {
        ...base,
        kind: "node_dispatched",
        nodeId: d.nodeId,
        attempt: d.attempt,
        workerName: d.workerName,
        sessionId: d.sessionId,
      };
    }
    case "attemptFinished": {
      const f = kind.attemptFinished;
      const outcome = OUTCOMES[f.outcome];
      if (!outcome) throw new Error(`the coordinator sent an unknown outcome ${f.outcome}`);
      const finished: RunEvent = {
        ...base,
        kind: "attempt_finished",
        nodeId: f.nodeId,
        attempt: f.attempt,
        outcome,
        result: outcome === "succeeded" ? decodeJson(f.result) : undefined,
        mutationCount: f.mutations.length,
      };
      const error = nodeError(f.error);
      if (error) finished.error = error;
      if (f.rejection) finished.rejection = f.rejection;
      return finished;
    }
    case "attemptLost": {
      const l = kind.attemptLost;
      return { ...base, kind: "attempt_lost", nodeId: l.nodeId, attempt: l.attempt, reason: l.reason };
    }
    case "attemptTimedOut": {
      const t = kind.attemptTimedOut;
      return { ...base, kind: "attempt_timed_out", nodeId: t.nodeId, attempt: t.attempt };
    }
    case "progress": {
      const p = kind.progress;
      return { ...base, kind: "progress", nodeId: p.nodeId, attempt: p.attempt, data: decodeJson(p.data) };
    }
    case "runCancelled":
      return { ...base, kind: "run_cancelled", reason: kind.runCancelled.reason };
    case "mutationsApplied":
      return { ...base, kind: "mutations_applied", mutationCount: kind.mutationsApplied.mutations.length };
    case "runEnded":
      return { ...base, kind: "run_ended", state: runState(kind.runEnded.state) };
    case "nodeFailed": {
      const failed: RunEvent = { ...base, kind: "node_failed", nodeId: kind.nodeFailed.nodeId };
      const error = nodeError(kind.nodeFailed.error);
      if (error) failed.error = error;
      return failed;
    }
    case undefined:
      return { ...base, kind: "unknown" };
  }
}

const LIMIT_FIELDS = ["max_nodes", "max_spawn_depth"] as const;
const TOP_FIELDS = ["name", "run_id", "limits", "nodes"] as const;

/** The SubmitRunRequest of a builder's graph or of a graph-file object; throws a TypeError naming the problem. */
function submitRequest(graph: Graph | GraphSpec, options: SubmitOptions): SubmitRunRequest {
  let nodes: NodeSpec[];
  let name: string;
  let runId = "";
  let maxNodes: number | undefined;
  let maxSpawnDepth: number | undefined;
  if (graph instanceof Graph) {
    if (graph.nodes.length === 0) throw new TypeError("the graph is empty: a run needs at least one node");
    nodes = graph.nodes.map(nodeSpec);
    name = graph.name;
    maxNodes = graph.limits.maxNodes;
    maxSpawnDepth = graph.limits.maxSpawnDepth;
  } else {
    const o = object(graph, "graph", TOP_FIELDS);
    if (!Array.isArray(o.nodes)) throw new TypeError('graph: "nodes" must be a list of nodes');
    if (o.nodes.length === 0) throw new TypeError('graph: "nodes" is empty: a run needs at least one node');
    nodes = o.nodes.map((n, i) => nodeFromJson(n, `graph.nodes[${i}]`));
    name = str(o, "name", "graph", false);
    runId = str(o, "run_id", "graph", false);
    if (o.limits !== undefined && o.limits !== null) {
      const limits = object(o.limits, "graph.limits", LIMIT_FIELDS);
      maxNodes = int(limits, "max_nodes", "graph.limits");
      maxSpawnDepth = int(limits, "max_spawn_depth", "graph.limits");
    }
  }
  return {
    nodes,
    limits: maxNodes || maxSpawnDepth ? { maxNodes: maxNodes ?? 0, maxSpawnDepth: maxSpawnDepth ?? 0 } : undefined,
    name: options.name ?? name,
    runId: options.runId ?? runId,
    requestId: options.requestId ?? randomUUID(),
  };
}

function serviceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number";
}

function rpcError(error: unknown, what: string): Error {
  if (!serviceError(error)) return error instanceof Error ? error : new Error(`${what}: ${String(error)}`);
  return new RpcError(grpcStatus[error.code] ?? String(error.code), error.details || error.message, what);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

const FIRST_RETRY_MS = ProtocolConstant.PROTOCOL_CONSTANT_RECONNECT_FIRST_MS;
const MAX_RETRY_MS = ProtocolConstant.PROTOCOL_CONSTANT_RECONNECT_MAX_MS;

function jittered(ms: number): number {
  return ms / 2 + (Math.random() * ms) / 2;
}

function checkRunId(runId: string): void {
  if (typeof runId !== "string" || runId === "") throw new TypeError("a run id must be a non-empty string");
}

/** A connection to a coordinator's RunService. One channel, shared by every call; `close()` it. */
export class Client {
  readonly address: string;
  readonly #rpc: RunServiceClient;
  readonly #metadata: Metadata;
  readonly #callTimeoutMs: number;
  readonly #retryForMs: number;

  /** `address` is HOST:PORT; default: $HIVEGRID_COORDINATOR, else 127.0.0.1:50051. */
  constructor(address?: string, options: ClientOptions = {}) {
    this.address = address || process.env.HIVEGRID_COORDINATOR || DEFAULT_COORDINATOR;
    this.#metadata = authMetadata(options.token);
    this.#callTimeoutMs = options.callTimeoutMs ?? 30_000;
    this.#retryForMs = options.retryForMs ?? 15_000;
    if (!(this.#callTimeoutMs > 0)) throw new RangeError(`callTimeoutMs must be > 0, got ${this.#callTimeoutMs}`);
    if (!(this.#retryForMs >= 0)) throw new RangeError(`retryForMs must be >= 0, got ${this.#retryForMs}`);
    this.#rpc = new RunServiceClient(this.address, channelCredentials(options.tls), {
      "grpc.max_receive_message_length": -1,
      ...options.channelOptions,
    });
  }

  /**
   * Starts a run of `graph` (a Graph, or a graph file's content as an object); resolves to its id.
   * Retried while the coordinator is UNAVAILABLE, with one request id, so it starts one run.
   */
  async submit(graph: Graph | GraphSpec, options: SubmitOptions = {}): Promise<string> {
    const request = submitRequest(graph, options);
    const response = await this.#call(this.#rpc.submitRun, request, "submit");
    return response.runId;
  }

  /** The run and all its nodes (every page). `results: false` leaves node results out. */
  async getRun(runId: string, options: { results?: boolean; pageSize?: number } = {}): Promise<Run> {
    checkRunId(runId);
    const withResults = options.results ?? true;
    const nodes: Node[] = [];
    let pageToken = "";
    let info: RunInfo | undefined;
    do {
      const page: GetRunResponse = await this.#call(
        this.#rpc.getRun,
        { runId, omitResults: !withResults, pageSize: options.pageSize ?? 0, pageToken },
        `getRun(${JSON.stringify(runId)})`,
      );
      // The run's summary from the last page: it is the freshest.
      info = page.run;
      for (const status of page.nodes) nodes.push(toNode(status, withResults));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    if (!info) throw new Error(`getRun(${JSON.stringify(runId)}): the coordinator sent no run`);
    const run: Run = {
      id: info.runId,
      name: info.name,
      state: runState(info.state),
      nodes,
      createdAt: date(info.createdAt),
      lastSeq: Number(info.lastSeq),
    };
    if (info.endedAt > 0) run.endedAt = date(info.endedAt);
    return run;
  }

  /**
   * The run's events after `after`, then live ones, until the run ends. A broken stream (the
   * coordinator restarting, say) is resumed after the last event yielded, so none is repeated
   * or missed. Leaving the loop early ends the watch.
   */
  watch(runId: string, options: WatchOptions = {}): AsyncIterableIterator<RunEvent> {
    checkRunId(runId);
    const after = options.after ?? 0;
    if (!Number.isSafeInteger(after) || after < 0) throw new RangeError(`after must be an integer >= 0, got ${after}`);
    return this.#watch(runId, after, options.signal);
  }

  async *#watch(runId: string, after: number, signal: AbortSignal | undefined): AsyncGenerator<RunEvent> {
    let last = after;
    let delayMs: number = FIRST_RETRY_MS;
    for (;;) {
      signal?.throwIfAborted();
      const call = this.#rpc.watchRun(
        { runId, fromSeq: BigInt(last + 1), followAfterEnd: false },
        this.#metadata.clone(),
      );
      const abort = () => call.cancel();
      signal?.addEventListener("abort", abort, { once: true });
      try {
        for await (const response of call as AsyncIterable<WatchRunResponse>) {
          for (const raw of response.events) {
            const event = toEvent(raw);
            if (event.seq <= last) continue;
            last = event.seq;
            delayMs = FIRST_RETRY_MS;
            yield event;
            if (event.kind === "run_ended") return;
          }
        }
        return; // the coordinator ended the stream: the run is over
      } catch (error) {
        signal?.throwIfAborted();
        const code = serviceError(error) ? error.code : undefined;
        // A coordinator going away or shutting down; anything else is an answer.
        if (code !== grpcStatus.UNAVAILABLE && code !== grpcStatus.CANCELLED) {
          throw rpcError(error, `watch(${JSON.stringify(runId)})`);
        }
      } finally {
        signal?.removeEventListener("abort", abort);
        call.cancel();
      }
      await sleep(jittered(delayMs), signal);
      delayMs = Math.min(delayMs * 2, MAX_RETRY_MS);
    }
  }

  /** Cancels the run (its running nodes are cancelled on their workers); resolves to its state. */
  async cancel(runId: string, reason = "cancelled by a client"): Promise<RunState> {
    checkRunId(runId);
    const response = await this.#call(this.#rpc.cancelRun, { runId, reason }, `cancel(${JSON.stringify(runId)})`);
    return runState(response.state);
  }

  /** Waits for the run to end and resolves to it; rejects with TimeoutError after `timeoutMs`. */
  async wait(runId: string, options: { timeoutMs?: number } = {}): Promise<Run> {
    checkRunId(runId);
    const { timeoutMs } = options;
    if (timeoutMs !== undefined && !(timeoutMs >= 0)) throw new RangeError(`timeoutMs must be >= 0, got ${timeoutMs}`);
    const controller = new AbortController();
    const timeout = new TimeoutError(`run ${runId} did not end within ${timeoutMs} ms`);
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => controller.abort(timeout), timeoutMs);
    try {
      for (;;) {
        // Only the run's summary: its first page, without results.
        const page = await this.#call(
          this.#rpc.getRun,
          { runId, omitResults: true, pageSize: 1, pageToken: "" },
          `wait(${JSON.stringify(runId)})`,
        );
        controller.signal.throwIfAborted();
        const info = page.run;
        if (!info) throw new Error(`wait(${JSON.stringify(runId)}): the coordinator sent no run`);
        if (info.state !== RunStateProto.RUN_STATE_RUNNING) break;
        for await (const event of this.#watch(runId, Number(info.lastSeq), controller.signal)) {
          if (event.kind === "run_ended") break;
        }
      }
      return await this.getRun(runId);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the channel; calls in flight fail. */
  close(): void {
    this.#rpc.close();
  }

  async #call<Req, Res>(method: Unary<Req, Res>, request: Req, what: string): Promise<Res> {
    const giveUpAt = Date.now() + this.#retryForMs;
    let delayMs: number = FIRST_RETRY_MS;
    for (;;) {
      try {
        return await new Promise<Res>((resolve, reject) => {
          method.call(
            this.#rpc,
            request,
            this.#metadata.clone(),
            { deadline: Date.now() + this.#callTimeoutMs },
            (error, response) => (error ? reject(error) : resolve(response)),
          );
        });
      } catch (error) {
        const wait = jittered(delayMs);
        if (!serviceError(error) || error.code !== grpcStatus.UNAVAILABLE || Date.now() + wait > giveUpAt) {
          throw rpcError(error, what);
        }
        await sleep(wait);
        delayMs = Math.min(delayMs * 2, MAX_RETRY_MS);
      }
    }
  }
}
