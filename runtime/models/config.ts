/**
 * Model configuration: a Hugging Face `config.json` becomes one frozen {@linkcode ModelConfig},
 * parsed and validated once. Everything later (weights, plans, state sizes) is derived from it.
 *
 * Supported `model_type`s: `mixtral`, `qwen2_moe`, `qwen3_moe`, `olmoe`.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * const cfg = parseConfig({
 *   model_type: "mixtral", vocab_size: 256, hidden_size: 64, intermediate_size: 128,
 *   num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
 *   num_local_experts: 8, num_experts_per_tok: 2, rms_norm_eps: 1e-5, rope_theta: 1e6,
 * }, "config.json");
 * console.log(cfg.arch, cfg.layers[0].ffn.kind); // mixtral moe
 * ```
 * @module
 */
import { ConfigError } from "../errors.ts";

/** Architectures Pregate runs. */
export const ARCHITECTURES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"] as const;
/** One of {@linkcode ARCHITECTURES}. */
export type Arch = typeof ARCHITECTURES[number];

/** A dense (SwiGLU) feed-forward block. */
export interface DenseFfn {
  readonly kind: "dense";
  /** Intermediate size. */
  readonly inter: number;
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
}

/** One decoder layer. */
export interface LayerConfig {
  /** Its feed-forward block. */
  readonly ffn: DenseFfn | MoeFfn;
}

/** A parsed, validated, frozen model configuration. */
export interface ModelConfig {
  /** Architecture (HF `model_type`). */
  readonly arch: Arch;
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
  /** OLMoE's optional clamp of q, k, v to [-clip, clip]; 0 when absent. */
  readonly clipQkv: number;
  /** The LM head shares the embedding matrix. */
  readonly tieEmbeddings: boolean;
  /** Maximum context length. */
  readonly maxPositions: number;
  /** The raw config.json object, for reference. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** A parsed JSON object (a config.json). */
export type Json = Record<string, unknown>;

function num(raw: Json, key: string, where: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new ConfigError(
      `${where}: '${key}' must be a number, found ${
        v === undefined ? "nothing" : JSON.stringify(v)
      }`,
    );
  }
  return v;
}

function int(raw: Json, key: string, where: string, fallback?: number, min = 1): number {
  const v = num(raw, key, where, fallback);
  if (!Number.isInteger(v) || v < min) {
    throw new ConfigError(`${where}: '${key}' must be an integer >= ${min}, found ${v}`);
  }
  return v;
}

function bool(raw: Json, key: string, fallback: boolean): boolean {
  const v = raw[key];
  return typeof v === "boolean" ? v : fallback;
}

/** The RoPE base from a top-level `rope_theta` or HF 5's `rope_parameters` / older `rope_scaling`. */
function ropeTheta(raw: Json, where: string, fallback: number): number {
  const params = raw.rope_parameters as Json | undefined;
  const scaling = (params ?? raw.rope_scaling) as Json | undefined | null;
  const type = scaling?.rope_type ?? scaling?.type;
  if (type !== undefined && type !== null && type !== "default") {
    throw new ConfigError(
      `${where}: RoPE scaling type '${String(type)}' is not supported`,
      "supported: default RoPE (no scaling)",
    );
  }
  const v = params?.rope_theta ?? raw.rope_theta ?? fallback;
  if (typeof v !== "number" || !(v > 0)) {
    throw new ConfigError(`${where}: rope_theta must be a positive number, found ${v}`);
  }
  return v;
}

/**
 * Parses a config.json object into a frozen {@linkcode ModelConfig}.
 * @param where names the file in error messages.
 * @throws {ConfigError} for unsupported architectures or invalid values.
 */
