import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { type DType, packWeights, roundTo } from "../runtime/base/dtype.ts";
import {
  gemvLayout,
  linear,
  LINEAR_MATVEC_MAX_T,
  type LinearArgs,
  matmul,
  MATMUL_TUNING,
  type MatmulTuning,
  matvec,
  type MatvecTuning,
} from "./linear.ts";
import { matmulRef } from "./reference.ts";
import {
  assertClose,
  assertNothingPast,
  bindForTest,
  GPU_TEST,
  poisoned,
  randn,
  relError,
  testGpu,
} from "./test_util.ts";

type Op = "matmul" | "matvec" | "linear";

interface Case {
  op: Op;
  T: number;
  K: number;
  N: number;
  dtype: DType;
  accumulate?: boolean;
  tune?: Partial<MatmulTuning & MatvecTuning>;
}

type Builder = (gpu: Gpu, args: LinearArgs & { tune?: Case["tune"] }) => Promise<Dispatch>;
const BUILDERS: Record<Op, Builder> = { matmul, matvec, linear };

function describe(c: Case): string {
  return `${c.op} ${c.dtype} T=${c.T} K=${c.K} N=${c.N}${c.accumulate ? " acc" : ""}` +
    (c.tune ? ` ${JSON.stringify(c.tune)}` : "");
}

/**
 * Checks `out` against `ref` to normwise relative error `tol` (with {@linkcode assertClose}). Tiny
 * outputs (at most 8 values) can cancel to far below the size of their terms, so for them a failed
 * normwise check is still accepted if every element is within the rounding-error bound
 * `tol * |ref| + unit * scale` (`scale` = sum_k |x||w| + |init|, `unit` the rounding unit of the
 * arithmetic and weight dtype): the kernel is then right and the problem ill-conditioned.
 */
function checkLinear(
  out: Float32Array,
  ref: Float64Array,
  scale: Float64Array,
  tol: number,
  unit: number,
  what: string,
): void {
  const withinBound = ref.length <= 8 &&
    ref.every((r, i) => Math.abs(out[i] - r) <= tol * Math.abs(r) + unit * scale[i]);
  assertClose(out, ref, relError(out, ref) > tol && withinBound ? Infinity : tol, what);
}

/**
 * Runs every case in one submit. Each case's y is a 256-byte-aligned slice of one poisoned output
 * buffer (so bindings with offsets are exercised, and one readback serves all cases); afterwards every
 * word outside the slices must still be poisoned (no out-of-bounds writes).
 */
async function runCases(gpu: Gpu, cases: Case[]): Promise<void> {
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const slots: number[] = [];
  let bytes = 0;
  for (const c of cases) {
    slots.push(bytes);
    bytes += Math.ceil((c.T * c.N * 4 + 64) / align) * align; // >= 64 guard bytes after each
  }
  const yBuf = poisoned(gpu, bytes / 4, "linear_test.y");
  const dispatches: Dispatch[] = [];
  const checks: (() => void)[] = [];
  const made: GPUBuffer[] = [yBuf];
  for (const [i, c] of cases.entries()) {
    const x = randn(c.T * c.K);
    const wf = randn(c.N * c.K, 1 / Math.sqrt(c.K));
    const xBuf = bindForTest(gpu, x, i, made);
    const wBuf = bindForTest(gpu, packWeights(wf, c.dtype), i, made);
    const ySize = c.T * c.N * 4;
    let init: Float32Array | undefined;
    if (c.accumulate) {
      init = randn(c.T * c.N);
      gpu.write(yBuf, init, slots[i]);
    }
    dispatches.push(
      await BUILDERS[c.op](gpu, {
        x: xBuf,
        w: wBuf,
        y: { buffer: yBuf, offset: slots[i], size: ySize },
        T: c.T,
        K: c.K,
        N: c.N,
        dtype: c.dtype,
        accumulate: c.accumulate,
        tune: c.tune,
      }),
    );
    checks.push(() => {
      const out = new Float32Array(all.buffer, slots[i], c.T * c.N);
      const what = describe(c);
      const abs = (a: Float32Array) => a.map(Math.abs);
      // sum_k |x||w| + |init|: the scale of the rounding errors of each output.
      const scale = matmulRef(abs(x), abs(wf), c.T, c.K, c.N, init && abs(init));
      const arith = (c.K + 2) * 2 ** -24; // f32 dot product + accumulate
      if (c.dtype === "f32") {
        checkLinear(out, matmulRef(x, wf, c.T, c.K, c.N, init), scale, 1e-5, arith, what);
      } else {
        const wr = roundTo(wf, c.dtype);
        const ref = matmulRef(x, wr, c.T, c.K, c.N, init);
        checkLinear(out, ref, scale, 1e-5, arith, `${what} (rounded W)`);
        const unit = c.dtype === "f16" ? 2 ** -11 : 2 ** -8;
        const ref32 = matmulRef(x, wf, c.T, c.K, c.N, init);
        checkLinear(out, ref32, scale, 1e-2, arith + 2 * unit, `${what} (f32 W)`);
      }
    });
  }
  gpu.submit(dispatches);
  const all = await gpu.readF32(yBuf);
  for (const check of checks) check();
  const sizes = cases.map((c) => c.T * c.N * 4);
  assertNothingPast(new Uint32Array(all.buffer), slots, sizes, bytes, (i) => describe(cases[i]));
  for (const b of made) gpu.destroyBuffer(b);
}

