/**
 * The parsed model configuration every architecture produces ({@linkcode ModelConfig}), the checked
 * reading of `config.json` fields ({@linkcode ConfigFields}: every value validated at load, a
 * {@linkcode ConfigError} naming the file and the field, what was expected and what was found), and
 * the fields every Llama-style decoder shares ({@linkcode decoderFields}). Architecture files
 * (`arch/*.ts`) build their configs from these; nothing here knows an architecture by name.
 *
 * @example
 * ```ts
 * import { ConfigFields, decoderFields } from "./model_config.ts";
 * const f = new ConfigFields({
 *   vocab_size: 256, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
 *   rms_norm_eps: 1e-5,
 * }, "config.json");
 * const d = decoderFields(f, { ropeTheta: 1e4 });
 * console.log(d.headDim, d.kvHeads, d.rmsEps); // 16 4 0.00001
 * ```
 * @module
 */
import { ConfigError } from "../base/errors.ts";

/** A parsed JSON object (a config.json). */
export type Json = Record<string, unknown>;

/**
 * The activation of a feed-forward block: `swiglu` (`down(silu(gate x) * up x)`, the Llama-style
 * MLPs) or `relu` (`wo relu(wi x)`, T5 / Switch: one input matrix, held where `gate` is).
 */
export type FfnActivation = "swiglu" | "relu";

/** A dense feed-forward block. */
export interface DenseFfn {
  readonly kind: "dense";
  /** Intermediate size. */
  readonly inter: number;
  /** Its activation; absent: `swiglu`. */
  readonly act?: FfnActivation;
}

/** A sparse MoE feed-forward block. */
export interface MoeFfn {
  readonly kind: "moe";
  /** Number of routed experts. */
  readonly experts: number;
  /** Experts chosen per token. */
  readonly topK: number;
  /** Intermediate size of one expert. */
  readonly inter: number;
  /** Renormalise the chosen experts' softmax weights to sum to 1. */
  readonly renormalize: boolean;
  /** Shared expert (Qwen2-MoE): intermediate size, gated by sigmoid(w . x); 0 when absent. */
  readonly sharedInter: number;
  /** The experts' activation; absent: `swiglu`. */
  readonly act?: FfnActivation;
}

/**
 * One stack of an encoder-decoder model: its layers are `layers[first, first + count)` of the
 * {@linkcode ModelConfig} (the encoder's first, then the decoder's).
 */
export interface LayerStack {
  readonly name: "encoder" | "decoder";
  readonly first: number;
  readonly count: number;
}

/** One decoder layer. */
export interface LayerConfig {
  /** Its feed-forward block. */
  readonly ffn: DenseFfn | MoeFfn;
}

/** A parsed, validated, frozen model configuration. */
export interface ModelConfig {
  /** Architecture: its HF `model_type`, a name registered in `arch/mod.ts`. */
  readonly arch: string;
  /** Vocabulary size (rows of the embedding and of the LM head). */
  readonly vocabSize: number;
  /** Model width. */
  readonly hidden: number;
  /** Decoder layers, in order. */
  readonly layers: readonly LayerConfig[];
  /** Attention heads. */
  readonly heads: number;
  /** Key/value heads (grouped-query attention). */
  readonly kvHeads: number;
  /** Width of one head. */
  readonly headDim: number;
  /** Dimensions of a head that RoPE rotates (neox style). */
  readonly rotaryDim: number;
  /** RoPE base. */
  readonly ropeTheta: number;
  /** RMSNorm epsilon. */
  readonly rmsEps: number;
  /** Bias on the q, k, v projections (Qwen2-MoE). */
  readonly qkvBias: boolean;
  /** Query/key normalisation: none, per head over head_dim (Qwen3), or over the whole projection (OLMoE). */
  readonly qkNorm: "none" | "head" | "full";
  /** OLMoE's clamp of q, k, v to [-clip, clip] after the q/k norms; 0 when absent. */
  readonly clipQkv: number;
  /** The LM head shares the embedding matrix. */
  readonly tieEmbeddings: boolean;
  /** Maximum context length. */
  readonly maxPositions: number;
  /**
   * An encoder-decoder's stacks (`layers` holds the encoder's layers, then the decoder's); absent
   * for a decoder-only model (one stack of all its layers). Pre-gating chains MoE layers within a
   * stack.
   */
  readonly stacks?: readonly LayerStack[];
  /** The raw config.json object, for reference. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** A value as an error message shows it. */
function shown(v: unknown): string {
  if (v === undefined) return "nothing (the key is missing)";
  if (typeof v === "number") return String(v); // Infinity, NaN as such
  return JSON.stringify(v) ?? String(v);
}

/**
 * Checked reads of one config.json object: each getter validates its field and throws a
 * {@linkcode ConfigError} that names the file and the field, what was expected and what was found.
 * A key that is absent or `null` takes the getter's `fallback`; without one it is required.
 *
 * @example
 * ```ts
 * import { ConfigFields } from "./model_config.ts";
 * const f = new ConfigFields({ hidden_size: 64, rms_norm_eps: -1 }, "m/config.json");
 * console.log(f.int("hidden_size")); // 64
 * try {
 *   f.positive("rms_norm_eps");
 * } catch (e) {
 *   console.log((e as Error).message); // m/config.json: 'rms_norm_eps' must be a finite number > 0, found -1
 * }
 * ```
 */
export class ConfigFields {
  /** Reads `raw`, naming `where` (the file) in errors. */
  constructor(readonly raw: Json, readonly where: string) {}

