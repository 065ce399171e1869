/**
 * An attention block's input projections in one dispatch each (`qkv.wgsl`): {@linkcode qkvProj}
 * computes `q = x Wq^T`, `k = x Wk^T` and `v = x Wv^T` in one decode GEMV over the three weight
 * matrices (one workgroup per block of rows of one matrix), {@linkcode qkvBias} adds the three
 * projection biases (Qwen2-MoE) in one pass, and {@linkcode qkvClamp} clamps q, k and v to
 * `[-clip, clip]` in one pass (OLMoE's `clip_qkv`). They replace three `linear` and three `addBias`
 * dispatches per layer; the math is the same (a row's dot product, f32 accumulation, a tree
 * reduction; bias added after).
 *
 * `qkvProj` is a GEMV (each token is one pass over the weights): meant for decode, `T <=`
 * {@linkcode QKV_MAX_T}; longer batches (prefill) are better served by three `matmul`s.
 *
 * @example
 * ```ts ignore
 * gpu.submit([
 *   await qkvProj(gpu, { x: h, wq, wk, wv, q, k, v, T: 1, K: H, Nq: Q, Nkv: KV, dtype: "bf16" }),
 *   await qkvBias(gpu, { q, k, v, bq, bk, bv, T: 1, Nq: Q, Nkv: KV }),
 *   await qkvClamp(gpu, { q, k, v, T: 1, Nq: Q, Nkv: KV, clip: 8 }),
 * ]);
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { type DType, DTYPE_CODE } from "../runtime/base/dtype.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { checkGemvLayout, gemvConstants, type GemvLayout, gemvSource } from "./gemv.ts";
import { gemvLayout } from "./linear.ts";
import {
  argBinding,
  argCount,
  argDisjoint,
  argDistinct,
  argDType,
  argEvenRow,
  argNumber,
  argObject,
  vec4View,
} from "./args.ts";

/** `qkv_bias`'s and `qkv_clamp`'s workgroup size. */
const WG = 256;

/** The largest `T` the decoder hands {@linkcode qkvProj} (it uses three matmuls beyond). */
export const QKV_MAX_T = 8;

/**
 * q, k and v projections of `x` in one GEMV dispatch (`qkv` of `qkv.wgsl`), in the layout and with
 * the row reduction of `gemvLayout` / `gemvSource`.
 */
export const QKV: KernelSpec = defineKernel({
  name: "qkv",
  file: "qkv.wgsl",
  entry: "qkv",
  includes: ["gemv_tree.wgsl", "dtype.wgsl", "vec4_dot.wgsl"],
  bindings: ["params", "x", "wq", "wk", "wv", "q", "k", "v"],
  constants: { WG: 128, TPR: 32, UNROLL: 2, WDTYPE: 0 },
});

/** q, k and v projection biases added in place in one dispatch (`qkv_bias` of `qkv.wgsl`). */
export const QKV_BIAS: KernelSpec = defineKernel({
  name: "qkv_bias",
  file: "qkv.wgsl",
  entry: "qkv_bias",
  includes: ["gemv_tree.wgsl", "dtype.wgsl", "vec4_dot.wgsl"],
  bindings: ["params", "q", "k", "v", "bq", "bk", "bv"],
  constants: { WG },
});

/** q, k and v clamped to `[-clip, clip]` in place in one dispatch (`qkv_clamp` of `qkv.wgsl`). */
export const QKV_CLAMP: KernelSpec = defineKernel({
  name: "qkv_clamp",
  file: "qkv.wgsl",
  entry: "qkv_clamp",
  includes: ["gemv_tree.wgsl", "dtype.wgsl", "vec4_dot.wgsl"],
  bindings: ["params", "q", "k", "v"],
  constants: { WG },
});

