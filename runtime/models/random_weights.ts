/**
 * The random weights of `makeModel` (make_model.ts): deterministic normal samples, generated fast
 * enough to write multi-GB checkpoints at disk speed.
 *
 * Every tensor has its own counter-based random stream keyed by the seed and its name, so its values
 * do not depend on the other tensors, and any chunk of it can be generated on its own. Each random
 * 32-bit word picks two samples from a 65536-entry table of normal quantiles (scaled to the tensor's
 * mean and std) already encoded in the output dtype, so the three dtypes hold the same samples,
 * rounded. {@linkcode tensorValues} computes one tensor's values; {@linkcode Producer} streams a
 * plan's tensors chunk by chunk to the safetensors writer, generating the next chunk while the
 * previous one is being written.
 *
 * @example
 * ```ts
 * import { planModel } from "./plan_model.ts";
 * import { tensorValues } from "./random_weights.ts";
 * const plan = planModel({ arch: "olmoe", out: "", seed: 5 });
 * const router = plan.tensors.find((t) => t.role === "router")!;
 * console.log(tensorValues(router, plan.seed).length); // 512
 * ```
 * @module
 */
import {
  type DType,
  DTYPE_BYTES,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../base/dtype.ts";
import type { ModelPlan, PlannedTensor } from "./plan_model.ts";

/** Entries of a sample table (indexed by 16 random bits). */
const TABLE_SIZE = 1 << 16;
/** Sample pairs (one random word each) per generated chunk: 4 MiB of 16-bit output, 8 of f32. */
const CHUNK_PAIRS = 1 << 20;

/** Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9). */
function normalQuantile(p: number): number {
  // deno-fmt-ignore
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269,
    -30.66479806614716, 2.506628277459239];
  // deno-fmt-ignore
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
    -13.28068155288572];
  // deno-fmt-ignore
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
    4.374664141464968, 2.938163982698783];
  // deno-fmt-ignore
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (q: number) =>
    (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
    ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

let quantiles: Float64Array | null = null;
const tables = new Map<string, Uint16Array | Uint32Array>();

/**
 * The table of `TABLE_SIZE` N(mean, std^2) samples (the normal quantiles at (i + 0.5) / 65536, so
 * the table's own mean is exactly `mean`) encoded in `dtype`: 16-bit patterns for f16 / bf16, f32
 * bit patterns for f32.
 */
function sampleTable(dtype: DType, mean: number, std: number): Uint16Array | Uint32Array {
  const key = `${dtype}:${mean}:${std}`;
  const hit = tables.get(key);
  if (hit) return hit;
  if (!quantiles) {
    quantiles = new Float64Array(TABLE_SIZE);
    for (let i = 0; i < TABLE_SIZE; i++) quantiles[i] = normalQuantile((i + 0.5) / TABLE_SIZE);
  }
  let table: Uint16Array | Uint32Array;
  if (dtype === "f32") {
    const f = new Float32Array(TABLE_SIZE);
    for (let i = 0; i < TABLE_SIZE; i++) f[i] = mean + std * quantiles[i];
    table = new Uint32Array(f.buffer);
  } else {
    const conv = dtype === "f16" ? f32ToF16Bits : f32ToBf16Bits;
    table = new Uint16Array(TABLE_SIZE);
    for (let i = 0; i < TABLE_SIZE; i++) table[i] = conv(mean + std * quantiles[i]);
  }
  tables.set(key, table);
  return table;
}

/** A 32-bit avalanche (Wellons' "lowbias32"). */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The key of a tensor's random stream: the seed (all 53 bits) and the name (FNV-1a). */
function streamKey(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  return mix32(h ^ mix32(lo ^ mix32(hi + 0x9e3779b9)));
}

/**
 * Fills `out[0, pairs)` (16-bit dtypes: one word = two samples) with the samples of stream `key`
 * starting at pair `start`: word `k` of the stream is `hash(k * golden + key)`, its low 16 bits pick
 * the even sample and its high 16 bits the odd one.
 */
function fill16(out: Uint32Array, pairs: number, key: number, start: number, t: Uint16Array): void {
  for (let i = 0; i < pairs; i++) {
    let x = (Math.imul(start + i, 0x9e3779b9) + key) | 0;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= x >>> 16;
    out[i] = t[x & 0xffff] | (t[x >>> 16] << 16);
  }
}

/** As {@linkcode fill16} for f32: two output words per random word. */
function fill32(out: Uint32Array, pairs: number, key: number, start: number, t: Uint32Array): void {
  for (let i = 0; i < pairs; i++) {
    let x = (Math.imul(start + i, 0x9e3779b9) + key) | 0;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= x >>> 16;
    out[2 * i] = t[x & 0xffff];
    out[2 * i + 1] = t[x >>> 16];
  }
}

/**
 * The values of a planned tensor as f32 (computed, not read from disk): what `makeModel`
 * writes for it with `seed`, before rounding to 16 bits for f16 / bf16 (for those dtypes the
 * returned values are already rounded, so they equal the file exactly). Meant for tests and small
 * tensors.
 *
 * @example
 * ```ts
 * import { planModel } from "./plan_model.ts";
 * import { tensorValues } from "./random_weights.ts";
 * const plan = planModel({ arch: "mixtral", out: "", seed: 3 });
 * const norm = plan.tensors.find((t) => t.name === "model.norm.weight")!;
 * console.log(tensorValues(norm, plan.seed).length); // 64
 * ```
 */
export function tensorValues(t: PlannedTensor, seed: number): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const pairs = Math.ceil(n / 2);
  const key = streamKey(seed, t.name);
  const words = new Uint32Array(pairs * 2);
  if (t.dtype === "f32") {
    fill32(words, pairs, key, 0, sampleTable("f32", t.mean, t.std) as Uint32Array);
    return new Float32Array(words.buffer, 0, n);
  }
  fill16(words, pairs, key, 0, sampleTable(t.dtype, t.mean, t.std) as Uint16Array);
  const halves = new Uint16Array(words.buffer, 0, n);
  const out = new Float32Array(n);
  if (t.dtype === "bf16") {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u[i] = halves[i] << 16;
  } else {
    for (let i = 0; i < n; i++) out[i] = f16BitsToF32(halves[i]);
  }
  return out;
}

