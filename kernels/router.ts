/**
 * MoE router kernel (`router.wgsl`): softmax over each row of router logits and top-k expert
 * selection ({@linkcode routerTopK}).
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { routerTopK } from "./router.ts";
 * const gpu = await openGpu();
 * const logits = gpu.storage("activations", new Float32Array([0.1, 2, -1, 1.5]));
 * const ids = gpu.storage("activations", 8), weights = gpu.storage("activations", 8);
 * gpu.submit([await routerTopK(gpu, { logits, ids, weights, T: 1, E: 4, k: 2, renormalize: true })]);
 * console.log(await gpu.readU32(ids), await gpu.readF32(weights)); // [1, 3] [0.62, 0.38]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import { argBinding, argBoolean, argCount, argDistinct, argObject } from "./args.ts";

/** Most experts {@linkcode routerTopK} supports. */
export const MAX_EXPERTS = 512;
/** Most experts per token {@linkcode routerTopK} supports. */
export const MAX_TOP_K = 16;

const WG = 128;

/** Softmax + top-k over router logits, one workgroup per row. */
export const ROUTER_TOPK: KernelSpec = defineKernel({
  name: "router_topk",
  file: "router.wgsl",
  entry: "main",
  bindings: ["params", "logits", "ids", "weights"],
  constants: { WG, EMAX: MAX_EXPERTS },
});

/** Arguments of {@linkcode routerTopK}. */
export interface RouterTopKArgs {
  /** Router logits, f32 `[T, E]`. */
  logits: Binding;
  /** Chosen experts, u32 `[T, k]`, most probable first (written). */
  ids: Binding;
  /** Their routing weights, f32 `[T, k]` (written). */
  weights: Binding;
  /** Tokens (rows). */
  T: number;
  /** Experts, 1 .. {@linkcode MAX_EXPERTS}. */
  E: number;
  /** Experts per token, 1 .. min(E, {@linkcode MAX_TOP_K}). */
  k: number;
  /**
   * `true`: the k weights are renormalised to sum to 1 (Mixtral, Qwen3 with `norm_topk_prob`);
   * `false`: they are the softmax probabilities over all E (OLMoE, Qwen2-MoE default, Switch).
   */
  renormalize: boolean;
}

/**
 * Builds the dispatch of MoE routing: for each of `T` rows of `E` logits, the softmax over E and the
 * `k` most probable experts (ties: lower index first), written most probable first to `ids` and
 * their probabilities (renormalised over the k when `renormalize`) to `weights`. A row holding a
 * NaN or +Infinity logit has no softmax: its ids are still distinct valid experts (NaN ranks last)
 * and its weights are NaN, so the fault reaches the logits (where generation reports it) instead of
 * being renormalised away.
 *
 * @example
 * ```ts ignore
 * gpu.submit([await routerTopK(gpu, { logits, ids, weights, T: 5, E: 64, k: 8,
 *   renormalize: false })]);
 * ```
 * @throws {ArgumentError} naming the first bad argument.
 */
export async function routerTopK(gpu: Gpu, args: RouterTopKArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const E = argCount("E", args.E, 1, MAX_EXPERTS);
  const k = argCount("k", args.k, 1, Math.min(E, MAX_TOP_K));
  const renormalize = argBoolean("renormalize", args.renormalize);
  const logits = argBinding(gpu, "logits", args.logits, T * E * 4, `f32 [T=${T}, E=${E}]`);
  const ids = argBinding(gpu, "ids", args.ids, T * k * 4, `u32 [T=${T}, k=${k}]`);
  const weights = argBinding(gpu, "weights", args.weights, T * k * 4, `f32 [T=${T}, k=${k}]`);
  argDistinct("ids", ids, { logits, weights });
  argDistinct("weights", weights, { logits });
  const pipeline = await gpu.pipeline(ROUTER_TOPK, { WG, EMAX: MAX_EXPERTS });
  const params = gpu.uniform(
    new ParamWriter().u32(T, E, k, renormalize ? 1 : 0).bytes(),
    "router_topk.params",
  );
  return gpu.dispatch(pipeline, [params, logits, ids, weights], gpu.grid(T));
}
