/**
 * Linear-layer kernels: `y[T, N] = x[T, K] · W[N, K]^T`, optionally accumulated into `y`.
 *
 * - {@linkcode matmul} (`matmul.wgsl`): tiled GEMM for prefill (many rows of `x`), f32 arithmetic,
 *   portable (no optional feature).
 * - {@linkcode matmulSgmatrix} (`matmul_sgmatrix.wgsl`): the same GEMM on subgroup matrices (tensor
 *   cores), f16 operands and f32 sums; needs `shader-f16` and `chromium-experimental-subgroup-matrix`.
 * - {@linkcode matvec} (`matvec.wgsl`): GEMV for decode (a few rows of `x`), bandwidth-bound, 16-byte
 *   loads of the weights, in the layout {@linkcode gemvLayout} picks (the one place that decides
 *   between the portable and the subgroup decode GEMVs, here and in `moe.ts` and `qkv.ts`).
 * - {@linkcode linear}: picks one of them from `T` and, for prefill, {@linkcode matmulVariant} (the one
 *   place that decides between the portable and the subgroup-matrix GEMM).
 *
 * `x` and `y` are f32 and row-major. `W` is the weight matrix in its file layout (`[N, K]`, one row
 * per output) packed in u32 words of `dtype` (see `runtime/weights/dtype.ts`); 16-bit dtypes need an
 * even `K`. Builders validate their arguments and throw {@linkcode ArgumentError} naming the bad one.
 *
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { packWeights } from "../runtime/weights/dtype.ts";
 * import { linear } from "./linear.ts";
 * const gpu = await openGpu();
 * // W = [[1, 2], [3, 4], [5, 6]] (N = 3 outputs, K = 2 inputs), one token x = [1, 1].
 * const w = gpu.storage("dense", packWeights([1, 2, 3, 4, 5, 6], "bf16"));
 * const x = gpu.storage("activations", new Float32Array([1, 1]));
 * const y = gpu.storage("activations", 3 * 4);
 * gpu.submit([await linear(gpu, { x, w, y, T: 1, K: 2, N: 3, dtype: "bf16" })]);
 * console.log(await gpu.readF32(y)); // Float32Array [3, 7, 11]
 * ```
 * @module
 */
import { readEnv } from "../runtime/env.ts";
import type { Binding, Dispatch, Gpu, PipelineSource } from "../runtime/gpu/device.ts";
import { ArgumentError, GpuError } from "../runtime/errors.ts";
import { type DType, DTYPE_CODE } from "../runtime/weights/dtype.ts";
import { defineKernel, type KernelSpec, ParamWriter, wgslFile } from "./registry.ts";
import { unrolledEntry, unrollKey } from "./sgmatrix_unroll.ts";
import {
  checkGemvLayout,
  chooseGemvLayout,
  gemvConstants,
  gemvDevice,
  type GemvLayout,
  gemvLayoutName,
  gemvSource,
} from "./gemv.ts";
import {
  argBinding,
  argBoolean,
  argCount,
  argDistinct,
  argDType,
  argEvenRow,
  argObject,
  argOneOf,
  type BindingRange,
  placeholder,
  vec4View,
} from "./args.ts";

// ------------------------------------------------------------------------------------ tuning knobs

/**
 * Tiling of {@linkcode matmul} (`matmul.wgsl` overrides): a workgroup of `WGX x WGY` threads computes
 * a `4*WGY x 4*WGX` block of `y` (4 x 4 outputs per thread), walking K in steps of `BK` (even).
 */
export interface MatmulTuning {
  /** Threads along N. */
  WGX: number;
  /** Threads along T. */
  WGY: number;
  /** K step staged in workgroup memory (even). */
  BK: number;
}

/** The default {@linkcode MatmulTuning}: 64 x 64 outputs per workgroup of 256, K step 16 (8 KiB). */
export const MATMUL_TUNING: Readonly<MatmulTuning> = Object.freeze({ WGX: 16, WGY: 16, BK: 16 });

/**
 * Layout of {@linkcode matvec} (`matvec.wgsl` overrides): `TPR` threads per weight row (a power of
 * two), `ROWS` weight rows per workgroup, `UNROLL` 16-byte weight loads in flight per thread (1 or
 * 2), `TB` rows of `x` per pass over the weights (1 .. 8). The first three (and the reduction) come
 * from {@linkcode gemvLayout} unless overridden.
 */
export interface MatvecTuning {
  /** Threads per weight row (a power of two). */
  TPR: number;
  /** Weight rows per workgroup. */
  ROWS: number;
  /** 16-byte weight loads in flight per thread, 1 or 2. */
  UNROLL: number;
  /** Rows of `x` per pass over the weights, 1 .. 8. */
  TB: number;
}

/**
 * {@linkcode MatvecTuning} of the portable layout for rows under 16 KiB (`t32r4u2-tree`: 32 threads
 * per row, 4 rows per workgroup, 2 loads in flight, 1 token per pass). {@linkcode matvec} takes its
 * layout from {@linkcode gemvLayout} (this one on devices without subgroups, for such rows) and `TB`
 * from here.
 */
export const MATVEC_TUNING: Readonly<MatvecTuning> = Object.freeze({
  TPR: 32,
  ROWS: 4,
  UNROLL: 2,
  TB: 1,
});

/** `MAX_TB` of `matvec.wgsl`. */
const MATVEC_MAX_TB = 8;

/** {@linkcode linear} uses {@linkcode matvec} for `T <= LINEAR_MATVEC_MAX_T`, else {@linkcode matmul}. */
export const LINEAR_MATVEC_MAX_T = 8;

/**
 * Tiling of {@linkcode matmulSgmatrix} (`matmul_sgmatrix.wgsl` overrides): a workgroup of
 * `SGM x SGN` subgroups of 32 threads computes a `16*SGM*TM x 16*SGN*TN` block of `y`, each subgroup
 * `TM x TN` result tiles of 16 x 16, walking K in steps of `BK` staged in `STAGES` workgroup buffers.
 */
