/**
 * RunState: every activation buffer and the KV cache, allocated once from the config for at most
 * `maxT` tokens per forward pass and `maxSeq` positions. Decoding a token allocates nothing.
 *
 * Shape legend: T tokens in the pass, H hidden, Q = heads * headDim, KV = kvHeads * headDim,
 * E experts, k experts per token, I intermediate size, V vocabulary.
 *
 * @example
 * ```ts ignore
 * const state = allocState(gpu, cfg, { maxT: 64, maxSeq: 512 });
 * ```
 * @module
 */
import type { Gpu } from "../base/gpu/device.ts";
import type { ModelConfig } from "./model_config.ts";
import { Q8K_BLOCK, Q8K_MAX_ROWS, q8kBytes } from "../../kernels/q8k_gemv.ts";

/** The activation buffers of a model. */
export interface RunState {
  readonly maxT: number;
  readonly maxSeq: number;
  /** Rows of `logits` (maxT to score every position, 1 to generate). */
  readonly logitRows: number;
  /** u32 [maxT]: the token ids of the pass. */
  readonly ids: GPUBuffer;
  /** u32 [4]: pos[0] = position of the pass's first token. */
  readonly pos: GPUBuffer;
  /** f32 [T, H]: the residual stream. */
  readonly x: GPUBuffer;
  /** f32 [T, H]: normalised input of the current block. */
  readonly h: GPUBuffer;
  /** f32 [T, Q], [T, KV], [T, KV]: projections. */
  readonly q: GPUBuffer;
  readonly k: GPUBuffer;
  readonly v: GPUBuffer;
  /** f32 [T, Q]: attention output. */
  readonly attn: GPUBuffer;
  /** Per layer f32 [kvHeads, maxSeq, headDim] (maxSeq: that layer's `kvPositions`, when given). */
  readonly kCache: readonly GPUBuffer[];
  readonly vCache: readonly GPUBuffer[];
  /** f32 [T, E] router logits; u32 [T, k] chosen experts; f32 [T, k] their weights. */
  readonly routerLogits: GPUBuffer;
  readonly topIds: GPUBuffer;
  readonly topWeights: GPUBuffer;
  /** f32 [T * k, I]: expert hidden activations; f32 [T * k, H]: expert outputs. */
  readonly moeH: GPUBuffer;
  readonly moeY: GPUBuffer;
  /** f32 [T, I]: dense / shared-expert gate, up and activation. */
  readonly mlpGate: GPUBuffer;
  readonly mlpUp: GPUBuffer;
  readonly mlpAct: GPUBuffer;
  /** f32 [T, H]: shared expert output; f32 [T]: its gate logit. */
  readonly sharedOut: GPUBuffer;
  readonly sharedGate: GPUBuffer;
  /** f32 [H]: the last token's hidden state (copied out of x). */
  readonly last: GPUBuffer;
  /** f32 [logitRows, V]: logits. */
  readonly logits: GPUBuffer;
  /** u32 zeros [max(maxT, 4)]: expert ids and slot table of a dense MLP run as a one-expert MoE. */
  readonly zeros: GPUBuffer;
  /**
   * f32: a product's input rounded as llama.cpp rounds activations (the largest of h, attn, moeH
   * and mlpAct; 4 bytes unless allocated with `roundedActivations`).
   */
  readonly rounded: GPUBuffer;
  /**
   * A decode product's input as llama.cpp's Q8_K activations (int8 values, f32 scales of blocks of
   * 256) for Q4_K / Q5_K weights (4 bytes each unless allocated with `roundedActivations`).
   */
  readonly q8kValues: GPUBuffer;
  readonly q8kScales: GPUBuffer;
}

/** The sizes of a {@linkcode RunState}. */
export interface StateSizes {
  /** Most tokens per forward pass. */
  maxT: number;
  /** Most positions per sequence (the KV caches' length). */
  maxSeq: number;
  /** Rows of logits (default maxT). */
  logitRows?: number;
  /** Positions of layer `i`'s KV cache when they differ per layer (default maxSeq for all). */
  kvPositions?: (layer: number) => number;
  /** Allocate `rounded` for `activations: "llama.cpp"` plans (default false). */
  roundedActivations?: boolean;
}

/** Allocates a {@linkcode RunState} for `cfg` (accounted as activations and KV cache). */
export function allocState(
  gpu: Gpu,
  cfg: ModelConfig,
  sizes: StateSizes,
): RunState {
  const { maxT, maxSeq } = sizes;
  const logitRows = sizes.logitRows ?? maxT;
  const H = cfg.hidden, Q = cfg.heads * cfg.headDim, KV = cfg.kvHeads * cfg.headDim;
  let E = 1, K = 1, moeI = 1, denseI = 1;
  for (const l of cfg.layers) {
    if (l.ffn.kind === "moe") {
      E = Math.max(E, l.ffn.experts);
      K = Math.max(K, l.ffn.topK);
      moeI = Math.max(moeI, l.ffn.inter);
      denseI = Math.max(denseI, l.ffn.sharedInter);
    } else {
      denseI = Math.max(denseI, l.ffn.inter);
    }
  }
  const f = (n: number, label: string) => gpu.storage("activations", n * 4, label);
  // Q8_K inputs: decode rows of any product's input (whole blocks of 256 values).
  const q8k = sizes.roundedActivations === true;
  const q8kRows = Math.min(maxT, Q8K_MAX_ROWS);
  const q8kK = Math.ceil(Math.max(H, Q, moeI, denseI) / Q8K_BLOCK) * Q8K_BLOCK;
  const positions = sizes.kvPositions ?? (() => maxSeq);
  return {
    maxT,
    maxSeq,
    logitRows,
    ids: f(maxT, "ids"),
    pos: f(4, "pos"),
    x: f(maxT * H, "x"),
    h: f(maxT * H, "h"),
    q: f(maxT * Q, "q"),
    k: f(maxT * KV, "k"),
    v: f(maxT * KV, "v"),
    attn: f(maxT * Q, "attn"),
    kCache: cfg.layers.map((_, i) => gpu.storage("kv", KV * positions(i) * 4, `kcache.${i}`)),
    vCache: cfg.layers.map((_, i) => gpu.storage("kv", KV * positions(i) * 4, `vcache.${i}`)),
    routerLogits: f(maxT * E, "router_logits"),
    topIds: f(maxT * K, "top_ids"),
    topWeights: f(maxT * K, "top_weights"),
    moeH: f(maxT * K * moeI, "moe_h"),
    moeY: f(maxT * K * H, "moe_y"),
    mlpGate: f(maxT * denseI, "mlp_gate"),
    mlpUp: f(maxT * denseI, "mlp_up"),
    mlpAct: f(maxT * denseI, "mlp_act"),
    sharedOut: f(maxT * H, "shared_out"),
    sharedGate: f(maxT, "shared_gate"),
    last: f(H, "last"),
    logits: f(logitRows * cfg.vocabSize, "logits"),
    zeros: f(Math.max(maxT, 4), "zeros"), // WebGPU zero-initialises buffers
    rounded: f(sizes.roundedActivations ? maxT * Math.max(H, Q, K * moeI, denseI) : 1, "rounded"),
    q8kValues: f(q8k ? q8kBytes(q8kRows, q8kK).values / 4 : 1, "q8k_values"),
    q8kScales: f(q8k ? q8kBytes(q8kRows, q8kK).scales / 4 : 1, "q8k_scales"),
  };
}
