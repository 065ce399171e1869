import assert from "node:assert/strict";
import { EvictionHeap } from "./allocator_heap.ts";
import { rng } from "./allocator_test_util.ts";

// The eviction heap on its own, against a plain model (a set scanned for its minimum). The
// allocator tests check it again through the allocator's exact victim choice.

Deno.test("eviction heap: empty, insert, peek, remove anywhere", () => {
  const prio = [5, 3, 8, 1, 9, 2];
  const heap = new EvictionHeap(prio.length, (a, b) => prio[a] < prio[b]);
  assert.equal(heap.size, 0);
  assert.equal(heap.peek(), -1);
  for (let s = 0; s < prio.length; s++) heap.insert(s);
  assert.equal(heap.size, 6);
  assert.equal(heap.peek(), 3);
  heap.remove(5); // a leaf-ish slot, not the top
  assert.equal(heap.peek(), 3);
  assert.ok(!heap.has(5) && heap.has(3));
  heap.remove(3); // the top
  assert.equal(heap.peek(), 1);
  heap.remove(4); // the largest
  heap.remove(1);
  assert.deepEqual([heap.peek(), heap.size], [0, 2]);
  heap.remove(0);
  heap.remove(2);
  assert.deepEqual([heap.peek(), heap.size, heap.has(2)], [-1, 0, false]);
  heap.insert(2);
  assert.deepEqual([heap.peek(), heap.size], [2, 1]);
});

Deno.test("eviction heap: random inserts, removals and priority changes match a plain model", () => {
  for (const slots of [1, 2, 3, 7, 16, 61]) {
    const r = rng(slots * 7919);
    const prio = Array.from({ length: slots }, () => Math.floor(r() * 10));
    // ties broken by slot number, so the expected top is unique
    const before = (a: number, b: number): boolean =>
      prio[a] < prio[b] || (prio[a] === prio[b] && a < b);
    const heap = new EvictionHeap(slots, before);
    const model = new Set<number>();
    for (let op = 0; op < 4000; op++) {
      const s = Math.floor(r() * slots);
      if (model.has(s)) {
        heap.remove(s);
        model.delete(s);
        if (r() < 0.5) {
          prio[s] = Math.floor(r() * 10); // priorities change only while out of the heap
          heap.insert(s);
          model.add(s);
        }
      } else {
        heap.insert(s);
        model.add(s);
      }
      let top = -1;
      for (const m of model) if (top < 0 || before(m, top)) top = m;
      assert.equal(heap.peek(), top, `slots=${slots} op=${op}`);
      assert.equal(heap.size, model.size);
      assert.equal(heap.has(s), model.has(s));
    }
  }
});
