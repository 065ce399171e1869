/**
 * The offloading engine: the I/O around the {@linkcode Scheduler} when experts stay in the
 * memory-mapped checkpoint and are copied into a pool of GPU expert slots when needed. It is the
 * executor's streamed expert source: at each MoE layer's sync point it submits the queued steps with
 * a copy of the routing (and the pre-gate's prediction) into a readback buffer, issues the copies
 * the scheduler asked for earlier while that readback is in flight, hands the ids to the scheduler,
 * then for each compute round copies the experts in, writes the layer's slot table and submits the
 * expert steps, and issues the prefetches due now. The modes are described in `./schedule.ts`.
 *
 * Copies go through an {@linkcode Uploader} (`./uploader.ts`): by default a ring of mapped staging
 * buffers filled by parallel `memcpy` on Dawn, `queue.writeBuffer` from the mapped file on Deno's
 * native WebGPU; with `uploader: "pinned"`, GPU-side copies out of a host-visible copy of every
 * expert made at load. They are issued after the GPU work they overlap with was submitted, and flushed
 * before the work that reads them; WebGPU's queue order guarantees a slot is overwritten only after
 * the work that read it.
 *
 * Statistics and the trace are listeners on the engine's {@linkcode EngineEvents}.
 *
 * @example
 * ```ts ignore
 * const engine = await OffloadEngine.create(gpu, cfg, store, weights, state, { mode: "pregated" });
 * const plan = await buildForward(gpu, cfg, weights, state, { T: 1, logits: "last", ...engine.planHooks() });
 * await new Executor(gpu, engine).run(plan);
 * ```
 * @module
 */
import type { Copy, Gpu, Step } from "../base/gpu/device.ts";
import type { TensorStore } from "../weights/safetensors.ts";
import type { ModelConfig, MoeFfn } from "../models/config.ts";
import type { ForwardOptions, MoeOp, PregateSpec } from "../models/plan.ts";
import {
  type ExpertPool,
  expertPool,
  expertProjectionBytes,
  type GpuMatrix,
  type ModelWeights,
} from "../models/weights.ts";
import type { RunState } from "../models/state.ts";
import type { StreamedExperts } from "../executor.ts";
import { NO_SLOT, type Upload } from "./allocator.ts";
import { HostExpertStore } from "./store.ts";
import { hostMemcpy } from "../weights/mmap.ts";
import {
  createUploader,
  PinnedUploader,
  resolveUploadPath,
  type Uploader,
  type UploaderStats,
  type UploadPath,
} from "./uploader.ts";
import type { TraceRecord } from "./trace.ts";
import {
  type ComputeRound,
  type ExpertMode,
  type Prefetch,
  type PregatePolicy,
  Scheduler,
} from "./schedule.ts";
import {
  countStats,
  type EngineEvents,
  type EngineStats,
  EventHub,
  newEngineStats,
  recordTrace,
} from "./events.ts";
import { poolSlots, stagingPlan } from "./pool_size.ts";

export { EXPERT_MODES, type ExpertMode, type PregatePolicy } from "./schedule.ts";
export type { EngineStats } from "./events.ts";
export { stagingPlan } from "./pool_size.ts";

/** Options of {@linkcode OffloadEngine.create}. */
export interface EngineOptions {
  /** An offloading mode. */
  mode: Exclude<ExpertMode, "resident">;
  /** Pre-gate policy for `pregated`; default `exact`. */
  pregate?: PregatePolicy;
  /** GPU memory budget in bytes for everything Pregate allocates; default: none. */
  budget?: number;
  /** Expert slots beyond the mode's minimum (a cache), or `auto`: as many as the budget allows. */
  expertCache?: number | "auto";
  /** Which resident, unpinned expert to evict when a slot is needed: `lru` (default) or `lfu`. */
  cachePolicy?: "lru" | "lfu";
  /**
   * How expert bytes are copied: `auto` (default), `write`, `mapped` or `pinned` (see
   * uploader.ts).
   */
  uploader?: UploadPath | "auto";
  /** Progress of pinning the experts (`pinned`): bytes pinned, total bytes. */
  onPinProgress?: (done: number, total: number) => void;
  /** Receives one-line notices (the pinned store's placement). Default stderr. */
  log?: (message: string) => void;
  /** Record an expert trace (one record per MoE layer per pass). */
  trace?: boolean;
}

