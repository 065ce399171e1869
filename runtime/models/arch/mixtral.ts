/**
 * Mixtral (HF `model_type` `mixtral`, `MixtralForCausalLM`): the plain Llama-style MoE decoder.
 * Every layer is pre-norm grouped-query attention with RoPE, then a pre-norm mixture of SwiGLU
 * experts, top-k of a softmax router with the chosen weights renormalised to sum to 1.
 *
 * Quirks: the experts' projections are named `w1` (gate), `w3` (up), `w2` (down) under
 * `block_sparse_moe`; `sliding_window` must not be shorter than the context.
 *
 * @example
 * ```ts
 * import { mixtral } from "./mixtral.ts";
 * const cfg = mixtral.parseConfig({
 *   model_type: "mixtral", vocab_size: 256, hidden_size: 64, intermediate_size: 128,
 *   num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
 *   num_local_experts: 8, num_experts_per_tok: 2, rms_norm_eps: 1e-5, rope_theta: 1e6,
 * }, "config.json");
 * console.log(cfg.layers[0].ffn.kind, mixtral.names.layer(cfg, 0).q); // moe model.layers.0.self_attn.q_proj.weight
 * ```
 * @module
 */
import type { Gpu } from "../../base/gpu/device.ts";
import { defineArch } from "../architecture.ts";
import { ggufValue as v, type GgufValueToWrite } from "../../weights/gguf_writer.ts";
import { firstMoe, type GgufFields, type GgufSpec } from "../gguf_spec.ts";
import { DecoderBlocks } from "../blocks.ts";
import type { ModelWeights } from "../gpu_weights.ts";
import {
  ConfigFields,
  decoderFields,
  freezeConfig,
  type Json,
  type ModelConfig,
  moeFfn,
} from "../model_config.ts";
import { type ConfigStyle, type ModelDims, presetDims, TINY_TOKENS } from "../model_dims.ts";
import type { ForwardOptions, ForwardPlan, LayerPlan } from "../plan.ts";
import { PyFloat } from "../py_json.ts";
import type { RunState } from "../state.ts";
import {
  attentionNames,
  decoderModelNames,
  decoderTensors,
  type LayerNames,
  mlpNames,
} from "../tensor_names.ts";

// ---- config.json

function parseConfig(raw: Json, where: string): ModelConfig {
  const f = new ConfigFields(raw, where);
  const { numLayers, ...decoder } = decoderFields(f, { ropeTheta: 1e6 });
  // Quirk: a sliding window shorter than the context is not supported (Mixtral-8x7B has none).
  if (f.has("sliding_window") && f.int("sliding_window") < decoder.maxPositions) {
    throw f.error(
      "sliding_window",
      `null or >= max_position_embeddings (${decoder.maxPositions})`,
      raw.sliding_window,
      "set sliding_window to null (full attention), as Mixtral-8x7B's own config does",
    );
  }
  f.oneOf("attention_bias", [false], false, "mixtral's projections have no biases");
  const moe = moeFfn(f, {
    experts: f.int("num_local_experts"),
    inter: f.int("intermediate_size"),
    renormalize: true, // always, whatever norm_topk_prob says
  });
  return freezeConfig(f, {
    ...decoder,
    arch: "mixtral",
    layers: Array.from({ length: numLayers }, () => ({ ffn: moe })),
    qkvBias: false,
    qkNorm: "none",
    clipQkv: 0,
  });
}

// ---- tensor names

const moeBase = (i: number) => `model.layers.${i}.block_sparse_moe`;

function layerNames(_cfg: ModelConfig, i: number): LayerNames {
  return {
    ...attentionNames(i, { bias: false, qkNorm: false }),
    ffn: {
      kind: "moe",
      router: `${moeBase(i)}.gate.weight`,
      // Quirk: w1 is the gate, w3 the up and w2 the down projection.
      expert: (e) => mlpNames(`${moeBase(i)}.experts.${e}`, ["w1", "w3", "w2"]),
    },
  };
}

