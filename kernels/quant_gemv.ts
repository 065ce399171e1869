/**
 * Decode GEMVs over block-quantised weights (Q8_0, Q5_0, Q4_0, Q4_K, Q5_K, Q6_K in llama.cpp's
 * layouts, as GGUF files store them), dequantised inside the kernel: the same `matvec.wgsl` and
 * `moe.wgsl` kernels as the f32 / f16 / bf16 weights, specialised by `WDTYPE` ({@linkcode
 * WEIGHT_CODE}), with the block decoding in `quant.wgsl`. The weights stay quantised in GPU memory (and in the
 * offloading engine's expert slots); no separate dequantisation pass runs.
 *
 * - {@linkcode matvecQuant}: `y[T, N] (+)= x[T, K] · W[N, K]^T` for a few rows of `x` (decode).
 * - The MoE expert GEMVs (`moeGateUp`, `moeDown`, `moeDownCombine` of `moe.ts`) take a
 *   {@linkcode WeightType} `dtype`, so quantised pools work through the slot table as the other
 *   dtypes do.
 *
 * A row of `K` values is `K / 32` blocks of 34 (Q8_0), 22 (Q5_0) or 18 (Q4_0) bytes or `K / 256`
 * super-blocks of 144 (Q4_K), 176 (Q5_K) or 210 (Q6_K) bytes ({@linkcode weightRowBytes}); a
 * binding holds whole rows back to back (Q8_0, Q5_0, Q4_0 and Q6_K rows may start at 2 mod 4 bytes)
 * and must cover them rounded up to whole 4-byte words. Prefill over quantised weights is `linear`'s: the portable
 * `matmul` decodes blocks while it stages them (`quant_values.wgsl`).
 *
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { quantize } from "../runtime/weights/quant.ts";
 * import { matvecQuant } from "./quant_gemv.ts";
 * const gpu = await openGpu();
 * const W = Float32Array.from({ length: 4 * 256 }, (_, i) => Math.sin(i)); // N = 4, K = 256
 * const w = gpu.storage("dense", quantize(W, "q4_k"));
 * const x = gpu.storage("activations", new Float32Array(256).fill(1));
 * const y = gpu.storage("activations", 4 * 4);
 * gpu.submit([await matvecQuant(gpu, { x, w, y, K: 256, N: 4, type: "q4_k" })]);
 * console.log(await gpu.readF32(y));
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { DTYPE_CODE } from "../runtime/base/dtype.ts";
import { QUANT_TYPES, type QuantType } from "../runtime/weights/quant.ts";
import { isQuantType, weightRowBytes, type WeightType } from "../runtime/weights/weight_type.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { ParamWriter } from "./registry.ts";
import { checkGemvLayout, gemvConstants, type GemvLayout, gemvSource, MATVEC } from "./gemv.ts";
import type { KernelPreference } from "./linear_args.ts";
import { gemvLayout } from "./linear_variant.ts";
import {
  argBinding,
  argBoolean,
  argCount,
  argDistinct,
  argObject,
  argOneOf,
  argWeightRow,
  placeholder,
} from "./args.ts";

export {
  isQuantType,
  WEIGHT_TYPES,
  weightRowBytes,
  type WeightType,
} from "../runtime/weights/weight_type.ts";
export { argWeightRow, argWeightType } from "./args.ts";

/** The `WDTYPE` override of each weight type (`dtype.wgsl`, `quant.wgsl`). */
export const WEIGHT_CODE: Readonly<Record<WeightType, number>> = Object.freeze({
  ...DTYPE_CODE,
  q8_0: 3,
  q4_k: 4,
  q5_k: 5,
  q6_k: 6,
  q5_0: 7,
  q4_0: 8,
});

/**
 * The GEMV layout for rows of `K` weights of `t` on this device: `gemvLayout`'s rule, applied to the
 * row's stored bytes for the quantised types.
 */
export function weightGemvLayout(
  gpu: Gpu,
  K: number,
  t: WeightType,
  kernels: KernelPreference = "auto",
): GemvLayout {
  if (!isQuantType(t)) return gemvLayout(gpu, K, t, kernels);
  return gemvLayout(gpu, Math.max(1, Math.floor(weightRowBytes(K, t) / 4)), "f32", kernels);
}

