/**
 * CPU references of the sampling kernel (`sample.ts`): the counter-based hash that gives every
 * (seed, counter, stream) its uniform number, bit for bit as the GPU computes it, and the sampling
 * rule itself (temperature, nucleus top-p with ties at the boundary kept, renormalise, inverse CDF in
 * token-index order) in float64. {@linkcode sampleRef} also reports, per row, how far the decision
 * was from a boundary, so tests compare GPU and CPU tokens exactly only where f32 rounding cannot
 * flip the choice.
 *
 * @example
 * ```ts
 * import { sampleRef, sampleUniformRef } from "./reference.ts";
 * const u = sampleUniformRef(42, 0, 0); // the uniform row 0 of the first call with seed 42 draws
 * const { tokens } = sampleRef(new Float32Array([0, 1, 2]), 1, 3, {
 *   temperature: 1, topP: 1, seed: 42, counter: 0,
 * });
 * console.log(u >= 0 && u < 1, tokens[0] < 3); // true true
 * ```
 * @module
 */

/**
 * Chris Wellons' `triple32` integer hash (hash-prospector): a bijection on u32 with near-ideal
 * avalanche. The WGSL `mix32` of `sample.wgsl` is the same function.
 */
export function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 17;
  h = Math.imul(h, 0xed5ad4bb);
  h ^= h >>> 11;
  h = Math.imul(h, 0xac4c1b51);
  h ^= h >>> 15;
  h = Math.imul(h, 0x31848bab);
  h ^= h >>> 14;
  return h >>> 0;
}

/**
 * The 32 random bits of stream `stream` (row + seedOffset) at call `counter` of seed `seed`:
 * `mix32(mix32(mix32(seed ^ 0x9e3779b9) ^ counter) ^ stream)`. For fixed seed and counter it is a
 * bijection of the stream, for fixed seed and stream a bijection of the counter.
 */
export function sampleBitsRef(seed: number, counter: number, stream: number): number {
  let h = mix32((seed ^ 0x9e3779b9) >>> 0);
  h = mix32((h ^ counter) >>> 0);
  return mix32((h ^ stream) >>> 0);
}

/** The uniform in [0, 1) drawn from {@linkcode sampleBitsRef}: its top 24 bits times 2^-24 (exact in f32). */
export function sampleUniformRef(seed: number, counter: number, stream: number): number {
  return (sampleBitsRef(seed, counter, stream) >>> 8) * 2 ** -24;
}

/** Sampling parameters of {@linkcode sampleRef} and {@linkcode topPDistributionRef}. */
export interface SampleRefOptions {
  /** > 0. */
  temperature: number;
  /** In (0, 1]; 1 keeps every token. */
  topP: number;
}

/**
 * The distribution a row is sampled from, in float64: `p = softmax(logits / temperature)`; with
 * `topP < 1` only the smallest set of highest-probability tokens whose mass is >= topP is kept
 * (tokens tied with the smallest kept probability are all kept), renormalised. Tokens outside the
 * nucleus get exactly 0.
 */
export function topPDistributionRef(
  logits: ArrayLike<number>,
  opts: SampleRefOptions,
): Float64Array {
  const { e, tau } = nucleus(logits, opts);
  const out = new Float64Array(e.length);
  let mass = 0;
  for (let c = 0; c < e.length; c++) if (e[c] >= tau && e[c] > 0) mass += e[c];
  for (let c = 0; c < e.length; c++) out[c] = e[c] >= tau && e[c] > 0 ? e[c] / mass : 0;
  return out;
}

/** Unnormalised probabilities `e = exp((l - max) / T)` of one row, the top-p threshold on them and
 * the threshold's distance to a decision boundary (relative to the total mass). */