export interface SgmatrixTuning {
  /** Subgroups along T (rows of x), 1 .. 8. */
  SGM: number;
  /** Subgroups along N (outputs), 1 .. 8. */
  SGN: number;
  /** 16 x 16 result tiles per subgroup along T, 1 .. 4. */
  TM: number;
  /** 16 x 16 result tiles per subgroup along N, 1 .. 4. */
  TN: number;
  /** K step staged in workgroup memory: a multiple of 16, 16 .. 128. */
  BK: number;
  /** Workgroup tile buffers: 2 (double-buffered, one barrier per K step) or 1 (two barriers). */
  STAGES: number;
  /**
   * Workgroup tile layout: 0 = `array<f16>` (one f16 per store, `matmul_sgmatrix_scalar.wgsl`),
   * 1 = `array<vec4<f16>>` (four per store, `matmul_sgmatrix_vec4.wgsl`).
   */
  VEC: number;
  /**
   * 1: the generated entry point with the tiling's loops written out (`kernels/sgmatrix_unroll.ts`,
   * no arrays of matrices or loads indexed in loops); 0: the file's `main` (loops).
   */
  UNROLLED: number;
}

/**
 * The default {@linkcode SgmatrixTuning}: 128 x 128 outputs per workgroup of 8 subgroups (2 along T,
 * 4 along N, each 64 x 32: 8 f32 result tiles), K step 64 in one `vec4<f16>` buffer (44 KiB of
 * workgroup memory; K step 32, then 16, where the device allows less), the generated entry point
 * with the loops written out. The fastest of `tools/probe_sgmatrix.ts`'s candidates on the H200
 * under Dawn at 4096^3, each after 2 s of warm-up at 1980 MHz (2026-11-29): 147.4 TFLOP/s with f16
 * weights, 143.5 with bf16 (f16 activations: 162.0 / 158.7); two buffers at K step 32 104.7 -
 * 106.9 (147 in an earlier build); the same tilings with loops instead of the generated entry
 * 30-33 (the driver kept the arrays of matrices out of registers).
 */
export const SGMATRIX_TUNING: Readonly<SgmatrixTuning> = Object.freeze({
  SGM: 2,
  SGN: 4,
  TM: 4,
  TN: 2,
  BK: 64,
  STAGES: 1,
  VEC: 1,
  UNROLLED: 1,
});

/** Smaller K steps tried, in order, where the default's workgroup memory is over the device's. */
const SGMATRIX_SMALLER_BK = [32, 16];

/**
 * {@linkcode linear} considers {@linkcode matmulSgmatrix} only from this many rows of `x` (prefill);
 * below it the portable {@linkcode matmul} (or {@linkcode matvec}, decode) runs. One workgroup covers
 * 128 rows at the default tiling, so fewer rows waste most of it.
 */
export const SGMATRIX_MIN_T = 64;

/** `MAX_TM`, `MAX_TN`, `MAX_XV` and `MAX_WV` of `matmul_sgmatrix.wgsl`. */
const SGMATRIX_MAX_TILE = 4, SGMATRIX_MAX_LOADS = 16;

// ------------------------------------------------------------------------------------ kernel specs

/** Tiled GEMM `y[T, N] (+)= x[T, K] · W[N, K]^T` (`matmul.wgsl`). */
export const MATMUL: KernelSpec = defineKernel({
  name: "matmul",
  file: "matmul.wgsl",
  includes: ["dtype.wgsl"],
  bindings: ["params", "x", "w", "y"],
  constants: { ...MATMUL_TUNING, WDTYPE: 0, ACC: 0 },
});

/**
 * GEMV `y[t, n] (+)= W[n, :] · x[t, :]` for `t < T` (`matvec.wgsl`). The weights are bound twice: as
 * `array<vec4<u32>>` (`wv`, the aligned body of each row) and as `array<u32>` (`wu`, row edges).
 * The row reduction comes before it in the source (`gemvSource`: `gemv_tree.wgsl` or
 * `gemv_subgroup.wgsl`).
 */
export const MATVEC: KernelSpec = defineKernel({
  name: "matvec",
  file: "matvec.wgsl",
  includes: ["gemv_tree.wgsl", "dtype.wgsl", "quant.wgsl"],
  bindings: ["params", "x", "wv", "wu", "y", "xv"],
  constants: { TPR: 32, WG: 128, UNROLL: 2, TB: 1, WDTYPE: 0, ACC: 0 },
});

// ------------------------------------------------------------------------------------ arguments

/** Arguments of {@linkcode matmul}, {@linkcode matvec} and {@linkcode linear}. */
export interface LinearArgs {
  /** Input activations, f32 `[T, K]` row-major. */
  x: Binding;
  /** Weights `[N, K]` (row n = the K inputs of output n), packed u32 words of `dtype`. */
  w: Binding;
  /** Output f32 `[T, N]` row-major; must not share a buffer with `x` or `w`. */
  y: Binding;
  /** Rows of `x` (tokens), >= 1. Optional for {@linkcode matvec} (default 1). */
  T: number;
  /** Inputs per row, >= 1 (even for 16-bit dtypes). */
  K: number;
  /** Outputs per row, >= 1. */
  N: number;
  /** The weights' dtype. */
  dtype: DType;
  /** Add the product to the existing contents of `y` instead of overwriting them. Default false. */
  accumulate?: boolean;
  /**
   * Which GEMM {@linkcode linear} may pick for prefill (see {@linkcode matmulVariant}): `auto`
   * (default) or `portable` (never the subgroup-matrix kernel, e.g. to A/B it); for decode
   * ({@linkcode matvec}, also through `linear`) `portable` keeps to the portable GEMV layouts (see
   * {@linkcode gemvLayout}). Ignored by {@linkcode matmul}.
   */
  kernels?: KernelPreference;
}

