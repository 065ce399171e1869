/**
 * CPU references (float64, plainest loops) of the attention, router and argmax kernels
 * (`attention.ts`, `router.ts`, `argmax.ts`), of the fused RoPE + KV append (`ropeKv` of
 * `rope.ts`) and of T5's relative position bias as a dense bias. Kernel tests compare the GPU
 * against these.
 *
 * @example
 * ```ts
 * import { argmaxRef } from "./reference.ts";
 * console.log(argmaxRef(new Float32Array([1, 3, 3, 2]), 1, 4)); // Uint32Array [1]
 * ```
 * @module
 */
import { roundTo } from "../runtime/base/dtype.ts";
import { ropeRef } from "./reference_pointwise.ts";
import { relativePositionBucket } from "./relative_bias.ts";

/** Shapes of a KV cache `[nKvHeads, maxSeq, headDim]` and of a batch of `T` tokens. */
export interface KvShape {
  /** Tokens in the batch. */
  T: number;
  /** Key/value heads. */
  nKvHeads: number;
  /** Head dimension. */
  headDim: number;
  /** Cache capacity in positions. */
  maxSeq: number;
}

/**
 * The caches after {@linkcode kvAppend}: copies of `kCache` and `vCache` (`[nKvHeads, maxSeq,
 * headDim]`) with token t of `k`, `v` (`[T, nKvHeads, headDim]`) written at position `pos0 + t`;
 * tokens at or beyond `maxSeq` are dropped.
 *
 * @example
 * ```ts
 * import { kvAppendRef } from "./reference.ts";
 * const s = { T: 1, nKvHeads: 1, headDim: 2, maxSeq: 2 };
 * const r = kvAppendRef([0, 0, 0, 0], [0, 0, 0, 0], [1, 2], [3, 4], 1, s);
 * console.log(r.kCache); // Float64Array [0, 0, 1, 2]
 * ```
 */
export function kvAppendRef(
  kCache: ArrayLike<number>,
  vCache: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  pos0: number,
  s: KvShape,
): { kCache: Float64Array; vCache: Float64Array } {
  const kc = Float64Array.from(kCache), vc = Float64Array.from(vCache);
  for (let t = 0; t < s.T; t++) {
    if (pos0 + t >= s.maxSeq) continue;
    for (let g = 0; g < s.nKvHeads; g++) {
      for (let d = 0; d < s.headDim; d++) {
        const src = (t * s.nKvHeads + g) * s.headDim + d;
        const dst = (g * s.maxSeq + pos0 + t) * s.headDim + d;
        kc[dst] = k[src];
        vc[dst] = v[src];
      }
    }
  }
  return { kCache: kc, vCache: vc };
}

/** Shapes and RoPE parameters of {@linkcode ropeKvRef}. */
export interface RopeKvShape extends KvShape {
  /** Query heads. */
  nHeads: number;
  /** Rotated dims per head (even). */
  rotaryDim: number;
  /** Inverse frequencies, `rotaryDim / 2` f32 values. */
  invFreq: Float32Array;
  /** Pairing (see {@linkcode ropeRef}). */
  style: "neox" | "interleaved";
}

/**
 * The fused RoPE + KV append: `q` rotated ({@linkcode ropeRef}), and the caches after
 * {@linkcode kvAppendRef} of the rotated `k` and of `v`, token t at position `pos0 + t`.
 *
 * @example
 * ```ts
 * import { ropeKvRef } from "./reference.ts";
 * const s = { T: 1, nHeads: 1, nKvHeads: 1, headDim: 2, maxSeq: 1, rotaryDim: 2,
 *   invFreq: new Float32Array([1]), style: "neox" as const };
 * const r = ropeKvRef([1, 0], [0, 1], [5, 6], [0, 0], [0, 0], 0, s);
 * console.log(r.q, r.kCache, r.vCache); // [1, 0] [0, 1] [5, 6] (position 0: no rotation)
 * ```
 */
export function ropeKvRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  kCache: ArrayLike<number>,
  vCache: ArrayLike<number>,
  pos0: number,
  s: RopeKvShape,
): { q: Float64Array; kCache: Float64Array; vCache: Float64Array } {
  const rot = (x: ArrayLike<number>, heads: number) =>
    ropeRef(x, {
      T: s.T,
      heads,
      rotaryDim: s.rotaryDim,
      stride: heads * s.headDim,
      headStride: s.headDim,
      offset: 0,
      pos0,
      invFreq: s.invFreq,
      style: s.style,
    });
  const caches = kvAppendRef(kCache, vCache, rot(k, s.nKvHeads), v, pos0, s);
  return { q: rot(q, s.nHeads), ...caches };
}

/** Shapes and options of {@linkcode attentionRef} (as for the `attention` kernel). */
export interface AttentionShape extends KvShape {
  /** Query heads (a multiple of nKvHeads). */
  nHeads: number;
  /** Position of the batch's first token (used when causal). */
  pos0: number;
  /** Score scale. */
  scale: number;
  /** Causal: query t sees positions [0, pos0 + t]; otherwise [0, kvLen). */
  causal: boolean;
  /** Keys attended when not causal. */
  kvLen?: number;
  /** Optional additive bias `[nHeads, T, biasKeys]`. */
  bias?: ArrayLike<number>;
  /** The bias's last dimension. */
  biasKeys?: number;
}

