// Switch Transformers' MoE block on the existing kernels: top-1 routing with the softmax probability
// as the weight (routerTopK, k = 1, no renormalisation), ReLU experts with one input matrix
// (moeGateUp with act "relu", through a permuted slot table) and the down projection scaled by the
// probability into the residual (moeDownCombine, topK 1); each against float64 references.
import assert from "node:assert/strict";
import type { Gpu } from "../runtime/base/gpu/device.ts";
import { type DType, DTYPE_BYTES, packWeights, roundTo } from "../runtime/base/dtype.ts";
import { moeDownCombine, moeGateUp } from "./moe.ts";
import { routerTopK } from "./router.ts";
import { moeDownCombineRef, moeUpReluRef } from "./reference.ts";
import { assertClose, GPU_TEST, POISON, poisoned, randn, rejects, testGpu } from "./test_util.ts";

/** A pool of `slots` slots holding `E` random experts, expert e at slot `slots - 1 - e`. */
function makePool(gpu: Gpu, E: number, slots: number, rows: number, cols: number, dtype: DType) {
  const mats = Array.from({ length: E }, () => randn(rows * cols, 0.3));
  const slotBytes = Math.ceil((rows * cols * DTYPE_BYTES[dtype]) / 256) * 256;
  const buf = gpu.storage("experts", slotBytes * slots);
  const table = Uint32Array.from({ length: E }, (_, e) => slots - 1 - e);
  mats.forEach((m, e) => gpu.write(buf, packWeights(m, dtype), table[e] * slotBytes));
  return { rounded: mats.map((m) => roundTo(m, dtype)), buf, table, slotWords: slotBytes / 4 };
}

/** Switch's routing, written out: softmax over E in f64, the first most probable expert. */
function switchRoute(logits: Float32Array, T: number, E: number) {
  const ids = new Uint32Array(T), probs = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    const row = logits.subarray(t * E, (t + 1) * E);
    let best = 0;
    for (let e = 1; e < E; e++) if (row[e] > row[best]) best = e;
    let sum = 0;
    for (let e = 0; e < E; e++) sum += Math.exp(row[e] - row[best]);
    ids[t] = best;
    probs[t] = 1 / sum;
  }
  return { ids, probs };
}

Deno.test({
  name:
    "routerTopK with k = 1, renormalize false is Switch's top-1 routing (argmax, its softmax prob)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const cases = [];
    for (const [T, E] of [[1, 8], [7, 16], [33, 64], [5, 128], [3, 256], [2, 1]]) {
      const logits = randn(T * E, 2);
      // Exact ties in the last row: the lower expert wins, as torch.argmax picks.
      if (E >= 4) logits.set([5, 1, 5, 5].concat(Array(E - 4).fill(0)), (T - 1) * E);
      const ids = poisoned(gpu, T), weights = poisoned(gpu, T);
      gpu.submit([
        await routerTopK(gpu, {
          logits: gpu.storage("activations", logits),
          ids,
          weights,
          T,
          E,
          k: 1,
          renormalize: false,
        }),
      ]);
      cases.push({ T, E, logits, ids, weights });
    }
    for (const c of cases) {
      const ref = switchRoute(c.logits, c.T, c.E);
      assert.deepEqual(await gpu.readU32(c.ids, 0, c.T), ref.ids, `ids T=${c.T} E=${c.E}`);
      assertClose(await gpu.readF32(c.weights, 0, c.T), ref.probs, 1e-6, `probs E=${c.E}`);
      if (c.E >= 4) assert.equal(ref.ids[c.T - 1], 0);
    }
  },
});

