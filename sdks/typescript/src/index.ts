// @hivegrid/worker: run Hivegrid agents in Node.js, and submit and follow runs. See README.md.
export {
  Client,
  type ClientOptions,
  DEFAULT_COORDINATOR,
  type GraphSpec,
  type Node,
  type NodeError,
  type NodeState,
  type NodeTransition,
  type Run,
  type RunEvent,
  type RunState,
  type SubmitOptions,
  type WatchOptions,
} from "./client";
export type { TlsOptions } from "./connection";
export type { Agent, NodeContext } from "./context";
export {
  CancelledError,
  DrainTimeoutError,
  NonRetryableError,
  RefusedError,
  RpcError,
  TimeoutError,
} from "./errors";
export { Graph, type GraphLimits, NodeHandle, type NodeOptions, type NodeRef } from "./graph";
export { decodeJson, encodeJson } from "./json";
export { type ModifyNodeInit, MutationBuilder, type NodeSpecInit, type RetryPolicyInit } from "./mutations";
export {
  type Logger,
  PROTOCOL_VERSION,
  type RunOptions,
  SDK_VERSION,
  Worker,
  type WorkerEvents,
  type WorkerOptions,
} from "./worker";