/**
 * Attention of `q` (`[T, nHeads, headDim]`) over the caches (`[nKvHeads, maxSeq, headDim]`):
 * `out[t, h] = sum_j softmax_j(scale * q[t, h] . k[g, j] + bias[h, t, j]) v[g, j]`, with
 * `g = floor(h / (nHeads / nKvHeads))` and j over `[0, min(pos0 + t + 1, maxSeq))` (causal) or
 * `[0, min(kvLen, maxSeq))`. Returns `[T, nHeads, headDim]`.
 *
 * @example
 * ```ts
 * import { attentionRef } from "./reference.ts";
 * const o = attentionRef([1], [0, 0], [5, 7], { T: 1, nHeads: 1, nKvHeads: 1, headDim: 1,
 *   maxSeq: 2, pos0: 1, scale: 1, causal: true });
 * console.log(o); // Float64Array [6]
 * ```
 */
export function attentionRef(
  q: ArrayLike<number>,
  kCache: ArrayLike<number>,
  vCache: ArrayLike<number>,
  s: AttentionShape,
): Float64Array {
  const D = s.headDim;
  const group = s.nHeads / s.nKvHeads;
  const out = new Float64Array(s.T * s.nHeads * D);
  for (let t = 0; t < s.T; t++) {
    const n = Math.min(s.causal ? s.pos0 + t + 1 : s.kvLen!, s.maxSeq);
    for (let h = 0; h < s.nHeads; h++) {
      const g = Math.floor(h / group);
      const scores = new Float64Array(n);
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) {
          dot += q[(t * s.nHeads + h) * D + d] * kCache[(g * s.maxSeq + j) * D + d];
        }
        let sc = dot * s.scale;
        if (s.bias && j < s.biasKeys!) sc += s.bias[(h * s.T + t) * s.biasKeys! + j];
        scores[j] = sc;
        max = Math.max(max, sc);
      }
      let sum = 0;
      for (let j = 0; j < n; j++) {
        scores[j] = Math.exp(scores[j] - max);
        sum += scores[j];
      }
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let j = 0; j < n; j++) acc += scores[j] * vCache[(g * s.maxSeq + j) * D + d];
        out[(t * s.nHeads + h) * D + d] = acc / sum;
      }
    }
  }
  return out;
}

/**
 * {@linkcode attentionRef} with the arithmetic of llama.cpp's CPU flash attention (ggml's one-chunk
 * path), in f32: q rounded to f16; each key's score as a dot product; then the keys in order with
 * a running max `M` and sum `S`: a score above `M` scales the f16 accumulator by `exp(M - s)` and
 * becomes `M` (weight 1), another gets weight `exp(s - M)`; `acc = f16(acc + v * weight)` per
 * value; `out = acc * (1 / S)`. The caches are taken as given (f16-rounded in llama.cpp).
 *
 * @example
 * ```ts
 * import { attentionLlamaCppRef } from "./reference.ts";
 * const o = attentionLlamaCppRef([1], [0, 0], [5, 7], { T: 1, nHeads: 1, nKvHeads: 1,
 *   headDim: 1, maxSeq: 2, pos0: 1, scale: 1, causal: true });
 * console.log(o); // Float32Array [6]
 * ```
 */
export function attentionLlamaCppRef(
  q: ArrayLike<number>,
  kCache: ArrayLike<number>,
  vCache: ArrayLike<number>,
  s: AttentionShape,
): Float32Array {
  const f = Math.fround, D = s.headDim, group = s.nHeads / s.nKvHeads;
  const half = (x: Float32Array) => x.set(roundTo(x, "f16"));
  const out = new Float32Array(s.T * s.nHeads * D);
  for (let t = 0; t < s.T; t++) {
    const n = Math.min(s.causal ? s.pos0 + t + 1 : s.kvLen!, s.maxSeq);
    for (let h = 0; h < s.nHeads; h++) {
      const g = Math.floor(h / group), row = (t * s.nHeads + h) * D;
      const qh = Float32Array.from({ length: D }, (_, d) => q[row + d]);
      half(qh);
      const acc = new Float32Array(D);
      let m = -3e38, l = 0;
      for (let j = 0; j < n; j++) {
        const key = (g * s.maxSeq + j) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot = f(dot + f(qh[d] * kCache[key + d]));
        let sc = f(dot * s.scale);
        if (s.bias && j < s.biasKeys!) sc = f(sc + s.bias[(h * s.T + t) * s.biasKeys! + j]);
        let ms = 1, vs = 1;
        if (sc > m) {
          ms = f(Math.exp(m - sc));
          m = sc;
          for (let d = 0; d < D; d++) acc[d] = f(acc[d] * ms);
          half(acc);
        } else vs = f(Math.exp(sc - m));
        l = f(f(l * ms) + vs);
        for (let d = 0; d < D; d++) acc[d] = f(acc[d] + f(vCache[key + d] * vs));
        half(acc);
      }
      const inv = l > 0 ? f(1 / l) : 0;
      for (let d = 0; d < D; d++) out[row + d] = f(acc[d] * inv);
    }
  }
  return out;
}