for (const dtype of ["f32", "f16", "bf16"] as DType[]) {
  Deno.test({
    name: `Switch MoE block (${dtype}): ReLU experts (wi, wo) through a permuted slot table, top-1`,
    ...GPU_TEST,
    fn: async () => {
      const gpu = await testGpu();
      for (
        const [T, H, I, E] of [[1, 32, 64, 8], [3, 50, 42, 5], [6, 34, 70, 6], [2, 96, 200, 4]]
      ) {
        const slots = E + 2;
        const wi = makePool(gpu, E, slots, I, H, dtype);
        const wo = makePool(gpu, E, slots, H, I, dtype);
        const table = gpu.storage("experts", wi.table);
        const ids = Uint32Array.from({ length: T }, (_, t) => (t * 5 + 3) % E);
        const probs = Float32Array.from({ length: T }, (_, t) => 0.3 + 0.1 * t);
        const x = randn(T * H), residual = randn(T * H);
        const hBuf = poisoned(gpu, T * I);
        const outBuf = gpu.storage("activations", residual);
        const common = {
          table,
          ids: gpu.storage("activations", ids),
          T,
          topK: 1,
          hidden: H,
          inter: I,
          dtype,
        };
        gpu.submit([
          await moeGateUp(gpu, {
            ...common,
            x: gpu.storage("activations", x),
            gate: wi.buf,
            act: "relu",
            out: hBuf,
            slotWords: wi.slotWords,
          }),
          await moeDownCombine(gpu, {
            ...common,
            x: hBuf,
            down: wo.buf,
            weights: gpu.storage("activations", probs),
            out: outBuf,
            slotWords: wo.slotWords,
          }),
        ]);
        const what = `${dtype} T=${T} H=${H} I=${I} E=${E}`;
        const h = await gpu.readF32(hBuf, 0, T * I);
        const hRef = moeUpReluRef(x, wi.rounded, ids, T, 1, H, I);
        assertClose(h, hRef, 1e-5, `relu experts ${what}`);
        // The test means something only if the ReLU clipped some rows and passed others.
        assert.ok(h.some((v) => v === 0) && h.some((v) => v > 0), `relu active ${what}`);
        const y = await gpu.readF32(outBuf, 0, T * H);
        const yRef = moeDownCombineRef(h, wo.rounded, ids, probs, residual, T, 1, H, I);
        assertClose(y, yRef, 1e-5, `down + combine ${what}`);
      }
    },
  });
}

Deno.test({
  name: "ReLU experts: a pair without a slot is NaN, or left alone with missing: skip",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const [H, I, E] = [32, 16, 3];
    const wi = makePool(gpu, E, E, I, H, "f32");
    const host = wi.table.slice();
    host[1] = 0xffffffff;
    const table = gpu.storage("experts", host);
    const ids = gpu.storage("activations", new Uint32Array([0, 1]));
    const x = gpu.storage("activations", randn(2 * H));
    const outs = [poisoned(gpu, 2 * I), poisoned(gpu, 2 * I)];
    const common = { table, ids, T: 2, topK: 1, hidden: H, inter: I, dtype: "f32" as const, x };
    gpu.submit([
      await moeGateUp(gpu, {
        ...common,
        gate: wi.buf,
        act: "relu",
        out: outs[0],
        slotWords: wi.slotWords,
      }),
      await moeGateUp(gpu, {
        ...common,
        gate: wi.buf,
        act: "relu",
        out: outs[1],
        slotWords: wi.slotWords,
        missing: "skip",
      }),
    ]);
    const nan = await gpu.readF32(outs[0], 0, 2 * I);
    assert.ok(nan.subarray(0, I).every(Number.isFinite) && nan.subarray(I).every(Number.isNaN));
    const skip = new Uint32Array((await gpu.readF32(outs[1], 0, 2 * I)).buffer);
    assert.ok(skip.subarray(I).every((b) => b === POISON), "skipped rows untouched");
  },
});

Deno.test({
  name: "moeGateUp checks act and up",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const buf = (n: number) => gpu.storage("activations", n * 4);
    const base = {
      table: gpu.storage("experts", new Uint32Array([0])),
      ids: gpu.storage("activations", new Uint32Array([0])),
      T: 1,
      topK: 1,
      hidden: 8,
      inter: 8,
      slotWords: 64,
      dtype: "f32" as const,
      x: buf(8),
      gate: buf(64),
      out: buf(8),
    };
    await rejects(moeGateUp(gpu, { ...base, act: "relu", up: buf(64) }), "up", "one input matrix");
    await rejects(moeGateUp(gpu, { ...base }), "up");
    await rejects(moeGateUp(gpu, { ...base, act: "gelu" as "relu" }), "act");
  },
});
