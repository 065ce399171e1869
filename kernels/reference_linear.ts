/**
 * CPU references of the linear-layer kernels (`linear.ts`), in float64 (JS numbers), as the plainest
 * possible loops. Weights are given unpacked (as f32 values, already rounded to their dtype when the
 * GPU sees 16-bit weights: use `roundTo` from `runtime/weights/dtype.ts`).
 *
 * @example
 * ```ts
 * import { matmulRef } from "./reference.ts";
 * // x = [[1, 2]] (T = 1, K = 2), W = [[1, 0], [1, 1]] (N = 2)
 * console.log(matmulRef([1, 2], [1, 0, 1, 1], 1, 2, 2)); // Float64Array [1, 3]
 * ```
 * @module
 */

/**
 * `y[t, n] = init[t, n] + sum_k x[t, k] * w[n, k]` for `t < T`, `n < N`: `x` is `[T, K]`, `w` is
 * `[N, K]` (one row per output, as stored in weight files), the result `[T, N]`, all row-major.
 * `init` (optional, `[T, N]`) is the previous content of `y` in accumulate mode.
 *
 * @example
 * ```ts
 * import { matmulRef } from "./reference.ts";
 * console.log(matmulRef([1, 2], [3, 4], 1, 2, 1, [10])); // Float64Array [21]
 * ```
 */
export function matmulRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  T: number,
  K: number,
  N: number,
  init?: ArrayLike<number>,
): Float64Array {
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let s = init ? init[t * N + n] : 0;
      for (let k = 0; k < K; k++) s += x[t * K + k] * w[n * K + k];
      y[t * N + n] = s;
    }
  }
  return y;
}

/**
 * `y[n] = init[n] + sum_k w[n, k] * x[k]` for one vector `x` of length `K` (`T = 1` of
 * {@linkcode matmulRef}); `w` is `[N, K]` row-major.
 *
 * @example
 * ```ts
 * import { matvecRef } from "./reference.ts";
 * console.log(matvecRef([1, 2, 3, 4], [1, 1], 2, 2)); // Float64Array [3, 7]
 * ```
 */
export function matvecRef(
  w: ArrayLike<number>,
  x: ArrayLike<number>,
  K: number,
  N: number,
  init?: ArrayLike<number>,
): Float64Array {
  return matmulRef(x, w, 1, K, N, init);
}
