// Theory of operation.
//
// A Worker owns the assignments it was given across sessions; a session is one gRPC stream.
// Every assignment is a Task, queued until a slot frees and then running its agent. When the
// agent settles, the Task becomes a Result kept in the Outbox until the coordinator acks it.
// Invariant: a ref is in at most one of `#tasks` and the outbox; together they are Hello.held.
//
// Writes go through one flusher per session: at most one ProgressBatch/Results message is in
// flight; whatever becomes ready meanwhile is gathered and sent as the next batch. After a
// reconnect every unacked result is sent again.

import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";
import {
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  status as grpcStatus,
  type Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import { authMetadata, channelCredentials, type TlsOptions } from "./connection";
import type { Agent, NodeContext } from "./context";
import { CancelledError, DrainTimeoutError, NonRetryableError, RefusedError } from "./errors";
import {
  type Ack,
  AckStatus,
  type Assignment,
  type AssignmentRef,
  type ConnectRequest,
  type ConnectResponse,
  Outcome,
  ProtocolConstant,
  type Push,
  type Welcome,
  WorkerServiceClient,
} from "./gen/hivegrid/v1/worker";
import { decodeJson, encodeJson } from "./json";
import { MutationBuilder } from "./mutations";
import { type Answer, cancelled, failed, Outbox, refKey } from "./outbox";

export const SDK_VERSION = "0.1.0";
/** The worker protocol version this SDK speaks (ProtocolConstant in worker.proto). */
export const PROTOCOL_VERSION: number = ProtocolConstant.PROTOCOL_CONSTANT_VERSION;

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
}

export interface WorkerOptions {
  /** Stable name shown to operators; need not be unique. */
  name: string;
  /** Assignments run at once (default 4, PROTOCOL_CONSTANT_DEFAULT_SLOTS). */
  slots?: number;
  /** Labels that nodes may require (NodeSpec.labels). */
  labels?: Readonly<Record<string, string>>;
  /** Default: warnings to stderr, info dropped. */
  logger?: Logger;
  /** Reconnect backoff, doubling from `initialMs` to `maxMs` with jitter (default 50..1000). */
  reconnect?: { initialMs?: number; maxMs?: number };
  /**
   * How long a cancelled agent may ignore its signal before the worker answers CANCELLED on its
   * behalf and frees the slot (its eventual outcome is then dropped). Default 5 000 ms
   * (PROTOCOL_CONSTANT_CANCEL_GRACE_MS).
   */
  cancelGraceMs?: number;
  /**
   * How long to wait for the Welcome after the Hello before dropping the stream and reconnecting.
   * Default 10 000 ms (PROTOCOL_CONSTANT_WELCOME_TIMEOUT_MS).
   */
  welcomeTimeoutMs?: number;
  /**
   * Bounds a drain: if what the worker holds is not finished, delivered and acked this long after
   * the drain began, the running agents are cancelled and `run()` rejects with DrainTimeoutError.
   * 0 or absent (the default): wait as long as it takes.
   */
  drainTimeoutMs?: number;
  /** TLS to the coordinator (default: plaintext). */
  tls?: TlsOptions;
  /** Sent as `authorization: Bearer <token>` metadata on the stream. */
  token?: string;
  /** Extra gRPC channel options. */
  channelOptions?: ChannelOptions;
}

export interface RunOptions {
  /** Channel credentials built by hand; default: from WorkerOptions.tls, else plaintext. */
  credentials?: ChannelCredentials;
}

export interface WorkerEvents {
  /** A Welcome arrived: a new session is live. */
  connected: [sessionId: string];
  /** The stream ended; the worker reconnects unless it was drained or stopped. */
  disconnected: [reason: string];
  /** The coordinator acked a result. */
  ack: [ack: Ack];
}

type Stream = ClientDuplexStream<ConnectRequest, ConnectResponse>;

