/**
 * Attention kernels (`attention.wgsl`): KV-cache append ({@linkcode kvAppend}) and scaled dot-product
 * attention over the cache ({@linkcode attention}), causal or not, with grouped-query heads and an
 * optional additive score bias: dense, or T5's relative position bias from a per-stack table
 * (`relative_bias.ts`).
 *
 * Layouts (all f32): queries, keys and values of a batch are `[T, heads, headDim]`; the caches are
 * `[nKvHeads, maxSeq, headDim]`. The position of the batch's first token is `pos[0]` of a u32 storage
 * buffer, so a recorded decode step can be replayed after writing the next position.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { attention, kvAppend } from "./attention.ts";
 * const gpu = await openGpu();
 * const [T, nHeads, nKvHeads, headDim, maxSeq] = [1, 4, 2, 64, 128];
 * const kCache = gpu.storage("kv", nKvHeads * maxSeq * headDim * 4);
 * const vCache = gpu.storage("kv", nKvHeads * maxSeq * headDim * 4);
 * const pos = gpu.storage("activations", new Uint32Array([0]));
 * const q = gpu.storage("activations", T * nHeads * headDim * 4);
 * const k = gpu.storage("activations", T * nKvHeads * headDim * 4);
 * const v = gpu.storage("activations", T * nKvHeads * headDim * 4);
 * const out = gpu.storage("activations", T * nHeads * headDim * 4);
 * const step = [
 *   await kvAppend(gpu, { k, v, kCache, vCache, pos, T, nKvHeads, headDim, maxSeq }),
 *   await attention(gpu, {
 *     q, kCache, vCache, out, pos, T, nHeads, nKvHeads, headDim, maxSeq,
 *     scale: 1 / Math.sqrt(headDim), causal: true,
 *   }),
 * ];
 * for (let p = 0; p < 3; p++) {
 *   gpu.write(pos, new Uint32Array([p])); // replay the same step at the next position
 *   gpu.submit(step);
 * }
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import {
  argBinding,
  argBoolean,
  argCount,
  argDistinct,
  argNumber,
  argObject,
  argOneOf,
  type BindingRange,
} from "./args.ts";

/** Largest head dimension the attention kernels support. */
export const MAX_HEAD_DIM = 256;
/** {@linkcode attention} uses the decode variant when `T` is at most this (unless told otherwise). */
export const DECODE_MAX_T = 4;

const APPEND_WG = 256;
/** Query rows per prefill workgroup. */
const PREFILL_BQ = 16;

const ATTENTION_BINDINGS = ["params", "q", "kCache", "vCache", "out", "pos", "bias"];

/** What the `pos` binding holds, for messages. */
const POS_SHAPE = "u32 [1]: the first token's position";

/** Writes a batch's keys and values into the caches at `pos[0]...`. */
export const KV_APPEND: KernelSpec = defineKernel({
  name: "kv_append",
  file: "attention.wgsl",
  entry: "kv_append",
  bindings: ["params", "k", "v", "kCache", "vCache", "pos"],
  constants: { WG: APPEND_WG },
});

/** Flash-style attention for batches of queries (prefill). */
export const ATTENTION_PREFILL: KernelSpec = defineKernel({
  name: "attention_prefill",
  file: "attention.wgsl",
  entry: "prefill",
  bindings: ATTENTION_BINDINGS,
  constants: { WG: 64, TPR: 4, BK: 16, DMAX: 128 },
});

/**
 * Attention with llama.cpp's CPU arithmetic over an f16 cache (q rounded to f16, the keys in
 * order, an f16 output accumulator): the `activations: "llama.cpp"` cross-check mode.
 */
export const ATTENTION_LLAMA_CPP: KernelSpec = defineKernel({
  name: "attention_llama_cpp",
  file: "attention.wgsl",
  entry: "llama_cpp",
  bindings: ATTENTION_BINDINGS,
  constants: { WG: 128, CH: 256, DMAX: 128 },
});

/** Split-key attention for one or a few queries (decode). */
export const ATTENTION_DECODE: KernelSpec = defineKernel({
  name: "attention_decode",
  file: "attention.wgsl",
  entry: "decode",
  bindings: ATTENTION_BINDINGS,
  constants: { WG: 128, CH: 256, DMAX: 128 },
});

// ------------------------------------------------------------------ kvAppend

