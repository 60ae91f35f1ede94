// @hivegrid/worker: run Hivegrid agents in Node.js. See README.md for an example.
export type { Agent, NodeContext } from "./context";
export { CancelledError, NonRetryableError, RefusedError } from "./errors";
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
