/**
 * Tests of the subgroup-matrix GEMM (`matmul_sgmatrix.wgsl`, {@linkcode matmulSgmatrix}); the
 * choice of it ({@linkcode matmulVariant}) and its tiling overrides are tested in
 * `linear_variant_test.ts`.
 *
 * - The kernel itself runs only where the device has subgroup matrices (Dawn on the GPU host:
 *   `PREGATE_TEST_GPU=dawn deno test -A kernels/matmul_sgmatrix_test.ts`); elsewhere that test is
 *   ignored and another checks that this device gets the portable kernel and the kernel refuses it.
 * - Everywhere: the kernel's logic (tiling, staging, masking of ragged edges, accumulate) runs with
 *   the subgroup-matrix primitives emulated in plain WGSL (f32, every lane computing whole 16 x 16
 *   tiles), and the real WGSL is compiled by Dawn's shader compiler on Dawn's null backend (when the
 *   npm package `webgpu` loads), so WGSL mistakes show up before a GPU-host run.
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { GpuError } from "../runtime/base/errors.ts";
import { type DType, packWeights, roundTo } from "../runtime/base/dtype.ts";
import {
  matmulSgmatrix,
  matmulSgmatrixWith,
  type MatmulShape,
  matmulVariant,
  type SgmatrixStaging,
  type SgmatrixTuning,
  sgmatrixUnsupported,
} from "./linear.ts";
import { matmulRef } from "./reference.ts";
import {
  assertClose,
  assertNothingPast,
  bindForTest,
  dawnNullGpu,
  GPU_TEST,
  loadDawn,
  poisoned,
  randn,
  relError,
  testGpu,
} from "./test_util.ts";

// ------------------------------------------------------------------------------------ cases

/** Builds the dispatch of one case from its bindings. */
type Build = (c: Case, x: Binding, w: Binding, y: Binding) => Promise<Dispatch>;

interface Case {
  T: number;
  K: number;
  N: number;
  dtype: DType;
  accumulate: boolean;
  tune?: Partial<SgmatrixTuning>;
  /** Activations as f16 (packed) instead of f32. */
  xDtype?: "f16";
}

function describe(c: Case): string {
  return `matmul_sgmatrix ${c.dtype} T=${c.T} K=${c.K} N=${c.N}${c.accumulate ? " acc" : ""}` +
    (c.xDtype ? ` x ${c.xDtype}` : "") +
    (c.tune ? ` ${JSON.stringify(c.tune)}` : "");
}

/** Every dtype and mode for each shape (K must be a multiple of 8). */
function cases(shapes: [number, number, number][], tune?: Partial<SgmatrixTuning>): Case[] {
  const out: Case[] = [];
  for (const [i, [T, K, N]] of shapes.entries()) {
    for (const dtype of ["f16", "bf16", "f32"] as const) {
      // Alternate accumulate across shapes and dtypes so both modes see every dtype.
      out.push({ T, K, N, dtype, accumulate: (i + dtype.length) % 2 === 0, tune });
    }
  }
  return out;
}

/**
 * Normwise check as in linear_test.ts: outputs of at most 8 values can cancel far below the size of
 * their terms, so for them a failed normwise check is accepted when every element is within
 * `tol * |ref| + unit * scale` (`scale` = sum_k |x||w| + |init|).
 */
function check(
  out: Float32Array,
  ref: Float64Array,
  scale: Float64Array,
  tol: number,
  unit: number,
  what: string,
): number {
  const err = relError(out, ref);
  const withinBound = ref.length <= 8 &&
    ref.every((r, i) => Math.abs(out[i] - r) <= tol * Math.abs(r) + unit * scale[i]);
  assertClose(out, ref, err > tol && withinBound ? Infinity : tol, what);
  return err;
}

/**
 * Runs `cases` through `build` in one submit: each case's y is a 256-byte-aligned slice of one
 * poisoned buffer (bindings with offsets; every word between slices must stay poisoned), inputs are
 * bound alternately as whole buffers and as ranges inside NaN-filled buffers. `emulated`: the
 * kernel computes in f32 (no f16 rounding), so it is held to the f32 tolerance of the portable GEMM
 * against the reference on the dtype-rounded weights; otherwise x and W are rounded to f16 and the
 * result is compared with the reference on f16-rounded operands (1e-3) and on the f32 weights (1e-2).
 * Returns the largest errors seen.
 */
