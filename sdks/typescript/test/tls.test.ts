// TLS and credentials: real TLS handshakes on loopback against servers holding certificates made
// for the test by `openssl` (node:crypto cannot issue X.509 certificates).

import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, describe, test } from "node:test";
import { type Metadata, Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData } from "@grpc/grpc-js";
import { RunServiceService, type SubmitRunRequest, type SubmitRunResponse } from "../src/gen/hivegrid/v1/run";
import { Outcome } from "../src/gen/hivegrid/v1/worker";
import { Client, Graph, RpcError, Worker } from "../src/index";
import { assignment, FakeCoordinator, within } from "./fake-coordinator";
import { after, closeAll, json, quiet, results, start } from "./harness";

const T = { timeout: 20_000 };
afterEach(closeAll);

const haveOpenssl = spawnSync("openssl", ["version"], { stdio: "ignore" }).status === 0;
// CI must run these; elsewhere a machine without openssl skips them, saying why.
const skip =
  !haveOpenssl && process.env.CI !== "true" ? "openssl is not installed: cannot make test certificates" : false;

interface Pair {
  cert: string;
  key: string;
}

let dir: string | undefined;

/** A self-signed certificate for 127.0.0.1 and localhost, valid for two days. */
function makeCert(name: string): Pair {
  if (!haveOpenssl) throw new Error("openssl is required for the TLS tests (CI=true)");
  dir ??= mkdtempSync(join(tmpdir(), "hivegrid-tls-"));
  const pair = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "-keyout",
      pair.key,
      "-out",
      pair.cert,
    ],
    { stdio: "ignore" },
  );
  return pair;
}

function serverCredentials(server: Pair, clientCa?: Pair): ServerCredentials {
  return ServerCredentials.createSsl(
    clientCa ? readFileSync(clientCa.cert) : null,
    [{ cert_chain: readFileSync(server.cert), private_key: readFileSync(server.key) }],
    clientCa !== undefined,
  );
}

let certs: { server: Pair; client: Pair } | undefined;
function pairs(): { server: Pair; client: Pair } {
  certs ??= { server: makeCert("hivegrid-test-server"), client: makeCert("hivegrid-test-client") };
  return certs;
}

process.on("exit", () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function bearer(metadata: Metadata): unknown[] {
  return metadata.get("authorization");
}

describe("worker over TLS", { skip }, () => {
  test("a TLS handshake with a CA file, the token arriving as metadata, work done", T, async () => {
    const { server } = pairs();
    const { session } = await start(
      { echo: async (node) => node.input },
      { server: serverCredentials(server), worker: { tls: { ca: server.cert }, token: "s3cret" } },
    );
    assert.deepEqual(bearer(session.metadata), ["Bearer s3cret"]);
    session.assign(assignment("echo", "over tls"));
    const [r] = await results(session, 1);
    assert.equal(r?.outcome, Outcome.OUTCOME_SUCCEEDED);
    assert.equal(json(r!), "over tls");
  });

  test("mutual TLS: a client certificate is presented; without one the server refuses", T, async () => {
    const { server, client } = pairs();
    const { session } = await start(
      { echo: async (node) => node.input },
      {
        server: serverCredentials(server, client),
        worker: { tls: { ca: readFileSync(server.cert), cert: client.cert, key: readFileSync(client.key) } },
      },
    );
    assert.deepEqual(bearer(session.metadata), [], "no token given, none sent");
    session.assign(assignment("echo", 1));
    assert.equal(json((await results(session, 1))[0]!), 1);

    const coordinator = new FakeCoordinator();
    const address = await coordinator.start(serverCredentials(server, client));
    after(() => coordinator.stop());
    const anonymous = new Worker({ name: "anonymous", logger: quiet, tls: { ca: server.cert } });
    anonymous.register("echo", async () => null);
    const disconnected = once(anonymous, "disconnected");
    void anonymous.run(address).catch(() => {});
    after(() => within(anonymous.stop(), 5000, "stop"));
    const [reason] = await within(disconnected, 10_000, "the refused handshake");
    assert.match(String(reason), /^UNAVAILABLE/);
    assert.equal(coordinator.sessions.pending, 0, "no stream reached the coordinator");
  });

  test("the conformance worker takes HIVEGRID_TLS_CA and HIVEGRID_TOKEN from the environment", T, async () => {
    const { server } = pairs();
    const coordinator = new FakeCoordinator();
    const address = await coordinator.start(serverCredentials(server));
    after(() => coordinator.stop());
    const program = resolve(__dirname, "../../dist/conformance.js");
    const child = spawn(process.execPath, [program, "--coordinator", address, "--name", "ts-tls"], {
      stdio: "ignore",
      env: { ...process.env, HIVEGRID_TLS_CA: server.cert, HIVEGRID_TOKEN: "from-env" },
    });
    const exit = once(child, "exit");
    after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    const { session, hello } = await coordinator.accept(10_000);
    assert.equal(hello.workerName, "ts-tls");
    assert.deepEqual(bearer(session.metadata), ["Bearer from-env"]);
    session.welcome();
    const a = assignment("value", { value: 7 });
    session.assign(a);
    assert.deepEqual(json((await results(session, 1))[0]!), { value: 7 });
    session.send({ msg: { $case: "drainRequest", drainRequest: {} } });
    await session.expect("drain");
    session.ack([a.ref!]);
    await within(session.halfClosed, 5000, "half-close");
    session.end();
    const [code] = await within(exit, 5000, "exit");
    assert.equal(code, 0);
  });
});

describe("client over TLS", { skip }, () => {
  test("the Client's calls go over TLS and carry the token", T, async () => {
    const { server: pair } = pairs();
    const seen: { request: SubmitRunRequest; token: unknown[] }[] = [];
    const server = new Server();
    server.addService(RunServiceService, {
      submitRun: (
        call: ServerUnaryCall<SubmitRunRequest, SubmitRunResponse>,
        done: sendUnaryData<SubmitRunResponse>,
      ) => {
        seen.push({ request: call.request, token: bearer(call.metadata) });
        done(null, { runId: "r-tls" });
      },
    });
    const port = await new Promise<number>((ok, fail) =>
      server.bindAsync("127.0.0.1:0", serverCredentials(pair), (e, p) => (e ? fail(e) : ok(p))),
    );
    after(() => server.forceShutdown());
    const client = new Client(`127.0.0.1:${port}`, { tls: { ca: pair.cert }, token: "t0ken", retryForMs: 0 });
    after(() => client.close());
    const g = new Graph("tls");
    g.node("echo", { x: 1 });
    assert.equal(await within(client.submit(g), 10_000, "submit"), "r-tls");
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]?.token, ["Bearer t0ken"]);
    assert.equal(seen[0]?.request.name, "tls");
    assert.deepEqual(
      seen[0]?.request.nodes.map((n) => [n.id, n.agent]),
      [["echo-1", "echo"]],
    );
    // A method the server does not implement comes back as an RpcError with its status name.
    await assert.rejects(client.cancel("r-tls"), (error: unknown) => {
      assert.ok(error instanceof RpcError);
      assert.equal(error.code, "UNIMPLEMENTED");
      return true;
    });
  });
});