/** Arguments of {@linkcode kvAppend}. */
export interface KvAppendArgs {
  /** New keys, f32 `[T, nKvHeads, headDim]`. */
  k: Binding;
  /** New values, f32 `[T, nKvHeads, headDim]`. */
  v: Binding;
  /** Key cache, f32 `[nKvHeads, maxSeq, headDim]` (written). */
  kCache: Binding;
  /** Value cache, f32 `[nKvHeads, maxSeq, headDim]` (written). */
  vCache: Binding;
  /** u32 storage buffer whose element 0 is the position of the batch's first token. */
  pos: Binding;
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
 * Builds the dispatch that copies `T` tokens' keys and values into the caches at positions
 * `pos[0] .. pos[0] + T - 1`. Tokens that would land at or beyond `maxSeq` are dropped (the caller
 * must keep `pos[0] + T <= maxSeq`; the kernel never writes outside the caches).
 *
 * @example
 * ```ts ignore
 * gpu.submit([await kvAppend(gpu, { k, v, kCache, vCache, pos, T: 7, nKvHeads: 2, headDim: 64,
 *   maxSeq: 512 })]);
 * ```
 * @throws {ArgumentError} naming the first bad argument.
 */
export async function kvAppend(gpu: Gpu, args: KvAppendArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const nKvHeads = argCount("nKvHeads", args.nKvHeads);
  const headDim = argCount("headDim", args.headDim, 1, MAX_HEAD_DIM);
  const maxSeq = argCount("maxSeq", args.maxSeq);
  const batch = T * nKvHeads * headDim;
  const cache = nKvHeads * maxSeq * headDim;
  const batchShape = `f32 [T=${T}, nKvHeads=${nKvHeads}, headDim=${headDim}]`;
  const cacheShape = `f32 [nKvHeads=${nKvHeads}, maxSeq=${maxSeq}, headDim=${headDim}]`;
  const k = argBinding(gpu, "k", args.k, batch * 4, batchShape);
  const v = argBinding(gpu, "v", args.v, batch * 4, batchShape);
  const kCache = argBinding(gpu, "kCache", args.kCache, cache * 4, cacheShape);
  const vCache = argBinding(gpu, "vCache", args.vCache, cache * 4, cacheShape);
  const pos = argBinding(gpu, "pos", args.pos, 4, POS_SHAPE);
  argDistinct("kCache", kCache, { k, v, pos, vCache });
  argDistinct("vCache", vCache, { k, v, pos });

  const pipeline = await gpu.pipeline(KV_APPEND, { WG: APPEND_WG });
  const params = gpu.uniform(
    new ParamWriter().u32(T, 0, nKvHeads, headDim, maxSeq, 0, 0, 0).f32(0).u32(0).bytes(),
    "kv_append.params",
  );
  return gpu.dispatch(
    pipeline,
    [params, k, v, kCache, vCache, pos],
    gpu.grid(Math.ceil(batch / APPEND_WG)),
  );
}

// ------------------------------------------------------------------ attention

/** Arguments of {@linkcode attention}. */
export interface AttentionArgs {
  /** Queries, f32 `[T, nHeads, headDim]`. */
  q: Binding;
  /** Key cache, f32 `[nKvHeads, maxSeq, headDim]`. */
  kCache: Binding;
  /** Value cache, f32 `[nKvHeads, maxSeq, headDim]`. */
  vCache: Binding;
  /** Output, f32 `[T, nHeads, headDim]` (must not alias any input). */
  out: Binding;
  /**
   * u32 storage buffer whose element 0 is the position of the batch's first token. Required when
   * `causal`; ignored (and optional) otherwise.
   */
  pos?: Binding;
  /** Query rows (tokens) in the batch. */
  T: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads; must divide `nHeads` (head h reads kv head `h / (nHeads / nKvHeads)`). */
  nKvHeads: number;
  /** Head dimension, 1 .. {@linkcode MAX_HEAD_DIM}. */
  headDim: number;
  /** Cache capacity in positions. */
  maxSeq: number;
  /** Score scale: `1 / sqrt(headDim)` normally, 1 for T5. */
  scale: number;
  /**
   * `true`: query t (at position `pos[0] + t`) attends to cache positions `[0, pos[0] + t]`.
   * `false`: every query attends to `[0, kvLen)` (encoder self-attention, cross-attention).
   */
  causal: boolean;
  /** Keys attended when not `causal`, 1 .. `maxSeq`. */
  kvLen?: number;
  /**
   * Optional additive score bias, f32 `[nHeads, T, biasKeys]`: `bias[h, t, j]` is added to the
   * (scaled) score of head h, query t and cache position j (positions >= `biasKeys` get none).
   */
  bias?: Binding;
  /** The bias's last dimension (required with `bias`). */
  biasKeys?: number;
  /**
   * T5's relative position bias (instead of `bias`): `table` is f32 `[nHeads, 2 * maxDistance + 1]`
   * (`relativeBiasTable` of `relative_bias.ts`, one per stack); query t, at position `pos[0] + t`
   * when `causal` and `t` otherwise, and key position j get
   * `table[h, clamp(j - position, -maxDistance, maxDistance) + maxDistance]` added to their score.
   */
  relativeBias?: { table: Binding; maxDistance: number };
  /**
   * Kernel variant; default `decode` when `T <= DECODE_MAX_T`, else `prefill`. `llama.cpp`: the
   * arithmetic of llama.cpp's CPU flash attention over an f16 KV cache (its one-chunk path: batches
   * under 64 queries, under 512 keys or one thread), for cross-checks against llama.cpp: q rounded
   * to f16, the keys visited in order with each output value accumulated in f16 (rounded after
   * every key); the caches should hold f16-rounded values (`ropeKv`'s `f16Cache`). One workgroup
   * per query and head, as `decode`.
   */
  variant?: "prefill" | "decode" | "llama.cpp";
}

/**
 * Workgroup memory (in f32 words) the tiles of one pipeline may use on a fallback (CPU) adapter.
 * llvmpipe's compile time grows about quadratically with the workgroup memory it must zero, so
 * software adapters get small tiles; the kernels are the same.
 */
const FALLBACK_TILE_WORDS = 1024;

/**
 * The override constants of both variants for a head dimension on this device: prefill `WG`
 * threads, `TPR` threads per query row (16 rows per workgroup), `BK` keys per tile, `DMAX` tile row
 * bound; decode `WG` threads and `CH` keys per chunk.
 */
export function attentionConstants(
  gpu: Gpu,
  headDim: number,
): { prefill: Record<string, number>; decode: Record<string, number> } {
  const DMAX = headDim <= 64 ? 64 : headDim <= 128 ? 128 : 256;
  const TPR = headDim <= 128 ? 4 : 8;
  const WG = PREFILL_BQ * TPR;
  let BK = 32;
  if (gpu.isFallback) {
    while (BK > 1 && BK * DMAX > FALLBACK_TILE_WORDS) BK /= 2;
  } else {
    const limit = gpu.limits.maxComputeWorkgroupStorageSize;
    while (BK > 8 && 4 * BK * (DMAX + PREFILL_BQ) > limit) BK /= 2;
  }
  const decodeWg = gpu.isFallback ? 64 : 128;
  return {
    prefill: { WG, TPR, BK, DMAX },
    decode: { WG: decodeWg, CH: 2 * decodeWg, DMAX },
  };
}

/**
 * Builds the dispatch of scaled dot-product attention of `T` queries over the KV cache:
 * `out[t, h] = softmax_j(scale * q[t, h] . kCache[g, j] + bias[h, t, j]) @ vCache[g, j]` with
 * `g = h / (nHeads / nKvHeads)`, over `j <= pos[0] + t` (causal) or `j < kvLen` (not causal). Key
 * ranges are clipped to `maxSeq`. Run {@linkcode kvAppend} first (same `pos`) for self-attention.
 *
 * Two variants: `prefill` (one workgroup per 16 query rows and head; key/value tiles in workgroup
 * memory, online softmax) and `decode` (one workgroup per query and head; keys split across the
 * threads).
 *
 * @example
 * ```ts ignore
 * const d = await attention(gpu, { q, kCache, vCache, out, pos, T: 9, nHeads: 8, nKvHeads: 2,
 *   headDim: 128, maxSeq: 4096, scale: 1 / Math.sqrt(128), causal: true });
 * gpu.submit([d]);
 * ```
 * @throws {ArgumentError} naming the first bad argument.
 */
export async function attention(gpu: Gpu, args: AttentionArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const nHeads = argCount("nHeads", args.nHeads);
  const nKvHeads = argCount("nKvHeads", args.nKvHeads, 1, nHeads);
  if (nHeads % nKvHeads !== 0) {
    throw new ArgumentError(
      "nKvHeads",
      `expected a divisor of nHeads=${nHeads}, got ${nKvHeads}`,
    );
  }
  const headDim = argCount("headDim", args.headDim, 1, MAX_HEAD_DIM);
  const maxSeq = argCount("maxSeq", args.maxSeq);
  const scale = argNumber("scale", args.scale);
  const causal = argBoolean("causal", args.causal);
  const kvLen = causal ? 0 : argCount("kvLen", args.kvLen, 1, maxSeq);
  const variant = argOneOf(
    "variant",
    args.variant ?? (T <= DECODE_MAX_T ? "decode" : "prefill"),
    ["prefill", "decode", "llama.cpp"] as const,
    "attention variant",
  );

  const rows = T * nHeads * headDim;
  const cache = nKvHeads * maxSeq * headDim;
  const rowShape = `f32 [T=${T}, nHeads=${nHeads}, headDim=${headDim}]`;
  const cacheShape = `f32 [nKvHeads=${nKvHeads}, maxSeq=${maxSeq}, headDim=${headDim}]`;
  const q = argBinding(gpu, "q", args.q, rows * 4, rowShape);
  const kCache = argBinding(gpu, "kCache", args.kCache, cache * 4, cacheShape);
  const vCache = argBinding(gpu, "vCache", args.vCache, cache * 4, cacheShape);
  const out = argBinding(gpu, "out", args.out, rows * 4, rowShape);
  const pos = causal || args.pos !== undefined
    ? argBinding(gpu, "pos", args.pos, 4, POS_SHAPE)
    : undefined;
  let bias: BindingRange | undefined;
  let biasKeys = 0;
  if (args.bias !== undefined) {
    biasKeys = argCount("biasKeys", args.biasKeys);
    bias = argBinding(
      gpu,
      "bias",
      args.bias,
      nHeads * T * biasKeys * 4,
      `f32 [nHeads=${nHeads}, T=${T}, biasKeys=${biasKeys}]`,
    );
  } else if (args.biasKeys !== undefined) {
    throw new ArgumentError("bias", `expected a buffer since biasKeys is given, got undefined`);
  }
  let relMax = 0;
  if (args.relativeBias !== undefined) {
    if (bias) {
      throw new ArgumentError("relativeBias", "give either bias or relativeBias, not both");
    }
    if (typeof args.relativeBias !== "object" || args.relativeBias === null) {
      throw new ArgumentError("relativeBias", `expected { table, maxDistance }`);
    }
    relMax = argCount("relativeBias.maxDistance", args.relativeBias.maxDistance);
    bias = argBinding(
      gpu,
      "relativeBias.table",
      args.relativeBias.table,
      nHeads * (2 * relMax + 1) * 4,
      `f32 [nHeads=${nHeads}, 2 * maxDistance + 1 = ${2 * relMax + 1}]`,
    );
  }
  argDistinct("out", out, { q, kCache, vCache, pos, bias });

  const constants = attentionConstants(gpu, headDim);
  const pipeline = variant === "prefill"
    ? await gpu.pipeline(ATTENTION_PREFILL, constants.prefill)
    : await gpu.pipeline(
      variant === "decode" ? ATTENTION_DECODE : ATTENTION_LLAMA_CPP,
      constants.decode,
    );
  const params = gpu.uniform(
    new ParamWriter()
      .u32(T, nHeads, nKvHeads, headDim, maxSeq, causal ? 1 : 0, kvLen, relMax ? 2 : bias ? 1 : 0)
      .f32(scale)
      .u32(biasKeys, relMax)
      .bytes(),
    `attention_${variant === "llama.cpp" ? "llama_cpp" : variant}.params`,
  );
  // Unused bindings (pos when not causal, bias when absent) get a read-only placeholder: q.
  const workgroups: [number, number] = variant === "prefill"
    ? [Math.ceil(T / PREFILL_BQ), nHeads]
    : [T, nHeads];
  return gpu.dispatch(
    pipeline,
    [params, q, kCache, vCache, out, pos ?? q, bias ?? q],
    workgroups,
  );
}