/**
 * Router top-k over `T` rows of `E` logits: softmax over E, the k most probable experts (ties: lower
 * index first; order: descending probability) and their probabilities, renormalised to sum 1 over
 * the k when `renormalize`. Returns `ids` and `weights`, each `[T, k]`. A row with a NaN or +Infinity
 * logit gets NaN weights (NaN logits rank after every number).
 *
 * @example
 * ```ts
 * import { routerTopKRef } from "./reference.ts";
 * const r = routerTopKRef([0, 2, 1], 1, 3, 2, true);
 * console.log(r.ids); // Uint32Array [1, 2]
 * ```
 */
export function routerTopKRef(
  logits: ArrayLike<number>,
  T: number,
  E: number,
  k: number,
  renormalize: boolean,
): { ids: Uint32Array; weights: Float64Array } {
  const ids = new Uint32Array(T * k), weights = new Float64Array(T * k);
  for (let t = 0; t < T; t++) {
    const row = Array.from({ length: E }, (_, e) => logits[t * E + e]);
    const max = Math.max(...row);
    const ex = row.map((x) => Math.exp(x - max));
    const sum = ex.reduce((a, b) => a + b, 0);
    const rank = (x: number) => (Number.isNaN(x) ? -Infinity : x);
    const order = row.map((_, e) => e).sort((a, b) =>
      rank(row[b]) - rank(row[a]) || (Number.isNaN(row[a]) ? 1 : 0) -
        (Number.isNaN(row[b]) ? 1 : 0) ||
      a - b
    );
    const bad = row.some((x) => Number.isNaN(x) || x === Infinity);
    const chosen = order.slice(0, k);
    const chosenSum = chosen.reduce((a, e) => a + ex[e], 0);
    chosen.forEach((e, i) => {
      ids[t * k + i] = e;
      weights[t * k + i] = bad ? NaN : ex[e] / (renormalize ? chosenSum : sum);
    });
  }
  return { ids, weights };
}

/**
 * Row-wise argmax of `x` (`[rows, cols]`): the index of the largest value of each row, the lowest
 * such index on ties; `0xffffffff` (`NON_FINITE_TOKEN` of argmax.ts) for a row without a finite
 * maximum: one holding a NaN or a +Infinity, or only -Infinity values (-Infinity entries are
 * otherwise never chosen).
 *
 * @example
 * ```ts
 * import { argmaxRef } from "./reference.ts";
 * console.log(argmaxRef([0, 5, 5, NaN, 2, 1, -Infinity, 3, -Infinity], 3, 3)); // Uint32Array [1, 4294967295, 1]
 * ```
 */
export function argmaxRef(x: ArrayLike<number>, rows: number, cols: number): Uint32Array {
  const out = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (x[r * cols + c] > x[r * cols + best]) best = c;
    let finite = Number.isFinite(x[r * cols + best]);
    for (let c = 0; c < cols && finite; c++) if (Number.isNaN(x[r * cols + c])) finite = false;
    out[r] = finite ? best : 0xffffffff;
  }
  return out;
}

/** Shape of {@linkcode relativeBiasDenseRef}. */
export interface RelativeBiasDenseShape {
  /** Heads. */
  nHeads: number;
  /** Queries. */
  T: number;
  /** Key positions (the bias's last dimension). */
  keys: number;
  /** Position of query 0. */
  pos0: number;
  /** Buckets of `weights`. */
  buckets: number;
  /** Saturation distance. */
  maxDistance: number;
  /** Encoder (true) or decoder (false) buckets. */
  bidirectional: boolean;
}

/**
 * T5's relative position bias as a dense `[nHeads, T, keys]` bias for {@linkcode attentionRef}:
 * entry `(h, t, j)` is `weights[bucket(j - (pos0 + t)), h]` (`weights` `[buckets, heads]`), the
 * bucket computed for each pair (no distance clamping, no table).
 *
 * @example
 * ```ts
 * import { relativeBiasDenseRef } from "./reference.ts";
 * const b = relativeBiasDenseRef([5, 6, 7, 8], { nHeads: 1, T: 1, keys: 2, pos0: 1, buckets: 4,
 *   maxDistance: 8, bidirectional: false });
 * console.log(b); // Float64Array [6, 5]: key 0 is one step back (bucket 1), key 1 is the query
 * ```
 */
export function relativeBiasDenseRef(
  weights: ArrayLike<number>,
  s: RelativeBiasDenseShape,
): Float64Array {
  const out = new Float64Array(s.nHeads * s.T * s.keys);
  for (let h = 0; h < s.nHeads; h++) {
    for (let t = 0; t < s.T; t++) {
      for (let j = 0; j < s.keys; j++) {
        const b = relativePositionBucket(
          j - (s.pos0 + t),
          s.bidirectional,
          s.buckets,
          s.maxDistance,
        );
        out[(h * s.T + t) * s.keys + j] = weights[b * s.nHeads + h];
      }
    }
  }
  return out;
}
