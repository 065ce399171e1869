import type { Dispatch } from "../runtime/base/gpu/device.ts";
import { layernorm, rmsnorm } from "./norm.ts";
import { layernormRef, rmsnormRef } from "./reference.ts";
import { assertClose, GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";

// dims around the workgroup sizes the builder picks (32 .. 256 threads) and non-multiples of them.
const SHAPES: [rows: number, dim: number][] = [
  [1, 1],
  [3, 7],
  [5, 100],
  [2, 1000],
  [2, 2049],
  [1, 4096],
  [2, 5001],
];

Deno.test({
  name: "rmsnorm matches the CPU reference (separate out, in place, offset)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, Float64Array, string][] = [];
    for (const [rows, dim] of SHAPES) {
      for (const [offset, eps] of [[0, 1e-5], [1, 1e-6]]) {
        const x = randn(rows * dim, 2), w = randn(dim);
        const ref = rmsnormRef(x, w, rows, dim, eps, offset);
        const xb = gpu.storage("activations", x), wb = gpu.storage("dense", w);
        const out = poisoned(gpu, rows * dim);
        runs.push(await rmsnorm(gpu, { x: xb, weight: wb, out, rows, dim, eps, offset }));
        checks.push([out, ref, `rmsnorm ${rows}x${dim} offset=${offset}`]);
        // The widest workgroup (a GPU's choice for long rows): most lanes of the 4-load steps idle.
        const wide = poisoned(gpu, rows * dim);
        runs.push(
          await rmsnorm(gpu, {
            x: xb,
            weight: wb,
            out: wide,
            rows,
            dim,
            eps,
            offset,
            threads: 1024,
          }),
        );
        checks.push([wide, ref, `rmsnorm ${rows}x${dim} offset=${offset} 1024 threads`]);
        // In place on a fresh copy of x.
        const io = gpu.storage("activations", x);
        runs.push(await rmsnorm(gpu, { x: io, weight: wb, out: io, rows, dim, eps, offset }));
        checks.push([io, ref, `rmsnorm in place ${rows}x${dim} offset=${offset}`]);
      }
    }
    gpu.submit(runs);
    for (const [buf, ref, what] of checks) {
      assertClose(await gpu.readF32(buf, 0, ref.length), ref, 1e-5, what);
    }
  },
});

Deno.test({
  name: "layernorm matches the CPU reference (bias or not, separate out or in place)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, Float64Array, string][] = [];
    for (const [rows, dim] of SHAPES) {
      for (const withBias of [false, true]) {
        // A non-zero mean exercises the mean subtraction (dim 1: the output is the bias alone).
        const x = randn(rows * dim).map((v) => v + 3), w = randn(dim), b = randn(dim);
        const eps = 1e-5;
        const bias = withBias ? b : undefined;
        const ref = layernormRef(x, w, bias, rows, dim, eps);
        const xb = gpu.storage("activations", x), wb = gpu.storage("dense", w);
        const bb = withBias ? gpu.storage("dense", b) : undefined;
        const out = poisoned(gpu, rows * dim);
        runs.push(await layernorm(gpu, { x: xb, weight: wb, bias: bb, out, rows, dim, eps }));
        const what = `layernorm ${rows}x${dim} bias=${withBias}`;
        checks.push([out, ref, what]);
        const io = gpu.storage("activations", x);
        runs.push(await layernorm(gpu, { x: io, weight: wb, bias: bb, out: io, rows, dim, eps }));
        checks.push([io, ref, `${what} in place`]);
      }
    }
    gpu.submit(runs);
    for (const [buf, ref, what] of checks) {
      // dim 1 without a bias is exactly 0 everywhere: compare absolutely.
      const got = await gpu.readF32(buf, 0, ref.length);
      if (ref.every((v) => v === 0)) {
        assertClose(got.map((v) => v + 1), ref.map((v) => v + 1), 1e-6, what);
      } else assertClose(got, ref, 1e-5, what);
    }
  },
});

Deno.test({
  name: "norm builders reject bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const x = gpu.storage("activations", 4 * 64), w = gpu.storage("dense", 4 * 16);
    const out = gpu.storage("activations", 4 * 64);
    const ok = { x, weight: w, out, rows: 4, dim: 16, eps: 1e-5 };
    const bad = (args: Record<string, unknown>, argument: string) =>
      rejects(() => rmsnorm(gpu, { ...ok, ...args } as never), argument);
    await bad({ rows: 0 }, "rows");
    await bad({ dim: 2.5 }, "dim");
    await bad({ eps: -1 }, "eps");
    await bad({ eps: NaN }, "eps");
    await bad({ offset: Infinity }, "offset");
    await bad({ rows: 5 }, "x"); // x holds 4 rows only
    await bad({ weight: gpu.storage("dense", 4 * 8) }, "weight");
    await bad({ out: { buffer: x, offset: 0, size: 4 * 8 } }, "out");
    await bad({ out: w }, "out"); // out aliases the weight
    const big = gpu.storage("activations", 4 * 1024);
    await bad({ x: big, out: { buffer: big, offset: 256 } }, "out"); // partial overlap
    await bad({ x: { buffer: big, offset: 4 } }, "x"); // misaligned offset
    await bad({ threads: 100 }, "threads"); // not a power of two
    await bad({ threads: 1 << 20 }, "threads"); // over the device's limit
    await rejects(() => layernorm(gpu, { ...ok, bias: gpu.storage("dense", 8) }), "bias");
    await rejects(() => layernorm(gpu, { ...ok, eps: -1 }), "eps");
  },
});
