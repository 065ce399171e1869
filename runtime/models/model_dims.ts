/**
 * The shapes `makeModel` writes: {@linkcode ModelDims} (dimensions and options of a model to make),
 * the presets an architecture file declares ({@linkcode PresetSpec}), which dimensions its
 * config.json can express ({@linkcode DimRules}) and the config.json forms ({@linkcode ConfigStyle}).
 * `presets.ts` gathers the presets of every architecture; `plan_model.ts` checks overrides against
 * the rules.
 *
 * @example
 * ```ts
 * import { presetDims } from "./model_dims.ts";
 * const d = presetDims({
 *   hidden: 64, layers: 2, heads: 4, kvHeads: 2, inter: 96, experts: 8, topK: 2, vocab: 256,
 *   normTopK: true, tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-5, maxPositions: 256,
 * });
 * console.log(d.denseInter, d.sparseStep, d.clipQkv); // 96 1 null
 * ```
 * @module
 */

/**
 * The dimensions and options of a model to make. `inter` is the routed experts' intermediate size
 * (`intermediate_size` of Mixtral/OLMoE, `moe_intermediate_size` of the Qwen models); `denseInter`
 * is the Qwen models' dense MLP size (`intermediate_size`, used by layers that are not sparse).
 *
 * @example
 * ```ts
 * import { makeModel, type ModelDims } from "./make_model.ts";
 * const overrides: Partial<ModelDims> = { layers: 1, experts: 16, topK: 4 };
 * await makeModel({ arch: "olmoe", out: "/tmp/olmoe-16", overrides, force: true });
 * ```
 */
export interface ModelDims {
  /** Model width (`hidden_size`). */
  hidden: number;
  /** Decoder layers (`num_hidden_layers`). */
  layers: number;
  /** Attention heads. */
  heads: number;
  /** Key/value heads (divides `heads`). */
  kvHeads: number;
  /**
   * Width of one head; `undefined` means `hidden / heads`. Mixtral and Qwen3-MoE write `head_dim`
   * and accept any value; OLMoE and Qwen2-MoE have no such key and need `hidden / heads`.
   */
  headDim?: number;
  /** Routed experts' intermediate size. */
  inter: number;
  /** Dense MLP intermediate size (Qwen models; ignored by Mixtral and OLMoE). */
  denseInter: number;
  /** Shared expert intermediate size (Qwen2-MoE; 0 = none; must be 0 for the others). */
  sharedInter: number;
  /** Routed experts per MoE layer. */
  experts: number;
  /** Experts per token. */
  topK: number;
  /** Vocabulary size. */
  vocab: number;
  /** Qwen `decoder_sparse_step`: layer `i` is MoE when `(i + 1) % step == 0`. */
  sparseStep: number;
  /** Qwen `mlp_only_layers`: layers forced dense. */
  mlpOnlyLayers: readonly number[];
  /** `norm_topk_prob` (Qwen, OLMoE; Mixtral always renormalises). */
  normTopK: boolean;
  /** `tie_word_embeddings`. */
  tieEmbeddings: boolean;
  /** RoPE base. */
  ropeTheta: number;
  /** RMSNorm epsilon. */
  rmsEps: number;
  /** `max_position_embeddings`. */
  maxPositions: number;
  /** OLMoE `clip_qkv` (`null` = none). */
  clipQkv: number | null;
}

/**
 * How config.json is written: `hf5` as transformers 5.x (`rope_parameters`, `dtype`), `hf4` as 4.x
 * (top-level `rope_theta` and `rope_scaling`, `torch_dtype`; Qwen3-MoE's `num_experts`).
 */
export type ConfigStyle = "hf5" | "hf4";

/**
 * A named model shape as an architecture file declares it (its name and architecture are given by
 * where it is declared; see `Preset` in presets.ts).
 *
 * @example
 * ```ts
 * import { presetDims, type PresetSpec, TINY_TOKENS } from "./model_dims.ts";
 * const p: PresetSpec = {
 *   description: "a tiny model",
 *   dims: presetDims({
 *     hidden: 64, layers: 2, heads: 4, kvHeads: 2, inter: 96, experts: 8, topK: 2, vocab: 256,
 *     normTopK: true, tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-5, maxPositions: 256,
 *   }),
 *   style: "hf5",
 *   tokens: TINY_TOKENS,
 * };
 * console.log(p.dims.layers); // 2
 * ```
 */
export interface PresetSpec {
  /** One line about it. */
  readonly description: string;
  /** Its dimensions. */
  readonly dims: Readonly<ModelDims>;
  /** How its config.json is written. */
  readonly style: ConfigStyle;
  /** Special token ids written to the configs (`null` = none). */
  readonly tokens: {
    readonly bos: number | null;
    readonly eos: number | null;
    readonly pad: number | null;
  };
  /** Other config.json keys that differ from the class defaults. */
  readonly extra?: Readonly<Record<string, unknown>>;
}

/**
 * Which {@linkcode ModelDims} an architecture's config.json can express; `makeModel` rejects
 * overrides outside them.
 *
 * @example
 * ```ts
 * import type { DimRules } from "./model_dims.ts";
 * const rules: DimRules = {
 *   headDim: "derived", denseLayers: false, sharedExpert: false, clipQkv: true,
 *   alwaysRenormalizes: false,
 * };
 * console.log(rules.headDim);
 * ```
 */
export interface DimRules {
  /**
   * `head_dim`: `stored` (always written; a preset's value is kept when `hidden` or `heads`
   * change), `optional` (written when set, else the head width is hidden / heads) or `derived`
   * (no such key: hidden / heads).
   */
  readonly headDim: "stored" | "optional" | "derived";
  /** Dense layers through `sparseStep` / `mlpOnlyLayers`. */
  readonly denseLayers: boolean;
  /** A shared expert (`sharedInter`). */
  readonly sharedExpert: boolean;
  /** `clip_qkv`. */
  readonly clipQkv: boolean;
  /** The top-k weights are always renormalised (`normTopK` must be true). */
  readonly alwaysRenormalizes: boolean;
}

/**
 * Special tokens of the tiny presets.
 *
 * @example
 * ```ts
 * import { TINY_TOKENS } from "./model_dims.ts";
 * console.log(TINY_TOKENS.pad); // 0
 * ```
 */
export const TINY_TOKENS = { bos: null, eos: null, pad: 0 } as const;

/**
 * A preset's {@linkcode ModelDims} with the usual defaults: dense MLPs as wide as the experts, no
 * shared expert, every layer MoE, no `clip_qkv`.
 *
 * @example
 * ```ts
 * import { presetDims } from "./model_dims.ts";
 * const d = presetDims({
 *   hidden: 64, layers: 4, heads: 4, kvHeads: 2, inter: 80, denseInter: 96, experts: 8, topK: 2,
 *   vocab: 256, sparseStep: 2, normTopK: false, tieEmbeddings: false, ropeTheta: 5e4,
 *   rmsEps: 1e-6, maxPositions: 256,
 * });
 * console.log(d.denseInter, d.sparseStep); // 96 2
 * ```
 */
export function presetDims(
  d:
    & Partial<ModelDims>
    & Omit<ModelDims, "denseInter" | "sharedInter" | "sparseStep" | "mlpOnlyLayers" | "clipQkv">,
): ModelDims {
  return {
    denseInter: d.inter,
    sharedInter: 0,
    sparseStep: 1,
    mlpOnlyLayers: [],
    clipQkv: null,
    ...d,
  };
}
