#!/usr/bin/env node
// The TypeScript conformance worker:
//   node dist/conformance.js --coordinator HOST:PORT [--slots N] [--name NAME]
// Exit codes: 0 after a drain (SIGTERM, SIGINT or DrainRequest), 2 when refused, 1 otherwise.
// The flag wins over HIVEGRID_COORDINATOR. TLS and credentials come from the environment:
// HIVEGRID_TLS_CA, HIVEGRID_TLS_CERT, HIVEGRID_TLS_KEY (PEM file paths; any of them turns TLS on)
// and HIVEGRID_TOKEN (sent as `authorization: Bearer <token>`).

import { parseArgs } from "node:util";
import { conformanceAgents } from "./conformance-agents";
import type { TlsOptions } from "./connection";
import { RefusedError } from "./errors";
import { ProtocolConstant } from "./gen/hivegrid/v1/worker";
import { Worker } from "./worker";

function usage(message: string): never {
  console.error(`${message}\nusage: conformance.js --coordinator HOST:PORT [--slots N] [--name NAME]`);
  process.exit(2);
}

function env(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value === "" ? undefined : value;
}

function tlsFromEnv(): TlsOptions | undefined {
  const tls = { ca: env("HIVEGRID_TLS_CA"), cert: env("HIVEGRID_TLS_CERT"), key: env("HIVEGRID_TLS_KEY") };
  return tls.ca || tls.cert || tls.key ? tls : undefined;
}

async function main(): Promise<void> {
  let values: { coordinator?: string; slots?: string; name?: string };
  try {
    ({ values } = parseArgs({
      options: { coordinator: { type: "string" }, slots: { type: "string" }, name: { type: "string" } },
    }));
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const address = values.coordinator ?? process.env.HIVEGRID_COORDINATOR;
  if (!address) usage("no coordinator address: pass --coordinator or set HIVEGRID_COORDINATOR");
  const slots = Number(values.slots ?? ProtocolConstant.PROTOCOL_CONSTANT_DEFAULT_SLOTS);
  if (!Number.isInteger(slots) || slots < 1) usage(`--slots must be a positive integer, got ${values.slots}`);
  const name = values.name ?? "typescript-conformance";

  let worker: Worker;
  try {
    worker = new Worker({ name, slots, tls: tlsFromEnv(), token: env("HIVEGRID_TOKEN") });
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  for (const [agentName, agent] of Object.entries(conformanceAgents)) worker.register(agentName, agent);
  worker.on("connected", (sessionId) => console.error(`hivegrid worker ${name} connected: session ${sessionId}`));

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      console.error(`hivegrid worker ${name}: second ${signal}, exiting without draining`);
      process.exit(1);
    }
    console.error(`hivegrid worker ${name}: ${signal}, draining`);
    void worker.drain();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  try {
    await worker.run(address);
  } catch (error) {
    console.error(`hivegrid worker ${name}: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(error instanceof RefusedError ? 2 : 1);
  }
  console.error(`hivegrid worker ${name} drained`);
  process.exit(0);
}

void main();
