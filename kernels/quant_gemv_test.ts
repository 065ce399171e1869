// Decode GEMVs over Q8_0 / Q4_K / Q5_K / Q6_K weights (matvec.wgsl, moe.wgsl with quant.wgsl)
// against a CPU dequantise-then-multiply reference, on ragged shapes (odd block counts per row put
// Q8_0, Q5_0, Q4_0 and Q6_K rows at 2 mod 4 bytes), outputs poisoned first, bindings at offsets inside
// NaN-filled buffers.
import assert from "node:assert/strict";
import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { dequantize, QUANT_TYPES, quantize, type QuantType } from "../runtime/weights/quant.ts";
import { GEMV_LAYOUTS, type GemvLayout } from "./gemv.ts";
import { moeDown, moeDownCombine, moeGateUp } from "./moe.ts";
import { matvecQuant, weightRowBytes } from "./quant_gemv.ts";
import { matmulRef, moeDownCombineRef, moeDownRef, moeGateUpRef } from "./reference.ts";
import {
  assertClose,
  bindForTest,
  dawnNullGpu,
  GPU_TEST,
  loadDawn,
  NARROW_LAYOUT,
  poisoned,
  randn,
  rejects,
  relError,
  testGpu,
  words,
} from "./test_util.ts";

/**
 * Normwise error bound of dequantised random normal weights against the f32 ones, per type (the
 * largest over 3000 random draws at the test's smallest shapes: Q8_0 0.0071, Q5_0 0.057, Q4_0
 * 0.11, Q4_K 0.077, Q5_K 0.039, Q6_K 0.019).
 */
const QUANT_WEIGHT_TOL: Readonly<Record<QuantType, number>> = {
  q8_0: 0.01,
  q5_0: 0.075,
  q4_0: 0.14,
  q4_k: 0.1,
  q5_k: 0.05,
  q6_k: 0.025,
};

Deno.test({
  name:
    "matvecQuant (Q8_0, Q5_0, Q4_0, Q4_K, Q5_K, Q6_K; Q4_K / Q5_K also two rows a lane group) " +
    "matches " +
    "dequantise-then-multiply on ragged shapes",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    // type, T, K, N, accumulate, layout, rows a lane group (Q4_K / Q5_K: 1 or 2)
    type Case = [QuantType, number, number, number, boolean, GemvLayout | undefined, (1 | 2)?];
    const cases: Case[] = [
      ["q8_0", 1, 32, 5, false, undefined],
      ["q8_0", 3, 96, 37, true, undefined], // 3 blocks a row: odd rows start at 2 mod 4
      ["q8_0", 2, 352, 9, false, NARROW_LAYOUT], // 11 blocks a row over 4 lanes
      ["q4_k", 1, 256, 7, false, undefined, 1],
      ["q4_k", 2, 768, 19, true, NARROW_LAYOUT, 1], // 12 units a row over 4 lanes
      ["q5_0", 1, 32, 5, false, undefined], // 22-byte rows: odd rows at 2 mod 4
      ["q5_0", 2, 224, 9, true, NARROW_LAYOUT], // 7 blocks a row over 4 lanes
      ["q4_0", 1, 32, 5, false, undefined], // 18-byte rows: odd rows at 2 mod 4
      ["q4_0", 3, 224, 9, true, NARROW_LAYOUT], // 7 blocks a row over 4 lanes
      ["q5_k", 1, 512, 5, false, undefined],
      ["q5_k", 3, 768, 11, true, NARROW_LAYOUT],
      ["q6_k", 1, 256, 7, false, undefined], // 210-byte rows: odd rows start at 2 mod 4
      ["q6_k", 2, 768, 9, true, NARROW_LAYOUT], // 3 super-blocks a row, the middle one at 2 mod 4
      ["q4_k", 1, 256, 7, false, undefined], // the default: two rows a lane group; the last pair has one row
      ["q4_k", 3, 768, 19, true, NARROW_LAYOUT, 2],
      ["q4_k", 2, 512, 1, false, undefined, 2], // a single row
      ["q5_k", 2, 512, 6, true, undefined, 2],
    ];
    for (const [i, [type, T, K, N, accumulate, layout, rowsPerLane]] of cases.entries()) {
      const made: GPUBuffer[] = [];
      const Wf = randn(N * K, 0.5);
      const q = quantize(Wf, type);
      assert.equal(q.byteLength, N * weightRowBytes(K, type));
      const W = dequantize(q, type);
      const x = randn(T * K);
      const y0 = randn(T * N);
      const y = poisoned(gpu, T * N + 16);
      if (accumulate) gpu.write(y, y0);
      made.push(y);
      const d = await matvecQuant(gpu, {
        x: bindForTest(gpu, x, i, made),
        w: bindForTest(gpu, words(q), i + 1, made),
        y: { buffer: y, offset: 0, size: T * N * 4 },
        T,
        K,
        N,
        type,
        accumulate,
        layout,
        rowsPerLane,
      });
      // Q4_K takes two rows a lane group by default.
      const two = rowsPerLane === 2 || (rowsPerLane === undefined && type === "q4_k");
      assert.equal(d.label.endsWith("x2"), two, `${d.label}: rows a lane group`);
      gpu.submit([d]);
      const got = await gpu.readF32(y, 0, T * N + 16);
      const what = `${type} T=${T} K=${K} N=${N}${accumulate ? " acc" : ""} ${layout?.name ?? ""}` +
        (two ? " x2" : "");
      assertClose(
        got.subarray(0, T * N),
        matmulRef(x, W, T, K, N, accumulate ? y0 : undefined),
        1e-5,
        what,
      );
      assert.ok(got.subarray(T * N).every(Number.isNaN), `${what}: wrote past y`);
      // The quantisation itself: close to the f32 weights. Checked on the weights (N * K values,
      // normwise error 0.005 for Q8_0, 0.07 for Q4_K, 0.035 for Q5_K and 0.018 for Q6_K, with
      // little spread), not on the N outputs, whose normwise error against the f32 product varies
      // too much over seeds at N = 7.
      const wErr = relError(W, Wf);
      assert.ok(
        wErr < QUANT_WEIGHT_TOL[type],
        `${what}: weights off f32 by ${wErr.toExponential(3)}`,
      );
      for (const b of made) b.destroy();
    }
  },
});

