/**
 * Rotary position embedding (`rope.wgsl`), in place on f32 activations laid out `[T, heads,
 * headDim]` (or any strided slice of a bigger buffer, e.g. the q or k part of a fused qkv
 * projection). Token `t` is at position `pos[0] + t`, read on the GPU from the `pos` storage buffer
 * (see docs/architecture.md), so a recorded decode plan replays without rewriting uniforms.
 *
 * Matches HF transformers' f32 arithmetic: `inv_freq[i] = 1 / theta^(2i / rotaryDim)` computed on
 * the host with f32 roundings exactly as `LlamaRotaryEmbedding` does ({@linkcode ropeInvFreq}), the
 * angle `f32(position) * inv_freq[i]` rounded to f32 on the GPU, and `cos`/`sin` of that angle
 * accurate to ~1e-7 whatever its size (an exact 2/π reduction in the kernel), so long positions
 * agree with HF too (positions must be below 2^24, where f32 stops holding every integer).
 *
 * Styles: `neox` (default) rotates pairs `(i, i + rotaryDim/2)` — HF `rotate_half` (Llama, Mixtral,
 * Qwen, GPT-NeoX, DeepSeek without interleaving); `interleaved` rotates pairs `(2i, 2i + 1)` — GPT-J
 * `rotate_every_two`. Only the first `rotaryDim` dims of each head are rotated (partial rotary, e.g.
 * GPT-NeoX `rotary_pct`, Phi); the rest are left as they are.
 *
 * Scaled variants (linear, NTK, Llama 3, YaRN frequency tables) pass their own `invFreq` buffer.
 *
 * {@linkcode ropeKv} fuses an attention block's three steps before attention (RoPE of q, RoPE of k,
 * KV-cache append) into one dispatch with the same arithmetic.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { rope } from "./rope.ts";
 * const gpu = await openGpu();
 * // One token at position 1, one head of 2 dims: rotate [1, 0] by 1 rad.
 * const x = gpu.storage("activations", new Float32Array([1, 0]));
 * const pos = gpu.storage("activations", new Uint32Array([1]));
 * gpu.submit([await rope(gpu, { x, pos, T: 1, heads: 1, headDim: 2, theta: 10000 })]);
 * console.log(await gpu.readF32(x)); // Float32Array [0.5403, 0.8415]
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
  argDisjoint,
  argDistinct,
  argNumber,
  argObject,
  argOneOf,
  type BindingRange,
} from "./args.ts";

const WG = 256;

/** In-place RoPE over strided tokens and heads (`rope.wgsl`). */
export const ROPE: KernelSpec = defineKernel({
  name: "rope",
  file: "rope.wgsl",
  entry: "rope",
  bindings: ["params", "inv_freq", "pos", "x"],
  constants: { WG, NEOX: 1 },
});

/** RoPE of q (in place) and of k, written with v into the KV caches (`rope_kv` of `rope.wgsl`). */
export const ROPE_KV: KernelSpec = defineKernel({
  name: "rope_kv",
  file: "rope.wgsl",
  entry: "rope_kv",
  bindings: ["params", "inv_freq", "pos", "q", "k", "v", "kCache", "vCache"],
  constants: { WG, NEOX: 1, F16_CACHE: 0 },
});

/** Which dims form a rotated pair. */
export type RopeStyle = "neox" | "interleaved";

/** Arguments of {@linkcode rope}. */
export interface RopeArgs {
  /** Activations, f32, rotated in place. */
  x: Binding;
  /** `array<u32>` whose element 0 is the position of token 0. */
  pos: Binding;
  /** Tokens, >= 1. */
  T: number;
  /** Heads per token, >= 1. */
  heads: number;
  /** Dims per head, >= 2. */
  headDim: number;
  /** Rotated dims per head (the first ones): even, 2 .. headDim; default headDim. */
  rotaryDim?: number;
  /** Frequency base (`rope_theta`, e.g. 10000 or 1e6), > 0; or give `invFreq` instead. */
  theta?: number;
  /** Own inverse frequencies, `rotaryDim / 2` f32 values (scaled RoPE variants); replaces `theta`. */
  invFreq?: Binding;
  /** Pairing; default `neox`. */
  style?: RopeStyle;
  /** Elements between consecutive tokens; default `heads * headStride`. */
  stride?: number;
  /** Elements between consecutive heads; default `headDim`. */
  headStride?: number;
  /** Element index of token 0's head 0 in `x`; default 0. */
  offset?: number;
}

/**
 * HF's inverse frequencies with its f32 roundings: `1.0 / (theta ** (arange(0, rotaryDim, 2).float()
 * / rotaryDim))`, each operation rounded to f32 as torch does (the exponent, the power, the
 * reciprocal).
 */