  /** Whether `key` is present and not `null`. */
  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  /** The error for field `key`: it must be `expected`, and `found` was found. */
  error(key: string, expected: string, found: unknown, hint?: string): ConfigError {
    return new ConfigError(
      `${this.where}: '${key}' must be ${expected}, found ${shown(found)}`,
      hint,
    );
  }

  #value(key: string, fallback: unknown): unknown {
    return this.has(key) ? this.raw[key] : fallback;
  }

  /** A finite number (`fallback` when absent). */
  number(key: string, fallback?: number): number {
    const v = this.#value(key, fallback);
    if (typeof v !== "number" || !Number.isFinite(v)) throw this.error(key, "a finite number", v);
    return v;
  }

  /** A finite number > 0 (`rms_norm_eps`, `rope_theta`, ...). */
  positive(key: string, fallback?: number): number {
    const v = this.#value(key, fallback);
    if (typeof v !== "number" || !Number.isFinite(v) || !(v > 0)) {
      throw this.error(key, "a finite number > 0", v);
    }
    return v;
  }

  /** A safe integer >= `min` (default 1: sizes and counts). */
  int(key: string, fallback?: number, min = 1): number {
    const v = this.#value(key, fallback);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
      throw this.error(key, `an integer >= ${min}`, v);
    }
    return v;
  }

  /** `true` or `false`. */
  bool(key: string, fallback: boolean): boolean {
    const v = this.#value(key, fallback);
    if (typeof v !== "boolean") throw this.error(key, "true or false", v);
    return v;
  }

  /** A list of layer indices, each in [0, `layers`). */
  layerList(key: string, layers: number): number[] {
    const v = this.#value(key, []);
    const ok = Array.isArray(v) &&
      v.every((i) => Number.isSafeInteger(i) && i >= 0 && i < layers);
    if (!ok) {
      throw this.error(key, `a list of layer indices in [0, ${layers})`, v);
    }
    return v as number[];
  }

  /** The value of `key` (absent: `fallback`) must be one of `allowed`. */
  oneOf<T>(key: string, allowed: readonly T[], fallback: T, hint?: string): T {
    const v = this.#value(key, fallback);
    if (!allowed.includes(v as T)) {
      throw this.error(key, allowed.map((a) => JSON.stringify(a)).join(" or "), v, hint);
    }
    return v as T;
  }
}

/** The attention and embedding fields of a Llama-style decoder (what {@linkcode decoderFields} reads). */
export type DecoderFields =
  & Pick<
    ModelConfig,
    | "vocabSize"
    | "hidden"
    | "heads"
    | "kvHeads"
    | "headDim"
    | "rotaryDim"
    | "ropeTheta"
    | "rmsEps"
    | "tieEmbeddings"
    | "maxPositions"
  >
  & {
    /** `num_hidden_layers`. */
    readonly numLayers: number;
  };

