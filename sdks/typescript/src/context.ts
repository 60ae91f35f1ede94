import type { MutationBuilder } from "./mutations";

/** What an agent sees of the assignment it runs. */
export interface NodeContext {
  readonly runId: string;
  readonly nodeId: string;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly agent: string;
  /** The node's JSON input (`null` when empty). */
  readonly input: unknown;
  /** Results of the dependencies that succeeded, by node id. */
  readonly deps: Readonly<Record<string, unknown>>;
  /** Aborted when the coordinator cancels the assignment (its reason is a CancelledError). */
  readonly signal: AbortSignal;
  /** Whether mutations sent with the result are allowed (NodeSpec.can_mutate). */
  readonly canMutate: boolean;
  /** Start-to-close timeout in seconds, 0 for none; the coordinator enforces it. */
  readonly timeoutS: number;
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * Graph mutations sent atomically with this attempt's successful result; dropped if the
   * agent fails. The coordinator rejects the whole batch if it is invalid.
   */
  readonly mutations: MutationBuilder;
  /** Sends a JSON progress payload; watchers of the run see payloads in the order sent. */
  progress(data: unknown): void;
}

/** An agent: any async function of its node. Its resolved value is the node's JSON result. */
export type Agent = (node: NodeContext) => Promise<unknown>;
