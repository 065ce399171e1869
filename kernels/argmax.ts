/**
 * Row-wise argmax kernel (`argmax.wgsl`): greedy sampling over vocabulary logits ({@linkcode argmax}).
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { argmax } from "./argmax.ts";
 * const gpu = await openGpu();
 * const x = gpu.storage("activations", new Float32Array([0.5, 2, 2, -1, 7, 1]));
 * const out = gpu.storage("activations", 8);
 * gpu.submit([await argmax(gpu, { x, out, rows: 2, cols: 3 })]);
 * console.log(await gpu.readU32(out)); // Uint32Array [1, 1]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { argBinding, argCount, argDistinct, argObject, argThreads, wideThreads } from "./args.ts";

/**
 * The index {@linkcode argmax} and `sample` write for a row without a finite maximum (a NaN, a
 * +Infinity, or nothing but -Infinity): no valid token id (ids are below the vocabulary size), so
 * the token readback itself says the logits were broken, at no extra cost.
 *
 * @example
 * ```ts
 * import { NON_FINITE_TOKEN } from "./argmax.ts";
 * console.log(NON_FINITE_TOKEN === 0xffffffff); // true
 * ```
 */
export const NON_FINITE_TOKEN = 0xffffffff;

/** Row-wise argmax, one workgroup per row. */
export const ARGMAX: KernelSpec = defineKernel({
  name: "argmax",
  file: "argmax.wgsl",
  entry: "main",
  bindings: ["params", "x", "out"],
  constants: { WG: 256 },
});

/** Arguments of {@linkcode argmax}. */
export interface ArgmaxArgs {
  /** Values, f32 `[rows, cols]`. */
  x: Binding;
  /** Indices, u32 `[rows]` (written). */
  out: Binding;
  /** Rows. */
  rows: number;
  /** Columns (e.g. the vocabulary size), at most 2^32 - 2. */
  cols: number;
  /** Threads per row (a power of two, 32 .. the device's limit); default 1024 on a GPU. */
  threads?: number;
}

/**
 * Builds the dispatch of `out[r] = argmax_c x[r, c]` (u32): the lowest index among equal maxima;
 * {@linkcode NON_FINITE_TOKEN} when the row holds a NaN or a +Infinity or only -Infinity values
 * (-Infinity entries are otherwise masked: never chosen).
 *
 * @example
 * ```ts ignore
 * gpu.submit([await argmax(gpu, { x: logits, out: tokens, rows: 1, cols: 151_936 })]);
 * ```
 * @throws {ArgumentError} naming the first bad argument.
 */
export async function argmax(gpu: Gpu, args: ArgmaxArgs): Promise<Dispatch> {
  argObject(args);
  const rows = argCount("rows", args.rows);
  const cols = argCount("cols", args.cols, 1, 0xfffffffe);
  const x = argBinding(gpu, "x", args.x, rows * cols * 4, `f32 [rows=${rows}, cols=${cols}]`);
  const out = argBinding(gpu, "out", args.out, rows * 4, `u32 [rows=${rows}]`);
  argDistinct("out", out, { x });
  // A wide workgroup on a GPU (one row is a decode step's whole vocabulary), 256 on a software one.
  const WG = args.threads === undefined ? wideThreads(gpu) : argThreads(gpu, args.threads);
  const pipeline = await gpu.pipeline(ARGMAX, { WG });
  const params = gpu.uniform(new ParamWriter().u32(rows, cols).bytes(), "argmax.params");
  return gpu.dispatch(pipeline, [params, x, out], gpu.grid(rows));
}
