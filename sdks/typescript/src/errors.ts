/**
 * Thrown by an agent to fail its node without a retry (the node's retry policy is not
 * consulted). Any other error fails the attempt as retryable.
 */
export class NonRetryableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NonRetryableError";
  }
}

/** The reason of `NodeContext.signal` when the coordinator cancels an assignment. */
export class CancelledError extends Error {
  /** The coordinator's reason: "run_cancelled", "pruned", "timeout", "drain", ... */
  readonly reason: string;
  constructor(reason: string) {
    super(`assignment cancelled by the coordinator (${reason || "no reason given"})`);
    this.name = "CancelledError";
    this.reason = reason;
  }
}

/**
 * The coordinator refused the session (bad Hello: protocol version, no agents, no slots).
 * Reconnecting with the same Hello cannot help, so `Worker.run` rejects with this.
 */
export class RefusedError extends Error {
  constructor(readonly reason: string) {
    super(`the coordinator refused this worker: ${reason}`);
    this.name = "RefusedError";
  }
}
