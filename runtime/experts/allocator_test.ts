import assert from "node:assert/strict";
import { ArgumentError, BudgetError } from "../base/errors.ts";
import {
  type AcquireResult,
  NO_SLOT,
  type OffloadMode,
  type PinKind,
  SlotAllocator,
} from "./allocator.ts";
import { assertThrows, Harness, rng } from "./allocator_test_util.ts";

// Targeted cases, each driven through the shadow model (allocator_test_util.ts), which checks every
// invariant after every call. Property and exhaustive tests: allocator_property_test.ts.

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
  assertThrows(() => SlotAllocator.minimumSlots(2, "x" as OffloadMode, 8), ArgumentError, "mode");
});

Deno.test("minimumSlots: on-demand k, pregated 2k, prefetch-all E; batch unions clamp", () => {
  assert.equal(SlotAllocator.minimumSlots(2, "on-demand", 8), 2);
  assert.equal(SlotAllocator.minimumSlots(2, "pregated", 8), 4);
  assert.equal(SlotAllocator.minimumSlots(2, "prefetch-all", 8), 8);
  assert.equal(SlotAllocator.minimumSlots(12, "pregated", 8), 16);
  assert.equal(SlotAllocator.minimumSlots(1, "pregated", 1), 2);
});
