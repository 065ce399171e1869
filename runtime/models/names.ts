/**
 * The one place that maps checkpoint tensor names (Hugging Face hub format, as written by
 * `save_pretrained` of transformers 4.x and 5.x) to the roles Pregate uses: {@linkcode modelNames}
 * and {@linkcode layerNames} name each tensor of a model and a layer, and
 * {@linkcode expectedTensors} lists every tensor a configuration needs with its shape and role.
 *
 * @example
 * ```ts
 * import { layerNames } from "./names.ts";
 * import { parseConfig } from "./config.ts";
 * const cfg = parseConfig({ model_type: "mixtral", vocab_size: 8, hidden_size: 8,
 *   intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 2,
 *   num_experts_per_tok: 1 });
 * const n = layerNames(cfg, 0);
 * console.log(n.ffn.kind === "moe" ? n.ffn.expert(3).gate : ""); // model.layers.0.block_sparse_moe.experts.3.w1.weight
 * ```
 * @module
 */
import type { ModelConfig } from "./config.ts";

/** The projections of one SwiGLU MLP (an expert, a dense MLP or a shared expert). */
export interface MlpNames {
  /** Gate projection [inter, hidden]. */
  gate: string;
  /** Up projection [inter, hidden]. */
  up: string;
  /** Down projection [hidden, inter]. */
  down: string;
}

/** The tensors of one decoder layer. */
export interface LayerNames {
  inputNorm: string;
  postNorm: string;
  q: string;
  k: string;
  v: string;
  o: string;
  /** q/k/v biases (Qwen2-MoE). */
  bias?: { q: string; k: string; v: string };
  /** q/k norms (Qwen3: per head; OLMoE: whole projection). */
  qkNorm?: { q: string; k: string };
  ffn:
    | ({ kind: "dense" } & MlpNames)
    | {
      kind: "moe";
      /** Router [experts, hidden]. */
      router: string;
      /** The projections of expert `e`. */
      expert(e: number): MlpNames;
      /** Qwen2-MoE's shared expert and its sigmoid gate [1, hidden]. */
      shared?: MlpNames & { gateWeight: string };
    };
}

/** Names of the model-level tensors. */
export interface ModelNames {
  embed: string;
  finalNorm: string;
  /** The LM head, or the embedding when tied. */
  lmHead: string;
}

/** Model-level tensor names. */
export function modelNames(cfg: ModelConfig): ModelNames {
  return {
    embed: "model.embed_tokens.weight",
    finalNorm: "model.norm.weight",
    lmHead: cfg.tieEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight",
  };
}

/**
 * The optional trained pre-gate of MoE layer `i`: `[experts of the next MoE layer, hidden]`, applied
 * to layer `i`'s normalised feed-forward input to choose the next MoE layer's experts (Pre-gated
 * MoE). Stock checkpoints have none; Pregate then uses the next layer's own router instead.
 * Names: `model.layers.{i}.block_sparse_moe.pregate.weight` (Mixtral) or
 * `model.layers.{i}.mlp.pregate.weight` (the others).
 */
export function pregateName(cfg: ModelConfig, i: number): string {
  return `model.layers.${i}.${cfg.arch === "mixtral" ? "block_sparse_moe" : "mlp"}.pregate.weight`;
}

/** Tensor names of decoder layer `i`. */
export function layerNames(cfg: ModelConfig, i: number): LayerNames {
  const p = `model.layers.${i}`;
  const a = `${p}.self_attn`;
  const ffnCfg = cfg.layers[i].ffn;
  const mlp = (base: string, w1 = "gate_proj", w3 = "up_proj", w2 = "down_proj"): MlpNames => ({
    gate: `${base}.${w1}.weight`,
    up: `${base}.${w3}.weight`,
    down: `${base}.${w2}.weight`,
  });
  let ffn: LayerNames["ffn"];
  if (ffnCfg.kind === "dense") {
    ffn = { kind: "dense", ...mlp(`${p}.mlp`) };
  } else if (cfg.arch === "mixtral") {
    const m = `${p}.block_sparse_moe`;
    ffn = {
      kind: "moe",
      router: `${m}.gate.weight`,
      expert: (e) => mlp(`${m}.experts.${e}`, "w1", "w3", "w2"),
    };
  } else {
    const m = `${p}.mlp`;
    ffn = {
      kind: "moe",
      router: `${m}.gate.weight`,
      expert: (e) => mlp(`${m}.experts.${e}`),
      shared: ffnCfg.sharedInter > 0
        ? { ...mlp(`${m}.shared_expert`), gateWeight: `${m}.shared_expert_gate.weight` }
        : undefined,
    };
  }
  return {
    inputNorm: `${p}.input_layernorm.weight`,
    postNorm: `${p}.post_attention_layernorm.weight`,
    q: `${a}.q_proj.weight`,
    k: `${a}.k_proj.weight`,
    v: `${a}.v_proj.weight`,
    o: `${a}.o_proj.weight`,
    bias: cfg.qkvBias
      ? { q: `${a}.q_proj.bias`, k: `${a}.k_proj.bias`, v: `${a}.v_proj.bias` }
      : undefined,
    qkNorm: cfg.qkNorm === "none"
      ? undefined
      : { q: `${a}.q_norm.weight`, k: `${a}.k_norm.weight` },
    ffn,
  };
}

/**
 * What a tensor is for. `expert` is a routed expert's projection (the only streamed weights); every
 * other role is "dense" (always resident, used by every token).
 */
