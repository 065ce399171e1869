/**
 * The one place that maps checkpoint tensor names (Hugging Face hub format, as written by
 * `save_pretrained` of transformers 4.x and 5.x) to the roles Pregate uses.
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
