/**
 * Linear-layer kernels: `y[T, N] = x[T, K] · W[N, K]^T`, optionally accumulated into `y`.
 *
 * - {@linkcode matmul} (`matmul.wgsl`): tiled GEMM for prefill (many rows of `x`).
 * - {@linkcode matvec} (`matvec.wgsl`): GEMV for decode (a few rows of `x`), bandwidth-bound, 16-byte
 *   loads of the weights.
 * - {@linkcode linear}: picks one of the two from `T`.
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
import type { Binding, Dispatch, Gpu } from "../runtime/gpu/device.ts";
import { ArgumentError } from "../runtime/errors.ts";
import { type DType, DTYPE_CODE } from "../runtime/weights/dtype.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import {
  argBinding,
  argBoolean,
  argCount,
  argDistinct,
  argDType,
  argEvenRow,
  argObject,
  type BindingRange,
  placeholder,
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
 * two), `ROWS` weight rows per workgroup, `TB` rows of `x` per pass over the weights (1 .. 8).
 */
export interface MatvecTuning {
  /** Threads per weight row (a power of two). */
  TPR: number;
  /** Weight rows per workgroup. */
  ROWS: number;
  /** Rows of `x` per pass over the weights, 1 .. 8. */
  TB: number;
}

/** The default {@linkcode MatvecTuning}: 32 threads per row, 8 rows per workgroup, 1 token per pass. */
export const MATVEC_TUNING: Readonly<MatvecTuning> = Object.freeze({ TPR: 32, ROWS: 8, TB: 1 });

/** `MAX_TB` of `matvec.wgsl`. */
const MATVEC_MAX_TB = 8;

/** {@linkcode linear} uses {@linkcode matvec} for `T <= LINEAR_MATVEC_MAX_T`, else {@linkcode matmul}. */
export const LINEAR_MATVEC_MAX_T = 8;

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
 */
export const MATVEC: KernelSpec = defineKernel({
  name: "matvec",
  file: "matvec.wgsl",
  includes: ["dtype.wgsl"],
  bindings: ["params", "x", "wv", "wu", "y", "xv"],
  constants: { ...MATVEC_TUNING, WDTYPE: 0, ACC: 0 },
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
  /** Layout overrides (default {@linkcode MATVEC_TUNING}); for tuning and tests. */
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

function validate(gpu: Gpu, args: LinearArgs): Checked {
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
  const x = argBinding(gpu, "x", args.x, T * K * 4, `f32 [T=${T}, K=${K}]`);
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
 * Best for prefill (large `T`); {@linkcode linear} picks it for `T > LINEAR_MATVEC_MAX_T`.
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
  const tune = checkTune(args.tune, MATVEC_TUNING, {
    TPR: [1, 1024],
    ROWS: [1, 1024],
    TB: [1, MATVEC_MAX_TB],
  });
  if ((tune.TPR & (tune.TPR - 1)) !== 0) {
    throw new ArgumentError("tune.TPR", `must be a power of two, got ${tune.TPR}`);
  }
  const threads = tune.TPR * tune.ROWS;
  checkWorkgroup(gpu, "matvec", [threads, 1], 4 * tune.TB * threads);
  const pipeline = await gpu.pipeline(MATVEC, {
    ...tune,
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
    gpu.grid(Math.ceil(a.N / tune.ROWS)),
  );
}

/**
 * Builds a linear layer `y[T, N] = x[T, K] · W[N, K]^T` (`+=` with `accumulate`): {@linkcode matvec}
 * for `T <= LINEAR_MATVEC_MAX_T` (decode), {@linkcode matmul} otherwise (prefill).
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
  return await (T <= LINEAR_MATVEC_MAX_T ? matvec(gpu, a) : matmul(gpu, a));
}
