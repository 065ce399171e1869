/**
 * Decode GEMVs over Q4_K / Q5_K weights with llama.cpp's Q8_K activations: the activations are
 * quantised to int8 in blocks of 256 ({@linkcode quantizeQ8K}, `quantize_q8k.wgsl`), and the product
 * ({@linkcode matvecQ8K}, `matvec_q8k.wgsl`) sums quants times activations in 32-bit integers, four
 * at a time (WGSL's `dot4I8Packed`), as llama.cpp's `ggml_vec_dot_q4_K_q8_K` does: exact integer
 * sums per super-block, then one f32 step with the scales. The values equal the product of the
 * dequantised weights with `roundActivations(..., "q8_k")`'s values up to f32 rounding.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { quantize } from "../runtime/weights/quant.ts";
 * import { matvecQ8K, q8kBytes, quantizeQ8K } from "./q8k_gemv.ts";
 * const gpu = await openGpu();
 * const K = 256, N = 4;
 * const W = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i));
 * const w = gpu.storage("dense", quantize(W, "q4_k"));
 * const x = gpu.storage("activations", new Float32Array(K).fill(1));
 * const xq = gpu.storage("activations", q8kBytes(1, K).values);
 * const xd = gpu.storage("activations", q8kBytes(1, K).scales);
 * const y = gpu.storage("activations", N * 4);
 * gpu.submit([
 *   await quantizeQ8K(gpu, { x, xq, xd, rows: 1, K }),
 *   await matvecQ8K(gpu, { xq, xd, w, y, K, N, type: "q4_k" }),
 * ]);
 * console.log(await gpu.readF32(y)); // the row sums of the dequantised W
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { weightRowBytes } from "../runtime/weights/weight_type.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { GEMV_QUANT_INCLUDES, gemvConstants, type GemvLayout, gemvSource } from "./gemv.ts";
import { WEIGHT_CODE, weightGemvLayout } from "./quant_gemv.ts";
import {
  argBinding,
  argBoolean,
  argCount,
  argDistinct,
  argObject,
  argOneOf,
  placeholder,
} from "./args.ts";

/** The weight types {@linkcode matvecQ8K} takes. */
export const Q8K_WEIGHT_TYPES = ["q4_k", "q5_k"] as const;
/** A weight type of {@linkcode Q8K_WEIGHT_TYPES}. */
export type Q8KWeightType = typeof Q8K_WEIGHT_TYPES[number];

/** Rows of activations (tokens) {@linkcode matvecQ8K} takes at most. */
export const Q8K_MAX_ROWS = 8;

/** Values per Q8_K block (one f32 scale each). */
export const Q8K_BLOCK = 256;

const QUANTIZE_Q8K = defineKernel({
  name: "quantize_q8k",
  file: "quantize_q8k.wgsl",
  bindings: ["params", "x", "xv", "xq", "xd"],
});

/** The kernel spec of {@linkcode matvecQ8K} (`matvec_q8k.wgsl`). */
export const MATVEC_Q8K: KernelSpec = defineKernel({
  name: "matvec_q8k",
  file: "matvec_q8k.wgsl",
  includes: [...GEMV_QUANT_INCLUDES, "qk_load.wgsl"],
  bindings: ["params", "xq", "xd", "wv", "wu", "y"],
  constants: { TPR: 32, WG: 128, WDTYPE: 4, ACC: 0 },
});

/** Bytes of the Q8_K activations of `rows` rows of `K` values: int8 values and f32 scales. */
export function q8kBytes(rows: number, K: number): { values: number; scales: number } {
  return { values: rows * K, scales: 4 * rows * Math.ceil(K / Q8K_BLOCK) };
}

function argQ8KRow(K: number): number {
  if (K % Q8K_BLOCK !== 0) {
    throw new ArgumentError("K", `Q8_K takes blocks of ${Q8K_BLOCK} values; got rows of ${K}`);
  }
  return K;
}

/** Arguments of {@linkcode quantizeQ8K}. */
export interface QuantizeQ8KArgs {
  /** f32 [rows, K]. */
  x: Binding;
  /** The int8 values [rows, K], four a word ({@linkcode q8kBytes}). */
  xq: Binding;
  /** The f32 scales [rows, K / 256]. */
  xd: Binding;
  rows: number;
  /** Values per row, a multiple of 256. */
  K: number;
}

/**
 * Builds the dispatch quantising `x` to Q8_K (`quantize_q8k.wgsl`).
 *
 * @throws {ArgumentError} naming the bad argument: counts, a `K` that is not whole blocks, bindings
 *   too small or sharing a buffer.
 */
