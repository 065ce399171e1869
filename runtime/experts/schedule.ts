/**
 * The pre-gate scheduler: pure decisions, no GPU. At each MoE layer of a pass it takes what the
 * engine read back (the layer's routing, and in `pregated` mode the pre-gate's prediction for the
 * next MoE layer) and answers which experts to compute with (in rounds when they do not all fit the
 * slots), which copies to issue before each round (expert -> slot, from the {@linkcode SlotAllocator}),
 * and which of the next layer's experts to prefetch, and when. The engine does the I/O.
 *
 * Modes (see ../shared/docs/pregated-moe.md):
 * - `on-demand`: a MoE layer's chosen experts are read back, copied in, then computed (the copies
 *   are on the critical path).
 * - `prefetch-all`: while layer N computes, every expert of the next MoE layer is copied in; there
 *   is no routing readback (each layer computes with all its experts, weighted by its own router).
 * - `pregated`: at MoE layer N the pre-gate predicts the next MoE layer's experts; they are copied in
 *   while the next layer's routing readback is in flight. `exact` (default): every layer computes
 *   with its own router's experts; those the pre-gate missed are copied on demand, so the output is
 *   the model's. `strict`: a layer computes with the experts its pre-gate predicted, as in the paper
 *   (the model's output only for models trained with pre-gates). The first MoE layer has no
 *   prediction and runs on demand.
 *
 * Order of the allocator calls at a MoE layer (the engine issues copies and work in the same
 * order): per round, `acquire(compute)`, then `release` unless it is the last round; `release`;
 * then the prefetch of the next MoE layer: all its experts (`prefetch-all`, into the slots this
 * layer just released if need be) or its predicted ones (`pregated`). A slot is reused only after
 * the work that read it was queued: WebGPU runs the queue in order.
 *
 * @example
 * ```ts
 * import { Scheduler } from "./schedule.ts";
 * const s = new Scheduler({ mode: "pregated", experts: 8, layers: [0, 1], slots: 4 });
 * s.beginPass(1);
 * console.log(s.readback(0)); // { routing: true, prediction: true }
 * const first = s.layer(0, new Uint32Array([5, 2]), new Uint32Array([1, 2]));
 * console.log(first.rounds[0].uploads.length, first.prefetch?.at); // 2 next-sync
 * const second = s.layer(1, new Uint32Array([2, 7]), null);
 * console.log(second.report.predicted, second.report.onDemand); // [ 1, 2 ] [ 7 ]
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { type OffloadMode, SlotAllocator, type Upload } from "./allocator.ts";

/**
 * How experts are placed: all on the GPU, or streamed by one of the three offloading modes.
 *
 * @example
 * ```ts
 * import type { ExpertMode } from "./schedule.ts";
 * const mode: ExpertMode = "pregated";
 * console.log(mode);
 * ```
 */
export type ExpertMode = "resident" | OffloadMode;

/**
 * The modes of {@linkcode ExpertMode}, for argument checks and help texts.
 *
 * @example
 * ```ts
 * import { EXPERT_MODES } from "./schedule.ts";
 * console.log(EXPERT_MODES.join("|")); // resident|on-demand|prefetch-all|pregated
 * ```
 */
export const EXPERT_MODES: readonly ExpertMode[] = [
  "resident",
  "on-demand",
  "prefetch-all",
  "pregated",
];

/**
 * Pre-gate policy of `pregated` mode: `exact` computes with the router's experts, `strict` with
 * the pre-gate's (see the module documentation).
 *
 * @example
 * ```ts
 * import type { PregatePolicy } from "./schedule.ts";
 * const policy: PregatePolicy = "strict";
 * console.log(policy);
 * ```
 */
export type PregatePolicy = "exact" | "strict";

/**
 * Options of a {@linkcode Scheduler}.
 *
 * @example
 * ```ts
 * import { type SchedulerOptions, Scheduler } from "./schedule.ts";
 * const opts: SchedulerOptions = { mode: "on-demand", experts: 64, layers: [0, 1, 2], slots: 8 };
 * console.log(new Scheduler(opts).slots); // 8
 * ```
 */
