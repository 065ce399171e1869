/**
 * Activations rounded as llama.cpp's CPU backend rounds them before each product with quantised or
 * half-precision weights (`round_activations.wgsl`), so that Pregate's products over a GGUF file
 * are llama.cpp's up to the order of additions: the activation format of each weight type (its
 * `vec_dot_type`) is {@linkcode llamaCppActivationFormat}.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { roundActivations } from "./round_activations.ts";
 * const gpu = await openGpu();
 * const x = gpu.storage("activations", new Float32Array(32).map((_, i) => i / 10));
 * const out = gpu.storage("activations", 32 * 4);
 * gpu.submit([await roundActivations(gpu, { x, out, rows: 1, K: 32, format: "q8_0" })]);
 * console.log((await gpu.readF32(out))[1]); // 0.0976..., 0.1 on the Q8_0 grid of a block up to 3.1
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import type { WeightType } from "../runtime/weights/weight_type.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { argBinding, argCount, argDistinct, argObject, argOneOf } from "./args.ts";
import { ArgumentError } from "../runtime/base/errors.ts";

/** How activations are rounded: llama.cpp's Q8_0 or Q8_K blocks, or f16 / bf16 values. */
export type ActivationFormat = "q8_0" | "q8_k" | "f16" | "bf16";

const FORMAT_CODE: Readonly<Record<ActivationFormat, number>> = {
  q8_0: 0,
  q8_k: 1,
  f16: 2,
  bf16: 3,
};

/** Values per block of each format (f16 and bf16 round value by value). */
export const ACTIVATION_BLOCK: Readonly<Record<ActivationFormat, number>> = {
  q8_0: 32,
  q8_k: 256,
  f16: 1,
  bf16: 1,
};

/**
 * The format llama.cpp's CPU backend rounds activations to before a product with weights of
 * `type`, or null for f32 weights (products in f32).
 *
 * @example
 * ```ts
 * import { llamaCppActivationFormat } from "./round_activations.ts";
 * console.log(llamaCppActivationFormat("q4_k"), llamaCppActivationFormat("f32")); // q8_k null
 * ```
 */
export function llamaCppActivationFormat(type: WeightType): ActivationFormat | null {
  switch (type) {
    case "f32":
      return null;
    case "f16":
      return "f16";
    case "bf16":
      return "bf16";
    case "q8_0":
    case "q5_0":
    case "q4_0":
      return "q8_0";
    case "q4_k":
    case "q5_k":
    case "q6_k":
      return "q8_k";
  }
}

const WG = 64;

/** `out = round(x)` per block (`round_activations.wgsl`). */
export const ROUND_ACTIVATIONS: KernelSpec = defineKernel({
  name: "round_activations",
  file: "round_activations.wgsl",
  entry: "main",
  bindings: ["params", "x", "out"],
  constants: { WG, FORMAT: 0 },
});

/** Arguments of {@linkcode roundActivations}. */
export interface RoundActivationsArgs {
  /** f32 [rows, K]. */
  x: Binding;
  /** f32 [rows, K]; not `x`'s buffer. */
  out: Binding;
  rows: number;
  /** Values per row: a multiple of the format's block ({@linkcode ACTIVATION_BLOCK}). */
  K: number;
  format: ActivationFormat;
}

/**
 * Builds the dispatch of `out = x` rounded in `format` (see `round_activations.wgsl`).
 *
 * @throws {ArgumentError} naming the bad argument (format, counts, a `K` that is not whole blocks,
 *   bindings too small or shared).
 */
export async function roundActivations(gpu: Gpu, args: RoundActivationsArgs): Promise<Dispatch> {
  argObject(args);
  const format = argOneOf("format", args.format, Object.keys(FORMAT_CODE) as ActivationFormat[]);
  const rows = argCount("rows", args.rows);
  const K = argCount("K", args.K);
  const block = ACTIVATION_BLOCK[format];
  if (K % block !== 0) {
    throw new ArgumentError("K", `${format} rounds blocks of ${block} values; got rows of ${K}`);
  }
  const x = argBinding(gpu, "x", args.x, rows * K * 4);
  const out = argBinding(gpu, "out", args.out, rows * K * 4);
  argDistinct("out", out, { x });
  const blocks = (rows * K) / block;
  const pipeline = await gpu.pipeline(ROUND_ACTIVATIONS, { WG, FORMAT: FORMAT_CODE[format] });
  const params = gpu.uniform(
    new ParamWriter().u32(blocks, 0, 0, 0).bytes(),
    "round_activations.params",
  );
  return gpu.dispatch(pipeline, [params, x, out], gpu.grid(Math.ceil(blocks / WG)));
}
