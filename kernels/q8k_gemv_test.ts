// Q8_K activations (quantize_q8k.wgsl) against roundActivationsRef's q8_k values, and the Q4_K /
// Q5_K GEMV over them (matvec_q8k.wgsl) against a CPU product of the dequantised weights with those
// values, on ragged shapes, outputs poisoned first, bindings at offsets inside NaN-filled buffers.
import assert from "node:assert/strict";
import { dequantize, quantize } from "../runtime/weights/quant.ts";
import { GEMV_LAYOUTS, type GemvLayout } from "./gemv.ts";
import { weightRowBytes } from "./quant_gemv.ts";
import { matmulRef } from "./reference.ts";
import { roundActivationsRef } from "./reference_pointwise.ts";
import { matvecQ8K, q8kBytes, type Q8KWeightType, quantizeQ8K } from "./q8k_gemv.ts";
import {
  assertClose,
  bindForTest,
  GPU_TEST,
  NARROW_LAYOUT,
  POISON,
  poisoned,
  randn,
  rejects,
  testGpu,
  words,
} from "./test_util.ts";

/** Reads the int8 values and scales the GPU wrote as the f32 values they stand for. */
function q8kValues(q: Int8Array, d: Float32Array): Float32Array {
  return Float32Array.from(q, (v, i) => Math.fround(d[Math.floor(i / 256)] * v));
}

Deno.test({
  name: "quantizeQ8K writes llama.cpp's Q8_K values: int8 times each block's scale",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 3, K = 512;
    const x = randn(rows * K);
    x.fill(0, 256, 512); // a block of zeros
    x[1024 + 7] = 9; // a block whose largest value is positive ...
    x[1024 + 9] = -9; // ... with a tie of the opposite sign after it: the first one sets the sign
    x[1280 + 3] = -5; // and one whose largest is negative
    const made: GPUBuffer[] = [];
    const size = q8kBytes(rows, K);
    const xq = poisoned(gpu, size.values / 4 + 4, "xq");
    const xd = poisoned(gpu, size.scales / 4 + 4, "xd");
    made.push(xq, xd);
    gpu.submit([
      await quantizeQ8K(gpu, {
        x: bindForTest(gpu, x, 1, made),
        xq: { buffer: xq, offset: 0, size: size.values },
        xd: { buffer: xd, offset: 0, size: size.scales },
        rows,
        K,
      }),
    ]);
    const qWords = await gpu.readU32(xq, 0, size.values / 4 + 4);
    const d = await gpu.readF32(xd, 0, size.scales / 4 + 4);
    const q = new Int8Array(qWords.buffer, 0, size.values);
    assert.ok(qWords.subarray(size.values / 4).every((v) => v === POISON), "wrote past xq");
    assert.ok(d.subarray(size.scales / 4).every(Number.isNaN), "wrote past xd");
    assert.equal(d[1], 0, "a block of zeros has d = 0");
    assert.equal(q[1024 + 7], -127, "the first largest value is -127");
    assert.equal(q[1024 + 9], 127, "its opposite tie is 127");
    assert.equal(q[1280 + 3], -127);
    assertClose(
      q8kValues(q, d.subarray(0, size.scales / 4)),
      roundActivationsRef(x, "q8_k"),
      1e-7,
      "Q8_K values",
    );
    for (const b of made) b.destroy();
  },
});

Deno.test({
  name: "matvecQ8K (Q4_K, Q5_K) matches the dequantised weights times the Q8_K values",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    // type, T, K, N, accumulate, layout
    type Case = [Q8KWeightType, number, number, number, boolean, GemvLayout | undefined];
    const cases: Case[] = [
      ["q4_k", 1, 256, 7, false, undefined],
      ["q4_k", 3, 768, 19, true, NARROW_LAYOUT], // 12 units a row over 4 lanes
      ["q4_k", 2, 1024, 33, false, GEMV_LAYOUTS.portable],
      ["q5_k", 1, 512, 5, false, undefined],
      ["q5_k", 2, 768, 11, true, NARROW_LAYOUT],
    ];
    for (const [i, [type, T, K, N, accumulate, layout]] of cases.entries()) {
      const made: GPUBuffer[] = [];
      const q = quantize(randn(N * K, 0.5), type);
      const x = randn(T * K);
      const y0 = randn(T * N);
      const size = q8kBytes(T, K);
      const xq = gpu.storage("activations", size.values);
      const xd = gpu.storage("activations", size.scales);
      const y = poisoned(gpu, T * N + 16);
      if (accumulate) gpu.write(y, y0);
      made.push(xq, xd, y);
      gpu.submit([
        await quantizeQ8K(gpu, { x: bindForTest(gpu, x, i, made), xq, xd, rows: T, K }),
        await matvecQ8K(gpu, {
          xq,
          xd,
          w: bindForTest(gpu, words(q), i + 1, made),
          y: { buffer: y, offset: 0, size: T * N * 4 },
          T,
          K,
          N,
          type,
          accumulate,
          layout,
        }),
      ]);
      assert.equal(q.byteLength, N * weightRowBytes(K, type));
      const got = await gpu.readF32(y, 0, T * N + 16);
      const what = `${type} T=${T} K=${K} N=${N}${accumulate ? " acc" : ""} ${layout?.name ?? ""}`;
      const ref = matmulRef(
        roundActivationsRef(x, "q8_k"),
        dequantize(q, type),
        T,
        K,
        N,
        accumulate ? y0 : undefined,
      );
      assertClose(got.subarray(0, T * N), ref, 1e-5, what);
      assert.ok(got.subarray(T * N).every(Number.isNaN), `${what}: wrote past y`);
      for (const b of made) b.destroy();
    }
  },
});

Deno.test({
  name: "matvecQ8K and quantizeQ8K reject bad arguments by name",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const xq = gpu.storage("activations", 512);
    const xd = gpu.storage("activations", 8);
    const w = gpu.storage("dense", 4 * weightRowBytes(512, "q4_k"));
    const y = gpu.storage("activations", 16);
    const mv = { xq, xd, w, y, K: 512, N: 4, type: "q4_k" as const };
    await rejects(matvecQ8K(gpu, { ...mv, K: 300 }), "K", "256");
    await rejects(matvecQ8K(gpu, { ...mv, type: "q8_0" as "q4_k" }), "type", "q5_k");
    await rejects(matvecQ8K(gpu, { ...mv, N: 5 }), "w", "N=5");
    await rejects(matvecQ8K(gpu, { ...mv, T: 2 }), "xq", "T=2");
    await rejects(matvecQ8K(gpu, { ...mv, y: xq }), "y", "xq");
    const x = gpu.storage("activations", 512 * 4);
    await rejects(quantizeQ8K(gpu, { x, xq, xd, rows: 1, K: 500 }), "K", "256");
    await rejects(quantizeQ8K(gpu, { x, xq, xd: x, rows: 1, K: 512 }), "xd", "x");
    await rejects(quantizeQ8K(gpu, { x, xq, xd, rows: 2, K: 512 }), "x", "rows=2");
    for (const b of [xq, xd, w, y, x]) b.destroy();
  },
});
