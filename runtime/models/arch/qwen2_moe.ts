/**
 * Qwen2-MoE (HF `model_type` `qwen2_moe`, `Qwen2MoeForCausalLM`; Qwen1.5-MoE): the Llama-style MoE
 * decoder with three quirks, marked where they happen below: biases on the q, k and v projections;
 * a shared expert beside the routed ones, gated by sigmoid(w . h); and dense layers where
 * `decoder_sparse_step` / `mlp_only_layers` say so. The top-k weights are renormalised only with
 * `norm_topk_prob`.
 *
 * @example
 * ```ts
 * import { qwen2Moe } from "./qwen2_moe.ts";
 * const cfg = qwen2Moe.parseConfig({
 *   model_type: "qwen2_moe", vocab_size: 256, hidden_size: 64, intermediate_size: 96,
 *   moe_intermediate_size: 32, shared_expert_intermediate_size: 64, num_hidden_layers: 2,
 *   num_attention_heads: 4, num_experts: 8, num_experts_per_tok: 2, decoder_sparse_step: 2,
 * }, "config.json");
 * console.log(cfg.layers.map((l) => l.ffn.kind), cfg.qkvBias); // ["dense", "moe"] true
 * ```
 * @module
 */
import type { Gpu } from "../../base/gpu/device.ts";
import { ConfigError } from "../../base/errors.ts";
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
  const moe = moeFfn(f, {
    // Hub configs write num_experts; transformers 5 may write num_local_experts.
    experts: f.int(f.has("num_experts") ? "num_experts" : "num_local_experts"),
    inter: f.int("moe_intermediate_size"),
    renormalize: f.bool("norm_topk_prob", false),
    sharedInter: f.int("shared_expert_intermediate_size", 0, 0),
  });
  const dense = { kind: "dense", inter: f.int("intermediate_size") } as const;
  return freezeConfig(f, {
    ...decoder,
    arch: "qwen2_moe",
    layers: sparseStepLayers(f, numLayers, moe, dense),
    qkvBias: f.bool("qkv_bias", true),
    qkNorm: "none",
    clipQkv: 0,
  });
}

// ---- tensor names

function layerNames(cfg: ModelConfig, i: number): LayerNames {
  const m = `model.layers.${i}.mlp`;
  const ffn = cfg.layers[i].ffn;
  return {
    ...attentionNames(i, { bias: cfg.qkvBias, qkNorm: false }),
    ffn: ffn.kind === "dense" ? { kind: "dense", ...mlpNames(m) } : {
      kind: "moe",
      router: `${m}.gate.weight`,
      expert: (e) => mlpNames(`${m}.experts.${e}`),
      shared: ffn.sharedInter > 0
        ? { ...mlpNames(`${m}.shared_expert`), gateWeight: `${m}.shared_expert_gate.weight` }
        : undefined,
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
      ...(cfg.qkvBias ? [await b.qkvBias(i)] : []), // Quirk: q += bq, k += bk, v += bv
      ...await b.selfAttention(i), // x += o_proj(attention(rope(q), rope(k), v))
    ];
    // Quirk: dense layers (decoder_sparse_step, mlp_only_layers): x += mlp(rmsnorm(x)).
    // Quirk: MoE layers add a shared expert: x += sum_j w_j expert_j(h) + sigmoid(h . g) shared(h).
    const ffn = cfg.layers[i].ffn.kind === "dense"
      ? await b.denseFfn(i)
      : await b.moeFfn(i, { shared: b.moeWeights(i).shared });
    layers.push({ attention, ffn });
  }
  const head = await b.head(); // logits = lm_head(rmsnorm(x))
  return { T: opts.T, embed, layers, head };
}

// ---- GGUF (llama.cpp's qwen2moe: every layer MoE with a shared expert, no renormalisation)