const U32 = 4;

/** The GPU buffers of a pre-gate's output for one MoE layer. */
interface PredictionBuffers {
  readonly ids: GPUBuffer;
  readonly weights: GPUBuffer;
  readonly logits: GPUBuffer;
}

/** The offloading engine for one model and run state. */
export class OffloadEngine implements StreamedExperts {
  readonly kind = "streamed" as const;
  readonly mode: Exclude<ExpertMode, "resident">;
  readonly pregatePolicy: PregatePolicy;
  /** Slots in the pool. */
  readonly slots: number;
  /** Bytes of one slot (all three projections). */
  readonly slotBytes: number;
  /** The named points statistics and the trace listen on. */
  readonly events: EventHub<EngineEvents> = new EventHub<EngineEvents>();
  /** Counters, cumulative (kept by a listener on {@linkcode events}). */
  readonly stats: EngineStats = newEngineStats();
  /** The expert trace, when enabled (kept by a listener on {@linkcode events}). */
  readonly trace: TraceRecord[] | null;

  #gpu: Gpu;
  #cfg: ModelConfig;
  #host: HostExpertStore;
  #state: RunState;
  #scheduler: Scheduler;
  #pools = new Map<number, ExpertPool>();
  #pred = new Map<number, PredictionBuffers>();
  #pregateRouter = new Map<number, GpuMatrix>();
  #readback: GPUBuffer;
  #tableScratch: Uint32Array;
  #uploader: Uploader;
  /** A prefetch to issue at the next routing readback. */
  #due: Prefetch | null = null;