/** A pool of `slots` slots holding `E` random quantised experts [rows, cols] at permuted slots. */
function quantPool(
  gpu: Gpu,
  E: number,
  slots: number,
  rows: number,
  cols: number,
  type: QuantType,
) {
  const mats = Array.from({ length: E }, () => quantize(randn(rows * cols, 0.3), type));
  const slotBytes = Math.ceil(mats[0].byteLength / 256) * 256;
  const buf = gpu.storage("experts", slotBytes * slots);
  const table = Uint32Array.from({ length: E }, (_, e) => slots - 1 - e);
  mats.forEach((m, e) => gpu.write(buf, words(m), table[e] * slotBytes));
  return { rounded: mats.map((m) => dequantize(m, type)), buf, table, slotWords: slotBytes / 4 };
}

for (const type of QUANT_TYPES) {
  Deno.test({
    name: `moe gate_up, down and down_combine (${type}) match the reference through the slot table`,
    ...GPU_TEST,
    fn: async () => {
      const gpu = await testGpu();
      const cases = type === "q8_0" || type === "q5_0" || type === "q4_0"
        ? [[1, 2, 64, 96, 4], [3, 3, 96, 32, 5]] // I = 96: down rows of 3 blocks
        : [[2, 2, 256, 512, 3], [1, 3, 512, 256, 4]]; // (Q6_K: rows of 256 at 2 mod 4)
      for (const [T, topK, H, I, E] of cases) {
        const g = quantPool(gpu, E, E + 1, I, H, type);
        const u = quantPool(gpu, E, E + 1, I, H, type);
        const d = quantPool(gpu, E, E + 1, H, I, type);
        const table = gpu.storage("experts", g.table);
        const ids = Uint32Array.from({ length: T * topK }, (_, p) => (p * 7 + 3) % E);
        const x = randn(T * H), w = randn(T * topK), res = randn(T * H);
        const so = randn(T * H), sg = randn(T);
        const hBuf = poisoned(gpu, T * topK * I);
        const yBuf = poisoned(gpu, T * topK * H);
        const out = gpu.storage("activations", res);
        const common = {
          table,
          ids: gpu.storage("activations", ids),
          T,
          topK,
          hidden: H,
          inter: I,
          dtype: type,
        };
        gpu.submit([
          await moeGateUp(gpu, {
            ...common,
            x: gpu.storage("activations", x),
            gate: g.buf,
            up: u.buf,
            out: hBuf,
            slotWords: g.slotWords,
          }),
          await moeDown(gpu, {
            ...common,
            x: hBuf,
            down: d.buf,
            out: yBuf,
            slotWords: d.slotWords,
          }),
          await moeDownCombine(gpu, {
            ...common,
            x: hBuf,
            down: d.buf,
            out,
            slotWords: d.slotWords,
            weights: gpu.storage("activations", w),
            shared: { out: gpu.storage("activations", so), gate: gpu.storage("activations", sg) },
          }),
        ]);
        const what = `${type} T=${T} topK=${topK} H=${H} I=${I}`;
        const h = await gpu.readF32(hBuf, 0, T * topK * I);
        assertClose(
          h,
          moeGateUpRef(x, g.rounded, u.rounded, ids, T, topK, H, I),
          1e-5,
          `gate_up ${what}`,
        );
        const y = await gpu.readF32(yBuf, 0, T * topK * H);
        assertClose(y, moeDownRef(h, d.rounded, ids, T * topK, H, I), 1e-5, `down ${what}`);
        const ref = moeDownCombineRef(h, d.rounded, ids, w, res, T, topK, H, I, {
          out: so,
          gate: sg,
        });
        assertClose(await gpu.readF32(out, 0, T * H), ref, 1e-5, `down_combine ${what}`);
      }
    },
  });
}