const gguf: GgufSpec = {
  arch: "qwen2moe",
  renormalize: false,
  config(m: GgufFields) {
    const inter = m.has("expert_feed_forward_length")
      ? m.uint("moe_intermediate_size", "expert_feed_forward_length")
      : m.dim("moe_intermediate_size", "blk.0.ffn_gate_exps.weight", 1);
    const shared = m.has("expert_shared_feed_forward_length")
      ? m.uint("shared_expert_intermediate_size", "expert_shared_feed_forward_length")
      : m.dim("shared_expert_intermediate_size", "blk.0.ffn_gate_shexp.weight", 1);
    return {
      num_experts: m.uint("num_experts", "expert_count"),
      moe_intermediate_size: inter,
      shared_expert_intermediate_size: shared,
      intermediate_size: m.uint("intermediate_size", "feed_forward_length", inter),
      qkv_bias: m.file.hasTensor("blk.0.attn_q.bias"),
      mlp_only_layers: [],
      decoder_sparse_step: 1,
    };
  },
  metadata(cfg: ModelConfig): Record<string, GgufValueToWrite> {
    allMoeLayers(cfg, "qwen2moe");
    const f = firstMoe(cfg);
    if (!f.sharedInter) {
      throw new ConfigError(
        "qwen2_moe without a shared expert cannot be written for llama.cpp",
        "llama.cpp's qwen2moe graph needs shared_expert_intermediate_size > 0",
      );
    }
    return {
      feed_forward_length: v.u32(rawIntermediate(cfg, f.inter)),
      expert_feed_forward_length: v.u32(f.inter),
      expert_shared_feed_forward_length: v.u32(f.sharedInter),
    };
  },
};

// ---- make-model

function hfConfig(d: ModelDims, style: ConfigStyle): Record<string, unknown> {
  return {
    decoder_sparse_step: d.sparseStep,
    intermediate_size: d.denseInter,
    ...(style === "hf5"
      ? { layer_types: Array.from({ length: d.layers }, () => "full_attention") }
      : {}),
    max_window_layers: 28,
    mlp_only_layers: [...d.mlpOnlyLayers],
    moe_intermediate_size: d.inter,
    norm_topk_prob: d.normTopK,
    num_experts: d.experts,
    qkv_bias: true,
    shared_expert_intermediate_size: d.sharedInter,
    sliding_window: 0,
    use_sliding_window: false,
  };
}

// deno-fmt-ignore
const presets = {
  tiny: {
    description:
      "tiny Qwen2-MoE: 4 layers (sparse step 2: 0 and 2 dense), shared expert, qkv bias, 8 experts top-2",
    dims: presetDims({
      hidden: 64, layers: 4, heads: 4, kvHeads: 2, inter: 80, denseInter: 96, sharedInter: 128,
      experts: 8, topK: 2, vocab: 256, sparseStep: 2, normTopK: false, tieEmbeddings: false,
      ropeTheta: 5e4, rmsEps: 1e-6, maxPositions: 256,
    }),
    style: "hf5",
    tokens: TINY_TOKENS,
  },
  "qwen1.5-moe-a2.7b": {
    description:
      "Qwen1.5-MoE-A2.7B: 24 layers, hidden 2048, 60 experts of 1408 top-4 + shared 5632 (14.3B params)",
    dims: presetDims({
      hidden: 2048, layers: 24, heads: 16, kvHeads: 16, inter: 1408, denseInter: 5632,
      sharedInter: 5632, experts: 60, topK: 4, vocab: 151936, normTopK: false,
      tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-6, maxPositions: 8192,
    }),
    style: "hf5",
    tokens: { bos: 151643, eos: 151643, pad: null },
    extra: { max_window_layers: 21 },
  },
} as const;

/** Qwen2-MoE (see the module documentation). */
export const qwen2Moe = defineArch({
  name: "qwen2_moe",
  description: "Qwen2-MoE / Qwen1.5-MoE: q/k/v biases, a shared expert, optional dense layers",
  parseConfig,
  names,
  tensors: (cfg) => decoderTensors(cfg, names),
  buildForward,
  gguf,
  make: {
    hfClass: "Qwen2MoeForCausalLM",
    presets,
    dims: {
      headDim: "derived",
      denseLayers: true,
      sharedExpert: true,
      clipQkv: false,
      alwaysRenormalizes: false,
    },
    hfConfig,
  },
});
