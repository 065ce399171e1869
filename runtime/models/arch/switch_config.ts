/**
 * Switch Transformers (HF `model_type: "switch_transformers"`, the Pre-gated MoE paper's model): its
 * config.json parsed into a frozen {@linkcode SwitchConfig} ({@linkcode parseSwitchConfig}), the
 * checkpoint's tensor names ({@linkcode switchNames}) and every tensor a configuration needs with its
 * shape ({@linkcode switchTensors}). Pure: no file access. The `make-model` presets are in
 * `switch_presets.ts`.
 *
 * The model is a T5 encoder-decoder: T5 layer norm (RMS, no mean, no bias), attention without the
 * 1/sqrt(d) scale and with a relative position bias from a `[buckets, heads]` table held by the first
 * layer of each stack (bidirectional buckets in the encoder, causal in the decoder), ReLU feed-forward
 * blocks (`wi`, `wo`), every `sparse_step`-th of which (layer i with `i % step == 1`, or every layer
 * when the step is 1) is a mixture of experts with a top-1 router: softmax in f32, the chosen
 * expert's output scaled by its probability. The decoder cross-attends to the encoder's output; the
 * LM head is the embedding scaled by `d_model^-0.5` when tied, or `lm_head.weight` when not.
 *
 * Fields that change the math are honoured or rejected with a {@linkcode ConfigError} naming the
 * file and the field. Fields that do not change inference are accepted and ignored: the router's
 * jitter noise (training only), dropout, `router_ignore_padding_tokens` (unused by HF's forward),
 * the loss coefficients, and `expert_capacity` (transformers 5's router masks against a cumulative
 * sum over a dimension of size one, so no token is ever dropped at inference; the HF fixture's
 * `hf_semantics.expert_capacity_honoured` records it for the installed version).
 *
 * @example
 * ```ts
 * import { parseSwitchConfig, switchNames } from "./switch_config.ts";
 * const cfg = parseSwitchConfig({ model_type: "switch_transformers", num_layers: 4,
 *   num_sparse_encoder_layers: 2, num_decoder_layers: 4, num_sparse_decoder_layers: 2 });
 * console.log(cfg.encoder.sparse); // [false, true, false, true]
 * console.log(switchNames(cfg).encoder[1].ffn.kind); // moe
 * ```
 * @module
 */
import { ConfigError } from "../../base/errors.ts";

/** The `model_type` of Switch Transformers checkpoints. */
export const SWITCH_MODEL_TYPE = "switch_transformers";

/** One stack (encoder or decoder). */
export interface SwitchStack {
  /** Layers (`num_layers` / `num_decoder_layers`). */
  readonly layers: number;
  /** HF's sparse step: layer i is MoE when `i % step == 1`, or every layer when it is 1. */
  readonly sparseStep: number;
  /** Per layer: a mixture of experts (true) or a dense ReLU FFN. */
  readonly sparse: readonly boolean[];
}