/**
 * The RoPE fields: the config.json object holding them (HF 5's `rope_parameters`, where present,
 * else the top level) with its scaling type checked (default RoPE only), the base `rope_theta` and
 * `partial_rotary_factor` (either may sit at the top level too).
 */
function ropeFields(f: ConfigFields, fallback: number): { theta: number; partial: number } {
  const nested = f.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const params = f.raw[nested];
  let p: ConfigFields | null = null;
  if (params !== undefined && params !== null) {
    if (typeof params !== "object" || Array.isArray(params)) {
      throw f.error(nested, "an object or null", params);
    }
    p = new ConfigFields(params as Json, `${f.where}: '${nested}'`);
    const type = p.has("rope_type") ? "rope_type" : "type";
    p.oneOf(type, ["default"], "default", "supported: default RoPE (no scaling)");
    if (nested !== "rope_parameters") p = null; // rope_scaling holds no base
  }
  const from = (key: string) => (p?.has(key) ? p : f);
  const partial = from("partial_rotary_factor").number("partial_rotary_factor", 1);
  if (!(partial > 0 && partial <= 1)) {
    throw from("partial_rotary_factor").error("partial_rotary_factor", "in (0, 1]", partial);
  }
  return { theta: from("rope_theta").positive("rope_theta", fallback), partial };
}

/**
 * Reads and checks the fields every Llama-style decoder shares: vocabulary, width, layer count,
 * heads and KV heads (dividing), head width (`head_dim`, else hidden / heads),
 * RoPE (`rope_theta` > 0, default scaling only, `partial_rotary_factor` in (0, 1] giving an even
 * rotated width; both at the top level or in `rope_parameters`), `rms_norm_eps` > 0, `tie_word_embeddings`, `max_position_embeddings`,
 * `hidden_act` (silu), and full attention only (`use_sliding_window` false, `layer_types` all
 * `full_attention`).
 *
 * @example
 * ```ts
 * import { ConfigFields, decoderFields } from "./model_config.ts";
 * const f = new ConfigFields({
 *   vocab_size: 8, hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 4,
 *   partial_rotary_factor: 0.5,
 * }, "config.json");
 * console.log(decoderFields(f, { ropeTheta: 1e6 }).rotaryDim); // 8
 * ```
 */
export function decoderFields(f: ConfigFields, defaults: { ropeTheta: number }): DecoderFields {
  f.oneOf("hidden_act", ["silu"], "silu", "Pregate runs SwiGLU (silu) feed-forward blocks");
  const hidden = f.int("hidden_size");
  const heads = f.int("num_attention_heads");
  const kvHeads = f.int("num_key_value_heads", heads);
  if (heads % kvHeads !== 0) {
    throw f.error("num_key_value_heads", `a divisor of num_attention_heads (${heads})`, kvHeads);
  }
  if (!f.has("head_dim") && hidden % heads !== 0) {
    throw f.error(
      "num_attention_heads",
      `a divisor of hidden_size (${hidden}) when head_dim is not given`,
      heads,
    );
  }
  const headDim = f.has("head_dim") ? f.int("head_dim") : hidden / heads;
  const rope = ropeFields(f, defaults.ropeTheta);
  const partial = rope.partial;
  const rotaryDim = Math.floor(headDim * partial);
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) {
    const [key, found] = partial !== 1
      ? ["partial_rotary_factor", partial]
      : f.has("head_dim")
      ? ["head_dim", headDim]
      : ["num_attention_heads", heads];
    throw f.error(
      key,
      `a value giving an even rotated width >= 2 per head (head width ${headDim} x ` +
        `partial_rotary_factor ${partial} = ${rotaryDim})`,
      found,
      "RoPE rotates pairs of dimensions",
    );
  }
  const numLayers = f.int("num_hidden_layers");
  if (f.bool("use_sliding_window", false)) {
    throw f.error("use_sliding_window", "false: sliding-window attention is not supported", true);
  }
  if (f.has("layer_types")) {
    const types = f.raw.layer_types;
    if (
      !Array.isArray(types) || types.length !== numLayers ||
      types.some((t) => t !== "full_attention")
    ) {
      throw f.error(
        "layer_types",
        `a list of ${numLayers} "full_attention" entries`,
        types,
        "sliding-window and linear attention layers are not supported",
      );
    }
  }
  return {
    vocabSize: f.int("vocab_size"),
    hidden,
    numLayers,
    heads,
    kvHeads,
    headDim,
    rotaryDim,
    ropeTheta: rope.theta,
    rmsEps: f.positive("rms_norm_eps", 1e-6),
    tieEmbeddings: f.bool("tie_word_embeddings", false),
    maxPositions: f.int("max_position_embeddings", 4096),
  };
}