async function runCases(
  gpu: Gpu,
  all: Case[],
  build: Build,
  emulated: boolean,
): Promise<{ rounded: number; f32: number }> {
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const slots: number[] = [];
  let bytes = 0;
  for (const c of all) {
    slots.push(bytes);
    bytes += Math.ceil((c.T * c.N * 4 + 64) / align) * align;
  }
  const yBuf = poisoned(gpu, bytes / 4, "sgmatrix_test.y");
  const made: GPUBuffer[] = [yBuf];
  const upload = (data: ArrayBufferView, i: number) => bindForTest(gpu, data, i, made);
  const dispatches: Dispatch[] = [];
  const checks: ((out: Float32Array) => { rounded: number; f32: number })[] = [];
  for (const [i, c] of all.entries()) {
    // f16 activations: the f16-rounded values are the operands (the f32 check stays on x).
    const x0 = randn(c.T * c.K);
    const x = c.xDtype ? roundTo(x0, "f16") : x0;
    const wf = randn(c.N * c.K, 1 / Math.sqrt(c.K));
    let init: Float32Array | undefined;
    if (c.accumulate) {
      init = randn(c.T * c.N);
      gpu.write(yBuf, init, slots[i]);
    }
    const y = { buffer: yBuf, offset: slots[i], size: c.T * c.N * 4 };
    const xData = c.xDtype ? packWeights(x, c.xDtype) : x;
    dispatches.push(await build(c, upload(xData, i), upload(packWeights(wf, c.dtype), i + 1), y));
    checks.push((out) => {
      const what = describe(c) + (emulated ? " (emulated)" : "");
      const abs = (a: Float32Array) => a.map(Math.abs);
      const scale = matmulRef(abs(x), abs(wf), c.T, c.K, c.N, init && abs(init));
      const arith = (c.K + 2) * 2 ** -24;
      const wr = roundTo(wf, c.dtype);
      if (emulated) {
        const e = check(out, matmulRef(x, wr, c.T, c.K, c.N, init), scale, 1e-5, arith, what);
        return { rounded: e, f32: e };
      }
      // What the tensor cores see: x and W rounded to f16 (bf16 and f32 weights through f16 too).
      const x16 = roundTo(x, "f16"), w16 = roundTo(wr, "f16");
      const rounded = check(
        out,
        matmulRef(x16, w16, c.T, c.K, c.N, init),
        scale,
        1e-3,
        arith + 2 ** -11,
        `${what} (f16-rounded operands)`,
      );
      const f32 = check(
        out,
        matmulRef(x0, wf, c.T, c.K, c.N, init),
        scale,
        1e-2,
        arith + 2 * 2 ** -11 + 2 ** -8,
        `${what} (f32 operands)`,
      );
      return { rounded, f32 };
    });
  }
  gpu.submit(dispatches);
  const outAll = await gpu.readF32(yBuf);
  const worst = { rounded: 0, f32: 0 };
  for (const [i, c] of all.entries()) {
    const e = checks[i](new Float32Array(outAll.buffer, slots[i], c.T * c.N));
    worst.rounded = Math.max(worst.rounded, e.rounded);
    worst.f32 = Math.max(worst.f32, e.f32);
  }
  const sizes = all.map((c) => c.T * c.N * 4);
  assertNothingPast(new Uint32Array(outAll.buffer), slots, sizes, bytes, (i) => describe(all[i]));
  for (const b of made) gpu.destroyBuffer(b);
  return worst;
}

// Ragged against every tile size used below (BM, BN in 16 .. 128; BK 16 .. 64), tile-aligned ones,
// K not a multiple of BK, single rows and columns.
const SHAPES: [number, number, number][] = [
  [1, 8, 1],
  [3, 16, 5],
  [17, 40, 33],
  [64, 64, 64],
  [70, 136, 50],
  [33, 200, 130],
];

// ------------------------------------------------------------------------------------ real kernel

const PREFILL: MatmulShape = { T: 512, K: 4096, N: 4096, dtype: "bf16" };

/** Why the test device cannot run the subgroup-matrix kernel (undefined: it can). */
const UNSUPPORTED = sgmatrixUnsupported(await testGpu());

