import assert from "node:assert/strict";
import { ArgumentError, BudgetError } from "../errors.ts";
import {
  type AcquireResult,
  type AllocatorStats,
  type ExpertMode,
  NO_SLOT,
  type PinKind,
  SlotAllocator,
  type SlotState,
} from "./allocator.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

/** A seeded PRNG (mulberry32) returning floats in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Asserts that `fn` throws an instance of `cls` whose message includes every string; returns it. */
function assertThrows<E extends Error>(
  fn: () => unknown,
  cls: new (...args: never[]) => E,
  ...includes: string[]
): E {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    for (const s of includes) {
      assert.ok(e.message.includes(s), `expected "${s}" in: ${e.message}`);
    }
    return e;
  }
  throw new assert.AssertionError({ message: `expected ${cls.name} to be thrown` });
}

// ---------------------------------------------------------------------------------------------
// The shadow model: a plain re-statement of the allocator's contract (linear scans, no heap), run
// in lockstep with it. After every operation it checks all invariants and the exact victim choice.

interface HarnessOptions {
  experts: number;
  layers: readonly number[];
  slots: number;
  policy: "lru" | "lfu";
}

type Op = { kind: "acquire"; layer: number; experts: number[]; pin: PinKind } | {
  kind: "release";
  layer: number;
};

const NONE = 0, PREFETCH = 1, COMPUTE = 2;
const PIN_NAME = [null, "prefetch", "compute"] as const;

/** Runs a SlotAllocator and the shadow model side by side; with `check`, every call checks all. */
class Harness {
  alloc: SlotAllocator;
  readonly o: HarnessOptions;
  readonly E: number;
  // shadow state; a "key" is layerOrdinal * experts + expert
  cells: number[]; // per slot: key or -1
  pin: number[]; // per key: NONE | PREFETCH | COMPUTE
  lastUse: number[]; // per key: tick of the last acquire
  uses: number[]; // per key: acquire calls
  tick = 0;
  stats: AllocatorStats = { hits: 0, misses: 0, evictions: 0, uploads: 0, demandUploads: 0 };
  budgetErrors = 0;
  ops = 0;
  readonly log: Op[] = [];
  readonly #ord = new Map<number, number>();
  readonly #out: Uint32Array;

  constructor(o: HarnessOptions, public check = true) {
    this.o = o;
    this.E = o.experts;
    this.alloc = new SlotAllocator(o);
    o.layers.forEach((l, i) => this.#ord.set(l, i));
    const keys = o.layers.length * o.experts;
    this.cells = new Array(o.slots).fill(-1);
    this.pin = new Array(keys).fill(NONE);
    this.lastUse = new Array(keys).fill(0);
    this.uses = new Array(keys).fill(0);
    this.#out = new Uint32Array(o.experts + 3).fill(7);
  }

  /** A copy of this harness: the shadow copied, the allocator rebuilt by replaying the log. */
  clone(): Harness {
    const h = new Harness(this.o, this.check);
    for (const op of this.log) {
      try {
        if (op.kind === "release") h.alloc.release(op.layer);
        else h.alloc.acquire(op.layer, op.experts, op.pin);
      } catch (e) {
        if (!(e instanceof BudgetError)) throw e;
      }
    }
    h.log.push(...this.log);
    h.cells = [...this.cells];
    h.pin = [...this.pin];
    h.lastUse = [...this.lastUse];
    h.uses = [...this.uses];
    h.tick = this.tick;
    h.stats = { ...this.stats };
    h.budgetErrors = this.budgetErrors;
    h.ops = this.ops;
    return h;
  }

  key(layer: number, expert: number): number {
    return this.#ord.get(layer)! * this.E + expert;
  }

  #name(k: number): string {
    return `${this.o.layers[Math.floor(k / this.E)]}:${k % this.E}`;
  }