export function ropeInvFreq(theta: number, rotaryDim: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(rotaryDim / 2);
  for (let i = 0; i < out.length; i++) out[i] = f(1 / f(f(theta) ** f((2 * i) / rotaryDim)));
  return out;
}

const invFreqTables = new WeakMap<Gpu, Map<string, GPUBuffer>>();

/** The GPU table of {@linkcode ropeInvFreq}, uploaded once per device, theta and rotaryDim. */
function invFreqTable(gpu: Gpu, theta: number, rotaryDim: number): GPUBuffer {
  let tables = invFreqTables.get(gpu);
  if (!tables) invFreqTables.set(gpu, tables = new Map());
  const key = `${theta}|${rotaryDim}`;
  let buf = tables.get(key);
  if (!buf) {
    buf = gpu.storage("dense", ropeInvFreq(theta, rotaryDim), "rope.inv_freq");
    tables.set(key, buf);
  }
  return buf;
}

/**
 * Builds the in-place RoPE dispatch: for each token `t < T` at position `pos[0] + t` and head
 * `h < heads`, rotates the first `rotaryDim` dims of the head starting at element
 * `offset + t * stride + h * headStride` of `x`.
 *
 * @example
 * ```ts ignore
 * // q and k parts of a fused qkv buffer [T, (Hq + 2 Hkv) * D].
 * const stride = (Hq + 2 * Hkv) * D;
 * gpu.submit([
 *   await rope(gpu, { x: qkv, pos, T, heads: Hq, headDim: D, theta: 1e6, stride }),
 *   await rope(gpu, { x: qkv, pos, T, heads: Hkv, headDim: D, theta: 1e6, stride, offset: Hq * D }),
 * ]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, rotaryDim, strides that make heads or
 * tokens overlap, theta/invFreq, bindings too small or sharing a buffer).
 */
export async function rope(gpu: Gpu, args: RopeArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const heads = argCount("heads", args.heads);
  const headDim = argCount("headDim", args.headDim, 2);
  const { rotaryDim, style } = rotaryArgs(args, headDim);
  const headStride = argCount("headStride", args.headStride ?? headDim, headDim);
  const minStride = (heads - 1) * headStride + headDim;
  const stride = argCount("stride", args.stride ?? heads * headStride, minStride);
  const offset = argCount("offset", args.offset ?? 0, 0);
  const last = offset + (T - 1) * stride + (heads - 1) * headStride + rotaryDim;
  const x = argBinding(gpu, "x", args.x, last * 4);
  const pos = argBinding(gpu, "pos", args.pos, 4);
  argDistinct("x", x, { pos });
  const invFreq = frequencies(gpu, args, rotaryDim);
  if (invFreq.custom) argDistinct("x", x, { invFreq: invFreq.custom });
  const pipeline = await gpu.pipeline(ROPE, { WG, NEOX: style === "neox" ? 1 : 0 });
  const params = gpu.uniform(
    new ParamWriter().u32(T, heads, rotaryDim / 2, stride, headStride, offset).bytes(),
    "rope.params",
  );
  const threads = T * heads * (rotaryDim / 2);
  return gpu.dispatch(
    pipeline,
    [params, invFreq.binding, pos, x],
    gpu.grid(Math.ceil(threads / WG)),
  );
}

/** The checked `rotaryDim` (even, 2 .. headDim; default headDim) and `style` (default neox). */
function rotaryArgs(
  args: { rotaryDim?: number; style?: RopeStyle },
  headDim: number,
): { rotaryDim: number; style: RopeStyle } {
  const rotaryDim = argCount("rotaryDim", args.rotaryDim ?? headDim, 2, headDim);
  if (rotaryDim % 2 !== 0) {
    throw new ArgumentError("rotaryDim", `expected an even number of dims, got ${rotaryDim}`);
  }
  const style = argOneOf(
    "style",
    args.style ?? "neox",
    ["neox", "interleaved"] as const,
    "RoPE style",
  );
  return { rotaryDim, style };
}

/** The inverse frequency binding: the caller's `invFreq` (also as `custom`) or theta's table. */
function frequencies(
  gpu: Gpu,
  args: { theta?: number; invFreq?: Binding },
  rotaryDim: number,
): { binding: Binding; custom?: BindingRange } {
  if (args.invFreq !== undefined) {
    if (args.theta !== undefined) {
      throw new ArgumentError("theta", "give theta or invFreq, not both");
    }
    const custom = argBinding(gpu, "invFreq", args.invFreq, (rotaryDim / 2) * 4);
    return { binding: custom, custom };
  }
  const theta = argNumber("theta", args.theta, { positive: true });
  return { binding: invFreqTable(gpu, theta, rotaryDim) };
}

