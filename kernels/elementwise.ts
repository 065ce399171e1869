/**
 * Elementwise kernels (`elementwise.wgsl`): residual add.
 *
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { add } from "./elementwise.ts";
 * const gpu = await openGpu();
 * const a = gpu.storage("activations", new Float32Array([1, 2]));
 * const b = gpu.storage("activations", new Float32Array([3, 4]));
 * const out = gpu.storage("activations", 8);
 * gpu.submit([await add(gpu, { a, b, out, n: 2 })]);
 * console.log(await gpu.readF32(out)); // Float32Array [4, 6]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/gpu/device.ts";
import { defineKernel, ParamWriter } from "./registry.ts";

const WG = 256;

/** `out = a + b` over `n` f32 values. */
export const ADD = defineKernel({
  name: "add",
  file: "elementwise.wgsl",
  entry: "add",
  bindings: ["params", "a", "b", "out"],
  constants: { WG },
});

/** Builds the dispatch of `out[i] = a[i] + b[i]` for `i < n`. `out` must not alias `a` or `b`. */
export async function add(
  gpu: Gpu,
  args: { a: Binding; b: Binding; out: Binding; n: number },
): Promise<Dispatch> {
  const pipeline = await gpu.pipeline(ADD, { WG });
  const params = gpu.uniform(new ParamWriter().u32(args.n).bytes(), "add.params");
  return gpu.dispatch(
    pipeline,
    [params, args.a, args.b, args.out],
    gpu.grid(Math.ceil(args.n / WG)),
  );
}
