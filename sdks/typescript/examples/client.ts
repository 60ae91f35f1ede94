import { Client, Graph } from "@hivegrid/worker";

async function main(): Promise<void> {
  const client = new Client(); // $HIVEGRID_COORDINATOR, else 127.0.0.1:50051
  const g = new Graph("example");
  const a = g.node("value", { value: 2 });
  const b = g.node("value", { value: 3 });
  g.node("sum", null, { after: [a, b] });
  const runId = await client.submit(g);
  for await (const e of client.watch(runId)) console.log(e.seq, e.kind, e.nodeId ?? "");
  for (const node of (await client.wait(runId)).nodes) console.log(node.id, node.state, JSON.stringify(node.result));
  client.close();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