/** Arguments of {@linkcode ropeKv}. */
export interface RopeKvArgs {
  /** Queries, f32 `[T, nHeads, headDim]`, rotated in place. */
  q: Binding;
  /** Keys and values of the batch, f32 `[T, nKvHeads, headDim]` (read only). */
  k: Binding;
  v: Binding;
  /** The caches, f32 `[nKvHeads, maxSeq, headDim]`. */
  kCache: Binding;
  vCache: Binding;
  /** `array<u32>` whose element 0 is the position of token 0. */
  pos: Binding;
  /** Tokens, >= 1. */
  T: number;
  /** Query heads, >= 1. */
  nHeads: number;
  /** Key/value heads, >= 1. */
  nKvHeads: number;
  /** Dims per head, >= 2. */
  headDim: number;
  /** Cache capacity in positions (tokens at or past it are not written). */
  maxSeq: number;
  /** Rotated dims per head (the first ones): even, 2 .. headDim; default headDim. */
  rotaryDim?: number;
  /** Frequency base, > 0; or give `invFreq` instead. */
  theta?: number;
  /** Own inverse frequencies, `rotaryDim / 2` f32 values; replaces `theta`. */
  invFreq?: Binding;
  /** Pairing; default `neox`. */
  style?: RopeStyle;
  /**
   * Store the keys and values rounded to f16 (to nearest), as an f16 KV cache holds them (the
   * caches stay f32); default false.
   */
  f16Cache?: boolean;
}

/**
 * Builds the fused RoPE + KV append of an attention block: {@linkcode rope} of `q` in place, then
 * {@linkcode rope} of `k` and `kvAppend` of the rotated `k` and of `v` into the caches at positions
 * `pos[0] + t` — one dispatch instead of three, the same arithmetic (`k` is not modified: the rotated
 * keys go to the cache only).
 *
 * @example
 * ```ts ignore
 * gpu.submit([await ropeKv(gpu, { q, k, v, kCache, vCache, pos, T: 1, nHeads: 32, nKvHeads: 8,
 *   headDim: 128, maxSeq: 4096, theta: 1e6 })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, rotaryDim, theta/invFreq, bindings too
 * small or sharing a buffer a written one uses).
 */
export async function ropeKv(gpu: Gpu, args: RopeKvArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const nHeads = argCount("nHeads", args.nHeads);
  const nKvHeads = argCount("nKvHeads", args.nKvHeads);
  const headDim = argCount("headDim", args.headDim, 2);
  const maxSeq = argCount("maxSeq", args.maxSeq);
  const { rotaryDim, style } = rotaryArgs(args, headDim);
  const qShape = `f32 [T=${T}, nHeads=${nHeads}, headDim=${headDim}]`;
  const kvShape = `f32 [T=${T}, nKvHeads=${nKvHeads}, headDim=${headDim}]`;
  const cacheShape = `f32 [nKvHeads=${nKvHeads}, maxSeq=${maxSeq}, headDim=${headDim}]`;
  const q = argBinding(gpu, "q", args.q, T * nHeads * headDim * 4, qShape);
  const k = argBinding(gpu, "k", args.k, T * nKvHeads * headDim * 4, kvShape);
  const v = argBinding(gpu, "v", args.v, T * nKvHeads * headDim * 4, kvShape);
  const cache = nKvHeads * maxSeq * headDim * 4;
  const kCache = argBinding(gpu, "kCache", args.kCache, cache, cacheShape);
  const vCache = argBinding(gpu, "vCache", args.vCache, cache, cacheShape);
  const pos = argBinding(gpu, "pos", args.pos, 4, "u32 [1]: the first token's position");
  const invFreq = frequencies(gpu, args, rotaryDim);
  const read = { k, v, pos, invFreq: invFreq.custom };
  argDistinct("q", q, read);
  argDistinct("kCache", kCache, read);
  argDistinct("vCache", vCache, read);
  argDisjoint("kCache", kCache, "q", q);
  argDisjoint("vCache", vCache, "q", q);
  argDistinct("vCache", vCache, { kCache });
  const f16Cache = args.f16Cache === undefined ? false : argBoolean("f16Cache", args.f16Cache);
  const pipeline = await gpu.pipeline(ROPE_KV, {
    WG,
    NEOX: style === "neox" ? 1 : 0,
    F16_CACHE: f16Cache ? 1 : 0,
  });
  const params = gpu.uniform(
    new ParamWriter().u32(T, nHeads, nKvHeads, headDim, rotaryDim / 2, maxSeq).bytes(),
    "rope_kv.params",
  );
  const threads = T * (nHeads * (rotaryDim / 2) + nKvHeads * headDim);
  return gpu.dispatch(
    pipeline,
    [params, invFreq.binding, pos, q, k, v, kCache, vCache],
    gpu.grid(Math.ceil(threads / WG)),
  );
}
