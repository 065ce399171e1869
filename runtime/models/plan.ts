/**
 * The forward plan: the steps of one pass over T tokens, grouped per layer and split where routing
 * becomes known, as every architecture's builder produces it and every executor consumes it.
 *
 * @module
 */
import type { Step } from "../base/gpu/device.ts";
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
  /** The model layer of `layers[0]` (an encoder-decoder's decoder starts after the encoder); default 0. */
  readonly firstLayer?: number;
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
  /** An encoder-decoder's decoder: the encoder tokens its cross-attention attends to. */
  encoderLength?: number;
  /**
   * `llama.cpp`: round activations before each product with quantised or half-precision weights
   * as llama.cpp's CPU backend does (needs a state allocated with `roundedActivations`), keep keys
   * and values rounded to f16 and compute attention as its CPU flash attention does; default `f32`.
   */
  activations?: ActivationRounding;
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

/**
 * GPU steps that run without a host decision between them.
 *
 * @example
 * ```ts
 * import type { StepsOp } from "./plan.ts";
 * const op: StepsOp = { kind: "steps", steps: [] };
 * console.log(op.kind);
 * ```
 */
export interface StepsOp {
  readonly kind: "steps";
  readonly steps: readonly Step[];
}

/**
 * A MoE layer's expert block: the point of a pass where the layer's routing (and the pre-gate's
 * prediction) has been computed and its experts must be in their slots. The steps before it (up to
 * the layer's route and pre-gate) are in the preceding {@linkcode StepsOp}. With every expert
 * resident it runs `experts` in line; an executor that streams experts makes it a sync point.
 *
 * @example
 * ```ts
 * import type { MoeOp, PlanOp } from "./plan.ts";
 * const describe = (op: PlanOp): string =>
 *   op.kind === "moe" ? `layer ${op.layer}: top-${op.ffn.topK}` : `${op.steps.length} steps`;
 * const syncPoints = (ops: PlanOp[]): MoeOp[] => ops.filter((op) => op.kind === "moe");
 * console.log(describe({ kind: "steps", steps: [] }), syncPoints([]).length); // 0 steps 0
 * ```
 */
export interface MoeOp {
  readonly kind: "moe";
  /** The decoder layer index. */
  readonly layer: number;
  /** Tokens in the pass. */
  readonly T: number;
  /** The layer's config (experts, topK). */
  readonly ffn: MoeFfn;
  /** The expert compute in one go ({@linkcode MoePlan.experts}). */
  readonly experts: readonly Step[];
  /** One round over the resident experts, and the finish after the last ({@linkcode MoePlan.round}). */
  readonly round: readonly Step[];
  readonly finish: readonly Step[];
}

/** One entry of {@linkcode planOps}. */
export type PlanOp = StepsOp | MoeOp;

/**
 * The plan as one flat list in execution order: runs of GPU steps, each MoE layer's expert block
 * a {@linkcode MoeOp} after the steps that route it. Consecutive steps are merged into one
 * {@linkcode StepsOp}, so the list alternates (it starts and ends with steps).
 *
 * @example
 * ```ts
 * import { type ForwardPlan, planOps } from "./plan.ts";
 * const plan: ForwardPlan = { T: 1, embed: [], layers: [], head: [] };
 * console.log(planOps(plan).map((op) => op.kind)); // [ "steps" ]
 * ```
 */
export function planOps(plan: ForwardPlan): PlanOp[] {
  const ops: PlanOp[] = [];
  let run: Step[] = [...plan.embed];
  plan.layers.forEach((l, j) => {
    const layer = (plan.firstLayer ?? 0) + j;
    run.push(...l.attention);
    if (l.ffn.kind === "dense") {
      run.push(...l.ffn.steps);
      return;
    }
    const f = l.ffn;
    run.push(...f.route, ...f.pregate);
    ops.push({ kind: "steps", steps: run });
    ops.push({
      kind: "moe",
      layer,
      T: plan.T,
      ffn: f.ffn,
      experts: f.experts,
      round: f.round,
      finish: f.finish,
    });
    run = [];
  });
  run.push(...plan.head);
  ops.push({ kind: "steps", steps: run });
  return ops;
}

/** How activations meet quantised and half-precision weights (see `LoadOptions.activations`). */
export type ActivationRounding = "f32" | "llama.cpp";
