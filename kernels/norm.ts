/**
 * Row normalisations (`norm.wgsl`) over f32 rows `[rows, dim]`, computed in f32 with one workgroup
 * per row:
 *
 * - {@linkcode rmsnorm}: `y = x * rsqrt(mean(x^2) + eps) * (w + offset)` — HF `LlamaRMSNorm` /
 *   `MixtralRMSNorm` (`offset` 0), Gemma-style norms (`offset` 1, the weight stored minus one), and
 *   also T5's `T5LayerNorm`, which is an RMS norm (no mean subtraction, no bias).
 * - {@linkcode layernorm}: `y = (x - mean(x)) * rsqrt(var(x) + eps) * w (+ b)` — torch
 *   `nn.LayerNorm` (biased variance), with or without a bias.
 *
 * Norm weights and biases are f32 vectors of `dim` values (converted on the host at load). `out` may
 * be a separate buffer or exactly `x` (in place, a separate entry point); any other binding sharing
 * a written buffer is an error. Any `dim` >= 1 works (the workgroup strides over the row).
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { rmsnorm } from "./norm.ts";
 * const gpu = await openGpu();
 * const x = gpu.storage("activations", new Float32Array([3, 4]));
 * const weight = gpu.storage("dense", new Float32Array([1, 2]));
 * const out = gpu.storage("activations", 8);
 * gpu.submit([await rmsnorm(gpu, { x, weight, out, rows: 1, dim: 2, eps: 0 })]);
 * // rms = sqrt((9 + 16) / 2) = 3.5355
 * console.log(await gpu.readF32(out)); // Float32Array [0.8485, 2.2627]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import {
  argBinding,
  argCount,
  argDistinct,
  argInPlace,
  argNumber,
  argObject,
  argThreads,
  wideThreads,
} from "./args.ts";

/** RMS norm of each row into `out` (`norm.wgsl`). */
export const RMSNORM: KernelSpec = defineKernel({
  name: "rmsnorm",
  file: "norm.wgsl",
  entry: "rmsnorm",
  bindings: ["params", "x", "weight", "out"],
  constants: { WG: 256 },
});

/** RMS norm of each row in place (`norm.wgsl`). */
export const RMSNORM_INPLACE: KernelSpec = defineKernel({
  name: "rmsnorm_inplace",
  file: "norm.wgsl",
  entry: "rmsnorm_inplace",
  bindings: ["params", "x", "weight"],
  constants: { WG: 256 },
});

/** LayerNorm of each row into `out`; `bias` is read only when `BIAS` is 1 (`norm.wgsl`). */
export const LAYERNORM: KernelSpec = defineKernel({
  name: "layernorm",
  file: "norm.wgsl",
  entry: "layernorm",
  bindings: ["params", "x", "weight", "bias", "out"],
  constants: { WG: 256, BIAS: 0 },
});

/** LayerNorm of each row in place (`norm.wgsl`). */
export const LAYERNORM_INPLACE: KernelSpec = defineKernel({
  name: "layernorm_inplace",
  file: "norm.wgsl",
  entry: "layernorm_inplace",
  bindings: ["params", "x", "weight", "bias"],
  constants: { WG: 256, BIAS: 0 },
});

/** Arguments of {@linkcode rmsnorm}. */
export interface RmsNormArgs {
  /** Input, f32 `[rows, dim]` row-major. */
  x: Binding;
  /** Weight, f32 `[dim]`. */
  weight: Binding;
  /** Output, f32 `[rows, dim]`: a separate buffer, or `x` itself (in place). */
  out: Binding;
  /** Rows (tokens), >= 1. */
  rows: number;
  /** Values per row, >= 1. */
  dim: number;
  /** Added to the mean square, >= 0 (e.g. 1e-5 or 1e-6; `rms_norm_eps` in HF configs). */
  eps: number;
  /** Added to the weight (1 for Gemma-style `(1 + w)` norms); default 0. */
  offset?: number;
  /** Threads per row (a power of two, 32 .. the device's limit); default chosen from `dim`. */
  threads?: number;
}

/** Arguments of {@linkcode layernorm}. */
export interface LayerNormArgs {
  /** Input, f32 `[rows, dim]` row-major. */
  x: Binding;
  /** Weight (gamma), f32 `[dim]`. */
  weight: Binding;
  /** Optional bias (beta), f32 `[dim]`. */
  bias?: Binding;
  /** Output, f32 `[rows, dim]`: a separate buffer, or `x` itself (in place). */
  out: Binding;
  /** Rows (tokens), >= 1. */
  rows: number;
  /** Values per row, >= 1. */
  dim: number;
  /** Added to the variance, >= 0 (`layer_norm_eps` / `layer_norm_epsilon` in HF configs). */
  eps: number;
  /** Threads per row (a power of two, 32 .. the device's limit); default chosen from `dim`. */
  threads?: number;
}

