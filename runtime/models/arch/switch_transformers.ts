/**
 * Switch Transformers (HF `model_type` `switch_transformers`,
 * `SwitchTransformersForConditionalGeneration`; the Pre-gated MoE paper's model): a T5
 * encoder-decoder whose every other feed-forward block (`sparse_step`) is a mixture of ReLU experts
 * with a top-1 router. Its config.json, names and tensors are read by `switch_config.ts`; this file
 * maps them onto Pregate's one list of layers (the encoder's, then the decoder's: `stacks`), uploads
 * the weights the decoder blocks do not have (cross-attention, relative position bias tables, the
 * encoder's final norm: `t5_blocks.ts`) and builds both passes:
 *
 * - the encoder, once per input over all its tokens: embedding; per layer T5 norm, self-attention
 *   (bidirectional, relative bias, no 1/sqrt(d)), ReLU feed-forward or experts; then its final norm
 *   and every decoder layer's cross-attention keys and values;
 * - the decoder, per token: embedding; per layer self-attention (causal, relative bias),
 *   cross-attention over the encoder's tokens, feed-forward or experts; final norm, LM head.
 *
 * Every MoE layer of both stacks is the shared MoE block (`DecoderBlocks.moeFfn`: route, pre-gate,
 * experts, rounds), so every expert mode runs on both stacks; pre-gating chains the MoE layers of a
 * stack and stops at its end (the decoder's first MoE layer routes itself, as the paper's first
 * block does: the encoder's tokens are not the decoder's).
 *
 * Quirks: no 1/sqrt(d) attention scale; the relative position bias comes from the first layer of
 * each stack (shared by all its layers, as T5 and the Switch checkpoints were trained; transformers
 * 5 applies it to the first layer only, which `positionBias: "first_layer_only"` reproduces); a
 * tied LM head sees the decoder's output scaled by `d_model^-0.5`.
 *
 * @example
 * ```ts
 * // Through the registry: it and the architecture files import each other, so import it first.
 * import { archNamed } from "./mod.ts";
 * import { SWITCH_PRESETS, switchConfigJson } from "./switch_presets.ts";
 * const switchTransformers = archNamed("switch_transformers");
 * const cfg = switchTransformers.parseConfig(switchConfigJson(SWITCH_PRESETS["switch-tiny"]), "config.json");
 * console.log(cfg.stacks, cfg.layers.map((l) => l.ffn.kind));
 * ```
 * @module
 */
import type { Gpu } from "../../base/gpu/device.ts";
import { ConfigError } from "../../base/errors.ts";
import { relativeBiasTable } from "../../../kernels/relative_bias.ts";
import { defineArch } from "../architecture.ts";
import { DecoderBlocks } from "../blocks.ts";
import type { ModelWeights } from "../gpu_weights.ts";
import type { DenseFfn, Json, ModelConfig, MoeFfn } from "../model_config.ts";
import { type ConfigStyle, type ModelDims, presetDims } from "../model_dims.ts";
import type { ForwardOptions, ForwardPlan, LayerPlan } from "../plan.ts";
import { plainJson, PyFloat, pyJson } from "../py_json.ts";
import type { RunState } from "../state.ts";
import { allocT5State, stackOf, T5Blocks, type T5State, type T5Weights } from "../t5_blocks.ts";
import type { ExpectedTensor, LayerNames, Projection, TensorRole } from "../tensor_names.ts";
import type { UploadOptions, WeightUpload } from "../weight_upload.ts";
import type { LayerWeights } from "../gpu_weights.ts";
import type { TensorStore } from "../../weights/safetensors.ts";
import type { DType } from "../../base/dtype.ts";
import {
  parseSwitchConfig,
  pickSwitchEmbedding,
  type SwitchConfig,
  type SwitchLayerNames,
  switchNames,
  switchTensors,
} from "./switch_config.ts";
import { SWITCH_PRESETS, switchConfigJson, type SwitchDims } from "./switch_presets.ts";

