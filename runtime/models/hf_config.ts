/**
 * The JSON files of a Hugging Face checkpoint as transformers writes them with `save_pretrained`:
 * `config.json` (5.17's form, or the older 4.x form with a top-level `rope_theta` and
 * `torch_dtype`) and `generation_config.json`, byte for byte (Python's `json.dumps(indent=2,
 * sort_keys=True)`, floats as Python prints them).
 *
 * @example
 * ```ts
 * import { hfConfigFiles } from "./hf_config.ts";
 * import { PRESETS } from "./presets.ts";
 * const p = PRESETS["tiny/olmoe"];
 * const files = hfConfigFiles("olmoe", p.dims, "f32", p, "hf5");
 * console.log(files.configJson.model_type, files.configText.includes('"rms_norm_eps": 1e-05')); // olmoe true
 * ```
 * @module
 */
import type { DType } from "../weights/dtype.ts";
import type { Arch } from "./config.ts";
import type { ConfigStyle, ModelDims, Preset } from "./presets.ts";

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
function hfConfig(
  arch: Arch,
  d: ModelDims,
  dtype: DType,
  preset: Preset,
  style: ConfigStyle,
): Record<string, unknown> {
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

/**
 * The contents of a checkpoint's config files for these dimensions: `configJson`, config.json as a
 * plain object (what `parseConfig` reads), and the texts of config.json and generation_config.json
 * exactly as transformers writes them (with a final newline).
 *
 * @example
 * ```ts
 * import { hfConfigFiles } from "./hf_config.ts";
 * import { PRESETS } from "./presets.ts";
 * const p = PRESETS["tiny/mixtral"];
 * const { configJson } = hfConfigFiles("mixtral", p.dims, "bf16", p, p.style);
 * console.log(configJson.torch_dtype, configJson.rope_theta); // bfloat16 1000000
 * ```
 */
export function hfConfigFiles(
  arch: Arch,
  d: ModelDims,
  dtype: DType,
  preset: Preset,
  style: ConfigStyle,
): { configJson: Record<string, unknown>; configText: string; generationConfigText: string } {
  const json = hfConfig(arch, d, dtype, preset, style);
  return {
    configJson: plain(json) as Record<string, unknown>,
    configText: pyJson(json) + "\n",
    generationConfigText: pyJson(generationConfig(preset, style)) + "\n",
  };
}
