/**
 * Checkpoint tensor names for any configuration, answered by its architecture's file through the
 * registry (`arch/mod.ts`): {@linkcode modelNames} and {@linkcode layerNames} name each tensor of a
 * model and a layer, {@linkcode pregateName} the optional trained pre-gate, and
 * {@linkcode expectedTensors} lists every tensor a configuration needs with its shape and role. The
 * types and the shared naming helpers live in `tensor_names.ts`.
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
import { archOf } from "./arch/mod.ts";
import type { ModelConfig } from "./model_config.ts";
import type { ExpectedTensor, LayerNames, ModelNames } from "./tensor_names.ts";

export type {
  ExpectedTensor,
  LayerNames,
  MlpNames,
  ModelNames,
  Projection,
  TensorRole,
} from "./tensor_names.ts";

/**
 * Model-level tensor names.
 *
 * @example
 * ```ts
 * import { modelNames } from "./names.ts";
 * import { loadConfig } from "./config.ts";
 * console.log(modelNames(await loadConfig("tests/fixtures/hf/qwen3_moe")).lmHead); // model.embed_tokens.weight
 * ```
 */
export function modelNames(cfg: ModelConfig): ModelNames {
  return archOf(cfg).names.model(cfg);
}

/**
 * Tensor names of decoder layer `i`.
 *
 * @example
 * ```ts
 * import { layerNames } from "./names.ts";
 * import { loadConfig } from "./config.ts";
 * console.log(layerNames(await loadConfig("tests/fixtures/hf/olmoe"), 1).qkNorm?.q); // model.layers.1.self_attn.q_norm.weight
 * ```
 */
export function layerNames(cfg: ModelConfig, i: number): LayerNames {
  return archOf(cfg).names.layer(cfg, i);
}

/**
 * The optional trained pre-gate of MoE layer `i`: `[experts of the next MoE layer, hidden]`, applied
 * to layer `i`'s normalised feed-forward input to choose the next MoE layer's experts (Pre-gated
 * MoE). Stock checkpoints have none; Pregate then uses the next layer's own router instead.
 * Names: `model.layers.{i}.block_sparse_moe.pregate.weight` (Mixtral) or
 * `model.layers.{i}.mlp.pregate.weight` (the others).
 *
 * @example
 * ```ts
 * import { pregateName } from "./names.ts";
 * import { loadConfig } from "./config.ts";
 * console.log(pregateName(await loadConfig("tests/fixtures/hf/mixtral"), 0)); // model.layers.0.block_sparse_moe.pregate.weight
 * ```
 */
export function pregateName(cfg: ModelConfig, i: number): string {
  return archOf(cfg).names.pregate(cfg, i);
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
  return archOf(cfg).tensors(cfg);
}

/**
 * The names of the trained pre-gates the model of `cfg` would use when its checkpoint holds them:
 * one per MoE layer that has a next MoE layer in its stack ({@linkcode pregateName}). They are
 * optional, so {@linkcode expectedTensors} leaves them out; a checkpoint holding them still uses them.
 *
 * @example
 * ```ts
 * import { pregateNames } from "./names.ts";
 * import { loadConfig } from "./config.ts";
 * const names = pregateNames(await loadConfig("tests/fixtures/hf/qwen3_moe"));
 * console.log(names[0]); // model.layers.0.mlp.pregate.weight
 * ```
 */
export function pregateNames(cfg: ModelConfig): string[] {
  const out: string[] = [];
  for (let i = 0; i < cfg.layers.length; i++) {
    if (cfg.layers[i].ffn.kind !== "moe") continue;
    const stack = cfg.stacks?.find((s) => i >= s.first && i < s.first + s.count);
    const end = stack ? stack.first + stack.count : cfg.layers.length;
    let hasNext = false;
    for (let j = i + 1; j < end && !hasNext; j++) hasNext = cfg.layers[j].ffn.kind === "moe";
    if (hasNext) out.push(pregateName(cfg, i));
  }
  return out;
}
