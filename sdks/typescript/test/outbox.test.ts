// Pure tests of the outbox and the JSON form of mutations: no network.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { AssignmentRef } from "../src/gen/hivegrid/v1/worker";
import { Outcome } from "../src/gen/hivegrid/v1/worker";
import { MutationBuilder } from "../src/index";
import { type Answer, Outbox } from "../src/outbox";

const T = { timeout: 5000 };
const ref = (i: number): AssignmentRef => ({ runId: "r", nodeId: `n${i}`, attempt: 1, lease: BigInt(i) });
const ok = (bytes: number): Answer => ({
  outcome: Outcome.OUTCOME_SUCCEEDED,
  result: Buffer.from(JSON.stringify("x".repeat(bytes))),
  error: undefined,
  mutations: [],
});

describe("outbox", () => {
  test("progress before results; acked results are skipped; unacked ones resent", T, () => {
    const warnings: string[] = [];
    const box = new Outbox((m) => warnings.push(m));
    box.addResult(ref(1), ok(1), true);
    box.addResult(ref(2), ok(1), true);
    box.addProgress(ref(3), Buffer.from("1"));
    const first = box.takeBatch({ maxBatch: 10, maxMessageBytes: 0 });
    assert.equal(first?.msg?.$case, "progress");
    assert.ok(box.ack(ref(1)));
    const second = box.takeBatch({ maxBatch: 10, maxMessageBytes: 0 });
    assert.ok(second?.msg?.$case === "results");
    assert.deepEqual(
      second.msg.results.items.map((r) => r.ref?.nodeId),
      ["n2"],
    );
    assert.equal(box.takeBatch({ maxBatch: 10, maxMessageBytes: 0 }), undefined);
    box.resendAll();
    const again = box.takeBatch({ maxBatch: 10, maxMessageBytes: 0 });
    assert.ok(again?.msg?.$case === "results");
    assert.equal(again.msg.results.items.length, 1);
    assert.deepEqual(box.heldRefs(), [ref(2)]);
    assert.deepEqual(warnings, []);
  });

  test("batches respect max_message_bytes; an oversized result becomes a failure", T, () => {
    const box = new Outbox(() => {});
    for (let i = 0; i < 4; i++) box.addResult(ref(i), ok(1000), true);
    box.addResult(ref(9), ok(10_000), true);
    const limits = { maxBatch: 100, maxMessageBytes: 1024 + 2100 };
    const sizes: number[] = [];
    for (let m = box.takeBatch(limits); m; m = box.takeBatch(limits)) {
      assert.ok(m.msg?.$case === "results");
      sizes.push(m.msg.results.items.length);
      const last = m.msg.results.items.at(-1);
      if (last?.ref?.nodeId === "n9") {
        assert.equal(last.outcome, Outcome.OUTCOME_FAILED);
        assert.match(last.error?.message ?? "", /exceeds the message limit/);
      }
    }
    assert.deepEqual(sizes, [2, 2, 1]);
  });
});

describe("mutations from JSON", () => {
  test("a malformed mutation adds none of the batch", T, () => {
    const b = new MutationBuilder();
    assert.throws(
      () => b.addJSON({ remove_node: { id: "a" } }, { add_node: { node: { id: "x" } } }),
      /mutations\[1\]\.add_node\.node\.agent: expected a string/,
    );
    assert.equal(b.length, 0);
  });

  test("unknown kinds, several kinds and wrong types are refused", T, () => {
    const b = new MutationBuilder();
    assert.throws(() => b.addJSON({ explode: {} }), /unknown field "explode"/);
    assert.throws(() => b.addJSON({ remove_node: { id: "a" }, add_edge: {} }), /exactly one key/);
    assert.throws(() => b.addJSON({ modify_node: { id: "a", priority: 1.5 } }), /priority: expected an integer/);
    assert.throws(() => b.addJSON("add_node"), /expected an object/);
    assert.equal(b.length, 0);
  });

  test("split_node replacements and retry policies convert", T, () => {
    const b = new MutationBuilder().addJSON({
      split_node: {
        id: "s",
        replacements: [{ id: "s1", agent: "echo", retry: { max_attempts: 4, jitter: 0.5 }, labels: { gpu: "1" } }],
      },
    });
    const [m] = b.toProto();
    assert.ok(m?.kind?.$case === "splitNode");
    const rep = m.kind.splitNode.replacements[0];
    assert.equal(rep?.retry?.maxAttempts, 4);
    assert.equal(rep?.retry?.jitter, 0.5);
    assert.deepEqual(rep?.labels, { gpu: "1" });
    assert.equal(rep?.input.length, 0);
  });
});