export async function quantizeQ8K(gpu: Gpu, args: QuantizeQ8KArgs): Promise<Dispatch> {
  argObject(args);
  const rows = argCount("rows", args.rows);
  const K = argQ8KRow(argCount("K", args.K));
  const size = q8kBytes(rows, K);
  const x = argBinding(gpu, "x", args.x, rows * K * 4, `f32 [rows=${rows}, K=${K}]`);
  const xq = argBinding(gpu, "xq", args.xq, size.values, `int8 [rows=${rows}, K=${K}]`);
  const xd = argBinding(gpu, "xd", args.xd, size.scales, `f32 [rows=${rows}, K/256]`);
  argDistinct("xq", xq, { x });
  argDistinct("xd", xd, { x, xq });
  const blocks = (rows * K) / Q8K_BLOCK;
  const pipeline = await gpu.pipeline(QUANTIZE_Q8K, {});
  const params = gpu.uniform(new ParamWriter().u32(blocks, 0, 0, 0).bytes(), "quantize_q8k.params");
  const xv = { ...x, size: rows * K * 4 };
  return gpu.dispatch(pipeline, [params, x, xv, xq, xd], gpu.grid(blocks), "quantize_q8k");
}

/** Arguments of {@linkcode matvecQ8K}. */
export interface MatvecQ8KArgs {
  /** The Q8_K values [T, K] of the activations ({@linkcode quantizeQ8K}). */
  xq: Binding;
  /** Their scales [T, K / 256]. */
  xd: Binding;
  /** Weights [N, K], `N` rows of `type` super-blocks back to back (as stored in a GGUF file). */
  w: Binding;
  /** Output f32 [T, N]; must not share a buffer with the other bindings. */
  y: Binding;
  /** Rows of activations (tokens), 1 to {@linkcode Q8K_MAX_ROWS}; default 1. */
  T?: number;
  /** Inputs per row, a multiple of 256. */
  K: number;
  /** Outputs per row. */
  N: number;
  type: Q8KWeightType;
  /** Add the product to `y` instead of overwriting it. Default false. */
  accumulate?: boolean;
  /** The GEMV layout (default: the Q4_K / Q5_K GEMV's, `weightGemvLayout`). */
  layout?: GemvLayout;
}

/**
 * Builds the decode GEMV `y[t, n] (+)= W[n, :] · x[t, :]` over Q4_K / Q5_K weights and Q8_K
 * activations (`matvec_q8k.wgsl`).
 *
 * @throws {ArgumentError} naming the bad argument: sizes, a `K` that is not whole super-blocks, a
 *   weight type other than Q4_K / Q5_K, bindings too small or sharing a buffer.
 */
export async function matvecQ8K(gpu: Gpu, args: MatvecQ8KArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T ?? 1, 1, Q8K_MAX_ROWS);
  const K = argQ8KRow(argCount("K", args.K));
  const N = argCount("N", args.N);
  const type = argOneOf("type", args.type, Q8K_WEIGHT_TYPES, "weight type with Q8_K activations");
  const accumulate = args.accumulate === undefined
    ? false
    : argBoolean("accumulate", args.accumulate);
  const size = q8kBytes(T, K);
  const xq = argBinding(gpu, "xq", args.xq, size.values, `int8 [T=${T}, K=${K}]`);
  const xd = argBinding(gpu, "xd", args.xd, size.scales, `f32 [T=${T}, K/256]`);
  const w = argBinding(gpu, "w", args.w, N * weightRowBytes(K, type), `${type} [N=${N}, K=${K}]`);
  const y = argBinding(gpu, "y", args.y, T * N * 4, `f32 [T=${T}, N=${N}]`);
  argDistinct("y", y, { xq, xd, w });
  const layout = args.layout ?? weightGemvLayout(gpu, K, type);
  const { TPR, WG } = gemvConstants(layout);
  const pipeline = await gpu.pipeline(gemvSource(MATVEC_Q8K, layout), {
    TPR,
    WG,
    WDTYPE: WEIGHT_CODE[type],
    ACC: accumulate ? 1 : 0,
  });
  const params = gpu.uniform(new ParamWriter().u32(T, K, N, 0).bytes(), "matvec_q8k.params");
  const wv = w.size >= 16 ? { ...w, size: w.size - (w.size % 16) } : placeholder(gpu);
  return gpu.dispatch(
    pipeline,
    [params, xq, xd, wv, w, y],
    gpu.grid(Math.ceil(N / layout.ROWS)),
    `matvec_q8k.${type}:${layout.name}`,
  );
}