/** Arguments of {@linkcode matmul}: {@linkcode LinearArgs} and optional tiling overrides. */
export interface MatmulArgs extends LinearArgs {
  /** Tiling overrides (default {@linkcode MATMUL_TUNING}); for tuning and tests. */
  tune?: Partial<MatmulTuning>;
}

/** Arguments of {@linkcode matvec}: {@linkcode LinearArgs} with `T` optional (default 1). */
export interface MatvecArgs extends Omit<LinearArgs, "T"> {
  /** Rows of `x` (tokens), >= 1; default 1. Meant for a few (decode); see {@linkcode linear}. */
  T?: number;
  /**
   * The layout (default: {@linkcode gemvLayout} for this device, `K` and `dtype`, with `kernels`);
   * for A/B runs and tests. `tune` overrides its sizes.
   */
  layout?: GemvLayout;
  /** Layout overrides (`TB` default {@linkcode MATVEC_TUNING}); for tuning and tests. */
  tune?: Partial<MatvecTuning>;
}

interface Checked {
  x: BindingRange;
  w: BindingRange;
  y: BindingRange;
  T: number;
  K: number;
  N: number;
  dtype: DType;
  accumulate: boolean;
}

function validate(gpu: Gpu, args: LinearArgs, xDtype: "f32" | "f16" = "f32"): Checked {
  argObject(args);
  const T = argCount("T", args.T);
  const K = argCount("K", args.K);
  const N = argCount("N", args.N);
  const dtype = argDType("dtype", args.dtype);
  argEvenRow("K", K, dtype, "weights");
  const accumulate = args.accumulate === undefined
    ? false
    : argBoolean("accumulate", args.accumulate);
  const words = dtype === "f32" ? N * K : N * K / 2;
  if (xDtype === "f16") argEvenRow("K", K, "f16", "activations");
  const x = argBinding(
    gpu,
    "x",
    args.x,
    T * K * (xDtype === "f16" ? 2 : 4),
    `${xDtype} [T=${T}, K=${K}]`,
  );
  const w = argBinding(gpu, "w", args.w, words * 4, `${dtype} [N=${N}, K=${K}]`);
  const y = argBinding(gpu, "y", args.y, T * N * 4, `f32 [T=${T}, N=${N}]`);
  argDistinct("y", y, { x, w });
  return { x, w, y, T, K, N, dtype, accumulate };
}

function checkTune<K extends string>(
  tune: Partial<Record<K, number>> | undefined,
  defaults: Readonly<Record<K, number>>,
  bounds: Record<K, [number, number]>,
): Record<K, number> {
  if (tune !== undefined && (tune === null || typeof tune !== "object")) {
    throw new ArgumentError("tune", `expected an object, got ${tune}`);
  }
  const out = { ...defaults } as Record<K, number>;
  for (const key of Object.keys(bounds) as K[]) {
    const v = tune?.[key];
    if (v !== undefined) out[key] = argCount(`tune.${key}`, v, bounds[key][0], bounds[key][1]);
  }
  return out;
}

function checkWorkgroup(
  gpu: Gpu,
  what: string,
  size: [number, number],
  sharedBytes: number,
) {
  const threads = size[0] * size[1];
  const maxThreads = gpu.limits.maxComputeInvocationsPerWorkgroup;
  const [maxX, maxY] = [gpu.limits.maxComputeWorkgroupSizeX, gpu.limits.maxComputeWorkgroupSizeY];
  if (threads > maxThreads || size[0] > maxX || size[1] > maxY) {
    throw new ArgumentError(
      "tune",
      `${what}: workgroup of ${size[0]} x ${size[1]} threads, over this device's limits ` +
        `(${maxThreads} threads, ${maxX} x ${maxY})`,
    );
  }
  const maxShared = gpu.limits.maxComputeWorkgroupStorageSize;
  if (sharedBytes > maxShared) {
    throw new ArgumentError(
      "tune",
      `${what}: ${sharedBytes} bytes of workgroup memory, over this device's limit of ${maxShared}`,
    );
  }
}

// ------------------------------------------------------------------------------------ builders

/**
 * Builds the tiled GEMM `y[T, N] = x[T, K] · W[N, K]^T` (`+=` with `accumulate`), for any T, K, N.
 * The portable prefill GEMM (f32 arithmetic, no optional feature); {@linkcode linear} picks it for
 * `T > LINEAR_MATVEC_MAX_T` unless {@linkcode matmulVariant} picks {@linkcode matmulSgmatrix}.
 *
 * @throws {ArgumentError} naming the bad argument: non-positive or non-integer sizes, an unknown
 *   dtype, an odd `K` with 16-bit weights, bindings too small, misaligned or sharing a buffer (`y`
 *   with `x` or `w`), tiling overrides out of range or over the device's limits.
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { matmul } from "./linear.ts";
 * const gpu = await openGpu();
 * const x = gpu.storage("activations", new Float32Array([1, 2, 3, 4])); // T = 2, K = 2
 * const w = gpu.storage("dense", new Float32Array([1, 0, 0, 1, 1, 1])); // N = 3
 * const y = gpu.storage("activations", 2 * 3 * 4);
 * gpu.submit([await matmul(gpu, { x, w, y, T: 2, K: 2, N: 3, dtype: "f32" })]);
 * console.log(await gpu.readF32(y)); // Float32Array [1, 2, 3, 3, 4, 7]
 * ```
 */
