/**
 * Helpers for kernel tolerance tests: a shared test GPU, seeded random inputs, poisoned outputs and
 * normwise relative error checks. Used by `*_test.ts` files only.
 * @module
 */
import { ArgumentError } from "../runtime/errors.ts";
import { type Gpu, openGpu } from "../runtime/gpu/device.ts";

let shared: Promise<Gpu> | undefined;

/** The GPU tests run on (`PREGATE_TEST_GPU` = native | dawn | auto; default native). */
export function testGpu(): Promise<Gpu> {
  if (!shared) {
    shared = openGpu({
      gpu: (Deno.env.get("PREGATE_TEST_GPU") ?? "native") as "native" | "dawn" | "auto",
    });
    // Native: destroy the device before the process exits rather than leaving it to driver
    // teardown (llvmpipe once aborted there). Dawn: leave it; Dawn test processes on the H200
    // segfaulted after their last test once the device was destroyed in `unload`.
    let opened: Gpu | undefined;
    shared.then((g) => opened = g, () => {});
    globalThis.addEventListener("unload", () => {
      if (opened?.impl === "native") opened.destroy();
    });
  }
  return shared;
}

/**
 * Binds `data` for a kernel test: odd `i` as a whole buffer, even `i` as a range at offset 256 of a
 * larger buffer whose other words are NaN (so a read outside the range poisons the result). The
 * buffers made are pushed to `made` for the caller to destroy.
 */
export function bindForTest(
  gpu: Gpu,
  data: ArrayBufferView,
  i: number,
  made: GPUBuffer[],
): GPUBuffer | { buffer: GPUBuffer; offset: number; size: number } {
  if (i % 2) {
    const b = gpu.storage("activations", data);
    made.push(b);
    return b;
  }
  const offset = 256;
  const buffer = poisoned(gpu, (offset + data.byteLength + 64) / 4);
  gpu.write(buffer, data, offset);
  made.push(buffer);
  return { buffer, offset, size: data.byteLength };
}

/**
 * Checks that case `i`'s output `[slots[i], slots[i] + sizes[i])` of a shared poisoned output buffer
 * (`bits`, `bytes` long) left every word up to the next case's slot poisoned; throws naming the case.
 */
export function assertNothingPast(
  bits: Uint32Array,
  slots: readonly number[],
  sizes: readonly number[],
  bytes: number,
  name: (i: number) => string,
): void {
  for (let i = 0; i < slots.length; i++) {
    const end = slots[i] + sizes[i];
    const next = i + 1 < slots.length ? slots[i + 1] : bytes;
    for (let b = end; b < next; b += 4) {
      if (bits[b / 4] !== POISON) {
        throw new Error(`${name(i)}: wrote past its output (byte ${b - slots[i]})`);
      }
    }
  }
}

/** Options for GPU tests: WebGPU keeps a device and timers alive across tests. */
export const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;

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
export function randn(n: number, scale = 1, seed = freshSeed()): Float32Array {
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

/** A storage buffer of `words` u32 filled with {@linkcode POISON}. */
export function poisoned(gpu: Gpu, words: number, label = "out"): GPUBuffer {
  return gpu.storage("activations", new Uint32Array(words).fill(POISON), label);
}

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
 * element is NaN, infinite or still poisoned.
 */
export function assertClose(
  out: Float32Array,
  ref: ArrayLike<number>,
  tol: number,
  what: string,
): void {
  if (out.length < ref.length) {
    throw new Error(`${what}: output has ${out.length} values, expected ${ref.length}`);
  }
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < ref.length; i++) {
    if (bits[i] === POISON) throw new Error(`${what}: element ${i} was never written`);
    if (!Number.isFinite(out[i])) throw new Error(`${what}: element ${i} is ${out[i]}`);
  }
  const err = relError(out, ref);
  if (!(err <= tol)) {
    let worst = 0;
    for (let i = 0; i < ref.length; i++) {
      if (Math.abs(out[i] - ref[i]) > Math.abs(out[worst] - ref[worst])) worst = i;
    }
    throw new Error(
      `${what}: relative error ${err.toExponential(3)} > ${tol} ` +
        `(worst at ${worst}: got ${out[worst]}, expected ${ref[worst]})`,
    );
  }
}

/**
 * Asserts that `what` (a promise, or a function that is called and awaited) rejects with an
 * `ArgumentError` whose `argument` is `argument` and whose message contains `text` (when given).
 */
export async function rejects(
  what: Promise<unknown> | (() => unknown),
  argument: string,
  text = "",
): Promise<void> {
  try {
    await (typeof what === "function" ? what() : what);
  } catch (e) {
    if (!(e instanceof ArgumentError)) throw e;
    if (e.argument !== argument || !e.message.includes(text)) {
      throw new Error(
        `expected an ArgumentError on '${argument}'${text ? ` (${text})` : ""}, got: ${e.message}`,
      );
    }
    return;
  }
  throw new Error(`expected an ArgumentError on '${argument}', nothing was thrown`);
}