/** A Switch model's {@linkcode ModelConfig}, with its own parsed config. */
export interface SwitchModelConfig extends ModelConfig {
  readonly switch: SwitchConfig;
}

function switchOf(cfg: ModelConfig): SwitchConfig {
  const sc = (cfg as Partial<SwitchModelConfig>).switch;
  if (!sc) throw new ConfigError(`${cfg.arch}: not a Switch Transformers config`);
  return sc;
}

// ---- config.json

function parseConfig(raw: Json, where: string): ModelConfig {
  const sc = parseSwitchConfig(raw, where);
  const dense: DenseFfn = { kind: "dense", inter: sc.dFf, act: "relu" };
  const moe: MoeFfn = {
    kind: "moe",
    experts: sc.experts,
    topK: 1, // Switch routing is top-1: the chosen expert's output times its softmax probability
    inter: sc.dFf,
    renormalize: false,
    sharedInter: 0,
    act: "relu",
  };
  const ffn = (sparse: boolean) => Object.freeze({ ffn: sparse ? moe : dense });
  const cfg: SwitchModelConfig = {
    arch: "switch_transformers",
    vocabSize: sc.vocabSize,
    hidden: sc.dModel,
    layers: Object.freeze([...sc.encoder.sparse.map(ffn), ...sc.decoder.sparse.map(ffn)]),
    heads: sc.heads,
    kvHeads: sc.heads,
    headDim: sc.dKv,
    rotaryDim: 0, // no rotary embeddings: relative position bias
    ropeTheta: 0,
    rmsEps: sc.eps,
    qkvBias: false,
    qkNorm: "none",
    clipQkv: 0,
    tieEmbeddings: sc.tieEmbeddings,
    maxPositions: Number.MAX_SAFE_INTEGER, // relative positions: no trained maximum
    stacks: Object.freeze(
      [
        { name: "encoder", first: 0, count: sc.encoder.layers },
        { name: "decoder", first: sc.encoder.layers, count: sc.decoder.layers },
      ] as const,
    ),
    raw: sc.raw,
    switch: sc,
  };
  return Object.freeze(cfg);
}

// ---- tensor names (model layers: the encoder's, then the decoder's)

function stackLayer(cfg: ModelConfig, i: number): SwitchLayerNames {
  const stack = stackOf(cfg, i);
  return switchNames(switchOf(cfg))[stack.name][i - stack.first];
}

function layerNames(cfg: ModelConfig, i: number): LayerNames {
  const l = stackLayer(cfg, i), f = l.ffn;
  return {
    inputNorm: l.selfNorm,
    postNorm: f.norm,
    ...l.self,
    // Quirk: ReLU MLPs (wi, wo) held where a SwiGLU MLP's gate and down are; no up.
    ffn: f.kind === "dense" ? { kind: "dense", gate: f.wi, down: f.wo } : {
      kind: "moe",
      router: f.router,
      routerBias: f.routerBias,
      expert: (e) => ({ gate: f.expert(e).wi, down: f.expert(e).wo }),
    },
  };
}

const names = {
  model: (cfg: ModelConfig) => {
    const n = switchNames(switchOf(cfg));
    const embed = n.embedCandidates[0];
    return { embed, finalNorm: n.decoderFinalNorm, lmHead: n.lmHead ?? embed };
  },
  layer: layerNames,
  pregate: (cfg: ModelConfig, i: number) => {
    const f = stackLayer(cfg, i).ffn;
    return (f.kind === "moe" ? f.router : f.wi).replace(
      /(router\.classifier|wi)\.weight$/,
      "pregate.weight",
    );
  },
};

const ROLES: Readonly<Record<string, TensorRole>> = {
  embedding: "embed",
  lm_head: "lm_head",
  norm: "norm",
  attention: "attn",
  relative_bias: "relative_bias",
  dense_ffn: "mlp",
  router: "router",
  expert: "expert",
};

