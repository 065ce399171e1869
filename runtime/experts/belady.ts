/**
 * Expert-cache hit rates replayed offline from an expert trace: the request stream on-demand mode
 * makes, the hit rate of Pregate's own slot allocator (LRU or LFU) on it, and the best hit rate
 * any eviction policy could reach on the same stream (Belady's OPT: evict the expert whose next
 * use is farthest away). Pure functions, no GPU.
 *
 * Slot semantics are the allocator's (`./allocator.ts`) in on-demand mode: one pool of `slots`
 * slots shared by all MoE layers; a MoE layer's experts are acquired together (in rounds of at
 * most `slots` when they do not fit, as the scheduler does), pinned while acquired and released
 * after; every missing expert is copied into a slot (no bypass), an empty slot first, else an
 * unpinned victim's. A hit is a requested expert already resident; the rate is hits / requested
 * experts, as `expert_cache_hit_rate` counts it.
 *
 * @example
 * ```ts
 * import { onDemandRequests, simulateAllocator, simulateOptimal } from "./belady.ts";
 * const records = [
 *   { layer: 0, chosen: [0, 1] }, { layer: 1, chosen: [2, 3] },
 *   { layer: 0, chosen: [0, 2] }, { layer: 1, chosen: [2, 3] },
 * ];
 * const pool = { experts: 4, layers: [0, 1], slots: 3 };
 * const requests = onDemandRequests(records, pool.slots);
 * console.log(simulateAllocator(requests, pool, "lru").hits); // 1
 * console.log(simulateOptimal(requests, pool).hits); // 2
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { SlotAllocator } from "./allocator.ts";

/**
 * One acquisition: the distinct experts of one MoE layer that must be resident together.
 *
 * @example
 * ```ts
 * import type { ExpertRequest } from "./belady.ts";
 * const r: ExpertRequest = { layer: 3, experts: [1, 6] };
 * console.log(r.experts.length);
 * ```
 */
export interface ExpertRequest {
  /** The MoE layer's decoder layer index. */
  readonly layer: number;
  /** Distinct expert ids of that layer. */
  readonly experts: readonly number[];
}

/**
 * The slot pool a request stream is replayed on.
 *
 * @example
 * ```ts
 * import type { CachePool } from "./belady.ts";
 * const pool: CachePool = { experts: 8, layers: [0, 1, 2, 3], slots: 10 };
 * console.log(pool.slots);
 * ```
 */
export interface CachePool {
  /** Experts per MoE layer. */
  readonly experts: number;
  /** The MoE layers' decoder layer indices. */
  readonly layers: readonly number[];
  /** Slots in the pool (on-demand mode: top-k plus `--expert-cache`). */
  readonly slots: number;
}

/**
 * Hits of one replay. `hitRate` is null when nothing was requested.
 *
 * @example
 * ```ts
 * import type { CacheReplay } from "./belady.ts";
 * const r: CacheReplay = { requested: 4, hits: 1, hitRate: 0.25 };
 * console.log(r.requested - r.hits); // copies made
 * ```
 */
export interface CacheReplay {
  /** Experts requested (Σ |request|). */
  requested: number;
  /** Of those, already resident. */
  hits: number;
  /** hits / requested. */
  hitRate: number | null;
  /** Per request, its hits (when asked for with `perRequest`). */
  perRequest?: number[];
}

/**
 * The requests on-demand mode makes for a trace's routing: per record, in order, the distinct
 * `chosen` experts ascending, in rounds of at most `slots` (what the scheduler acquires). For an
 * on-demand trace these are the engine's own requests; for a trace of another mode with the
 * router's choices in `chosen`, they are what on-demand mode would have requested.
 *
 * @example
 * ```ts
 * import { onDemandRequests } from "./belady.ts";
 * console.log(onDemandRequests([{ layer: 2, chosen: [5, 1, 3] }], 2));
 * // [ { layer: 2, experts: [ 1, 3 ] }, { layer: 2, experts: [ 5 ] } ]
 * ```
 */
export function onDemandRequests(
  records: readonly { layer: number; chosen: readonly number[] }[],
  slots: number,
): ExpertRequest[] {
  checkSlots(slots);
  const out: ExpertRequest[] = [];
  for (const r of records) {
    const experts = [...new Set(r.chosen)].sort((a, b) => a - b);
    for (let i = 0; i < experts.length; i += slots) {
      out.push({ layer: r.layer, experts: experts.slice(i, i + slots) });
    }
  }
  return out;
}

/**
 * Replays `requests` on Pregate's {@linkcode SlotAllocator} with `policy`, as on-demand mode drives
 * it (acquire for compute, then release): the hit rate the engine measures on that stream.
 *
 * @example
 * ```ts
 * import { simulateAllocator } from "./belady.ts";
 * const pool = { experts: 4, layers: [0], slots: 2 };
 * const r = simulateAllocator([{ layer: 0, experts: [0, 1] }, { layer: 0, experts: [1, 2] }], pool, "lfu");
 * console.log(r.hits, r.requested); // 1 4
 * ```
 */