/**
 * Threads per row: about four values per thread, a power of two from 32 to 1024 on a GPU (the
 * device's limit permitting; a decode step's norms are one row, whose speed is load latency) or to
 * 256 on a software adapter.
 */
function workgroupSize(gpu: Gpu, dim: number, threads?: number): number {
  if (threads !== undefined) return argThreads(gpu, threads);
  const cap = wideThreads(gpu);
  let wg = 32;
  while (wg * 2 <= cap && wg * 4 < dim) wg *= 2;
  return wg;
}

/**
 * Builds the dispatch of an RMS norm over each of `rows` rows of `dim` f32 values:
 * `out = x * rsqrt(mean(x^2) + eps) * (weight + offset)`, in f32 (HF `LlamaRMSNorm`; also T5's
 * `T5LayerNorm`, which has no mean subtraction and no bias). `out` may be `x` (in place).
 *
 * @example
 * ```ts ignore
 * // Pre-attention norm of T tokens, in place on the hidden states.
 * gpu.submit([await rmsnorm(gpu, { x: h, weight: ln1, out: h, rows: T, dim: 4096, eps: 1e-5 })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, eps, bindings too small, shared buffers).
 */
export async function rmsnorm(gpu: Gpu, args: RmsNormArgs): Promise<Dispatch> {
  argObject(args);
  const rows = argCount("rows", args.rows);
  const dim = argCount("dim", args.dim);
  const eps = argNumber("eps", args.eps, { min: 0 });
  const offset = argNumber("offset", args.offset ?? 0);
  const x = argBinding(gpu, "x", args.x, rows * dim * 4);
  const weight = argBinding(gpu, "weight", args.weight, dim * 4);
  const out = argBinding(gpu, "out", args.out, rows * dim * 4);
  const mode = argInPlace(out, x);
  argDistinct("out", out, { weight });
  const WG = workgroupSize(gpu, dim, args.threads);
  const spec = mode === "inplace" ? RMSNORM_INPLACE : RMSNORM;
  const pipeline = await gpu.pipeline(spec, { WG });
  const params = gpu.uniform(
    new ParamWriter().u32(rows, dim).f32(eps, offset).bytes(),
    `${spec.name}.params`,
  );
  const bindings = mode === "inplace" ? [params, x, weight] : [params, x, weight, out];
  return gpu.dispatch(pipeline, bindings, gpu.grid(rows));
}

/**
 * Builds the dispatch of a LayerNorm over each of `rows` rows of `dim` f32 values:
 * `out = (x - mean) * rsqrt(var + eps) * weight (+ bias)` with the biased variance, in f32 (torch
 * `nn.LayerNorm`). `out` may be `x` (in place). For T5's RMS-style "LayerNorm" use
 * {@linkcode rmsnorm}.
 *
 * @example
 * ```ts ignore
 * gpu.submit([await layernorm(gpu, { x, weight: g, bias: b, out, rows: T, dim: 768, eps: 1e-5 })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, eps, bindings too small, shared buffers).
 */
export async function layernorm(gpu: Gpu, args: LayerNormArgs): Promise<Dispatch> {
  argObject(args);
  const rows = argCount("rows", args.rows);
  const dim = argCount("dim", args.dim);
  const eps = argNumber("eps", args.eps, { min: 0 });
  const x = argBinding(gpu, "x", args.x, rows * dim * 4);
  const weight = argBinding(gpu, "weight", args.weight, dim * 4);
  const bias = args.bias === undefined ? undefined : argBinding(gpu, "bias", args.bias, dim * 4);
  const out = argBinding(gpu, "out", args.out, rows * dim * 4);
  const mode = argInPlace(out, x);
  argDistinct("out", out, { weight, bias });
  const WG = workgroupSize(gpu, dim, args.threads);
  const spec = mode === "inplace" ? LAYERNORM_INPLACE : LAYERNORM;
  const pipeline = await gpu.pipeline(spec, { WG, BIAS: bias ? 1 : 0 });
  const params = gpu.uniform(
    new ParamWriter().u32(rows, dim).f32(eps, 0).bytes(),
    `${spec.name}.params`,
  );
  // Without a bias the kernel never reads binding 3; the weight stands in for it.
  const b = bias ?? weight;
  const bindings = mode === "inplace" ? [params, x, weight, b] : [params, x, weight, b, out];
  return gpu.dispatch(pipeline, bindings, gpu.grid(rows));
}