  private constructor(
    gpu: Gpu,
    cfg: ModelConfig,
    host: HostExpertStore,
    state: RunState,
    weights: ModelWeights,
    opts: EngineOptions,
    pool: ExpertPool,
    uploader: Uploader,
  ) {
    this.#gpu = gpu;
    this.#cfg = cfg;
    this.#host = host;
    this.#state = state;
    this.mode = opts.mode;
    this.pregatePolicy = opts.pregate ?? "exact";
    this.slots = pool.slots;
    this.slotBytes = pool.bytes.gateUp * (pool.up ? 2 : 1) + pool.bytes.down;
    const moeLayers = cfg.layers.flatMap((l, i) => (l.ffn.kind === "moe" ? [i] : []));
    const E = host.experts;
    this.#scheduler = new Scheduler({
      mode: opts.mode,
      pregate: this.pregatePolicy,
      experts: E,
      layers: moeLayers,
      chains: moeChains(cfg),
      slots: pool.slots,
      cachePolicy: opts.cachePolicy,
    });
    this.#tableScratch = new Uint32Array(E);
    const ffn = (i: number) => cfg.layers[i].ffn as MoeFfn;
    this.#uploader = uploader;
    const maxK = Math.max(...moeLayers.map((i) => ffn(i).topK));
    this.#readback = gpu.createBuffer({
      size: 2 * state.maxT * maxK * U32,
      purpose: "readback",
      label: "engine.routing",
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | GPUBufferUsage.STORAGE,
    });
    // The MoE layers a pre-gate predicts: each one after another of its chain.
    const predicted = new Set(moeLayers.map((i) => this.#scheduler.next(i)));
    for (const i of moeLayers) {
      // Each MoE layer sees the shared slot buffers through its own slot table, and reads its
      // experts in its own types (the slots hold the largest).
      const t = host.typesOf(i);
      this.#pools.set(i, {
        ...pool,
        table: gpu.storage("experts", E * U32, `experts.table.${i}`),
        dtype: t.gateUp,
        downDtype: t.down,
      });
      if (this.mode === "pregated" && predicted.has(i)) {
        this.#pred.set(i, this.#predictionBuffers(i, ffn(i)));
      }
    }
    if (this.mode === "pregated") {
      for (const i of moeLayers) {
        const next = this.#scheduler.next(i);
        const lw = weights.layers[i].ffn;
        if (next === undefined || lw.kind !== "moe") continue;
        const nw = weights.layers[next].ffn;
        if (nw.kind === "moe") this.#pregateRouter.set(i, lw.pregate ?? nw.router);
      }
    }
    this.trace = opts.trace ? [] : null;
    countStats(this.events, this.stats);
    if (this.trace) recordTrace(this.events, this.trace);
  }

  /**
   * Creates the engine: sizes the slot pool from the mode's minimum, the expert cache and the budget,
   * allocates it, and sets up the uploader (with `pinned`, copies every expert into host-visible
   * buffers). Call after the dense weights and the run state are on the GPU (they count against
   * the budget).
   *
   * @throws {BudgetError} when the budget cannot hold the mode's minimum slots (naming the smallest
   * budget that would work) or the pool exceeds the device's binding limit.
   */
  static async create(
    gpu: Gpu,
    cfg: ModelConfig,
    store: TensorStore,
    weights: ModelWeights,
    state: RunState,
    opts: EngineOptions,
  ): Promise<OffloadEngine> {
    const host = new HostExpertStore(cfg, store);
    const moe = cfg.layers.filter((l) => l.ffn.kind === "moe").map((l) => l.ffn as MoeFfn);
    const topK = Math.max(...moe.map((f) => f.topK));
    const E = host.experts;
    // Fixed costs besides the slots: slot tables, pre-gate buffers, the routing readback buffer,
    // and the mapped path's staging ring (host-visible, but on a host with a resizable BAR Dawn
    // places it in GPU memory: docs/decisions.md).
    const staging = engineStaging(cfg, host, opts);
    const stagingBytes = resolveUploadPath(gpu, opts.uploader ?? "auto") === "mapped"
      ? staging.stagingBytes * staging.buffers
      : 0;
    const fixed = moe.length * E * U32 +
      moe.length * state.maxT * (2 * topK + E) * U32 + 2 * state.maxT * topK * U32 + stagingBytes;
    const proj = expertProjectionBytes(host.inter, host.hidden, host.types);
    const slots = poolSlots({
      mode: opts.mode,
      topK,
      experts: E,
      moeLayers: moe.length,
      projectionBytes: Math.max(proj.gateUp, proj.down),
      slotBytes: proj.gateUp * (host.act === "relu" ? 1 : 2) + proj.down,
      usedBytes: gpu.memory().current + fixed,
      budget: opts.budget,
      expertCache: opts.expertCache,
      maxBindingBytes: gpu.limits.maxStorageBufferBindingSize,
    });
    const pool = expertPool(gpu, E, slots, host.inter, host.hidden, host.types, host.act);
    try {
      const uploader = opts.uploader === "pinned"
        ? await PinnedUploader.create(gpu, host.sources(), {
          onProgress: opts.onPinProgress,
          scratch: pool.gate, // the placement probe's copy lands in slots not yet filled
          memcpy: hostMemcpy(),
          log: opts.log,
        })
        : createUploader(gpu, opts.uploader ?? "auto", staging);
      return new OffloadEngine(gpu, cfg, host, state, weights, opts, pool, uploader);
    } catch (e) {
      for (const b of poolBuffers(pool)) gpu.destroyBuffer(b);
      throw e;
    }
  }

  /** The hooks {@linkcode buildForward} needs to build plans that read this engine's slots. */
  planHooks(): Pick<ForwardOptions, "pool" | "routing" | "pregate"> {
    return {
      pool: (layer) => this.#pools.get(layer)!,
      routing: (layer) => {
        if (this.mode !== "pregated" || this.pregatePolicy !== "strict") return undefined;
        const p = this.#pred.get(layer);
        return p ? { ids: p.ids, weights: p.weights } : undefined;
      },
      pregate: (layer): PregateSpec | undefined => {
        const next = this.#scheduler.next(layer);
        const router = this.#pregateRouter.get(layer);
        if (next === undefined || !router) return undefined;
        const p = this.#pred.get(next)!;
        const nextFfn = this.#cfg.layers[next].ffn as MoeFfn;
        return { router, next: nextFfn, ids: p.ids, weights: p.weights, logits: p.logits };
      },
    };
  }

  /** Starts a pass over `T` tokens (see {@linkcode StreamedExperts}). */
  beginPass(T: number): void {
    this.#scheduler.beginPass(T);
  }

  /**
   * A MoE layer's sync point (see {@linkcode StreamedExperts}): reads back what the scheduler asks
   * for, then runs the layer's rounds and issues the prefetch due now.
   */
  async moe(op: MoeOp, queued: readonly Step[]): Promise<void> {
    const need = this.#scheduler.readback(op.layer);
    let routed: Uint32Array | null = null, predicted: Uint32Array | null = null;
    if (need.routing) {
      ({ routed, predicted } = await this.#readRouting(op, queued, need.prediction));
      queued = [];
    } else await this.#issueDue();
    const decision = this.#scheduler.layer(op.layer, routed, predicted);
    for (const round of decision.rounds) {
      await this.#upload(op.layer, round.uploads, false);
      this.#uploader.flush();
      this.#writeTable(op.layer, round);
      const steps = roundSteps(op, round);
      this.#gpu.submit(queued.length ? [...queued, ...steps] : steps);
      queued = [];
    }
    this.#due = decision.prefetch;
    if (this.#due?.at === "now") await this.#issueDue();
    this.events.emit("layer", decision.report);
  }

  /**
   * Submits `queued` with a copy of the layer's routing (and of the pre-gate's prediction for the
   * next MoE layer) into the readback buffer, issues the due prefetch while the readback is in
   * flight, and returns the ids.
   */
  async #readRouting(
    op: MoeOp,
    queued: readonly Step[],
    prediction: boolean,
  ): Promise<{ routed: Uint32Array; predicted: Uint32Array | null }> {
    const pairs = op.T * op.ffn.topK, half = this.#readback.size / 2;
    const copy = (src: GPUBuffer, dstOffset: number): Copy => ({
      src,
      srcOffset: 0,
      dst: this.#readback,
      dstOffset,
      size: pairs * U32,
    });
    const copies = [copy(this.#state.topIds, 0)];
    const next = this.#scheduler.next(op.layer);
    if (prediction) copies.push(copy(this.#pred.get(next!)!.ids, half));
    const gpu = this.#gpu;
    gpu.submit(queued, (enc) => gpu.encode(enc, copies));
    const t0 = performance.now();
    const reading = gpu.readU32(this.#readback, 0, prediction ? half / U32 + pairs : pairs);
    const issuing = await this.#issueDue();
    const words = await reading;
    const seconds = Math.max((performance.now() - t0) / 1e3 - issuing, 0);
    this.events.emit("sync", { layer: op.layer, seconds });
    return {
      routed: words.subarray(0, pairs),
      predicted: prediction ? words.subarray(half / U32, half / U32 + pairs) : null,
    };
  }

  /** Issues and flushes the due prefetch, if any; returns the seconds spent issuing copies. */
  async #issueDue(): Promise<number> {
    const due = this.#due;
    if (!due) return 0;
    this.#due = null;
    const seconds = await this.#upload(due.layer, due.uploads, true);
    this.#uploader.flush();
    return seconds;
  }

  /**
   * Copies `uploads` into `layer`'s slots as one batch (their fills share the copy threads);
   * returns the seconds spent.
   */
  async #upload(layer: number, uploads: readonly Upload[], prefetch: boolean): Promise<number> {
    if (uploads.length === 0) return 0;
    const t0 = performance.now();
    const u0 = this.#uploader.stats;
    const pool = this.#pools.get(layer)!;
    const bytes = await this.#host.uploadMany(this.#uploader, layer, uploads, pool);
    const seconds = (performance.now() - t0) / 1e3;
    const u1 = this.#uploader.stats;
    this.events.emit("upload", {
      layer,
      experts: uploads.length,
      bytes,
      seconds,
      fillSeconds: u1.fillSeconds - u0.fillSeconds,
      stagingWaitSeconds: u1.waitSeconds - u0.waitSeconds,
      prefetch,
    });
    return seconds;
  }

  /** Writes `layer`'s slot table for `round`: its experts' slots, every other expert absent. */
  #writeTable(layer: number, round: ComputeRound): void {
    const table = this.#tableScratch.fill(NO_SLOT);
    round.experts.forEach((e, j) => (table[e] = round.slots[j]));
    this.#gpu.write(this.#pools.get(layer)!.table, table);
  }

  #predictionBuffers(layer: number, f: MoeFfn): PredictionBuffers {
    const maxT = this.#state.maxT, gpu = this.#gpu;
    return {
      ids: gpu.storage("activations", maxT * f.topK * U32, `pregate.ids.${layer}`),
      weights: gpu.storage("activations", maxT * f.topK * U32, `pregate.weights.${layer}`),
      logits: gpu.storage("activations", maxT * f.experts * U32, `pregate.logits.${layer}`),
    };
  }

  /** The upload path in use. */
  get uploadPath(): UploadPath {
    return this.#uploader.path;
  }

  /** The uploader's counters (staging ring, fills, waits). */
  get uploaderStats(): UploaderStats {
    return this.#uploader.stats;
  }

  /**
   * Frees the engine's GPU buffers (slot pool, tables, pre-gate and readback buffers) now; the
   * uploader's staging buffers are freed once their pending maps have settled (the promise).
   */
  dispose(): Promise<void> {
    const staging = this.#uploader.dispose();
    const seen = new Set<GPUBuffer>();
    for (const p of this.#pools.values()) poolBuffers(p).forEach((b) => seen.add(b));
    for (const p of this.#pred.values()) [p.ids, p.weights, p.logits].forEach((b) => seen.add(b));
    seen.add(this.#readback);
    for (const b of seen) this.#gpu.destroyBuffer(b);
    this.#pools.clear();
    this.#pred.clear();
    return staging;
  }

  /**
   * Starts a new sequence: forgets the predictions and restarts the trace (which therefore covers
   * the last sequence); keeps the resident experts as a warm cache.
   */
  resetSequence(): void {
    this.#scheduler.reset();
    if (this.trace) this.trace.length = 0;
  }
}

/**
 * The MoE layers of `cfg` in the chains pre-gating and prefetching follow: one per stack (an
 * encoder-decoder's encoder and decoder; a decoder's one stack).
 */
function moeChains(cfg: ModelConfig): number[][] {
  const stacks = cfg.stacks ?? [{ first: 0, count: cfg.layers.length }];
  return stacks.map((s) =>
    cfg.layers.flatMap((
      l,
      i,
    ) => (l.ffn.kind === "moe" && i >= s.first && i < s.first + s.count ? [i] : []))
  ).filter((c) => c.length > 0);
}

/**
 * The mapped path's staging ring: one MoE layer's copies (top-k experts; all E for prefetch-all)
 * per buffer, at most 128 MiB; see stagingPlan.
 */
function engineStaging(
  cfg: ModelConfig,
  host: HostExpertStore,
  opts: EngineOptions,
): { stagingBytes: number; buffers: number } {
  const perLayer = cfg.layers.flatMap((l) =>
    l.ffn.kind === "moe" ? [opts.mode === "prefetch-all" ? l.ffn.experts : l.ffn.topK] : []
  );
  return stagingPlan(host.bytesPerExpert, Math.max(...perLayer));
}

/** The GPU buffers of a slot pool (a ReLU pool has no `up`). */
function poolBuffers(pool: ExpertPool): GPUBuffer[] {
  return [pool.gate, pool.up, pool.down, pool.table].filter((b): b is GPUBuffer => b !== null);
}

/** The steps of `op` that `round` runs. */
function roundSteps(op: MoeOp, round: ComputeRound): readonly Step[] {
  if (round.part === "all") return op.experts;
  return round.part === "last" ? [...op.round, ...op.finish] : op.round;
}