export function parseConfig(raw: Json, where = "config.json"): ModelConfig {
  const type = raw.model_type;
  if (!ARCHITECTURES.includes(type as Arch)) {
    throw new ConfigError(
      `${where}: unsupported model_type ${JSON.stringify(type)}`,
      `supported architectures: ${ARCHITECTURES.join(", ")}`,
    );
  }
  const arch = type as Arch;
  const act = raw.hidden_act ?? "silu";
  if (act !== "silu") {
    throw new ConfigError(`${where}: hidden_act '${act}' is not supported for ${arch} (only silu)`);
  }
  const hidden = int(raw, "hidden_size", where);
  const heads = int(raw, "num_attention_heads", where);
  const kvHeads = int(raw, "num_key_value_heads", where, heads);
  if (heads % kvHeads) {
    throw new ConfigError(
      `${where}: num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads})`,
    );
  }
  const headDim = raw.head_dim === null || raw.head_dim === undefined
    ? hidden / heads
    : int(raw, "head_dim", where);
  if (!Number.isInteger(headDim)) {
    throw new ConfigError(`${where}: hidden_size ${hidden} is not divisible by ${heads} heads`);
  }
  const partial = num(raw, "partial_rotary_factor", where, 1);
  const rotaryDim = Math.floor(headDim * partial);
  const nLayers = int(raw, "num_hidden_layers", where);
  const layers: LayerConfig[] = [];

  if (arch === "mixtral" || arch === "olmoe") {
    const experts = int(raw, arch === "mixtral" ? "num_local_experts" : "num_experts", where);
    const topK = int(raw, "num_experts_per_tok", where);
    const inter = int(raw, "intermediate_size", where);
    const renormalize = arch === "mixtral" ? true : bool(raw, "norm_topk_prob", false);
    for (let i = 0; i < nLayers; i++) {
      layers.push({ ffn: { kind: "moe", experts, topK, inter, renormalize, sharedInter: 0 } });
    }
  } else {
    // HF 5 writes qwen3_moe's expert count as num_local_experts; hub configs use num_experts.
    const experts = int(
      raw,
      raw.num_experts !== null && raw.num_experts !== undefined
        ? "num_experts"
        : "num_local_experts",
      where,
    );
    const topK = int(raw, "num_experts_per_tok", where);
    const inter = int(raw, "moe_intermediate_size", where);
    const denseInter = int(raw, "intermediate_size", where);
    const step = int(raw, "decoder_sparse_step", where, 1);
    const mlpOnly = (raw.mlp_only_layers ?? []) as unknown;
    if (!Array.isArray(mlpOnly) || mlpOnly.some((x) => !Number.isInteger(x))) {
      throw new ConfigError(`${where}: mlp_only_layers must be a list of layer indices`);
    }
    const renormalize = bool(raw, "norm_topk_prob", arch === "qwen3_moe");
    const sharedInter = arch === "qwen2_moe"
      ? int(raw, "shared_expert_intermediate_size", where, 0, 0)
      : 0;
    for (let i = 0; i < nLayers; i++) {
      const sparse = !mlpOnly.includes(i) && experts > 0 && (i + 1) % step === 0;
      layers.push({
        ffn: sparse
          ? { kind: "moe", experts, topK, inter, renormalize, sharedInter }
          : { kind: "dense", inter: denseInter },
      });
    }
  }
  for (const l of layers) {
    if (l.ffn.kind === "moe" && l.ffn.topK > l.ffn.experts) {
      throw new ConfigError(
        `${where}: num_experts_per_tok (${l.ffn.topK}) exceeds the number of experts (${l.ffn.experts})`,
      );
    }
  }
  if (raw.use_sliding_window === true) {
    throw new ConfigError(
      `${where}: sliding-window attention (use_sliding_window) is not supported`,
    );
  }
  if (arch === "mixtral" && typeof raw.sliding_window === "number") {
    const maxPos = int(raw, "max_position_embeddings", where, 4096);
    if (raw.sliding_window < maxPos) {
      throw new ConfigError(
        `${where}: sliding_window ${raw.sliding_window} < max_position_embeddings ${maxPos} is not supported`,
        "set sliding_window to null (full attention), as Mixtral-8x7B's own config does",
      );
    }
  }
  const qkvBias = arch === "qwen2_moe"
    ? bool(raw, "qkv_bias", true)
    : bool(raw, "attention_bias", false);
  if (arch !== "qwen2_moe" && bool(raw, "attention_bias", false)) {
    throw new ConfigError(`${where}: attention_bias=true is not supported for ${arch}`);
  }
  const clip = raw.clip_qkv;
  if (clip !== null && clip !== undefined && (typeof clip !== "number" || !(clip > 0))) {
    throw new ConfigError(`${where}: clip_qkv must be a positive number or null, found ${clip}`);
  }
  const cfg: ModelConfig = {
    arch,
    vocabSize: int(raw, "vocab_size", where),
    hidden,
    layers: Object.freeze(layers.map((l) => Object.freeze({ ffn: Object.freeze({ ...l.ffn }) }))),
    heads,
    kvHeads,
    headDim,
    rotaryDim,
    ropeTheta: ropeTheta(raw, where, arch === "mixtral" ? 1e6 : 10000),
    rmsEps: num(raw, "rms_norm_eps", where, 1e-6),
    qkvBias,
    qkNorm: arch === "qwen3_moe" ? "head" : arch === "olmoe" ? "full" : "none",
    clipQkv: typeof clip === "number" ? clip : 0,
    tieEmbeddings: bool(raw, "tie_word_embeddings", false),
    maxPositions: int(raw, "max_position_embeddings", where, 4096),
    raw: Object.freeze({ ...raw }),
  };
  return Object.freeze(cfg);
}

/** Reads and parses `<dir>/config.json`. */
export async function loadConfig(dir: string): Promise<ModelConfig> {
  const path = `${dir}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(
      `${path}: cannot read the model config: ${(e as Error).message}`,
      "--model must be a directory holding config.json and *.safetensors (a Hugging Face checkpoint)",
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(`${path}: expected a JSON object`);
  }
  return parseConfig(raw as Json, path);
}