/** Expands shapes into cases for each dtype (16-bit dtypes only where K is even) and mode. */
function cases(
  op: Op,
  shapes: [number, number, number][],
  tune?: Case["tune"],
  acc = [false, true],
): Case[] {
  const out: Case[] = [];
  for (const [T, K, N] of shapes) {
    for (const dtype of ["f32", "f16", "bf16"] as const) {
      if (dtype !== "f32" && K % 2) continue;
      for (const accumulate of acc) out.push({ op, T, K, N, dtype, accumulate, tune });
    }
  }
  return out;
}

const BM = 4 * MATMUL_TUNING.WGY, BN = 4 * MATMUL_TUNING.WGX, BK = MATMUL_TUNING.BK;

Deno.test({
  name: "matmul matches the CPU reference at tile-aligned and ragged shapes",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    await runCases(
      gpu,
      cases("matmul", [
        [1, 1, 1],
        [3, 17, 5],
        [1, 2, 1],
        [3, 18, 5],
        [BM, BK, BN],
        [17, 64, 65],
        [65, 33, 130],
        [65, 34, 130],
        [130, 3, 17],
        [130, 6, 17],
        [2 * BM + 1, 2 * BK + 2, BN - 1],
        [70, 130, 67],
      ]),
    );
  },
});

Deno.test({
  name: "matmul is correct with other tilings (tune overrides)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const shapes: [number, number, number][] = [[1, 2, 1], [19, 38, 21], [33, 70, 9]];
    await runCases(gpu, [
      ...cases("matmul", shapes, { WGX: 4, WGY: 8, BK: 6 }, [false]),
      ...cases("matmul", shapes, { WGX: 8, WGY: 2, BK: 32 }, [true]),
    ]);
  },
});

Deno.test({
  name: "matvec matches the CPU reference for T = 1 .. 12 and every row alignment",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const shapes: [number, number, number][] = [];
    // Rows of K words start at every residue mod 4 when N >= 4; K spans head/tail-only rows (< 4
    // words), one body vec4, and several strides of TPR vec4s. N = 1 with K < 8 leaves a weight range
    // under 16 bytes (no vec4 view at all).
    const ks = [1, 2, 3, 4, 5, 6, 8, 10, 17, 34, 64, 130, 259, 1030];
    const ns = [1, 3, 17, 65];
    for (const [i, K] of ks.entries()) shapes.push([1 + (i % 3), K, ns[i % ns.length]]);
    for (let T = 1; T <= 12; T += T < 4 ? 1 : 4) shapes.push([T, 2 * T + 8, 3 + 2 * T]);
    shapes.push([1, 258, gemvLayout(gpu, 258, "f32").ROWS * 5], [8, 130, 67]);
    await runCases(gpu, cases("matvec", shapes));
  },
});

Deno.test({
  name: "matvec is correct with other layouts (tune overrides, several rows of x per pass)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const shapes: [number, number, number][] = [[1, 6, 5], [2, 130, 19], [5, 34, 9], [7, 66, 3]];
    await runCases(gpu, [
      ...cases("matvec", shapes, { TPR: 8, ROWS: 4, TB: 2 }, [true]),
      ...cases("matvec", shapes, { TPR: 64, ROWS: 2, TB: 1 }, [false]),
    ]);
  },
});

Deno.test({
  name: "linear picks matvec for small T and matmul otherwise, both correct",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const shapes: [number, number, number][] = [
      [1, 34, 17],
      [LINEAR_MATVEC_MAX_T, 34, 17],
      [LINEAR_MATVEC_MAX_T + 1, 34, 17],
    ];
    await runCases(gpu, cases("linear", shapes));
    for (const [T, kernel] of [[1, "matvec"], [LINEAR_MATVEC_MAX_T + 1, "matmul"]] as const) {
      const x = gpu.storage("activations", randn(T * 4));
      const w = gpu.storage("dense", packWeights(randn(12), "bf16"));
      const y = poisoned(gpu, T * 3);
      const d = await linear(gpu, { x, w, y, T, K: 4, N: 3, dtype: "bf16" });
      if (!new RegExp(`^${kernel}[:|]`).test(d.label)) {
        throw new Error(`linear T=${T}: expected a ${kernel} dispatch, got '${d.label}'`);
      }
      for (const b of [x, w, y]) gpu.destroyBuffer(b);
    }
  },
});