const names = {
  model: decoderModelNames,
  layer: layerNames,
  pregate: (_cfg: ModelConfig, i: number) => `${moeBase(i)}.pregate.weight`,
};

// ---- forward

async function buildForward(
  gpu: Gpu,
  cfg: ModelConfig,
  w: ModelWeights,
  s: RunState,
  opts: ForwardOptions,
): Promise<ForwardPlan> {
  const b = new DecoderBlocks(gpu, cfg, w, s, opts);
  const embed = await b.embed(); // x = embed(ids)
  const layers: LayerPlan[] = [];
  for (let i = 0; i < cfg.layers.length; i++) {
    const attention = [
      await b.attentionNorm(i), // h = rmsnorm(x)
      ...await b.qkv(i), // q, k, v = h Wq, h Wk, h Wv
      ...await b.selfAttention(i), // x += o_proj(attention(rope(q), rope(k), v))
    ];
    const ffn = await b.moeFfn(i); // x += sum_j w_j expert_j(rmsnorm(x))
    layers.push({ attention, ffn });
  }
  const head = await b.head(); // logits = lm_head(rmsnorm(x))
  return { T: opts.T, embed, layers, head };
}

// ---- GGUF (llama.cpp's llama with experts: q/k rows permuted for its pair-wise RoPE)

const gguf: GgufSpec = {
  arch: "llama",
  renormalize: true,
  permuteQk: true,
  config(m: GgufFields) {
    return {
      num_local_experts: m.uint("num_local_experts", "expert_count"),
      intermediate_size: m.has("feed_forward_length")
        ? m.uint("intermediate_size", "feed_forward_length")
        : m.dim("intermediate_size", "blk.0.ffn_gate_exps.weight", 1),
    };
  },
  metadata(cfg: ModelConfig): Record<string, GgufValueToWrite> {
    return { feed_forward_length: v.u32(firstMoe(cfg).inter) };
  },
};

// ---- make-model

function hfConfig(d: ModelDims, style: ConfigStyle): Record<string, unknown> {
  return {
    // transformers 4 wrote head_dim only when set.
    ...(style === "hf5" || d.headDim !== undefined ? { head_dim: d.headDim ?? null } : {}),
    intermediate_size: d.inter,
    num_local_experts: d.experts,
    router_jitter_noise: new PyFloat(0),
    sliding_window: null,
  };
}

// deno-fmt-ignore
const presets = {
  tiny: {
    description: "tiny Mixtral: 2 layers, 8 experts top-2, hf4-style config",
    dims: presetDims({
      hidden: 64, layers: 2, heads: 4, kvHeads: 2, inter: 96, experts: 8, topK: 2, vocab: 256,
      normTopK: true, tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-5, maxPositions: 256,
    }),
    style: "hf4",
    tokens: TINY_TOKENS,
  },
  "mixtral-8x7b": {
    description: "Mixtral-8x7B: 32 layers, hidden 4096, 8 experts of 14336 top-2 (46.7B params)",
    dims: presetDims({
      hidden: 4096, layers: 32, heads: 32, kvHeads: 8, inter: 14336, experts: 8, topK: 2,
      vocab: 32000, normTopK: true, tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-5,
      maxPositions: 32768,
    }),
    style: "hf5",
    tokens: { bos: 1, eos: 2, pad: null },
    extra: { router_aux_loss_coef: 0.02 },
  },
} as const;

/** Mixtral (see the module documentation). */
export const mixtral = defineArch({
  name: "mixtral",
  description: "Mixtral: every layer MoE, top-k renormalised",
  parseConfig,
  names,
  tensors: (cfg) => decoderTensors(cfg, names),
  buildForward,
  gguf,
  make: {
    hfClass: "MixtralForCausalLM",
    presets,
    dims: {
      headDim: "optional",
      denseLayers: false,
      sharedExpert: false,
      clipQkv: false,
      alwaysRenormalizes: true,
    },
    hfConfig,
  },
});