export async function matmul(gpu: Gpu, args: MatmulArgs): Promise<Dispatch> {
  const a = validate(gpu, args);
  const tune = checkTune(args.tune, MATMUL_TUNING, {
    WGX: [1, 256],
    WGY: [1, 256],
    BK: [2, 256],
  });
  if (tune.BK % 2 !== 0) throw new ArgumentError("tune.BK", `must be even, got ${tune.BK}`);
  checkWorkgroup(gpu, "matmul", [tune.WGX, tune.WGY], 16 * tune.BK * (tune.WGX + tune.WGY));
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const groups: [number, number] = [
    Math.ceil(a.N / (4 * tune.WGX)),
    Math.ceil(a.T / (4 * tune.WGY)),
  ];
  if (groups[0] > max) {
    throw new ArgumentError("N", `N=${a.N} needs ${groups[0]} workgroups, over the limit ${max}`);
  }
  if (groups[1] > max) {
    throw new ArgumentError(
      "T",
      `T=${a.T} needs ${groups[1]} workgroups, over the limit ${max}`,
      "split the rows into several calls",
    );
  }
  const pipeline = await gpu.pipeline(MATMUL, {
    ...tune,
    WDTYPE: DTYPE_CODE[a.dtype],
    ACC: a.accumulate ? 1 : 0,
  });
  const params = gpu.uniform(new ParamWriter().u32(a.T, a.K, a.N).bytes(), "matmul.params");
  return gpu.dispatch(pipeline, [params, a.x, a.w, a.y], groups);
}

/**
 * Builds the GEMV `y[t, n] = W[n, :] · x[t, :]` for the `T` rows of `x` (`+=` with `accumulate`),
 * for any K and N. Bandwidth-bound: 16-byte loads of the weights, `TB` rows of `x` per pass over
 * them (later passes re-read a workgroup's weight rows from cache), so it is meant for a few rows
 * (decode); {@linkcode linear} picks it for `T <= LINEAR_MATVEC_MAX_T`.
 *
 * @throws {ArgumentError} naming the bad argument (as {@linkcode matmul}).
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { packWeights } from "../runtime/weights/dtype.ts";
 * import { matvec } from "./linear.ts";
 * const gpu = await openGpu();
 * const w = gpu.storage("dense", packWeights([1, 2, 3, 4], "f16")); // N = 2, K = 2
 * const x = gpu.storage("activations", new Float32Array([1, -1]));
 * const y = gpu.storage("activations", 2 * 4);
 * gpu.submit([await matvec(gpu, { x, w, y, K: 2, N: 2, dtype: "f16" })]);
 * console.log(await gpu.readF32(y)); // Float32Array [-1, -1]
 * ```
 */
export async function matvec(gpu: Gpu, args: MatvecArgs): Promise<Dispatch> {
  argObject(args);
  const a = validate(gpu, { ...args, T: args.T ?? 1 });
  const base = args.layout === undefined
    ? gemvLayout(gpu, a.K, a.dtype, args.kernels ?? "auto")
    : checkGemvLayout(gpu, args.layout, "layout");
  const defaults = { TPR: base.TPR, ROWS: base.ROWS, UNROLL: base.UNROLL, TB: MATVEC_TUNING.TB };
  const tune = checkTune(args.tune, defaults, {
    TPR: [1, 1024],
    ROWS: [1, 1024],
    UNROLL: [1, 2],
    TB: [1, MATVEC_MAX_TB],
  });
  if ((tune.TPR & (tune.TPR - 1)) !== 0) {
    throw new ArgumentError("tune.TPR", `must be a power of two, got ${tune.TPR}`);
  }
  checkWorkgroup(gpu, "matvec", [tune.TPR * tune.ROWS, 1], 0);
  const layout = args.tune === undefined ? base : checkGemvLayout(
    gpu,
    {
      ...base,
      TPR: tune.TPR,
      ROWS: tune.ROWS,
      UNROLL: tune.UNROLL,
      name: gemvLayoutName({ ...base, ...tune }),
    },
    "tune",
  );
  const pipeline = await gpu.pipeline(gemvSource(MATVEC, layout), {
    ...gemvConstants(layout),
    TB: tune.TB,
    WDTYPE: DTYPE_CODE[a.dtype],
    ACC: a.accumulate ? 1 : 0,
  });
  const ppw = a.dtype === "f32" ? 1 : 2;
  const xvec = (a.K / ppw) % 4 === 0 ? 1 : 0;
  const params = gpu.uniform(
    new ParamWriter().u32(a.T, a.K, a.N, xvec).bytes(),
    "matvec.params",
  );
  // x read as vec4 in the aligned case; any 16-byte buffer stands in when it is not used.
  const xv = xvec && a.x.size >= 16
    ? { ...a.x, size: a.x.size - (a.x.size % 16) }
    : placeholder(gpu);
  // The vec4 view covers whole 16-byte blocks only. A weight range under 16 bytes has no aligned
  // body (every word is read through `wu`), so any 16-byte buffer can stand in for it.
  const wv = a.w.size >= 16 ? { ...a.w, size: a.w.size - (a.w.size % 16) } : placeholder(gpu);
  return gpu.dispatch(
    pipeline,
    [params, a.x, wv, a.w, a.y, xv],
    gpu.grid(Math.ceil(a.N / layout.ROWS)),
    `matvec:${layout.name}`,
  );
}

// ------------------------------------------------------------------------------------ GEMV layouts

export {
  chooseGemvLayout,
  GEMV_LAYOUTS,
  GEMV_SUBGROUP_SIZE,
  GEMV_THRESHOLDS,
  type GemvDevice,
  type GemvLayout,
  type GemvReduction,
} from "./gemv.ts";

