import assert from "node:assert/strict";
import { stagingPlan } from "./engine.ts";

const MiB = 1 << 20;

Deno.test("stagingPlan: one expert per staging buffer, a layer's top-k plus one, within 256 MiB", () => {
  // Qwen3-30B-A3B: experts of 3 x 2048 x 768 bf16 = 9 MiB, top-8: 9 buffers of 9 MiB.
  const qwen = 3 * 2048 * 768 * 2;
  assert.deepEqual(stagingPlan(qwen, 8), { stagingBytes: qwen, buffers: 9 });
  // Mixtral-8x7B: 352 MiB experts: 64 MiB buffers, 4 of them (the 256 MiB cap), not 12.
  assert.deepEqual(stagingPlan(3 * 14336 * 4096 * 2, 2), { stagingBytes: 64 * MiB, buffers: 4 });
  // Tiny experts: at least 64 KiB per buffer and at least 3 buffers.
  assert.deepEqual(stagingPlan(3 * 64 * 80 * 4, 2), { stagingBytes: 64 << 10, buffers: 3 });
  // Ragged sizes round up to 4 bytes.
  assert.equal(stagingPlan(10 * MiB + 2, 1).stagingBytes, 10 * MiB + 4);
  for (const [bytes, k] of [[qwen, 8], [12 * MiB, 8], [352 * MiB, 2], [1000, 64]]) {
    const p = stagingPlan(bytes, k);
    assert.ok(p.buffers >= 3 && p.stagingBytes % 4 === 0);
    assert.ok(p.buffers <= 3 || p.buffers * p.stagingBytes <= 256 * MiB, JSON.stringify(p));
  }
});
