/**
 * Linear-layer kernels: `y[T, N] = x[T, K] · W[N, K]^T`, optionally accumulated into `y`.
 *
 * - {@linkcode matmul} (`matmul.wgsl`): tiled GEMM for prefill (many rows of `x`).
 * - {@linkcode matvec} (`matvec.wgsl`): GEMV for decode (1 .. {@linkcode MATVEC_MAX_T} rows of `x`),
 *   bandwidth-bound, 16-byte loads of the weights.
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
import { DTYPE_CODE, DTYPES, type DType } from "../runtime/weights/dtype.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";

// ------------------------------------------------------------------------------------ tuning knobs

/** Tiling of {@linkcode MATMUL}: threads along N and T (4 x 4 outputs each) and the K step. */
export const MATMUL_TILE = Object.freeze({ WGX: 16, WGY: 16, BK: 16 });
/** Output rows (of `x`) per {@linkcode matmul} workgroup. */
const MATMUL_BM = 4 * MATMUL_TILE.WGY;
/** Outputs (rows of `W`) per {@linkcode matmul} workgroup. */
const MATMUL_BN = 4 * MATMUL_TILE.WGX;

/** Layout of {@linkcode MATVEC}: threads per weight row (a power of two) and rows per workgroup. */
export const MATVEC_LAYOUT = Object.freeze({ TPR: 32, ROWS: 8 });

/** The most rows of `x` {@linkcode matvec} handles in one dispatch (`MAX_T` in `matvec.wgsl`). */
export const MATVEC_MAX_T = 8;

/** {@linkcode linear} uses {@linkcode matvec} for `T <= LINEAR_MATVEC_MAX_T`, else {@linkcode matmul}. */
export const LINEAR_MATVEC_MAX_T = 8;

// ------------------------------------------------------------------------------------ kernel specs

/** Tiled GEMM `y[T, N] (+)= x[T, K] · W[N, K]^T` (`matmul.wgsl`). */
export const MATMUL: KernelSpec = defineKernel({
  name: "matmul",
  file: "matmul.wgsl",
  includes: ["dtype.wgsl"],
  bindings: ["params", "x", "w", "y"],
  constants: { ...MATMUL_TILE, WDTYPE: 0, ACC: 0 },
});

/**
 * GEMV `y[t, n] (+)= W[n, :] · x[t, :]` for `t < TCOLS` (`matvec.wgsl`). The weights are bound twice:
 * as `array<vec4<u32>>` (`wv`, aligned body of each row) and as `array<u32>` (`wu`, row edges).
 */
export const MATVEC: KernelSpec = defineKernel({
  name: "matvec",
  file: "matvec.wgsl",
  includes: ["dtype.wgsl"],
  bindings: ["params", "x", "wv", "wu", "y"],
  constants: { ...MATVEC_LAYOUT, TCOLS: 1, WDTYPE: 0, ACC: 0 },
});

// ------------------------------------------------------------------------------------ arguments

/** Arguments of {@linkcode matmul} and {@linkcode linear}. */
export interface LinearArgs {
  /** Input activations, f32 `[T, K]` row-major. */
  x: Binding;
  /** Weights `[N, K]` (row n = the K inputs of output n), packed u32 words of `dtype`. */
  w: Binding;
  /** Output f32 `[T, N]` row-major; must not overlap `x` or `w`. */
  y: Binding;
  /** Rows of `x` (tokens), >= 1. */
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

/** Arguments of {@linkcode matvec}: as {@linkcode LinearArgs}, with `T` optional (default 1). */
export interface MatvecArgs extends Omit<LinearArgs, "T"> {
  /** Rows of `x` (tokens), 1 .. {@linkcode MATVEC_MAX_T}; default 1. */
  T?: number;
}

const U32_MAX = 0xffffffff;

function checkDim(name: string, v: unknown, max = U32_MAX): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > max) {
    throw new ArgumentError(
      name,
      `expected an integer in [1, ${max}], got ${typeof v === "number" ? v : typeof v}`,
    );
  }
  return v;
}