Deno.test({
  name: "without subgroup matrices: the portable GEMM is chosen and matmulSgmatrix refuses",
  ignore: UNSUPPORTED === undefined,
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const why = sgmatrixUnsupported(gpu)!;
    const choice = matmulVariant(gpu, PREFILL);
    if (choice.variant !== "portable" || choice.reason !== why) {
      throw new Error(`expected portable (${why}), got ${JSON.stringify(choice)}`);
    }
    const x = gpu.storage("activations", 16 * 8 * 4);
    const w = gpu.storage("dense", 16 * 8 * 2);
    const y = gpu.storage("activations", 16 * 16 * 4);
    let threw: unknown;
    try {
      await matmulSgmatrix(gpu, { x, w, y, T: 16, K: 8, N: 16, dtype: "f16" });
    } catch (e) {
      threw = e;
    }
    if (!(threw instanceof GpuError) || !String(threw.message).includes(why)) {
      throw new Error(`matmulSgmatrix should refuse this device with a GpuError, got ${threw}`);
    }
    for (const b of [x, w, y]) gpu.destroyBuffer(b);
  },
});

Deno.test({
  name:
    "matmul_sgmatrix matches the CPU reference (f16/bf16/f32 weights, ragged shapes, accumulate)",
  ignore: UNSUPPORTED !== undefined,
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const build: Build = (c, x, w, y) => matmulSgmatrix(gpu, { ...c, x, w, y });
    const all = [
      ...cases([...SHAPES, [300, 520, 260], [129, 1024, 200], [256, 64, 384]]),
      ...cases([[70, 136, 50], [200, 96, 300]], { SGM: 2, SGN: 4, TM: 4, TN: 2, STAGES: 1 }),
      ...cases([[70, 136, 50], [200, 96, 300]], { SGM: 4, SGN: 2, TM: 1, TN: 1, BK: 16 }),
      ...cases([[70, 136, 50], [200, 200, 300]], {
        SGM: 2,
        SGN: 2,
        TM: 2,
        TN: 4,
        BK: 64,
        STAGES: 1,
      }),
      // Workgroup tiles as vec4<f16> arrays.
      ...cases([...SHAPES, [300, 520, 260]], { VEC: 1 }),
      ...cases([[70, 136, 50], [200, 96, 300]], { SGM: 2, SGN: 4, TM: 4, TN: 2, VEC: 1 }),
      // The generated entry (loops written out), both tile layouts.
      ...cases([...SHAPES, [300, 520, 260]], { UNROLLED: 1 }),
      ...cases([[70, 136, 50], [200, 96, 300]], { UNROLLED: 1, VEC: 0, STAGES: 1 }),
      ...cases([[70, 136, 50], [200, 200, 300]], {
        SGM: 2,
        SGN: 2,
        TM: 4,
        TN: 4,
        BK: 32,
        STAGES: 1,
        UNROLLED: 1,
      }),
      // f16 activations, both entries.
      ...cases([...SHAPES, [300, 520, 260]], { UNROLLED: 1 }).map((c) => ({
        ...c,
        xDtype: "f16" as const,
      })),
      ...cases([[70, 136, 50], [200, 96, 300]], { UNROLLED: 0 }).map((c) => ({
        ...c,
        xDtype: "f16" as const,
      })),
    ];
    const worst = await runCases(gpu, all, build, false);
    console.log(
      `matmul_sgmatrix on ${gpu.describe()}: ${all.length} cases, worst normwise error ` +
        `${worst.rounded.toExponential(2)} vs f16-rounded operands, ${
          worst.f32.toExponential(2)
        } ` +
        "vs f32 operands",
    );
  },
});

// ------------------------------------------------------------------------------------ emulation

/**
 * A staging include (see `matmul_sgmatrix.wgsl`) with emulated subgroup matrices, in f32. A left or
 * right matrix is the offset of its first element in `xs` or `ws` (the kernel reads them within the
 * K step that loaded them, while the tile is unchanged); a result matrix is spread over the 32 lanes
 * like on the hardware: lane l holds row l / 2, columns 8 * (l % 2) .. + 7. The tiles are vec4
 * arrays (llvmpipe compiles large scalar workgroup arrays very slowly).
 */