/**
 * The one place that chooses the layout of the decode GEMVs ({@linkcode matvec}, `moeGateUp`,
 * `moeDown`, `moeDownCombine`, `qkvProj`) for rows of `K` weights of `dtype` on this device
 * ({@linkcode chooseGemvLayout}, with the layouts and thresholds measured on the H200):
 *
 * - devices with the `subgroups` feature and subgroups of exactly 32 lanes: the subgroup reduction,
 *   `t16r16u2-sg` for rows under 2 KiB, `t32r8u2-sg` under 8 KiB, `t128r1u2-sg` beyond;
 * - otherwise, or with `kernels: "portable"` or `PREGATE_KERNELS=portable` (read with
 *   `--allow-env`): the portable tree reduction, `t32r4u2-tree` for rows under 16 KiB,
 *   `t64r4u2-tree` beyond.
 *
 * @throws {ArgumentError} on a bad `K`, `dtype`, `kernels` or `PREGATE_KERNELS` value.
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { gemvLayout } from "./linear.ts";
 * const gpu = await openGpu({ gpu: "dawn" });
 * const l = gemvLayout(gpu, 4096, "bf16");
 * console.log(l.name, l.reason); // "t128r1u2-sg ..." on an H200 with Dawn, "t32r4u2-tree ..." elsewhere
 * ```
 */
export function gemvLayout(
  gpu: Pick<Gpu, "features" | "device">,
  K: number,
  dtype: DType,
  kernels: KernelPreference = "auto",
): GemvLayout {
  const prefer = argOneOf("kernels", kernels, KERNEL_PREFERENCES, "kernel preference");
  argCount("K", K);
  argDType("dtype", dtype);
  const portable = prefer === "portable"
    ? "the caller asked for the portable kernels"
    : kernelsFromEnv() === "portable"
    ? "PREGATE_KERNELS=portable"
    : false;
  return chooseGemvLayout(gemvDevice(gpu), K, dtype, portable);
}

/**
 * Builds a linear layer `y[T, N] = x[T, K] · W[N, K]^T` (`+=` with `accumulate`): {@linkcode matvec}
 * for `T <= LINEAR_MATVEC_MAX_T` (decode), otherwise (prefill) the GEMM {@linkcode matmulVariant}
 * picks: {@linkcode matmulSgmatrix} on devices with subgroup matrices (16-bit weights, `T >=
 * SGMATRIX_MIN_T`), else {@linkcode matmul}. `kernels: "portable"` keeps to the portable kernels.
 *
 * @throws {ArgumentError} naming the bad argument.
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { linear } from "./linear.ts";
 * const gpu = await openGpu();
 * const x = gpu.storage("activations", new Float32Array([2, 3])); // T = 1, K = 2
 * const w = gpu.storage("dense", new Float32Array([1, 1])); // N = 1
 * const y = gpu.storage("activations", new Float32Array([10]));
 * gpu.submit([await linear(gpu, { x, w, y, T: 1, K: 2, N: 1, dtype: "f32", accumulate: true })]);
 * console.log(await gpu.readF32(y)); // Float32Array [15]
 * ```
 */
export async function linear(gpu: Gpu, args: LinearArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  // Only the documented fields are forwarded (no tuning overrides through linear).
  const { x, w, y, K, N, dtype, accumulate } = args;
  const a = { x, w, y, T, K, N, dtype, accumulate };
  if (T <= LINEAR_MATVEC_MAX_T) return await matvec(gpu, { ...a, kernels: args.kernels });
  const choice = matmulVariant(gpu, { T, K, N, dtype }, args.kernels ?? "auto");
  return await (choice.variant === "sgmatrix"
    ? matmulSgmatrix(gpu, { ...a, tune: choice.tune })
    : matmul(gpu, a));
}

// ------------------------------------------------------------------------------------ kernel variants

/**
 * The prefill GEMMs: `portable` ({@linkcode matmul}, any device, f32 arithmetic) and `sgmatrix`
 * ({@linkcode matmulSgmatrix}, subgroup matrices, f16 operands).
 */
export type MatmulVariant = "portable" | "sgmatrix";

/**
 * Which GEMMs a caller allows: `auto` (the fastest the device and shape allow) or `portable` (only
 * {@linkcode matmul}). `PREGATE_KERNELS=portable` in the environment forces `portable` everywhere.
 */
export type KernelPreference = "auto" | "portable" | "experimental";

/** The values of {@linkcode KernelPreference}. */
export const KERNEL_PREFERENCES: readonly KernelPreference[] = ["auto", "portable", "experimental"];

/**
 * Whether the subgroup-matrix matmul has passed its tests on real hardware: it has, on the H200
 * under Dawn (2026-11-28, `PREGATE_TEST_GPU=dawn deno test -A kernels/matmul_sgmatrix_test.ts`:
 * 72 shapes, worst normwise error 1.2e-6 against f16-rounded operands), so `auto` selects it for
 * prefill where the device has subgroup matrices. Were it `false`, only `kernels: "experimental"`
 * (or `PREGATE_KERNELS=experimental`) would select it.
 */
export const SGMATRIX_VALIDATED: boolean = true;

/** A GEMM shape as {@linkcode matmulVariant} sees it. */
export interface MatmulShape {
  /** Rows of `x` (tokens). */
  T: number;
  /** Inputs per row. */
  K: number;
  /** Outputs per row. */
  N: number;
  /** The weights' dtype. */
  dtype: DType;
}

/** The answer of {@linkcode matmulVariant}. */
export interface MatmulChoice {
  /** The GEMM to run. */
  readonly variant: MatmulVariant;
  /** Why (the first condition that ruled `sgmatrix` out, or what it runs with): for logs and tests. */
  readonly reason: string;
  /** For `sgmatrix`: the tiling to run with (the default, adapted to the device's limits). */
  readonly tune?: Readonly<SgmatrixTuning>;
}

/** The subgroup-matrix configuration `matmul_sgmatrix.wgsl` is written for. */
const SGMATRIX_CONFIG = { componentType: "f16", resultComponentType: "f32", M: 16, N: 16, K: 16 };

/** `PREGATE_KERNELS` when set and readable (undefined without `--allow-env`). */
function kernelsFromEnv(): KernelPreference | undefined {
  const v = readEnv("PREGATE_KERNELS");
  if (v === undefined || v === "") return undefined;
  return argOneOf("PREGATE_KERNELS", v, KERNEL_PREFERENCES, "kernel preference");
}

