/**
 * CPU references of the linear-layer kernels (`linear.ts`), in float64 (JS numbers), as the plainest
 * possible loops. Weights are given unpacked (as f32 values, already rounded to their dtype when the
 * GPU sees 16-bit weights: use `roundTo` from `runtime/base/dtype.ts`).
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

/**
 * The q, k and v projections of `x` (`[T, K]`) as `qkvProj` computes them, plus the biases as
 * `qkvBias` adds them: `q = x wq^T (+ bq)` (`wq` is `[Nq, K]`), `k = x wk^T (+ bk)`,
 * `v = x wv^T (+ bv)` (`wk`, `wv` are `[Nkv, K]`), each `[T, N]` row-major.
 *
 * @example
 * ```ts
 * import { qkvRef } from "./reference.ts";
 * const r = qkvRef([1, 2], { q: [1, 1], k: [1, 0], v: [0, 1] }, 1, 2, 1, 1, { q: [1], k: [0], v: [0] });
 * console.log(r.q, r.k, r.v); // [4] [1] [2]
 * ```
 */
export function qkvRef(
  x: ArrayLike<number>,
  w: { q: ArrayLike<number>; k: ArrayLike<number>; v: ArrayLike<number> },
  T: number,
  K: number,
  Nq: number,
  Nkv: number,
  bias?: { q: ArrayLike<number>; k: ArrayLike<number>; v: ArrayLike<number> },
): { q: Float64Array; k: Float64Array; v: Float64Array } {
  const proj = (m: ArrayLike<number>, N: number, b?: ArrayLike<number>) => {
    const y = matmulRef(x, m, T, K, N);
    if (b) { for (let i = 0; i < y.length; i++) y[i] += b[i % N]; }
    return y;
  };
  return { q: proj(w.q, Nq, bias?.q), k: proj(w.k, Nkv, bias?.k), v: proj(w.v, Nkv, bias?.v) };
}
