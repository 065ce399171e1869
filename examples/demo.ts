/**
 * The demo: opens the GPU it finds, checks a few kernels against their CPU references, and prints
 * what it measured. (Replaced by generation on an embedded model once models run.)
 *
 * Usage: deno task demo [--gpu native|dawn|auto]
 * @module
 */
import { parseArgs } from "node:util";
import { type GpuChoice, openGpu } from "../runtime/gpu/device.ts";
import { matmul, matvec } from "../kernels/linear.ts";
import { matmulRef } from "../kernels/reference_linear.ts";
import { packWeights, roundTo } from "../runtime/weights/dtype.ts";
import { relError } from "../kernels/test_util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { gpu: { type: "string", default: "native" } },
});
const gpu = await openGpu({ gpu: values.gpu as GpuChoice, log: (m) => console.error(m) });
console.log(`GPU: ${gpu.describe()}`);

const small = gpu.isFallback;
const [N, K] = small ? [1024, 1024] : [14336, 4096];
const rand = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
for (const dtype of ["f32", "f16", "bf16"] as const) {
  const w = rand(N * K), x = rand(K);
  const wBuf = gpu.storage("dense", packWeights(w, dtype));
  const xBuf = gpu.storage("activations", x);
  const yBuf = gpu.storage("activations", N * 4);
  const d = await matvec(gpu, { x: xBuf, w: wBuf, y: yBuf, K, N, dtype });
  gpu.submit([d]);
  const y = await gpu.readF32(yBuf, 0, 64);
  const err = relError(y, matmulRef(x, roundTo(w.subarray(0, 64 * K), dtype), 1, K, 64));
  const reps = 20;
  const t0 = performance.now();
  gpu.submit(Array(reps).fill(d));
  await gpu.sync();
  const sec = (performance.now() - t0) / 1e3;
  console.log(
    `GEMV ${dtype.padEnd(4)} ${N}x${K}: rel. error ${err.toExponential(1)}, ` +
      `${(reps * wBuf.size / sec / 1e9).toFixed(1)} GB/s of weights (incl. one sync)`,
  );
  gpu.destroyBuffer(wBuf);
}

const M = small ? 256 : 2048;
const a = rand(M * M), b = rand(M * M);
const aBuf = gpu.storage("activations", a), bBuf = gpu.storage("dense", b);
const cBuf = gpu.storage("activations", M * M * 4);
const mm = await matmul(gpu, { x: aBuf, w: bBuf, y: cBuf, T: M, K: M, N: M, dtype: "f32" });
gpu.submit([mm]);
const c = await gpu.readF32(cBuf, 0, 4 * M);
const t0 = performance.now();
gpu.submit([mm, mm, mm, mm]);
await gpu.sync();
const sec = (performance.now() - t0) / 1e3 / 4;
console.log(
  `matmul f32 ${M}^3: rel. error ${relError(c, matmulRef(a, b, 4, M, M)).toExponential(1)}, ` +
    `${(2 * M ** 3 / sec / 1e9).toFixed(1)} GFLOP/s`,
);
const t1 = performance.now();
await gpu.readF32(cBuf, 0, 1);
console.log(`one readback: ${(performance.now() - t1).toFixed(2)} ms`);
console.log(`peak GPU memory: ${(gpu.memory().peak / 2 ** 20).toFixed(1)} MiB`);
gpu.destroy();