/**
 * Why this device cannot run {@linkcode matmulSgmatrix}, or `undefined` when it can. It needs the
 * features `shader-f16`, `subgroups` and `chromium-experimental-subgroup-matrix` (Dawn with
 * `allow_unsafe_apis`), the subgroup-matrix configuration f16 x f16 -> f32 at M = N = K = 16 in the
 * adapter's `subgroupMatrixConfigs`, and subgroups of exactly 32 lanes.
 */
export function sgmatrixUnsupported(gpu: Gpu): string | undefined {
  const needs: [keyof Gpu["features"], string][] = [
    ["shaderF16", "shader-f16"],
    ["subgroups", "subgroups"],
    ["subgroupMatrix", "chromium-experimental-subgroup-matrix"],
  ];
  const missing = needs.filter(([k]) => !gpu.features[k]).map(([, name]) => name);
  if (missing.length) return `the device lacks ${missing.join(", ")} (${gpu.describe()})`;
  // Always set on a real Gpu (taken from the adapter); absent only on described test devices.
  const info: Gpu["adapterInfo"] | undefined = gpu.adapterInfo;
  if (!info) {
    return "the device reports no adapterInfo (subgroup sizes, subgroup-matrix configurations)";
  }
  if (info.subgroupMinSize !== 32 || info.subgroupMaxSize !== 32) {
    return `the kernel needs 32-wide subgroups; the device has ${info.subgroupMinSize} .. ` +
      `${info.subgroupMaxSize}`;
  }
  const cfgs = [...(info.subgroupMatrixConfigs ?? [])];
  const c = SGMATRIX_CONFIG;
  if (
    !cfgs.some((g) =>
      g.componentType === c.componentType && g.resultComponentType === c.resultComponentType &&
      g.M === c.M && g.N === c.N && g.K === c.K
    )
  ) {
    const have = cfgs.map((g) =>
      `${g.componentType}->${g.resultComponentType} ${g.M}x${g.N}x${g.K}`
    );
    return `no subgroup-matrix configuration f16->f32 16x16x16 (the device has ` +
      `${have.length ? have.join(", ") : "none"})`;
  }
  return undefined;
}

/** Bytes of workgroup memory `matmul_sgmatrix.wgsl` uses with tiling `t`. */
export function sgmatrixSharedBytes(t: SgmatrixTuning): number {
  const rows = 16 * (t.SGM * t.TM + t.SGN * t.TN);
  return 2 * t.STAGES * rows * (t.BK + 8) + 4 * 256 * t.SGM * t.SGN;
}

/**
 * {@linkcode SGMATRIX_TUNING}, with a smaller K step where its workgroup memory is over the device's
 * limit; a reason if none fits.
 */
function defaultSgmatrixTune(gpu: Gpu): SgmatrixTuning | string {
  const max = gpu.limits.maxComputeWorkgroupStorageSize;
  for (const BK of [SGMATRIX_TUNING.BK, ...SGMATRIX_SMALLER_BK]) {
    const t = { ...SGMATRIX_TUNING, BK };
    if (sgmatrixSharedBytes(t) <= max) return t;
  }
  const least = { ...SGMATRIX_TUNING, BK: SGMATRIX_SMALLER_BK.at(-1)! };
  return `the default tiling needs at least ${sgmatrixSharedBytes(least)} bytes of workgroup ` +
    `memory, over this device's ${max}`;
}

/**
 * Validates a (partial) tiling for {@linkcode matmulSgmatrix} on this device; fields not given come
 * from the device's default ({@linkcode SGMATRIX_TUNING} with one buffer where two do not fit).
 */
function checkSgmatrixTune(gpu: Gpu, tune: unknown): SgmatrixTuning {
  const d = defaultSgmatrixTune(gpu);
  if (typeof d === "string" && tune === undefined) {
    throw new ArgumentError("tune", d, "pass a smaller tiling");
  }
  const base: SgmatrixTuning = typeof d === "string" ? { ...SGMATRIX_TUNING } : d;
  const t = checkTune(tune as Partial<SgmatrixTuning> | undefined, base, {
    SGM: [1, 8],
    SGN: [1, 8],
    TM: [1, SGMATRIX_MAX_TILE],
    TN: [1, SGMATRIX_MAX_TILE],
    BK: [16, 128],
    STAGES: [1, 2],
    VEC: [0, 1],
    UNROLLED: [0, 1],
  });
  if (t.BK % 16 !== 0) {
    throw new ArgumentError("tune.BK", `must be a multiple of 16, got ${t.BK}`);
  }
  const threads = 32 * t.SGM * t.SGN;
  // 16-byte loads per thread and K step: x is f32; W at most f32 too.
  const loads = Math.ceil((16 * Math.max(t.SGM * t.TM, t.SGN * t.TN) * t.BK) / 4 / threads);
  if (loads > SGMATRIX_MAX_LOADS) {
    throw new ArgumentError(
      "tune",
      `matmul_sgmatrix: ${loads} 16-byte loads per thread and K step, over ${SGMATRIX_MAX_LOADS}`,
      "use more subgroups, fewer tiles per subgroup or a smaller BK",
    );
  }
  checkWorkgroup(gpu, "matmul_sgmatrix", [threads, 1], sgmatrixSharedBytes(t));
  return t;
}

/** Workgroup grid of the subgroup-matrix GEMM, or the argument and message if over the limit. */
function sgmatrixGroups(
  gpu: Gpu,
  t: SgmatrixTuning,
  T: number,
  N: number,
): { groups: [number, number] } | { argument: string; message: string } {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const groups: [number, number] = [
    Math.ceil(N / (16 * t.SGN * t.TN)),
    Math.ceil(T / (16 * t.SGM * t.TM)),
  ];
  for (const [i, argument, v] of [[0, "N", N], [1, "T", T]] as const) {
    if (groups[i] > max) {
      return {
        argument,
        message: `${argument}=${v} needs ${groups[i]} workgroups, over the limit ${max}`,
      };
    }
  }
  return { groups };
}

