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

/**
 * A drain did not finish within `WorkerOptions.drainTimeoutMs`: the agents still running were
 * cancelled and results not yet acked were given up. `Worker.run` rejects with this.
 */
export class DrainTimeoutError extends Error {
  constructor(
    readonly timeoutMs: number,
    /** Assignments still running or queued, and results not yet acked, when the time ran out. */
    readonly unfinished: number,
  ) {
    super(`the drain did not finish within ${timeoutMs} ms (${unfinished} assignment(s) unfinished or unacked)`);
    this.name = "DrainTimeoutError";
  }
}

/** A coordinator call failed. `code` is the gRPC status name: "NOT_FOUND", "INVALID_ARGUMENT", ... */
export class RpcError extends Error {
  constructor(
    readonly code: string,
    /** The coordinator's own words. */
    readonly details: string,
    what: string,
  ) {
    super(`${what}: ${code}: ${details}`);
    this.name = "RpcError";
  }
}

/** `Client.wait` gave up: the run had not ended within its `timeoutMs`. */
export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}