export type TensorRole =
  | "embed"
  | "lm_head"
  | "norm"
  | "attn"
  | "attn_bias"
  | "qk_norm"
  | "mlp"
  | "router"
  | "shared_expert"
  | "shared_gate"
  | "expert";

/**
 * One tensor a configuration needs.
 *
 * @example
 * ```ts
 * import type { ExpectedTensor } from "./names.ts";
 * const t: ExpectedTensor = {
 *   name: "model.norm.weight", shape: [64], role: "norm", layer: null, expert: null,
 *   projection: null,
 * };
 * console.log(t.shape);
 * ```
 */
export interface ExpectedTensor {
  /** The checkpoint name (from `names.ts`). */
  readonly name: string;
  /** The shape the model needs (`[out, in]` for matrices, as PyTorch stores `nn.Linear`). */
  readonly shape: readonly number[];
  /** What it is for. */
  readonly role: TensorRole;
  /** The decoder layer, or `null` for model-level tensors. */
  readonly layer: number | null;
  /** The routed expert, for role `expert`; otherwise `null`. */
  readonly expert: number | null;
  /** Which projection a matrix of a layer is (`o` and `down` write into the residual stream). */
  readonly projection: Projection | null;
}

/** The projection a layer matrix is: attention q, k, v, o, or an MLP's gate, up, down. */
export type Projection = "q" | "k" | "v" | "o" | "gate" | "up" | "down";

function mlpTensors(
  n: MlpNames,
  inter: number,
  hidden: number,
  role: TensorRole,
  layer: number,
  expert: number | null = null,
): ExpectedTensor[] {
  return [
    { name: n.gate, shape: [inter, hidden], role, layer, expert, projection: "gate" },
    { name: n.up, shape: [inter, hidden], role, layer, expert, projection: "up" },
    { name: n.down, shape: [hidden, inter], role, layer, expert, projection: "down" },
  ];
}

/**
 * Every tensor the model described by `cfg` needs, each once (a tied LM head is the embedding), in
 * Hugging Face `state_dict` order with each layer's routed experts last and each expert's gate, up
 * and down projections together: the embedding; per layer the input norm, q/k/v (+ biases), o,
 * q/k norms, the post-attention norm, then the dense MLP, or the router, shared expert and experts
 * 0..E-1; the final norm; the LM head.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * import { expectedTensors } from "./names.ts";
 * const cfg = parseConfig({
 *   model_type: "olmoe", vocab_size: 256, hidden_size: 64, intermediate_size: 80,
 *   num_hidden_layers: 2, num_attention_heads: 4, num_experts: 8, num_experts_per_tok: 2,
 * });
 * const ts = expectedTensors(cfg);
 * console.log(ts.length, ts.filter((t) => t.role === "expert").length); // 69 48
 * ```
 */
export function expectedTensors(cfg: ModelConfig): ExpectedTensor[] {
  const h = cfg.hidden;
  const qDim = cfg.heads * cfg.headDim;
  const kvDim = cfg.kvHeads * cfg.headDim;
  const m = modelNames(cfg);
  const out: ExpectedTensor[] = [
    {
      name: m.embed,
      shape: [cfg.vocabSize, h],
      role: "embed",
      layer: null,
      expert: null,
      projection: null,
    },
  ];
  for (let i = 0; i < cfg.layers.length; i++) {
    const n = layerNames(cfg, i);
    const t = (
      name: string,
      shape: number[],
      role: TensorRole,
      projection: Projection | null = null,
    ): ExpectedTensor => ({ name, shape, role, layer: i, expert: null, projection });
    out.push(t(n.inputNorm, [h], "norm"));
    out.push(t(n.q, [qDim, h], "attn", "q"));
    if (n.bias) out.push(t(n.bias.q, [qDim], "attn_bias"));
    out.push(t(n.k, [kvDim, h], "attn", "k"));
    if (n.bias) out.push(t(n.bias.k, [kvDim], "attn_bias"));
    out.push(t(n.v, [kvDim, h], "attn", "v"));
    if (n.bias) out.push(t(n.bias.v, [kvDim], "attn_bias"));
    out.push(t(n.o, [h, qDim], "attn", "o"));
    if (n.qkNorm) {
      const full = cfg.qkNorm === "full";
      out.push(t(n.qkNorm.q, [full ? qDim : cfg.headDim], "qk_norm"));
      out.push(t(n.qkNorm.k, [full ? kvDim : cfg.headDim], "qk_norm"));
    }
    out.push(t(n.postNorm, [h], "norm"));
    const ffn = cfg.layers[i].ffn;
    const nf = n.ffn;
    if (nf.kind === "dense") {
      out.push(...mlpTensors(nf, ffn.inter, h, "mlp", i));
    } else if (ffn.kind === "moe") {
      out.push(t(nf.router, [ffn.experts, h], "router"));
      if (nf.shared) {
        out.push(...mlpTensors(nf.shared, ffn.sharedInter, h, "shared_expert", i));
        out.push(t(nf.shared.gateWeight, [1, h], "shared_gate"));
      }
      for (let e = 0; e < ffn.experts; e++) {
        out.push(...mlpTensors(nf.expert(e), ffn.inter, h, "expert", i, e));
      }
    }
  }
  const model = { layer: null, expert: null, projection: null };
  out.push({ name: m.finalNorm, shape: [h], role: "norm", ...model });
  if (m.lmHead !== m.embed) {
    out.push({ name: m.lmHead, shape: [cfg.vocabSize, h], role: "lm_head", ...model });
  }
  return out;
}