interface Session {
  readonly call: Stream;
  readonly client: WorkerServiceClient;
  welcome?: Welcome;
  closed: boolean;
  writing: boolean;
  flushScheduled: boolean;
  halfClosed: boolean;
  lastSentMs: number;
  lastReceivedMs: number;
  heartbeatTimer?: NodeJS.Timeout;
  closeTimer?: NodeJS.Timeout;
  welcomeTimer?: NodeJS.Timeout;
  end(reason: string, refusal?: string): void;
}

interface SessionEnd {
  welcomed: boolean;
  reason: string;
  refusal?: string;
}

interface Task {
  readonly key: string;
  readonly assignment: Assignment;
  readonly ref: AssignmentRef;
  readonly controller: AbortController;
  readonly mutations: MutationBuilder;
  running: boolean;
  done: boolean;
  cancelReason?: string;
  graceTimer?: NodeJS.Timeout;
}

// Not part of the protocol: how long this SDK waits for the coordinator to close a drained stream.
const HALF_CLOSE_TIMEOUT_MS = 10_000;

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a number > 0, got ${value}`);
  return value;
}

const stderrLogger: Logger = {
  info: () => {},
  warn: (message) => console.error(`hivegrid worker: ${message}`),
};

function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

export class Worker extends EventEmitter<WorkerEvents> {
  readonly name: string;
  readonly slots: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly #agents = new Map<string, Agent>();
  readonly #log: Logger;
  readonly #reconnectInitialMs: number;
  readonly #reconnectMaxMs: number;
  readonly #cancelGraceMs: number;
  readonly #welcomeTimeoutMs: number;
  readonly #drainTimeoutMs: number;
  readonly #tls?: TlsOptions;
  readonly #metadata: Metadata;
  readonly #channelOptions: ChannelOptions;

  /** Queued and running assignments, in arrival order. */
  readonly #tasks = new Map<string, Task>();
  #running = 0;
  readonly #outbox: Outbox;

  #session?: Session;
  #draining = false;
  #drainTimer?: NodeJS.Timeout;
  #drainError?: DrainTimeoutError;
  #stopped = false;
  #runPromise?: Promise<void>;
  #wake?: () => void;

  constructor(options: WorkerOptions) {
    super();
    const slots = options.slots ?? ProtocolConstant.PROTOCOL_CONSTANT_DEFAULT_SLOTS;
    if (!Number.isInteger(slots) || slots < 1) throw new RangeError(`slots must be an integer >= 1, got ${slots}`);
    this.name = options.name;
    this.slots = slots;
    this.labels = { ...options.labels };
    this.#log = options.logger ?? stderrLogger;
    this.#outbox = new Outbox((message) => this.#log.warn(message));
    this.#reconnectInitialMs = positive(
      options.reconnect?.initialMs ?? ProtocolConstant.PROTOCOL_CONSTANT_RECONNECT_FIRST_MS,
      "reconnect.initialMs",
    );
    this.#reconnectMaxMs = positive(
      options.reconnect?.maxMs ?? ProtocolConstant.PROTOCOL_CONSTANT_RECONNECT_MAX_MS,
      "reconnect.maxMs",
    );
    this.#cancelGraceMs = positive(
      options.cancelGraceMs ?? ProtocolConstant.PROTOCOL_CONSTANT_CANCEL_GRACE_MS,
      "cancelGraceMs",
    );
    this.#welcomeTimeoutMs = positive(
      options.welcomeTimeoutMs ?? ProtocolConstant.PROTOCOL_CONSTANT_WELCOME_TIMEOUT_MS,
      "welcomeTimeoutMs",
    );
    const drainTimeoutMs = options.drainTimeoutMs ?? 0;
    if (!Number.isFinite(drainTimeoutMs) || drainTimeoutMs < 0) {
      throw new RangeError(`drainTimeoutMs must be a number >= 0 (0: no limit), got ${drainTimeoutMs}`);
    }
    this.#drainTimeoutMs = drainTimeoutMs;
    this.#tls = options.tls;
    // Built here so that a bad token or an unreadable certificate fails at construction.
    this.#metadata = authMetadata(options.token);
    if (this.#tls) channelCredentials(this.#tls);
    this.#channelOptions = options.channelOptions ?? {};
  }

  /** Registers `agent` under `name`; nodes whose `agent` is `name` run it. */
  register(name: string, agent: Agent): this {
    if (this.#runPromise) throw new Error("register agents before run()");
    if (this.#agents.has(name)) throw new Error(`agent "${name}" is already registered`);
    this.#agents.set(name, agent);
    return this;
  }

  /**
   * Connects to the coordinator at `address` (HOST:PORT) and serves until drained (resolves)
   * or refused (rejects with RefusedError). Reconnects after any stream failure.
   */
  run(address: string, options: RunOptions = {}): Promise<void> {
    if (this.#runPromise) throw new Error("run() was already called on this worker");
    if (this.#agents.size === 0) throw new Error("register at least one agent before run()");
    if (options.credentials && this.#tls) {
      throw new Error("give either WorkerOptions.tls or RunOptions.credentials, not both");
    }
    const credentials = options.credentials ?? channelCredentials(this.#tls);
    this.#runPromise = this.#serve(address, credentials).finally(() => clearTimeout(this.#drainTimer));
    return this.#runPromise;
  }

  /**
   * Graceful drain: the coordinator assigns nothing more; in-flight assignments finish, their
   * results are acked, then the stream is closed. Resolves when `run()` has returned.
   */
  drain(): Promise<void> {
    if (!this.#draining) {
      this.#draining = true;
      this.#log.info("draining");
      if (this.#drainTimeoutMs > 0 && this.#runPromise) {
        this.#drainTimer = setTimeout(() => this.#expireDrain(), this.#drainTimeoutMs);
      }
      const session = this.#session;
      if (session?.welcome) this.#sendDrain(session);
      this.#maybeHalfClose();
      this.#wake?.();
    }
    return this.#settled();
  }

  /** Stops at once: aborts running agents and closes the stream; unacked results are lost. */
  stop(): Promise<void> {
    this.#abandon("worker_stopped", "worker stopped");
    return this.#settled();
  }

  #abandon(cancelReason: string, sessionReason: string): void {
    this.#stopped = true;
    for (const task of this.#tasks.values()) task.controller.abort(new CancelledError(cancelReason));
    this.#session?.end(sessionReason);
    this.#wake?.();
  }

  #expireDrain(): void {
    if (this.#stopped) return;
    const unfinished = this.#tasks.size + this.#outbox.unacked;
    this.#log.warn(
      `the drain did not finish within ${this.#drainTimeoutMs} ms: cancelling ${this.#tasks.size} agent(s)`,
    );
    this.#drainError = new DrainTimeoutError(this.#drainTimeoutMs, unfinished);
    this.#abandon("drain_timeout", "the drain timed out");
  }

  #settled(): Promise<void> {
    return (this.#runPromise ?? Promise.resolve()).then(
      () => {},
      () => {},
    );
  }

  #idle(): boolean {
    return this.#tasks.size === 0 && this.#outbox.unacked === 0;
  }

  async #serve(address: string, credentials: ChannelCredentials): Promise<void> {
    let delayMs = this.#reconnectInitialMs;
    for (;;) {
      if (this.#drainError) throw this.#drainError;
      if (this.#stopped || (this.#draining && this.#idle())) return;
      const end = await this.#runSession(address, credentials);
      this.emit("disconnected", end.reason);
      if (end.refusal !== undefined) throw new RefusedError(end.refusal);
      if (this.#drainError) throw this.#drainError;
      if (this.#stopped || (this.#draining && this.#idle())) return;
      if (end.welcomed) delayMs = this.#reconnectInitialMs;
      const waitMs = Math.round(delayMs / 2 + (Math.random() * delayMs) / 2);
      this.#log.warn(`stream to ${address} ended (${end.reason}); reconnecting in ${waitMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      delayMs = Math.min(delayMs * 2, this.#reconnectMaxMs);
    }
  }

  // A fresh channel per session: a session declared dead by its timeout may sit on a dead TCP
  // connection that the channel would otherwise keep reusing.
  #runSession(address: string, credentials: ChannelCredentials): Promise<SessionEnd> {
    return new Promise<SessionEnd>((resolve) => {
      const client = new WorkerServiceClient(address, credentials, {
        "grpc.max_receive_message_length": -1,
        ...this.#channelOptions,
      });
      const call = client.connect(this.#metadata.clone());
      const now = performance.now();
      const session: Session = {
        call,
        client,
        closed: false,
        writing: false,
        flushScheduled: false,
        halfClosed: false,
        lastSentMs: now,
        lastReceivedMs: now,
        end: (reason, refusal) => {
          if (session.closed) return;
          session.closed = true;
          clearTimeout(session.heartbeatTimer);
          clearTimeout(session.closeTimer);
          clearTimeout(session.welcomeTimer);
          if (this.#session === session) this.#session = undefined;
          call.cancel();
          client.close();
          resolve({ welcomed: session.welcome !== undefined, reason, refusal });
        },
      };
      this.#session = session;
      call.on("data", (message: ConnectResponse) => this.#onMessage(session, message));
      call.on("error", (error: ServiceError) => {
        session.end(`${grpcStatus[error.code] ?? error.code}: ${error.details || error.message}`);
      });
      call.on("end", () => session.end("the coordinator closed the stream"));
      // A coordinator replaying its log answers the Hello only once it is done; past this, the
      // stream (or the connection under it) is presumed dead.
      session.welcomeTimer = setTimeout(
        () => session.end(`no Welcome within ${this.#welcomeTimeoutMs} ms`),
        this.#welcomeTimeoutMs,
      );
      const held = [...[...this.#tasks.values()].map((t) => t.ref), ...this.#outbox.heldRefs()];
      this.#write(session, {
        msg: {
          $case: "hello",
          hello: {
            workerName: this.name,
            language: "typescript",
            sdkVersion: SDK_VERSION,
            protocolVersion: PROTOCOL_VERSION,
            agents: [...this.#agents.keys()],
            labels: { ...this.labels },
            slots: this.slots,
            held,
          },
        },
      });
    });
  }

  #onMessage(session: Session, message: ConnectResponse): void {
    if (session.closed) return;
    session.lastReceivedMs = performance.now();
    const msg = message.msg;
    switch (msg?.$case) {
      case "welcome":
        this.#onWelcome(session, msg.welcome);
        break;
      case "refusal":
        session.end(`refused: ${msg.refusal.reason}`, msg.refusal.reason);
        break;
      case "push":
        this.#onPush(msg.push);
        break;
      case "drainRequest":
        this.#log.info("the coordinator asked this worker to drain");
        void this.drain();
        break;
      case "heartbeat":
      case undefined:
        break;
    }
  }

  // Acks first, then assignments, then cancels, as the protocol orders them: a cancel may name an
  // attempt assigned in this very Push. Queued tasks start only after the cancels, so such an
  // attempt is answered CANCELLED without ever running.
  #onPush(push: Push): void {
    for (const ack of push.acks) this.#onAck(ack);
    for (const assignment of push.assignments) this.#onAssignment(assignment);
    for (const cancel of push.cancels) {
      if (cancel.ref) this.#onCancel(cancel.ref, cancel.reason);
    }
    this.#startQueued();
    this.#maybeHalfClose();
  }

  #onWelcome(session: Session, welcome: Welcome): void {
    if (session.welcome) return;
    session.welcome = welcome;
    clearTimeout(session.welcomeTimer);
    if (welcome.protocolVersion !== 0 && welcome.protocolVersion !== PROTOCOL_VERSION) {
      this.#log.warn(`the coordinator speaks protocol ${welcome.protocolVersion}, this SDK ${PROTOCOL_VERSION}`);
    }
    // Attempts from before the reconnect that the coordinator did not keep are stale. Running
    // ones are cancelled so that they free their slots (their answer is acked STALE); queued
    // ones never started and are owed no answer, so they are dropped.
    const kept = new Set(welcome.held.map(refKey));
    for (const task of [...this.#tasks.values()]) {
      if (kept.has(task.key)) continue;
      if (task.running) {
        this.#onCancel(task.ref, "stale after reconnect");
      } else {
        task.done = true;
        this.#tasks.delete(task.key);
      }
    }
    this.#outbox.resendAll();
    this.emit("connected", welcome.sessionId);
    if (this.#draining) this.#sendDrain(session);
    this.#startHeartbeat(session, welcome);
    this.#scheduleFlush();
    this.#maybeHalfClose();
  }

  #startHeartbeat(session: Session, welcome: Welcome): void {
    const heartbeatMs = welcome.heartbeatIntervalS * 1000;
    const timeoutMs = welcome.sessionTimeoutS * 1000;
    const shortest = Math.min(heartbeatMs > 0 ? heartbeatMs : Infinity, timeoutMs > 0 ? timeoutMs : Infinity);
    if (!Number.isFinite(shortest)) return;
    const tick = () => {
      if (session.closed) return;
      const now = performance.now();
      if (timeoutMs > 0 && now - session.lastReceivedMs > timeoutMs) {
        session.end(`nothing received from the coordinator for ${welcome.sessionTimeoutS} s`);
        return;
      }
      if (heartbeatMs > 0 && now - session.lastSentMs >= heartbeatMs && !session.halfClosed) {
        this.#write(session, { msg: { $case: "heartbeat", heartbeat: {} } });
      }
      session.heartbeatTimer = setTimeout(tick, Math.max(5, shortest / 4));
    };
    session.heartbeatTimer = setTimeout(tick, Math.max(5, shortest / 4));
  }

  #sendDrain(session: Session): void {
    if (!session.halfClosed) this.#write(session, { msg: { $case: "drain", drain: {} } });
  }

  #onAssignment(assignment: Assignment): void {
    const ref = assignment.ref;
    if (!ref) {
      this.#log.warn(`assignment for agent "${assignment.agent}" without a ref: ignored`);
      return;
    }
    const key = refKey(ref);
    // A re-sent assignment we already hold: the pending result (if any) answers it.
    if (this.#tasks.has(key) || this.#outbox.holds(key)) return;
    this.#tasks.set(key, {
      key,
      assignment,
      ref,
      controller: new AbortController(),
      mutations: new MutationBuilder(),
      running: false,
      done: false,
    });
  }

  #onAck(ack: Ack): void {
    if (!ack.ref) return;
    if (!this.#outbox.ack(ack.ref)) return;
    if (ack.status === AckStatus.ACK_STATUS_INVALID) {
      this.#log.warn(`result for ${ack.ref.nodeId} rejected as invalid: ${ack.message}`);
    } else if (ack.status === AckStatus.ACK_STATUS_MUTATIONS_REJECTED) {
      this.#log.info(`mutations of ${ack.ref.nodeId} rejected: ${ack.message}`);
    } else if (ack.status === AckStatus.ACK_STATUS_REFUSED) {
      this.#log.warn(`result of ${ack.ref.nodeId} refused by a coordinator limit: ${ack.message}`);
    }
    this.emit("ack", ack);
  }

  #onCancel(ref: AssignmentRef, reason: string): void {
    const task = this.#tasks.get(refKey(ref));
    if (!task || task.done) return;
    task.cancelReason = reason;
    if (!task.running) {
      this.#finish(task, cancelled(reason));
      return;
    }
    task.controller.abort(new CancelledError(reason));
    task.graceTimer = setTimeout(() => {
      this.#log.warn(`agent "${task.assignment.agent}" ignored its cancellation; answering CANCELLED for it`);
      this.#finish(task, cancelled(reason));
    }, this.#cancelGraceMs);
  }

  #startQueued(): void {
    for (const task of this.#tasks.values()) {
      if (this.#running >= this.slots) return;
      if (!task.running && !task.done) this.#start(task);
    }
  }

  #start(task: Task): void {
    const a = task.assignment;
    const agent = this.#agents.get(a.agent);
    if (!agent) {
      this.#finish(task, failed(`this worker does not run agent "${a.agent}"`, false, "unknown_agent"));
      return;
    }
    let input: unknown;
    const deps: Record<string, unknown> = {};
    try {
      input = decodeJson(a.input);
      for (const dep of a.deps) deps[dep.nodeId] = decodeJson(dep.result);
    } catch (error) {
      this.#finish(task, failed(`input is not valid JSON: ${errorMessage(error)}`, false, "agent"));
      return;
    }
    task.running = true;
    this.#running++;
    const context: NodeContext = {
      runId: task.ref.runId,
      nodeId: task.ref.nodeId,
      attempt: task.ref.attempt,
      agent: a.agent,
      input,
      deps,
      signal: task.controller.signal,
      canMutate: a.canMutate,
      timeoutS: a.timeoutS,
      metadata: a.metadata,
      mutations: task.mutations,
      progress: (data) => this.#progress(task, data),
    };
    Promise.resolve()
      .then(() => agent(context))
      .then(
        (value) => this.#finish(task, this.#succeeded(task, value)),
        (error: unknown) => {
          if (task.cancelReason !== undefined) this.#finish(task, cancelled(task.cancelReason));
          else if (error instanceof NonRetryableError) this.#finish(task, failed(errorMessage(error), false, "agent"));
          else this.#finish(task, failed(errorMessage(error), true, "agent"));
        },
      );
  }

  #succeeded(task: Task, value: unknown): Answer {
    let bytes: Buffer;
    try {
      bytes = encodeJson(value);
    } catch (error) {
      return failed(`the agent's result is not JSON: ${errorMessage(error)}`, false, "agent");
    }
    return {
      outcome: Outcome.OUTCOME_SUCCEEDED,
      result: bytes,
      error: undefined,
      mutations: task.mutations.toProto(),
    };
  }

  #progress(task: Task, data: unknown): void {
    if (task.done) return;
    this.#outbox.addProgress(task.ref, encodeJson(data));
    this.#scheduleFlush();
  }

  #finish(task: Task, answer: Answer): void {
    if (task.done || this.#stopped) return;
    task.done = true;
    clearTimeout(task.graceTimer);
    this.#tasks.delete(task.key);
    if (task.running) this.#running--;
    this.#outbox.addResult(task.ref, answer, this.#session?.welcome !== undefined);
    this.#scheduleFlush();
    this.#startQueued();
  }

  #scheduleFlush(): void {
    const session = this.#session;
    if (!session?.welcome || session.flushScheduled || session.writing) return;
    session.flushScheduled = true;
    // One turn of the event loop lets results that finish together travel together.
    setImmediate(() => {
      session.flushScheduled = false;
      this.#flush(session);
    });
  }

  #flush(session: Session): void {
    if (session !== this.#session || session.closed || session.writing || session.halfClosed) return;
    const welcome = session.welcome;
    const message =
      welcome && this.#outbox.takeBatch({ maxBatch: welcome.maxBatch, maxMessageBytes: welcome.maxMessageBytes });
    if (!message) {
      this.#maybeHalfClose();
      return;
    }
    session.writing = true;
    this.#write(session, message, () => {
      session.writing = false;
      this.#flush(session);
    });
  }

  #maybeHalfClose(): void {
    const session = this.#session;
    if (!this.#draining || !session?.welcome || session.halfClosed || session.closed) return;
    if (!this.#idle() || session.writing || this.#outbox.progressPending) return;
    session.halfClosed = true;
    session.call.end();
    session.closeTimer = setTimeout(
      () => session.end("the coordinator did not close the stream after the drain"),
      HALF_CLOSE_TIMEOUT_MS,
    );
  }

  #write(session: Session, message: ConnectRequest, done?: () => void): void {
    if (session.closed) return;
    session.lastSentMs = performance.now();
    session.call.write(message, done);
  }
}