function tensors(cfg: ModelConfig): ExpectedTensor[] {
  const sc = switchOf(cfg);
  return switchTensors(sc).map((t) => {
    const m = /^(encoder|decoder)\.block\.(\d+)\./.exec(t.name);
    const stack = m ? cfg.stacks!.find((s) => s.name === m[1])! : null;
    const proj = /\.(q|k|v|o|wi|wo)\.weight$/.exec(t.name)?.[1];
    const projection: Projection | null = proj === "wi"
      ? "gate"
      : proj === "wo"
      ? "down"
      : (proj as Projection | undefined) ?? null;
    return {
      name: t.name,
      shape: t.shape,
      role: ROLES[t.role],
      layer: stack ? stack.first + Number(m![2]) : null,
      expert: t.expert?.expert ?? null,
      projection: t.role === "router" ? null : projection,
    };
  });
}

// ---- weights and state

function uploadWeights(
  up: WeightUpload,
  cfg: ModelConfig,
  store: TensorStore,
  opts: UploadOptions,
  uploadLayer: (i: number) => LayerWeights,
): T5Weights {
  const sc = switchOf(cfg), n = switchNames(sc);
  const H = cfg.hidden, V = cfg.vocabSize, Q = cfg.heads * cfg.headDim;
  const embed = up.matrix(
    pickSwitchEmbedding(n, (t) => store.has(t)) ?? n.embedCandidates[0],
    V,
    H,
  );
  const lmHead = n.lmHead ? up.matrix(n.lmHead, V, H) : embed;
  // Quirk: T5 scales the decoder's output by d_model^-0.5 before a tied LM head (headScale); the
  // factor is folded into the final norm's weight.
  const finalNorm = up.vector(n.decoderFinalNorm, H, {
    derive: (w) => w.map((x) => x * sc.headScale),
  });
  const layers = cfg.layers.map((_, i) => uploadLayer(i));
  const width = 2 * sc.relMaxDistance + 1;
  const table = (stack: "encoder" | "decoder") =>
    up.vector(n[stack][0].relBias!, sc.heads * width, {
      shapes: [[sc.relBuckets, sc.heads]],
      derive: (w) =>
        relativeBiasTable(w, {
          heads: sc.heads,
          buckets: sc.relBuckets,
          maxDistance: sc.relMaxDistance,
          bidirectional: stack === "encoder",
        }),
    });
  const tables = { encoder: table("encoder"), decoder: table("decoder") };
  const shared = (opts.positionBias ?? "shared") === "shared";
  const weights: T5Weights = {
    embed,
    lmHead,
    finalNorm,
    layers,
    encoderFinalNorm: up.vector(n.encoderFinalNorm, H),
    // Quirk: the first layer's bias table serves every layer of its stack.
    relativeBias: cfg.layers.map((_, i) => {
      const s = stackOf(cfg, i);
      return shared || i === s.first ? tables[s.name] : null;
    }),
    relMaxDistance: sc.relMaxDistance,
    cross: cfg.layers.map((_, i) => {
      const l = stackLayer(cfg, i);
      if (!l.cross || !l.crossNorm) return null;
      return {
        norm: up.vector(l.crossNorm, H),
        q: up.matrix(l.cross.q, Q, H),
        k: up.matrix(l.cross.k, Q, H),
        v: up.matrix(l.cross.v, Q, H),
        o: up.matrix(l.cross.o, H, Q),
      };
    }),
  };
  up.run(opts.onProgress);
  return weights;
}

function t5(gpu: Gpu, cfg: ModelConfig, w: ModelWeights, s: RunState, opts: ForwardOptions) {
  if (!("cross" in w) || !("crossK" in s)) {
    throw new ConfigError(
      `${cfg.arch}: weights or run state not made by its encoderDecoder hooks`,
      "load the model with loadModel (runtime/model.ts)",
    );
  }
  return new T5Blocks(gpu, cfg, w as T5Weights, s as T5State, opts);
}

// ---- forward

