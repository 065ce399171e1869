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
 * per output) packed in u32 words of `dtype` (see `runtime/base/dtype.ts`); 16-bit dtypes need an
 * even `K`. Builders validate their arguments and throw {@linkcode ArgumentError} naming the bad one.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { packWeights } from "../runtime/base/dtype.ts";
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
import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { type DType, DTYPE_CODE } from "../runtime/base/dtype.ts";
import { isQuantType } from "../runtime/weights/weight_type.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import {
  checkGemvLayout,
  gemvConstants,
  type GemvLayout,
  gemvLayoutName,
  gemvSource,
  MATVEC,
} from "./gemv.ts";
import { argCount, argObject, placeholder } from "./args.ts";
import { checkTune, checkWorkgroup, type LinearArgs, validateLinear } from "./linear_args.ts";
import { gemvLayout, matmulVariant } from "./linear_variant.ts";
import { matmulSgmatrix } from "./matmul_sgmatrix.ts";
import { matvecQuant, WEIGHT_CODE } from "./quant_gemv.ts";

export { KERNEL_PREFERENCES, type KernelPreference, type LinearArgs } from "./linear_args.ts";
export {
  gemvLayout,
  type MatmulChoice,
  type MatmulShape,
  type MatmulVariant,
  matmulVariant,
  SGMATRIX_MIN_T,
} from "./linear_variant.ts";
export {
  matmulSgmatrix,
  type MatmulSgmatrixArgs,
  matmulSgmatrixWith,
  SGMATRIX_TUNING,
  sgmatrixSharedBytes,
  type SgmatrixStaging,
  sgmatrixTuneFor,
  type SgmatrixTuning,
  sgmatrixUnsupported,
} from "./matmul_sgmatrix.ts";
export {
  chooseGemvLayout,
  GEMV_LAYOUTS,
  GEMV_SUBGROUP_SIZE,
  GEMV_THRESHOLDS,
  type GemvDevice,
  type GemvLayout,
  type GemvReduction,
  MATVEC,
} from "./gemv.ts";

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

// ------------------------------------------------------------------------------------ kernel specs

/** Tiled GEMM `y[T, N] (+)= x[T, K] · W[N, K]^T` (`matmul.wgsl`). */
export const MATMUL: KernelSpec = defineKernel({
  name: "matmul",
  file: "matmul.wgsl",
  includes: ["dtype.wgsl", "quant.wgsl", "quant_values.wgsl"],
  bindings: ["params", "x", "w", "y"],
  constants: { ...MATMUL_TUNING, WDTYPE: 0, ACC: 0 },
});

// ------------------------------------------------------------------------------------ arguments

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
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
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
  const a = validateLinear(gpu, args);
  const tune = checkTune(args.tune, MATMUL_TUNING, {
    WGX: [1, 256],
    WGY: [1, 256],
    BK: [2, 256],
  });
  if (tune.BK % 2 !== 0) throw new ArgumentError("tune.BK", `must be even, got ${tune.BK}`);
  if (isQuantType(a.dtype) && tune.BK % 4 !== 0) {
    throw new ArgumentError("tune.BK", `must be a multiple of 4 for ${a.dtype}, got ${tune.BK}`);
  }
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
    WDTYPE: WEIGHT_CODE[a.dtype],
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
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { packWeights } from "../runtime/base/dtype.ts";
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
  if (isQuantType(args.dtype)) {
    if (args.tune !== undefined) {
      throw new ArgumentError("tune", `not supported for ${args.dtype} weights (give a layout)`);
    }
    const { x, w, y, T, K, N, dtype: type, accumulate, layout, kernels } = args;
    return await matvecQuant(gpu, { x, w, y, T, K, N, type, accumulate, layout, kernels });
  }
  const a = validateLinear(gpu, { ...args, T: args.T ?? 1 });
  const dtype = a.dtype as DType; // the quantised types went to matvecQuant above
  const base = args.layout === undefined
    ? gemvLayout(gpu, a.K, dtype, args.kernels ?? "auto")
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
    WDTYPE: DTYPE_CODE[dtype],
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

/**
 * Builds a linear layer `y[T, N] = x[T, K] · W[N, K]^T` (`+=` with `accumulate`): {@linkcode matvec}
 * for `T <= LINEAR_MATVEC_MAX_T` (decode), otherwise (prefill) the GEMM {@linkcode matmulVariant}
 * picks: {@linkcode matmulSgmatrix} on devices with subgroup matrices (16-bit weights, `T >=
 * SGMATRIX_MIN_T`), else {@linkcode matmul}. `kernels: "portable"` keeps to the portable kernels.
 *
 * @throws {ArgumentError} naming the bad argument.
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
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
  if (isQuantType(dtype)) return await matmul(gpu, a); // decoded while staged
  const choice = matmulVariant(gpu, { T, K, N, dtype }, args.kernels ?? "auto");
  return await (choice.variant === "sgmatrix"
    ? matmulSgmatrix(gpu, { ...a, tune: choice.tune })
    : matmul(gpu, a));
}
