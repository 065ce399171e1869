/**
 * What the linear-layer builders share: their arguments ({@linkcode LinearArgs}), the kernel
 * preference a caller may pass ({@linkcode KernelPreference}, also read from `PREGATE_KERNELS`), and
 * the checks of shapes, bindings, tiling overrides and workgroup sizes. The builders themselves are
 * in `linear.ts` and `matmul_sgmatrix.ts`.
 *
 * @example
 * ```ts
 * import { KERNEL_PREFERENCES } from "./linear_args.ts";
 * console.log(KERNEL_PREFERENCES); // ["auto", "portable"]
 * ```
 * @module
 */
import { readEnv } from "../runtime/base/env.ts";
import type { Binding, Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { weightRowBytes, type WeightType } from "../runtime/weights/weight_type.ts";
import {
  argBinding,
  argBoolean,
  argCount,
  argDistinct,
  argEvenRow,
  argObject,
  argOneOf,
  argWeightRow,
  argWeightType,
  type BindingRange,
} from "./args.ts";

/**
 * Which kernels a caller allows: `auto` (the fastest the device and shape allow) or `portable` (only
 * the kernels that need no optional feature). `PREGATE_KERNELS=portable` in the environment forces
 * `portable` everywhere.
 */
export type KernelPreference = "auto" | "portable";

/** The values of {@linkcode KernelPreference}. */
export const KERNEL_PREFERENCES: readonly KernelPreference[] = ["auto", "portable"];

/**
 * `PREGATE_KERNELS` when set and readable (undefined without `--allow-env`).
 * @throws {ArgumentError} naming `PREGATE_KERNELS` when it is not a {@linkcode KernelPreference}.
 */
export function kernelsFromEnv(): KernelPreference | undefined {
  const v = readEnv("PREGATE_KERNELS");
  if (v === undefined || v === "") return undefined;
  return argOneOf("PREGATE_KERNELS", v, KERNEL_PREFERENCES, "kernel preference");
}

/**
 * Why the caller or the environment forbids optional-feature kernels, or `false` when nothing does.
 * @throws {ArgumentError} on an unknown `kernels` or `PREGATE_KERNELS` value.
 */
export function portableRequired(kernels: KernelPreference): string | false {
  const prefer = argOneOf("kernels", kernels, KERNEL_PREFERENCES, "kernel preference");
  if (prefer === "portable") return "the caller asked for the portable kernels";
  if (kernelsFromEnv() === "portable") return "PREGATE_KERNELS=portable";
  return false;
}

/** Arguments of `matmul`, `matvec`, `matmulSgmatrix` and `linear`. */
export interface LinearArgs {
  /** Input activations, f32 `[T, K]` row-major. */
  x: Binding;
  /**
   * Weights `[N, K]` (row n = the K inputs of output n), packed u32 words of `dtype` (block-quantised
   * types: rows of whole blocks back to back, as a GGUF file stores them).
   */
  w: Binding;
  /** Output f32 `[T, N]` row-major; must not share a buffer with `x` or `w`. */
  y: Binding;
  /** Rows of `x` (tokens), >= 1. Optional for `matvec` (default 1). */
  T: number;
  /** Inputs per row, >= 1 (even for 16-bit dtypes; whole blocks for the quantised types). */
  K: number;
  /** Outputs per row, >= 1. */
  N: number;
  /** The weights' type: `f32`, `f16`, `bf16`, or block-quantised (`q8_0`, `q4_k`, ...). */
  dtype: WeightType;
  /** Add the product to the existing contents of `y` instead of overwriting them. Default false. */
  accumulate?: boolean;
  /**
   * Which GEMM `linear` may pick for prefill (see `matmulVariant`): `auto` (default) or `portable`
   * (never the subgroup-matrix kernel, e.g. to A/B it); for decode (`matvec`, also through `linear`)
   * `portable` keeps to the portable GEMV layouts (see `gemvLayout`). Ignored by `matmul`.
   */
  kernels?: KernelPreference;
}

/** {@linkcode LinearArgs} after {@linkcode validateLinear}: sizes checked, bindings resolved. */
export interface CheckedLinear {
  x: BindingRange;
  w: BindingRange;
  y: BindingRange;
  T: number;
  K: number;
  N: number;
  dtype: WeightType;
  accumulate: boolean;
}

/**
 * Checks a linear layer's arguments against each other and the device; `xDtype` is the dtype `x`
 * holds (f16: two values per word).
 * @throws {ArgumentError} naming the bad argument: sizes, dtype, odd `K` with 16-bit values,
 *   bindings too small, misaligned or sharing a buffer (`y` with `x` or `w`).
 */
export function validateLinear(
  gpu: Gpu,
  args: LinearArgs,
  xDtype: "f32" | "f16" = "f32",
): CheckedLinear {
  argObject(args);
  const T = argCount("T", args.T);
  const K = argCount("K", args.K);
  const N = argCount("N", args.N);
  const dtype = argWeightType("dtype", args.dtype);
  argWeightRow("K", K, dtype, "weights");
  const accumulate = args.accumulate === undefined
    ? false
    : argBoolean("accumulate", args.accumulate);
  const words = Math.ceil((N * weightRowBytes(K, dtype)) / 4);
  if (xDtype === "f16") argEvenRow("K", K, "f16", "activations");
  const xBytes = T * K * (xDtype === "f16" ? 2 : 4);
  const x = argBinding(gpu, "x", args.x, xBytes, `${xDtype} [T=${T}, K=${K}]`);
  const w = argBinding(gpu, "w", args.w, words * 4, `${dtype} [N=${N}, K=${K}]`);
  const y = argBinding(gpu, "y", args.y, T * N * 4, `f32 [T=${T}, N=${N}]`);
  argDistinct("y", y, { x, w });
  return { x, w, y, T, K, N, dtype, accumulate };
}

/**
 * `defaults` with the fields of `tune` that are given, each checked against its `[min, max]` in
 * `bounds`.
 * @throws {ArgumentError} naming `tune` (not an object) or `tune.FIELD` (out of range).
 */
export function checkTune<K extends string>(
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

/**
 * Checks a workgroup of `size` threads using `sharedBytes` of workgroup memory against the device's
 * limits.
 * @throws {ArgumentError} naming `tune` when either is over a limit.
 */
export function checkWorkgroup(
  gpu: Gpu,
  what: string,
  size: [number, number],
  sharedBytes: number,
): void {
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
