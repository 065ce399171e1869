import assert from "node:assert/strict";
import { ArgumentError, BudgetError } from "../base/errors.ts";
import { type PoolSizeInput, poolSlots, stagingPlan } from "./pool_size.ts";

const MiB = 1 << 20;

Deno.test("stagingPlan: a layer's copies per staging buffer (64 KiB to 128 MiB), 3+ buffers, within 256 MiB", () => {
  // Qwen3-30B-A3B: experts of 3 x 2048 x 768 bf16 = 9 MiB, top-8: 3 buffers of 72 MiB.
  const qwen = 3 * 2048 * 768 * 2;
  assert.deepEqual(stagingPlan(qwen, 8), { stagingBytes: 8 * qwen, buffers: 3 });
  // prefetch-all copies all 128 experts of a layer: 128 MiB buffers, 3 of them.
  assert.deepEqual(stagingPlan(qwen, 128), { stagingBytes: 128 * MiB, buffers: 3 });
  // Mixtral-8x7B: 352 MiB experts, top-2: 128 MiB buffers, 3 of them (not the 7 a layer needs).
  assert.deepEqual(stagingPlan(3 * 14336 * 4096 * 2, 2), { stagingBytes: 128 * MiB, buffers: 3 });
  // Tiny experts: at least 64 KiB per buffer and at least 3 buffers.
  assert.deepEqual(stagingPlan(3 * 64 * 80 * 4, 1), { stagingBytes: 64 << 10, buffers: 3 });
  // Ragged sizes round up to 4 bytes.
  assert.equal(stagingPlan(10 * MiB + 2, 1).stagingBytes, 10 * MiB + 4);
  // Many small buffers' worth: a layer of 64 experts of 4 KiB fits one 256 KiB buffer.
  assert.deepEqual(stagingPlan(4096, 64), { stagingBytes: 256 << 10, buffers: 3 });
  for (const [bytes, k] of [[qwen, 8], [12 * MiB, 8], [352 * MiB, 2], [1000, 64], [70 * MiB, 2]]) {
    const p = stagingPlan(bytes, k);
    assert.ok(p.buffers >= 3 && p.stagingBytes % 4 === 0);
    assert.ok(p.stagingBytes >= 64 << 10 && p.stagingBytes <= 128 * MiB, JSON.stringify(p));
    assert.ok(p.buffers <= 3 || p.buffers * p.stagingBytes <= 256 * MiB, JSON.stringify(p));
    // A layer's copies fit the ring less one buffer, where the cap allows.
    if (p.buffers * p.stagingBytes < 256 * MiB && p.buffers > 3) {
      assert.ok((p.buffers - 1) * p.stagingBytes >= bytes * k, JSON.stringify(p));
    }
  }
});

const BASE: PoolSizeInput = {
  mode: "pregated",
  topK: 2,
  experts: 8,
  moeLayers: 3,
  projectionBytes: MiB,
  usedBytes: 10 * MiB,
  maxBindingBytes: 1 << 30,
};

Deno.test("poolSlots: the mode's minimum plus the cache, within the budget and the binding limit", () => {
  assert.equal(poolSlots(BASE), 4); // pregated: 2 x top-k
  assert.equal(poolSlots({ ...BASE, mode: "on-demand" }), 2);
  assert.equal(poolSlots({ ...BASE, mode: "prefetch-all" }), 8); // every expert of one layer
  assert.equal(poolSlots({ ...BASE, expertCache: 5 }), 9);
  // auto: as many 3 MiB slots as the budget holds beside the 10 MiB used, at most every expert.
  assert.equal(
    poolSlots({ ...BASE, expertCache: "auto", budget: 10 * MiB + 20 * 3 * MiB + 1 }),
    20,
  );
  assert.equal(poolSlots({ ...BASE, expertCache: "auto", budget: 1 << 30 }), 24);
  // The binding limit caps the cache (each projection buffer is one binding).
  assert.equal(poolSlots({ ...BASE, expertCache: 100, maxBindingBytes: 6 * MiB }), 6);
});

Deno.test("poolSlots: bad caches and budgets too small are typed errors naming what works", () => {
  for (const cache of [-1, 1.5]) {
    assert.throws(
      () => poolSlots({ ...BASE, expertCache: cache }),
      (e) => e instanceof ArgumentError && e.argument === "expertCache",
    );
  }
  assert.throws(
    () => poolSlots({ ...BASE, expertCache: "auto" }),
    (e) => e instanceof ArgumentError && /--budget/.test(e.message),
  );
  const need = 10 * MiB + 4 * 3 * MiB;
  assert.throws(
    () => poolSlots({ ...BASE, budget: need - 1 }),
    (e) =>
      e instanceof BudgetError && e.minimumBytes === need &&
      /smallest budget that works is 22\.0 MiB \(23068672 bytes\)/.test(e.message),
  );
  assert.equal(poolSlots({ ...BASE, budget: need }), 4);
  assert.throws(
    () => poolSlots({ ...BASE, budget: need, expertCache: 1 }),
    (e) => e instanceof BudgetError && /--expert-cache 1 needs 5 slots/.test(e.message),
  );
  assert.throws(
    () => poolSlots({ ...BASE, maxBindingBytes: 3 * MiB }),
    (e) => e instanceof BudgetError && /binds at most 3/.test(e.message),
  );
});
