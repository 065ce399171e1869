import type { Dispatch } from "../runtime/base/gpu/device.ts";
import { type DType, DTYPES, packWeights, roundTo } from "../runtime/base/dtype.ts";
import { embed } from "./embedding.ts";
import { embedRef } from "./reference.ts";
import { assertClose, GPU_TEST, poisoned, randn, rejects, rng, testGpu } from "./test_util.ts";

Deno.test({
  name: "embed matches the CPU reference for f32, f16 and bf16 tables",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, Float64Array, Float64Array, DType, string][] = [];
    const shapes: [vocab: number, dim: number, T: number][] = [
      [10, 2, 1],
      [50, 100, 7],
      [37, 258, 5],
      [300, 64, 513],
      [11, 7, 3], // odd dim: f32 only
    ];
    const r = rng(Date.now() >>> 0);
    for (const [vocab, dim, T] of shapes) {
      for (const dtype of DTYPES) {
        if (dtype !== "f32" && dim % 2) continue;
        for (const scale of [1, Math.fround(Math.sqrt(dim))]) {
          const table = randn(vocab * dim, 0.05);
          const ids = Uint32Array.from({ length: T }, (_, t) => t === 1 ? vocab - 1 : r() * vocab);
          const out = poisoned(gpu, T * dim);
          runs.push(
            await embed(gpu, {
              table: gpu.storage("dense", packWeights(table, dtype)),
              ids: gpu.storage("activations", ids),
              out,
              T,
              dim,
              dtype,
              scale: scale === 1 ? undefined : scale,
            }),
          );
          const rounded = embedRef(roundTo(table, dtype), ids, dim, scale);
          const exact = embedRef(table, ids, dim, scale);
          checks.push([
            out,
            rounded,
            exact,
            dtype,
            `embed ${dtype} ${vocab}x${dim} T=${T} s=${scale}`,
          ]);
        }
      }
    }
    gpu.submit(runs);
    for (const [buf, rounded, exact, dtype, what] of checks) {
      const got = await gpu.readF32(buf, 0, rounded.length);
      // The lookup itself is exact (tolerance 0 without a scale); only the product with scale rounds.
      assertClose(got, rounded, what.endsWith("s=1") ? 0 : 1e-6, `${what} vs rounded table`);
      if (dtype !== "f32") assertClose(got, exact, 1e-2, `${what} vs f32 table`);
    }
  },
});

Deno.test({
  name: "embed writes NaN rows for out-of-range ids and nothing past the output",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    for (const dtype of DTYPES) {
      const vocab = 5, dim = 6, T = 3;
      const table = randn(vocab * dim);
      const out = poisoned(gpu, T * dim + 16);
      gpu.submit([
        await embed(gpu, {
          table: gpu.storage("dense", packWeights(table, dtype)),
          ids: gpu.storage("activations", new Uint32Array([4, 5, 1 << 31])),
          out,
          T,
          dim,
          dtype,
          vocab,
        }),
      ]);
      const got = await gpu.readF32(out);
      assertClose(got.subarray(0, dim), embedRef(roundTo(table, dtype), [4], dim), 1e-6, dtype);
      if (!got.subarray(dim, 3 * dim).every(Number.isNaN)) throw new Error(`${dtype}: ${got}`);
      const tail = new Uint32Array(got.buffer, 3 * dim * 4);
      if (!tail.every((w) => w === 0x7fbadbad)) throw new Error(`${dtype}: wrote past out`);
    }
  },
});

Deno.test({
  name: "embed rejects bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const table = gpu.storage("dense", 10 * 8 * 2), ids = gpu.storage("activations", 4 * 4);
    const out = gpu.storage("activations", 4 * 4 * 8);
    const ok = { table, ids, out, T: 4, dim: 8, dtype: "bf16" as DType };
    const bad = (a: Record<string, unknown>, arg: string) =>
      rejects(embed(gpu, { ...ok, ...a } as never), arg);
    await bad({ T: 0 }, "T");
    await bad({ dim: 7 }, "dim"); // odd dim with a 16-bit table
    await bad({ dtype: "fp8" }, "dtype");
    await bad({ dtype: "f32", vocab: 10 }, "table"); // 10 f32 rows of 8 do not fit
    await bad({ vocab: 0 }, "vocab");
    await bad({ T: 5 }, "ids");
    await bad({ out: { buffer: out, size: 64 } }, "out");
    await bad({ scale: NaN }, "scale");
    await bad({ out: ids }, "out");
    await bad({ table: { buffer: table, size: 8 } }, "table"); // less than one row
  },
});
