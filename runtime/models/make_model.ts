/**
 * Random-weight checkpoints in Hugging Face hub format, for tests and benchmarks: a `config.json`
 * exactly as transformers 5.17's `save_pretrained` writes it for the model type (or, for presets
 * that ask for it, in the older 4.x form with a top-level `rope_theta` and `torch_dtype`), a
 * `generation_config.json`, and safetensors weights (one `model.safetensors`, or shards and an index
 * when larger than `maxShardBytes`) holding exactly the tensors Hugging Face would save (names from
 * `names.ts`, see {@linkcode expectedTensors}).
 *
 * Weights are random normal with scales chosen so a forward pass gives O(1) logits and routing that
 * spreads over the experts in every layer: matrices std `1/sqrt(fan_in)`; routers std
 * `2/sqrt(hidden)`; untied embeddings N(0, 1), tied ones std `1/sqrt(hidden)` (they are the LM
 * head too); the o and down projections, which write into the residual stream, additionally scaled
 * by the embedding's std and `1/sqrt(2 layers)` (see `initOf`); norm weights `1 + 0.1 N(0, 1)`;
 * biases `0.1 N(0, 1)`. They are deterministic from the seed: every tensor has its own
 * counter-based random stream keyed by the seed and its name, so a tensor's values do not depend on
 * the other tensors (a preset shrunk with `overrides.layers` holds exactly the full model's first
 * layers) and the three dtypes hold the same samples, rounded.
 * Each random 32-bit word picks two samples from a 65536-entry table of normal quantiles already
 * encoded in the output dtype, and the next chunk is generated while the previous one is being
 * written, so multi-GB checkpoints are written at disk speed.
 *
 * @example
 * ```ts ignore
 * import { makeModel } from "./make_model.ts";
 * const made = await makeModel({ arch: "qwen3_moe", out: "/tmp/tiny-qwen3", force: true });
 * console.log(made.config.layers.map((l) => l.ffn.kind)); // ["moe", "dense", "moe"]
 * const big = await makeModel({
 *   preset: "mixtral-8x7b", out: "/tmp/mixtral-2l", dtype: "bf16", force: true,
 *   overrides: { layers: 2 }, onProgress: (done, total) => console.log(done / total),
 * });
 * console.log(big.files.length, big.tensorBytes); // 4 shards, 6.3 GB
 * ```
 * @module
 */
