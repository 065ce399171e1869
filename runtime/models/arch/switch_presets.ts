/**
 * `make-model` shapes of Switch Transformers ({@linkcode SWITCH_PRESETS}): the real checkpoints'
 * (`switch-base-8` ... `-256`, `switch-large-128`, the Pre-gated MoE paper's models) and a tiny one
 * with the HF fixture's dimensions, and the config.json each one is written with
 * ({@linkcode switchConfigJson}, parsed back by `parseSwitchConfig`). Data only: nothing here writes
 * files.
 *
 * @example
 * ```ts
 * import { SWITCH_PRESETS, switchConfigJson } from "./switch_presets.ts";
 * import { parseSwitchConfig } from "./switch_config.ts";
 * const cfg = parseSwitchConfig(switchConfigJson(SWITCH_PRESETS["switch-base-64"]));
 * console.log(cfg.experts, cfg.encoder.sparse.filter(Boolean).length); // 64 6
 * ```
 * @module
 */

/** The dimensions of a Switch model. */
export interface SwitchDims {
  /** `d_model`. */
  readonly dModel: number;
  /** `d_ff` (dense layers and every expert). */
  readonly dFf: number;
  /** `d_kv`, the width of one head. */
  readonly dKv: number;
  /** `num_heads`. */
  readonly heads: number;
  /** `num_layers` (encoder). */
  readonly encoderLayers: number;
  /** `num_decoder_layers`. */
  readonly decoderLayers: number;
  /** `num_sparse_encoder_layers` (every other layer in the real models). */
  readonly sparseEncoderLayers: number;
  /** `num_sparse_decoder_layers`. */
  readonly sparseDecoderLayers: number;
  /** `num_experts`. */
  readonly experts: number;
  /** `vocab_size`. */
  readonly vocab: number;
  /** `relative_attention_num_buckets`. */
  readonly relBuckets: number;
  /** `relative_attention_max_distance`. */
  readonly relMaxDistance: number;
  /** `tie_word_embeddings`. */
  readonly tieEmbeddings: boolean;
}

/** A named Switch shape. */
export interface SwitchPreset {
  /** The preset's name, e.g. `switch-base-8`. */
  readonly name: string;
  /** One line about it. */
  readonly description: string;
  /** Its dimensions. */
  readonly dims: SwitchDims;
}

const BASE = {
  dModel: 768,
  dFf: 3072,
  dKv: 64,
  heads: 12,
  encoderLayers: 12,
  decoderLayers: 12,
  sparseEncoderLayers: 6,
  sparseDecoderLayers: 6,
  vocab: 32128,
  relBuckets: 32,
  relMaxDistance: 128,
  tieEmbeddings: true,
} as const;

function base(experts: number): SwitchPreset {
  return {
    name: `switch-base-${experts}`,
    description: `google/switch-base-${experts}: 12 + 12 layers, d_model 768, ${experts} experts ` +
      `in every other layer of both stacks`,
    dims: { ...BASE, experts },
  };
}

/**
 * The presets by name: `switch-base-{8,16,32,64,128,256}` (d_model 768, d_ff 3072, 12 + 12 layers,
 * 12 heads, vocab 32128), `switch-large-128` (d_model 1024, d_ff 4096, 24 + 24 layers, 16 heads) and
 * `switch-tiny` (the HF fixture's dimensions: d_model 32, 4 heads of 12, 4 + 6 layers, 8 experts,
 * vocab 100).
 *
 * @example
 * ```ts
 * import { SWITCH_PRESETS } from "./switch_presets.ts";
 * const d = SWITCH_PRESETS["switch-large-128"].dims;
 * console.log(2 * d.dModel * d.dFf * 4); // 33554432 bytes: one f32 expert (wi + wo)
 * ```
 */
export const SWITCH_PRESETS: Readonly<Record<string, SwitchPreset>> = Object.freeze({
  ...Object.fromEntries([8, 16, 32, 64, 128, 256].map((e) => [`switch-base-${e}`, base(e)])),
  "switch-large-128": {
    name: "switch-large-128",
    description: "google/switch-large-128: 24 + 24 layers, d_model 1024, 128 experts in every " +
      "other layer of both stacks",
    dims: {
      ...BASE,
      dModel: 1024,
      dFf: 4096,
      heads: 16,
      encoderLayers: 24,
      decoderLayers: 24,
      sparseEncoderLayers: 12,
      sparseDecoderLayers: 12,
      experts: 128,
    },
  },
  "switch-tiny": {
    name: "switch-tiny",
    description: "the HF fixture's shape: d_model 32, 4 heads of 12, 4 + 6 layers, 8 experts",
    dims: {
      dModel: 32,
      dFf: 64,
      dKv: 12,
      heads: 4,
      encoderLayers: 4,
      decoderLayers: 6,
      sparseEncoderLayers: 2,
      sparseDecoderLayers: 3,
      experts: 8,
      vocab: 100,
      relBuckets: 8,
      relMaxDistance: 16,
      tieEmbeddings: true,
    },
  },
});

/**
 * The config.json of a preset, with the keys and values of the hub's `google/switch-*` configs
 * (router in float32 with jitter 0.01, capacity 64, dropout 0.1, pad 0 = decoder start, EOS 1).
 *
 * @example
 * ```ts
 * import { SWITCH_PRESETS, switchConfigJson } from "./switch_presets.ts";
 * const c = switchConfigJson(SWITCH_PRESETS["switch-base-8"], "bfloat16");
 * console.log(c.encoder_sparse_step, c.dtype); // 2 bfloat16
 * ```
 */
export function switchConfigJson(
  preset: SwitchPreset,
  dtype: "float32" | "float16" | "bfloat16" = "float32",
): Record<string, unknown> {
  const d = preset.dims;
  const step = (layers: number, sparse: number) =>
    sparse > 0 ? Math.floor(layers / sparse) : layers;
  return {
    architectures: ["SwitchTransformersForConditionalGeneration"],
    model_type: "switch_transformers",
    d_ff: d.dFf,
    d_kv: d.dKv,
    d_model: d.dModel,
    num_heads: d.heads,
    num_layers: d.encoderLayers,
    num_decoder_layers: d.decoderLayers,
    num_sparse_encoder_layers: d.sparseEncoderLayers,
    num_sparse_decoder_layers: d.sparseDecoderLayers,
    encoder_sparse_step: step(d.encoderLayers, d.sparseEncoderLayers),
    decoder_sparse_step: step(d.decoderLayers, d.sparseDecoderLayers),
    num_experts: d.experts,
    expert_capacity: 64,
    vocab_size: d.vocab,
    relative_attention_num_buckets: d.relBuckets,
    relative_attention_max_distance: d.relMaxDistance,
    tie_word_embeddings: d.tieEmbeddings,
    dense_act_fn: "relu",
    layer_norm_epsilon: 1e-6,
    dropout_rate: 0.1,
    router_bias: false,
    router_dtype: "float32",
    router_jitter_noise: 0.01,
    router_ignore_padding_tokens: false,
    router_z_loss_coef: 0.001,
    router_aux_loss_coef: 0.001,
    initializer_factor: 1.0,
    is_encoder_decoder: true,
    use_cache: true,
    pad_token_id: 0,
    eos_token_id: 1,
    decoder_start_token_id: 0,
    dtype,
  };
}
