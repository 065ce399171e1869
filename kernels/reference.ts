/**
 * CPU references of every kernel, computed in float64 (JS numbers) from the same inputs the GPU gets.
 * Kernel tests compare against these. Each function is deliberately the plainest possible loop.
 *
 * @example
 * ```ts
 * import { addRef } from "./reference.ts";
 * console.log(addRef(new Float32Array([1]), new Float32Array([2]))); // Float64Array [3]
 * ```
 * @module
 */

/** `a + b`. */
export function addRef(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}
