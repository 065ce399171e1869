/**
 * CPU references of every kernel, computed in float64 (JS numbers) from the same inputs the GPU gets:
 * the single entry point for kernel tests and benchmarks. Each function is deliberately the plainest
 * possible loop. The references live by kernel family in `reference_*.ts` and are all re-exported
 * here:
 *
 * - `reference_pointwise.ts`: elementwise, norm, rope, softmax, activation, embedding.
 * - `reference_linear.ts`: matmul, matvec, the fused q/k/v projections (+ biases).
 * - `reference_attention.ts`: kv append, fused rope + kv append, attention, router top-k, argmax.
 * - `reference_moe.ts`: expert gate/up, down, combine, fused down + combine.
 * - `reference_sample.ts`: the sampler's hash and rule.
 *
 * @example
 * ```ts
 * import { addRef, matmulRef } from "./reference.ts";
 * console.log(addRef(new Float32Array([1]), new Float32Array([2]))); // Float64Array [3]
 * console.log(matmulRef([1, 2], [1, 0, 1, 1], 1, 2, 2)); // Float64Array [1, 3]
 * ```
 * @module
 */
export * from "./reference_attention.ts";
export * from "./reference_linear.ts";
export * from "./reference_moe.ts";
export * from "./reference_pointwise.ts";
export * from "./reference_sample.ts";

/** `a + b`. */
export function addRef(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}
