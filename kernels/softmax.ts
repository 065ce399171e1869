/**
 * Row-wise softmax (`softmax.wgsl`) over f32 `[rows, cols]`, numerically stable (the row maximum is
 * subtracted before `exp`), in f32, one workgroup per row; any `cols` >= 1. `out` may be a separate
 * buffer or exactly `x` (in place); another range of `x`'s buffer is an error. Used for router probabilities
 * (`softmax(router_logits)` in HF Mixtral/Qwen-MoE) and anywhere a standalone softmax is needed.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { softmax } from "./softmax.ts";
 * const gpu = await openGpu();
 * const x = gpu.storage("activations", new Float32Array([0, Math.log(3)]));
 * gpu.submit([await softmax(gpu, { x, out: x, rows: 1, cols: 2 })]);
 * console.log(await gpu.readF32(x)); // Float32Array [0.25, 0.75]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { argBinding, argCount, argInPlace, argObject } from "./args.ts";

/** Softmax of each row into `out` (`softmax.wgsl`). */
export const SOFTMAX: KernelSpec = defineKernel({
  name: "softmax",
  file: "softmax.wgsl",
  entry: "softmax",
  bindings: ["params", "x", "out"],
  constants: { WG: 256 },
});

/** Softmax of each row in place (`softmax.wgsl`). */
export const SOFTMAX_INPLACE: KernelSpec = defineKernel({
  name: "softmax_inplace",
  file: "softmax.wgsl",
  entry: "softmax_inplace",
  bindings: ["params", "x"],
  constants: { WG: 256 },
});

/** Arguments of {@linkcode softmax}. */
export interface SoftmaxArgs {
  /** Input, f32 `[rows, cols]` row-major. */
  x: Binding;
  /** Output, f32 `[rows, cols]`: a separate buffer, or `x` itself (in place). */
  out: Binding;
  /** Rows, >= 1. */
  rows: number;
  /** Values per row, >= 1. */
  cols: number;
}

/**
 * Builds the dispatch of `out[r, :] = softmax(x[r, :])` for each of `rows` rows of `cols` f32 values.
 * A row holding `-Infinity` entries gets 0 there; a row that is all `-Infinity` (or holds NaN) gives
 * NaN, as torch does.
 *
 * @example
 * ```ts ignore
 * // Router probabilities of T tokens over E experts, in place on the router logits.
 * gpu.submit([await softmax(gpu, { x: logits, out: logits, rows: T, cols: E })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, bindings too small, shared buffer).
 */
export async function softmax(gpu: Gpu, args: SoftmaxArgs): Promise<Dispatch> {
  argObject(args);
  const rows = argCount("rows", args.rows);
  const cols = argCount("cols", args.cols);
  const x = argBinding(gpu, "x", args.x, rows * cols * 4);
  const out = argBinding(gpu, "out", args.out, rows * cols * 4);
  const mode = argInPlace(out, x);
  let WG = 32;
  while (WG < 256 && WG * 4 < cols) WG *= 2;
  const spec = mode === "inplace" ? SOFTMAX_INPLACE : SOFTMAX;
  const pipeline = await gpu.pipeline(spec, { WG });
  const params = gpu.uniform(new ParamWriter().u32(rows, cols).bytes(), `${spec.name}.params`);
  return gpu.dispatch(
    pipeline,
    mode === "inplace" ? [params, x] : [params, x, out],
    gpu.grid(rows),
  );
}