function nucleus(
  logits: ArrayLike<number>,
  opts: SampleRefOptions,
): { e: Float64Array; tau: number; margin: number } {
  const V = logits.length;
  let m = -Infinity;
  for (let c = 0; c < V; c++) m = Math.max(m, logits[c]);
  const e = new Float64Array(V);
  let S = 0;
  for (let c = 0; c < V; c++) S += e[c] = Math.exp((logits[c] - m) / opts.temperature);
  if (opts.topP >= 1) return { e, tau: 0, margin: Infinity };
  // Distinct values, descending; the threshold is the largest value whose "mass of tokens >= it"
  // reaches topP * S.
  const target = opts.topP * S;
  const sorted = Float64Array.from(e).sort().reverse();
  let mass = 0;
  for (let i = 0; i < V;) {
    const v = sorted[i];
    const before = mass;
    while (i < V && sorted[i] === v) mass += sorted[i++];
    if (mass >= target) {
      return { e, tau: v, margin: Math.min(mass - target, target - before) / S };
    }
  }
  return { e, tau: sorted[V - 1], margin: 0 }; // unreachable for topP <= 1 but for rounding
}

/** Result of {@linkcode sampleRef}. */
export interface SampleRefResult {
  /** The token drawn for each row. */
  tokens: Uint32Array;
  /**
   * Per row, the distance (relative to the probability mass involved) of the top-p target and of
   * the drawn point to the nearest decision boundary; where it is tiny, f32 rounding on the GPU may
   * legitimately pick a neighbouring token.
   */
  margins: Float64Array;
}

/**
 * Whether a row of logits defines a distribution: no NaN, no +Infinity, and at least one finite
 * value (-Infinity entries are masked tokens, never drawn).
 *
 * @example
 * ```ts
 * import { validLogitsRowRef } from "./reference.ts";
 * console.log(validLogitsRowRef([0, -Infinity]), validLogitsRowRef([0, NaN])); // true false
 * ```
 */
export function validLogitsRowRef(logits: ArrayLike<number>): boolean {
  let finite = false;
  for (let c = 0; c < logits.length; c++) {
    const l = logits[c];
    if (Number.isNaN(l) || l === Infinity) return false;
    if (l !== -Infinity) finite = true;
  }
  return finite;
}

/**
 * Samples one token per row of f32 `logits [rows, V]` exactly as `sample.wgsl` does, in float64:
 * the nucleus of {@linkcode topPDistributionRef} (unnormalised), the uniform `u` of row `r` from
 * `sampleUniformRef(seed, counter, seedOffset + r)`, the point `x = u * keptMass`, and the first
 * kept token in index order whose inclusive cumulative kept mass exceeds `x`. A row that is not
 * {@linkcode validLogitsRowRef} gets `0xffffffff` (`NON_FINITE_TOKEN`), with an infinite margin.
 */
export function sampleRef(
  logits: ArrayLike<number>,
  rows: number,
  V: number,
  opts: SampleRefOptions & { seed: number; counter: number; seedOffset?: number },
): SampleRefResult {
  const tokens = new Uint32Array(rows);
  const margins = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = Array.prototype.slice.call(logits, r * V, (r + 1) * V) as number[];
    if (!validLogitsRowRef(row)) {
      tokens[r] = 0xffffffff;
      margins[r] = Infinity;
      continue;
    }
    const { e, tau, margin } = nucleus(row, opts);
    let kept = 0;
    for (let c = 0; c < V; c++) if (e[c] >= tau && e[c] > 0) kept += e[c];
    const x = sampleUniformRef(opts.seed, opts.counter, ((opts.seedOffset ?? 0) + r) >>> 0) * kept;
    let acc = 0, pick = -1;
    for (let c = 0; c < V && pick < 0; c++) {
      if (!(e[c] >= tau && e[c] > 0)) continue;
      const before = acc;
      acc += e[c];
      if (acc > x) {
        pick = c;
        margins[r] = Math.min(margin, (x - before) / kept, (acc - x) / kept);
      }
    }
    tokens[r] = pick;
  }
  return { tokens, margins };
}