export interface SchedulerOptions {
  /** The offloading mode. */
  mode: OffloadMode;
  /** Pre-gate policy of `pregated`; default `exact`. */
  pregate?: PregatePolicy;
  /** Experts per MoE layer. */
  experts: number;
  /** The MoE layers' decoder layer indices, in execution order. */
  layers: readonly number[];
  /**
   * The chains pre-gating and prefetch-all follow, each a run of `layers` (a layer's next MoE layer
   * is the next of its chain; the last of a chain has none). Default: one chain, `layers`. An
   * encoder-decoder has one per stack.
   */
  chains?: readonly (readonly number[])[];
  /** Expert slots in the pool (at least the mode's minimum, see `SlotAllocator.minimumSlots`). */
  slots: number;
  /** Which unpinned expert to evict: `lru` (default) or `lfu`. */
  cachePolicy?: "lru" | "lfu";
}

/**
 * What the engine reads back at a MoE layer's sync point.
 *
 * @example
 * ```ts
 * import { type Readback, Scheduler } from "./schedule.ts";
 * const s = new Scheduler({ mode: "prefetch-all", experts: 4, layers: [0, 1], slots: 8 });
 * const r: Readback = s.readback(0);
 * console.log(r); // { routing: false, prediction: false }
 * ```
 */
export interface Readback {
  /** The layer's routing (its top-k expert ids). */
  readonly routing: boolean;
  /** The pre-gate's prediction for the next MoE layer. */
  readonly prediction: boolean;
}

/**
 * One compute round of a MoE layer: copy `uploads` in, write the slot table (`experts[i]` in
 * `slots[i]`, every other expert absent), then submit the layer's steps named by `part`.
 *
 * @example
 * ```ts
 * import { type ComputeRound, Scheduler } from "./schedule.ts";
 * const s = new Scheduler({ mode: "on-demand", experts: 4, layers: [0], slots: 2 });
 * s.beginPass(1);
 * const round: ComputeRound = s.layer(0, new Uint32Array([3, 1]), null).rounds[0];
 * console.log(round.experts, round.slots, round.part); // [ 1, 3 ] [ 0, 1 ] all
 * ```
 */
export interface ComputeRound {
  /** The distinct experts computed in this round, ascending. */
  readonly experts: readonly number[];
  /** The slot of each of `experts`. */
  readonly slots: readonly number[];
  /** Copies to issue (and flush) before the round's work is submitted. */
  readonly uploads: readonly Upload[];
  /**
   * Which steps of the layer run: `all` (the whole expert block: the only round), `round` (the
   * experts of this round only) or `last` (the last round, then the shared expert and the combine).
   */
  readonly part: "all" | "round" | "last";
  /** Of `experts`, those already resident before this round. */
  readonly hits: number;
}

/**
 * Copies of the next MoE layer's experts, issued ahead of its compute.
 *
 * @example
 * ```ts
 * import { type Prefetch, Scheduler } from "./schedule.ts";
 * const s = new Scheduler({ mode: "prefetch-all", experts: 2, layers: [0, 1], slots: 4 });
 * s.beginPass(1);
 * const p: Prefetch | null = s.layer(0, null, null).prefetch;
 * console.log(p?.layer, p?.uploads.length, p?.at); // 1 2 now
 * ```
 */
export interface Prefetch {
  /** The next MoE layer. */
  readonly layer: number;
  /** Copies to issue. */
  readonly uploads: readonly Upload[];
  /**
   * When: `now` (right after this layer's work is submitted, overlapping it: `prefetch-all`), or
   * `next-sync` (while the next MoE layer's routing readback is in flight: `pregated`).
   */
  readonly at: "now" | "next-sync";
}

/**
 * What happened to one MoE layer's experts in one pass: the trace's record plus the counts the
 * engine's statistics need.
 *
 * @example
 * ```ts
 * import { type LayerReport, Scheduler } from "./schedule.ts";
 * const s = new Scheduler({ mode: "on-demand", experts: 4, layers: [0], slots: 2 });
 * s.beginPass(1);
 * const r: LayerReport = s.layer(0, new Uint32Array([2, 0]), null).report;
 * console.log(r.chosen, r.onDemand, r.cacheLookups); // [ 0, 2 ] [ 0, 2 ] 2
 * ```
 */
