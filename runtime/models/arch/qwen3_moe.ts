/**
 * Qwen3-MoE (HF `model_type` `qwen3_moe`, `Qwen3MoeForCausalLM`): the Llama-style MoE decoder with
 * an RMSNorm of each head of q and k (over `head_dim`) before RoPE, a `head_dim` of its own (not
 * necessarily hidden / heads), and dense layers where `decoder_sparse_step` / `mlp_only_layers` say
 * so. The top-k weights are renormalised with `norm_topk_prob` (default true here).
 *
 * @example
 * ```ts
 * import { qwen3Moe } from "./qwen3_moe.ts";
 * const cfg = qwen3Moe.parseConfig({
 *   model_type: "qwen3_moe", vocab_size: 256, hidden_size: 64, intermediate_size: 128,
 *   moe_intermediate_size: 32, num_hidden_layers: 3, num_attention_heads: 4, head_dim: 32,
 *   num_experts: 8, num_experts_per_tok: 2, mlp_only_layers: [1],
 * }, "config.json");
 * console.log(cfg.layers.map((l) => l.ffn.kind), cfg.headDim); // ["moe", "dense", "moe"] 32
 * ```
 * @module
 */
import type { Gpu } from "../../base/gpu/device.ts";
import { defineArch } from "../architecture.ts";
import { ggufValue as v, type GgufValueToWrite } from "../../weights/gguf_writer.ts";
import {
  allMoeLayers,
  firstMoe,
  type GgufFields,
  type GgufSpec,
  rawIntermediate,
} from "../gguf_spec.ts";
import { DecoderBlocks } from "../blocks.ts";
import type { ModelWeights } from "../gpu_weights.ts";
import {
  ConfigFields,
  decoderFields,
  freezeConfig,
  type Json,
  type ModelConfig,
  moeFfn,
  sparseStepLayers,
} from "../model_config.ts";
import { type ConfigStyle, type ModelDims, presetDims, TINY_TOKENS } from "../model_dims.ts";
import type { ForwardOptions, ForwardPlan, LayerPlan } from "../plan.ts";
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
  f.oneOf("attention_bias", [false], false, "qwen3_moe with projection biases is not supported");
  const moe = moeFfn(f, {
    // Hub configs write num_experts; transformers 5 writes num_local_experts.
    experts: f.int(f.has("num_experts") ? "num_experts" : "num_local_experts"),
    inter: f.int("moe_intermediate_size"),
    renormalize: f.bool("norm_topk_prob", true),
  });
  const dense = { kind: "dense", inter: f.int("intermediate_size") } as const;
  return freezeConfig(f, {
    ...decoder,
    arch: "qwen3_moe",
    layers: sparseStepLayers(f, numLayers, moe, dense),
    qkvBias: false,
    qkNorm: "head",
    clipQkv: 0,
  });
}

// ---- tensor names

function layerNames(cfg: ModelConfig, i: number): LayerNames {
  const m = `model.layers.${i}.mlp`;
  return {
    ...attentionNames(i, { bias: false, qkNorm: true }),
    ffn: cfg.layers[i].ffn.kind === "dense" ? { kind: "dense", ...mlpNames(m) } : {
      kind: "moe",
      router: `${m}.gate.weight`,
      expert: (e) => mlpNames(`${m}.experts.${e}`),
    },
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
      ...await b.qkNormPerHead(i), // Quirk: q, k = rmsnorm of each head (over head_dim)
      ...await b.selfAttention(i), // x += o_proj(attention(rope(q), rope(k), v))
    ];
    // Quirk: dense layers (decoder_sparse_step, mlp_only_layers): x += mlp(rmsnorm(x)).
    const ffn = cfg.layers[i].ffn.kind === "dense" ? await b.denseFfn(i) : await b.moeFfn(i); // x += sum_j w_j expert_j(rmsnorm(x))
    layers.push({ attention, ffn });
  }
  const head = await b.head(); // logits = lm_head(rmsnorm(x))
  return { T: opts.T, embed, layers, head };
}

