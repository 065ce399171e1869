/**
 * T5's relative position bias (Switch Transformers, T5): the bucket of a relative position
 * ({@linkcode relativePositionBucket}, bit for bit as transformers computes it in float32) and the
 * small per-stack table the attention kernel reads ({@linkcode relativeBiasTable}): because every
 * distance at or beyond `maxDistance` falls in the last bucket, the bias of any (query, key) pair is
 * `table[h, clamp(key - query, -maxDistance, maxDistance) + maxDistance]`, so one
 * `[heads, 2 * maxDistance + 1]` table per stack serves every layer, position and sequence length
 * (`attention`'s `relativeBias` argument).
 *
 * @example
 * ```ts
 * import { relativeBiasTable, relativePositionBucket } from "./relative_bias.ts";
 * console.log(relativePositionBucket(-20, true, 32, 128)); // 10
 * // Weights [buckets=4, heads=1], bidirectional, max distance 3:
 * const t = relativeBiasTable([10, 11, 12, 13], { heads: 1, buckets: 4, maxDistance: 3,
 *   bidirectional: true });
 * console.log(t); // Float32Array [11, 11, 11, 10, 13, 13, 13]: key - query = -3 .. 3
 * ```
 * @module
 */
import { ArgumentError } from "../runtime/base/errors.ts";

const f32 = Math.fround;

/**
 * The bucket of relative position `rel` (key position minus query position), as transformers'
 * `T5Attention._relative_position_bucket`: bidirectional (encoder) buckets use half the buckets for
 * keys after the query; causal (decoder) ones only see `rel <= 0`. Half of a direction's buckets are
 * exact distances, the rest logarithmic up to `maxDistance`. The logarithmic part is evaluated with
 * float32 roundings where torch rounds to float32, so the truncation lands where HF's does.
 *
 * @example
 * ```ts
 * import { relativePositionBucket } from "./relative_bias.ts";
 * console.log([0, -1, -7, -8, -100, -200].map((r) => relativePositionBucket(r, false, 32, 128)));
 * // [0, 1, 7, 8, 30, 31]
 * ```
 */
export function relativePositionBucket(
  rel: number,
  bidirectional: boolean,
  numBuckets: number,
  maxDistance: number,
): number {
  let n = numBuckets, base = 0, r = rel;
  if (bidirectional) {
    n = Math.floor(n / 2);
    if (r > 0) base = n;
    r = Math.abs(r);
  } else {
    r = -Math.min(r, 0);
  }
  const maxExact = Math.floor(n / 2);
  if (r < maxExact) return base + r;
  // torch: (log(float(r) / max_exact) / math.log(max_distance / max_exact) * (n - max_exact)).long()
  const ratio = f32(f32(Math.log(f32(r / maxExact))) / f32(Math.log(maxDistance / maxExact)));
  const large = maxExact + Math.trunc(f32(ratio * (n - maxExact)));
  return base + Math.min(large, n - 1);
}

/** Shape of a relative position bias: see {@linkcode relativeBiasTable}. */
export interface RelativeBiasShape {
  /** Attention heads. */
  heads: number;
  /** Buckets (`relative_attention_num_buckets`). */
  buckets: number;
  /** Saturation distance (`relative_attention_max_distance`). */
  maxDistance: number;
  /** Encoder (true) or decoder (false) buckets. */
  bidirectional: boolean;
}

/**
 * The attention kernel's relative bias table, f32 `[heads, 2 * maxDistance + 1]`: entry
 * `(h, d + maxDistance)` is `weights[bucket(d), h]` for `d = key - query` in
 * `[-maxDistance, maxDistance]`, from the checkpoint's `relative_attention_bias.weight`
 * (`weights`, `[buckets, heads]` row-major).
 *
 * @example
 * ```ts
 * import { relativeBiasTable } from "./relative_bias.ts";
 * const t = relativeBiasTable([1, 2, 3, 4, 5, 6, 7, 8], { heads: 2, buckets: 4, maxDistance: 2,
 *   bidirectional: false });
 * console.log(t.length); // 10 (2 heads x 5 distances)
 * ```
 * @throws {ArgumentError} when `weights` is not `[buckets, heads]` or a size is invalid.
 */
export function relativeBiasTable(
  weights: ArrayLike<number>,
  shape: RelativeBiasShape,
): Float32Array {
  const { heads, buckets, maxDistance, bidirectional } = shape;
  for (const [k, v] of Object.entries({ heads, buckets, maxDistance })) {
    if (!Number.isInteger(v) || v < 1) {
      throw new ArgumentError(k, `expected a positive integer, got ${v}`);
    }
  }
  if (weights.length !== buckets * heads) {
    throw new ArgumentError(
      "weights",
      `expected [buckets=${buckets}, heads=${heads}] = ${buckets * heads} values, got ` +
        weights.length,
    );
  }
  const width = 2 * maxDistance + 1;
  const table = new Float32Array(heads * width);
  for (let d = -maxDistance; d <= maxDistance; d++) {
    const b = relativePositionBucket(d, bidirectional, buckets, maxDistance);
    for (let h = 0; h < heads; h++) table[h * width + d + maxDistance] = weights[b * heads + h];
  }
  return table;
}