/** Arguments of {@linkcode qkvProj}. */
export interface QkvArgs {
  /** Input activations, f32 `[T, K]`. */
  x: Binding;
  /** Weights `[Nq, K]`, `[Nkv, K]`, `[Nkv, K]`, packed u32 words of `dtype`. */
  wq: Binding;
  wk: Binding;
  wv: Binding;
  /** Outputs f32 `[T, Nq]`, `[T, Nkv]`, `[T, Nkv]` (overwritten). */
  q: Binding;
  k: Binding;
  v: Binding;
  /** Tokens, >= 1 (meant for a few: see {@linkcode QKV_MAX_T}). */
  T: number;
  /** Inputs per row (the model width), even for 16-bit weights. */
  K: number;
  /** Rows of `wq` (heads * headDim) and of `wk` / `wv` (kvHeads * headDim). */
  Nq: number;
  Nkv: number;
  /** The weights' dtype (one for all three). */
  dtype: DType;
  /**
   * The GEMV layout (default: `gemvLayout` of `linear.ts` for this device, `K` and `dtype`); for A/B
   * runs and tests.
   */
  layout?: GemvLayout;
}

/**
 * Builds `q[t] = Wq x[t]`, `k[t] = Wk x[t]`, `v[t] = Wv x[t]` for the `T` rows of `x` as one
 * dispatch.
 *
 * @throws {ArgumentError} naming the bad argument: counts, dtype, an odd `K` with 16-bit weights,
 * bindings too small, an output sharing a buffer with an input or overlapping another output.
 */
export async function qkvProj(gpu: Gpu, args: QkvArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const K = argCount("K", args.K);
  const Nq = argCount("Nq", args.Nq);
  const Nkv = argCount("Nkv", args.Nkv);
  const dtype = argDType("dtype", args.dtype);
  argEvenRow("K", K, dtype, "weights");
  const wpw = dtype === "f32" ? 1 : 2;
  const xNeed = T * K * 4;
  const x = vec4View("x", argBinding(gpu, "x", args.x, xNeed, `f32 [T=${T}, K=${K}]`), xNeed);
  const weight = (name: string, b: Binding, N: number) => {
    const need = (N * K / wpw) * 4;
    return vec4View(name, argBinding(gpu, name, b, need, `${dtype} [N=${N}, K=${K}]`), need);
  };
  const wq = weight("wq", args.wq, Nq);
  const wk = weight("wk", args.wk, Nkv);
  const wv = weight("wv", args.wv, Nkv);
  const q = argBinding(gpu, "q", args.q, T * Nq * 4, `f32 [T=${T}, Nq=${Nq}]`);
  const k = argBinding(gpu, "k", args.k, T * Nkv * 4, `f32 [T=${T}, Nkv=${Nkv}]`);
  const v = argBinding(gpu, "v", args.v, T * Nkv * 4, `f32 [T=${T}, Nkv=${Nkv}]`);
  const read = { x, wq, wk, wv };
  argDistinct("q", q, read);
  argDistinct("k", k, read);
  argDistinct("v", v, read);
  argDisjoint("k", k, "q", q);
  argDisjoint("v", v, "q", q);
  argDisjoint("v", v, "k", k);
  const layout = args.layout === undefined
    ? gemvLayout(gpu, K, dtype)
    : checkGemvLayout(gpu, args.layout, "layout");
  const gq = Math.ceil(Nq / layout.ROWS), gkv = Math.ceil(Nkv / layout.ROWS);
  const pipeline = await gpu.pipeline(gemvSource(QKV, layout), {
    ...gemvConstants(layout),
    WDTYPE: DTYPE_CODE[dtype],
  });
  const aligned = (K / wpw) % 4 === 0 ? 1 : 0;
  const params = gpu.uniform(
    new ParamWriter().u32(T, K, Nq, Nkv, gq, gkv, aligned).bytes(),
    "qkv.params",
  );
  return gpu.dispatch(pipeline, [params, x, wq, wk, wv, q, k, v], gpu.grid(gq + 2 * gkv));
}

/** Arguments of {@linkcode qkvBias}. */
export interface QkvBiasArgs {
  /** f32 `[T, Nq]`, `[T, Nkv]`, `[T, Nkv]`, updated in place. */
  q: Binding;
  k: Binding;
  v: Binding;
  /** f32 `[Nq]`, `[Nkv]`, `[Nkv]`. */
  bq: Binding;
  bk: Binding;
  bv: Binding;
  /** Tokens, >= 1. */
  T: number;
  /** Values per row of q and of k / v. */
  Nq: number;
  Nkv: number;
}