/** A parsed Switch Transformers config.json. */
export interface SwitchConfig {
  /** Always `switch_transformers`. */
  readonly arch: typeof SWITCH_MODEL_TYPE;
  /** Vocabulary size. */
  readonly vocabSize: number;
  /** Model width (`d_model`). */
  readonly dModel: number;
  /** Feed-forward width of the dense layers and of every expert (`d_ff`). */
  readonly dFf: number;
  /** Width of one attention head (`d_kv`); q/k/v are `[heads * dKv, dModel]`. */
  readonly dKv: number;
  /** Attention heads (`num_heads`). */
  readonly heads: number;
  /** Experts per sparse layer (`num_experts`); routing is top-1. */
  readonly experts: number;
  /** The encoder stack. */
  readonly encoder: SwitchStack;
  /** The decoder stack. */
  readonly decoder: SwitchStack;
  /** Relative position buckets (`relative_attention_num_buckets`). */
  readonly relBuckets: number;
  /** Distance from which the buckets saturate (`relative_attention_max_distance`). */
  readonly relMaxDistance: number;
  /** Layer norm epsilon (`layer_norm_epsilon`). */
  readonly eps: number;
  /** The routers have a bias (`router_bias`). */
  readonly routerBias: boolean;
  /** The LM head is the shared embedding (`tie_word_embeddings`). */
  readonly tieEmbeddings: boolean;
  /** Factor on the decoder's output before the LM head: `dModel^-0.5` when tied, else 1. */
  readonly headScale: number;
  /**
   * The first decoder input (`decoder_start_token_id`, else `bos_token_id`), or null when the config
   * names neither (HF's `generate` then fails; teacher-forced logits do not need it).
   */
  readonly decoderStartTokenId: number | null;
  /** Tokens that end generation (`eos_token_id`; empty: none). */
  readonly eosTokenIds: readonly number[];
  /** The padding token (`pad_token_id`), or null. */
  readonly padTokenId: number | null;
  /** The raw config.json object. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** A parsed JSON object. */
type Json = Record<string, unknown>;

/** transformers 5's `SwitchTransformersConfig` defaults, used for keys a config.json omits. */
const HF_DEFAULTS = Object.freeze({
  vocab_size: 32128,
  d_model: 768,
  d_kv: 64,
  d_ff: 2048,
  num_layers: 12,
  num_sparse_encoder_layers: 3,
  num_sparse_decoder_layers: 3,
  num_heads: 12,
  num_experts: 8,
  relative_attention_num_buckets: 32,
  relative_attention_max_distance: 128,
  layer_norm_epsilon: 1e-6,
  pad_token_id: 0,
  eos_token_id: 1,
});

const isSet = (v: unknown) => v !== undefined && v !== null;

function intField(raw: Json, key: string, where: string, min = 1): number {
  const v = isSet(raw[key]) ? raw[key] : (HF_DEFAULTS as Record<string, number>)[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new ConfigError(
      `${where}: '${key}' must be an integer >= ${min}, found ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function boolField(raw: Json, key: string, where: string, fallback: boolean): boolean {
  const v = raw[key];
  if (!isSet(v)) return fallback;
  if (typeof v !== "boolean") {
    throw new ConfigError(`${where}: '${key}' must be true or false, found ${JSON.stringify(v)}`);
  }
  return v;
}

/** The value a field must have, when set: anything else is rejected with `hint`. */
function onlyValue(raw: Json, key: string, allowed: unknown, where: string, hint: string): void {
  const v = raw[key];
  if (isSet(v) && v !== allowed) {
    throw new ConfigError(
      `${where}: '${key}' is ${JSON.stringify(v)}; only ${JSON.stringify(allowed)} is supported`,
      hint,
    );
  }
}

/**
 * HF's sparse layer rule: layer `i` is sparse when `i % step == 1`, or every layer when `step` is
 * 1 (no layer when `step` is 0).
 *
 * @example
 * ```ts
 * import { switchSparseLayers } from "./switch_config.ts";
 * console.log(switchSparseLayers(6, 3)); // [false, true, false, false, true, false]
 * ```
 */
export function switchSparseLayers(layers: number, step: number): boolean[] {
  return Array.from({ length: layers }, (_, i) => step > 0 && (step === 1 || i % step === 1));
}

/**
 * A stack's sparse step as transformers 5 derives it: `layers // num_sparse` (or `layers` when
 * `num_sparse` is 0). An `*_sparse_step` key in the file must agree with it; alone, it is used as is.
 */
function stack(
  raw: Json,
  which: "encoder" | "decoder",
  layers: number,
  where: string,
): SwitchStack {
  const countKey = `num_sparse_${which}_layers`;
  const stepKey = `${which}_sparse_step`;
  let step: number;
  if (isSet(raw[countKey]) || !isSet(raw[stepKey])) {
    const count = intField(raw, countKey, where, 0);
    if (count > layers) {
      throw new ConfigError(
        `${where}: '${countKey}' is ${count}, more than the stack's ${layers} layers`,
      );
    }
    step = count > 0 ? Math.floor(layers / count) : layers;
    if (isSet(raw[stepKey]) && raw[stepKey] !== step) {
      throw new ConfigError(
        `${where}: '${stepKey}' is ${JSON.stringify(raw[stepKey])} but '${countKey}' = ${count} ` +
          `over ${layers} layers gives ${step}`,
        `transformers derives ${stepKey} from ${countKey}; make them agree`,
      );
    }
  } else {
    step = intField(raw, stepKey, where, 0);
  }
  return Object.freeze({
    layers,
    sparseStep: step,
    sparse: Object.freeze(switchSparseLayers(layers, step)),
  });
}

function tokenList(v: unknown, key: string, where: string): number[] {
  if (!isSet(v)) return [];
  const list = Array.isArray(v) ? v : [v];
  if (list.some((x) => typeof x !== "number" || !Number.isInteger(x) || x < 0)) {
    throw new ConfigError(`${where}: '${key}' must be a token id or a list of them, found ${v}`);
  }
  return list as number[];
}

function rejectUnsupported(raw: Json, where: string): void {
  if (raw.model_type !== SWITCH_MODEL_TYPE) {
    throw new ConfigError(
      `${where}: 'model_type' is ${
        JSON.stringify(raw.model_type)
      }, expected "${SWITCH_MODEL_TYPE}"`,
    );
  }
  onlyValue(raw, "is_encoder_decoder", true, where, "Switch Transformers is an encoder-decoder");
  onlyValue(
    raw,
    "dense_act_fn",
    "relu",
    where,
    "the Switch checkpoints' feed-forward blocks are ReLU (wi, wo)",
  );
  onlyValue(
    raw,
    "feed_forward_proj",
    "relu",
    where,
    "a gated feed-forward (wi_0, wi_1) is not supported",
  );
  onlyValue(
    raw,
    "is_gated_act",
    false,
    where,
    "a gated feed-forward (wi_0, wi_1) is not supported",
  );
  onlyValue(
    raw,
    "num_selected_experts",
    1,
    where,
    "Switch routing is top-1 (transformers ignores this key; a checkpoint trained top-k would " +
      "silently change)",
  );
  onlyValue(
    raw,
    "router_type",
    "tokens_masked",
    where,
    "only the tokens-choose top-1 router of the Switch checkpoints is supported",
  );
  onlyValue(
    raw,
    "router_dtype",
    "float32",
    where,
    "the router runs in float32 (the checkpoints' setting); a half-precision router is not supported",
  );
}

/**
 * Parses a Switch Transformers config.json object. `generation` (generation_config.json, when
 * there is one) takes precedence for `decoder_start_token_id` and `eos_token_id`, as HF's `generate`
 * does.
 * @param where names the file in error messages.
 * @throws {ConfigError} naming the field, for an unsupported or invalid value.
 *
 * @example
 * ```ts
 * import { parseSwitchConfig } from "./switch_config.ts";
 * const cfg = parseSwitchConfig({ model_type: "switch_transformers", d_model: 32, d_kv: 8,
 *   num_heads: 4, decoder_start_token_id: 0 });
 * console.log(cfg.headScale === 32 ** -0.5, cfg.eosTokenIds); // true [1]
 * ```
 */
export function parseSwitchConfig(
  raw: Json,
  where = "config.json",
  generation: Json = {},
): SwitchConfig {
  rejectUnsupported(raw, where);
  const encoderLayers = intField(raw, "num_layers", where);
  const decoderLayers = isSet(raw.num_decoder_layers)
    ? intField(raw, "num_decoder_layers", where)
    : encoderLayers;
  const dModel = intField(raw, "d_model", where);
  const relBuckets = intField(raw, "relative_attention_num_buckets", where, 4);
  const relMaxDistance = intField(raw, "relative_attention_max_distance", where);
  if (relMaxDistance <= relBuckets / 2) {
    throw new ConfigError(
      `${where}: 'relative_attention_max_distance' (${relMaxDistance}) must exceed half of ` +
        `'relative_attention_num_buckets' (${relBuckets})`,
      "the logarithmic buckets start at num_buckets / 2 (causal) and end at max_distance",
    );
  }
  const eps = isSet(raw.layer_norm_epsilon)
    ? raw.layer_norm_epsilon
    : HF_DEFAULTS.layer_norm_epsilon;
  if (typeof eps !== "number" || !(eps >= 0)) {
    throw new ConfigError(`${where}: 'layer_norm_epsilon' must be a number >= 0, found ${eps}`);
  }
  const tie = boolField(raw, "tie_word_embeddings", where, true);
  const startKey = isSet(generation.decoder_start_token_id)
    ? generation.decoder_start_token_id
    : isSet(raw.decoder_start_token_id)
    ? raw.decoder_start_token_id
    : raw.bos_token_id;
  const start = tokenList(startKey, "decoder_start_token_id", where);
  if (start.length > 1) {
    throw new ConfigError(
      `${where}: 'decoder_start_token_id' must be one token id, found ${JSON.stringify(startKey)}`,
      "Switch checkpoints start decoding from the pad token: set decoder_start_token_id to 0",
    );
  }
  const eosRaw = "eos_token_id" in generation
    ? generation.eos_token_id
    : "eos_token_id" in raw
    ? raw.eos_token_id
    : HF_DEFAULTS.eos_token_id;
  const pad = "pad_token_id" in raw ? raw.pad_token_id : HF_DEFAULTS.pad_token_id;
  const cfg: SwitchConfig = {
    arch: SWITCH_MODEL_TYPE,
    vocabSize: intField(raw, "vocab_size", where),
    dModel,
    dFf: intField(raw, "d_ff", where),
    dKv: intField(raw, "d_kv", where),
    heads: intField(raw, "num_heads", where),
    experts: intField(raw, "num_experts", where),
    encoder: stack(raw, "encoder", encoderLayers, where),
    decoder: stack(raw, "decoder", decoderLayers, where),
    relBuckets,
    relMaxDistance,
    eps,
    routerBias: boolField(raw, "router_bias", where, false),
    tieEmbeddings: tie,
    headScale: tie ? dModel ** -0.5 : 1,
    decoderStartTokenId: start.length ? start[0] : null,
    eosTokenIds: Object.freeze(tokenList(eosRaw, "eos_token_id", where)),
    padTokenId: isSet(pad) ? tokenList(pad, "pad_token_id", where)[0] : null,
    raw: Object.freeze({ ...raw }),
  };
  return Object.freeze(cfg);
}

// ------------------------------------------------------------------------------------ names

/** The projections of one attention block (`[heads * dKv, dModel]`; `o` is `[dModel, heads * dKv]`). */
export interface SwitchAttentionNames {
  readonly q: string;
  readonly k: string;
  readonly v: string;
  readonly o: string;
}

/** A ReLU feed-forward: `wi` `[dFf, dModel]`, `wo` `[dModel, dFf]`. */
export interface SwitchMlpNames {
  readonly wi: string;
  readonly wo: string;
}

/** The feed-forward block of a layer: its norm and a dense MLP or the experts and their router. */
export type SwitchFfnNames =
  & { readonly norm: string }
  & (
    | ({ readonly kind: "dense" } & SwitchMlpNames)
    | {
      readonly kind: "moe";
      /** Router `[experts, dModel]` (and its bias `[experts]` with `router_bias`). */
      readonly router: string;
      readonly routerBias?: string;
      /** Expert `e`'s `wi` and `wo`. */
      expert(e: number): SwitchMlpNames;
    }
  );

/** The tensors of one layer of a stack. */
export interface SwitchLayerNames {
  /** Norm before self-attention. */
  readonly selfNorm: string;
  readonly self: SwitchAttentionNames;
  /** The stack's relative position bias table `[relBuckets, heads]` (layer 0 only). */
  readonly relBias?: string;
  /** Decoder only: norm before cross-attention, and the cross-attention projections. */
  readonly crossNorm?: string;
  readonly cross?: SwitchAttentionNames;
  readonly ffn: SwitchFfnNames;
}

/** Every tensor name of a Switch checkpoint, by role. */
export interface SwitchNames {
  /**
   * The shared embedding `[vocab, dModel]` under the names a checkpoint may use, preferred first
   * (transformers saves one of the tied copies: see {@linkcode pickSwitchEmbedding}).
   */
  readonly embedCandidates: readonly string[];
  readonly encoder: readonly SwitchLayerNames[];
  readonly encoderFinalNorm: string;
  readonly decoder: readonly SwitchLayerNames[];
  readonly decoderFinalNorm: string;
  /** The untied LM head `[vocab, dModel]`, when `tie_word_embeddings` is false. */
  readonly lmHead?: string;
}

function attentionNames(prefix: string): SwitchAttentionNames {
  return {
    q: `${prefix}.q.weight`,
    k: `${prefix}.k.weight`,
    v: `${prefix}.v.weight`,
    o: `${prefix}.o.weight`,
  };
}

function ffnNames(cfg: SwitchConfig, prefix: string, sparse: boolean): SwitchFfnNames {
  const norm = `${prefix}.layer_norm.weight`;
  if (!sparse) {
    return { norm, kind: "dense", wi: `${prefix}.mlp.wi.weight`, wo: `${prefix}.mlp.wo.weight` };
  }
  const router = `${prefix}.mlp.router.classifier`;
  return {
    norm,
    kind: "moe",
    router: `${router}.weight`,
    ...(cfg.routerBias ? { routerBias: `${router}.bias` } : {}),
    expert: (e: number) => ({
      wi: `${prefix}.mlp.experts.expert_${e}.wi.weight`,
      wo: `${prefix}.mlp.experts.expert_${e}.wo.weight`,
    }),
  };
}

function stackNames(cfg: SwitchConfig, which: "encoder" | "decoder"): SwitchLayerNames[] {
  const s = cfg[which];
  return s.sparse.map((sparse, i) => {
    const p = `${which}.block.${i}.layer`;
    const self = `${p}.0.SelfAttention`;
    return {
      selfNorm: `${p}.0.layer_norm.weight`,
      self: attentionNames(self),
      ...(i === 0 ? { relBias: `${self}.relative_attention_bias.weight` } : {}),
      ...(which === "decoder"
        ? { crossNorm: `${p}.1.layer_norm.weight`, cross: attentionNames(`${p}.1.EncDecAttention`) }
        : {}),
      ffn: ffnNames(cfg, `${p}.${which === "decoder" ? 2 : 1}`, sparse),
    };
  });
}

/**
 * The tensor names of a Switch checkpoint as transformers writes them (`save_pretrained` of
 * `SwitchTransformersForConditionalGeneration`, 4.x and 5.x; the hub's `google/switch-*`).
 *
 * @example
 * ```ts
 * import { parseSwitchConfig, switchNames } from "./switch_config.ts";
 * const n = switchNames(parseSwitchConfig({ model_type: "switch_transformers", num_layers: 2,
 *   num_sparse_encoder_layers: 1, num_sparse_decoder_layers: 1 }));
 * const ffn = n.decoder[1].ffn;
 * console.log(ffn.kind === "moe" ? ffn.expert(3).wi : ""); // decoder.block.1.layer.2.mlp.experts.expert_3.wi.weight
 * ```
 */
export function switchNames(cfg: SwitchConfig): SwitchNames {
  return {
    embedCandidates: [
      "shared.weight",
      "encoder.embed_tokens.weight",
      "decoder.embed_tokens.weight",
    ],
    encoder: stackNames(cfg, "encoder"),
    encoderFinalNorm: "encoder.final_layer_norm.weight",
    decoder: stackNames(cfg, "decoder"),
    decoderFinalNorm: "decoder.final_layer_norm.weight",
    ...(cfg.tieEmbeddings ? {} : { lmHead: "lm_head.weight" }),
  };
}

/**
 * The first of the embedding's names that a checkpoint holds (`has`: the checkpoint's name test),
 * or undefined.
 *
 * @example
 * ```ts
 * import { parseSwitchConfig, pickSwitchEmbedding, switchNames } from "./switch_config.ts";
 * const n = switchNames(parseSwitchConfig({ model_type: "switch_transformers" }));
 * console.log(pickSwitchEmbedding(n, (t) => t === "encoder.embed_tokens.weight")); // encoder.embed_tokens.weight
 * ```
 */
export function pickSwitchEmbedding(
  names: SwitchNames,
  has: (name: string) => boolean,
): string | undefined {
  return names.embedCandidates.find(has);
}

/** What a tensor of a Switch checkpoint is for. */
export type SwitchTensorRole =
  | "embedding"
  | "lm_head"
  | "norm"
  | "attention"
  | "relative_bias"
  | "dense_ffn"
  | "router"
  | "expert";

/** A tensor a configuration needs: its name, its shape and its role. */
export interface SwitchTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly role: SwitchTensorRole;
  /** For experts: the stack, layer and expert. */
  readonly expert?: { stack: "encoder" | "decoder"; layer: number; expert: number };
}

/**
 * Every tensor a configuration needs, with its shape (HF `nn.Linear` layout `[out, in]`), in
 * checkpoint order: the embedding (as `shared.weight`), the encoder's layers and final norm, the
 * decoder's, and the LM head when untied.
 *
 * @example
 * ```ts
 * import { parseSwitchConfig, switchTensors } from "./switch_config.ts";
 * const t = switchTensors(parseSwitchConfig({ model_type: "switch_transformers", num_layers: 2,
 *   num_sparse_encoder_layers: 1, num_sparse_decoder_layers: 1, num_experts: 4 }));
 * console.log(t.filter((x) => x.role === "expert").length); // 16 (2 sparse layers x 4 experts x wi, wo)
 * ```
 */
export function switchTensors(cfg: SwitchConfig): SwitchTensor[] {
  const { dModel: d, dFf: f, heads, dKv, experts, vocabSize: V } = cfg;
  const inner = heads * dKv;
  const names = switchNames(cfg);
  const out: SwitchTensor[] = [{
    name: names.embedCandidates[0],
    shape: [V, d],
    role: "embedding",
  }];
  const attention = (a: SwitchAttentionNames) => {
    out.push({ name: a.q, shape: [inner, d], role: "attention" });
    out.push({ name: a.k, shape: [inner, d], role: "attention" });
    out.push({ name: a.v, shape: [inner, d], role: "attention" });
    out.push({ name: a.o, shape: [d, inner], role: "attention" });
  };
  for (const stack of ["encoder", "decoder"] as const) {
    names[stack].forEach((l, layer) => {
      out.push({ name: l.selfNorm, shape: [d], role: "norm" });
      attention(l.self);
      if (l.relBias) {
        out.push({ name: l.relBias, shape: [cfg.relBuckets, heads], role: "relative_bias" });
      }
      if (l.crossNorm && l.cross) {
        out.push({ name: l.crossNorm, shape: [d], role: "norm" });
        attention(l.cross);
      }
      const ffn = l.ffn;
      out.push({ name: ffn.norm, shape: [d], role: "norm" });
      if (ffn.kind === "dense") {
        out.push({ name: ffn.wi, shape: [f, d], role: "dense_ffn" });
        out.push({ name: ffn.wo, shape: [d, f], role: "dense_ffn" });
        return;
      }
      out.push({ name: ffn.router, shape: [experts, d], role: "router" });
      if (ffn.routerBias) out.push({ name: ffn.routerBias, shape: [experts], role: "router" });
      for (let e = 0; e < experts; e++) {
        const x = ffn.expert(e), where = { stack, layer, expert: e };
        out.push({ name: x.wi, shape: [f, d], role: "expert", expert: where });
        out.push({ name: x.wo, shape: [d, f], role: "expert", expert: where });
      }
    });
    out.push({
      name: stack === "encoder" ? names.encoderFinalNorm : names.decoderFinalNorm,
      shape: [d],
      role: "norm",
    });
  }
  if (names.lmHead) out.push({ name: names.lmHead, shape: [V, d], role: "lm_head" });
  return out;
}
