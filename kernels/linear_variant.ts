/**
 * The two places that choose a linear layer's kernel from the device and the shape; the builders
 * follow their answers, and no caller tests features itself:
 *
 * - {@linkcode matmulVariant}: the prefill GEMM, portable `matmul` or the subgroup-matrix
 *   `matmulSgmatrix`;
 * - {@linkcode gemvLayout}: the layout of the decode GEMVs (`matvec`, `moeGateUp`, `moeDown`,
 *   `moeDownCombine`, `qkvProj`), from the rule {@linkcode chooseGemvLayout} in `gemv.ts`.
 *
 * Both answer `portable` for `kernels: "portable"` or `PREGATE_KERNELS=portable`, and say why.
 *
 * @example
 * ```ts
 * import { gemvLayout } from "./linear_variant.ts";
 * // A device without subgroups (the rule reads only its features and adapter info).
 * const features = { shaderF16: false, subgroups: false, timestampQuery: false, subgroupMatrix: false };
 * console.log(gemvLayout({ features }, 4096, "bf16").name); // "t32r4u2-tree"
 * ```
 * @module
 */
import type { Gpu } from "../runtime/base/gpu/device.ts";
import type { DType } from "../runtime/base/dtype.ts";
import { argCount, argDType, argObject } from "./args.ts";
import { chooseGemvLayout, gemvDevice, type GemvLayout } from "./gemv.ts";
import { type KernelPreference, portableRequired } from "./linear_args.ts";
import {
  sgmatrixGroups,
  sgmatrixTuneFor,
  type SgmatrixTuning,
  sgmatrixUnsupported,
} from "./matmul_sgmatrix.ts";

/**
 * `linear` considers `matmulSgmatrix` only from this many rows of `x` (prefill); below it the
 * portable `matmul` (or `matvec`, decode) runs. One workgroup covers 128 rows at the default tiling,
 * so fewer rows waste most of it.
 */
export const SGMATRIX_MIN_T = 64;

/**
 * The prefill GEMMs: `portable` (`matmul`, any device, f32 arithmetic) and `sgmatrix`
 * (`matmulSgmatrix`, subgroup matrices, f16 operands).
 */
export type MatmulVariant = "portable" | "sgmatrix";

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

/**
 * The one place that chooses the prefill GEMM: `sgmatrix` (`matmulSgmatrix`) when nothing forbids
 * it, the device can run it (`sgmatrixUnsupported`), the weights are 16-bit (f32 weights keep f32
 * arithmetic), `T >= SGMATRIX_MIN_T` (decode and small batches stay portable), `K` is a multiple of 8
 * and the default tiling fits the device; otherwise `portable` (`matmul`). `kernels: "portable"` or
 * `PREGATE_KERNELS=portable` (read with `--allow-env`) force `portable`. `linear` follows the answer.
 *
 * @throws {ArgumentError} on a malformed shape, an unknown `kernels` or `PREGATE_KERNELS` value.
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { matmulVariant } from "./linear_variant.ts";
 * const gpu = await openGpu(); // or { gpu: "dawn" }
 * const c = matmulVariant(gpu, { T: 512, K: 4096, N: 4096, dtype: "bf16" });
 * console.log(c.variant, c.reason); // "sgmatrix ..." on an H200 with Dawn, "portable ..." elsewhere
 * ```
 */
export function matmulVariant(
  gpu: Gpu,
  shape: MatmulShape,
  kernels: KernelPreference = "auto",
): MatmulChoice {
  const required = portableRequired(kernels);
  argObject(shape);
  const T = argCount("T", shape.T);
  const K = argCount("K", shape.K);
  const N = argCount("N", shape.N);
  const dtype = argDType("dtype", shape.dtype);
  const portable = (reason: string): MatmulChoice => ({ variant: "portable", reason });
  if (required) return portable(required);
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
  const tune = sgmatrixTuneFor(gpu);
  if (typeof tune === "string") return portable(tune);
  const grid = sgmatrixGroups(gpu, tune, T, N);
  if ("message" in grid) return portable(grid.message);
  return {
    variant: "sgmatrix",
    reason: `subgroup matrices f16->f32 16x16x16, ${dtype} weights, T=${T}, ` +
      `K step ${tune.BK} in ${tune.STAGES} workgroup buffer(s)`,
    tune: Object.freeze(tune),
  };
}

/**
 * The one place that chooses the layout of the decode GEMVs (`matvec`, `moeGateUp`, `moeDown`,
 * `moeDownCombine`, `qkvProj`) for rows of `K` weights of `dtype` on this device
 * ({@linkcode chooseGemvLayout}):
 *
 * - devices with the `subgroups` feature and subgroups of exactly 32 lanes: the subgroup reduction,
 *   `t16r16u2-sg` for rows under 2 KiB, `t32r8u2-sg` under 8 KiB, `t128r1u2-sg` beyond;
 * - otherwise, or with `kernels: "portable"` or `PREGATE_KERNELS=portable` (read with
 *   `--allow-env`): the portable tree reduction, `t32r4u2-tree` for rows under 16 KiB,
 *   `t64r4u2-tree` beyond.
 *
 * @throws {ArgumentError} on a bad `K`, `dtype`, `kernels` or `PREGATE_KERNELS` value.
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { gemvLayout } from "./linear_variant.ts";
 * const gpu = await openGpu(); // or { gpu: "dawn" }
 * const l = gemvLayout(gpu, 4096, "bf16");
 * console.log(l.name, l.reason); // "t128r1u2-sg ..." on an H200 with Dawn, "t32r4u2-tree ..." elsewhere
 * ```
 */
export function gemvLayout(
  gpu: Pick<Gpu, "features"> & { adapterInfo?: Gpu["adapterInfo"] },
  K: number,
  dtype: DType,
  kernels: KernelPreference = "auto",
): GemvLayout {
  const required = portableRequired(kernels);
  argCount("K", K);
  argDType("dtype", dtype);
  return chooseGemvLayout(gemvDevice(gpu), K, dtype, required);
}
