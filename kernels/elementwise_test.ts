import type { Dispatch } from "../runtime/base/gpu/device.ts";
import { add, addBias, addInPlace, scale } from "./elementwise.ts";
import { addBiasRef, addRef, scaleRef } from "./reference.ts";
import { assertClose, GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";

Deno.test({
  name: "add matches the CPU reference at several sizes",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    for (const n of [1, 255, 256, 1000, 70_001]) {
      const a = randn(n), b = randn(n);
      const out = poisoned(gpu, n);
      gpu.submit([
        await add(gpu, {
          a: gpu.storage("activations", a),
          b: gpu.storage("activations", b),
          out,
          n,
        }),
      ]);
      assertClose(await gpu.readF32(out, 0, n), addRef(a, b), 1e-6, `add n=${n}`);
    }
  },
});

Deno.test({
  name: "addInPlace and scale match the CPU reference at several sizes",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, Float64Array, string][] = [];
    for (const n of [1, 255, 256, 1000, 70_001]) {
      const x = randn(n), y = randn(n), s = Math.fround(randn(1)[0] * 3);
      const xb = gpu.storage("activations", x);
      runs.push(await addInPlace(gpu, { x: xb, y: gpu.storage("activations", y), n }));
      checks.push([xb, addRef(x, y), `addInPlace n=${n}`]);
      const sb = gpu.storage("activations", x);
      runs.push(await scale(gpu, { x: sb, n, s }));
      checks.push([sb, scaleRef(x, s), `scale n=${n}`]);
    }
    // Only the first n values change: the rest of a larger buffer is left alone.
    const x = randn(300), y = randn(300);
    const xb = gpu.storage("activations", x);
    runs.push(await addInPlace(gpu, { x: xb, y: gpu.storage("activations", y), n: 100 }));
    runs.push(await scale(gpu, { x: xb, n: 50, s: 2 }));
    const ref = Float64Array.from(x, (v, i) => i < 100 ? Math.fround(v + y[i]) : v);
    for (let i = 0; i < 50; i++) ref[i] *= 2;
    checks.push([xb, ref, "addInPlace n=100 then scale n=50 of 300"]);
    gpu.submit(runs);
    for (const [buf, r, what] of checks) {
      assertClose(await gpu.readF32(buf, 0, r.length), r, 1e-6, what);
    }
  },
});

Deno.test({
  name: "addInPlace and scale reject bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const x = gpu.storage("activations", 4 * 64), y = gpu.storage("activations", 4 * 64);
    const big = gpu.storage("activations", 4096);
    await rejects(addInPlace(gpu, { x, y, n: 0 }), "n");
    await rejects(addInPlace(gpu, { x, y, n: 65 }), "x");
    await rejects(addInPlace(gpu, { x, y: { buffer: y, size: 16 }, n: 64 }), "y");
    await rejects(addInPlace(gpu, { x, y: x, n: 64 }), "y");
    await rejects(addInPlace(gpu, { x: big, y: { buffer: big, offset: 256 }, n: 512 }), "y");
    await rejects(scale(gpu, { x, n: 64, s: Infinity }), "s");
    await rejects(scale(gpu, { x, n: 1.5, s: 1 }), "n");
    await rejects(scale(gpu, { x: undefined as never, n: 1, s: 1 }), "x");
  },
});

Deno.test({
  name: "addBias matches the CPU reference at several shapes",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, number, Float64Array, string][] = [];
    for (const [rows, n] of [[1, 1], [1, 300], [3, 255], [7, 257], [2, 1000], [65, 301]]) {
      const x = randn(rows * n), bias = randn(n);
      const xb = gpu.storage("activations", x);
      runs.push(await addBias(gpu, { x: xb, bias: gpu.storage("activations", bias), rows, n }));
      checks.push([xb, 0, addBiasRef(x, bias, rows, n), `addBias rows=${rows} n=${n}`]);
    }
    // Bindings as ranges: x rows 2..4 of a larger buffer, bias at an aligned offset; the rest of
    // the buffers is left alone.
    const align = gpu.limits.minStorageBufferOffsetAlignment;
    const rows = 3, n = 97, pad = align / 4;
    const x = randn(pad + rows * n + 50), bias = randn(pad + n);
    const xb = gpu.storage("activations", x);
    runs.push(
      await addBias(gpu, {
        x: { buffer: xb, offset: align, size: rows * n * 4 },
        bias: { buffer: gpu.storage("activations", bias), offset: align },
        rows,
        n,
      }),
    );
    const inner = addBiasRef(x.subarray(pad, pad + rows * n), bias.subarray(pad), rows, n);
    const ref = Float64Array.from(x);
    ref.set(inner, pad);
    checks.push([xb, 0, ref, "addBias on binding ranges"]);
    gpu.submit(runs);
    for (const [buf, off, r, what] of checks) {
      assertClose(await gpu.readF32(buf, off, r.length), r, 1e-6, what);
    }
  },
});

Deno.test({
  name: "addBias rejects bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const x = gpu.storage("activations", 4 * 64), bias = gpu.storage("activations", 4 * 16);
    await rejects(addBias(gpu, { x, bias, rows: 0, n: 16 }), "rows");
    await rejects(addBias(gpu, { x, bias, rows: 4, n: 0 }), "n");
    await rejects(addBias(gpu, { x, bias, rows: 1.5, n: 16 }), "rows");
    await rejects(addBias(gpu, { x, bias, rows: 5, n: 16 }), "x");
    await rejects(addBias(gpu, { x, bias, rows: 2, n: 17 }), "bias");
    await rejects(addBias(gpu, { x, bias: { buffer: x, size: 64 }, rows: 4, n: 16 }), "bias");
    await rejects(addBias(gpu, { x, bias: undefined as never, rows: 4, n: 16 }), "bias");
    await rejects(addBias(gpu, undefined as never), "args");
  },
});
