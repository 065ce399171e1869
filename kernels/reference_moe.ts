/**
 * CPU references of the MoE kernels (float64).
 *
 * @example
 * ```ts
 * import { moeCombineRef } from "./reference.ts";
 * const out = moeCombineRef(new Float32Array([1, 2]), new Float32Array([0.5]), new Float32Array([1, 1]), 1, 1, 2);
 * console.log(out); // Float64Array [1.5, 2]
 * ```
 * @module
 */

const silu = (v: number) => v / (1 + Math.exp(-v));

/**
 * SwiGLU expert MLP hidden activations for every (token, choice) pair: `h[p] = silu(Wg_e x_t) *
 * (Wu_e x_t)` where `e = ids[p]`, `t = p / topK`; `gate[e]`, `up[e]` are [I, H] row-major.
 */
export function moeGateUpRef(
  x: ArrayLike<number>,
  gate: ArrayLike<number>[],
  up: ArrayLike<number>[],
  ids: ArrayLike<number>,
  T: number,
  topK: number,
  H: number,
  I: number,
): Float64Array {
  const out = new Float64Array(T * topK * I);
  for (let p = 0; p < T * topK; p++) {
    const t = Math.floor(p / topK), e = ids[p];
    for (let r = 0; r < I; r++) {
      let g = 0, u = 0;
      for (let c = 0; c < H; c++) {
        g += gate[e][r * H + c] * x[t * H + c];
        u += up[e][r * H + c] * x[t * H + c];
      }
      out[p * I + r] = silu(g) * u;
    }
  }
  return out;
}

/**
 * ReLU expert input activations (Switch / T5 experts, one input matrix): `h[p] = relu(Wi_e x_t)`
 * where `e = ids[p]`, `t = p / topK`; `wi[e]` is [I, H] row-major.
 *
 * @example
 * ```ts
 * import { moeUpReluRef } from "./reference.ts";
 * console.log(moeUpReluRef([1, 2], [[1, 1, -1, 0]], [0], 1, 1, 2, 2)); // Float64Array [3, 0]
 * ```
 */
export function moeUpReluRef(
  x: ArrayLike<number>,
  wi: ArrayLike<number>[],
  ids: ArrayLike<number>,
  T: number,
  topK: number,
  H: number,
  I: number,
): Float64Array {
  const out = new Float64Array(T * topK * I);
  for (let p = 0; p < T * topK; p++) {
    const t = Math.floor(p / topK), e = ids[p];
    for (let r = 0; r < I; r++) {
      let acc = 0;
      for (let c = 0; c < H; c++) acc += wi[e][r * H + c] * x[t * H + c];
      out[p * I + r] = Math.max(acc, 0);
    }
  }
  return out;
}

/** Expert down projections: `y[p] = Wd_e h[p]`, `down[e]` is [H, I] row-major. */
export function moeDownRef(
  h: ArrayLike<number>,
  down: ArrayLike<number>[],
  ids: ArrayLike<number>,
  P: number,
  H: number,
  I: number,
): Float64Array {
  const out = new Float64Array(P * H);
  for (let p = 0; p < P; p++) {
    const e = ids[p];
    for (let r = 0; r < H; r++) {
      let acc = 0;
      for (let c = 0; c < I; c++) acc += down[e][r * I + c] * h[p * I + c];
      out[p * H + r] = acc;
    }
  }
  return out;
}

/**
 * `residual[t] + sum_j w[t, j] y[t * topK + j] (+ sigmoid(g[t]) s[t])`: the combined MoE output
 * added to the residual stream.
 */
export function moeCombineRef(
  y: ArrayLike<number>,
  weights: ArrayLike<number>,
  residual: ArrayLike<number>,
  T: number,
  topK: number,
  H: number,
  shared?: { out: ArrayLike<number>; gate: ArrayLike<number> },
): Float64Array {
  const out = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < H; n++) {
      let acc = 0;
      for (let j = 0; j < topK; j++) acc += weights[t * topK + j] * y[(t * topK + j) * H + n];
      if (shared) acc += shared.out[t * H + n] / (1 + Math.exp(-shared.gate[t]));
      out[t * H + n] = residual[t * H + n] + acc;
    }
  }
  return out;
}

/**
 * The fused down projection + combine (`moeDownCombine`): `residual[t] + sum_j w[t, j] * (Wd_e
 * h[t * topK + j]) (+ sigmoid(g[t]) s[t])` with `e = ids[t * topK + j]`, `down[e]` [H, I] row-major:
 * {@linkcode moeDownRef} followed by {@linkcode moeCombineRef}, as one loop.
 *
 * @example
 * ```ts
 * import { moeDownCombineRef } from "./reference.ts";
 * // One token, one choice: expert 0 is the 1 x 1 matrix [3]; weight 0.5; residual 1.
 * console.log(moeDownCombineRef([2], [[3]], [0], [0.5], [1], 1, 1, 1, 1)); // Float64Array [4]
 * ```
 */
export function moeDownCombineRef(
  h: ArrayLike<number>,
  down: ArrayLike<number>[],
  ids: ArrayLike<number>,
  weights: ArrayLike<number>,
  residual: ArrayLike<number>,
  T: number,
  topK: number,
  H: number,
  I: number,
  shared?: { out: ArrayLike<number>; gate: ArrayLike<number> },
): Float64Array {
  const out = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < H; r++) {
      let acc = 0;
      for (let j = 0; j < topK; j++) {
        const p = t * topK + j, e = ids[p];
        let y = 0;
        for (let c = 0; c < I; c++) y += down[e][r * I + c] * h[p * I + c];
        acc += weights[p] * y;
      }
      if (shared) acc += shared.out[t * H + r] / (1 + Math.exp(-shared.gate[t]));
      out[t * H + r] = residual[t * H + r] + acc;
    }
  }
  return out;
}
