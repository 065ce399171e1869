/**
 * The eviction order of the expert slot allocator: an indexed binary min-heap of slot numbers,
 * ordered by a comparator the allocator supplies (its LRU or LFU policy). Indexed means each slot
 * knows its place in the heap, so any slot (not only the top) can be removed in O(log slots) when it
 * gets pinned. Sized once; no operation allocates.
 *
 * @example
 * ```ts
 * import { EvictionHeap } from "./allocator_heap.ts";
 * const lastUse = [30, 10, 20];
 * const heap = new EvictionHeap(3, (a, b) => lastUse[a] < lastUse[b]);
 * for (const s of [0, 1, 2]) heap.insert(s);
 * heap.remove(1); // slot 1 was pinned again
 * console.log(heap.peek(), heap.size); // 2 2
 * ```
 * @module
 */

/**
 * An indexed binary min-heap of slot numbers `0 .. slots-1`, each present at most once; the top is
 * the slot to evict next. `before(a, b)` must say whether slot `a` should be evicted before slot
 * `b`, and a slot's priority must not change while it is in the heap (remove it first).
 *
 * @example
 * ```ts
 * import { EvictionHeap } from "./allocator_heap.ts";
 * const uses = [5, 1, 3, 1];
 * const heap = new EvictionHeap(4, (a, b) => uses[a] < uses[b] || (uses[a] === uses[b] && a < b));
 * heap.insert(0);
 * heap.insert(2);
 * heap.insert(3);
 * console.log(heap.peek(), heap.has(1)); // 3 false
 * ```
 */
export class EvictionHeap {
  readonly #heap: Int32Array;
  readonly #pos: Int32Array; // index in #heap, -1 when absent
  readonly #before: (a: number, b: number) => boolean;
  #len = 0;

  /**
   * An empty heap for slots `0 .. slots-1`, ordered by `before`.
   *
   * @example
   * ```ts
   * import { EvictionHeap } from "./allocator_heap.ts";
   * const heap = new EvictionHeap(8, (a, b) => a < b);
   * console.log(heap.size); // 0
   * ```
   */
  constructor(slots: number, before: (a: number, b: number) => boolean) {
    this.#heap = new Int32Array(slots);
    this.#pos = new Int32Array(slots).fill(-1);
    this.#before = before;
  }

  /**
   * The number of slots in the heap.
   *
   * @example
   * ```ts
   * import { EvictionHeap } from "./allocator_heap.ts";
   * const heap = new EvictionHeap(4, (a, b) => a < b);
   * heap.insert(2);
   * console.log(heap.size); // 1
   * ```
   */
  get size(): number {
    return this.#len;
  }

  /**
   * Whether slot `s` is in the heap.
   *
   * @example
   * ```ts
   * import { EvictionHeap } from "./allocator_heap.ts";
   * const heap = new EvictionHeap(4, (a, b) => a < b);
   * heap.insert(2);
   * console.log(heap.has(2), heap.has(3)); // true false
   * ```
   */
  has(s: number): boolean {
    return this.#pos[s] >= 0;
  }

  /**
   * The slot to evict next (the heap's top), without removing it; `-1` when the heap is empty.
   *
   * @example
   * ```ts
   * import { EvictionHeap } from "./allocator_heap.ts";
   * const heap = new EvictionHeap(4, (a, b) => a > b);
   * heap.insert(1);
   * heap.insert(3);
   * console.log(heap.peek()); // 3
   * ```
   */
  peek(): number {
    return this.#len > 0 ? this.#heap[0] : -1;
  }

  /**
   * Adds slot `s`, which must not be in the heap.
   *
   * @example
   * ```ts
   * import { EvictionHeap } from "./allocator_heap.ts";
   * const heap = new EvictionHeap(4, (a, b) => a < b);
   * heap.insert(3);
   * heap.insert(0);
   * console.log(heap.peek()); // 0
   * ```
   */
  insert(s: number): void {
    const i = this.#len++;
    this.#heap[i] = s;
    this.#pos[s] = i;
    this.#siftUp(i);
  }

  /**
   * Removes slot `s`, which must be in the heap (anywhere, not only at the top).
   *
   * @example
   * ```ts
   * import { EvictionHeap } from "./allocator_heap.ts";
   * const heap = new EvictionHeap(4, (a, b) => a < b);
   * heap.insert(0);
   * heap.insert(1);
   * heap.remove(0);
   * console.log(heap.peek(), heap.has(0)); // 1 false
   * ```
   */
  remove(s: number): void {
    const i = this.#pos[s];
    this.#pos[s] = -1;
    const last = this.#heap[--this.#len];
    if (i < this.#len) {
      this.#heap[i] = last;
      this.#pos[last] = i;
      this.#siftDown(i);
      this.#siftUp(this.#pos[last]);
    }
  }

  #siftUp(i: number): void {
    const heap = this.#heap, pos = this.#pos, before = this.#before, x = heap[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(x, heap[p])) break;
      heap[i] = heap[p];
      pos[heap[i]] = i;
      i = p;
    }
    heap[i] = x;
    pos[x] = i;
  }

  #siftDown(i: number): void {
    const heap = this.#heap, pos = this.#pos, before = this.#before, n = this.#len, x = heap[i];
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && before(heap[c + 1], heap[c])) c++;
      if (!before(heap[c], x)) break;
      heap[i] = heap[c];
      pos[heap[i]] = i;
      i = c;
    }
    heap[i] = x;
    pos[x] = i;
  }
}