const EMULATED_INCLUDE = `
alias h16 = f32;
alias mat_a = u32;
alias mat_b = u32;
alias mat_c = array<f32, 8>;
const MAX_TM: u32 = 2u;
const MAX_TN: u32 = 2u;
var<private> emu_lane: u32;
var<workgroup> xs: array<vec4<f32>, STAGES * SGM * TM * 4u * (BK + PAD)>;
var<workgroup> ws: array<vec4<f32>, STAGES * SGN * TN * 4u * (BK + PAD)>;
var<workgroup> cs: array<vec4<f32>, SGM * SGN * 64u>;
fn put_x4(o: u32, v: vec4<f32>) {
  xs[o / 4u] = v;
}
fn put_x4h(o: u32, v: vec4<h16>) {
  xs[o / 4u] = v;
}
fn put_w4(o: u32, v: vec4<h16>) {
  ws[o / 4u] = v;
}
fn get_c(i: u32) -> f32 {
  return cs[i / 4u][i % 4u];
}
fn load_a(off: u32) -> mat_a {
  return off; // element (r, c) is at f16 offset off + r * (BK + PAD) + c of xs
}
fn load_b(off: u32) -> mat_b {
  return off; // element (k, n) is at f16 offset off + n * (BK + PAD) + k of ws
}
fn mma(a: mat_a, b: mat_b, c: mat_c) -> mat_c {
  var r = c;
  let i = emu_lane / 2u;
  for (var q = 0u; q < 8u; q++) {
    let j = (emu_lane % 2u) * 8u + q;
    var s = r[q];
    for (var k = 0u; k < 16u; k++) {
      let ai = a + i * (BK + PAD) + k;
      let bi = b + j * (BK + PAD) + k;
      s += xs[ai / 4u][ai % 4u] * ws[bi / 4u][bi % 4u];
    }
    r[q] = s;
  }
  return r;
}
fn store_c(off: u32, c: mat_c) {
  for (var q = 0u; q < 8u; q++) {
    let i = off + (emu_lane / 2u) * 16u + (emu_lane % 2u) * 8u + q;
    cs[i / 4u][i % 4u] = c[q];
  }
}
fn f16x2(word: u32) -> vec2<h16> {
  return unpack2x16float(word);
}
`;

const EMULATED: SgmatrixStaging = {
  name: "emulated",
  join(body: string) {
    // The lanes' share of a result matrix depends on the lane index (in `main` and in the generated
    // `main_unrolled`).
    const lane = "  let lane = lid % SG;\n";
    if (body.split(lane).length < 2) {
      throw new Error(`matmul_sgmatrix.wgsl: expected a line '${lane.trim()}'`);
    }
    // Appended, not prepended like the real includes (which hold enable directives): naga wants
    // the overrides declared before the workgroup arrays sized by them.
    return body.replaceAll(lane, `${lane}  emu_lane = lane;\n`) + EMULATED_INCLUDE;
  },
};

Deno.test({
  name: "matmul_sgmatrix logic (tiling, staging, ragged edges, accumulate) with emulated matrices",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const build: Build = (c, x, w, y) => matmulSgmatrixWith(gpu, { ...c, x, w, y }, EMULATED);
    // llvmpipe compiles each variant from scratch on a fresh machine (no shader cache): 13-20 s at
    // BK 16 but 70-95 s at BK 32 with several tiles per workgroup (measured with
    // MESA_SHADER_CACHE_DISABLE=true), so BK 32 runs with one tile only.
    const some = (
      shapes: [number, number, number][],
      tune: Partial<SgmatrixTuning>,
      modes: [DType, boolean][],
    ) =>
      shapes.flatMap(([T, K, N]) =>
        modes.map(([dtype, accumulate]) => ({ T, K, N, dtype, accumulate, tune }))
      );
    const f16x = (c: Case): Case => ({ ...c, xDtype: "f16" });
    const ragged: [number, number, number][] = [[17, 40, 33], [70, 136, 50], [33, 200, 130]];
    const all = [
      // Several subgroups along T and N, double-buffered.
      ...some(SHAPES, { SGM: 2, SGN: 2, TM: 1, TN: 1, BK: 16, STAGES: 2 }, [
        ["f16", false],
        ["bf16", true],
      ]),
      // Several tiles per subgroup along T and N, one buffer.
      ...some(ragged, { SGM: 1, SGN: 1, TM: 2, TN: 2, BK: 16, STAGES: 1 }, [["f32", true]]),
      // Two 16-steps per K step, in the loop entry and in the generated one.
      ...some(ragged, { SGM: 1, SGN: 1, TM: 1, TN: 1, BK: 32, STAGES: 1 }, [["f32", true]]),
      ...some(ragged, { SGM: 1, SGN: 1, TM: 1, TN: 1, BK: 32, STAGES: 2, UNROLLED: 1 }, [
        ["bf16", false],
      ]),
      // The generated entry (loops written out): several subgroups and tiles, both buffer counts,
      // 16-bit and f32 weights (their load counts differ).
      ...some(ragged, { SGM: 2, SGN: 1, TM: 1, TN: 2, BK: 16, STAGES: 2, UNROLLED: 1 }, [
        ["bf16", false],
        ["f32", true],
      ]),
      ...some(ragged, { SGM: 1, SGN: 2, TM: 2, TN: 1, BK: 16, STAGES: 1, UNROLLED: 1 }, [
        ["f16", true],
      ]),
      // f16 activations, both entries.
      ...some(ragged, { SGM: 2, SGN: 1, TM: 1, TN: 2, BK: 16, STAGES: 2, UNROLLED: 1 }, [
        ["bf16", true],
        ["f32", false],
      ]).map(f16x),
      ...some(ragged, { SGM: 2, SGN: 2, TM: 1, TN: 1, BK: 16, STAGES: 2 }, [["f16", false]])
        .map(f16x),
    ];
    await runCases(gpu, all, build, true);
  },
});

