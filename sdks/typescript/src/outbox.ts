// What the worker owes the coordinator: progress not yet written, and results not yet acked.
// No I/O here: the Worker asks for the next batch when nothing is being written.
//
// Invariant: every key in `#toSend` was in `#unacked` when queued; a key acked meanwhile is
// skipped. Progress always goes out before results, so a result never overtakes the progress
// of its own attempt.

import type { AssignmentRef, ConnectRequest } from "./gen/hivegrid/v1/worker";
import { Outcome, Progress, ProtocolConstant, Result } from "./gen/hivegrid/v1/worker";

/** A Result without its ref: what an attempt came to. */
export type Answer = Omit<Result, "ref">;

export interface BatchLimits {
  /** Welcome.max_batch (0: the default). */
  maxBatch: number;
  /** Welcome.max_message_bytes (0: the default). */
  maxMessageBytes: number;
}

const DEFAULT_MAX_BATCH: number = ProtocolConstant.PROTOCOL_CONSTANT_MAX_BATCH;
const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
// Room for the message envelope and each item's tag and length prefix.
const ENVELOPE_BYTES = 1024;
const ITEM_OVERHEAD_BYTES = 8;

export function refKey(ref: AssignmentRef): string {
  return `${ref.runId}\u0000${ref.nodeId}\u0000${ref.attempt}\u0000${ref.lease}`;
}

export function failed(message: string, retryable: boolean, kind: string): Answer {
  return {
    outcome: Outcome.OUTCOME_FAILED,
    result: Buffer.alloc(0),
    error: { message, retryable, kind },
    mutations: [],
  };
}

export function cancelled(reason: string): Answer {
  return {
    outcome: Outcome.OUTCOME_CANCELLED,
    result: Buffer.alloc(0),
    error: { message: `cancelled: ${reason}`, retryable: false, kind: "cancelled" },
    mutations: [],
  };
}

export class Outbox {
  /** Results waiting for their Ack, in completion order. */
  readonly #unacked = new Map<string, Result>();
  /** Keys of unacked results not yet written on the current session. */
  #toSend: string[] = [];
  #progress: Progress[] = [];

  constructor(private readonly warn: (message: string) => void) {}

  /** Keeps a result until acked; `sendNow` queues it on the current session too. */
  addResult(ref: AssignmentRef, answer: Answer, sendNow: boolean): void {
    const key = refKey(ref);
    this.#unacked.set(key, { ref, ...answer });
    if (sendNow) this.#toSend.push(key);
  }

  addProgress(ref: AssignmentRef, data: Buffer): void {
    this.#progress.push({ ref, data });
  }

  /** Forgets an acked result; false if it was not held. */
  ack(ref: AssignmentRef): boolean {
    return this.#unacked.delete(refKey(ref));
  }

  holds(key: string): boolean {
    return this.#unacked.has(key);
  }

  /** A new session: every unacked result is sent again (results are idempotent by ref). */
  resendAll(): void {
    this.#toSend = [...this.#unacked.keys()];
  }

  heldRefs(): AssignmentRef[] {
    return [...this.#unacked.values()].map((r) => r.ref as AssignmentRef);
  }

  get unacked(): number {
    return this.#unacked.size;
  }

  get progressPending(): boolean {
    return this.#progress.length > 0;
  }

  /** The next message to write, within the session's limits, or undefined if nothing is due. */
  takeBatch(limits: BatchLimits): ConnectRequest | undefined {
    const maxItems = limits.maxBatch || DEFAULT_MAX_BATCH;
    const maxBytes = (limits.maxMessageBytes || DEFAULT_MAX_MESSAGE_BYTES) - ENVELOPE_BYTES;
    const progress = this.#takeProgress(maxItems, maxBytes);
    if (progress.length > 0) return { msg: { $case: "progress", progress: { items: progress } } };
    const results = this.#takeResults(maxItems, maxBytes);
    if (results.length > 0) return { msg: { $case: "results", results: { items: results } } };
    return undefined;
  }

  #takeProgress(maxItems: number, maxBytes: number): Progress[] {
    const items: Progress[] = [];
    let bytes = 0;
    while (this.#progress.length > 0 && items.length < maxItems) {
      const item = this.#progress[0] as Progress;
      const size = Progress.encode(item).finish().length + ITEM_OVERHEAD_BYTES;
      if (size > maxBytes) {
        this.warn(`dropped a progress payload of ${size} bytes from ${item.ref?.nodeId}: over the message limit`);
        this.#progress.shift();
        continue;
      }
      if (bytes + size > maxBytes) break;
      items.push(item);
      bytes += size;
      this.#progress.shift();
    }
    return items;
  }

  #takeResults(maxItems: number, maxBytes: number): Result[] {
    const items: Result[] = [];
    let bytes = 0;
    while (this.#toSend.length > 0 && items.length < maxItems) {
      const key = this.#toSend[0] as string;
      let result = this.#unacked.get(key);
      if (!result) {
        this.#toSend.shift(); // acked meanwhile
        continue;
      }
      let size = Result.encode(result).finish().length + ITEM_OVERHEAD_BYTES;
      if (size > maxBytes) {
        // It can never be delivered as it is; the coordinator must still hear of the attempt.
        result = { ref: result.ref, ...failed(`result of ${size} bytes exceeds the message limit`, false, "agent") };
        this.#unacked.set(key, result);
        size = Result.encode(result).finish().length + ITEM_OVERHEAD_BYTES;
      }
      if (bytes + size > maxBytes) break;
      items.push(result);
      bytes += size;
      this.#toSend.shift();
    }
    return items;
  }
}
