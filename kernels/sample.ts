/**
 * GPU sampling (`sample.wgsl`): one token per row of f32 logits `[rows, V]`, drawn with temperature
 * and nucleus (top-p) truncation as HF transformers does (`softmax(logits / T)`, keep the smallest
 * set of most probable tokens whose mass reaches `topP`, renormalise, draw), written as u32 into
 * `out[r]` so the next decode step can embed it without a CPU round trip. Greedy decoding is not
 * this kernel's job: use `argmax` (the caller chooses; `temperature` must be > 0 here).
 *
 * Random numbers come from the GPU and are deterministic given a seed: `rng` is a 16-byte storage
 * buffer `[seed, counter, arrivals, reserved]` ({@linkcode sampleRngState}); row `r` of a call draws
 * `u = (mix32(mix32(mix32(seed ^ 0x9e3779b9) ^ counter) ^ (seedOffset + r)) >> 8) * 2^-24` and every
 * call advances `counter` by one on the GPU, so a recorded decode plan replayed step after step
 * draws fresh numbers with no CPU write. `arrivals` is the kernel's own scratch (0 between calls).
 *
 * Algorithm (one workgroup per row, no sort, any V): max-reduce; `e_c = exp((l_c - max) / T)` and
 * `S = sum e`; the top-p threshold `tau` = the largest f32 `t` with `sum(e_c >= t) >= topP * S`,
 * found exactly by an 8-ary search on the f32 bit patterns of [0, 1] (10 sweeps of the row, each
 * evaluating 7 thresholds), so tokens tied with the boundary probability are all kept; then the
 * kept token whose cumulative kept mass, in token-index order, first exceeds `u * keptMass`, found
 * by a chunked prefix scan (thread-local chunk sums, a monotone workgroup scan, and a rescan of the
 * one owning chunk). 13 sweeps of the row in all; `sample.wgsl` documents every step. The CPU
 * reference `sampleRef` (`reference_sample.ts`) implements the same rule in float64 with the same
 * hash.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { sample, sampleRng } from "./sample.ts";
 * const gpu = await openGpu();
 * const logits = gpu.storage("activations", new Float32Array([0, 2, 1, -1]));
 * const out = gpu.storage("activations", 4);
 * const rng = sampleRng(gpu, 1234);
 * const step = await sample(gpu, { logits, out, rows: 1, V: 4, temperature: 0.7, topP: 0.9, rng });
 * gpu.submit([step]);
 * console.log((await gpu.readU32(out))[0]); // 1 or 2 (token 3 and 0 are outside the nucleus)
 * gpu.submit([step]); // the counter advanced: a fresh draw
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { argBinding, argCount, argDisjoint, argDistinct, argNumber, argObject } from "./args.ts";

/** Samples one token per row (`sample.wgsl`). */
export const SAMPLE: KernelSpec = defineKernel({
  name: "sample",
  file: "sample.wgsl",
  entry: "sample",
  bindings: ["params", "logits", "out", "rng"],
  constants: { WG: 256 },
});

/** Bytes of the RNG state buffer: `[seed, counter, arrivals, reserved]` as u32. */
export const SAMPLE_RNG_BYTES = 16;

/** Arguments of {@linkcode sample}. */
export interface SampleArgs {
  /** f32 `[rows, V]` row-major; read only. */
  logits: Binding;
  /** u32 `[rows]`: the drawn token of each row. Not in `logits`' buffer; must not overlap `rng`. */
  out: Binding;
  /** Rows (sequences of a batch), >= 1. */
  rows: number;
  /** Vocabulary size (values per row), >= 1. */
  V: number;
  /** Softmax temperature, > 0 (rounded to f32 as `1 / temperature`). Greedy: use `argmax`. */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 keeps every token (no truncation). */
  topP: number;
  /**
   * The RNG state, 16 bytes `[seed, counter, arrivals, reserved]` u32 (see {@linkcode sampleRng});
   * read and advanced (`counter += 1`) by every call. Not in `logits`' buffer; must not overlap
   * `out`.
   */
  rng: Binding;
  /** Added (mod 2^32) to the row index to form each row's random stream; default 0. */
  seedOffset?: number;
}

/** The initial contents of an RNG state buffer: `[seed, counter, 0, 0]`. */
export function sampleRngState(seed: number, counter = 0): Uint32Array {
  argCount("seed", seed, 0);
  argCount("counter", counter, 0);
  return new Uint32Array([seed, counter, 0, 0]);
}

/** A new RNG state buffer holding {@linkcode sampleRngState}`(seed, counter)`. */
export function sampleRng(gpu: Gpu, seed: number, counter = 0): GPUBuffer {
  return gpu.storage("activations", sampleRngState(seed, counter), "sample.rng");
}

/**
 * Builds the dispatch drawing one token per row of `logits` into `out` (see the module
 * documentation for the rule and the algorithm). Rows without a valid distribution get no
 * token or say they have none: a row holding a NaN or a `+inf`, or only `-inf` logits, gets
 * `NON_FINITE_TOKEN` (0xffffffff, argmax.ts); `-inf` logits alone are masked tokens, never drawn.
 * The dispatch may be recorded once and replayed: each run advances the counter in `rng`.
 *
 * @example
 * ```ts ignore
 * // Decode step: logits of the last position -> next token id, stays on the GPU.
 * plan.push(await sample(gpu, { logits, out: ids, rows: 1, V: vocab, temperature: 0.8, topP: 0.95, rng }));
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, temperature <= 0, topP outside (0, 1],
 * bindings too small, overlaps).
 */
export async function sample(gpu: Gpu, args: SampleArgs): Promise<Dispatch> {
  argObject(args);
  const rows = argCount("rows", args.rows);
  const V = argCount("V", args.V);
  const temperature = argNumber("temperature", args.temperature, { positive: true });
  const invT = Math.fround(1 / temperature);
  if (!Number.isFinite(invT) || invT === 0) {
    throw new ArgumentError(
      "temperature",
      `expected a temperature whose inverse is a finite, non-zero f32, got ${temperature}`,
    );
  }
  const topP = argNumber("topP", args.topP, { positive: true });
  if (topP > 1) {
    throw new ArgumentError("topP", `expected a number in (0, 1], got ${topP}`, "1 keeps all");
  }
  const seedOffset = argCount("seedOffset", args.seedOffset ?? 0, 0);
  const logits = argBinding(gpu, "logits", args.logits, rows * V * 4);
  const out = argBinding(gpu, "out", args.out, rows * 4);
  const rng = argBinding(gpu, "rng", args.rng, SAMPLE_RNG_BYTES);
  argDistinct("out", out, { logits });
  argDistinct("rng", rng, { logits });
  argDisjoint("out", out, "rng", rng); // both written: disjoint ranges of one buffer are fine
  // Two variants only (each costs a compile): small vocabularies (tests, toys) and real ones.
  const WG = V < 1024 ? 64 : 256;
  const pipeline = await gpu.pipeline(SAMPLE, { WG });
  const params = gpu.uniform(
    new ParamWriter().u32(rows, V).f32(invT, topP).u32(seedOffset).bytes(),
    "sample.params",
  );
  return gpu.dispatch(
    pipeline,
    [params, logits, out, { ...rng, size: SAMPLE_RNG_BYTES }],
    gpu.grid(rows),
  );
}