import { ArgumentError, ConfigError } from "../errors.ts";
import {
  type DType,
  DTYPE_BYTES,
  DTYPES,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../weights/dtype.ts";
import { INDEX_FILE_NAME } from "../weights/safetensors.ts";
import { type TensorToWrite, writeShardedCheckpoint } from "../weights/safetensors_writer.ts";
import { type Arch, ARCHITECTURES, type ModelConfig, parseConfig } from "./config.ts";
import { type ExpectedTensor, expectedTensors, type TensorRole } from "./inspect.ts";

// ---------------------------------------------------------------------------------------------
// dimensions and presets
// ---------------------------------------------------------------------------------------------

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
 * A named model shape.
 *
 * @example
 * ```ts
 * import { PRESETS } from "./make_model.ts";
 * const p = PRESETS["qwen3-30b-a3b"];
 * console.log(p.arch, p.dims.experts, p.dims.topK); // qwen3_moe 128 8
 * ```
 */
export interface Preset {
  /** The preset's name (`tiny` exists for every architecture; see {@linkcode presetKey}). */
  readonly name: string;
  /** Its architecture. */
  readonly arch: Arch;
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

const TINY_TOKENS = { bos: null, eos: null, pad: 0 } as const;

function dims(
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

/**
 * The presets by key: the real models' shapes (`mixtral-8x7b`, `qwen3-30b-a3b`, `olmoe-1b-7b`,
 * `qwen1.5-moe-a2.7b`) and, under `tiny/<arch>`, a tiny model of each architecture (hidden 64, 8
 * experts, vocabulary 256; the tiny Mixtral and Qwen3-MoE write the older `hf4` config form so both
 * config code paths are exercised). Shrink the real ones with `overrides: {layers: n}`.
 *
 * @example
 * ```ts
 * import { PRESETS } from "./make_model.ts";
 * console.log(Object.keys(PRESETS));
 * console.log(PRESETS["tiny/qwen2_moe"].dims.sharedInter); // 128
 * ```
 */
// deno-fmt-ignore
export const PRESETS: Readonly<Record<string, Preset>> = Object.freeze({
  "tiny/mixtral": {
    name: "tiny",
    arch: "mixtral",
    description: "tiny Mixtral: 2 layers, 8 experts top-2, hf4-style config",
    dims: dims({
      hidden: 64, layers: 2, heads: 4, kvHeads: 2, inter: 96, experts: 8, topK: 2, vocab: 256,
      normTopK: true, tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-5, maxPositions: 256,
    }),
    style: "hf4",
    tokens: TINY_TOKENS,
  },
  "tiny/qwen3_moe": {
    name: "tiny",
    arch: "qwen3_moe",
    description:
      "tiny Qwen3-MoE: 3 layers (layer 1 dense), head_dim 32, tied, 8 experts top-2, hf4-style config",
    dims: dims({
      hidden: 64, layers: 3, heads: 4, kvHeads: 2, headDim: 32, inter: 96, denseInter: 128,
      experts: 8, topK: 2, vocab: 256, mlpOnlyLayers: [1], normTopK: true, tieEmbeddings: true,
      ropeTheta: 1e6, rmsEps: 1e-6, maxPositions: 256,
    }),
    style: "hf4",
    tokens: TINY_TOKENS,
  },
  "tiny/olmoe": {
    name: "tiny",
    arch: "olmoe",
    description: "tiny OLMoE: 2 layers, 8 experts top-3, full-projection q/k norms",
    dims: dims({
      hidden: 64, layers: 2, heads: 4, kvHeads: 2, inter: 80, experts: 8, topK: 3, vocab: 256,
      normTopK: false, tieEmbeddings: false, ropeTheta: 5e5, rmsEps: 1e-5, maxPositions: 256,
    }),
    style: "hf5",
    tokens: TINY_TOKENS,
  },
  "tiny/qwen2_moe": {
    name: "tiny",
    arch: "qwen2_moe",
    description:
      "tiny Qwen2-MoE: 4 layers (sparse step 2: 0 and 2 dense), shared expert, qkv bias, 8 experts top-2",
    dims: dims({
      hidden: 64, layers: 4, heads: 4, kvHeads: 2, inter: 80, denseInter: 96, sharedInter: 128,
      experts: 8, topK: 2, vocab: 256, sparseStep: 2, normTopK: false, tieEmbeddings: false,
      ropeTheta: 5e4, rmsEps: 1e-6, maxPositions: 256,
    }),
    style: "hf5",
    tokens: TINY_TOKENS,
  },
  "mixtral-8x7b": {
    name: "mixtral-8x7b",
    arch: "mixtral",
    description: "Mixtral-8x7B: 32 layers, hidden 4096, 8 experts of 14336 top-2 (46.7B params)",
    dims: dims({
      hidden: 4096, layers: 32, heads: 32, kvHeads: 8, inter: 14336, experts: 8, topK: 2,
      vocab: 32000, normTopK: true, tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-5,
      maxPositions: 32768,
    }),
    style: "hf5",
    tokens: { bos: 1, eos: 2, pad: null },
    extra: { router_aux_loss_coef: 0.02 },
  },
  "qwen3-30b-a3b": {
    name: "qwen3-30b-a3b",
    arch: "qwen3_moe",
    description: "Qwen3-30B-A3B: 48 layers, hidden 2048, 128 experts of 768 top-8 (30.5B params)",
    dims: dims({
      hidden: 2048, layers: 48, heads: 32, kvHeads: 4, headDim: 128, inter: 768, denseInter: 6144,
      experts: 128, topK: 8, vocab: 151936, normTopK: true, tieEmbeddings: false, ropeTheta: 1e6,
      rmsEps: 1e-6, maxPositions: 40960,
    }),
    style: "hf5",
    tokens: { bos: 151643, eos: 151645, pad: null },
  },
  "olmoe-1b-7b": {
    name: "olmoe-1b-7b",
    arch: "olmoe",
    description: "OLMoE-1B-7B: 16 layers, hidden 2048, 64 experts of 1024 top-8 (6.9B params)",
    dims: dims({
      hidden: 2048, layers: 16, heads: 16, kvHeads: 16, inter: 1024, experts: 64, topK: 8,
      vocab: 50304, normTopK: false, tieEmbeddings: false, ropeTheta: 10000, rmsEps: 1e-5,
      maxPositions: 4096,
    }),
    style: "hf5",
    tokens: { bos: null, eos: 50279, pad: 1 },
  },
  "qwen1.5-moe-a2.7b": {
    name: "qwen1.5-moe-a2.7b",
    arch: "qwen2_moe",
    description:
      "Qwen1.5-MoE-A2.7B: 24 layers, hidden 2048, 60 experts of 1408 top-4 + shared 5632 (14.3B params)",
    dims: dims({
      hidden: 2048, layers: 24, heads: 16, kvHeads: 16, inter: 1408, denseInter: 5632,
      sharedInter: 5632, experts: 60, topK: 4, vocab: 151936, normTopK: false,
      tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-6, maxPositions: 8192,
    }),
    style: "hf5",
    tokens: { bos: 151643, eos: 151643, pad: null },
    extra: { max_window_layers: 21 },
  },
} satisfies Record<string, Preset>);

/**
 * The {@linkcode PRESETS} key of a preset name for an architecture (`tiny` -> `tiny/<arch>`).
 *
 * @example
 * ```ts
 * import { presetKey } from "./make_model.ts";
 * console.log(presetKey("olmoe", "tiny"), presetKey("olmoe", "olmoe-1b-7b")); // tiny/olmoe olmoe-1b-7b
 * ```
 */
export function presetKey(arch: Arch, name: string): string {
  return name === "tiny" ? `tiny/${arch}` : name;
}

/**
 * The preset names usable with an architecture (or with any, when `arch` is omitted).
 *
 * @example
 * ```ts
 * import { presetNames } from "./make_model.ts";
 * console.log(presetNames("mixtral")); // ["tiny", "mixtral-8x7b"]
 * ```
 */
export function presetNames(arch?: Arch): string[] {
  const out: string[] = [];
  for (const p of Object.values(PRESETS)) {
    if ((arch === undefined || p.arch === arch) && !out.includes(p.name)) out.push(p.name);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------

/** A number Python's json module writes as a float (`10000.0`, `1e-05`). */
class PyFloat {
  constructor(readonly value: number) {}
}

/** Python's `repr(float)`: the shortest round-trip digits, `.0` for integers, `e-05` exponents. */
function pyFloat(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity";
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return `${x}.0`;
  const [mant, expText] = x.toExponential().split("e");
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    return `${mant}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  return String(x);
}

/** `json.dumps(obj, indent=2, sort_keys=True)` as transformers writes configs. */
function pyJson(value: unknown, indent = ""): string {
  if (value instanceof PyFloat) return pyFloat(value.value);
  if (value === null || value === undefined) return "null";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  const inner = indent + "  ";
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => inner + pyJson(v, inner)).join(",\n")}\n${indent}]`;
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  if (keys.length === 0) return "{}";
  return `{\n${
    keys.map((k) => `${inner}${JSON.stringify(k)}: ${pyJson(obj[k], inner)}`).join(",\n")
  }\n${indent}}`;
}

/** Replaces PyFloat markers by plain numbers (the object `parseConfig` and callers see). */
function plain(value: unknown): unknown {
  if (value instanceof PyFloat) return value.value;
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

const TORCH_DTYPE: Readonly<Record<DType, string>> = {
  f32: "float32",
  f16: "float16",
  bf16: "bfloat16",
};

const HF5_VERSION = "5.17.0";
const HF4_VERSION = "4.51.3";

const CLASS_NAMES: Readonly<Record<Arch, string>> = {
  mixtral: "MixtralForCausalLM",
  qwen2_moe: "Qwen2MoeForCausalLM",
  qwen3_moe: "Qwen3MoeForCausalLM",
  olmoe: "OlmoeForCausalLM",
};

/** The config.json object (with PyFloat markers) transformers 5.17 writes for these dimensions. */
function hfConfig(arch: Arch, d: ModelDims, dtype: DType, preset: Preset, style: ConfigStyle) {
  const f = (x: number) => new PyFloat(x);
  const c: Record<string, unknown> = {
    architectures: [CLASS_NAMES[arch]],
    attention_dropout: f(0),
    bos_token_id: preset.tokens.bos,
    dtype: TORCH_DTYPE[dtype],
    eos_token_id: preset.tokens.eos,
    hidden_act: "silu",
    hidden_size: d.hidden,
    initializer_range: f(0.02),
    max_position_embeddings: d.maxPositions,
    model_type: arch,
    num_attention_heads: d.heads,
    num_experts_per_tok: d.topK,
    num_hidden_layers: d.layers,
    num_key_value_heads: d.kvHeads,
    output_router_logits: false,
    pad_token_id: preset.tokens.pad,
    rms_norm_eps: f(d.rmsEps),
    rope_parameters: { rope_theta: f(d.ropeTheta), rope_type: "default" },
    router_aux_loss_coef: f(0.001),
    tie_word_embeddings: d.tieEmbeddings,
    transformers_version: HF5_VERSION,
    use_cache: true,
    vocab_size: d.vocab,
  };
  if (arch === "mixtral") {
    Object.assign(c, {
      head_dim: d.headDim ?? null,
      intermediate_size: d.inter,
      num_local_experts: d.experts,
      router_jitter_noise: f(0),
      sliding_window: null,
    });
  } else if (arch === "olmoe") {
    Object.assign(c, {
      attention_bias: false,
      clip_qkv: d.clipQkv === null ? null : f(d.clipQkv),
      intermediate_size: d.inter,
      norm_topk_prob: d.normTopK,
      num_experts: d.experts,
      router_aux_loss_coef: f(0.01),
    });
  } else if (arch === "qwen2_moe") {
    Object.assign(c, {
      decoder_sparse_step: d.sparseStep,
      intermediate_size: d.denseInter,
      layer_types: Array.from({ length: d.layers }, () => "full_attention"),
      max_window_layers: 28,
      mlp_only_layers: [...d.mlpOnlyLayers],
      moe_intermediate_size: d.inter,
      norm_topk_prob: d.normTopK,
      num_experts: d.experts,
      qkv_bias: true,
      shared_expert_intermediate_size: d.sharedInter,
      sliding_window: 0,
      use_sliding_window: false,
    });
  } else {
    Object.assign(c, {
      attention_bias: false,
      decoder_sparse_step: d.sparseStep,
      head_dim: d.headDim ?? d.hidden / d.heads,
      intermediate_size: d.denseInter,
      mlp_only_layers: [...d.mlpOnlyLayers],
      moe_intermediate_size: d.inter,
      norm_topk_prob: d.normTopK,
      num_local_experts: d.experts,
      sliding_window: null,
      use_sliding_window: false,
    });
  }
  for (const [k, v] of Object.entries(preset.extra ?? {})) {
    c[k] = typeof v === "number" && !Number.isInteger(v) ? f(v) : v;
  }
  if (style === "hf4") {
    c.torch_dtype = c.dtype;
    delete c.dtype;
    const rope = c.rope_parameters as { rope_theta: PyFloat };
    delete c.rope_parameters;
    c.rope_theta = rope.rope_theta;
    c.rope_scaling = null;
    delete c.layer_types;
    c.transformers_version = HF4_VERSION;
    if (arch === "qwen3_moe") {
      c.num_experts = c.num_local_experts;
      delete c.num_local_experts;
      c.max_window_layers = d.layers;
    }
    if (arch === "mixtral" && c.head_dim === null) delete c.head_dim;
  }
  return c;
}

function generationConfig(preset: Preset, style: ConfigStyle): Record<string, unknown> {
  const g: Record<string, unknown> = { _from_model_config: true };
  if (preset.tokens.bos !== null) g.bos_token_id = preset.tokens.bos;
  if (preset.tokens.eos !== null) g.eos_token_id = preset.tokens.eos;
  if (style === "hf5") {
    Object.assign(g, { do_sample: false, output_attentions: false, output_hidden_states: false });
  }
  if (preset.tokens.pad !== null) g.pad_token_id = preset.tokens.pad;
  g.transformers_version = style === "hf5" ? HF5_VERSION : HF4_VERSION;
  g.use_cache = true;
  return g;
}

// ---------------------------------------------------------------------------------------------
// options, validation and planning
// ---------------------------------------------------------------------------------------------

/**
 * Options of {@linkcode makeModel} (and {@linkcode planModel}, which ignores `out`, `force`,
 * `maxShardBytes` and `onProgress`).
 *
 * @example
 * ```ts
 * import { makeModel, type MakeModelOptions } from "./make_model.ts";
 * const opts: MakeModelOptions = {
 *   arch: "qwen2_moe", out: "/tmp/q2", dtype: "bf16", seed: 7, force: true,
 *   overrides: { layers: 2, experts: 4 },
 * };
 * await makeModel(opts);
 * ```
 */
export interface MakeModelOptions {
  /** The architecture; may be omitted when `preset` names a real model. */
  arch?: Arch | string;
  /** The output directory (created; must be absent or empty unless `force`). */
  out: string;
  /** A preset name (see {@linkcode presetNames}); default `tiny`. */
  preset?: string;
  /** Weight dtype (default `f32`). 16-bit dtypes need even row lengths. */
  dtype?: DType | string;
  /** Random seed, a non-negative safe integer (default 0). */
  seed?: number;
  /** Dimensions that replace the preset's, e.g. `{layers: 2}` to shrink a real model. */
  overrides?: Partial<ModelDims>;
  /** Config form; default the preset's (`hf5` for all but the tiny Mixtral and Qwen3-MoE). */
  configStyle?: ConfigStyle;
  /** Shard size limit in bytes of tensor data (default 2e9). */
  maxShardBytes?: number;
  /**
   * Overwrite a non-empty output directory: its config.json, generation_config.json, index and
   * `*.safetensors` files are removed first (other files are left alone).
   */
  force?: boolean;
  /** Called as tensor bytes are produced, and once at the end with `(total, total)`. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

/**
 * One tensor of a planned model.
 *
 * @example
 * ```ts
 * import { planModel } from "./make_model.ts";
 * const t = planModel({ arch: "mixtral", out: "" }).tensors[0];
 * console.log(t.name, t.shape, t.std); // model.embed_tokens.weight [256, 64] 1
 * ```
 */
export interface PlannedTensor extends ExpectedTensor {
  /** The stored dtype. */
  readonly dtype: DType;
  /** Bytes of data. */
  readonly bytes: number;
  /** The values' mean (1 for norm weights, else 0). */
  readonly mean: number;
  /** The values' standard deviation. */
  readonly std: number;
}

/**
 * A model to make: the resolved preset and dimensions, the config.json object and text, the parsed
 * configuration and the tensors.
 *
 * @example
 * ```ts
 * import { planModel } from "./make_model.ts";
 * const plan = planModel({ preset: "qwen3-30b-a3b", out: "", dtype: "bf16" });
 * console.log(plan.config.layers.length, (plan.totalBytes / 1e9).toFixed(1)); // 48 61.1
 * ```
 */
export interface ModelPlan {
  /** The architecture. */
  arch: Arch;
  /** The preset used (its name, e.g. `tiny`). */
  preset: string;
  /** The dimensions after overrides. */
  dims: ModelDims;
  /** The weight dtype. */
  dtype: DType;
  /** The seed. */
  seed: number;
  /** The config form written. */
  configStyle: ConfigStyle;
  /** config.json as an object. */
  configJson: Record<string, unknown>;
  /** config.json's text, exactly as written. */
  configText: string;
  /** generation_config.json's text. */
  generationConfigText: string;
  /** The configuration as Pregate parses it (validated by a round trip through `parseConfig`). */
  config: ModelConfig;
  /** The tensors, in file order. */
  tensors: PlannedTensor[];
  /** Total bytes of tensor data. */
  totalBytes: number;
}

/**
 * What {@linkcode makeModel} wrote.
 *
 * @example
 * ```ts
 * import { makeModel } from "./make_model.ts";
 * const m = await makeModel({ arch: "olmoe", out: "/tmp/olmoe-tiny", force: true });
 * console.log(m.files, m.index, m.tensors.length); // ["/tmp/olmoe-tiny/model.safetensors"] null 69
 * ```
 */
export interface MadeModel extends ModelPlan {
  /** The output directory. */
  dir: string;
  /** The safetensors files written. */
  files: string[];
  /** The index, or `null` for a single file. */
  index: string | null;
  /** Bytes of tensor data written (= `totalBytes`). */
  tensorBytes: number;
  /** Wall-clock seconds spent writing. */
  seconds: number;
}

function positiveInt(name: string, v: unknown, min = 1): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    throw new ArgumentError(
      `overrides.${name}`,
      `expected an integer >= ${min}, found ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function resolveArch(opts: MakeModelOptions): { arch: Arch; preset: Preset } {
  const presetName = opts.preset ?? "tiny";
  let arch: Arch | undefined;
  if (opts.arch !== undefined) {
    if (!ARCHITECTURES.includes(opts.arch as Arch)) {
      throw new ArgumentError(
        "arch",
        `unknown architecture ${JSON.stringify(opts.arch)}`,
        `valid architectures: ${ARCHITECTURES.join(", ")}`,
      );
    }
    arch = opts.arch as Arch;
  }
  if (arch === undefined) {
    const p = PRESETS[presetName];
    if (!p) {
      throw new ArgumentError(
        "arch",
        presetName === "tiny"
          ? "the architecture is required with the tiny preset"
          : `unknown preset ${JSON.stringify(presetName)}, and no architecture given`,
        `valid architectures: ${ARCHITECTURES.join(", ")}; presets: ${presetNames().join(", ")}`,
      );
    }
    return { arch: p.arch, preset: p };
  }
  const p = PRESETS[presetKey(arch, presetName)];
  if (!p || p.name !== presetName) {
    throw new ArgumentError(
      "preset",
      `unknown preset ${JSON.stringify(presetName)} for ${arch}`,
      `valid presets for ${arch}: ${presetNames(arch).join(", ")} (all: ${
        presetNames().join(", ")
      })`,
    );
  }
  if (p.arch !== arch) {
    throw new ArgumentError(
      "preset",
      `preset '${presetName}' is a ${p.arch} model, not ${arch}`,
      `drop the architecture or pick one of: ${presetNames(arch).join(", ")}`,
    );
  }
  return { arch, preset: p };
}

const DIM_KEYS: readonly (keyof ModelDims)[] = [
  "hidden",
  "layers",
  "heads",
  "kvHeads",
  "headDim",
  "inter",
  "denseInter",
  "sharedInter",
  "experts",
  "topK",
  "vocab",
  "sparseStep",
  "mlpOnlyLayers",
  "normTopK",
  "tieEmbeddings",
  "ropeTheta",
  "rmsEps",
  "maxPositions",
  "clipQkv",
];

function resolveDims(arch: Arch, preset: Preset, overrides: Partial<ModelDims>): ModelDims {
  if (overrides === null || typeof overrides !== "object") {
    throw new ArgumentError("overrides", `expected an object, found ${JSON.stringify(overrides)}`);
  }
  for (const k of Object.keys(overrides)) {
    if (!DIM_KEYS.includes(k as keyof ModelDims)) {
      throw new ArgumentError(
        `overrides.${k}`,
        "unknown dimension",
        `valid: ${DIM_KEYS.join(", ")}`,
      );
    }
  }
  const d: ModelDims = { ...preset.dims, ...overrides };
  // A preset's mlp_only_layers beyond a reduced layer count are dropped (explicit ones are checked).
  if (overrides.layers !== undefined && overrides.mlpOnlyLayers === undefined) {
    d.mlpOnlyLayers = d.mlpOnlyLayers.filter((i) => i < (overrides.layers as number));
  }
  // A preset's head width follows a changed hidden size / head count unless the arch stores it.
  if (
    (overrides.hidden !== undefined || overrides.heads !== undefined) &&
    overrides.headDim === undefined && arch !== "qwen3_moe"
  ) {
    d.headDim = undefined;
  }
  for (
    const k of [
      "hidden",
      "layers",
      "heads",
      "kvHeads",
      "inter",
      "experts",
      "topK",
      "vocab",
    ] as const
  ) {
    positiveInt(k, d[k]);
  }
  positiveInt("denseInter", d.denseInter);
  positiveInt("sparseStep", d.sparseStep);
  positiveInt("maxPositions", d.maxPositions);
  positiveInt("sharedInter", d.sharedInter, 0);
  if (d.headDim !== undefined) positiveInt("headDim", d.headDim);
  for (const k of ["ropeTheta", "rmsEps"] as const) {
    if (typeof d[k] !== "number" || !(d[k] > 0) || !Number.isFinite(d[k])) {
      throw new ArgumentError(`overrides.${k}`, `expected a positive number, found ${d[k]}`);
    }
  }
  for (const k of ["normTopK", "tieEmbeddings"] as const) {
    if (typeof d[k] !== "boolean") {
      throw new ArgumentError(
        `overrides.${k}`,
        `expected true or false, found ${JSON.stringify(d[k])}`,
      );
    }
  }
  if (d.clipQkv !== null && (typeof d.clipQkv !== "number" || !(d.clipQkv > 0))) {
    throw new ArgumentError(
      "overrides.clipQkv",
      `expected a positive number or null, found ${d.clipQkv}`,
    );
  }
  if (d.clipQkv !== null && arch !== "olmoe") {
    throw new ArgumentError("overrides.clipQkv", `clip_qkv is an OLMoE option, not ${arch}'s`);
  }
  if (
    !Array.isArray(d.mlpOnlyLayers) ||
    d.mlpOnlyLayers.some((i) => !Number.isSafeInteger(i) || i < 0 || i >= d.layers)
  ) {
    throw new ArgumentError(
      "overrides.mlpOnlyLayers",
      `expected layer indices in [0, ${d.layers}), found ${JSON.stringify(d.mlpOnlyLayers)}`,
    );
  }
  if (arch !== "qwen2_moe" && arch !== "qwen3_moe") {
    if (d.mlpOnlyLayers.length > 0 || d.sparseStep !== 1) {
      throw new ArgumentError(
        overrides.sparseStep !== undefined ? "overrides.sparseStep" : "overrides.mlpOnlyLayers",
        `${arch} has no dense layers (every layer is MoE)`,
        "sparseStep and mlpOnlyLayers are Qwen2-MoE / Qwen3-MoE options",
      );
    }
  }
  if (arch !== "qwen2_moe" && d.sharedInter !== 0) {
    throw new ArgumentError(
      "overrides.sharedInter",
      `${arch} has no shared expert (only qwen2_moe)`,
    );
  }
  if (arch === "mixtral" && !d.normTopK) {
    throw new ArgumentError("overrides.normTopK", "Mixtral always renormalises the top-k weights");
  }
  if (d.topK > d.experts) {
    throw new ArgumentError(
      "overrides.topK",
      `topK ${d.topK} exceeds the number of experts ${d.experts}`,
      "topK must be at most experts",
    );
  }
  if (d.heads % d.kvHeads !== 0) {
    throw new ArgumentError(
      "overrides.kvHeads",
      `heads ${d.heads} is not a multiple of kvHeads ${d.kvHeads}`,
      "kvHeads must divide heads (grouped-query attention)",
    );
  }
  if (d.headDim === undefined && d.hidden % d.heads !== 0) {
    throw new ArgumentError(
      "overrides.heads",
      `hidden ${d.hidden} is not divisible by heads ${d.heads}`,
      arch === "mixtral" || arch === "qwen3_moe"
        ? "pick a head count dividing hidden, or set headDim"
        : "pick a head count dividing hidden",
    );
  }
  const headDim = d.headDim ?? d.hidden / d.heads;
  if ((arch === "olmoe" || arch === "qwen2_moe") && headDim * d.heads !== d.hidden) {
    throw new ArgumentError(
      "overrides.headDim",
      `${arch} has no head_dim setting: its heads are hidden / heads = ${
        d.hidden / d.heads
      } wide, ` +
        `not ${headDim}`,
    );
  }
  if (headDim % 2 !== 0) {
    throw new ArgumentError(
      "overrides.headDim",
      `head width ${headDim} is odd (RoPE rotates pairs)`,
    );
  }
  return d;
}

function checkEven(d: ModelDims, arch: Arch, layers: ModelConfig["layers"], dtype: DType): void {
  if (dtype === "f32") return;
  const headDim = d.headDim ?? d.hidden / d.heads;
  const rows: [string, number][] = [
    ["hidden", d.hidden],
    ["heads x headDim", d.heads * headDim],
    ["inter", d.inter],
  ];
  if (layers.some((l) => l.ffn.kind === "dense")) rows.push(["denseInter", d.denseInter]);
  if (arch === "qwen2_moe" && d.sharedInter > 0) rows.push(["sharedInter", d.sharedInter]);
  for (const [name, v] of rows) {
    if (v % 2 !== 0) {
      throw new ArgumentError(
        `overrides.${name.startsWith("heads") ? "headDim" : name}`,
        `${name} = ${v} is odd, but ${dtype} weights need even row lengths (two values per 32-bit word)`,
        "use an even size, or dtype f32",
      );
    }
  }
}

/**
 * The initialisation of a tensor (see the module documentation). The embedding sets the scale of
 * the residual stream (std 1, or `1/sqrt(hidden)` when it is also the LM head, so logits stay O(1));
 * the projections writing into the residual stream (o, down) are scaled by that and by
 * `1/sqrt(2 refLayers)`, so the token's own embedding stays a large part of the stream in every
 * layer (otherwise deep layers see nearly the same hidden state for every token and route them all
 * to a few experts). RMSNorm makes the overall scale irrelevant to everything downstream.
 * `refLayers` is the larger of the preset's and the model's layer count, so a preset shrunk with
 * `overrides.layers` keeps every remaining tensor identical to the full model's.
 */
function initOf(
  t: ExpectedTensor,
  cfg: ModelConfig,
  refLayers: number,
): { mean: number; std: number } {
  const fanIn = t.shape.length === 2 ? t.shape[1] : 1;
  const embedStd = cfg.tieEmbeddings ? 1 / Math.sqrt(cfg.hidden) : 1;
  const role: TensorRole = t.role;
  switch (role) {
    case "norm":
    case "qk_norm":
      return { mean: 1, std: 0.1 };
    case "attn_bias":
      return { mean: 0, std: 0.1 };
    case "embed":
      return { mean: 0, std: embedStd };
    case "router":
      return { mean: 0, std: 2 / Math.sqrt(fanIn) };
    default: {
      const residual = t.projection === "o" || t.projection === "down";
      const scale = residual ? embedStd / Math.sqrt(2 * refLayers) : 1;
      return { mean: 0, std: scale / Math.sqrt(fanIn) };
    }
  }
}

/**
 * Resolves and validates what {@linkcode makeModel} would write, without writing anything: the
 * preset and dimensions, config.json (round-tripped through `parseConfig`) and every tensor's name,
 * shape, dtype, size and initialisation. Throws {@linkcode ArgumentError} for an unknown
 * architecture or preset (listing the valid ones), a preset of another architecture, or bad
 * dimensions (naming the override).
 *
 * @example
 * ```ts
 * import { planModel } from "./make_model.ts";
 * const plan = planModel({ preset: "mixtral-8x7b", out: "", dtype: "bf16", overrides: { layers: 1 } });
 * console.log(plan.tensors.length, plan.totalBytes); // 34 3426836480
 * ```
 */
export function planModel(opts: MakeModelOptions): ModelPlan {
  const { arch, preset } = resolveArch(opts);
  const dtype = (opts.dtype ?? "f32").toLowerCase() as DType;
  if (!DTYPES.includes(dtype)) {
    throw new ArgumentError(
      "dtype",
      `unsupported dtype ${JSON.stringify(opts.dtype)}`,
      `use one of ${DTYPES.join(", ")}`,
    );
  }
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new ArgumentError("seed", `expected a non-negative integer, found ${seed}`);
  }
  const style = opts.configStyle ?? preset.style;
  if (style !== "hf5" && style !== "hf4") {
    throw new ArgumentError("configStyle", `expected hf5 or hf4, found ${JSON.stringify(style)}`);
  }
  const d = resolveDims(arch, preset, opts.overrides ?? {});
  const json = hfConfig(arch, d, dtype, preset, style);
  const configJson = plain(json) as Record<string, unknown>;
  let config: ModelConfig;
  try {
    config = parseConfig(configJson, "config.json");
  } catch (e) {
    if (e instanceof ConfigError) {
      throw new ArgumentError("overrides", `the resulting config is invalid: ${e.message}`);
    }
    throw e;
  }
  if (config.layers.every((l) => l.ffn.kind === "dense")) {
    throw new ArgumentError(
      "overrides.sparseStep",
      `no layer of the ${d.layers} is MoE (decoder_sparse_step ${d.sparseStep}, mlp_only_layers ` +
        `${JSON.stringify(d.mlpOnlyLayers)})`,
      "a mixture-of-experts model needs at least one MoE layer",
    );
  }
  checkEven(d, arch, config.layers, dtype);
  const tensors: PlannedTensor[] = expectedTensors(config).map((t) => {
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (elements > 2 ** 33) {
      throw new ArgumentError(
        "overrides",
        `tensor ${t.name} ${JSON.stringify(t.shape)} is too large`,
      );
    }
    const init = initOf(t, config, Math.max(preset.dims.layers, d.layers));
    return { ...t, dtype, bytes: elements * DTYPE_BYTES[dtype], ...init };
  });
  return {
    arch,
    preset: preset.name,
    dims: d,
    dtype,
    seed,
    configStyle: style,
    configJson,
    configText: pyJson(json) + "\n",
    generationConfigText: pyJson(generationConfig(preset, style)) + "\n",
    config,
    tensors,
    totalBytes: tensors.reduce((a, t) => a + t.bytes, 0),
  };
}

// ---------------------------------------------------------------------------------------------
// random values
// ---------------------------------------------------------------------------------------------

/** Entries of a sample table (indexed by 16 random bits). */
const TABLE_SIZE = 1 << 16;
/** Sample pairs (one random word each) per generated chunk: 4 MiB of 16-bit output, 8 of f32. */
const CHUNK_PAIRS = 1 << 20;

/** Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9). */
function normalQuantile(p: number): number {
  // deno-fmt-ignore
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269,
    -30.66479806614716, 2.506628277459239];
  // deno-fmt-ignore
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
    -13.28068155288572];
  // deno-fmt-ignore
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
    4.374664141464968, 2.938163982698783];
  // deno-fmt-ignore
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (q: number) =>
    (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
    ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

let quantiles: Float64Array | null = null;
const tables = new Map<string, Uint16Array | Uint32Array>();

/**
 * The table of `TABLE_SIZE` N(mean, std^2) samples (the normal quantiles at (i + 0.5) / 65536, so
 * the table's own mean is exactly `mean`) encoded in `dtype`: 16-bit patterns for f16 / bf16, f32
 * bit patterns for f32.
 */
function sampleTable(dtype: DType, mean: number, std: number): Uint16Array | Uint32Array {
  const key = `${dtype}:${mean}:${std}`;
  const hit = tables.get(key);
  if (hit) return hit;
  if (!quantiles) {
    quantiles = new Float64Array(TABLE_SIZE);
    for (let i = 0; i < TABLE_SIZE; i++) quantiles[i] = normalQuantile((i + 0.5) / TABLE_SIZE);
  }
  let table: Uint16Array | Uint32Array;
  if (dtype === "f32") {
    const f = new Float32Array(TABLE_SIZE);
    for (let i = 0; i < TABLE_SIZE; i++) f[i] = mean + std * quantiles[i];
    table = new Uint32Array(f.buffer);
  } else {
    const conv = dtype === "f16" ? f32ToF16Bits : f32ToBf16Bits;
    table = new Uint16Array(TABLE_SIZE);
    for (let i = 0; i < TABLE_SIZE; i++) table[i] = conv(mean + std * quantiles[i]);
  }
  tables.set(key, table);
  return table;
}

/** A 32-bit avalanche (Wellons' "lowbias32"). */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The key of a tensor's random stream: the seed (all 53 bits) and the name (FNV-1a). */
function streamKey(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  return mix32(h ^ mix32(lo ^ mix32(hi + 0x9e3779b9)));
}

/**
 * Fills `out[0, pairs)` (16-bit dtypes: one word = two samples) with the samples of stream `key`
 * starting at pair `start`: word `k` of the stream is `hash(k * golden + key)`, its low 16 bits pick
 * the even sample and its high 16 bits the odd one.
 */
function fill16(out: Uint32Array, pairs: number, key: number, start: number, t: Uint16Array): void {
  for (let i = 0; i < pairs; i++) {
    let x = (Math.imul(start + i, 0x9e3779b9) + key) | 0;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= x >>> 16;
    out[i] = t[x & 0xffff] | (t[x >>> 16] << 16);
  }
}

/** As {@linkcode fill16} for f32: two output words per random word. */
function fill32(out: Uint32Array, pairs: number, key: number, start: number, t: Uint32Array): void {
  for (let i = 0; i < pairs; i++) {
    let x = (Math.imul(start + i, 0x9e3779b9) + key) | 0;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= x >>> 16;
    out[2 * i] = t[x & 0xffff];
    out[2 * i + 1] = t[x >>> 16];
  }
}

/**
 * The values of a planned tensor as f32 (computed, not read from disk): what {@linkcode makeModel}
 * writes for it with `seed`, before rounding to 16 bits for f16 / bf16 (for those dtypes the
 * returned values are already rounded, so they equal the file exactly). Meant for tests and small
 * tensors.
 *
 * @example
 * ```ts
 * import { planModel, tensorValues } from "./make_model.ts";
 * const plan = planModel({ arch: "mixtral", out: "", seed: 3 });
 * const norm = plan.tensors.find((t) => t.name === "model.norm.weight")!;
 * console.log(tensorValues(norm, plan.seed).length); // 64
 * ```
 */
export function tensorValues(t: PlannedTensor, seed: number): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const pairs = Math.ceil(n / 2);
  const key = streamKey(seed, t.name);
  const words = new Uint32Array(pairs * 2);
  if (t.dtype === "f32") {
    fill32(words, pairs, key, 0, sampleTable("f32", t.mean, t.std) as Uint32Array);
    return new Float32Array(words.buffer, 0, n);
  }
  fill16(words, pairs, key, 0, sampleTable(t.dtype, t.mean, t.std) as Uint16Array);
  const halves = new Uint16Array(words.buffer, 0, n);
  const out = new Float32Array(n);
  if (t.dtype === "bf16") {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u[i] = halves[i] << 16;
  } else {
    for (let i = 0; i < n; i++) out[i] = f16BitsToF32(halves[i]);
  }
  return out;
}

/** Random words (sample pairs) of a tensor. */
function pairsOf(t: PlannedTensor): number {
  return Math.ceil(t.bytes / DTYPE_BYTES[t.dtype] / 2);
}

/**
 * Produces the tensors' bytes chunk by chunk, in file order, into two reused buffers: when a chunk
 * is handed to the writer, the next one is generated in a macrotask (a MessageChannel message: no
 * timer clamping), which runs while the writer's `write` is in flight on Deno's I/O thread. The
 * writer asks for the next chunk only after the previous write completed, so the buffer being
 * written is never touched.
 */
class Producer {
  readonly #tensors: readonly PlannedTensor[];
  readonly #total: number;
  readonly #keys: number[];
  readonly #buffers: Uint32Array[];
  readonly #channel = new MessageChannel();
  readonly #onProgress?: (done: number, total: number) => void;
  #pending: { t: number; start: number; buf: number; done: Promise<void> } | null = null;
  #run: (() => void) | null = null;
  #last = 1;
  #done = 0;

  constructor(plan: ModelPlan, onProgress?: (done: number, total: number) => void) {
    this.#tensors = plan.tensors;
    this.#total = plan.totalBytes;
    this.#keys = plan.tensors.map((t) => streamKey(plan.seed, t.name));
    const largest = plan.tensors.reduce((a, t) => Math.max(a, pairsOf(t)), 1);
    const words = Math.min(CHUNK_PAIRS, largest) * (plan.dtype === "f32" ? 2 : 1);
    this.#buffers = [new Uint32Array(words), new Uint32Array(words)];
    this.#onProgress = onProgress;
    this.#channel.port1.onmessage = () => {
      const run = this.#run;
      this.#run = null;
      run?.();
    };
  }

  /** The bytes of the chunk of tensor `t` starting at pair `start`, in buffer `buf`. */
  #view(buf: number, t: number, start: number): Uint8Array {
    const p = this.#tensors[t];
    const unit = DTYPE_BYTES[p.dtype];
    const bytes = Math.min(CHUNK_PAIRS * 2 * unit, p.bytes - start * 2 * unit);
    return new Uint8Array(this.#buffers[buf].buffer, 0, bytes);
  }

  #generate(buf: number, t: number, start: number): void {
    const p = this.#tensors[t];
    const pairs = Math.min(CHUNK_PAIRS, pairsOf(p) - start);
    const table = sampleTable(p.dtype, p.mean, p.std);
    const out = this.#buffers[buf];
    if (p.dtype === "f32") fill32(out, pairs, this.#keys[t], start, table as Uint32Array);
    else fill16(out, pairs, this.#keys[t], start, table as Uint16Array);
  }

  /** The chunk after (t, start) in file order, or null at the end. */
  #after(t: number, start: number): { t: number; start: number } | null {
    if (start + CHUNK_PAIRS < pairsOf(this.#tensors[t])) return { t, start: start + CHUNK_PAIRS };
    return t + 1 < this.#tensors.length ? { t: t + 1, start: 0 } : null;
  }

  /** The bytes of tensor `t` from pair `start` (a chunk start), valid until the next call. */
  async take(t: number, start: number): Promise<Uint8Array> {
    const p = this.#pending;
    this.#pending = null;
    let buf: number;
    if (p && p.t === t && p.start === start) {
      await p.done;
      buf = p.buf;
    } else {
      // Not what was prefetched (the writer asked out of order): let any prefetch finish, then
      // generate the chunk now. Both buffers are free: the last chunk handed out was written.
      if (p) await p.done;
      buf = this.#last ^ 1;
      this.#generate(buf, t, start);
    }
    this.#last = buf;
    const next = this.#after(t, start);
    if (next) {
      const nb = buf ^ 1;
      const done = new Promise<void>((resolve) => {
        this.#run = () => {
          this.#generate(nb, next.t, next.start);
          resolve();
        };
      });
      this.#pending = { ...next, buf: nb, done };
      this.#channel.port2.postMessage(0);
    }
    const bytes = this.#view(buf, t, start);
    this.#done += bytes.byteLength;
    this.#onProgress?.(this.#done, this.#total);
    return bytes;
  }

  /** The lazy data source of tensor `t` for the writer. */
  source(t: number): () => AsyncIterable<Uint8Array> {
    const pairs = pairsOf(this.#tensors[t]);
    const take = (start: number) => this.take(t, start);
    return async function* () {
      for (let s = 0; s < pairs; s += CHUNK_PAIRS) yield await take(s);
    };
  }

  /** Closes the channel (a pending prefetch is dropped). */
  close(): void {
    this.#run = null;
    this.#channel.port1.close();
    this.#channel.port2.close();
  }
}

// ---------------------------------------------------------------------------------------------
// makeModel
// ---------------------------------------------------------------------------------------------

function isCheckpointFile(name: string): boolean {
  return name === "config.json" || name === "generation_config.json" ||
    name === INDEX_FILE_NAME || name === `${INDEX_FILE_NAME}.partial` ||
    name.endsWith(".safetensors") || name.endsWith(".safetensors.partial");
}

async function prepareDir(out: string, force: boolean): Promise<void> {
  if (typeof out !== "string" || out === "") {
    throw new ArgumentError("out", "an output directory is required");
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(out);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      await Deno.mkdir(out, { recursive: true });
      return;
    }
    throw new ArgumentError("out", `cannot use ${out}: ${(e as Error).message}`);
  }
  if (!info.isDirectory) {
    throw new ArgumentError(
      "out",
      `${out} exists and is not a directory`,
      "choose a directory path",
    );
  }
  const entries: string[] = [];
  for await (const e of Deno.readDir(out)) entries.push(e.name);
  if (entries.length === 0) return;
  if (!force) {
    entries.sort();
    throw new ArgumentError(
      "out",
      `directory ${out} is not empty (${entries.length} entries: ${entries.slice(0, 4).join(", ")}${
        entries.length > 4 ? ", ..." : ""
      })`,
      "choose a new directory, or pass force (--force) to overwrite the checkpoint files in it",
    );
  }
  for (const name of entries) {
    if (isCheckpointFile(name)) await Deno.remove(`${out}/${name}`);
  }
}

/**
 * Writes a random-weight checkpoint (see the module documentation) to `opts.out`: the safetensors
 * weights first (sharded when larger than `maxShardBytes`, default 2e9), then
 * `generation_config.json`, then `config.json` last, so an interrupted run never leaves a directory
 * that looks complete. The output is a deterministic function of the options (same seed, same
 * bytes).
 *
 * @throws {ArgumentError} for an unknown architecture or preset (listing the valid ones), a preset of
 *   another architecture, bad dimensions (heads not dividing hidden, topK > experts, odd sizes with a
 *   16-bit dtype, ...), or an output directory that exists and is not empty (unless `force`).
 *
 * @example
 * ```ts
 * import { makeModel } from "./make_model.ts";
 * import { openCheckpoint } from "../weights/safetensors.ts";
 * const m = await makeModel({ arch: "mixtral", out: "/tmp/tiny-mixtral", seed: 1, force: true });
 * const ckpt = openCheckpoint(m.dir);
 * console.log(ckpt.get("model.layers.0.block_sparse_moe.experts.7.w2.weight").shape); // [64, 96]
 * ckpt.close();
 * ```
 */
export async function makeModel(opts: MakeModelOptions): Promise<MadeModel> {
  const plan = planModel(opts);
  const maxShardBytes = opts.maxShardBytes ?? 2e9;
  if (!Number.isSafeInteger(maxShardBytes) || maxShardBytes <= 0) {
    throw new ArgumentError("maxShardBytes", `expected a positive integer, found ${maxShardBytes}`);
  }
  await prepareDir(opts.out, opts.force ?? false);
  const dir = opts.out;
  const producer = new Producer(plan, opts.onProgress);
  const t0 = performance.now();
  let written;
  try {
    const tensors: TensorToWrite[] = plan.tensors.map((t, i) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      data: producer.source(i),
    }));
    written = await writeShardedCheckpoint(dir, tensors, {
      maxShardBytes,
      metadata: { format: "pt" },
    });
  } finally {
    producer.close();
  }
  await Deno.writeTextFile(`${dir}/generation_config.json`, plan.generationConfigText);
  await Deno.writeTextFile(`${dir}/config.json`, plan.configText);
  const seconds = (performance.now() - t0) / 1000;
  opts.onProgress?.(plan.totalBytes, plan.totalBytes);
  return {
    ...plan,
    dir,
    files: written.files,
    index: written.index,
    tensorBytes: written.totalSize,
    seconds,
  };
}
