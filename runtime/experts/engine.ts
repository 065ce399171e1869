/**
 * The offloading engine: runs a forward plan layer by layer with the experts kept in the
 * memory-mapped checkpoint on the host and copied into a pool of GPU expert slots when needed.
 *
 * Modes (see ../shared/docs/pregated-moe.md):
 * - `on-demand`: after a MoE layer's router runs, its chosen experts are read back, copied in, then
 *   executed (the copy is on the critical path).
 * - `prefetch-all`: while layer N runs, every expert of the next MoE layer is copied in; no routing
 *   readback at all.
 * - `pregated`: at MoE layer N the pre-gate (the next MoE layer's router, or a trained pre-gate, applied
 *   to layer N's input) predicts the next layer's experts; they are copied in while layer N computes.
 *   `exact` (default): each layer still runs its own router; experts the pre-gate missed are fetched
 *   on demand, so the output is identical to the model's. `strict`: each layer uses the experts and
 *   weights its pre-gate chose, as in the paper (identical only for models trained with pre-gates).
 *   The first MoE layer is routed on demand.
 *
 * Expert copies are `queue.writeBuffer` calls straight from the mapped file into the slot (one copy
 * on the host, then the DMA), issued right after the GPU work they overlap with was submitted; WebGPU's
 * queue order guarantees a slot is overwritten only after the work that read it.
 *
 * @example
 * ```ts ignore
 * const engine = OffloadEngine.create(gpu, cfg, store, weights, state, { mode: "pregated" });
 * const plan = await buildForward(gpu, cfg, weights, state, { T: 1, logits: "last", ...engine.planHooks() });
 * await engine.run(plan);
 * ```
 * @module
 */
import type { Gpu, Step } from "../gpu/device.ts";
import { ArgumentError, BudgetError } from "../errors.ts";
import type { TensorStore } from "../weights/safetensors.ts";
import type { ModelConfig, MoeFfn } from "../models/config.ts";
import type { ForwardOptions, ForwardPlan, PregateSpec } from "../models/plan.ts";
import {
  type ExpertPool,
  expertPool,
  expertSlotBytes,
  type ModelWeights,
} from "../models/weights.ts";
import type { RunState } from "../models/state.ts";
import { NO_SLOT, SlotAllocator } from "./allocator.ts";
import { HostExpertStore } from "./store.ts";
import { createUploader, type Uploader, type UploaderStats, type UploadPath } from "./uploader.ts";
import type { TraceRecord } from "./trace.ts";

/** How experts are placed: all on the GPU, or streamed by one of the three offloading modes. */
export type ExpertMode = "resident" | "on-demand" | "prefetch-all" | "pregated";
/** The modes of {@linkcode ExpertMode}, for argument checks and help texts. */
export const EXPERT_MODES: readonly ExpertMode[] = [
  "resident",
  "on-demand",
  "prefetch-all",
  "pregated",
];
/** Pre-gate policy (see the module documentation). */
export type PregatePolicy = "exact" | "strict";

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
  /** How expert bytes are copied: `auto` (default), `write` or `mapped` (see uploader.ts). */
  uploader?: UploadPath | "auto";
  /** Record an expert trace (one record per MoE layer per pass). */
  trace?: boolean;
  /**
   * When `pregated` issues the copies the pre-gate asked for: `sync` (while the next layer's routing
   * readback is in flight: hides them under the sync and the next layer's attention), `compute`
   * (right after this layer's experts are submitted, overlapping the experts' GPU work), or `auto`
   * (default): `sync`. On Dawn on the H200 `compute` measured slower (pregated strict 18.5 vs
   * on-demand 37.8 tok/s, upload wait 48 vs 21 ms per token, 4 Qwen3-30B-A3B layers), where `sync`
   * had run at 0.91x on-demand with the earlier uploader; see bench/results/README.md.
   */
  prefetchAt?: "sync" | "compute" | "auto";
}

/** Counters of the engine, cumulative. */
export interface EngineStats {
  /** Expert bytes copied host -> GPU. */
  uploadBytes: number;
  /** Routing readbacks (GPU -> CPU syncs). */
  syncs: number;
  /** Seconds awaiting routing readbacks (GPU work + sync latency). */
  syncSeconds: number;
  /** Seconds spent issuing expert copies (host-side memcpy into the implementation's staging). */
  uploadSeconds: number;
  /** Of those: filling staging (memcpy; mapped path) and waiting for a staging buffer's remap. */
  uploadFillSeconds: number;
  uploadStagingWaitSeconds: number;
  /** Experts the pre-gate predicted correctly / experts chosen in layers that had a prediction. */
  pregateHits: number;
  pregateChosen: number;
  /** Expert acquisitions for compute found resident / all of them. */
  cacheHits: number;
  cacheLookups: number;
}