/** Random words (sample pairs) of a tensor. */
function pairsOf(t: PlannedTensor): number {
  return Math.ceil(t.bytes / DTYPE_BYTES[t.dtype] / 2);
}

/**
 * Produces the tensors' bytes chunk by chunk, in file order, into two reused buffers: when a chunk
 * is handed to the writer, the next one is generated in a macrotask (a MessageChannel message: no
 * timer clamping), which runs while the writer's `write` is in flight on Deno's I/O thread. The
 * writer asks for the next chunk only after the previous write completed, so the buffer being
 * written is never touched.
 *
 * @example
 * ```ts
 * import { planModel } from "./plan_model.ts";
 * import { Producer } from "./random_weights.ts";
 * const plan = planModel({ arch: "mixtral", out: "" });
 * const producer = new Producer(plan);
 * let bytes = 0;
 * for await (const chunk of producer.source(0)()) bytes += chunk.byteLength;
 * producer.close();
 * console.log(bytes === plan.tensors[0].bytes); // true
 * ```
 */
export class Producer {
  readonly #tensors: readonly PlannedTensor[];
  readonly #total: number;
  readonly #keys: number[];
  readonly #buffers: Uint32Array[];
  readonly #channel = new MessageChannel();
  readonly #onProgress?: (done: number, total: number) => void;
  #pending: { t: number; start: number; buf: number; done: Promise<void> } | null = null;
  #run: (() => void) | null = null;
  #last = 1;
  #done = 0;

  constructor(plan: ModelPlan, onProgress?: (done: number, total: number) => void) {
    this.#tensors = plan.tensors;
    this.#total = plan.totalBytes;
    this.#keys = plan.tensors.map((t) => streamKey(plan.seed, t.name));
    const largest = plan.tensors.reduce((a, t) => Math.max(a, pairsOf(t)), 1);
    const words = Math.min(CHUNK_PAIRS, largest) * (plan.dtype === "f32" ? 2 : 1);
    this.#buffers = [new Uint32Array(words), new Uint32Array(words)];
    this.#onProgress = onProgress;
    this.#channel.port1.onmessage = () => {
      const run = this.#run;
      this.#run = null;
      run?.();
    };
  }

  /** The bytes of the chunk of tensor `t` starting at pair `start`, in buffer `buf`. */
  #view(buf: number, t: number, start: number): Uint8Array {
    const p = this.#tensors[t];
    const unit = DTYPE_BYTES[p.dtype];
    const bytes = Math.min(CHUNK_PAIRS * 2 * unit, p.bytes - start * 2 * unit);
    return new Uint8Array(this.#buffers[buf].buffer, 0, bytes);
  }

  #generate(buf: number, t: number, start: number): void {
    const p = this.#tensors[t];
    const pairs = Math.min(CHUNK_PAIRS, pairsOf(p) - start);
    const table = sampleTable(p.dtype, p.mean, p.std);
    const out = this.#buffers[buf];
    if (p.dtype === "f32") fill32(out, pairs, this.#keys[t], start, table as Uint32Array);
    else fill16(out, pairs, this.#keys[t], start, table as Uint16Array);
  }

  /** The chunk after (t, start) in file order, or null at the end. */
  #after(t: number, start: number): { t: number; start: number } | null {
    if (start + CHUNK_PAIRS < pairsOf(this.#tensors[t])) return { t, start: start + CHUNK_PAIRS };
    return t + 1 < this.#tensors.length ? { t: t + 1, start: 0 } : null;
  }

  /** The bytes of tensor `t` from pair `start` (a chunk start), valid until the next call. */
  async take(t: number, start: number): Promise<Uint8Array> {
    const p = this.#pending;
    this.#pending = null;
    let buf: number;
    if (p && p.t === t && p.start === start) {
      await p.done;
      buf = p.buf;
    } else {
      // Not what was prefetched (the writer asked out of order): let any prefetch finish, then
      // generate the chunk now. Both buffers are free: the last chunk handed out was written.
      if (p) await p.done;
      buf = this.#last ^ 1;
      this.#generate(buf, t, start);
    }
    this.#last = buf;
    const next = this.#after(t, start);
    if (next) {
      const nb = buf ^ 1;
      const done = new Promise<void>((resolve) => {
        this.#run = () => {
          this.#generate(nb, next.t, next.start);
          resolve();
        };
      });
      this.#pending = { ...next, buf: nb, done };
      this.#channel.port2.postMessage(0);
    }
    const bytes = this.#view(buf, t, start);
    this.#done += bytes.byteLength;
    this.#onProgress?.(this.#done, this.#total);
    return bytes;
  }

  /** The lazy data source of tensor `t` for the writer. */
  source(t: number): () => AsyncIterable<Uint8Array> {
    const pairs = pairsOf(this.#tensors[t]);
    const take = (start: number) => this.take(t, start);
    return async function* () {
      for (let s = 0; s < pairs; s += CHUNK_PAIRS) yield await take(s);
    };
  }

  /** Closes the channel (a pending prefetch is dropped). */
  close(): void {
    this.#run = null;
    this.#channel.port1.close();
    this.#channel.port2.close();
  }
}
