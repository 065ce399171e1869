/**
 * The expert slot allocator: pure bookkeeping (no GPU calls) for a pool of `slots` GPU expert slots
 * shared by every MoE layer. Each slot holds one expert of one layer; all experts have one size.
 * The executor tells it which experts a layer needs (`acquire`) and when the layer's compute has
 * been submitted (`release`); it answers with the uploads to issue (host -> slot), choosing victims
 * among unpinned resident experts by LRU or LFU, and keeps each layer's expert -> slot table.
 *
 * Pins: an acquired expert is pinned until `release(layer)`, so it is never evicted while a
 * submitted or upcoming compute may read it. A `"prefetch"` pin marks a prediction (Pre-gated MoE:
 * the pre-gate of block N chose block N+1's experts); a later `"compute"` acquire of that layer
 * turns the used predictions into compute pins and unpins the unused ones (they stay resident and
 * become evictable), so mispredicted experts can take their place.
 *
 * @example
 * ```ts
 * import { SlotAllocator } from "./allocator.ts";
 * const alloc = new SlotAllocator({ experts: 8, layers: [1, 3], slots: 4 });
 * // pregated step at layer 1: compute its routed experts, prefetch layer 3's predicted ones
 * const now = alloc.acquire(1, [2, 5], "compute"); // 2 uploads (cold)
 * const next = alloc.acquire(3, [0, 7], "prefetch"); // 2 uploads, overlap with layer 1's compute
 * const table = alloc.table(1); // expert -> slot, written to the GPU before layer 1's compute
 * alloc.release(1); // after submitting layer 1's compute
 * const later = alloc.acquire(3, [7, 4], "compute"); // 7 was predicted: 1 hit, 1 miss
 * console.log(now.uploads.length, next.uploads.length, table[2], later.hits, later.misses);
 * ```
 * @module
 */
import { ArgumentError, BudgetError } from "../base/errors.ts";
import { EvictionHeap } from "./allocator_heap.ts";
import {
  type AcquireResult,
  type AllocatorOptions,
  type AllocatorStats,
  NO_SLOT,
  type OffloadMode,
  type PinKind,
  type SlotState,
  type Upload,
} from "./allocator_types.ts";

export {
  type AcquireResult,
  type AllocatorOptions,
  type AllocatorStats,
  NO_SLOT,
  type OffloadMode,
  type PinKind,
  type SlotState,
  type Upload,
} from "./allocator_types.ts";

const UNPINNED = 0, PREFETCH = 1, COMPUTE = 2;

/**
 * The slot pool bookkeeping. State lives in typed arrays indexed by `key = layerOrdinal * experts +
 * expert` and by slot, sized once in the constructor; unpinned resident slots sit in an indexed
 * binary heap ordered by the eviction policy, so an acquire costs O(n + misses * log slots) and
 * allocates only its result. Slots are filled in index order and never become empty again.
 *
 * Guarantees (checked by the tests after every operation): a pinned slot is never evicted; an
 * expert already resident is never uploaded; no expert is in two slots; at most `slots` slots are
 * used; every acquired expert stays resident and pinned until `release` of its layer (or, for a
 * `"prefetch"` pin, until a `"compute"` acquire of its layer that does not use it). A call that
 * throws changes nothing.
 *
 * @example
 * ```ts
 * import { NO_SLOT, SlotAllocator } from "./allocator.ts";
 * const k = 2, experts = 8;
 * const alloc = new SlotAllocator({
 *   experts,
 *   layers: [0, 1],
 *   slots: SlotAllocator.minimumSlots(k, "on-demand", experts),
 * });
 * const table = new Uint32Array(experts);
 * for (const layer of [0, 1]) {
 *   const { uploads } = alloc.acquire(layer, [3, 6], "compute");
 *   // for (const u of uploads) queue.writeBuffer(pool, u.slot * expertBytes, hostExpert(u))
 *   alloc.table(layer, table); // table[3], table[6] are slots; others NO_SLOT
 *   // queue.writeBuffer(tableBuffer, 0, table); submit the layer's expert compute
 *   alloc.release(layer);
 *   console.log(uploads.length, table[0] === NO_SLOT);
 * }
 * ```
 */
