/**
 * Elementwise kernels (`elementwise.wgsl`) over f32 vectors: residual add ({@linkcode add},
 * {@linkcode addInPlace}), scaling in place ({@linkcode scale}) and a per-column bias added to every
 * row in place ({@linkcode addBias}).
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { add, addInPlace, scale } from "./elementwise.ts";
 * const gpu = await openGpu();
 * const a = gpu.storage("activations", new Float32Array([1, 2]));
 * const b = gpu.storage("activations", new Float32Array([3, 4]));
 * const out = gpu.storage("activations", 8);
 * gpu.submit([
 *   await add(gpu, { a, b, out, n: 2 }), // out = [4, 6]
 *   await addInPlace(gpu, { x: a, y: b, n: 2 }), // a = [4, 6]
 *   await scale(gpu, { x: a, n: 2, s: 0.5 }), // a = [2, 3]
 * ]);
 * console.log(await gpu.readF32(out), await gpu.readF32(a)); // [4, 6] [2, 3]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { argBinding, argCount, argDistinct, argNumber, argObject } from "./args.ts";

const WG = 256;

/** `out = a + b` over `n` f32 values. */
export const ADD: KernelSpec = defineKernel({
  name: "add",
  file: "elementwise.wgsl",
  entry: "add",
  bindings: ["params", "a", "b", "out"],
  constants: { WG },
});

/** `x += y` over `n` f32 values. */
export const ADD_INPLACE: KernelSpec = defineKernel({
  name: "add_inplace",
  file: "elementwise.wgsl",
  entry: "add_inplace",
  bindings: ["params", "x", "y"],
  constants: { WG },
});

/** `x *= s` over `n` f32 values. */
export const SCALE: KernelSpec = defineKernel({
  name: "scale",
  file: "elementwise.wgsl",
  entry: "scale",
  bindings: ["params", "x"],
  constants: { WG },
});

/** `x[r, c] += bias[c]` over `rows` rows of `n` f32 values. */
export const ADD_BIAS: KernelSpec = defineKernel({
  name: "add_bias",
  file: "elementwise.wgsl",
  entry: "add_bias",
  bindings: ["params", "x", "bias"],
  constants: { WG },
});

/**
 * Builds the dispatch of `out[i] = a[i] + b[i]` for `i < n` (f32). `out` must not share a buffer
 * with `a` or `b`.
 *
 * @throws {ArgumentError} naming the bad argument (count, binding too small, shared buffer).
 */
export async function add(
  gpu: Gpu,
  args: { a: Binding; b: Binding; out: Binding; n: number },
): Promise<Dispatch> {
  argObject(args);
  const n = argCount("n", args.n);
  const a = argBinding(gpu, "a", args.a, n * 4);
  const b = argBinding(gpu, "b", args.b, n * 4);
  const out = argBinding(gpu, "out", args.out, n * 4);
  argDistinct("out", out, { a, b });
  const pipeline = await gpu.pipeline(ADD, { WG });
  const params = gpu.uniform(new ParamWriter().u32(n).bytes(), "add.params");
  return gpu.dispatch(pipeline, [params, a, b, out], gpu.grid(Math.ceil(n / WG)));
}

/**
 * Builds the dispatch of `x[i] += y[i]` for `i < n` (f32). `y` must not share a buffer with `x`.
 *
 * @example
 * ```ts ignore
 * gpu.submit([await addInPlace(gpu, { x: residual, y: attnOut, n: T * hidden })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (count, binding too small, shared buffer).
 */
export async function addInPlace(
  gpu: Gpu,
  args: { x: Binding; y: Binding; n: number },
): Promise<Dispatch> {
  argObject(args);
  const n = argCount("n", args.n);
  const x = argBinding(gpu, "x", args.x, n * 4);
  const y = argBinding(gpu, "y", args.y, n * 4);
  argDistinct("y", y, { x });
  const pipeline = await gpu.pipeline(ADD_INPLACE, { WG });
  const params = gpu.uniform(new ParamWriter().u32(n).f32(0).bytes(), "add_inplace.params");
  return gpu.dispatch(pipeline, [params, x, y], gpu.grid(Math.ceil(n / WG)));
}

/**
 * Builds the dispatch of `x[i] *= s` for `i < n` (f32; `s` is rounded to f32).
 *
 * @example
 * ```ts ignore
 * gpu.submit([await scale(gpu, { x: hidden, n: T * dim, s: Math.sqrt(dim) })]);
 * ```
 * @throws {ArgumentError} naming the bad argument.
 */
export async function scale(
  gpu: Gpu,
  args: { x: Binding; n: number; s: number },
): Promise<Dispatch> {
  argObject(args);
  const n = argCount("n", args.n);
  const s = argNumber("s", args.s);
  const x = argBinding(gpu, "x", args.x, n * 4);
  const pipeline = await gpu.pipeline(SCALE, { WG });
  const params = gpu.uniform(new ParamWriter().u32(n).f32(s).bytes(), "scale.params");
  return gpu.dispatch(pipeline, [params, x], gpu.grid(Math.ceil(n / WG)));
}

/** Arguments of {@linkcode addBias}. */
export interface AddBiasArgs {
  /** f32 `[rows, n]` row-major, updated in place. */
  x: Binding;
  /** f32 `[n]` (biases are converted to f32 on the host at load); not in `x`'s buffer. */
  bias: Binding;
  /** Rows, >= 1. */
  rows: number;
  /** Values per row (the bias length), >= 1. */
  n: number;
}

/**
 * Builds the dispatch of `x[r, c] += bias[c]` for `r < rows`, `c < n` (f32), in place: the q/k/v
 * projection biases of Qwen2-MoE (HF `nn.Linear(bias=True)`), added after the bias-free matmul.
 *
 * @example
 * ```ts ignore
 * gpu.submit([await addBias(gpu, { x: q, bias: qBias, rows: T, n: heads * headDim })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, bindings too small, shared buffer).
 */
export async function addBias(gpu: Gpu, args: AddBiasArgs): Promise<Dispatch> {
  argObject(args);
  const rows = argCount("rows", args.rows);
  const n = argCount("n", args.n);
  const total = rows * n; // the binding check below bounds it by the binding size limit
  const x = argBinding(gpu, "x", args.x, total * 4);
  const bias = argBinding(gpu, "bias", args.bias, n * 4);
  argDistinct("bias", bias, { x });
  const pipeline = await gpu.pipeline(ADD_BIAS, { WG });
  const params = gpu.uniform(new ParamWriter().u32(total).f32(0).u32(n).bytes(), "add_bias.params");
  return gpu.dispatch(pipeline, [params, x, bias], gpu.grid(Math.ceil(total / WG)));
}
