/**
 * The vocabulary of the expert slot allocator ({@linkcode NO_SLOT}, pins, modes, options, and what
 * its calls return), kept apart from the bookkeeping itself. Import these from `./allocator.ts`,
 * which re-exports every one.
 *
 * @example
 * ```ts
 * import { type AcquireResult, SlotAllocator, type Upload } from "./allocator.ts";
 * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
 * const r: AcquireResult = alloc.acquire(0, [1, 3], "compute");
 * const first: Upload = r.uploads[0];
 * console.log(first.slot, r.misses); // 0 2
 * ```
 * @module
 */

/**
 * The table entry of an expert that is not resident (`0xffffffff`, i.e. `u32` max).
 *
 * @example
 * ```ts
 * import { NO_SLOT, SlotAllocator } from "./allocator.ts";
 * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
 * console.log(alloc.table(0)[1] === NO_SLOT); // true
 * ```
 */
export const NO_SLOT = 0xffffffff;

/**
 * How a slot is pinned: `"compute"` (the layer's compute reads it) or `"prefetch"` (predicted for a
 * layer not yet computed).
 *
 * @example
 * ```ts
 * import { type PinKind, SlotAllocator } from "./allocator.ts";
 * const pin: PinKind = "prefetch";
 * new SlotAllocator({ experts: 4, layers: [0], slots: 2 }).acquire(0, [1], pin);
 * ```
 */
export type PinKind = "compute" | "prefetch";

/**
 * How the executor streams experts; decides the smallest pool ({@linkcode SlotAllocator.minimumSlots}).
 * `"on-demand"`: copy a layer's routed experts after its router ran. `"pregated"`: copy the next
 * layer's predicted experts while this layer computes. `"prefetch-all"`: copy all of the next
 * layer's experts while this layer computes.
 *
 * @example
 * ```ts
 * import { type OffloadMode, SlotAllocator } from "./allocator.ts";
 * const mode: OffloadMode = "pregated";
 * console.log(SlotAllocator.minimumSlots(2, mode, 8)); // 4
 * ```
 */
export type OffloadMode = "on-demand" | "pregated" | "prefetch-all";

/**
 * Options of a {@linkcode SlotAllocator}.
 *
 * @example
 * ```ts
 * import { type AllocatorOptions, SlotAllocator } from "./allocator.ts";
 * const opts: AllocatorOptions = { experts: 64, layers: [1, 3, 5], slots: 8, policy: "lfu" };
 * new SlotAllocator(opts);
 * ```
 */
export interface AllocatorOptions {
  /** Experts per MoE layer (ids are `0 .. experts-1`). */
  experts: number;
  /** The model's MoE layer indices (distinct non-negative integers, any order). */
  layers: readonly number[];
  /** Slots in the pool (each holds one expert of one layer). */
  slots: number;
  /**
   * Which unpinned resident expert to evict when no slot is empty (empty slots are always used
   * first). `"lru"` (default): the least recently acquired. `"lfu"`: the one acquired by the fewest
   * `acquire` calls since the allocator was created (counts survive eviction, so popular experts
   * win their place back), ties broken by LRU.
   */
  policy?: "lru" | "lfu";
}

/**
 * One host -> GPU copy to issue: expert `expert` of layer `layer` goes into slot `slot`, replacing
 * `evicted` when the slot held another expert.
 *
 * @example
 * ```ts
 * import { SlotAllocator, type Upload } from "./allocator.ts";
 * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
 * const up: Upload = alloc.acquire(0, [3], "compute").uploads[0];
 * console.log(up.layer, up.expert, up.slot, up.evicted); // 0 3 0 undefined
 * ```
 */
export interface Upload {
  /** The MoE layer index (as given in {@linkcode AllocatorOptions.layers}). */
  layer: number;
  /** The expert id within the layer. */
  expert: number;
  /** The destination slot, `0 .. slots-1`. */
  slot: number;
  /** The expert the slot held before, now no longer resident. */
  evicted?: { layer: number; expert: number };
}

/**
 * What one {@linkcode SlotAllocator.acquire} call did.
 *
 * @example
 * ```ts
 * import { type AcquireResult, SlotAllocator } from "./allocator.ts";
 * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
 * const r: AcquireResult = alloc.acquire(0, [1, 1, 2], "compute");
 * console.log(r.hits, r.misses, r.uploads.length); // 0 2 2
 * ```
 */
export interface AcquireResult {
  /** Uploads to issue, one per distinct non-resident expert, in order of first occurrence. */
  uploads: Upload[];
  /** Distinct requested experts that were already resident. */
  hits: number;
  /** Distinct requested experts that were not resident (= `uploads.length`). */
  misses: number;
}

/**
 * Running totals of a {@linkcode SlotAllocator} (distinct experts per call; duplicates count once).
 *
 * @example
 * ```ts
 * import { type AllocatorStats, SlotAllocator } from "./allocator.ts";
 * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
 * alloc.acquire(0, [0, 1], "prefetch");
 * const s: AllocatorStats = alloc.stats;
 * console.log(s.uploads, s.demandUploads); // 2 0
 * ```
 */
export interface AllocatorStats {
  /** Requested experts found resident. */
  hits: number;
  /** Requested experts not resident. */
  misses: number;
  /** Uploads that displaced a resident expert. */
  evictions: number;
  /** Uploads issued (every miss is one upload, so this equals `misses`). */
  uploads: number;
  /** Uploads issued by `"compute"` acquires: copies on the critical path (mispredictions). */
  demandUploads: number;
}

/**
 * What a slot holds, as returned by {@linkcode SlotAllocator.snapshot}.
 *
 * @example
 * ```ts
 * import { SlotAllocator, type SlotState } from "./allocator.ts";
 * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
 * alloc.acquire(0, [2], "compute");
 * const s: SlotState | null = alloc.snapshot()[0];
 * console.log(s); // { layer: 0, expert: 2, pin: "compute" }
 * ```
 */
export interface SlotState {
  /** The MoE layer index of the resident expert. */
  layer: number;
  /** The resident expert's id. */
  expert: number;
  /** Its pin, or `null` when it is evictable. */
  pin: PinKind | null;
}
