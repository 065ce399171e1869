/**
 * The forward plan: the steps of one pass over T tokens, grouped per layer and split where routing
 * becomes known, as every architecture's builder produces it and every executor consumes it.
 *
 * @module
 */
import type { Step } from "../gpu/device.ts";
import type { MoeFfn } from "./model_config.ts";
import type { ExpertPool, GpuMatrix } from "./gpu_weights.ts";

/** The steps of one MoE feed-forward block, split where routing becomes known. */
export interface MoePlan {
  /** Post-attention norm, router logits and top-k (writes state.topIds / topWeights). */
  readonly route: Step[];
  /** The pre-gate: the next MoE layer's routing predicted from this layer's input (may be empty). */
  readonly pregate: Step[];
  /** Expert compute through the pool's slot table, shared expert, combine into the residual. */
  readonly experts: Step[];
  /**
   * For batches whose experts do not all fit the slots at once, the layer runs in rounds: `round`
   * once per set of resident experts (pairs of other experts are skipped), then `finish` (shared
   * expert and combine), which gives exactly what `experts` gives in one go.
   */
  readonly round: Step[];
  readonly finish: Step[];
  /** The layer's config. */
  readonly ffn: MoeFfn;
}

/** The plan of one decoder layer. */
export interface LayerPlan {
  /** Attention block, ending with the residual add. */
  readonly attention: Step[];
  /** Dense feed-forward block (one segment), or the MoE block's two segments. */
  readonly ffn: { readonly kind: "dense"; readonly steps: Step[] } | ({ kind: "moe" } & MoePlan);
}

/** A forward pass over T tokens. */
export interface ForwardPlan {
  readonly T: number;
  /** Embedding lookup of state.ids into state.x. */
  readonly embed: Step[];
  readonly layers: readonly LayerPlan[];
  /** Final norm and LM head into state.logits (all T rows, or the last row only). */
  readonly head: Step[];
}

/** Options of {@linkcode buildForward}. */
export interface ForwardOptions {
  /** Tokens in the pass (1 <= T <= state.maxT). */
  T: number;
  /** `all`: logits for every position (state.logitRows >= T); `last`: the last position only. */
  logits: "all" | "last";
  /**
   * The expert pool each MoE layer's kernels read (default: the layer's resident pool). The
   * offloading engine passes its slot pools here.
   */
  pool?: (layer: number) => ExpertPool;
  /**
   * Which routing a MoE layer's experts use (default: its own router's, state.topIds/topWeights).
   * Strict pre-gating passes the ids and weights its pre-gate predicted one block earlier.
   */
  routing?: (layer: number) => { ids: GPUBuffer; weights: GPUBuffer } | undefined;
  /**
   * The pre-gate computed at MoE layer `layer`: the router (or trained pre-gate) of the next MoE layer
   * applied to this layer's normalised input, writing its top-k into `ids` / `weights`.
   */
  pregate?: (layer: number) => PregateSpec | undefined;
}

/** Where and how a pre-gate runs (see {@linkcode ForwardOptions.pregate}). */
export interface PregateSpec {
  /** The pre-gate's weights [experts of the next MoE layer, hidden]. */
  readonly router: GpuMatrix;
  /** The next MoE layer's config (experts, topK, renormalize). */
  readonly next: MoeFfn;
  /** u32 [T, topK] and f32 [T, topK] outputs. */
  readonly ids: GPUBuffer;
  readonly weights: GPUBuffer;
  /** f32 [T, experts] scratch for the pre-gate's logits. */
  readonly logits: GPUBuffer;
}

/** All steps of a plan in execution order. */
export function flattenPlan(plan: ForwardPlan): Step[] {
  const out: Step[] = [...plan.embed];
  for (const l of plan.layers) {
    out.push(...l.attention);
    if (l.ffn.kind === "dense") out.push(...l.ffn.steps);
    else out.push(...l.ffn.route, ...l.ffn.pregate, ...l.ffn.experts);
  }
  out.push(...plan.head);
  return out;
}
