import assert from "node:assert/strict";
import { ArgumentError } from "../base/errors.ts";
import { assertThrows } from "../test_util.ts";
import { rng } from "../../kernels/test_util.ts";
import {
  type CachePool,
  type ExpertRequest,
  onDemandRequests,
  simulateAllocator,
  simulateOptimal,
} from "./belady.ts";
import { Scheduler } from "./schedule.ts";

/** Single-expert requests of layer 0. */
const singles = (ids: number[]): ExpertRequest[] => ids.map((e) => ({ layer: 0, experts: [e] }));

/** The most hits any demand-paging schedule gets: every eviction choice tried (tiny streams only). */
function bruteForceHits(requests: readonly ExpertRequest[], pool: CachePool): number {
  const ord = new Map(pool.layers.map((l, i) => [l, i]));
  const keys = requests.map((r) => r.experts.map((e) => ord.get(r.layer)! * pool.experts + e));
  const memo = new Map<string, number>();
  const go = (i: number, resident: number[]): number => {
    if (i === keys.length) return 0;
    const id = `${i}|${resident}`;
    const known = memo.get(id);
    if (known !== undefined) return known;
    const want = keys[i];
    const hits = want.filter((k) => resident.includes(k)).length;
    const misses = want.filter((k) => !resident.includes(k));
    const evict = Math.max(0, resident.length + misses.length - pool.slots);
    const candidates = resident.filter((k) => !want.includes(k));
    let best = -1;
    for (const victims of subsets(candidates, evict)) {
      const next = [...resident.filter((k) => !victims.includes(k)), ...misses].sort((a, b) =>
        a - b
      );
      best = Math.max(best, go(i + 1, next));
    }
    memo.set(id, hits + best);
    return hits + best;
  };
  return go(0, []);
}

function subsets<T>(xs: T[], n: number): T[][] {
  if (n === 0) return [[]];
  if (xs.length < n) return [];
  const [head, ...rest] = xs;
  return [...subsets(rest, n - 1).map((s) => [head, ...s]), ...subsets(rest, n)];
}

/** A random stream: layers and expert sets (1..maxSize experts, distinct) drawn from `seed`. */
function randomRequests(
  seed: number,
  n: number,
  pool: CachePool,
  maxSize: number,
): ExpertRequest[] {
  const r = rng(seed);
  // Skewed expert popularity, as trained routers have.
  const pick = () => Math.min(pool.experts - 1, Math.floor(pool.experts * r() * r()));
  return Array.from({ length: n }, () => {
    const layer = pool.layers[Math.floor(r() * pool.layers.length)];
    const size = 1 + Math.floor(r() * maxSize);
    const set = new Set<number>();
    while (set.size < size) set.add(r() < 0.7 ? pick() : Math.floor(r() * pool.experts));
    return { layer, experts: [...set] };
  });
}

Deno.test("OPT and LRU on the textbook reference string: 9 and 12 faults with 3 frames", () => {
  // Silberschatz, Operating System Concepts: 7 0 1 2 0 3 0 4 2 3 0 3 2 1 2 0 1 7 0 1.
  const ids = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1];
  const pool = { experts: 8, layers: [0], slots: 3 };
  const opt = simulateOptimal(singles(ids), pool);
  const lru = simulateAllocator(singles(ids), pool, "lru");
  assert.deepEqual([opt.requested, opt.hits], [20, 11]);
  assert.deepEqual([lru.requested, lru.hits], [20, 8]);
  assert.equal(opt.hitRate, 11 / 20);
});

Deno.test("OPT never evicts an expert of the request it is placing", () => {
  // Slots 2. After [0], [1]: request {1, 2}. Expert 1 is next used never, 0 at once; a plain
  // farthest-next-use rule would evict 1 (in the request) and break co-residency.
  const pool = { experts: 4, layers: [0], slots: 2 };
  const reqs = [[0], [1], [1, 2], [0]].map((experts) => ({ layer: 0, experts }));
  const r = simulateOptimal(reqs, pool, { perRequest: true });
  assert.deepEqual(r.perRequest, [0, 0, 1, 0], "0 had to go for 2; the last [0] misses");
  assert.equal(r.hits, bruteForceHits(reqs, pool));
});

Deno.test("a stream over two layers: OPT keeps what comes back soonest, LRU what came last", () => {
  const records = [
    { layer: 1, chosen: [0, 1] },
    { layer: 3, chosen: [2, 3] },
    { layer: 1, chosen: [0, 2] },
    { layer: 3, chosen: [2, 3] },
  ];
  const pool = { experts: 4, layers: [1, 3], slots: 3 };
  const reqs = onDemandRequests(records, pool.slots);
  // LRU: layer 3's expert 3 evicts layer 1's 0; layer 1's {0, 2} then evicts 1 and layer 3's 2.
  assert.deepEqual(simulateAllocator(reqs, pool, "lru", { perRequest: true }).perRequest, [
    0,
    0,
    0,
    1,
  ]);
  // OPT: 3 evicts layer 1's 1 (never used again), so 0 hits; then 2 (tie with 3: lower key) goes.
  assert.deepEqual(simulateOptimal(reqs, pool, { perRequest: true }).perRequest, [0, 0, 1, 1]);
  assert.equal(bruteForceHits(reqs, pool), 2);
});