const U32 = 4;

/**
 * Staging ring for the mapped uploader: buffers that hold one MoE layer's copies (`perLayer`
 * experts) each, 4-aligned, 64 KiB to 128 MiB; at least 3 and, beyond 3, at most 256 MiB in all, so
 * that a layer's copies are one map/unmap cycle and no buffer is reused while the copies of the same
 * layer are still queued behind GPU work.
 *
 * Why whole layers: on the H200 host (Dawn) every staging cycle comes to cost 2-3 ms once a process
 * has run ~1000 of them (the copy threads' CPU time per byte grows 6x; plain memory and a buffer
 * held mapped stay fast; cause outside Pregate not found): 9 MiB buffers then fill at 2.4-2.7 GB/s,
 * 32 MiB at 6.1, 64 MiB at 8.1-8.8 (`tools/diag_fill.ts`, bench/results/README.md, session 5).
 */
export function stagingPlan(
  bytesPerExpert: number,
  perLayer: number,
): { stagingBytes: number; buffers: number } {
  const layer = perLayer * bytesPerExpert;
  const stagingBytes = Math.min(128 << 20, Math.max(1 << 16, Math.ceil(layer / 4) * 4));
  const need = Math.ceil(layer / stagingBytes) + 1;
  const cap = Math.max(3, Math.floor((256 << 20) / stagingBytes));
  return { stagingBytes, buffers: Math.max(3, Math.min(need, cap)) };
}

/** The offloading engine for one model and run state. */
export class OffloadEngine {
  readonly mode: Exclude<ExpertMode, "resident">;
  readonly pregatePolicy: PregatePolicy;
  /** When pre-gated copies are issued (see {@linkcode EngineOptions.prefetchAt}). */
  readonly prefetchAt: "sync" | "compute";
  /** Slots in the pool. */
  readonly slots: number;
  /** Bytes of one slot (all three projections). */
  readonly slotBytes: number;
  readonly allocator: SlotAllocator;
  readonly stats: EngineStats = {
    uploadBytes: 0,
    syncs: 0,
    syncSeconds: 0,
    uploadFillSeconds: 0,
    uploadStagingWaitSeconds: 0,
    uploadSeconds: 0,
    pregateHits: 0,
    pregateChosen: 0,
    cacheHits: 0,
    cacheLookups: 0,
  };
  /** The expert trace, when enabled. */
  readonly trace: TraceRecord[] | null;
  #step = 0;
  #prefetchTrace = new Map<number, { resident: Set<number>; uploaded: number[] }>();

  #gpu: Gpu;
  #cfg: ModelConfig;
  #host: HostExpertStore;
  #state: RunState;
  #moeLayers: number[];
  #next = new Map<number, number>();
  #pools = new Map<number, ExpertPool>();
  #pred = new Map<number, { ids: GPUBuffer; weights: GPUBuffer; logits: GPUBuffer }>();
  #predHost = new Map<number, Uint32Array>();
  #pregateRouter = new Map<number, ModelWeights["embed"]>();
  #readback: GPUBuffer;
  #tableScratch: Uint32Array;
  #uploader: Uploader;

