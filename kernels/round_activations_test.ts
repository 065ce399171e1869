// Activations rounded as llama.cpp rounds them (round_activations.wgsl) against the CPU reference,
// on random rows with a wide range of magnitudes, zero blocks and ties.
import assert from "node:assert/strict";
import { roundActivationsRef } from "./reference.ts";
import {
  type ActivationFormat,
  llamaCppActivationFormat,
  roundActivations,
} from "./round_activations.ts";
import { GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";

Deno.test({
  name: "roundActivations (q8_0, q8_k, f16, bf16) equals the CPU reference",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    for (const format of ["q8_0", "q8_k", "f16", "bf16"] as ActivationFormat[]) {
      const [rows, K] = [3, 512];
      const x = randn(rows * K, 1);
      for (let i = 0; i < x.length; i++) x[i] *= 2 ** ((i % 17) - 8); // magnitudes 2^-8 .. 2^8
      x.fill(0, 256, 512); // a zero block (q8_0: 8 of them, q8_k: one)
      x[600] = -1e3; // a negative largest value: q8_k's scale is negative
      const out = poisoned(gpu, rows * K + 8);
      gpu.submit([
        await roundActivations(gpu, {
          x: gpu.storage("activations", x),
          out: { buffer: out, offset: 0, size: rows * K * 4 },
          rows,
          K,
          format,
        }),
      ]);
      const got = await gpu.readF32(out, 0, rows * K + 8);
      const ref = roundActivationsRef(x, format);
      let differ = 0;
      for (let i = 0; i < rows * K; i++) if (got[i] !== ref[i]) differ++;
      // The GPU's f32 division may be off by an ulp: a value a rounding boundary away, rarely.
      assert.ok(differ <= 2, `${format}: ${differ} of ${rows * K} values differ`);
      assert.ok(got.subarray(rows * K).every(Number.isNaN), `${format}: wrote past out`);
      assert.ok(got.subarray(256, 512).every((v) => v === 0), `${format}: zero block`);
      if (format === "q8_0" || format === "q8_k") {
        const levels = new Set(got.subarray(0, format === "q8_0" ? 32 : 256)).size;
        assert.ok(levels <= 255 && levels > 8, `${format}: ${levels} levels in the first block`);
      }
    }
  },
});

Deno.test({
  name: "roundActivations: llama.cpp's formats per weight type, and typed errors",
  ...GPU_TEST,
  fn: async () => {
    assert.equal(llamaCppActivationFormat("q8_0"), "q8_0");
    assert.equal(llamaCppActivationFormat("q5_0"), "q8_0");
    assert.equal(llamaCppActivationFormat("q4_0"), "q8_0");
    assert.equal(llamaCppActivationFormat("q6_k"), "q8_k");
    assert.equal(llamaCppActivationFormat("f16"), "f16");
    assert.equal(llamaCppActivationFormat("f32"), null);
    const gpu = await testGpu();
    const b = gpu.storage("activations", 4096), o = gpu.storage("activations", 4096);
    const args = { x: b, out: o, rows: 1, K: 256, format: "q8_k" as ActivationFormat };
    await rejects(roundActivations(gpu, { ...args, K: 96 }), "K", "blocks of 256");
    await rejects(roundActivations(gpu, { ...args, format: "q4_0" as ActivationFormat }), "format");
    await rejects(roundActivations(gpu, { ...args, out: b }), "out");
    await rejects(roundActivations(gpu, { ...args, rows: 8 }), "x");
  },
});
