/**
 * OLMoE (HF `model_type` `olmoe`, `OlmoeForCausalLM`): the Llama-style MoE decoder with an RMSNorm
 * of q and k over the whole projection (not per head) before RoPE, and `clip_qkv`: when set, q, k
 * (after their norms) and v are clamped to [-clip_qkv, clip_qkv], as HF's `OlmoeAttention` does.
 * Every layer is MoE; the top-k weights are renormalised only with `norm_topk_prob`.
 *
 * @example
 * ```ts
 * import { olmoe } from "./olmoe.ts";
 * const cfg = olmoe.parseConfig({
 *   model_type: "olmoe", vocab_size: 256, hidden_size: 64, intermediate_size: 80,
 *   num_hidden_layers: 2, num_attention_heads: 4, num_experts: 8, num_experts_per_tok: 2,
 *   clip_qkv: 8,
 * }, "config.json");
 * console.log(cfg.qkNorm, cfg.clipQkv, olmoe.tensors(cfg).length); // full 8 69
 * ```
 * @module
 */
import type { Gpu } from "../../base/gpu/device.ts";
import { ConfigError } from "../../base/errors.ts";
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
  decoderPregateName,
  decoderTensors,
  type LayerNames,
  mlpNames,
} from "../tensor_names.ts";

// ---- config.json

function parseConfig(raw: Json, where: string): ModelConfig {
  const f = new ConfigFields(raw, where);
  const { numLayers, ...decoder } = decoderFields(f, { ropeTheta: 10000 });
  // Quirk: the q norm spans hidden_size, so heads must be hidden_size / num_attention_heads wide.
  if (decoder.headDim * decoder.heads !== decoder.hidden) {
    throw f.error(
      "head_dim",
      `hidden_size / num_attention_heads (${decoder.hidden / decoder.heads}) or absent`,
      decoder.headDim,
      "OLMoE's q norm is as wide as hidden_size",
    );
  }
  f.oneOf("attention_bias", [false], false, "olmoe with projection biases is not supported");
  const moe = moeFfn(f, {
    experts: f.int("num_experts"),
    inter: f.int("intermediate_size"),
    renormalize: f.bool("norm_topk_prob", false),
  });
  return freezeConfig(f, {
    ...decoder,
    arch: "olmoe",
    layers: Array.from({ length: numLayers }, () => ({ ffn: moe })),
    qkvBias: false,
    qkNorm: "full",
    clipQkv: f.has("clip_qkv") ? f.positive("clip_qkv") : 0,
  });
}

// ---- tensor names

function layerNames(_cfg: ModelConfig, i: number): LayerNames {
  const m = `model.layers.${i}.mlp`;
  return {
    ...attentionNames(i, { bias: false, qkNorm: true }),
    ffn: { kind: "moe", router: `${m}.gate.weight`, expert: (e) => mlpNames(`${m}.experts.${e}`) },
  };
}

const names = {
  model: decoderModelNames,
  layer: layerNames,
  pregate: decoderPregateName,
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
      ...await b.qkNormFull(i), // Quirk: q, k = rmsnorm over the whole projection
      ...(cfg.clipQkv > 0 ? [await b.qkvClamp(cfg.clipQkv)] : []), // Quirk: q, k, v clamped
      ...await b.selfAttention(i), // x += o_proj(attention(rope(q), rope(k), v))
    ];
    const ffn = await b.moeFfn(i); // x += sum_j w_j expert_j(rmsnorm(x))
    layers.push({ attention, ffn });
  }
  const head = await b.head(); // logits = lm_head(rmsnorm(x))
  return { T: opts.T, embed, layers, head };
}

// ---- GGUF (llama.cpp's olmoe: no renormalisation, no q/k/v clamp, as many KV heads as heads)

const gguf: GgufSpec = {
  arch: "olmoe",
  renormalize: false,
  config(m: GgufFields) {
    return {
      num_experts: m.uint("num_experts", "expert_count"),
      intermediate_size: m.has("feed_forward_length")
        ? m.uint("intermediate_size", "feed_forward_length")
        : m.dim("intermediate_size", "blk.0.ffn_gate_exps.weight", 1),
    };
  },
  metadata(cfg: ModelConfig): Record<string, GgufValueToWrite> {
    if (cfg.kvHeads !== cfg.heads) {
      throw new ConfigError(
        `olmoe with ${cfg.kvHeads} key/value heads for ${cfg.heads} heads cannot be written for ` +
          "llama.cpp",
        "llama.cpp's olmoe graph has a k norm as wide as hidden_size: no grouped-query attention",
      );
    }
    if (cfg.clipQkv) {
      throw new ConfigError(
        `olmoe with clip_qkv ${cfg.clipQkv} cannot be written for llama.cpp`,
        "llama.cpp's olmoe graph does not clamp q, k and v",
      );
    }
    return { feed_forward_length: v.u32(firstMoe(cfg).inter) };
  },
};

// ---- make-model

function hfConfig(d: ModelDims, _style: ConfigStyle): Record<string, unknown> {
  return {
    attention_bias: false,
    clip_qkv: d.clipQkv === null ? null : new PyFloat(d.clipQkv),
    intermediate_size: d.inter,
    norm_topk_prob: d.normTopK,
    num_experts: d.experts,
    router_aux_loss_coef: new PyFloat(0.01),
  };
}

// deno-fmt-ignore
const presets = {
  tiny: {
    description: "tiny OLMoE: 2 layers, 8 experts top-3, full-projection q/k norms",
    dims: presetDims({
      hidden: 64, layers: 2, heads: 4, kvHeads: 2, inter: 80, experts: 8, topK: 3, vocab: 256,
      normTopK: false, tieEmbeddings: false, ropeTheta: 5e5, rmsEps: 1e-5, maxPositions: 256,
    }),
    style: "hf5",
    tokens: TINY_TOKENS,
  },
  "olmoe-1b-7b": {
    description: "OLMoE-1B-7B: 16 layers, hidden 2048, 64 experts of 1024 top-8 (6.9B params)",
    dims: presetDims({
      hidden: 2048, layers: 16, heads: 16, kvHeads: 16, inter: 1024, experts: 64, topK: 8,
      vocab: 50304, normTopK: false, tieEmbeddings: false, ropeTheta: 10000, rmsEps: 1e-5,
      maxPositions: 4096,
    }),
    style: "hf5",
    tokens: { bos: null, eos: 50279, pad: 1 },
  },
} as const;

/** OLMoE (see the module documentation). */
export const olmoe = defineArch({
  name: "olmoe",
  description: "OLMoE: whole-projection q/k norms, optional clip_qkv, every layer MoE",
  parseConfig,
  names,
  tensors: (cfg) => decoderTensors(cfg, names),
  buildForward,
  gguf,
  make: {
    hfClass: "OlmoeForCausalLM",
    presets,
    dims: {
      headDim: "derived",
      denseLayers: false,
      sharedExpert: false,
      clipQkv: true,
      alwaysRenormalizes: false,
    },
    hfConfig,
  },
});