  private constructor(
    gpu: Gpu,
    cfg: ModelConfig,
    host: HostExpertStore,
    state: RunState,
    weights: ModelWeights,
    opts: EngineOptions,
    slots: number,
    pool: ExpertPool,
  ) {
    this.#gpu = gpu;
    this.#cfg = cfg;
    this.#host = host;
    this.#state = state;
    this.mode = opts.mode;
    this.pregatePolicy = opts.pregate ?? "exact";
    const at = opts.prefetchAt ?? "auto";
    this.prefetchAt = at === "auto" ? "sync" : at;
    this.slots = slots;
    this.slotBytes = pool.bytes.gateUp * 2 + pool.bytes.down;
    this.trace = opts.trace ? [] : null;
    this.#moeLayers = cfg.layers.flatMap((l, i) => (l.ffn.kind === "moe" ? [i] : []));
    const E = host.experts;
    this.allocator = new SlotAllocator({
      experts: E,
      layers: this.#moeLayers,
      slots,
      policy: opts.cachePolicy ?? "lru",
    });
    this.#tableScratch = new Uint32Array(E);
    // Staging (mapped path, host-visible memory): one MoE layer's copies (top-k experts; all E for
    // prefetch-all) per buffer, at most 128 MiB; see stagingPlan.
    const perLayer = (f: MoeFfn) => (opts.mode === "prefetch-all" ? f.experts : f.topK);
    this.#uploader = createUploader(
      gpu,
      opts.uploader ?? "auto",
      stagingPlan(
        host.bytesPerExpert,
        Math.max(...this.#moeLayers.map((i) => perLayer(cfg.layers[i].ffn as MoeFfn))),
      ),
    );
    const maxK = Math.max(...this.#moeLayers.map((i) => (cfg.layers[i].ffn as MoeFfn).topK));
    this.#readback = gpu.createBuffer({
      size: 2 * state.maxT * maxK * U32,
      purpose: "readback",
      label: "engine.routing",
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | GPUBufferUsage.STORAGE,
    });
    for (let j = 0; j < this.#moeLayers.length; j++) {
      const i = this.#moeLayers[j];
      if (j + 1 < this.#moeLayers.length) this.#next.set(i, this.#moeLayers[j + 1]);
      // Each MoE layer sees the shared slot buffers through its own slot table.
      this.#pools.set(i, {
        ...pool,
        table: gpu.storage("experts", E * U32, `experts.table.${i}`),
      });
      const f = cfg.layers[i].ffn as MoeFfn;
      if (this.mode === "pregated" && j > 0) {
        this.#pred.set(i, {
          ids: gpu.storage("activations", state.maxT * f.topK * U32, `pregate.ids.${i}`),
          weights: gpu.storage("activations", state.maxT * f.topK * U32, `pregate.weights.${i}`),
          logits: gpu.storage("activations", state.maxT * f.experts * U32, `pregate.logits.${i}`),
        });
      }
    }
    if (this.mode === "pregated") {
      for (const [i, next] of this.#next) {
        const lw = weights.layers[i].ffn;
        const nw = weights.layers[next].ffn;
        if (lw.kind !== "moe" || nw.kind !== "moe") continue;
        this.#pregateRouter.set(i, lw.pregate ?? nw.router);
      }
    }
  }

  /**
   * Creates the engine: sizes the slot pool from the mode's minimum, the expert cache and the budget,
   * and allocates it. Call after the dense weights and the run state are on the GPU (they count
   * against the budget).
   *
   * @throws {BudgetError} when the budget cannot hold the mode's minimum slots (naming the smallest
   * budget that would work) or the pool exceeds the device's binding limit.
   */
  static create(
    gpu: Gpu,
    cfg: ModelConfig,
    store: TensorStore,
    weights: ModelWeights,
    state: RunState,
    opts: EngineOptions,
  ): OffloadEngine {
    const host = new HostExpertStore(cfg, store);
    const moe = cfg.layers.filter((l) => l.ffn.kind === "moe").map((l) => l.ffn as MoeFfn);
    const topK = Math.max(...moe.map((f) => f.topK));
    const E = host.experts;
    const min = SlotAllocator.minimumSlots(topK, opts.mode, E);
    const projection = expertSlotBytes(host.inter, host.hidden, host.dtype);
    const slotBytes = 3 * projection; // gate, up and down
    // Fixed costs besides the slots: slot tables, pre-gate buffers, the routing readback buffer.
    const fixed = moe.length * E * U32 +
      moe.length * state.maxT * (2 * topK + E) * U32 + 2 * state.maxT * topK * U32;
    const used = gpu.memory().current + fixed;
    const cache = opts.expertCache ?? 0;
    if (cache !== "auto" && (!Number.isInteger(cache) || cache < 0)) {
      throw new ArgumentError(
        "expertCache",
        `expected a non-negative integer or 'auto', got ${cache}`,
      );
    }
    if (cache === "auto" && opts.budget === undefined) {
      throw new ArgumentError(
        "expertCache",
        "'auto' sizes the cache from the GPU memory budget, and no budget was given",
        "add --budget SIZE (e.g. --budget 8GiB), or give a number of extra slots",
      );
    }
    const bindLimit = Math.floor(gpu.limits.maxStorageBufferBindingSize / projection);
    const allExperts = E * moe.length;
    let slots = cache === "auto" ? allExperts : min + cache;
    if (opts.budget !== undefined) {
      const fit = Math.floor((opts.budget - used) / slotBytes);
      if (fit < min) {
        const need = used + min * slotBytes;
        throw new BudgetError(
          `a GPU memory budget of ${fmt(opts.budget)} cannot hold ${opts.mode} mode: the dense ` +
            `weights, KV cache and activations take ${
              fmt(used)
            } and the mode needs at least ${min} ` +
            `expert slots of ${fmt(slotBytes)}; the smallest budget that works is ${fmt(need)} ` +
            `(${need} bytes)`,
          need,
          `use --budget ${Math.ceil(need / 2 ** 20)}MiB or more, or a smaller --context`,
        );
      }
      slots = cache === "auto" ? Math.min(fit, allExperts) : Math.min(slots, fit);
      if (cache !== "auto" && min + cache > fit) {
        throw new BudgetError(
          `--expert-cache ${cache} needs ${min + cache} slots; the budget ${
            fmt(opts.budget)
          } holds ` +
            `${fit}`,
          used + (min + cache) * slotBytes,
          `use --expert-cache ${fit - min} or auto`,
        );
      }
    }
    slots = Math.min(Math.max(slots, min), Math.max(bindLimit, 0));
    if (slots < min) {
      throw new BudgetError(
        `${opts.mode} mode needs ${min} expert slots but this GPU binds at most ${bindLimit} ` +
          `(maxStorageBufferBindingSize ${gpu.limits.maxStorageBufferBindingSize})`,
      );
    }
    const pool = expertPool(gpu, E, slots, host.inter, host.hidden, host.dtype);
    return new OffloadEngine(gpu, cfg, host, state, weights, opts, slots, pool);
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
        const next = this.#next.get(layer);
        const router = this.#pregateRouter.get(layer);
        if (next === undefined || !router) return undefined;
        const p = this.#pred.get(next)!;
        return {
          router,
          next: this.#cfg.layers[next].ffn as MoeFfn,
          ids: p.ids,
          weights: p.weights,
          logits: p.logits,
        };
      },
    };
  }

  /** Runs `plan` (built with {@linkcode planHooks}) over `T` tokens, layer by layer. */
  async run(plan: ForwardPlan): Promise<void> {
    const gpu = this.#gpu, s = this.#state, T = plan.T;
    let steps: Step[] = [...plan.embed];
    const step = this.#step++;
    let deferred: (() => Promise<void>) | null = null;
    for (let i = 0; i < plan.layers.length; i++) {
      const l = plan.layers[i];
      steps.push(...l.attention);
      if (l.ffn.kind === "dense") {
        steps.push(...l.ffn.steps);
        continue;
      }
      const f = l.ffn, k = f.ffn.topK, E = f.ffn.experts;
      steps.push(...f.route, ...f.pregate);
      const next = this.#next.get(i);
      const pairs = T * k;
      let chosen: number[] | null = null, predictedNext: Uint32Array | null = null;
      if (this.mode !== "prefetch-all") {
        // One readback: this layer's routing (and the pre-gate's prediction for the next layer).
        const half = this.#readback.size / 2;
        steps.push({
          src: s.topIds,
          srcOffset: 0,
          dst: this.#readback,
          dstOffset: 0,
          size: pairs * U32,
        });
        const pred = next !== undefined ? this.#pred.get(next) : undefined;
        if (pred) {
          steps.push({
            src: pred.ids,
            srcOffset: 0,
            dst: this.#readback,
            dstOffset: half,
            size: pairs * U32,
          });
        }
        gpu.submit(steps);
        steps = [];
        const t0 = performance.now(), u0 = this.stats.uploadSeconds;
        // The readback's copy is submitted now; while it is in flight (GPU compute + the
        // implementation's sync latency), issue the copies the pre-gate asked for this layer.
        const reading = gpu.readU32(this.#readback, 0, pred ? half / U32 + pairs : pairs);
        if (deferred) {
          await deferred();
          this.#uploader.flush();
          deferred = null;
        }
        const words = await reading;
        const waited = (performance.now() - t0) / 1e3 - (this.stats.uploadSeconds - u0);
        this.stats.syncSeconds += Math.max(waited, 0);
        this.stats.syncs++;
        chosen = distinct(words.subarray(0, pairs));
        if (pred) predictedNext = words.subarray(half / U32, half / U32 + pairs).slice();
      }
      // The experts this layer computes with, and the prediction made for it one layer earlier.
      const predictedHere = this.#predHost.get(i);
      const strict = this.mode === "pregated" && this.pregatePolicy === "strict" && predictedHere;
      const compute = this.mode === "prefetch-all"
        ? range(E)
        : strict
        ? distinct(predictedHere!)
        : chosen!;
      if (predictedHere && chosen) {
        const pset = new Set(predictedHere);
        this.stats.pregateChosen += chosen.length;
        this.stats.pregateHits += chosen.filter((e) => pset.has(e)).length;
      }
      // Trace: what was resident before this layer's prefetch (cache hits) and what was copied in.
      const early = this.#prefetchTrace.get(i);
      this.#prefetchTrace.delete(i);
      const residentBefore = this.trace
        ? compute.filter((e) =>
          early ? early.resident.has(e) : this.allocator.slotOf(i, e) !== undefined
        )
        : [];
      const uploaded: number[] = early ? [...early.uploaded] : [], onDemand: number[] = [];
      // Compute, in rounds of at most `slots` experts (one round unless a batch needs more).
      const rounds = chunks(compute, this.slots);
      for (let r = 0; r < rounds.length; r++) {
        const got = this.allocator.acquire(i, rounds[r], "compute");
        this.stats.cacheHits += got.hits;
        this.stats.cacheLookups += got.hits + got.misses;
        await this.#upload(i, got.uploads);
        for (const u of got.uploads) {
          uploaded.push(u.expert);
          onDemand.push(u.expert);
        }
        this.#uploader.flush();
        const table = this.#tableScratch.fill(NO_SLOT);
        for (const e of rounds[r]) table[e] = this.allocator.slotOf(i, e)!;
        gpu.write(this.#pools.get(i)!.table, table);
        const last = r + 1 === rounds.length;
        steps.push(
          ...(rounds.length === 1 ? f.experts : last ? [...f.round, ...f.finish] : f.round),
        );
        gpu.submit(steps);
        steps = [];
        if (!last) this.allocator.release(i);
      }
      // Prefetch the next MoE layer's experts. prefetch-all copies them now, while this layer
      // computes. pregated defers the copies until the next layer's routing readback is in flight
      // (above): they then overlap the GPU's work and the sync latency instead of preceding them.
      const prefetch = async (want: number[]) => {
        const nl = next!;
        const room = this.slots - this.allocator.pinnedSlots();
        const resident = this.trace
          ? new Set(range(E).filter((e) => this.allocator.slotOf(nl, e) !== undefined))
          : new Set<number>();
        const got = this.allocator.acquire(nl, want.slice(0, Math.max(room, 0)), "prefetch");
        await this.#upload(nl, got.uploads);
        if (this.trace) {
          this.#prefetchTrace.set(nl, { resident, uploaded: got.uploads.map((u) => u.expert) });
        }
      };
      if (next !== undefined && this.mode === "prefetch-all") {
        await prefetch(range(E));
        this.#uploader.flush();
      }
      this.allocator.release(i);
      if (next !== undefined && this.mode === "pregated" && predictedNext) {
        const want = distinct(predictedNext);
        this.#predHost.set(next, predictedNext);
        if (this.prefetchAt === "compute") {
          await prefetch(want);
          this.#uploader.flush();
        } else deferred = () => prefetch(want);
      }
      this.trace?.push({
        step,
        tokens: T,
        layer: i,
        chosen: chosen ?? compute,
        predicted: predictedHere ? distinct(predictedHere) : null,
        resident: residentBefore,
        uploaded: distinct(uploaded),
        onDemand,
      });
    }
    steps.push(...plan.head);
    gpu.submit(steps);
  }

  /** Copies the allocator's uploads for `layer` as one batch (their fills share the copy threads). */
  async #upload(layer: number, uploads: readonly { expert: number; slot: number }[]) {
    if (uploads.length === 0) return;
    const t0 = performance.now();
    const u0 = this.#uploader.stats;
    const pool = this.#pools.get(layer)!;
    this.stats.uploadBytes += await this.#host.uploadMany(this.#uploader, layer, uploads, pool);
    this.stats.uploadSeconds += (performance.now() - t0) / 1e3;
    const u1 = this.#uploader.stats;
    this.stats.uploadFillSeconds += u1.fillSeconds - u0.fillSeconds;
    this.stats.uploadStagingWaitSeconds += u1.waitSeconds - u0.waitSeconds;
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
    for (const p of this.#pools.values()) {
      [p.gate, p.up, p.down, p.table].forEach((b) => seen.add(b));
    }
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
    this.#predHost.clear();
    this.#prefetchTrace.clear();
    this.#step = 0;
    if (this.trace) this.trace.length = 0;
  }
}

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

function fmt(bytes: number): string {
  return bytes >= 2 ** 30
    ? `${(bytes / 2 ** 30).toFixed(2)} GiB`
    : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