// ---- GGUF (llama.cpp's qwen3moe: every layer MoE, top-k always renormalised)

const gguf: GgufSpec = {
  arch: "qwen3moe",
  renormalize: true,
  config(m: GgufFields) {
    const inter = m.has("expert_feed_forward_length")
      ? m.uint("moe_intermediate_size", "expert_feed_forward_length")
      : m.dim("moe_intermediate_size", "blk.0.ffn_gate_exps.weight", 1);
    return {
      num_experts: m.uint("num_experts", "expert_count"),
      moe_intermediate_size: inter,
      intermediate_size: m.uint("intermediate_size", "feed_forward_length", inter),
      mlp_only_layers: [],
      decoder_sparse_step: 1,
    };
  },
  metadata(cfg: ModelConfig): Record<string, GgufValueToWrite> {
    allMoeLayers(cfg, "qwen3moe");
    const f = firstMoe(cfg);
    return {
      feed_forward_length: v.u32(rawIntermediate(cfg, f.inter)),
      expert_feed_forward_length: v.u32(f.inter),
    };
  },
};

// ---- make-model

function hfConfig(d: ModelDims, style: ConfigStyle): Record<string, unknown> {
  return {
    attention_bias: false,
    decoder_sparse_step: d.sparseStep,
    head_dim: d.headDim ?? d.hidden / d.heads,
    intermediate_size: d.denseInter,
    mlp_only_layers: [...d.mlpOnlyLayers],
    moe_intermediate_size: d.inter,
    norm_topk_prob: d.normTopK,
    // transformers 4 wrote num_experts and max_window_layers, 5 writes num_local_experts.
    ...(style === "hf4"
      ? { num_experts: d.experts, max_window_layers: d.layers }
      : { num_local_experts: d.experts }),
    sliding_window: null,
    use_sliding_window: false,
  };
}

// deno-fmt-ignore
const presets = {
  tiny: {
    description:
      "tiny Qwen3-MoE: 3 layers (layer 1 dense), head_dim 32, tied, 8 experts top-2, hf4-style config",
    dims: presetDims({
      hidden: 64, layers: 3, heads: 4, kvHeads: 2, headDim: 32, inter: 96, denseInter: 128,
      experts: 8, topK: 2, vocab: 256, mlpOnlyLayers: [1], normTopK: true, tieEmbeddings: true,
      ropeTheta: 1e6, rmsEps: 1e-6, maxPositions: 256,
    }),
    style: "hf4",
    tokens: TINY_TOKENS,
  },
  "qwen3-30b-a3b": {
    description: "Qwen3-30B-A3B: 48 layers, hidden 2048, 128 experts of 768 top-8 (30.5B params)",
    dims: presetDims({
      hidden: 2048, layers: 48, heads: 32, kvHeads: 4, headDim: 128, inter: 768, denseInter: 6144,
      experts: 128, topK: 8, vocab: 151936, normTopK: true, tieEmbeddings: false, ropeTheta: 1e6,
      rmsEps: 1e-6, maxPositions: 40960,
    }),
    style: "hf5",
    tokens: { bos: 151643, eos: 151645, pad: null },
  },
} as const;

/** Qwen3-MoE (see the module documentation). */
export const qwen3Moe = defineArch({
  name: "qwen3_moe",
  description: "Qwen3-MoE: per-head q/k norms, own head_dim, optional dense layers",
  parseConfig,
  names,
  tensors: (cfg) => decoderTensors(cfg, names),
  buildForward,
  gguf,
  make: {
    hfClass: "Qwen3MoeForCausalLM",
    presets,
    dims: {
      headDim: "stored",
      denseLayers: true,
      sharedExpert: false,
      clipQkv: false,
      alwaysRenormalizes: false,
    },
    hfConfig,
  },
});