  /** The slot the policy must evict next: the least (uses, lastUse) / lastUse unpinned slot. */
  #victim(): number {
    let best = -1, bu = 0, bt = 0;
    this.cells.forEach((k, s) => {
      if (k < 0 || this.pin[k] !== NONE) return;
      const u = this.o.policy === "lfu" ? this.uses[k] : 0, t = this.lastUse[k];
      if (best < 0 || u < bu || (u === bu && t < bt)) [best, bu, bt] = [s, u, t];
    });
    return best;
  }

  acquire(layer: number, experts: readonly number[], pin: PinKind): AcquireResult | "budget" {
    this.ops++;
    this.log.push({ kind: "acquire", layer, experts: [...experts], pin });
    const distinct = [...new Set(experts)].map((e) => this.key(layer, e));
    const resident = (k: number): boolean => this.cells.includes(k);
    const hitList = distinct.filter(resident);
    const missList = distinct.filter((k) => !resident(k));
    const lo = this.#ord.get(layer)! * this.E, hi = lo + this.E;
    const dropped: number[] = [];
    if (pin === "compute") {
      for (let k = lo; k < hi; k++) {
        if (this.pin[k] === PREFETCH && !distinct.includes(k)) dropped.push(k);
      }
    }
    const pinnedBefore = this.pin.filter((p) => p !== NONE).length;
    const pinnedAfterHits = pinnedBefore - dropped.length +
      hitList.filter((k) => this.pin[k] === NONE).length;
    const needed = pinnedAfterHits + missList.length;

    const before = this.check ? this.alloc.snapshot() : undefined;
    let res: AcquireResult;
    try {
      res = this.alloc.acquire(layer, experts, pin);
    } catch (e) {
      if (!(e instanceof BudgetError) || needed <= this.o.slots) throw e;
      this.budgetErrors++;
      if (this.check) {
        assert.ok(e.message.includes(`minimum slot count for this call: ${needed}`), e.message);
        assert.ok(e.message.includes(`${pinnedAfterHits} of ${this.o.slots} slots are pinned`));
        assert.ok(e.message.includes("SlotAllocator.minimumSlots"), e.message);
        assert.deepEqual(this.alloc.snapshot(), before, "a failed acquire changed the pool");
        this.verify();
      }
      return "budget";
    }
    assert.ok(needed <= this.o.slots, `expected a BudgetError (needed ${needed})`);
    assert.equal(res.hits, hitList.length, "hits");
    assert.equal(res.misses, missList.length, "misses");
    assert.equal(res.uploads.length, missList.length, "uploads = the non-resident experts");

    const want = pin === "compute" ? COMPUTE : PREFETCH;
    for (const k of dropped) this.pin[k] = NONE;
    for (const k of hitList) this.pin[k] = Math.max(this.pin[k], want);
    res.uploads.forEach((u, j) => {
      assert.equal(u.layer, layer);
      assert.equal(this.key(layer, u.expert), missList[j], "uploads in order of first occurrence");
      assert.ok(Number.isInteger(u.slot) && u.slot >= 0 && u.slot < this.o.slots, "slot range");
      assert.ok(!resident(missList[j]), "uploaded an expert already resident");
      const firstEmpty = this.cells.indexOf(-1);
      if (firstEmpty >= 0) {
        assert.equal(u.slot, firstEmpty, "empty slots first, lowest index first");
        assert.equal(u.evicted, undefined);
      } else {
        const old = this.cells[u.slot];
        assert.equal(this.pin[old], NONE, "evicted a pinned slot");
        assert.equal(u.slot, this.#victim(), `${this.o.policy} victim`);
        assert.equal(`${u.evicted?.layer}:${u.evicted?.expert}`, this.#name(old), "evicted");
        this.stats.evictions++;
      }
      this.cells[u.slot] = missList[j];
      this.pin[missList[j]] = want;
    });
    distinct.forEach((k, i) => {
      this.lastUse[k] = this.tick + i;
      this.uses[k]++;
    });
    this.tick += distinct.length;
    this.stats.hits += hitList.length;
    this.stats.misses += missList.length;
    this.stats.uploads += missList.length;
    if (pin === "compute") this.stats.demandUploads += missList.length;
    if (this.check) {
      const snap = this.alloc.snapshot();
      for (const e of experts) {
        const s = this.alloc.slotOf(layer, e);
        assert.ok(s !== undefined, `acquired expert ${layer}:${e} not resident`);
        assert.notEqual(snap[s]!.pin, null, `acquired expert ${layer}:${e} not pinned`);
      }
      this.verify(snap);
    }
    return res;
  }

  release(layer: number): void {
    this.ops++;
    this.log.push({ kind: "release", layer });
    this.alloc.release(layer);
    const lo = this.#ord.get(layer)! * this.E;
    for (let k = lo; k < lo + this.E; k++) this.pin[k] = NONE;
    if (this.check) this.verify();
  }

  apply(op: Op): void {
    if (op.kind === "release") this.release(op.layer);
    else this.acquire(op.layer, op.experts, op.pin);
  }

  /** Expects `fn` to throw ArgumentError naming `argument`, with the pool unchanged. */
  rejects(fn: (a: SlotAllocator) => unknown, argument: string): void {
    const before = this.alloc.snapshot();
    const err = assertThrows(() => fn(this.alloc), ArgumentError);
    assert.equal(err.argument, argument);
    assert.deepEqual(this.alloc.snapshot(), before);
    this.verify();
  }

  /** Every invariant, comparing the allocator's observable state with the shadow's. */
  verify(snap: (SlotState | null)[] = this.alloc.snapshot()): void {
    const { alloc, o, E } = this;
    assert.equal(snap.length, o.slots, "never more than `slots` slots");
    const seen = new Set<string>();
    let pinned = 0;
    snap.forEach((c, s) => {
      const k = this.cells[s];
      const got = c === null ? "-" : `${c.layer}:${c.expert}:${c.pin}`;
      const want = k < 0 ? "-" : `${this.#name(k)}:${PIN_NAME[this.pin[k]]}`;
      if (got !== want) assert.equal(got, want, `slot ${s}`);
      if (c !== null) {
        const name = `${c.layer}:${c.expert}`;
        if (seen.has(name)) assert.fail(`${name} in two slots`);
        seen.add(name);
        if (c.pin !== null) pinned++;
      }
    });
    const shadowPinned = this.pin.filter((p) => p !== NONE).length;
    assert.equal(shadowPinned, pinned, "a pinned expert is not resident");
    assert.equal(alloc.pinnedSlots(), pinned, "pinnedSlots()");
    assert.equal(alloc.residentCount(), seen.size, "residentCount()");
    const st = alloc.stats, ss = this.stats;
    if (
      st.hits !== ss.hits || st.misses !== ss.misses || st.evictions !== ss.evictions ||
      st.uploads !== ss.uploads || st.demandUploads !== ss.demandUploads
    ) assert.deepEqual({ ...st }, ss, "stats");
    for (const layer of o.layers) {
      const t = alloc.table(layer);
      assert.equal(t.length, E);
      const t2 = alloc.table(layer, this.#out);
      assert.equal(t2, this.#out);
      const lo = this.key(layer, 0);
      for (let e = 0; e < E; e++) {
        const s = this.cells.indexOf(lo + e);
        if (t[e] !== (s < 0 ? NO_SLOT : s)) assert.equal(t[e], s < 0 ? NO_SLOT : s, `table[${e}]`);
        if (t2[e] !== t[e]) assert.equal(t2[e], t[e], "table(out)");
        if (alloc.slotOf(layer, e) !== (s < 0 ? undefined : s)) {
          assert.fail(`slotOf(${layer}, ${e})`);
        }
      }
      if (this.#out[E] !== 7) assert.fail("table(out) wrote past `experts`");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Targeted cases

Deno.test("double buffering with S = 2k: current and next layer never share a slot", () => {
  const k = 2, E = 8, layers = [0, 1, 2, 3];
  const S = SlotAllocator.minimumSlots(k, "pregated", E);
  assert.equal(S, 4);
  const h = new Harness({ experts: E, layers, slots: S, policy: "lru" });
  const r = rng(7);
  const pick = (): number[] => {
    const a = Math.floor(r() * E);
    return [a, (a + 1 + Math.floor(r() * (E - 1))) % E];
  };
  let pred = pick();
  for (let token = 0; token < 20; token++) {
    for (let i = 0; i < layers.length; i++) {
      const ids = i === 0 ? pick() : pred; // strict: the prediction is the routing
      const cur = h.acquire(layers[i], ids, "compute") as AcquireResult;
      if (i > 0) assert.equal(cur.misses, 0, "predicted experts were prefetched");
      const curSlots = new Set(ids.map((e) => h.alloc.slotOf(layers[i], e)));
      if (i + 1 < layers.length) {
        pred = pick();
        const next = h.acquire(layers[i + 1], pred, "prefetch") as AcquireResult;
        for (const u of next.uploads) assert.ok(!curSlots.has(u.slot), "prefetch hit a live slot");
        const nextSlots = pred.map((e) => h.alloc.slotOf(layers[i + 1], e));
        for (const s of nextSlots) assert.ok(!curSlots.has(s), "current and next collide");
        assert.equal(h.alloc.pinnedSlots(), 2 * k);
      }
      h.release(layers[i]);
    }
  }
  assert.equal(h.budgetErrors, 0);
});

Deno.test("right prediction: all hits, no demand upload; wrong: demand upload into the unused slot", () => {
  const h = new Harness({ experts: 8, layers: [0, 1], slots: 2, policy: "lru" });
  h.acquire(1, [1, 2], "prefetch");
  const right = h.acquire(1, [2, 1], "compute") as AcquireResult;
  assert.deepEqual(right, { uploads: [], hits: 2, misses: 0 });
  assert.equal(h.alloc.stats.demandUploads, 0);
  assert.equal(h.alloc.snapshot()[0]!.pin, "compute");
  h.release(1);

  h.acquire(1, [1, 2], "prefetch"); // both hits, pinned as predictions
  const wrong = h.acquire(1, [1, 5], "compute") as AcquireResult;
  assert.equal(wrong.hits, 1);
  assert.equal(wrong.misses, 1);
  // 2 was predicted but unused: unpinned, and the only evictable slot, so 5 replaces it
  assert.deepEqual(wrong.uploads, [{
    layer: 1,
    expert: 5,
    slot: 1,
    evicted: { layer: 1, expert: 2 },
  }]);
  assert.equal(h.alloc.stats.demandUploads, 1);
  assert.equal(h.alloc.stats.uploads, 3);
  assert.equal(h.alloc.slotOf(1, 2), undefined);
});

Deno.test("unused predictions stay resident and can hit later", () => {
  const h = new Harness({ experts: 8, layers: [0, 1], slots: 6, policy: "lru" });
  h.acquire(1, [1, 2, 3], "prefetch");
  h.acquire(1, [1], "compute");
  assert.equal(h.alloc.pinnedSlots(), 1);
  assert.equal(h.alloc.residentCount(), 3);
  h.release(1);
  const again = h.acquire(1, [3, 2], "compute") as AcquireResult;
  assert.deepEqual(again, { uploads: [], hits: 2, misses: 0 });
});

Deno.test("release makes slots evictable; pinned slots are not", () => {
  const h = new Harness({ experts: 4, layers: [0, 1], slots: 2, policy: "lru" });
  h.acquire(0, [0, 1], "compute");
  assert.equal(h.acquire(1, [0], "compute"), "budget");
  assert.equal(h.acquire(1, [0], "prefetch"), "budget");
  h.release(0);
  const r = h.acquire(1, [0], "compute") as AcquireResult;
  assert.deepEqual(r.uploads, [{ layer: 1, expert: 0, slot: 0, evicted: { layer: 0, expert: 0 } }]);
  // a resident unpinned expert is a hit, not an upload
  const hit = h.acquire(0, [1], "compute") as AcquireResult;
  assert.deepEqual(hit, { uploads: [], hits: 1, misses: 0 });
});

Deno.test("LRU and LFU choose different victims", () => {
  const run = (policy: "lru" | "lfu"): AcquireResult => {
    const h = new Harness({ experts: 4, layers: [0], slots: 2, policy });
    for (const e of [0, 0, 1]) {
      h.acquire(0, [e], "compute");
      h.release(0);
    }
    // expert 0: acquired twice, less recently; expert 1: once, most recently
    return h.acquire(0, [2], "compute") as AcquireResult;
  };
  assert.deepEqual(run("lru").uploads[0].evicted, { layer: 0, expert: 0 });
  assert.deepEqual(run("lfu").uploads[0].evicted, { layer: 0, expert: 1 });
});

Deno.test("LFU counts survive eviction and ties break by LRU", () => {
  const h = new Harness({ experts: 4, layers: [0], slots: 2, policy: "lfu" });
  const seq = [0, 0, 0, 1, 2, 3, 0, 2, 1]; // counts and recency interleave with evictions
  for (const e of seq) {
    h.acquire(0, [e], "compute");
    h.release(0);
  }
  // 0 has 4 acquires; among 1, 2 (2 each) 1 is more recent; so 0 and 1 should be resident
  assert.notEqual(h.alloc.slotOf(0, 0), undefined);
  assert.notEqual(h.alloc.slotOf(0, 1), undefined);
});

Deno.test("table() maps resident experts to slots and the rest to NO_SLOT", () => {
  const h = new Harness({ experts: 6, layers: [5, 2], slots: 4, policy: "lru" });
  h.acquire(2, [4, 1], "compute");
  h.acquire(5, [4], "prefetch");
  assert.deepEqual(
    [...h.alloc.table(2)],
    [NO_SLOT, 1, NO_SLOT, NO_SLOT, 0, NO_SLOT],
  );
  const out = new Uint32Array(8).fill(9);
  assert.equal(h.alloc.table(5, out), out);
  assert.deepEqual([...out], [NO_SLOT, NO_SLOT, NO_SLOT, NO_SLOT, 2, NO_SLOT, 9, 9]);
  h.rejects((a) => a.table(2, new Uint32Array(5)), "out");
  h.rejects((a) => a.table(3), "layer");
});

Deno.test("duplicates in a batch count once", () => {
  const h = new Harness({ experts: 8, layers: [0], slots: 2, policy: "lfu" });
  const r = h.acquire(0, [3, 3, 1, 3, 1], "compute") as AcquireResult;
  assert.equal(r.misses, 2);
  assert.deepEqual(r.uploads.map((u) => [u.expert, u.slot]), [[3, 0], [1, 1]]);
  const again = h.acquire(0, [1, 1, 3], "prefetch") as AcquireResult; // prefetch keeps compute pins
  assert.deepEqual(again, { uploads: [], hits: 2, misses: 0 });
  assert.equal(h.alloc.snapshot()[0]!.pin, "compute");
  assert.equal(h.alloc.stats.hits, 2);
});

Deno.test("compute acquires of one layer accumulate; prefetch never downgrades", () => {
  const h = new Harness({ experts: 8, layers: [0, 1], slots: 4, policy: "lru" });
  h.acquire(0, [0], "compute");
  h.acquire(0, [1], "compute");
  h.acquire(0, [0, 2], "prefetch");
  assert.deepEqual(h.alloc.snapshot().map((c) => c?.pin), [
    "compute",
    "compute",
    "prefetch",
    undefined,
  ]);
  h.acquire(0, [3], "compute"); // drops the unused prediction 2, keeps 0 and 1
  assert.deepEqual(h.alloc.snapshot().map((c) => c?.pin), ["compute", "compute", null, "compute"]);
});

Deno.test("BudgetError names pinned, needed and minimum slot counts and changes nothing", () => {
  const h = new Harness({ experts: 8, layers: [0, 1], slots: 3, policy: "lru" });
  h.acquire(0, [0, 1], "compute");
  const before = h.alloc.snapshot();
  const err = assertThrows(
    () => h.alloc.acquire(1, [2, 3, 2], "prefetch"),
    BudgetError,
    'acquire(layer 1, 2 distinct experts, "prefetch")',
    "needs 2 more slot(s)",
    "2 of 3 slots are pinned",
    "minimum slot count for this call: 4",
    "minimumSlots(topK, mode, experts)",
    "pregated: 2*topK",
  );
  assert.equal(err.code, "E_BUDGET");
  assert.deepEqual(h.alloc.snapshot(), before);
  h.verify();
  // the compute acquire that drops a prediction frees its pin for the misprediction
  h.release(0);
  h.acquire(1, [4, 5], "prefetch");
  h.acquire(0, [6], "prefetch");
  assert.notEqual(h.acquire(1, [4, 7], "compute"), "budget");
});

Deno.test("bad arguments throw ArgumentError naming the argument", () => {
  const ok = { experts: 4, layers: [1, 3], slots: 2 };
  const bad: [Partial<Record<string, unknown>>, string][] = [
    [{ experts: 0 }, "experts"],
    [{ experts: 2.5 }, "experts"],
    [{ slots: 0 }, "slots"],
    [{ slots: NaN }, "slots"],
    [{ layers: [] }, "layers"],
    [{ layers: [1, 1] }, "layers"],
    [{ layers: [-1] }, "layers"],
    [{ layers: [0.5] }, "layers"],
    [{ policy: "fifo" }, "policy"],
  ];
  for (const [patch, argument] of bad) {
    const err = assertThrows(
      () => new SlotAllocator({ ...ok, ...patch } as never),
      ArgumentError,
      argument,
    );
    assert.equal(err.argument, argument);
  }
  const h = new Harness({ ...ok, policy: "lru" });
  h.acquire(1, [0], "compute");
  h.rejects((a) => a.acquire(2, [0], "compute"), "layer");
  h.rejects((a) => a.acquire(-1, [0], "compute"), "layer");
  h.rejects((a) => a.acquire(99, [0], "compute"), "layer");
  h.rejects((a) => a.acquire(3, [1, 4], "compute"), "experts");
  h.rejects((a) => a.acquire(3, [1, -1], "compute"), "experts");
  h.rejects((a) => a.acquire(3, [0.5], "prefetch"), "experts");
  h.rejects((a) => a.acquire(3, [1], "pinned" as PinKind), "pin");
  h.rejects((a) => a.release(0), "layer");
  h.rejects((a) => a.slotOf(3, 4), "expert");
  h.rejects((a) => a.slotOf(0, 1), "layer");
  assertThrows(() => h.alloc.acquire(3, [4], "compute"), ArgumentError, "[0, 4)", "layer 3");
  assertThrows(() => SlotAllocator.minimumSlots(0, "pregated", 8), ArgumentError, "topK");
  assertThrows(() => SlotAllocator.minimumSlots(2, "pregated", 0), ArgumentError, "experts");
  assertThrows(() => SlotAllocator.minimumSlots(2, "x" as ExpertMode, 8), ArgumentError, "mode");
});

Deno.test("minimumSlots: on-demand k, pregated 2k, prefetch-all 2E; batch unions clamp", () => {
  assert.equal(SlotAllocator.minimumSlots(2, "on-demand", 8), 2);
  assert.equal(SlotAllocator.minimumSlots(2, "pregated", 8), 4);
  assert.equal(SlotAllocator.minimumSlots(2, "prefetch-all", 8), 16);
  assert.equal(SlotAllocator.minimumSlots(12, "pregated", 8), 16);
  assert.equal(SlotAllocator.minimumSlots(1, "pregated", 1), 2);
});

// ---------------------------------------------------------------------------------------------
// Property tests: seeded random executor-like sequences with the shadow model checking every op

type DriveMode = "on-demand" | "pregated" | "strict" | "prefetch-all";

interface DriveConfig {
  experts: number;
  layers: number[];
  topK: number;
  batch: number;
  mode: DriveMode;
  accuracy: number;
  /** Slots above the mode's minimum (negative: below it). */
  extra: number;
  tokens: number;
}

/** Drives the allocator the way the executor does; returns the harness. */
function drive(c: DriveConfig, policy: "lru" | "lfu", seed: number): Harness {
  const r = rng(seed);
  const E = c.experts, L = c.layers.length;
  const active = Math.min(E, c.batch * c.topK);
  const base: ExpertMode = c.mode === "strict" ? "pregated" : c.mode;
  const slots = SlotAllocator.minimumSlots(active, base, E) + c.extra;
  const h = new Harness({ experts: E, layers: c.layers, slots, policy });
  // skewed routing (a few popular experts per layer) so that caching policies differ
  const weights = c.layers.map(() => {
    const perm = [...Array(E).keys()].sort(() => r() - 0.5);
    const w = new Array<number>(E);
    perm.forEach((e, rank) => (w[e] = 1 / (rank + 1) ** 1.2));
    return w;
  });
  const route = (li: number): number[] => {
    const out: number[] = [];
    for (let b = 0; b < c.batch; b++) {
      const chosen = new Set<number>();
      while (chosen.size < Math.min(c.topK, E)) {
        let x = r() * weights[li].reduce((a, b) => a + b, 0), e = 0;
        while ((x -= weights[li][e]) > 0 && e < E - 1) e++;
        chosen.add(e);
      }
      out.push(...chosen);
    }
    return out.sort(() => r() - 0.5);
  };
  const all = [...Array(E).keys()];
  for (let t = 0; t < c.tokens; t++) {
    const truth = c.layers.map((_, li) => route(li));
    const pred = truth.map((ids) => ids.map((e) => (r() < c.accuracy ? e : Math.floor(r() * E))));
    for (let li = 0; li < L; li++) {
      const layer = c.layers[li];
      const ids = c.mode === "strict" && li > 0 ? pred[li] : truth[li];
      const prefetch = (): void => {
        if (li + 1 >= L || c.mode === "on-demand") return;
        const next = c.layers[li + 1];
        h.acquire(next, c.mode === "prefetch-all" ? all : pred[li + 1], "prefetch");
      };
      const prefetchFirst = r() < 0.3;
      if (prefetchFirst) prefetch();
      const res = h.acquire(layer, ids, "compute");
      if (c.mode === "strict" && li > 0 && res !== "budget" && c.extra >= 0) {
        assert.equal(res.misses, 0, "strict pregated: the prefetched prediction is the routing");
      }
      if (c.mode === "prefetch-all" && li > 0 && res !== "budget" && c.extra >= 0) {
        assert.equal(res.misses, 0, "prefetch-all: everything is resident");
      }
      if (!prefetchFirst) prefetch();
      h.release(layer);
    }
  }
  return h;
}

const DRIVES: DriveConfig[] = [
  {
    experts: 8,
    layers: [0, 1, 2, 3],
    topK: 2,
    batch: 1,
    mode: "on-demand",
    accuracy: 0,
    extra: 0,
    tokens: 300,
  },
  {
    experts: 8,
    layers: [0, 1, 2, 3],
    topK: 2,
    batch: 1,
    mode: "on-demand",
    accuracy: 0,
    extra: 5,
    tokens: 300,
  },
  {
    experts: 8,
    layers: [0, 1, 2, 3],
    topK: 2,
    batch: 1,
    mode: "pregated",
    accuracy: 0.75,
    extra: 0,
    tokens: 300,
  },
  {
    experts: 8,
    layers: [1, 3, 5, 7],
    topK: 2,
    batch: 1,
    mode: "pregated",
    accuracy: 0.75,
    extra: 7,
    tokens: 300,
  },
  {
    experts: 16,
    layers: [2, 4, 6],
    topK: 2,
    batch: 3,
    mode: "pregated",
    accuracy: 0.6,
    extra: 0,
    tokens: 250,
  },
  {
    experts: 16,
    layers: [2, 4, 6],
    topK: 2,
    batch: 3,
    mode: "pregated",
    accuracy: 0.6,
    extra: 9,
    tokens: 250,
  },
  {
    experts: 8,
    layers: [0, 1, 2, 3],
    topK: 2,
    batch: 1,
    mode: "strict",
    accuracy: 0.5,
    extra: 0,
    tokens: 300,
  },
  {
    experts: 3,
    layers: [0, 1, 2],
    topK: 2,
    batch: 2,
    mode: "pregated",
    accuracy: 0.5,
    extra: 0,
    tokens: 300,
  },
  {
    experts: 4,
    layers: [0, 1, 2],
    topK: 1,
    batch: 1,
    mode: "prefetch-all",
    accuracy: 0,
    extra: 0,
    tokens: 250,
  },
  {
    experts: 64,
    layers: [1, 3, 5, 7, 9, 11],
    topK: 4,
    batch: 1,
    mode: "pregated",
    accuracy: 0.85,
    extra: 0,
    tokens: 80,
  },
  {
    experts: 64,
    layers: [1, 3, 5, 7, 9, 11],
    topK: 4,
    batch: 1,
    mode: "pregated",
    accuracy: 0.85,
    extra: 56,
    tokens: 80,
  },
];

Deno.test("property: executor-driven sequences keep every invariant; the minimum never throws", async (t) => {
  for (const c of DRIVES) {
    for (const policy of ["lru", "lfu"] as const) {
      const seed = (c.experts * 7919 + c.extra * 31 + c.batch) ^
        (policy === "lfu" ? 0x5bd1e995 : 0);
      const name =
        `${c.mode} E=${c.experts} k=${c.topK} batch=${c.batch} extra=${c.extra} ${policy} seed=${seed}`;
      await t.step(name, () => {
        const h = drive(c, policy, seed);
        assert.equal(h.budgetErrors, 0, `${name}: BudgetError at S = minimum + ${c.extra}`);
        assert.ok(h.ops > 1000, `${name}: only ${h.ops} operations`);
        assert.ok(h.stats.misses > 0 && (h.stats.hits > 0 || c.mode === "on-demand"));
        if (c.extra > 0 || c.mode === "prefetch-all" || c.experts <= 3) {
          assert.ok(h.stats.evictions > 0, `${name}: no eviction exercised`);
        }
      });
    }
  }
});

Deno.test("property: one slot below the minimum throws BudgetError (and nothing breaks)", () => {
  for (const mode of ["on-demand", "pregated", "strict", "prefetch-all"] as const) {
    const c: DriveConfig = {
      experts: 6,
      layers: [0, 1, 2],
      topK: 2,
      batch: 1,
      mode,
      accuracy: 0.7,
      extra: -1,
      tokens: 40,
    };
    const h = drive(c, "lru", 99);
    assert.ok(h.budgetErrors > 0, `${mode}: no BudgetError at minimum - 1`);
  }
});

Deno.test("property: random acquire/release chaos, including budget and argument errors", () => {
  const configs = [
    { experts: 5, layers: [0, 2, 5], slots: 4 },
    { experts: 3, layers: [0, 1], slots: 2 },
    { experts: 12, layers: [1, 2, 3, 4], slots: 9 },
    { experts: 2, layers: [7], slots: 1 },
    { experts: 32, layers: [0, 1], slots: 70 }, // more slots than experts in all
  ];
  for (const cfg of configs) {
    for (const policy of ["lru", "lfu"] as const) {
      const seed = cfg.experts * 1000 + cfg.slots + (policy === "lfu" ? 1 : 0);
      const r = rng(seed);
      const h = new Harness({ ...cfg, policy });
      const rand = (n: number): number => Math.floor(r() * n);
      for (let op = 0; op < 3000; op++) {
        const layer = cfg.layers[rand(cfg.layers.length)];
        const x = r();
        if (x < 0.25) {
          h.release(layer);
        } else if (x < 0.97) {
          const n = rand(Math.min(cfg.slots, cfg.experts) + 2);
          const ids = Array.from({ length: n }, () => rand(cfg.experts));
          h.acquire(layer, ids, r() < 0.5 ? "compute" : "prefetch");
        } else if (x < 0.98) {
          h.rejects((a) => a.acquire(layer, [0, cfg.experts], "compute"), "experts");
        } else if (x < 0.99) {
          h.rejects((a) => a.acquire(layer + 100, [0], "prefetch"), "layer");
        } else {
          h.rejects((a) => a.release(-1), "layer");
        }
      }
      const name = `chaos E=${cfg.experts} S=${cfg.slots} ${policy} seed=${seed}`;
      assert.ok(h.budgetErrors > 0 || cfg.slots > cfg.experts * cfg.layers.length, name);
      assert.ok(h.stats.hits > 0 && h.stats.misses > 0, name);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Exhaustive enumeration for tiny sizes

/** Checks every sequence of `ops` up to `depth` long (each prefix once, at its last op). */
function enumerate(o: HarnessOptions, ops: Op[], depth: number): number {
  let checked = 0;
  const visit = (h: Harness, d: number): void => {
    for (const op of ops) {
      const child = h.clone();
      child.apply(op);
      checked++;
      if (d + 1 < depth) visit(child, d + 1);
    }
  };
  visit(new Harness(o), 0);
  return checked;
}

const ACQUIRE_SETS = [[0], [1], [2], [0, 1], [1, 2], [2, 0], [0, 1, 2]];

/** Releases of both layers and acquires of the given expert sets on both layers with both pins. */
function alphabet(sets: number[][]): Op[] {
  const ops: Op[] = [];
  for (const layer of [0, 1]) {
    ops.push({ kind: "release", layer });
    for (const experts of sets) {
      for (const pin of ["compute", "prefetch"] as const) {
        ops.push({ kind: "acquire", layer, experts, pin });
      }
    }
  }
  return ops;
}

Deno.test("exhaustive: E=3, two layers, S=2..4, every short sequence of operations", async (t) => {
  const full = alphabet(ACQUIRE_SETS); // 30 operations
  const six: Op[] = [
    { kind: "acquire", layer: 0, experts: [0, 1], pin: "compute" },
    { kind: "acquire", layer: 0, experts: [1, 2], pin: "prefetch" },
    { kind: "acquire", layer: 1, experts: [0], pin: "compute" },
    { kind: "acquire", layer: 1, experts: [0, 1, 2], pin: "prefetch" },
    { kind: "release", layer: 0 },
    { kind: "release", layer: 1 },
  ];
  for (const slots of [2, 3, 4]) {
    for (const policy of ["lru", "lfu"] as const) {
      const o = { experts: 3, layers: [0, 1], slots, policy };
      await t.step(`S=${slots} ${policy}: all 30 operations, length <= 3`, () => {
        assert.equal(enumerate(o, full, 3), 30 + 30 ** 2 + 30 ** 3);
      });
      await t.step(`S=${slots} ${policy}: 6 operations, length <= 6`, () => {
        assert.equal(enumerate(o, six, 6), (6 ** 7 - 6) / 5);
      });
    }
  }
});
