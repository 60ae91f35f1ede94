// An in-process coordinator for tests: a real gRPC server on loopback whose WorkerService hands
// each stream to the test, which scripts the coordinator's side message by message.

import { type Metadata, Server, ServerCredentials, type ServerDuplexStream, status } from "@grpc/grpc-js";
import {
  type Ack,
  AckStatus,
  type Assignment,
  type AssignmentRef,
  type ConnectRequest,
  type ConnectResponse,
  type Push,
  type Welcome,
  WorkerServiceService,
} from "../src/gen/hivegrid/v1/worker";

/** A FIFO whose `next()` waits, with a timeout, for the next pushed item. */
export class Channel<T> {
  readonly #items: T[] = [];
  readonly #waiters: ((item: T) => void)[] = [];

  push(item: T): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  }

  next(timeoutMs = 5000, what = "item"): Promise<T> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const waiter = (value: T) => {
        clearTimeout(timer);
        resolve(value);
      };
      this.#waiters.push(waiter);
    });
  }

  get pending(): number {
    return this.#items.length;
  }
}

/** Rejects with a clear message if `promise` does not settle within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

export type Case = NonNullable<ConnectRequest["msg"]>["$case"];
type Of<C extends Case> = Extract<NonNullable<ConnectRequest["msg"]>, { $case: C }>;

export class FakeSession {
  readonly received = new Channel<ConnectRequest>();
  /** Resolves when the worker half-closes its side of the stream. */
  readonly halfClosed: Promise<void>;
  /** Resolves when the stream is over (either side). */
  readonly done: Promise<void>;
  #ended = false;

  /** The stream's request metadata (where `authorization` arrives). */
  readonly metadata: Metadata;

  constructor(readonly call: ServerDuplexStream<ConnectRequest, ConnectResponse>) {
    this.metadata = call.metadata;
    this.halfClosed = new Promise((resolve) => call.on("end", () => resolve()));
    this.done = new Promise((resolve) => {
      call.on("finish", () => resolve());
      call.on("close", () => resolve());
      call.on("cancelled", () => resolve());
    });
    call.on("data", (message: ConnectRequest) => this.received.push(message));
    call.on("error", () => {});
  }

  /** The next message of kind `kind`, skipping heartbeats (and only heartbeats). */
  async expect<C extends Case>(kind: C, timeoutMs = 5000): Promise<Of<C>> {
    for (;;) {
      const message = await this.received.next(timeoutMs, kind);
      const msg = message.msg;
      if (msg?.$case === "heartbeat" && kind !== "heartbeat") continue;
      if (msg?.$case !== kind) throw new Error(`expected ${kind}, got ${JSON.stringify(msg?.$case)}`);
      return msg as Of<C>;
    }
  }

  send(message: ConnectResponse): void {
    if (!this.#ended) this.call.write(message);
  }

  welcome(overrides: Partial<Welcome> = {}): void {
    this.send({
      msg: {
        $case: "welcome",
        welcome: {
          sessionId: "s-test",
          protocolVersion: 2,
          heartbeatIntervalS: 0,
          sessionTimeoutS: 0,
          maxMessageBytes: 4 * 1024 * 1024,
          held: [],
          maxBatch: 64,
          maxResultBytes: 0n,
          maxProgressBytes: 0,
          maxProgressPerS: 0,
          maxSlots: 0,
          maxMutations: 0,
          maxIdBytes: 0,
          ...overrides,
        },
      },
    });
  }

  /** One Push: the worker handles its acks, then its assignments, then its cancels. */
  push({ acks = [], cancels = [], assignments = [] }: Partial<Push>): void {
    this.send({ msg: { $case: "push", push: { acks, cancels, assignments } } });
  }

  assign(...assignments: Assignment[]): void {
    this.push({ assignments });
  }

  ack(refs: AssignmentRef[], ackStatus = AckStatus.ACK_STATUS_COMMITTED): void {
    this.push({ acks: refs.map((ref) => ackOf(ref, ackStatus)) });
  }

  cancel(ref: AssignmentRef, reason = "run_cancelled"): void {
    this.push({ cancels: [{ ref, reason }] });
  }

  /** Ends the stream with OK status. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.call.end();
  }

  /** Ends the stream with an UNAVAILABLE status, as a coordinator going away would. */
  fail(details = "coordinator went away"): void {
    if (this.#ended) return;
    this.#ended = true;
    this.call.emit("error", { code: status.UNAVAILABLE, details, name: "Error", message: details });
  }
}

export class FakeCoordinator {
  readonly sessions = new Channel<FakeSession>();
  readonly #server = new Server();
  #all: FakeSession[] = [];
  port = 0;

  /** Serves on loopback; plaintext unless `credentials` say otherwise (TLS tests). */
  async start(credentials: ServerCredentials = ServerCredentials.createInsecure()): Promise<string> {
    this.#server.addService(WorkerServiceService, {
      connect: (call: ServerDuplexStream<ConnectRequest, ConnectResponse>) => {
        const session = new FakeSession(call);
        this.#all.push(session);
        this.sessions.push(session);
      },
    });
    this.port = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync("127.0.0.1:0", credentials, (error, port) => (error ? reject(error) : resolve(port)));
    });
    return this.address;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The next stream, its Hello already read. */
  async accept(timeoutMs = 5000): Promise<{ session: FakeSession; hello: Of<"hello">["hello"] }> {
    const session = await this.sessions.next(timeoutMs, "a worker stream");
    const { hello } = await session.expect("hello", timeoutMs);
    return { session, hello };
  }

  stop(): void {
    for (const session of this.#all) session.end();
    this.#server.forceShutdown();
  }
}

export function ackOf(ref: AssignmentRef, status = AckStatus.ACK_STATUS_COMMITTED): Ack {
  return { ref, status, message: "" };
}

let leaseCounter = 1n;

export function assignment(
  agent: string,
  input: unknown = null,
  overrides: Partial<Assignment> & { ref?: AssignmentRef } = {},
): Assignment {
  const ref = overrides.ref ?? { runId: "r1", nodeId: `n${leaseCounter}`, attempt: 1, lease: leaseCounter };
  leaseCounter++;
  return {
    agent,
    input: input === null ? Buffer.alloc(0) : Buffer.from(JSON.stringify(input)),
    deps: [],
    timeoutS: 0,
    canMutate: false,
    metadata: {},
    ...overrides,
    ref,
  };
}

/** A promise with its resolve function: a gate a test opens. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
