#!/usr/bin/env node
// The TypeScript conformance worker:
//   node dist/conformance.js --coordinator HOST:PORT [--slots N] [--name NAME]
// Exit codes: 0 after a drain (SIGTERM, SIGINT or DrainRequest), 2 when refused, 1 otherwise.

import { parseArgs } from "node:util";
import { conformanceAgents } from "./conformance-agents";
import { RefusedError } from "./errors";
import { Worker } from "./worker";

function usage(message: string): never {
  console.error(`${message}\nusage: conformance.js --coordinator HOST:PORT [--slots N] [--name NAME]`);
  process.exit(2);
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
  const slots = Number(values.slots ?? "4");
  if (!Number.isInteger(slots) || slots < 1) usage(`--slots must be a positive integer, got ${values.slots}`);
  const name = values.name ?? "typescript-conformance";

  const worker = new Worker({ name, slots });
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
