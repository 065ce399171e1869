/**
 * Parameter counts of a configuration, from the shapes of the tensors it needs
 * ({@linkcode expectedTensors}): total, dense, routed experts, embeddings, active per token.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * import { countParams } from "./param_counts.ts";
 * const p = countParams(parseConfig({
 *   model_type: "olmoe", vocab_size: 256, hidden_size: 64, intermediate_size: 80,
 *   num_hidden_layers: 2, num_attention_heads: 4, num_experts: 8, num_experts_per_tok: 2,
 * }));
 * console.log(p.perExpert); // 15360
 * ```
 * @module
 */
import type { ModelConfig } from "./config.ts";
import { expectedTensors } from "./names.ts";

/**
 * Parameter counts of a configuration (from its shapes alone): `total` (a tied embedding counted
 * once), `experts` (routed experts only), `dense` (everything else: embeddings, attention, norms,
 * routers, dense MLPs, shared experts), `embedding` (embedding + untied LM head, part of `dense`),
 * `activePerToken` (`dense` + `topK` routed experts per MoE layer, the usual "active parameters",
 * embeddings included) and `perExpert` (one expert's three projections in the first MoE layer; 0
 * without MoE layers).
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * import { countParams } from "./param_counts.ts";
 * const p = countParams(parseConfig({
 *   model_type: "mixtral", vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336,
 *   num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8,
 *   num_local_experts: 8, num_experts_per_tok: 2,
 * }));
 * console.log((p.total / 1e9).toFixed(1), (p.activePerToken / 1e9).toFixed(1)); // 46.7 12.9
 * ```
 */
export function countParams(cfg: ModelConfig): ParamCounts {
  let total = 0;
  let experts = 0;
  let embedding = 0;
  for (const t of expectedTensors(cfg)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    total += n;
    if (t.role === "expert") experts += n;
    if (t.role === "embed" || t.role === "lm_head") embedding += n;
  }
  let active = total - experts;
  let perExpert = 0;
  for (const l of cfg.layers) {
    if (l.ffn.kind !== "moe") continue;
    const one = (l.ffn.act === "relu" ? 2 : 3) * l.ffn.inter * cfg.hidden; // ReLU: wi, wo
    if (perExpert === 0) perExpert = one;
    active += l.ffn.topK * one;
  }
  return { total, dense: total - experts, experts, embedding, activePerToken: active, perExpert };
}

/**
 * Parameter counts; see {@linkcode countParams}.
 *
 * @example
 * ```ts
 * import type { ParamCounts } from "./param_counts.ts";
 * const p: ParamCounts = {
 *   total: 10, dense: 4, experts: 6, embedding: 2, activePerToken: 7, perExpert: 3,
 * };
 * console.log(p.total === p.dense + p.experts); // true
 * ```
 */
export interface ParamCounts {
  /** All parameters (a tied embedding once). */
  total: number;
  /** Everything but the routed experts. */
  dense: number;
  /** The routed experts. */
  experts: number;
  /** Embedding and untied LM head (included in `dense`). */
  embedding: number;
  /** `dense` plus `topK` experts in every MoE layer. */
  activePerToken: number;
  /** One routed expert (gate + up + down, or a ReLU expert's wi + wo) of the first MoE layer; 0 without MoE layers. */
  perExpert: number;
}
