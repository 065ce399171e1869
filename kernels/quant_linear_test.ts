// Block-quantised weights (Q8_0, Q5_0, Q4_0, Q4_K, Q5_K, Q6_K) through `linear` (decode GEMV for T <= 8, the
// prefill GEMM decoding blocks while it stages them beyond) and `embed`, against a CPU
// dequantise-then-multiply (or dequantise-then-copy) reference on ragged shapes: odd block counts
// per row put Q8_0, Q5_0, Q4_0 and Q6_K rows at 2 mod 4 bytes, N and T off the tile sizes, outputs poisoned
// first.
import assert from "node:assert/strict";
import { dequantize, QUANT_TYPES, quantize, type QuantType } from "../runtime/weights/quant.ts";
import { EMBED, embed } from "./embedding.ts";
import { linear, MATMUL, matmul } from "./linear.ts";
import { WEIGHT_CODE } from "./quant_gemv.ts";
import { matmulRef } from "./reference.ts";
import {
  assertClose,
  dawnNullGpu,
  GPU_TEST,
  loadDawn,
  poisoned,
  randn,
  rejects,
  testGpu,
  words,
} from "./test_util.ts";

const dawn = await loadDawn();

Deno.test({
  name: "linear over quantised weights matches dequantise-then-multiply, decode and prefill",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const cases: [QuantType, number, number, number, boolean][] = [
      ["q8_0", 3, 96, 37, false], // decode: matvecQuant
      ["q8_0", 9, 96, 37, true], // prefill: 3 blocks a row, odd rows at 2 mod 4
      ["q8_0", 70, 160, 65, false], // several tiles along T and N
      ["q4_k", 2, 256, 9, true],
      ["q4_k", 21, 512, 67, false],
      ["q5_0", 2, 96, 7, false],
      ["q5_0", 13, 160, 9, true], // prefill: 5 blocks a row, odd rows at 2 mod 4
      ["q4_0", 2, 96, 7, true],
      ["q4_0", 11, 224, 13, false], // prefill: 7 blocks a row, odd rows at 2 mod 4
      ["q5_k", 2, 256, 5, false],
      ["q5_k", 19, 768, 37, true],
      ["q6_k", 3, 768, 7, true], // decode: 3 super-blocks a row
      ["q6_k", 17, 256, 37, false], // prefill: 210-byte rows, odd ones at 2 mod 4
    ];
    for (const [type, T, K, N, accumulate] of cases) {
      const q = quantize(randn(N * K, 0.5), type);
      const W = dequantize(q, type);
      const x = randn(T * K);
      const y0 = randn(T * N);
      const y = poisoned(gpu, T * N + 8);
      if (accumulate) gpu.write(y, y0);
      const w = gpu.storage("dense", words(q));
      gpu.submit([
        await linear(gpu, {
          x: gpu.storage("activations", x),
          w,
          y: { buffer: y, offset: 0, size: T * N * 4 },
          T,
          K,
          N,
          dtype: type,
          accumulate,
        }),
      ]);
      const got = await gpu.readF32(y, 0, T * N + 8);
      const what = `${type} T=${T} K=${K} N=${N}${accumulate ? " acc" : ""}`;
      assertClose(
        got.subarray(0, T * N),
        matmulRef(x, W, T, K, N, accumulate ? y0 : undefined),
        1e-5,
        what,
      );
      assert.ok(got.subarray(T * N).every(Number.isNaN), `${what}: wrote past y`);
    }
  },
});

Deno.test({
  name: "embed over a quantised table copies the dequantised rows; an id past vocab gives NaN",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const tables = [
      ["q8_0", 96, 7],
      ["q5_0", 32, 5],
      ["q4_0", 96, 5], // 54-byte rows: odd rows at 2 mod 4
      ["q4_k", 256, 5],
      ["q5_k", 512, 3],
      ["q6_k", 256, 5],
    ] as const;
    for (const [type, dim, vocab] of tables) {
      const q = quantize(randn(vocab * dim), type);
      const table = dequantize(q, type);
      const ids = new Uint32Array([vocab - 1, 0, 3, vocab + 2, 1]);
      const T = ids.length;
      const out = poisoned(gpu, T * dim + 4);
      gpu.submit([
        await embed(gpu, {
          table: gpu.storage("dense", words(q)),
          ids: gpu.storage("activations", ids),
          out,
          T,
          dim,
          dtype: type,
          vocab,
          scale: 2,
        }),
      ]);
      const got = await gpu.readF32(out, 0, T * dim + 4);
      for (let t = 0; t < T; t++) {
        const row = got.subarray(t * dim, (t + 1) * dim);
        if (ids[t] >= vocab) {
          assert.ok(row.every(Number.isNaN), `${type}: id ${ids[t]} past vocab gives NaN`);
          continue;
        }
        const ref = table.subarray(ids[t] * dim, (ids[t] + 1) * dim).map((v) => 2 * v);
        assert.deepEqual(Array.from(row), Array.from(ref), `${type}: row of id ${ids[t]}`);
      }
      assert.ok(got.subarray(T * dim).every(Number.isNaN), `${type}: wrote past out`);
    }
  },
});

Deno.test({
  name: "quantised linear builders reject bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const b = gpu.storage("activations", 1 << 16), o = gpu.storage("activations", 1 << 16);
    const a = { x: b, w: b, y: o, T: 16, K: 256, N: 4, dtype: "q4_k" as const };
    await rejects(linear(gpu, { ...a, K: 128 }), "K", "whole 256-value blocks");
    await rejects(linear(gpu, { ...a, N: 1000 }), "w", "q4_k [N=1000, K=256]");
    await rejects(matmul(gpu, { ...a, tune: { BK: 6 } }), "tune.BK", "multiple of 4");
    await rejects(
      embed(gpu, { table: b, ids: b, out: o, T: 1, dim: 48, dtype: "q8_0" }),
      "dim",
      "32-value",
    );
  },
});

Deno.test({
  name: "Dawn's null backend (Tint) compiles matmul and embed with quantised weights",
  ignore: dawn === undefined,
  ...GPU_TEST,
  fn: async () => {
    const gpu = await dawnNullGpu(dawn!);
    try {
      for (const spec of [MATMUL, EMBED]) {
        for (const t of QUANT_TYPES) {
          await gpu.pipeline(spec, { ...spec.constants, WDTYPE: WEIGHT_CODE[t] });
        }
      }
    } finally {
      gpu.destroy();
    }
  },
});