/**
 * The one place that chooses the prefill GEMM: `sgmatrix` ({@linkcode matmulSgmatrix}) when nothing
 * forbids it, the device can run it ({@linkcode sgmatrixUnsupported}), the weights are 16-bit (f32
 * weights keep f32 arithmetic), `T >= SGMATRIX_MIN_T` (decode and small batches stay portable), `K`
 * is a multiple of 8 and the default tiling fits the device; otherwise `portable`
 * ({@linkcode matmul}). `kernels: "portable"` or `PREGATE_KERNELS=portable` (read with
 * `--allow-env`) force `portable`. {@linkcode linear} follows the answer.
 *
 * @throws {ArgumentError} on a malformed shape, an unknown `kernels` or `PREGATE_KERNELS` value.
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { matmulVariant } from "./linear.ts";
 * const gpu = await openGpu({ gpu: "dawn" });
 * const c = matmulVariant(gpu, { T: 512, K: 4096, N: 4096, dtype: "bf16" });
 * console.log(c.variant, c.reason); // "sgmatrix ..." on an H200 with Dawn, "portable ..." elsewhere
 * ```
 */
export function matmulVariant(
  gpu: Gpu,
  shape: MatmulShape,
  kernels: KernelPreference = "auto",
): MatmulChoice {
  const prefer = argOneOf("kernels", kernels, KERNEL_PREFERENCES, "kernel preference");
  argObject(shape);
  const T = argCount("T", shape.T);
  const K = argCount("K", shape.K);
  const N = argCount("N", shape.N);
  const dtype = argDType("dtype", shape.dtype);
  const portable = (reason: string): MatmulChoice => ({ variant: "portable", reason });
  if (prefer === "portable") return portable("the caller asked for the portable kernels");
  if (kernelsFromEnv() === "portable") return portable("PREGATE_KERNELS=portable");
  const unsupported = sgmatrixUnsupported(gpu);
  if (unsupported) return portable(unsupported);
  if (dtype === "f32") {
    return portable("f32 weights keep f32 arithmetic (the subgroup-matrix kernel rounds to f16)");
  }
  if (T < SGMATRIX_MIN_T) {
    return portable(
      `T=${T} rows is under SGMATRIX_MIN_T=${SGMATRIX_MIN_T} (decode, small batches)`,
    );
  }
  if (K % 8 !== 0) return portable(`K=${K} is not a multiple of 8`);
  const tune = defaultSgmatrixTune(gpu);
  if (typeof tune === "string") return portable(tune);
  const grid = sgmatrixGroups(gpu, tune, T, N);
  if ("message" in grid) return portable(grid.message);
  if (!SGMATRIX_VALIDATED && prefer !== "experimental" && kernelsFromEnv() !== "experimental") {
    return portable(
      "the subgroup-matrix matmul is not yet validated on hardware (kernels 'experimental' or " +
        "PREGATE_KERNELS=experimental opts in)",
    );
  }
  return {
    variant: "sgmatrix",
    reason: `subgroup matrices f16->f32 16x16x16, ${dtype} weights, T=${T}, ` +
      `K step ${tune.BK} in ${tune.STAGES} workgroup buffer(s)`,
    tune: Object.freeze(tune),
  };
}

/** Arguments of {@linkcode matmulSgmatrix}: {@linkcode LinearArgs} and optional tiling overrides. */
export interface MatmulSgmatrixArgs extends LinearArgs {
  /** Tiling overrides (default {@linkcode SGMATRIX_TUNING}, adapted to the device); for tuning. */
  tune?: Partial<SgmatrixTuning>;
  /**
   * @internal For `tools/probe_sgmatrix.ts --ablate` only; the result is wrong by design. 1: no
   * global -> workgroup staging inside the K loop; 2: no subgroup-matrix loads or multiplies; 3 (with
   * `tune.UNROLLED`): the multiplies alone.
   */
  ablate?: 0 | 1 | 2 | 3;
  /**
   * The dtype of `x`: `f32` (default, `[T, K]` f32) or `f16` (`[T, K]` packed two per u32 word,
   * e.g. from `packWeights(values, "f16")`; half the activation bytes to stage).
   */
  xDtype?: "f32" | "f16";
}

/**
 * Builds the subgroup-matrix (tensor-core) GEMM `y[T, N] = x[T, K] · W[N, K]^T` (`+=` with
 * `accumulate`) for any T and N and K a multiple of 8, with f32, f16 or bf16 weights. `x` and `W`
 * are rounded to f16 in the kernel (bf16 and f32 values beyond the f16 range, +-65504, become inf);
 * products are summed in f32. Expect a normwise relative error of a few 1e-4 against f32
 * arithmetic. {@linkcode linear} uses it where {@linkcode matmulVariant} says so.
 *
 * @throws {GpuError} when the device cannot run it ({@linkcode sgmatrixUnsupported} says why).
 * @throws {ArgumentError} naming the bad argument (as {@linkcode matmul}; `K` not a multiple of 8;
 *   tiling overrides out of range or over the device's limits).
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { packWeights } from "../runtime/weights/dtype.ts";
 * import { matmulSgmatrix } from "./linear.ts";
 * const gpu = await openGpu({ gpu: "dawn" }); // a device with subgroup matrices
 * const [T, K, N] = [256, 1024, 512];
 * const x = gpu.storage("activations", new Float32Array(T * K).fill(0.5));
 * const w = gpu.storage("dense", packWeights(new Float32Array(N * K).fill(0.25), "f16"));
 * const y = gpu.storage("activations", T * N * 4);
 * gpu.submit([await matmulSgmatrix(gpu, { x, w, y, T, K, N, dtype: "f16" })]);
 * console.log((await gpu.readF32(y, 0, 1))[0]); // 128
 * ```
 */