interface Range {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

function range(gpu: Gpu, name: string, b: Binding, need: number): Range {
  if (!b || typeof b !== "object") {
    throw new ArgumentError(name, `expected a GPUBuffer or {buffer, offset?, size?}, got ${b}`);
  }
  const buffer = "buffer" in b ? b.buffer : b;
  const offset = "buffer" in b ? b.offset ?? 0 : 0;
  if (!buffer || typeof buffer.size !== "number") {
    throw new ArgumentError(name, "expected a GPUBuffer or {buffer, offset?, size?}");
  }
  const size = "buffer" in b ? b.size ?? buffer.size - offset : buffer.size;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  if (!Number.isInteger(offset) || offset < 0 || offset % align !== 0) {
    throw new ArgumentError(
      name,
      `binding offset ${offset} is not a multiple of ${align} (minStorageBufferOffsetAlignment)`,
    );
  }
  if (!Number.isInteger(size) || size < 0 || offset + size > buffer.size) {
    throw new ArgumentError(
      name,
      `binding range [${offset}, ${offset + size}) exceeds the buffer's ${buffer.size} bytes`,
    );
  }
  if (size < need) {
    throw new ArgumentError(name, `needs at least ${need} bytes, the binding has ${size}`);
  }
  const max = gpu.limits.maxStorageBufferBindingSize;
  if (size > max) {
    throw new ArgumentError(
      name,
      `binding of ${size} bytes exceeds this device's maxStorageBufferBindingSize of ${max}`,
      "bind a range ({buffer, offset, size}) or split the tensor",
    );
  }
  return { buffer, offset, size };
}

function checkNoOverlap(name: string, a: Range, other: string, b: Range) {
  if (a.buffer === b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size) {
    throw new ArgumentError(
      name,
      `overlaps ${other} (bytes [${a.offset}, ${a.offset + a.size}) and [${b.offset}, ${
        b.offset + b.size
      }) of the same buffer)`,
      "write the output to a separate buffer",
    );
  }
}

interface Checked {
  x: Range;
  w: Range;
  y: Range;
  T: number;
  K: number;
  N: number;
  dtype: DType;
  accumulate: boolean;
}

function validate(gpu: Gpu, args: LinearArgs, maxT: number): Checked {
  if (!args || typeof args !== "object") throw new ArgumentError("args", "expected an object");
  const T = checkDim("T", args.T, maxT);
  const K = checkDim("K", args.K);
  const N = checkDim("N", args.N);
  const dtype = args.dtype;
  if (!DTYPES.includes(dtype)) {
    throw new ArgumentError("dtype", `unsupported dtype '${dtype}'`, `use ${DTYPES.join(", ")}`);
  }
  if (dtype !== "f32" && K % 2 !== 0) {
    throw new ArgumentError(
      "K",
      `${dtype} weights need an even row length, got K=${K}`,
      "16-bit weights are packed two per u32 word; every row must start on a word",
    );
  }
  if (args.accumulate !== undefined && typeof args.accumulate !== "boolean") {
    throw new ArgumentError("accumulate", `expected a boolean, got ${args.accumulate}`);
  }
  const words = dtype === "f32" ? N * K : N * K / 2;
  const x = range(gpu, "x", args.x, T * K * 4);
  const w = range(gpu, "w", args.w, words * 4);
  const y = range(gpu, "y", args.y, T * N * 4);
  checkNoOverlap("y", y, "x", x);
  checkNoOverlap("y", y, "w", w);
  return { x, w, y, T, K, N, dtype, accumulate: args.accumulate ?? false };
}

function bind(r: Range, size = r.size): Binding {
  return { buffer: r.buffer, offset: r.offset, size };
}

// ------------------------------------------------------------------------------------ builders

/**
 * Builds the tiled GEMM `y[T, N] = x[T, K] · W[N, K]^T` (`+=` with `accumulate`), for any T, K, N.
 * Best for prefill (large `T`); {@linkcode linear} picks it for `T > LINEAR_MATVEC_MAX_T`.
 *
 * @throws {ArgumentError} naming the bad argument: non-positive or non-integer sizes, an unknown
 *   dtype, an odd `K` with 16-bit weights, bindings too small, misaligned or overlapping `y`.
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
export async function matmul(gpu: Gpu, args: LinearArgs): Promise<Dispatch> {
  const a = validate(gpu, args, U32_MAX);
  const groups: [number, number] = [Math.ceil(a.N / MATMUL_BN), Math.ceil(a.T / MATMUL_BM)];
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
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
    ...MATMUL_TILE,
    WDTYPE: DTYPE_CODE[a.dtype],
    ACC: a.accumulate ? 1 : 0,
  });
  const params = gpu.uniform(new ParamWriter().u32(a.T, a.K, a.N).bytes(), "matmul.params");
  return gpu.dispatch(pipeline, [params, bind(a.x), bind(a.w), bind(a.y)], groups);
}

/**
 * Builds the GEMV `y[t, n] = W[n, :] · x[t, :]` for the `T` (1 .. {@linkcode MATVEC_MAX_T}) rows of
 * `x` (`+=` with `accumulate`): one pass over the weights serves every row of `x`. `T` is compiled
 * into the pipeline (one pipeline per `T` and dtype). Best for decode; {@linkcode linear} picks it for
 * `T <= LINEAR_MATVEC_MAX_T`.
 *
 * @throws {ArgumentError} naming the bad argument (as {@linkcode matmul}, and `T` above
 *   {@linkcode MATVEC_MAX_T}).
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
  const a = validate(gpu, { ...args, T: args?.T ?? 1 }, MATVEC_MAX_T);
  const { TPR, ROWS } = MATVEC_LAYOUT;
  const pipeline = await gpu.pipeline(MATVEC, {
    TPR,
    ROWS,
    TCOLS: a.T,
    WDTYPE: DTYPE_CODE[a.dtype],
    ACC: a.accumulate ? 1 : 0,
  });
  const params = gpu.uniform(new ParamWriter().u32(a.K, a.N).bytes(), "matvec.params");
  // The vec4 view needs at least one whole vec4; a smaller weight range has no aligned body at all
  // (every word is read through `wu`), so any 16-byte buffer can stand in for it.
  const wv = a.w.size >= 16 ? bind(a.w, a.w.size - (a.w.size % 16)) : dummy(gpu);
  return gpu.dispatch(
    pipeline,
    [params, bind(a.x), wv, bind(a.w), bind(a.y)],
    gpu.grid(Math.ceil(a.N / ROWS)),
  );
}

const dummies = new WeakMap<Gpu, GPUBuffer>();

function dummy(gpu: Gpu): GPUBuffer {
  let b = dummies.get(gpu);
  if (!b) {
    b = gpu.storage("other", 16, "matvec.dummy");
    dummies.set(gpu, b);
  }
  return b;
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
  const T = checkDim("T", args?.T);
  return await (T <= LINEAR_MATVEC_MAX_T ? matvec(gpu, args) : matmul(gpu, args));
}