// ------------------------------------------------------------------------------------ Dawn's compiler

/** Dawn (npm `webgpu`), for its WGSL compiler on the null backend; undefined where it does not load. */
const DAWN = await loadDawn();

Deno.test({
  name:
    "matmul_sgmatrix.wgsl compiles with Dawn's compiler (null backend) for every dtype and mode",
  // Where the device has subgroup matrices the kernel case above compiles it for real.
  ignore: DAWN === undefined || UNSUPPORTED === undefined,
  ...GPU_TEST,
  fn: async () => {
    const gpu = await dawnNullGpu(DAWN!, ["enable-dawn-features=allow_unsafe_apis"]);
    try {
      if (!gpu.features.subgroupMatrix || !gpu.features.shaderF16) {
        throw new Error(`Dawn's null backend lacks the features: ${gpu.describe()}`);
      }
      // The null adapter allows 16 KiB of workgroup memory and requires workgroups of a multiple of
      // 128 threads: tilings within both.
      const tunings: Partial<SgmatrixTuning>[] = [
        { SGM: 2, SGN: 2, TM: 1, TN: 1, BK: 32, STAGES: 2, VEC: 0 },
        { SGM: 4, SGN: 1, TM: 1, TN: 4, BK: 16, STAGES: 1, VEC: 0 },
        { SGM: 2, SGN: 2, TM: 1, TN: 1, BK: 32, STAGES: 2, VEC: 1 },
        { SGM: 4, SGN: 1, TM: 1, TN: 4, BK: 16, STAGES: 1, VEC: 1 },
        { SGM: 2, SGN: 2, TM: 1, TN: 1, BK: 32, STAGES: 2, VEC: 1, UNROLLED: 1 },
        { SGM: 4, SGN: 1, TM: 1, TN: 4, BK: 16, STAGES: 1, VEC: 0, UNROLLED: 1 },
      ];
      const [T, K, N] = [40, 64, 24];
      const x = gpu.storage("activations", T * K * 4);
      const w = gpu.storage("dense", N * K * 4);
      const y = gpu.storage("activations", T * N * 4);
      const steps: Dispatch[] = [];
      for (const tune of tunings) {
        for (const dtype of ["f16", "bf16", "f32"] as const) {
          for (const accumulate of [false, true]) {
            const args = { x, w, y, T, K, N, dtype, accumulate, tune };
            steps.push(await matmulSgmatrixWith(gpu, args));
          }
          // f16 activations.
          steps.push(
            await matmulSgmatrixWith(gpu, { x, w, y, T, K, N, dtype, tune, xDtype: "f16" }),
          );
        }
        // The multiplies-alone kernel (the bench's ceiling) compiles too.
        if (tune.UNROLLED) {
          const args = { x, w, y, T, K, N, dtype: "f16" as const, tune, multipliesOnly: true };
          steps.push(await matmulSgmatrixWith(gpu, args));
        }
      }
      gpu.submit(steps);
      await gpu.sync(); // throws any validation error raised since
    } finally {
      gpu.destroy();
    }
  },
});