/** Layer `i`'s feed-forward block: x += ffn(rmsnorm(x)), ReLU MLP or top-1 ReLU experts. */
function ffn(b: DecoderBlocks, cfg: ModelConfig, i: number): Promise<LayerPlan["ffn"]> {
  return cfg.layers[i].ffn.kind === "moe" ? b.moeFfn(i) : b.denseFfn(i);
}

async function buildEncoder(
  gpu: Gpu,
  cfg: ModelConfig,
  w: ModelWeights,
  s: RunState,
  opts: ForwardOptions,
): Promise<ForwardPlan> {
  const b = new DecoderBlocks(gpu, cfg, w, s, opts), t = t5(gpu, cfg, w, s, opts);
  const stack = cfg.stacks![0];
  const embed = await b.embed(); // x = embed(encoder ids), not scaled
  const layers: LayerPlan[] = [];
  for (let i = stack.first; i < stack.first + stack.count; i++) {
    const attention = [
      await b.attentionNorm(i), // h = rmsnorm(x) (T5 layer norm: no mean, no bias)
      ...await b.qkv(i), // q, k, v = h Wq, h Wk, h Wv (no rotary embedding)
      ...await t.selfAttention(i, false), // x += o(attention(q, k, v) + relative bias), bidirectional
    ];
    layers.push({ attention, ffn: await ffn(b, cfg, i) }); // x += wo relu(wi rmsnorm(x)) or experts
  }
  // h = rmsnorm(x) (the encoder's output); each decoder layer's cross keys and values from it
  const head = await t.crossKeysValues();
  return { T: opts.T, firstLayer: stack.first, embed, layers, head };
}

async function buildForward(
  gpu: Gpu,
  cfg: ModelConfig,
  w: ModelWeights,
  s: RunState,
  opts: ForwardOptions,
): Promise<ForwardPlan> {
  const b = new DecoderBlocks(gpu, cfg, w, s, opts), t = t5(gpu, cfg, w, s, opts);
  const stack = cfg.stacks![1];
  const embed = await b.embed(); // x = embed(decoder ids)
  const layers: LayerPlan[] = [];
  for (let i = stack.first; i < stack.first + stack.count; i++) {
    const attention = [
      await b.attentionNorm(i), // h = rmsnorm(x)
      ...await b.qkv(i), // q, k, v = h Wq, h Wk, h Wv
      ...await t.selfAttention(i, true), // x += o(attention(q, k, v) + relative bias), causal
      ...await t.crossAttention(i), // x += o(attention(q(rmsnorm(x)), K_enc, V_enc))
    ];
    layers.push({ attention, ffn: await ffn(b, cfg, i) });
  }
  const head = await b.head(); // logits = lm_head(rmsnorm(x) * d_model^-0.5 when tied)
  return { T: opts.T, firstLayer: stack.first, embed, layers, head };
}

// ---- make-model

/** The Switch dimensions of make-model's dimensions `d` from preset `name`. */
function switchDims(d: ModelDims, name: string): SwitchDims {
  const base =
    (SWITCH_PRESETS[name === "tiny" ? "switch-tiny" : name] ?? SWITCH_PRESETS["switch-tiny"]).dims;
  // A changed layer count gives both stacks that many layers, every other one sparse.
  const layers = d.layers === base.encoderLayers ? base : {
    encoderLayers: d.layers,
    decoderLayers: d.layers,
    sparseEncoderLayers: Math.floor(d.layers / 2),
    sparseDecoderLayers: Math.floor(d.layers / 2),
  };
  return {
    ...base,
    ...layers,
    dModel: d.hidden,
    dFf: d.inter,
    dKv: d.headDim ?? d.hidden / d.heads,
    heads: d.heads,
    experts: d.experts,
    vocab: d.vocab,
    tieEmbeddings: d.tieEmbeddings,
  };
}