/**
 * Builds `q[t] += bq`, `k[t] += bk`, `v[t] += bv` for `t < T` as one dispatch (three `addBias`).
 *
 * @throws {ArgumentError} naming the bad argument (counts, bindings too small, an output sharing a
 * buffer with a bias or overlapping another output).
 */
export async function qkvBias(gpu: Gpu, args: QkvBiasArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const Nq = argCount("Nq", args.Nq);
  const Nkv = argCount("Nkv", args.Nkv);
  const q = argBinding(gpu, "q", args.q, T * Nq * 4, `f32 [T=${T}, Nq=${Nq}]`);
  const k = argBinding(gpu, "k", args.k, T * Nkv * 4, `f32 [T=${T}, Nkv=${Nkv}]`);
  const v = argBinding(gpu, "v", args.v, T * Nkv * 4, `f32 [T=${T}, Nkv=${Nkv}]`);
  const bq = argBinding(gpu, "bq", args.bq, Nq * 4, `f32 [Nq=${Nq}]`);
  const bk = argBinding(gpu, "bk", args.bk, Nkv * 4, `f32 [Nkv=${Nkv}]`);
  const bv = argBinding(gpu, "bv", args.bv, Nkv * 4, `f32 [Nkv=${Nkv}]`);
  const read = { bq, bk, bv };
  argDistinct("q", q, read);
  argDistinct("k", k, read);
  argDistinct("v", v, read);
  argDisjoint("k", k, "q", q);
  argDisjoint("v", v, "q", q);
  argDisjoint("v", v, "k", k);
  const pipeline = await gpu.pipeline(QKV_BIAS, { WG });
  const params = gpu.uniform(
    new ParamWriter().u32(T, 0, Nq, Nkv, 0, 0, 0).bytes(),
    "qkv_bias.params",
  );
  const n = T * (Nq + 2 * Nkv);
  return gpu.dispatch(pipeline, [params, q, k, v, bq, bk, bv], gpu.grid(Math.ceil(n / WG)));
}

/** Arguments of {@linkcode qkvClamp}. */
export interface QkvClampArgs {
  /** f32 `[T, Nq]`, `[T, Nkv]`, `[T, Nkv]`, clamped in place. */
  q: Binding;
  k: Binding;
  v: Binding;
  /** Tokens, >= 1. */
  T: number;
  /** Values per row of q and of k / v. */
  Nq: number;
  Nkv: number;
  /** The bound, a finite number > 0 (rounded to f32): values end in `[-clip, clip]`. */
  clip: number;
}

/**
 * Builds `q = clamp(q, -clip, clip)`, and the same for `k` and `v`, over `T` rows as one dispatch:
 * OLMoE's `clip_qkv` (HF `OlmoeAttention` clamps the normalised q and k and the v projection).
 *
 * @example
 * ```ts ignore
 * gpu.submit([await qkvClamp(gpu, { q, k, v, T, Nq: heads * headDim, Nkv: kvHeads * headDim, clip: 8 })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, a bound that is not a finite number > 0,
 * bindings too small, outputs overlapping).
 */
export async function qkvClamp(gpu: Gpu, args: QkvClampArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const Nq = argCount("Nq", args.Nq);
  const Nkv = argCount("Nkv", args.Nkv);
  const clip = argNumber("clip", args.clip, { positive: true });
  const q = argBinding(gpu, "q", args.q, T * Nq * 4, `f32 [T=${T}, Nq=${Nq}]`);
  const k = argBinding(gpu, "k", args.k, T * Nkv * 4, `f32 [T=${T}, Nkv=${Nkv}]`);
  const v = argBinding(gpu, "v", args.v, T * Nkv * 4, `f32 [T=${T}, Nkv=${Nkv}]`);
  argDisjoint("k", k, "q", q);
  argDisjoint("v", v, "q", q);
  argDisjoint("v", v, "k", k);
  const pipeline = await gpu.pipeline(QKV_CLAMP, { WG });
  const params = gpu.uniform(
    new ParamWriter().u32(T, 0, Nq, Nkv, 0, 0, 0).f32(clip).bytes(),
    "qkv_clamp.params",
  );
  const n = T * (Nq + 2 * Nkv);
  return gpu.dispatch(pipeline, [params, q, k, v], gpu.grid(Math.ceil(n / WG)));
}