export interface LayerReport {
  /** Pass number since the last {@linkcode Scheduler.reset} (0: the first pass, e.g. prefill). */
  readonly step: number;
  /** Tokens in the pass. */
  readonly tokens: number;
  /** Decoder layer index. */
  readonly layer: number;
  /** The router's experts (distinct, ascending); without a routing readback, `compute`. */
  readonly chosen: number[];
  /** The experts predicted for this layer one MoE layer earlier (distinct, ascending), or null. */
  readonly predicted: number[] | null;
  /** The experts computed with (distinct, ascending). */
  readonly compute: number[];
  /** Of `compute`, those resident before this layer's prefetch and compute. */
  readonly resident: number[];
  /** Experts copied in for this layer, prefetched or on demand (distinct, ascending). */
  readonly uploaded: number[];
  /** Of those, the ones copied on the critical path (in upload order). */
  readonly onDemand: number[];
  /** Of `chosen`, those in `predicted` (0 without a prediction). */
  readonly pregateHits: number;
  /**
   * Per token: the router's experts the pre-gate had predicted for that same token, summed over the
   * pass's tokens, and all the router's choices (`tokens x topK`); 0 and 0 without a prediction or
   * a routing readback. For one token these equal `pregateHits` and `chosen.length`.
   */
  readonly tokenHits: number;
  readonly tokenChoices: number;
  /** Compute acquisitions found resident, and all of them (summed over rounds). */
  readonly cacheHits: number;
  readonly cacheLookups: number;
}

/**
 * The decisions for one MoE layer (see {@linkcode Scheduler.layer}).
 *
 * @example
 * ```ts
 * import { type LayerSchedule, Scheduler } from "./schedule.ts";
 * const s = new Scheduler({ mode: "on-demand", experts: 4, layers: [0], slots: 1 });
 * s.beginPass(1);
 * const d: LayerSchedule = s.layer(0, new Uint32Array([1, 2]), null); // 2 experts, 1 slot
 * console.log(d.rounds.map((r) => r.part)); // [ "round", "last" ]
 * ```
 */
export interface LayerSchedule {
  /** The layer's compute, round by round (one round unless its experts exceed the slots). */
  readonly rounds: readonly ComputeRound[];
  /** The next MoE layer's prefetch, if any. */
  readonly prefetch: Prefetch | null;
  /** What happened, for statistics and the trace. */
  readonly report: LayerReport;
}

/**
 * The scheduler of one model's expert pool (see the module documentation). Stateful (the slot
 * allocator, the predictions made for later layers) but pure: it never touches the GPU.
 *
 * @example
 * ```ts
 * import { Scheduler } from "./schedule.ts";
 * const s = new Scheduler({ mode: "on-demand", experts: 8, layers: [1, 3], slots: 2 });
 * s.beginPass(1);
 * for (const layer of [1, 3]) {
 *   const d = s.layer(layer, new Uint32Array([4, 6]), null);
 *   for (const r of d.rounds) console.log(layer, r.uploads.map((u) => `${u.expert}->${u.slot}`));
 * }
 * ```
 */
export class Scheduler {
  /** The offloading mode. */
  readonly mode: OffloadMode;
  /** The pre-gate policy (meaningful in `pregated` mode). */
  readonly pregate: PregatePolicy;
  /** Experts per MoE layer. */
  readonly experts: number;
  /** Slots in the pool. */
  readonly slots: number;
  /** The slot bookkeeping. */
  readonly allocator: SlotAllocator;
  readonly #next = new Map<number, number>();
  /** Per MoE layer: the raw prediction (ids per token and top-k) made one MoE layer earlier. */
  readonly #predicted = new Map<number, Uint32Array>();
  /** Per MoE layer: what its prefetch copied in and evicted of that layer's own experts. */
  readonly #prefetched = new Map<number, { uploaded: Set<number>; evicted: Set<number> }>();
  #step = -1;
  #tokens = 0;

  /**
   * Creates the scheduler and its empty slot pool. Throws {@linkcode ArgumentError} for a bad
   * option (and the allocator's errors for bad sizes).
   *
   * @example
   * ```ts
   * import { Scheduler } from "./schedule.ts";
   * const s = new Scheduler({ mode: "pregated", pregate: "strict", experts: 8, layers: [0, 1], slots: 4 });
   * console.log(s.pregate, s.allocator.slots); // strict 4
   * ```
   */
  constructor(opts: SchedulerOptions) {
    const modes: readonly string[] = ["on-demand", "prefetch-all", "pregated"];
    if (!modes.includes(opts.mode)) {
      throw new ArgumentError("mode", `expected ${modes.join(", ")}, got '${opts.mode}'`);
    }
    const pregate = opts.pregate ?? "exact";
    if (pregate !== "exact" && pregate !== "strict") {
      throw new ArgumentError("pregate", `expected exact or strict, got '${pregate}'`);
    }
    this.mode = opts.mode;
    this.pregate = pregate;
    this.allocator = new SlotAllocator({
      experts: opts.experts,
      layers: opts.layers,
      slots: opts.slots,
      policy: opts.cachePolicy ?? "lru",
    });
    this.experts = opts.experts;
    this.slots = opts.slots;
    const chains = opts.chains ?? [opts.layers];
    for (const chain of chains) {
      for (const layer of chain) {
        if (!opts.layers.includes(layer)) {
          throw new ArgumentError("chains", `layer ${layer} of a chain is not in layers`);
        }
      }
      for (let j = 0; j + 1 < chain.length; j++) this.#next.set(chain[j], chain[j + 1]);
    }
  }