Deno.test({
  name: "matvec covers more than 65535 workgroups through the 2-D grid",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const groups = gpu.limits.maxComputeWorkgroupsPerDimension + 2;
    const K = 8;
    const N = groups * gemvLayout(gpu, K, "f16").ROWS - 3;
    const x = randn(K), wf = randn(N * K);
    const xBuf = gpu.storage("activations", x);
    const wBuf = gpu.storage("dense", packWeights(wf, "f16"));
    const y = poisoned(gpu, N);
    const d = await matvec(gpu, { x: xBuf, w: wBuf, y, K, N, dtype: "f16" });
    if (d.workgroups[1] < 2) throw new Error(`expected a 2-D grid, got ${d.workgroups}`);
    gpu.submit([d]);
    const out = await gpu.readF32(y, 0, N);
    assertClose(out, matmulRef(x, roundTo(wf, "f16"), 1, K, N), 1e-5, `matvec N=${N}`);
    for (const b of [xBuf, wBuf, y]) gpu.destroyBuffer(b);
  },
});

async function expectArgumentError(
  what: string,
  argument: string,
  f: () => Promise<unknown>,
): Promise<void> {
  try {
    await f();
  } catch (e) {
    if (e instanceof ArgumentError && e.argument === argument) return;
    throw new Error(`${what}: expected ArgumentError for '${argument}', got ${e}`);
  }
  throw new Error(`${what}: expected ArgumentError for '${argument}', nothing was thrown`);
}

Deno.test({
  name: "linear builders reject bad arguments with ArgumentError naming the argument",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const T = 2, K = 6, N = 5;
    const x = gpu.storage("activations", randn(T * K));
    const w = gpu.storage("dense", randn(N * K));
    const y = poisoned(gpu, T * N);
    const good: LinearArgs = { x, w, y, T, K, N, dtype: "f32" };
    const bad: [string, string, Partial<LinearArgs> | Record<string, unknown>][] = [
      ["T = 0", "T", { T: 0 }],
      ["K not an integer", "K", { K: 1.5 }],
      ["N negative", "N", { N: -1 }],
      ["N missing", "N", { N: undefined }],
      ["unknown dtype", "dtype", { dtype: "fp8" }],
      ["odd K with bf16", "K", { K: 5, dtype: "bf16" }],
      ["odd K with f16", "K", { K: 3, dtype: "f16" }],
      ["x too small", "x", { T: 3 }],
      ["w too small", "w", { N: 6, y: poisoned(gpu, 64) }],
      ["y too small", "y", { y: poisoned(gpu, T * N - 1) }],
      ["y overlaps x", "y", { y: x, x }],
      ["y overlaps w", "y", { y: { buffer: w, offset: 0, size: T * N * 4 } }],
      ["misaligned offset", "x", { x: { buffer: x, offset: 4 } }],
      ["range past the buffer", "w", { w: { buffer: w, offset: 0, size: w.size + 4 } }],
      ["accumulate not boolean", "accumulate", { accumulate: "yes" }],
      ["x not a buffer", "x", { x: 3 }],
    ];
    for (const op of ["matmul", "matvec", "linear"] as const) {
      for (const [what, argument, change] of bad) {
        await expectArgumentError(
          `${op}: ${what}`,
          argument,
          () => BUILDERS[op](gpu, { ...good, ...change } as LinearArgs),
        );
      }
    }
    const badTune: [string, string, Builder, Record<string, unknown>][] = [
      ["TPR not a power of two", "tune.TPR", matvec, { TPR: 3 }],
      ["TB too large", "tune.TB", matvec, { TB: 9 }],
      ["ROWS zero", "tune.ROWS", matvec, { ROWS: 0 }],
      ["too many threads", "tune", matvec, { TPR: 256, ROWS: 64 }],
      ["odd BK", "tune.BK", matmul, { BK: 7 }],
      ["WGX not an integer", "tune.WGX", matmul, { WGX: 2.5 }],
      ["too many threads", "tune", matmul, { WGX: 256, WGY: 256 }],
      ["too much workgroup memory", "tune", matmul, { WGX: 16, WGY: 16, BK: 256 }],
    ];
    for (const [what, argument, builder, tune] of badTune) {
      await expectArgumentError(what, argument, () => builder(gpu, { ...good, tune }));
    }
    // The good call itself is accepted.
    await matmul(gpu, good);
    await matvec(gpu, good);
  },
});
