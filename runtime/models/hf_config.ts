/**
 * The JSON files of a Hugging Face checkpoint as transformers writes them with `save_pretrained`:
 * `config.json` (5.17's form, or the older 4.x form with a top-level `rope_theta` and
 * `torch_dtype`) and `generation_config.json`, byte for byte (Python's `json.dumps(indent=2,
 * sort_keys=True)`, floats as Python prints them). The keys every decoder writes are here; each
 * architecture adds its own (`make.hfConfig` of its file in `arch/`).
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
import type { DType } from "../base/dtype.ts";
import { archNamed } from "./arch/mod.ts";
import type { HfConfigFiles } from "./architecture.ts";
import type { ConfigStyle, ModelDims, PresetSpec } from "./model_dims.ts";
import { plainJson, PyFloat, pyJson } from "./py_json.ts";

const TORCH_DTYPE: Readonly<Record<DType, string>> = {
  f32: "float32",
  f16: "float16",
  bf16: "bfloat16",
};

const HF5_VERSION = "5.17.0";
const HF4_VERSION = "4.51.3";

/** The config.json object (with PyFloat markers) transformers 5.17 writes for these dimensions. */
function hfConfig(
  arch: string,
  d: ModelDims,
  dtype: DType,
  preset: PresetSpec,
  style: ConfigStyle,
): Record<string, unknown> {
  const entry = archNamed(arch, "arch");
  const f = (x: number) => new PyFloat(x);
  const c: Record<string, unknown> = {
    architectures: [entry.make.hfClass],
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
  Object.assign(c, entry.make.hfConfig(d, style));
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
    c.transformers_version = HF4_VERSION;
  }
  return c;
}

function generationConfig(preset: PresetSpec, style: ConfigStyle): Record<string, unknown> {
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
 * exactly as transformers writes them (with a final newline). An architecture whose config.json
 * shares none of the decoder keys writes its own (`make.configFiles` of its file).
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
  arch: string,
  d: ModelDims,
  dtype: DType,
  preset: PresetSpec & { readonly name?: string },
  style: ConfigStyle,
): HfConfigFiles {
  const own = archNamed(arch, "arch").make.configFiles;
  if (own) return own(d, dtype, { name: preset.name ?? "tiny" });
  const json = hfConfig(arch, d, dtype, preset, style);
  return {
    configJson: plainJson(json) as Record<string, unknown>,
    configText: pyJson(json) + "\n",
    generationConfigText: pyJson(generationConfig(preset, style)) + "\n",
  };
}