export function simulateAllocator(
  requests: readonly ExpertRequest[],
  pool: CachePool,
  policy: "lru" | "lfu",
  opts: { perRequest?: boolean } = {},
): CacheReplay {
  checkRequests(requests, pool);
  const alloc = new SlotAllocator({ ...pool, policy });
  const perRequest: number[] = [];
  let requested = 0, hits = 0;
  for (const r of requests) {
    const got = alloc.acquire(r.layer, r.experts, "compute");
    alloc.release(r.layer);
    requested += r.experts.length;
    hits += got.hits;
    if (opts.perRequest) perRequest.push(got.hits);
  }
  return replay(requested, hits, opts.perRequest ? perRequest : undefined);
}

/**
 * Belady's optimal replacement on the allocator's slot semantics: on a miss with no empty slot,
 * evict the unpinned resident expert whose next request is farthest away (never requested again
 * first; ties to the lower layer, then expert). No policy that copies every miss into a slot gets
 * more hits on the same stream and pool.
 *
 * @example
 * ```ts
 * import { simulateOptimal } from "./belady.ts";
 * const pool = { experts: 3, layers: [0], slots: 2 };
 * const reqs = [[0], [1], [2], [0], [1]].map((experts) => ({ layer: 0, experts }));
 * console.log(simulateOptimal(reqs, pool).hits); // 1 (keeps 0, evicts 1 for 2)
 * ```
 */
export function simulateOptimal(
  requests: readonly ExpertRequest[],
  pool: CachePool,
  opts: { perRequest?: boolean } = {},
): CacheReplay {
  const keys = checkRequests(requests, pool);
  // Each key's request indices, ascending; cursor[k] points at its next use at or after now.
  const uses = new Map<number, number[]>();
  keys.forEach((ks, i) => {
    for (const k of ks) {
      const list = uses.get(k);
      if (list) list.push(i);
      else uses.set(k, [i]);
    }
  });
  const cursor = new Map<number, number>();
  const nextUse = (k: number) => {
    const list = uses.get(k)!, c = cursor.get(k) ?? 0;
    return c < list.length ? list[c] : Infinity;
  };
  const resident = new Set<number>();
  const perRequest: number[] = [];
  let requested = 0, hits = 0;
  for (const ks of keys) {
    const wanted = new Set(ks);
    let here = 0;
    for (const k of ks) {
      cursor.set(k, (cursor.get(k) ?? 0) + 1); // past request i
      if (resident.has(k)) here++;
    }
    for (const k of ks) {
      if (resident.has(k)) continue;
      if (resident.size >= pool.slots) resident.delete(farthest(resident, wanted, nextUse));
      resident.add(k);
    }
    requested += ks.length;
    hits += here;
    if (opts.perRequest) perRequest.push(here);
  }
  return replay(requested, hits, opts.perRequest ? perRequest : undefined);
}

/** The unpinned resident key used farthest in the future (ties: the lowest key). */
function farthest(
  resident: ReadonlySet<number>,
  pinned: ReadonlySet<number>,
  nextUse: (k: number) => number,
): number {
  let best = -1, bestUse = -1;
  for (const k of resident) {
    if (pinned.has(k)) continue;
    const u = nextUse(k);
    if (u > bestUse || (u === bestUse && k < best)) [best, bestUse] = [k, u];
  }
  return best; // exists: every request fits the pool (checked)
}

function replay(requested: number, hits: number, perRequest?: number[]): CacheReplay {
  const r: CacheReplay = { requested, hits, hitRate: requested > 0 ? hits / requested : null };
  if (perRequest) r.perRequest = perRequest;
  return r;
}

function checkSlots(slots: number): void {
  if (!Number.isInteger(slots) || slots < 1) {
    throw new ArgumentError("slots", `expected an integer >= 1, found ${slots}`);
  }
}

/** Validates the stream against the pool; returns each request's keys (ordinal * experts + e). */
function checkRequests(requests: readonly ExpertRequest[], pool: CachePool): number[][] {
  checkSlots(pool.slots);
  const E = pool.experts;
  if (!Number.isInteger(E) || E < 1) {
    throw new ArgumentError("experts", `expected an integer >= 1, found ${E}`);
  }
  const ordinal = new Map(pool.layers.map((l, i) => [l, i]));
  return requests.map((r, i) => {
    const at = `requests[${i}]`, ord = ordinal.get(r.layer);
    if (ord === undefined) {
      throw new ArgumentError(
        `${at}.layer`,
        `${r.layer} is not in the pool's layers [${pool.layers}]`,
      );
    }
    if (new Set(r.experts).size !== r.experts.length) {
      throw new ArgumentError(`${at}.experts`, `expected distinct experts, found [${r.experts}]`);
    }
    if (r.experts.length > pool.slots) {
      throw new ArgumentError(
        `${at}.experts`,
        `${r.experts.length} experts do not fit ${pool.slots} slots`,
        "split the layer's experts into rounds of at most `slots` (onDemandRequests does)",
      );
    }
    return r.experts.map((e) => {
      if (!Number.isInteger(e) || e < 0 || e >= E) {
        throw new ArgumentError(`${at}.experts`, `expert ${e} is out of [0, ${E})`);
      }
      return ord * E + e;
    });
  });
}