  /** The MoE layer after `layer`, if any. */
  next(layer: number): number | undefined {
    return this.#next.get(layer);
  }

  /**
   * Starts a pass over `tokens` tokens (numbers the trace's steps).
   *
   * @example
   * ```ts
   * import { Scheduler } from "./schedule.ts";
   * const s = new Scheduler({ mode: "on-demand", experts: 4, layers: [0], slots: 2 });
   * s.beginPass(5);
   * console.log(s.layer(0, new Uint32Array(10), null).report.tokens); // 5
   * ```
   */
  beginPass(tokens: number): void {
    if (!Number.isInteger(tokens) || tokens < 1) {
      throw new ArgumentError("tokens", `expected a positive integer, got ${tokens}`);
    }
    this.#step++;
    this.#tokens = tokens;
  }

  /**
   * What to read back at MoE layer `layer`: its routing (all modes but `prefetch-all`) and the
   * pre-gate's prediction for the next MoE layer (`pregated`, when there is a next MoE layer).
   *
   * @example
   * ```ts
   * import { Scheduler } from "./schedule.ts";
   * const s = new Scheduler({ mode: "pregated", experts: 4, layers: [0, 2], slots: 4 });
   * console.log(s.readback(0).prediction, s.readback(2).prediction); // true false
   * ```
   */
  readback(layer: number): Readback {
    return {
      routing: this.mode !== "prefetch-all",
      prediction: this.mode === "pregated" && this.#next.has(layer),
    };
  }

  /**
   * Decides MoE layer `layer` of the current pass. `routed`: the routing read back (expert ids,
   * `tokens x topK`), null when {@linkcode readback} asked for none. `predictedNext`: the pre-gate's
   * prediction for the next MoE layer, when asked for. Updates the slot pool as the returned copies
   * and rounds will leave it.
   *
   * @example
   * ```ts
   * import { Scheduler } from "./schedule.ts";
   * const s = new Scheduler({ mode: "pregated", pregate: "strict", experts: 8, layers: [0, 1], slots: 4 });
   * s.beginPass(1);
   * s.layer(0, new Uint32Array([0, 1]), new Uint32Array([6, 7]));
   * const d = s.layer(1, new Uint32Array([2, 3]), null); // strict: computes the prediction
   * console.log(d.rounds[0].experts, d.rounds[0].uploads.length); // [ 6, 7 ] 0
   * ```
   */
  layer(
    layer: number,
    routed: Uint32Array | null,
    predictedNext: Uint32Array | null,
  ): LayerSchedule {
    if (this.#step < 0) {
      throw new ArgumentError("layer", "called before beginPass", "call beginPass(T) first");
    }
    const want = this.readback(layer);
    this.#expect("routed", routed, want.routing, layer);
    this.#expect("predictedNext", predictedNext, want.prediction, layer);
    const predictedHere = this.#predicted.get(layer) ?? null;
    const chosen = routed ? distinct(routed) : null;
    const compute = this.#computeSet(chosen, predictedHere);
    const predicted = predictedHere ? distinct(predictedHere) : null;
    const resident = this.#residentBefore(layer, compute);
    const early = this.#prefetched.get(layer);
    this.#prefetched.delete(layer);
    const rounds = this.#rounds(layer, compute);
    const next = this.#next.get(layer);
    let prefetch: Prefetch | null = null;
    this.allocator.release(layer);
    if (next !== undefined && this.mode === "prefetch-all") {
      prefetch = this.#prefetch(next, range(this.experts), "now");
    }
    if (next !== undefined && predictedNext) {
      this.#predicted.set(next, predictedNext.slice());
      prefetch = this.#prefetch(next, distinct(predictedNext), "next-sync");
    }
    const onDemand = rounds.flatMap((r) => r.uploads.map((u) => u.expert));
    const pset = predicted && chosen ? new Set(predicted) : null;
    const report: LayerReport = {
      step: this.#step,
      tokens: this.#tokens,
      layer,
      chosen: chosen ?? compute,
      predicted,
      compute,
      resident,
      uploaded: distinct([...(early?.uploaded ?? []), ...onDemand]),
      onDemand,
      pregateHits: pset ? chosen!.filter((e) => pset.has(e)).length : 0,
      ...perTokenHits(routed, predictedHere, this.#tokens),
      cacheHits: rounds.reduce((n, r) => n + r.hits, 0),
      cacheLookups: compute.length,
    };
    return { rounds, prefetch, report };
  }

  /**
   * Starts a new sequence: forgets the predictions and restarts the pass count; keeps the resident
   * experts as a warm cache.
   *
   * @example
   * ```ts
   * import { Scheduler } from "./schedule.ts";
   * const s = new Scheduler({ mode: "on-demand", experts: 4, layers: [0], slots: 2 });
   * s.beginPass(1);
   * s.reset();
   * s.beginPass(1);
   * console.log(s.layer(0, new Uint32Array([1]), null).report.step); // 0
   * ```
   */
  reset(): void {
    this.#predicted.clear();
    this.#prefetched.clear();
    this.#step = -1;
  }

  #expect(name: string, ids: Uint32Array | null, wanted: boolean, layer: number): void {
    if (wanted === (ids !== null)) return;
    throw new ArgumentError(
      name,
      `layer ${layer} in ${this.mode} mode ${
        wanted ? "needs it read back" : "reads none: pass null"
      }`,
      "pass what readback(layer) asks for",
    );
  }

