/**
 * What kernel tests and benchmarks use to validate a GPU result against its CPU reference
 * (`reference.ts`): seeded random inputs (never all zeros), the poison value written into outputs
 * before a run, and the normwise relative error with an assertion on it.
 *
 * @example
 * ```ts
 * import { assertClose, randn, relError } from "./check.ts";
 * const x = randn(4, 1, 42); // the same four values for seed 42 every time
 * console.log(relError(x, x)); // 0
 * assertClose(x, Array.from(x), 1e-6, "x against itself"); // passes
 * ```
 * @module
 */
import { AssertionError } from "node:assert";

/** A seeded PRNG (mulberry32) returning floats in [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let seedCounter = (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0;

/** A fresh seed per call (printed by failing assertions so a failure can be replayed). */
export function freshSeed(): number {
  seedCounter = (seedCounter * 1103515245 + 12345) >>> 0;
  return seedCounter;
}

/** `n` normal(0, scale) values from `seed` (fresh if omitted). Never all zeros. */
export function randn(n: number, scale = 1, seed: number = freshSeed()): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12), v = r();
    const m = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** The bit pattern written into outputs before a run (a NaN no kernel produces). */
export const POISON = 0x7fbadbad;

/** Normwise relative error ||out - ref|| / ||ref||, in float64. */
export function relError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = out[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/**
 * Asserts `out` matches `ref` to normwise relative error `tol`, that lengths agree and that no
 * element is NaN, infinite or still {@linkcode POISON}ed.
 * @throws {AssertionError} naming `what`, the element or the error and the worst element.
 */
export function assertClose(
  out: Float32Array,
  ref: ArrayLike<number>,
  tol: number,
  what: string,
): void {
  const fail = (message: string) => {
    throw new AssertionError({ message: `${what}: ${message}` });
  };
  if (out.length < ref.length) fail(`output has ${out.length} values, expected ${ref.length}`);
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < ref.length; i++) {
    if (bits[i] === POISON) fail(`element ${i} was never written`);
    if (!Number.isFinite(out[i])) fail(`element ${i} is ${out[i]}`);
  }
  const err = relError(out, ref);
  if (!(err <= tol)) {
    let worst = 0;
    for (let i = 0; i < ref.length; i++) {
      if (Math.abs(out[i] - ref[i]) > Math.abs(out[worst] - ref[worst])) worst = i;
    }
    fail(
      `relative error ${err.toExponential(3)} > ${tol} ` +
        `(worst at ${worst}: got ${out[worst]}, expected ${ref[worst]})`,
    );
  }
}