Deno.test("onDemandRequests: distinct experts ascending, in rounds of at most `slots`", () => {
  const reqs = onDemandRequests([{ layer: 2, chosen: [5, 1, 3, 1] }, { layer: 4, chosen: [0] }], 2);
  assert.deepEqual(reqs, [
    { layer: 2, experts: [1, 3] },
    { layer: 2, experts: [5] },
    { layer: 4, experts: [0] },
  ]);
});

Deno.test("the offline replay equals the on-demand scheduler's cache hits (rounds included)", () => {
  for (let seed = 1; seed <= 40; seed++) {
    const r = rng(seed);
    const pool = { experts: 6, layers: [0, 2, 5], slots: 2 + Math.floor(r() * 8) };
    const policy = seed % 2 ? "lru" : "lfu";
    const s = new Scheduler({ mode: "on-demand", ...pool, cachePolicy: policy });
    const records: { layer: number; chosen: number[] }[] = [];
    let engineHits = 0, engineLookups = 0;
    for (let pass = 0; pass < 12; pass++) {
      const tokens = pass % 5 === 0 ? 3 : 1; // some prefill-like passes: unions of 3 tokens
      s.beginPass(tokens);
      for (const layer of pool.layers) {
        const routed = new Uint32Array(tokens * 2);
        for (let t = 0; t < tokens; t++) {
          const a = Math.floor(r() * 6), b = (a + 1 + Math.floor(r() * 5)) % 6;
          routed.set([a, b], 2 * t);
        }
        const rep = s.layer(layer, routed, null).report;
        engineHits += rep.cacheHits;
        engineLookups += rep.cacheLookups;
        records.push({ layer, chosen: rep.chosen });
      }
    }
    const sim = simulateAllocator(onDemandRequests(records, pool.slots), pool, policy);
    assert.deepEqual([sim.hits, sim.requested], [engineHits, engineLookups], `seed ${seed}`);
  }
});

Deno.test("property: OPT >= LRU and >= LFU, <= all but the first use of each expert, and equals exhaustive search on small streams", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const small = seed <= 120;
    const pool = {
      experts: small ? 4 : 8,
      layers: small ? [0, 1] : [0, 1, 2, 3],
      slots: 2 + (seed % (small ? 3 : 12)),
    };
    const reqs = randomRequests(seed, small ? 9 : 400, pool, 2);
    const opt = simulateOptimal(reqs, pool);
    const lru = simulateAllocator(reqs, pool, "lru");
    const lfu = simulateAllocator(reqs, pool, "lfu");
    const at = `seed ${seed}, slots ${pool.slots}`;
    assert.ok(opt.hits >= lru.hits, `${at}: OPT ${opt.hits} < LRU ${lru.hits}`);
    assert.ok(opt.hits >= lfu.hits, `${at}: OPT ${opt.hits} < LFU ${lfu.hits}`);
    const distinct = new Set(reqs.flatMap((q) => q.experts.map((e) => `${q.layer}/${e}`))).size;
    assert.ok(opt.hits <= opt.requested - distinct, `${at}: more hits than reuses`);
    assert.equal(opt.requested, lru.requested);
    if (small) assert.equal(opt.hits, bruteForceHits(reqs, pool), at);
  }
});

Deno.test("property: OPT's hits never fall when the pool grows; a pool of every expert misses once each", () => {
  for (let seed = 1; seed <= 20; seed++) {
    const pool = { experts: 8, layers: [0, 1, 2], slots: 2 };
    const reqs = randomRequests(1000 + seed, 300, pool, 2);
    let last = -1;
    for (let slots = 2; slots <= 24; slots++) {
      const hits = simulateOptimal(reqs, { ...pool, slots }).hits;
      assert.ok(hits >= last, `seed ${seed}: ${slots} slots ${hits} < ${last}`);
      last = hits;
    }
    const distinct = new Set(reqs.flatMap((q) => q.experts.map((e) => `${q.layer}/${e}`))).size;
    for (const policy of ["lru", "lfu"] as const) {
      const all = simulateAllocator(reqs, { ...pool, slots: 24 }, policy);
      assert.equal(all.hits, all.requested - distinct);
    }
    assert.equal(last, reqs.reduce((n, q) => n + q.experts.length, 0) - distinct);
  }
});

Deno.test("bad streams and pools are typed errors naming the field", () => {
  const pool = { experts: 4, layers: [0, 2], slots: 2 };
  const bad = (reqs: ExpertRequest[], ...includes: string[]) => {
    assertThrows(() => simulateOptimal(reqs, pool), ArgumentError, ...includes);
    assertThrows(() => simulateAllocator(reqs, pool, "lru"), ArgumentError, ...includes);
  };
  bad([{ layer: 1, experts: [0] }], "requests[0].layer", "[0,2]");
  bad([{ layer: 0, experts: [0] }, { layer: 2, experts: [4] }], "requests[1].experts", "[0, 4)");
  bad([{ layer: 0, experts: [1, 1] }], "distinct");
  bad([{ layer: 0, experts: [0, 1, 2] }], "3 experts do not fit 2 slots");
  assertThrows(() => onDemandRequests([], 0), ArgumentError, "slots");
  assertThrows(() => simulateOptimal([], { ...pool, slots: 1.5 }), ArgumentError, "slots");
});