  /** The experts a layer computes with. */
  #computeSet(chosen: number[] | null, predictedHere: Uint32Array | null): number[] {
    if (this.mode === "prefetch-all") return range(this.experts);
    if (this.mode === "pregated" && this.pregate === "strict" && predictedHere) {
      return distinct(predictedHere);
    }
    return chosen!;
  }

  /** Of `compute`, the experts of `layer` that were resident before its prefetch. */
  #residentBefore(layer: number, compute: number[]): number[] {
    const early = this.#prefetched.get(layer);
    return compute.filter((e) => {
      const now = this.allocator.slotOf(layer, e) !== undefined;
      return early ? (now && !early.uploaded.has(e)) || early.evicted.has(e) : now;
    });
  }

  /** Acquires `compute` in rounds of at most `slots` experts (releasing between rounds). */
  #rounds(layer: number, compute: number[]): ComputeRound[] {
    const parts = chunks(compute, this.slots);
    return parts.map((experts, r) => {
      const got = this.allocator.acquire(layer, experts, "compute");
      const slots = experts.map((e) => this.allocator.slotOf(layer, e)!);
      const last = r + 1 === parts.length;
      if (!last) this.allocator.release(layer);
      return {
        experts,
        slots,
        uploads: got.uploads,
        part: parts.length === 1 ? "all" : last ? "last" : "round",
        hits: got.hits,
      };
    });
  }

  /** Acquires for `layer` as many of `want` as the unpinned slots hold, as a prediction. */
  #prefetch(layer: number, want: number[], at: Prefetch["at"]): Prefetch {
    const room = Math.max(this.slots - this.allocator.pinnedSlots(), 0);
    const { uploads } = this.allocator.acquire(layer, want.slice(0, room), "prefetch");
    const evicted = new Set<number>();
    for (const u of uploads) if (u.evicted?.layer === layer) evicted.add(u.evicted.expert);
    this.#prefetched.set(layer, { uploaded: new Set(uploads.map((u) => u.expert)), evicted });
    return { layer, uploads, at };
  }
}

/** The distinct values of `ids`, ascending. */
function distinct(ids: ArrayLike<number>): number[] {
  return [...new Set(Array.from(ids))].sort((a, b) => a - b);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function chunks<T>(xs: T[], n: number): T[][] {
  if (xs.length <= n) return [xs];
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** Per-token agreement of the pre-gate's prediction with the router's choice (both `T x topK`). */
function perTokenHits(
  routed: Uint32Array | null,
  predicted: Uint32Array | null,
  tokens: number,
): { tokenHits: number; tokenChoices: number } {
  if (!routed || !predicted || predicted.length !== routed.length || tokens < 1) {
    return { tokenHits: 0, tokenChoices: 0 };
  }
  const k = routed.length / tokens;
  let hits = 0;
  for (let i = 0; i < routed.length; i++) {
    const t0 = i - (i % k);
    for (let j = t0; j < t0 + k; j++) {
      if (predicted[j] === routed[i]) {
        hits++;
        break;
      }
    }
  }
  return { tokenHits: hits, tokenChoices: routed.length };
}