export async function matmulSgmatrix(gpu: Gpu, args: MatmulSgmatrixArgs): Promise<Dispatch> {
  const unsupported = sgmatrixUnsupported(gpu);
  if (unsupported) {
    throw new GpuError(
      `matmul_sgmatrix cannot run on this device: ${unsupported}`,
      "use linear() (matmulVariant picks the portable matmul here) or matmul()",
    );
  }
  return await matmulSgmatrixWith(gpu, args);
}

/**
 * How the kernel body (`matmul_sgmatrix.wgsl`, plus the generated entry point when `UNROLLED`)
 * becomes a module: the staging includes before it (`matmul_sgmatrix_head.wgsl`, one tile layout,
 * `matmul_sgmatrix_tail.wgsl`), or, in tests, an emulated stand-in. `name` goes into the kernel's name.
 * @internal Tests pass their own (`matmul_sgmatrix_test.ts` emulates the subgroup matrices).
 */
export interface SgmatrixStaging {
  readonly name: string;
  join(body: string): string | Promise<string>;
}

/** The real staging, prepended: the shared head, the tile layout `layout`, the shared tail. */
function staging(name: string, layout: string): SgmatrixStaging {
  return {
    name,
    async join(body) {
      const files = ["matmul_sgmatrix_head.wgsl", layout, "matmul_sgmatrix_tail.wgsl"];
      const parts = await Promise.all(files.map(wgslFile));
      return [...parts, body].join("\n");
    },
  };
}

/** Workgroup tiles as `array<f16>` (`VEC: 0`) and as `array<vec4<f16>>` (`VEC: 1`). */
const STAGING_SCALAR = staging("", "matmul_sgmatrix_scalar.wgsl");
const STAGING_VEC4 = staging("vec4", "matmul_sgmatrix_vec4.wgsl");

const sgmatrixSources = new Map<string, PipelineSource>();

/**
 * The kernel source for tiling `t` (the file's `main`, or the generated `main_unrolled` with
 * `ablate` written in), cached by name: `matmul_sgmatrix[_STAGING][_UNROLLKEY]`.
 */
function sgmatrixSource(
  t: SgmatrixTuning,
  dtype: DType,
  xDtype: "f32" | "f16",
  ablate: 0 | 1 | 2 | 3,
  stage: SgmatrixStaging = t.VEC ? STAGING_VEC4 : STAGING_SCALAR,
): PipelineSource {
  const shape = { ...t, wPerLoad: dtype === "f32" ? 4 : 8, xPerLoad: xDtype === "f32" ? 4 : 8 };
  const name = ["matmul_sgmatrix", stage.name, t.UNROLLED ? unrollKey(shape, ablate) : ""]
    .filter((p) => p).join("_");
  let src = sgmatrixSources.get(name);
  if (!src) {
    src = {
      name,
      entry: t.UNROLLED ? "main_unrolled" : "main",
      async source() {
        const body = await wgslFile("matmul_sgmatrix.wgsl");
        return await stage.join(t.UNROLLED ? `${body}\n${unrolledEntry(shape, ablate)}` : body);
      },
    };
    sgmatrixSources.set(name, src);
  }
  return src;
}

/**
 * {@linkcode matmulSgmatrix} without the device check, and with another staging include when
 * `staging` is given (instead of the one `tune.VEC` picks).
 * @internal For tests: `matmul_sgmatrix_test.ts` runs the kernel's logic with emulated subgroup
 * matrices on devices that have none, and compiles it with Dawn's null backend.
 */
export async function matmulSgmatrixWith(
  gpu: Gpu,
  args: MatmulSgmatrixArgs,
  staging?: SgmatrixStaging,
): Promise<Dispatch> {
  const xDtype = argOneOf(
    "xDtype",
    args.xDtype ?? "f32",
    ["f32", "f16"] as const,
    "activation dtype",
  );
  const a = validate(gpu, args, xDtype);
  if (a.K % 8 !== 0) {
    throw new ArgumentError(
      "K",
      `matmul_sgmatrix needs a multiple of 8, got K=${a.K}`,
      "matmul (portable) takes any K; linear picks it for such shapes",
    );
  }
  const t = checkSgmatrixTune(gpu, args.tune);
  const ablate = args.ablate ?? 0;
  if (![0, 1, 2, 3].includes(ablate) || (ablate === 3 && !t.UNROLLED)) {
    throw new ArgumentError(
      "ablate",
      `expected 0, 1 or 2 (3 with tune.UNROLLED = 1), got ${args.ablate}`,
    );
  }
  const grid = sgmatrixGroups(gpu, t, a.T, a.N);
  if ("message" in grid) {
    throw new ArgumentError(grid.argument, grid.message, "split the rows into several calls");
  }
  const { VEC: _vec, UNROLLED: _unrolled, ...tiling } = t;
  const pipeline = await gpu.pipeline(sgmatrixSource(t, a.dtype, xDtype, ablate, staging), {
    ...tiling,
    WG: 32 * t.SGM * t.SGN,
    WDTYPE: DTYPE_CODE[a.dtype],
    ...(xDtype === "f16" ? { XDTYPE: 1 } : {}),
    ACC: a.accumulate ? 1 : 0,
    // The generated entry has its ablation written in; the file's main reads ABLATE.
    ...(ablate && !t.UNROLLED ? { ABLATE: ablate } : {}),
  });
  const params = gpu.uniform(
    new ParamWriter().u32(a.T, a.K, a.N).bytes(),
    "matmul_sgmatrix.params",
  );
  const x = vec4View("x", a.x, a.T * a.K * (xDtype === "f32" ? 4 : 2));
  const w = vec4View("w", a.w, a.N * a.K * (a.dtype === "f32" ? 4 : 2));
  return gpu.dispatch(pipeline, [params, x, w, a.y], grid.groups);
}