/**
 * A routed MoE block's config from its fields, checking `topK <= experts`.
 *
 * @example
 * ```ts
 * import { ConfigFields, moeFfn } from "./model_config.ts";
 * const f = new ConfigFields({ num_experts_per_tok: 9 }, "config.json");
 * try {
 *   moeFfn(f, { experts: 8, inter: 32, renormalize: true });
 * } catch (e) {
 *   console.log((e as Error).message.includes("num_experts_per_tok")); // true
 * }
 * ```
 */
export function moeFfn(
  f: ConfigFields,
  m: { experts: number; inter: number; renormalize: boolean; sharedInter?: number },
): MoeFfn {
  const topK = f.int("num_experts_per_tok");
  if (topK > m.experts) {
    throw f.error("num_experts_per_tok", `at most the number of experts (${m.experts})`, topK);
  }
  return { kind: "moe", topK, sharedInter: 0, ...m };
}

/**
 * The layer pattern of the Qwen MoE families: layer `i` is `moe` when `(i + 1)` is a multiple of
 * `decoder_sparse_step` (default 1) and `i` is not in `mlp_only_layers`, else `dense`.
 *
 * @example
 * ```ts
 * import { ConfigFields, sparseStepLayers } from "./model_config.ts";
 * const f = new ConfigFields({ decoder_sparse_step: 2, mlp_only_layers: [3] }, "config.json");
 * const moe = { kind: "moe", experts: 8, topK: 2, inter: 32, renormalize: true, sharedInter: 0 } as const;
 * const layers = sparseStepLayers(f, 4, moe, { kind: "dense", inter: 64 });
 * console.log(layers.map((l) => l.ffn.kind)); // ["dense", "moe", "dense", "dense"]
 * ```
 */
export function sparseStepLayers(
  f: ConfigFields,
  numLayers: number,
  moe: MoeFfn,
  dense: DenseFfn,
): LayerConfig[] {
  const step = f.int("decoder_sparse_step", 1);
  const mlpOnly = f.layerList("mlp_only_layers", numLayers);
  return Array.from({ length: numLayers }, (_, i) => ({
    ffn: !mlpOnly.includes(i) && (i + 1) % step === 0 ? moe : dense,
  }));
}

/**
 * Freezes a finished configuration (its layers and their blocks too), keeping a copy of the raw
 * config.json object.
 *
 * @example
 * ```ts
 * import { ConfigFields, decoderFields, freezeConfig } from "./model_config.ts";
 * const f = new ConfigFields({
 *   vocab_size: 8, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2,
 * }, "config.json");
 * const { numLayers: _, ...d } = decoderFields(f, { ropeTheta: 1e4 });
 * const cfg = freezeConfig(f, {
 *   ...d, arch: "example", layers: [{ ffn: { kind: "dense", inter: 16 } }],
 *   qkvBias: false, qkNorm: "none", clipQkv: 0,
 * });
 * console.log(Object.isFrozen(cfg.layers[0].ffn)); // true
 * ```
 */
export function freezeConfig(f: ConfigFields, cfg: Omit<ModelConfig, "raw">): ModelConfig {
  return Object.freeze({
    ...cfg,
    layers: Object.freeze(
      cfg.layers.map((l) => Object.freeze({ ffn: Object.freeze({ ...l.ffn }) })),
    ),
    raw: Object.freeze({ ...f.raw }),
  });
}