/** Arguments of {@linkcode matvecQuant}. */
export interface MatvecQuantArgs {
  /** Input activations, f32 `[T, K]` row-major. */
  x: Binding;
  /** Weights `[N, K]`, `N` rows of `type` blocks back to back (as stored in a GGUF file). */
  w: Binding;
  /** Output f32 `[T, N]`; must not share a buffer with `x` or `w`. */
  y: Binding;
  /** Rows of `x` (tokens), 1 to 8; default 1. */
  T?: number;
  /** Inputs per row: a multiple of 32 (Q8_0) or 256 (the K types). */
  K: number;
  /** Outputs per row. */
  N: number;
  /** The weights' format. */
  type: QuantType;
  /** Add the product to `y` instead of overwriting it. Default false. */
  accumulate?: boolean;
  /** The GEMV layout (default: {@linkcode weightGemvLayout}); for A/B runs and tests. */
  layout?: GemvLayout;
  /** `portable` keeps to the portable GEMV layouts (see `gemvLayout`). */
  kernels?: KernelPreference;
  /**
   * Q4_K / Q5_K: weight rows per lane group, 1 or 2 (each x value read once for the same unit of
   * two rows; a workgroup covers twice the layout's rows). Default: 2 for Q4_K where the layout
   * allows it (the default layout's workgroup memory), else 1.
   */
  rowsPerLane?: 1 | 2;
}

/**
 * Q4_K rows per lane group by default: 2 (on the H100 1402 GB/s against 1282 with one,
 * `docs/decisions.md`) where `layout` fits two rows' workgroup memory, else 1.
 */
function defaultRowsPerLane(gpu: Gpu, layout: GemvLayout, type: QuantType): 1 | 2 {
  if (type !== "q4_k") return 1;
  try {
    checkGemvLayout(gpu, layout, "layout", 0, true);
    return 2;
  } catch {
    return 1;
  }
}

/** Rows of `x` one pass over the weights handles (`matvec.wgsl`'s TB). */
const QUANT_TB = 1;

/**
 * Builds the decode GEMV `y[t, n] = W[n, :] · x[t, :]` (`+=` with `accumulate`) over quantised
 * weights, decoded in registers: the lanes of a row read it coalesced where the layout allows
 * (`quant_gemv.wgsl`: Q4_K / Q5_K in 64-value units whose words and x values sit side by side
 * across lanes, Q8_0 word by word), the other types one block unit per lane (`quant.wgsl`).
 *
 * @throws {ArgumentError} naming the bad argument: sizes, a `K` that is not whole blocks, an unknown
 *   type, bindings too small or sharing a buffer, a bad layout.
 * @example
 * ```ts ignore
 * const y = gpu.storage("activations", 3 * 64 * 4);
 * gpu.submit([await matvecQuant(gpu, { x, w, y, T: 3, K: 4096, N: 64, type: "q8_0" })]);
 * ```
 */
export async function matvecQuant(gpu: Gpu, args: MatvecQuantArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T ?? 1, 1, 8);
  const K = argCount("K", args.K);
  const N = argCount("N", args.N);
  const type = argOneOf("type", args.type, QUANT_TYPES, "quantised format");
  argWeightRow("K", K, type, "weights");
  const accumulate = args.accumulate === undefined
    ? false
    : argBoolean("accumulate", args.accumulate);
  const bytes = Math.ceil((N * weightRowBytes(K, type)) / 4) * 4;
  const x = argBinding(gpu, "x", args.x, T * K * 4, `f32 [T=${T}, K=${K}]`);
  const w = argBinding(gpu, "w", args.w, bytes, `${type} [N=${N}, K=${K}]`);
  const y = argBinding(gpu, "y", args.y, T * N * 4, `f32 [T=${T}, N=${N}]`);
  argDistinct("y", y, { x, w });
  const chosen = args.layout ?? weightGemvLayout(gpu, K, type, args.kernels ?? "auto");
  const rpl = args.rowsPerLane ?? defaultRowsPerLane(gpu, chosen, type);
  if (rpl !== 1 && rpl !== 2) {
    throw new ArgumentError("rowsPerLane", `expected 1 or 2, got ${args.rowsPerLane}`);
  }
  if (rpl === 2 && type !== "q4_k" && type !== "q5_k") {
    throw new ArgumentError("rowsPerLane", `2 is for q4_k and q5_k weights, got ${type}`);
  }
  // The default layout with the default rows a lane group is checked already.
  const layout = args.layout === undefined && (rpl === 1 || args.rowsPerLane === undefined)
    ? chosen
    : checkGemvLayout(gpu, chosen, "layout", 0, rpl === 2);
  const pipeline = await gpu.pipeline(gemvSource(MATVEC, layout), {
    ...gemvConstants(layout),
    TB: QUANT_TB,
    WDTYPE: WEIGHT_CODE[type],
    ACC: accumulate ? 1 : 0,
    RPL: rpl,
  });
  const params = gpu.uniform(new ParamWriter().u32(T, K, N, 1).bytes(), "matvec.params");
  // x is read as vec4 (K is a multiple of 32); the vec4 weight view serves the Q4_K / Q5_K
  // super-block headers (16-byte aligned).
  const xv = { ...x, size: T * K * 4 };
  const wv = w.size >= 16 ? { ...w, size: w.size - (w.size % 16) } : placeholder(gpu);
  return gpu.dispatch(
    pipeline,
    [params, x, wv, w, y, xv],
    gpu.grid(Math.ceil(N / (layout.ROWS * rpl))),
    `matvec.${type}:${layout.name}${rpl === 2 ? "x2" : ""}`,
  );
}
