/**
 * Helpers for the slot allocator tests: a seeded PRNG, a typed-error assertion and the shadow model
 * ({@linkcode Harness}) that every allocator test drives. Used by `allocator*_test.ts` files only.
 * @module
 */
import assert from "node:assert/strict";
import { ArgumentError, BudgetError } from "../base/errors.ts";
import {
  type AcquireResult,
  type AllocatorStats,
  NO_SLOT,
  type PinKind,
  SlotAllocator,
  type SlotState,
} from "./allocator.ts";

// The project's seeded PRNG and typed-error assertion, under the names the allocator tests use.
import { assertThrows } from "../weights/safetensors_test_util.ts";
export { rng } from "../../kernels/test_util.ts";
export { assertThrows };

/** The options of a {@linkcode Harness}: those of a `SlotAllocator`, with the policy explicit. */
export interface HarnessOptions {
  experts: number;
  layers: readonly number[];
  slots: number;
  policy: "lru" | "lfu";
}

/** One allocator call, as recorded in {@linkcode Harness.log} and enumerated by the tests. */
export type Op = { kind: "acquire"; layer: number; experts: number[]; pin: PinKind } | {
  kind: "release";
  layer: number;
};

const NONE = 0, PREFETCH = 1, COMPUTE = 2;
const PIN_NAME = [null, "prefetch", "compute"] as const;

/**
 * The shadow model: a plain re-statement of the allocator's contract (linear scans, no heap), run
 * in lockstep with a {@linkcode SlotAllocator}. With `check`, after every operation it checks all
 * invariants and the exact victim choice.
 */
export class Harness {
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