Deno.test({
  name: "quantised moe: an expert without a slot gives NaN",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const [H, I, E] = [64, 32, 3];
    const g = quantPool(gpu, E, E, I, H, "q8_0");
    const table = g.table.slice();
    table[1] = 0xffffffff;
    const out = poisoned(gpu, 2 * I);
    gpu.submit([
      await moeGateUp(gpu, {
        table: gpu.storage("experts", table),
        ids: gpu.storage("activations", new Uint32Array([0, 1])),
        T: 1,
        topK: 2,
        hidden: H,
        inter: I,
        dtype: "q8_0",
        x: gpu.storage("activations", randn(H)),
        gate: g.buf,
        up: g.buf,
        out,
        slotWords: g.slotWords,
      }),
    ]);
    const h = await gpu.readF32(out, 0, 2 * I);
    assert.ok(h.subarray(0, I).every(Number.isFinite), "resident expert computed");
    assert.ok(h.subarray(I).every(Number.isNaN), "missing expert flagged as NaN");
  },
});

Deno.test({
  name: "quantised GEMV builders reject bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const b = gpu.storage("activations", 4096), o = gpu.storage("activations", 4096);
    const mv = { x: b, w: b, y: o, K: 256, N: 4, type: "q4_k" as QuantType };
    await rejects(matvecQuant(gpu, { ...mv, K: 128 }), "K", "whole 256-value blocks");
    await rejects(matvecQuant(gpu, { ...mv, type: "q3_k" as QuantType }), "type");
    await rejects(matvecQuant(gpu, { ...mv, type: "q6_k", N: 20 }), "w", "q6_k [N=20, K=256]");
    await rejects(matvecQuant(gpu, { ...mv, N: 40 }), "w", "q4_k [N=40, K=256]");
    await rejects(matvecQuant(gpu, { ...mv, T: 9 }), "T");
    await rejects(matvecQuant(gpu, { ...mv, y: b }), "y", "distinct");
    await rejects(matvecQuant(gpu, { ...mv, rowsPerLane: 3 as 2 }), "rowsPerLane", "1 or 2");
    await rejects(matvecQuant(gpu, { ...mv, type: "q8_0", rowsPerLane: 2 }), "rowsPerLane", "q4_k");
    const moe = { table: b, ids: b, T: 1, topK: 2, hidden: 64, inter: 32, dtype: "q8_0" as const };
    await rejects(
      moeDown(gpu, { ...moe, inter: 48, x: b, down: b, out: o, slotWords: 4096 }),
      "inter",
      "32-value",
    );
    await rejects(
      moeGateUp(gpu, { ...moe, hidden: 48, x: b, gate: b, up: b, out: o, slotWords: 4096 }),
      "hidden",
      "32-value",
    );
    // 64 rows of 34 bytes = 2176 bytes = 544 words at least.
    await rejects(
      moeDown(gpu, { ...moe, x: b, down: b, out: o, slotWords: 540 }),
      "slotWords",
      "544",
    );
  },
});

const DAWN = await loadDawn();

Deno.test({
  name: "the quantised GEMV kernels compile with Dawn's WGSL compiler (null backend), every layout",
  ignore: DAWN === undefined,
  ...GPU_TEST,
  fn: async () => {
    const gpu = await dawnNullGpu(DAWN!);
    try {
      const made: GPUBuffer[] = [];
      const buf = (bytes: number) => {
        const b = gpu.storage("other", bytes);
        made.push(b);
        return b;
      };
      const steps: Dispatch[] = [];
      const [T, N, K, topK, H, I] = [2, 8, 256, 2, 256, 256];
      for (const layout of Object.values(GEMV_LAYOUTS)) {
        for (const type of QUANT_TYPES) {
          const x = buf(T * K * 4), w = buf(N * weightRowBytes(K, type) + 4), y = buf(T * N * 4);
          steps.push(await matvecQuant(gpu, { x, w, y, T, K, N, type, layout }));
          if (type === "q4_k" || type === "q5_k") {
            steps.push(await matvecQuant(gpu, { x, w, y, T, K, N, type, layout, rowsPerLane: 2 }));
          }
          const table = gpu.storage("other", new Uint32Array([0, 1]));
          const ids = gpu.storage("other", new Uint32Array([0, 1]));
          made.push(table, ids);
          const slotWords = Math.ceil(I * weightRowBytes(H, type) / 16) * 4;
          const common = { table, ids, T: 1, topK, hidden: H, inter: I, slotWords, layout };
          const pool = () => buf(2 * slotWords * 4);
          const x1 = buf(H * 4), h = buf(topK * I * 4);
          steps.push(
            await moeGateUp(gpu, {
              ...common,
              dtype: type,
              x: x1,
              gate: pool(),
              up: pool(),
              out: h,
            }),
            await moeDown(gpu, {
              ...common,
              dtype: type,
              x: h,
              down: pool(),
              out: buf(topK * H * 4),
            }),
            await moeDownCombine(gpu, {
              ...common,
              dtype: type,
              x: h,
              down: pool(),
              weights: buf(topK * 4),
              out: buf(H * 4),
            }),
          );
        }
      }
      gpu.submit(steps);
      await gpu.sync(); // throws any validation error raised since
      for (const b of made) gpu.destroyBuffer(b);
    } finally {
      gpu.destroy();
    }
  },
});