const FLOAT_KEYS = [
  "layer_norm_epsilon",
  "dropout_rate",
  "router_jitter_noise",
  "router_z_loss_coef",
  "router_aux_loss_coef",
  "initializer_factor",
];
const TORCH_DTYPE = { f32: "float32", f16: "float16", bf16: "bfloat16" } as const;

function configFiles(d: ModelDims, dtype: DType, preset: { name: string }) {
  const json: Record<string, unknown> = {
    ...switchConfigJson(
      { name: preset.name, description: "", dims: switchDims(d, preset.name) },
      TORCH_DTYPE[dtype],
    ),
    transformers_version: "5.17.0",
  };
  for (const k of FLOAT_KEYS) json[k] = new PyFloat(json[k] as number);
  const generation = {
    _from_model_config: true,
    decoder_start_token_id: 0,
    eos_token_id: 1,
    pad_token_id: 0,
    transformers_version: "5.17.0",
  };
  return {
    configJson: plainJson(json) as Record<string, unknown>,
    configText: pyJson(json) + "\n",
    generationConfigText: pyJson(generation) + "\n",
  };
}

/** make-model's dimensions of a Switch preset (RoPE fields unused). */
function presetOf(p: SwitchDims, description: string) {
  return {
    description,
    dims: presetDims({
      hidden: p.dModel,
      layers: p.encoderLayers,
      heads: p.heads,
      kvHeads: p.heads,
      headDim: p.dKv,
      inter: p.dFf,
      experts: p.experts,
      topK: 1,
      vocab: p.vocab,
      sparseStep: 2,
      normTopK: false,
      tieEmbeddings: p.tieEmbeddings,
      ropeTheta: 1e4,
      rmsEps: 1e-6,
      maxPositions: 512,
    }),
    style: "hf5" as ConfigStyle,
    tokens: { bos: null, eos: 1, pad: 0 },
  };
}

/**
 * Scales (gains on `fan_in^-0.5`) that keep a random Switch model's activations, routing and logits
 * O(1) and its greedy tokens varied: the embedding N(0, 1) (T5's; the tied head's d_model^-0.5
 * makes its logits O(1)), attention and feed-forward layers strong enough that the decoder neither
 * copies its input token nor repeats one answer (found by trying gains on switch-tiny); the router
 * 1 at d_model 32 (the HF fixture's); norms as make-model's.
 */
function init(t: ExpectedTensor, _cfg: ModelConfig): { mean: number; std: number } | undefined {
  const fan = (gain: number) => ({ mean: 0, std: gain * t.shape[t.shape.length - 1] ** -0.5 });
  switch (t.role) {
    case "embed":
    case "lm_head":
      return { mean: 0, std: 1 };
    case "relative_bias":
      return { mean: 0, std: 1 };
    case "attn":
      return fan(2);
    case "router":
      return fan(5.66); // 1 at d_model 32
    case "mlp":
    case "expert":
      return fan(3);
    default:
      return undefined;
  }
}

const presets = Object.fromEntries(
  Object.values(SWITCH_PRESETS).map((p) => [
    p.name === "switch-tiny" ? "tiny" : p.name,
    presetOf(p.dims, p.description),
  ]),
);

/** Switch Transformers (see the module documentation). */
export const switchTransformers = defineArch({
  name: "switch_transformers",
  description: "Switch Transformers: T5 encoder-decoder, top-1 ReLU experts in every other layer",
  parseConfig,
  names,
  tensors,
  buildForward,
  make: {
    hfClass: "SwitchTransformersForConditionalGeneration",
    presets,
    dims: {
      headDim: "stored",
      denseLayers: true,
      sharedExpert: false,
      clipQkv: false,
      alwaysRenormalizes: false,
    },
    hfConfig: () => ({}),
    configFiles,
    init,
  },
  encoderDecoder: {
    uploadWeights,
    allocState: allocT5State,
    buildEncoder,
    generation: (cfg) => {
      const sc = switchOf(cfg);
      return { start: sc.decoderStartTokenId, eos: sc.eosTokenIds };
    },
  },
});
