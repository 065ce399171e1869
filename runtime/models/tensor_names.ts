/**
 * Checkpoint tensor names and the tensors a model needs. Each architecture file names its tensors
 * (Hugging Face hub format, as `save_pretrained` of transformers 4.x and 5.x writes them) with the
 * types and helpers here: {@linkcode ModelNames}, {@linkcode LayerNames} (built with
 * {@linkcode attentionNames} and {@linkcode mlpNames}), and {@linkcode decoderTensors} lists every
 * tensor a Llama-style decoder needs with its shape and role. `names.ts` answers these questions for
 * any configuration through the architecture registry.
 *
 * @example
 * ```ts
 * import { attentionNames, mlpNames } from "./tensor_names.ts";
 * console.log(attentionNames(0, { bias: false, qkNorm: false }).q); // model.layers.0.self_attn.q_proj.weight
 * console.log(mlpNames("model.layers.0.mlp").down); // model.layers.0.mlp.down_proj.weight
 * ```
 * @module
 */
import type { ModelConfig } from "./model_config.ts";

/**
 * The projections of one MLP (an expert, a dense MLP or a shared expert): SwiGLU's gate, up and
 * down, or a ReLU MLP's `wi` (as `gate`) and `wo` (as `down`).
 */
export interface MlpNames {
  /** Gate projection [inter, hidden] (a ReLU MLP's input projection `wi`). */
  gate: string;
  /** Up projection [inter, hidden] (absent in a ReLU MLP). */
  up?: string;
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
      /** Router bias [experts] (Switch with `router_bias`). */
      routerBias?: string;
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

/**
 * How an architecture names its tensors: the model-level ones, decoder layer `i`'s, and the optional
 * trained pre-gate of MoE layer `i` (`[experts of the next MoE layer, hidden]`, applied to layer
 * `i`'s normalised feed-forward input to choose the next MoE layer's experts; stock checkpoints have
 * none and Pregate then uses the next layer's own router).
 */
export interface TensorNaming {
  model(cfg: ModelConfig): ModelNames;
  layer(cfg: ModelConfig, i: number): LayerNames;
  pregate(cfg: ModelConfig, i: number): string;
}

/**
 * The model-level names every HF decoder here uses (`model.embed_tokens`, `model.norm`, `lm_head`,
 * or the embedding when tied).
 *
 * @example
 * ```ts
 * import { decoderModelNames } from "./tensor_names.ts";
 * console.log(decoderModelNames({ tieEmbeddings: true }).lmHead); // model.embed_tokens.weight
 * ```
 */
export function decoderModelNames(cfg: Pick<ModelConfig, "tieEmbeddings">): ModelNames {
  return {
    embed: "model.embed_tokens.weight",
    finalNorm: "model.norm.weight",
    lmHead: cfg.tieEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight",
  };
}

/**
 * The trained pre-gate of decoder layer `i` when its MLP lives under `model.layers.{i}.mlp`
 * (Qwen2-MoE, Qwen3-MoE, OLMoE): `[experts of the next MoE layer, hidden]`.
 *
 * @example
 * ```ts
 * import { decoderPregateName } from "./tensor_names.ts";
 * console.log(decoderPregateName(undefined, 3)); // model.layers.3.mlp.pregate.weight
 * ```
 */
export function decoderPregateName(_cfg: unknown, i: number): string {
  return `model.layers.${i}.mlp.pregate.weight`;
}

/**
 * The projections of a SwiGLU MLP under `base`: `<base>.<gate>.weight`, ... (HF's `gate_proj`,
 * `up_proj`, `down_proj` unless given; Mixtral's experts use `w1`, `w3`, `w2`).
 *
 * @example
 * ```ts
 * import { mlpNames } from "./tensor_names.ts";
 * console.log(mlpNames("e.0", ["w1", "w3", "w2"]).up); // e.0.w3.weight
 * ```
 */
export function mlpNames(
  base: string,
  [gate, up, down]: readonly [string, string, string] = ["gate_proj", "up_proj", "down_proj"],
): MlpNames {
  return {
    gate: `${base}.${gate}.weight`,
    up: `${base}.${up}.weight`,
    down: `${base}.${down}.weight`,
  };
}

/**
 * The norms and attention tensors of decoder layer `i` (`model.layers.{i}.input_layernorm`,
 * `self_attn.{q,k,v,o}_proj`, `post_attention_layernorm`), with the q/k/v biases and the q/k norms
 * when asked.
 *
 * @example
 * ```ts
 * import { attentionNames } from "./tensor_names.ts";
 * const n = attentionNames(3, { bias: true, qkNorm: true });
 * console.log(n.bias?.v, n.qkNorm?.k); // model.layers.3.self_attn.v_proj.bias model.layers.3.self_attn.k_norm.weight
 * ```
 */
export function attentionNames(
  i: number,
  has: { bias: boolean; qkNorm: boolean },
): Omit<LayerNames, "ffn"> {
  const p = `model.layers.${i}`;
  const a = `${p}.self_attn`;
  return {
    inputNorm: `${p}.input_layernorm.weight`,
    postNorm: `${p}.post_attention_layernorm.weight`,
    q: `${a}.q_proj.weight`,
    k: `${a}.k_proj.weight`,
    v: `${a}.v_proj.weight`,
    o: `${a}.o_proj.weight`,
    bias: has.bias
      ? { q: `${a}.q_proj.bias`, k: `${a}.k_proj.bias`, v: `${a}.v_proj.bias` }
      : undefined,
    qkNorm: has.qkNorm ? { q: `${a}.q_norm.weight`, k: `${a}.k_norm.weight` } : undefined,
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
  | "expert"
  | "relative_bias";

/**
 * One tensor a configuration needs.
 *
 * @example
 * ```ts
 * import type { ExpectedTensor } from "./tensor_names.ts";
 * const t: ExpectedTensor = {
 *   name: "model.norm.weight", shape: [64], role: "norm", layer: null, expert: null,
 *   projection: null,
 * };
 * console.log(t.shape);
 * ```
 */
export interface ExpectedTensor {
  /** The checkpoint name. */
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
    ...(n.up
      ? [{ name: n.up, shape: [inter, hidden], role, layer, expert, projection: "up" } as const]
      : []),
    { name: n.down, shape: [hidden, inter], role, layer, expert, projection: "down" },
  ];
}

/**
 * Every tensor the Llama-style decoder described by `cfg` and named by `names` needs, each once (a
 * tied LM head is the embedding), in Hugging Face `state_dict` order with each layer's routed
 * experts last and each expert's gate, up and down projections together: the embedding; per layer
 * the input norm, q/k/v (+ biases), o, q/k norms, the post-attention norm, then the dense MLP, or
 * the router, shared expert and experts 0..E-1; the final norm; the LM head.
 *
 * @example
 * ```ts ignore
 * const tensors = decoderTensors(cfg, olmoe.names);
 * console.log(tensors.filter((t) => t.role === "expert").length);
 * ```
 */
export function decoderTensors(cfg: ModelConfig, names: TensorNaming): ExpectedTensor[] {
  const h = cfg.hidden;
  const qDim = cfg.heads * cfg.headDim;
  const kvDim = cfg.kvHeads * cfg.headDim;
  const m = names.model(cfg);
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
    const n = names.layer(cfg, i);
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
      if (nf.routerBias) out.push(t(nf.routerBias, [ffn.experts], "router"));
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
