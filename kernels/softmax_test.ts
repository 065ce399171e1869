import type { Dispatch } from "../runtime/base/gpu/device.ts";
import { softmax } from "./softmax.ts";
import { softmaxRef } from "./reference.ts";
import { assertClose, GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";

Deno.test({
  name: "softmax matches the CPU reference (separate out and in place)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, Float64Array, string][] = [];
    const shapes: [number, number][] = [[1, 1], [3, 7], [8, 60], [2, 100], [3, 1000], [1, 2049]];
    for (const [rows, cols] of shapes) {
      // Scale 4: logits spread over ~e^25, so the max subtraction and the sum both matter.
      const x = randn(rows * cols, 4);
      const ref = softmaxRef(x, rows, cols);
      const out = poisoned(gpu, rows * cols);
      runs.push(await softmax(gpu, { x: gpu.storage("activations", x), out, rows, cols }));
      checks.push([out, ref, `softmax ${rows}x${cols}`]);
      const io = gpu.storage("activations", x);
      runs.push(await softmax(gpu, { x: io, out: io, rows, cols }));
      checks.push([io, ref, `softmax in place ${rows}x${cols}`]);
    }
    // Large logits (would overflow exp without the max subtraction) and masked (-Infinity) entries.
    const x = randn(2 * 50, 3).map((v, i) => (i < 50 ? v + 1000 : i % 3 ? v : -Infinity));
    const out = poisoned(gpu, 100);
    runs.push(await softmax(gpu, { x: gpu.storage("activations", x), out, rows: 2, cols: 50 }));
    checks.push([out, softmaxRef(x, 2, 50), "softmax large and masked logits"]);
    gpu.submit(runs);
    for (const [buf, ref, what] of checks) {
      assertClose(await gpu.readF32(buf, 0, ref.length), ref, 1e-5, what);
    }
  },
});

Deno.test({
  name: "softmax rejects bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const x = gpu.storage("activations", 4 * 64), out = gpu.storage("activations", 4 * 64);
    const ok = { x, out, rows: 4, cols: 16 };
    const bad = (a: Record<string, unknown>, arg: string) =>
      rejects(softmax(gpu, { ...ok, ...a } as never), arg);
    await bad({ rows: 0 }, "rows");
    await bad({ cols: -3 }, "cols");
    await bad({ cols: "16" }, "cols");
    await bad({ cols: 17 }, "x");
    await bad({ out: gpu.storage("activations", 4 * 8) }, "out");
    await bad({ x: undefined }, "x");
    const big = gpu.storage("activations", 4 * 1024);
    await bad({ x: big, out: { buffer: big, offset: 256 } }, "out");
  },
});
