/**
 * Helpers for kernel tolerance tests: the repository's test helpers (`runtime/test_util.ts`: the
 * shared test GPU, `rejects`, ...), seeded inputs and the normwise check (`check.ts`), plus poisoned
 * outputs and bindings, and Dawn's null backend for compile-only checks. Test code only.
 * @module
 */
import { AssertionError } from "node:assert";
import { Gpu } from "../runtime/base/gpu/device.ts";
import { POISON } from "./check.ts";
import { type GemvLayout, gemvLayoutName } from "./gemv.ts";

export {
  assertEquals,
  assertRejects,
  assertThrows,
  GPU_TEST,
  rejects,
  testGpu,
  withTempDir,
} from "../runtime/test_util.ts";
export { assertClose, freshSeed, POISON, randn, relError, rng } from "./check.ts";

/** The npm `webgpu` module (Dawn): `create(flags)` makes an instance. */
export interface DawnModule {
  create(flags: string[]): GPU;
}

let dawn: Promise<DawnModule | undefined> | undefined;

/**
 * Dawn (npm `webgpu`), or `undefined` where it does not load: load it at a test module's top level
 * and give the tests that need it `ignore: dawn === undefined`.
 */
export function loadDawn(): Promise<DawnModule | undefined> {
  dawn ??= import("npm:webgpu@0.6.2").then((m: DawnModule) => m, () => undefined);
  return dawn;
}

/**
 * A {@linkcode Gpu} on Dawn's null backend (with `flags` added): it compiles WGSL and validates
 * pipelines and bind groups, with every optional feature, but runs nothing. Destroy it after use.
 */
export async function dawnNullGpu(module: DawnModule, flags: string[] = []): Promise<Gpu> {
  const instance = module.create(["backend=null", ...flags]);
  const adapter = await instance.requestAdapter();
  if (!adapter) throw new Error("Dawn's null backend gave no adapter");
  return await Gpu.fromAdapter({ gpu: instance, impl: "dawn", keepAlive: instance }, adapter);
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
        throw new AssertionError({
          message: `${name(i)}: wrote past its output (byte ${b - slots[i]})`,
        });
      }
    }
  }
}

/** A storage buffer of `words` u32 filled with {@linkcode POISON}. */
export function poisoned(gpu: Gpu, words: number, label = "out"): GPUBuffer {
  return gpu.storage("activations", new Uint32Array(words).fill(POISON), label);
}

/** `bytes` zero-padded to whole 4-byte words (GPU writes and bindings are word-sized). */
export function words(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  out.set(bytes);
  return out;
}

/** A small portable GEMV layout: 4 lanes per row, so a lane handles several blocks of a row. */
export const NARROW_LAYOUT: GemvLayout = Object.freeze({
  name: gemvLayoutName({ TPR: 4, ROWS: 8, UNROLL: 1, reduction: "tree" }),
  TPR: 4,
  ROWS: 8,
  UNROLL: 1,
  reduction: "tree",
});