export class SlotAllocator {
  /** Experts per MoE layer. */
  readonly experts: number;
  /** Slots in the pool. */
  readonly slots: number;
  /** The MoE layer indices, as given. */
  readonly layers: readonly number[];
  /** The eviction policy. */
  readonly policy: "lru" | "lfu";
  readonly #stats: AllocatorStats = {
    hits: 0,
    misses: 0,
    evictions: 0,
    uploads: 0,
    demandUploads: 0,
  };

  // layer index -> ordinal (-1: not an MoE layer)
  readonly #ordinal: Int32Array;
  // per key (ordinal * experts + expert)
  readonly #slotOfKey: Int32Array; // -1: not resident
  readonly #lastUse: Float64Array; // tick of the last acquire (LRU)
  readonly #uses: Float64Array; // acquire calls so far (LFU)
  readonly #stamp: Uint32Array; // per-call dedupe mark
  readonly #order: Uint32Array; // per-call rank of first occurrence
  // per slot
  readonly #keyOfSlot: Int32Array; // -1: empty
  readonly #pin: Uint8Array; // UNPINNED | PREFETCH | COMPUTE
  // pinned slots of each layer: #pinList[ordinal * experts .. + #pinLen[ordinal]]
  readonly #pinList: Int32Array;
  readonly #pinLen: Int32Array;
  // unpinned resident slots, the next victim on top
  readonly #heap: EvictionHeap;
  #filled = 0; // slots 0 .. #filled-1 hold an expert
  #pinned = 0;
  #tick = 0;
  #epoch = 0;

  /**
   * Creates an empty pool. Throws {@linkcode ArgumentError} naming the bad option.
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 128, layers: [1, 3, 5, 7], slots: 16 });
   * console.log(alloc.residentCount()); // 0
   * ```
   */
  constructor(opts: AllocatorOptions) {
    const { experts, layers, slots } = opts;
    const policy = opts.policy ?? "lru";
    if (!Number.isInteger(experts) || experts < 1 || experts > 0x10000) {
      throw new ArgumentError("experts", `expected an integer in [1, 65536], got ${experts}`);
    }
    if (!Number.isInteger(slots) || slots < 1 || slots > 0x1000000) {
      throw new ArgumentError("slots", `expected an integer in [1, 16777216], got ${slots}`);
    }
    if (policy !== "lru" && policy !== "lfu") {
      throw new ArgumentError("policy", `expected "lru" or "lfu", got ${JSON.stringify(policy)}`);
    }
    if (!Array.isArray(layers) || layers.length === 0) {
      throw new ArgumentError("layers", "expected a non-empty array of MoE layer indices");
    }
    let maxLayer = 0;
    for (const l of layers) {
      if (!Number.isInteger(l) || l < 0 || l > 0xffff) {
        throw new ArgumentError("layers", `expected layer indices in [0, 65535], got ${l}`);
      }
      maxLayer = Math.max(maxLayer, l);
    }
    if (layers.length * experts > 0x1000000) {
      throw new ArgumentError(
        "layers",
        `${layers.length} layers x ${experts} experts exceeds 16777216 experts in all`,
      );
    }
    this.#ordinal = new Int32Array(maxLayer + 1).fill(-1);
    layers.forEach((l, i) => {
      if (this.#ordinal[l] !== -1) {
        throw new ArgumentError("layers", `layer ${l} is listed twice`);
      }
      this.#ordinal[l] = i;
    });
    this.experts = experts;
    this.slots = slots;
    this.layers = Object.freeze([...layers]);
    this.policy = policy;
    const keys = layers.length * experts;
    this.#slotOfKey = new Int32Array(keys).fill(-1);
    this.#lastUse = new Float64Array(keys);
    this.#uses = new Float64Array(keys);
    this.#stamp = new Uint32Array(keys);
    this.#order = new Uint32Array(keys);
    this.#keyOfSlot = new Int32Array(slots).fill(-1);
    this.#pin = new Uint8Array(slots);
    this.#pinList = new Int32Array(keys);
    this.#pinLen = new Int32Array(layers.length);
    this.#heap = new EvictionHeap(slots, (a, b) => this.#before(a, b));
  }

  /**
   * Running totals (see {@linkcode AllocatorStats}); a live view, updated by every acquire.
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
   * alloc.acquire(0, [0, 1], "compute");
   * console.log(alloc.stats); // { hits: 0, misses: 2, evictions: 0, uploads: 2, demandUploads: 2 }
   * ```
   */
  get stats(): Readonly<AllocatorStats> {
    return this.#stats;
  }

  /**
   * The smallest pool for a mode, such that driving the allocator as documented never throws
   * {@linkcode BudgetError}. `topK` is the number of distinct experts one layer needs per step
   * (`active` below): the router's top-k at batch 1, `batch * topK` for a batch (the union; values
   * above `experts` are clamped).
   *
   * - `"on-demand"`: `active`. Only the current layer is pinned: acquire, compute, release.
   * - `"pregated"`: `2 * active`. The current layer's compute set and the next layer's predicted
   *   set are pinned together (double buffer: current + next). A compute acquire unpins the
   *   unused predictions before placing mispredicted experts, so on-demand fixes fit too, whether
   *   the next layer's prefetch is issued before or after the current compute acquire.
   * - `"prefetch-all"`: `experts`. A layer computes with all its experts; it is released before
   *   all of the next layer's experts are prefetched (the scheduler's order: the copies are queued
   *   after the compute that read the slots, and WebGPU runs the queue in order).
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * console.log(SlotAllocator.minimumSlots(2, "on-demand", 8)); // 2
   * console.log(SlotAllocator.minimumSlots(2, "pregated", 8)); // 4
   * console.log(SlotAllocator.minimumSlots(2, "prefetch-all", 8)); // 8
   * ```
   */
  static minimumSlots(topK: number, mode: OffloadMode, experts: number): number {
    if (!Number.isInteger(experts) || experts < 1) {
      throw new ArgumentError("experts", `expected a positive integer, got ${experts}`);
    }
    if (!Number.isInteger(topK) || topK < 1) {
      throw new ArgumentError("topK", `expected a positive integer, got ${topK}`);
    }
    const active = Math.min(topK, experts);
    switch (mode) {
      case "on-demand":
        return active;
      case "pregated":
        return 2 * active;
      case "prefetch-all":
        return experts;
      default:
        throw new ArgumentError(
          "mode",
          `expected "on-demand", "pregated" or "prefetch-all", got ${JSON.stringify(mode)}`,
        );
    }
  }

  /**
   * Makes the distinct experts in `experts` (duplicates allowed: a batch's union) of `layer`
   * resident and pins them with `pin`, returning the uploads for those not resident. Hits are
   * pinned first; each miss then takes the lowest empty slot, else evicts the policy's victim among
   * unpinned slots. A `"compute"` acquire first unpins this layer's `"prefetch"` pins that are not
   * in `experts` (predicted but unused: they stay resident, evictable) and turns the used ones into
   * compute pins; earlier compute pins of the layer are kept. A `"prefetch"` acquire adds to the
   * layer's pins and never downgrades a compute pin. Every requested expert counts as acquired
   * (LRU recency in order of first occurrence, LFU count +1).
   *
   * Throws {@linkcode BudgetError} when the pins would exceed the pool (nothing is changed), and
   * {@linkcode ArgumentError} for an unknown layer, an expert id out of range or a bad `pin`.
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 8, layers: [0, 1], slots: 4 });
   * alloc.acquire(1, [2, 3], "prefetch"); // predicted for layer 1
   * const r = alloc.acquire(1, [3, 5, 3], "compute"); // 3 hit; 5 uploaded; 2 unpinned
   * console.log(r.hits, r.misses, r.uploads[0].expert); // 1 1 5
   * ```
   */
  acquire(layer: number, experts: readonly number[], pin: PinKind): AcquireResult {
    const ord = this.#layerOrdinal(layer);
    if (pin !== "compute" && pin !== "prefetch") {
      throw new ArgumentError(
        "pin",
        `expected "compute" or "prefetch", got ${JSON.stringify(pin)}`,
      );
    }
    const want = pin === "compute" ? COMPUTE : PREFETCH;
    const E = this.experts, base = ord * E;
    const stamp = this.#stamp, slotOfKey = this.#slotOfKey, pins = this.#pin;
    if (this.#epoch >= 0xfffffffd) {
      stamp.fill(0);
      this.#epoch = 0;
    }
    const mark = ++this.#epoch; // requested in this call
    const done = ++this.#epoch; // requested and processed

    // Pass 1 (no state change): validate, dedupe, count what the pins would become.
    let distinct = 0, hits = 0, newlyPinned = 0;
    for (let i = 0; i < experts.length; i++) {
      const e = experts[i];
      if (!Number.isInteger(e) || e < 0 || e >= E) {
        throw new ArgumentError(
          "experts",
          `experts[${i}] = ${e} is not an expert id of layer ${layer} (expected an integer in [0, ${E}))`,
        );
      }
      const key = base + e;
      if (stamp[key] === mark) continue;
      stamp[key] = mark;
      this.#order[key] = distinct++;
      const s = slotOfKey[key];
      if (s >= 0) {
        hits++;
        if (pins[s] === UNPINNED) newlyPinned++;
      }
    }
    let dropped = 0;
    const listStart = ord * E;
    if (want === COMPUTE) {
      for (let j = listStart, end = listStart + this.#pinLen[ord]; j < end; j++) {
        const s = this.#pinList[j];
        if (pins[s] === PREFETCH && stamp[this.#keyOfSlot[s]] !== mark) dropped++;
      }
    }
    const misses = distinct - hits;
    const pinnedAfterHits = this.#pinned + newlyPinned - dropped;
    const needed = pinnedAfterHits + misses;
    if (needed > this.slots) {
      throw new BudgetError(
        `expert slot pool too small: acquire(layer ${layer}, ${distinct} distinct experts, "${pin}") ` +
          `needs ${misses} more slot(s) for non-resident experts, but ${pinnedAfterHits} of ` +
          `${this.slots} slots are pinned (${this.#pinned} before this call), so ${needed} slots ` +
          `are needed; minimum slot count for this call: ${needed}, pool has ${this.slots}`,
        undefined,
        `size the pool with SlotAllocator.minimumSlots(topK, mode, experts) (on-demand: topK, ` +
          `pregated: 2*topK, prefetch-all: experts; batch: topK = min(experts, batch*topK)) ` +
          `and release(layer) each layer once its compute is submitted`,
      );
    }

    // A compute acquire drops this layer's unused prefetch pins (compacting its pin list).
    if (dropped > 0) {
      let w = listStart;
      for (let j = listStart, end = listStart + this.#pinLen[ord]; j < end; j++) {
        const s = this.#pinList[j];
        if (pins[s] === PREFETCH && stamp[this.#keyOfSlot[s]] !== mark) this.#unpin(s);
        else this.#pinList[w++] = s;
      }
      this.#pinLen[ord] = w - listStart;
    }

    // Pass 2: pin the hits (before any miss can pick a victim).
    const tick0 = this.#tick;
    for (let i = 0; i < experts.length && hits > 0; i++) {
      const key = base + experts[i];
      if (stamp[key] !== mark) continue;
      const s = slotOfKey[key];
      if (s < 0) continue;
      stamp[key] = done;
      this.#pinSlot(s, ord, want);
      this.#touch(key, tick0);
    }

    // Pass 3: place the misses.
    const uploads: Upload[] = [];
    for (let i = 0; i < experts.length && uploads.length < misses; i++) {
      const key = base + experts[i];
      if (stamp[key] !== mark) continue;
      stamp[key] = done;
      let s: number;
      let evicted: Upload["evicted"];
      if (this.#filled < this.slots) {
        s = this.#filled++;
      } else {
        s = this.#heap.peek(); // non-empty: guaranteed by the budget check
        this.#heap.remove(s);
        const old = this.#keyOfSlot[s];
        slotOfKey[old] = -1;
        const oldOrd = (old / E) | 0;
        evicted = { layer: this.layers[oldOrd], expert: old - oldOrd * E };
        this.#stats.evictions++;
      }
      this.#keyOfSlot[s] = key;
      slotOfKey[key] = s;
      this.#pinSlot(s, ord, want);
      this.#touch(key, tick0);
      uploads.push(
        evicted
          ? { layer, expert: experts[i], slot: s, evicted }
          : { layer, expert: experts[i], slot: s },
      );
    }
    this.#tick = tick0 + distinct;
    const st = this.#stats;
    st.hits += hits;
    st.misses += misses;
    st.uploads += misses;
    if (want === COMPUTE) st.demandUploads += misses;
    return { uploads, hits, misses };
  }

  /**
   * Unpins every slot pinned for `layer` (compute and prefetch pins). The experts stay resident and
   * become evictable. Call it once the layer's compute is submitted: WebGPU queue order makes later
   * writes into those slots safe.
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 8, layers: [0], slots: 2 });
   * alloc.acquire(0, [1, 2], "compute");
   * alloc.release(0);
   * console.log(alloc.pinnedSlots(), alloc.residentCount()); // 0 2
   * ```
   */
  release(layer: number): void {
    const ord = this.#layerOrdinal(layer);
    const start = ord * this.experts;
    for (let j = start, end = start + this.#pinLen[ord]; j < end; j++) {
      this.#unpin(this.#pinList[j]);
    }
    this.#pinLen[ord] = 0;
  }

  /**
   * `layer`'s expert -> slot table: `out[e]` is the slot of expert `e`, or {@linkcode NO_SLOT} when
   * it is not resident. Pass `out` (at least `experts` long) to avoid allocating.
   *
   * @example
   * ```ts
   * import { NO_SLOT, SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 4, layers: [2], slots: 2 });
   * alloc.acquire(2, [3], "compute");
   * const t = alloc.table(2, new Uint32Array(4));
   * console.log(t[3], t[0] === NO_SLOT); // 0 true
   * ```
   */
  table(layer: number, out?: Uint32Array): Uint32Array {
    const ord = this.#layerOrdinal(layer);
    const E = this.experts;
    if (out === undefined) out = new Uint32Array(E);
    else if (!(out instanceof Uint32Array) || out.length < E) {
      throw new ArgumentError("out", `expected a Uint32Array of at least ${E} entries`);
    }
    const base = ord * E;
    for (let e = 0; e < E; e++) {
      const s = this.#slotOfKey[base + e];
      out[e] = s < 0 ? NO_SLOT : s;
    }
    return out;
  }

  /**
   * The slot holding `expert` of `layer`, or `undefined` when it is not resident.
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
   * alloc.acquire(0, [2], "prefetch");
   * console.log(alloc.slotOf(0, 2), alloc.slotOf(0, 1)); // 0 undefined
   * ```
   */
  slotOf(layer: number, expert: number): number | undefined {
    const ord = this.#layerOrdinal(layer);
    if (!Number.isInteger(expert) || expert < 0 || expert >= this.experts) {
      throw new ArgumentError(
        "expert",
        `expected an integer in [0, ${this.experts}), got ${expert}`,
      );
    }
    const s = this.#slotOfKey[ord * this.experts + expert];
    return s < 0 ? undefined : s;
  }

  /**
   * Slots currently pinned (by any layer).
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 4 });
   * alloc.acquire(0, [0, 1], "compute");
   * console.log(alloc.pinnedSlots()); // 2
   * ```
   */
  pinnedSlots(): number {
    return this.#pinned;
  }

  /**
   * Slots holding an expert (pinned or not).
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 4 });
   * alloc.acquire(0, [0, 1], "compute");
   * alloc.release(0);
   * console.log(alloc.residentCount()); // 2
   * ```
   */
  residentCount(): number {
    return this.#filled;
  }

  /**
   * Every slot's content, for tests and debugging (allocates): `null` for an empty slot.
   *
   * @example
   * ```ts
   * import { SlotAllocator } from "./allocator.ts";
   * const alloc = new SlotAllocator({ experts: 4, layers: [0], slots: 2 });
   * alloc.acquire(0, [1], "compute");
   * console.log(alloc.snapshot()); // [ { layer: 0, expert: 1, pin: "compute" }, null ]
   * ```
   */
  snapshot(): (SlotState | null)[] {
    const out: (SlotState | null)[] = [];
    for (let s = 0; s < this.slots; s++) {
      const key = this.#keyOfSlot[s];
      if (key < 0) {
        out.push(null);
        continue;
      }
      const ord = (key / this.experts) | 0;
      const p = this.#pin[s];
      out.push({
        layer: this.layers[ord],
        expert: key - ord * this.experts,
        pin: p === COMPUTE ? "compute" : p === PREFETCH ? "prefetch" : null,
      });
    }
    return out;
  }

  #layerOrdinal(layer: number): number {
    const ord = Number.isInteger(layer) && layer >= 0 && layer < this.#ordinal.length
      ? this.#ordinal[layer]
      : -1;
    if (ord < 0) {
      throw new ArgumentError(
        "layer",
        `${layer} is not an MoE layer of this allocator (MoE layers: ${this.layers.join(", ")})`,
      );
    }
    return ord;
  }

  #touch(key: number, tick0: number): void {
    this.#lastUse[key] = tick0 + this.#order[key];
    this.#uses[key]++;
  }

  /** Pins (or upgrades the pin of) slot `s`, which holds an expert of layer ordinal `ord`. */
  #pinSlot(s: number, ord: number, want: number): void {
    const p = this.#pin[s];
    if (p === UNPINNED) {
      if (this.#heap.has(s)) this.#heap.remove(s); // before its priority changes
      this.#pinList[ord * this.experts + this.#pinLen[ord]++] = s;
      this.#pinned++;
      this.#pin[s] = want;
    } else if (want > p) {
      this.#pin[s] = want;
    }
  }

  /** Unpins slot `s` (the caller fixes the pin list). */
  #unpin(s: number): void {
    this.#pin[s] = UNPINNED;
    this.#pinned--;
    this.#heap.insert(s);
  }

  /** True when slot `a` should be evicted before slot `b`. */
  #before(a: number, b: number): boolean {
    const ka = this.#keyOfSlot[a], kb = this.#keyOfSlot[b];
    if (this.policy === "lfu") {
      const ua = this.#uses[ka], ub = this.#uses[kb];
      if (ua !== ub) return ua < ub;
    }
    return this.#lastUse[ka] < this.#lastUse[kb];
  }
}
