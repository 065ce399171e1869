/**
 * MoE router kernel (`router.wgsl`): softmax over each row of router logits and top-k expert
 * selection ({@linkcode routerTopK}).
 *
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { routerTopK } from "./router.ts";
 * const gpu = await openGpu();
 * const logits = gpu.storage("activations", new Float32Array([0.1, 2, -1, 1.5]));
 * const ids = gpu.storage("activations", 8), weights = gpu.storage("activations", 8);
 * gpu.submit([await routerTopK(gpu, { logits, ids, weights, T: 1, E: 4, k: 2, renormalize: true })]);
 * console.log(await gpu.readU32(ids), await gpu.readF32(weights)); // [1, 3] [0.62, 0.38]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/gpu/device.ts";
import { ArgumentError } from "../runtime/errors.ts";
import { defineKernel, ParamWriter } from "./registry.ts";

/** Most experts {@linkcode routerTopK} supports. */
export const MAX_EXPERTS = 512;
/** Most experts per token {@linkcode routerTopK} supports. */
export const MAX_TOP_K = 16;

const WG = 128;

/** Softmax + top-k over router logits, one workgroup per row. */
export const ROUTER_TOPK = defineKernel({
  name: "router_topk",
  file: "router.wgsl",
  entry: "main",
  bindings: ["params", "logits", "ids", "weights"],
  constants: { WG, EMAX: MAX_EXPERTS },
});

function checkInt(name: string, value: unknown, min: number, max = 0xffffffff): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    const range = max === 0xffffffff ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new ArgumentError(name, `expected an integer ${range}, got ${String(value)}`);
  }
  return value;
}

function checkBinding(name: string, b: unknown, bytes: number, shape: string): Binding {
  if (!b || typeof b !== "object") {
    throw new ArgumentError(name, `expected a GPU buffer of ${bytes} bytes (${shape}), got ${b}`);
  }
  const bb = b as Binding;
  const have = "buffer" in bb ? bb.size ?? bb.buffer.size - (bb.offset ?? 0) : bb.size;
  if (!(have >= bytes)) {
    throw new ArgumentError(
      name,
      `expected at least ${bytes} bytes (${shape}), got a binding of ${have} bytes`,
    );
  }
  return bb;
}

const bufferOf = (b: Binding) => "buffer" in b ? b.buffer : b;

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
 * their probabilities (renormalised over the k when `renormalize`) to `weights`.
 *
 * @example
 * ```ts ignore
 * gpu.submit([await routerTopK(gpu, { logits, ids, weights, T: 5, E: 64, k: 8,
 *   renormalize: false })]);
 * ```
 * @throws {ArgumentError} naming the first bad argument.
 */
export async function routerTopK(gpu: Gpu, args: RouterTopKArgs): Promise<Dispatch> {
  const T = checkInt("T", args.T, 1);
  const E = checkInt("E", args.E, 1, MAX_EXPERTS);
  const k = checkInt("k", args.k, 1, Math.min(E, MAX_TOP_K));
  if (typeof args.renormalize !== "boolean") {
    throw new ArgumentError(
      "renormalize",
      `expected true or false, got ${String(args.renormalize)}`,
    );
  }
  const logits = checkBinding("logits", args.logits, T * E * 4, `f32 [T=${T}, E=${E}]`);
  const ids = checkBinding("ids", args.ids, T * k * 4, `u32 [T=${T}, k=${k}]`);
  const weights = checkBinding("weights", args.weights, T * k * 4, `f32 [T=${T}, k=${k}]`);
  for (
    const [name, b, others] of [["ids", ids, { logits, weights }], ["weights", weights, {
      logits,
    }]] as const
  ) {
    for (const [other, o] of Object.entries(others)) {
      if (bufferOf(o) === bufferOf(b)) {
        throw new ArgumentError(name, `expected a buffer distinct from ${other}, got the same one`);
      }
    }
  }
  const pipeline = await gpu.pipeline(ROUTER_TOPK, { WG, EMAX: MAX_EXPERTS });
  const params = gpu.uniform(
    new ParamWriter().u32(T, E, k, args.renormalize ? 1 : 0).bytes(),
    "router_topk.params",
  );
  return gpu.dispatch(pipeline, [params, logits, ids, weights], gpu.grid(T));
}
