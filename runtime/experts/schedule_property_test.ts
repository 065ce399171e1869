// Property tests of the pre-gate scheduler: seeded random passes (decode and prefill batches) over
// every mode, driven in the engine's order against a model of the GPU queue, checking after every
// decision what the modes promise.
import assert from "node:assert/strict";
import { rng } from "../../kernels/test_util.ts";
import { SlotAllocator, type Upload } from "./allocator.ts";
import { type LayerSchedule, type PregatePolicy, Scheduler } from "./schedule.ts";

type Mode = "on-demand" | "prefetch-all" | "pregated";

interface Drive {
  mode: Mode;
  pregate?: PregatePolicy;
  experts: number;
  layers: number[];
  topK: number;
  /** Slots above the mode's minimum for one token (the engine's sizing). */
  extra: number;
  /** Share of predicted ids that are the router's. */
  accuracy: number;
  /** Largest batch of a prefill pass (decode passes have one token). */
  maxT: number;
  passes: number;
  cachePolicy?: "lru" | "lfu";
}

/**
 * The GPU as WebGPU runs it: one in-order queue of slot writes and expert computes, executed at
 * arbitrary later moments. A compute checks, when it runs, that each slot it reads holds its expert.
 */
class QueueModel {
  readonly content: number[];
  readonly #queue: ({ kind: "write"; slot: number; key: number } | {
    kind: "compute";
    keys: number[];
    slots: readonly number[];
  })[] = [];
  computes = 0;
  constructor(slots: number, readonly experts: number) {
    this.content = new Array(slots).fill(-1);
  }
  key(layer: number, expert: number): number {
    return layer * this.experts + expert;
  }
  write(u: Upload): void {
    this.#queue.push({ kind: "write", slot: u.slot, key: this.key(u.layer, u.expert) });
  }
  compute(layer: number, experts: readonly number[], slots: readonly number[]): void {
    this.#queue.push({ kind: "compute", keys: experts.map((e) => this.key(layer, e)), slots });
  }
  /** Runs the first `n` queued operations (all by default). */
  run(n = Infinity): void {
    while (n-- > 0 && this.#queue.length) {
      const op = this.#queue.shift()!;
      if (op.kind === "write") {
        this.content[op.slot] = op.key;
        continue;
      }
      this.computes++;
      op.keys.forEach((k, i) => {
        const s = op.slots[i];
        assert.equal(
          this.content[s],
          k,
          `compute reads slot ${s}: holds ${this.content[s]}, needs ${k}`,
        );
      });
    }
  }
}

const distinct = (xs: ArrayLike<number>) => [...new Set(Array.from(xs))].sort((a, b) => a - b);

/** The whole-pass upload bound of a decode token (T = 1), per mode. */
function tokenBound(c: Drive): number {
  const L = c.layers.length, k = c.topK;
  if (c.mode === "prefetch-all") return L * c.experts;
  if (c.mode === "on-demand" || c.pregate === "strict") return L * k;
  return 2 * L * k; // pregated exact: the prediction, and on demand what it missed
}

/** Drives a scheduler as the engine does; asserts the properties; returns counts for coverage. */
function drive(c: Drive, seed: number) {
  const r = rng(seed);
  const E = c.experts, L = c.layers.length, k = Math.min(c.topK, E);
  const slots = SlotAllocator.minimumSlots(k, c.mode, E) + c.extra;
  const s = new Scheduler({ ...c, slots });
  const gpu = new QueueModel(slots, E);
  // What the CPU has issued into each slot so far (the queue's content once it drains).
  const issued = new Array<number>(slots).fill(-1);
  const isResident = (layer: number, e: number) => issued.includes(gpu.key(layer, e));
  const issue = (u: Upload, want: number) => {
    assert.equal(u.layer, want, "an upload targets the layer it was made for");
    assert.ok(!isResident(u.layer, u.expert), `expert ${u.layer}:${u.expert} uploaded twice`);
    issued[u.slot] = gpu.key(u.layer, u.expert);
    gpu.write(u);
  };
  const skew = c.layers.map(() => Array.from({ length: E }, () => r() ** 3));
  const route = (li: number, T: number): Uint32Array => {
    const ids: number[] = [];
    for (let t = 0; t < T; t++) {
      const score = skew[li].map((w) => w + r()); // a few popular experts, and noise
      const order = [...Array(E).keys()].sort((a, b) => score[b] - score[a]);
      ids.push(...order.slice(0, k));
    }
    return Uint32Array.from(ids);
  };
  let roundsRun = 0, multiRound = 0, hits = 0, prefetched = 0;
  for (let pass = 0; pass < c.passes; pass++) {
    const T = r() < 0.2 ? 1 + Math.floor(r() * c.maxT) : 1;
    s.beginPass(T);
    let due: LayerSchedule["prefetch"] = null;
    let predictedHere: Uint32Array | null = null; // the prediction made for the current layer
    let residentBeforePrefetch: Set<number> | null = null;
    let passUploads = 0;
    const truth = c.layers.map((_, li) => route(li, T));
    for (let li = 0; li < L; li++) {
      const layer = c.layers[li], hasNext = li + 1 < L;
      const need = s.readback(layer);
      assert.equal(need.routing, c.mode !== "prefetch-all");
      assert.equal(need.prediction, c.mode === "pregated" && hasNext);
      const routed = need.routing ? truth[li] : null;
      const prediction = need.prediction
        ? truth[li + 1].map((e) => (r() < c.accuracy ? e : Math.floor(r() * E)))
        : null;
      // The engine issues the due prefetch while the readback is in flight.
      if (due) {
        assert.equal(due.layer, layer, "a prefetch is issued at its own layer's sync");
        due.uploads.forEach((u) => issue(u, layer));
        passUploads += due.uploads.length;
        due = null;
      }
      gpu.run(Math.floor(r() * 8));
      const before = new Set(
        [...Array(E).keys()].filter((e) => isResident(layer, e)),
      );
      const d = s.layer(layer, routed, prediction);
      const rep = d.report;
      // What the layer computes with.
      const computed = d.rounds.flatMap((x) => x.experts);
      assert.equal(new Set(computed).size, computed.length, "no expert computed twice");
      const expected: number[] = c.mode === "prefetch-all"
        ? [...Array(E).keys()]
        : c.mode === "pregated" && c.pregate === "strict" && predictedHere
        ? distinct(predictedHere)
        : distinct(routed!);
      assert.deepEqual(distinct(computed), expected, `${c.mode} ${c.pregate ?? ""} compute set`);
      assert.deepEqual(rep.compute, expected);
      assert.deepEqual(rep.chosen, routed ? distinct(routed) : expected);
      assert.deepEqual(rep.predicted, predictedHere ? distinct(predictedHere) : null);
      // Resident before this layer's prefetch: the report agrees with what was issued.
      const was: Set<number> = residentBeforePrefetch ?? before;
      assert.deepEqual(rep.resident, expected.filter((e) => was.has(e)), "resident before");
      // Rounds: each fits the pool; one round exactly when the experts fit.
      assert.equal(d.rounds.length === 1, expected.length <= slots);
      d.rounds.forEach((round, i) => {
        assert.ok(round.experts.length <= slots && round.experts.length > 0);
        const part = d.rounds.length === 1 ? "all" : i + 1 === d.rounds.length ? "last" : "round";
        assert.equal(round.part, part);
        round.uploads.forEach((u) => issue(u, layer));
        // Every expert of the round is resident, in the slot its table names, when it is queued...
        round.experts.forEach((e, j) => {
          assert.equal(issued[round.slots[j]], gpu.key(layer, e), `${layer}:${e} in its slot`);
        });
        assert.equal(new Set(round.slots).size, round.slots.length, "one slot per expert");
        // ...and when the GPU runs it (the queue model checks, at some later moment).
        gpu.compute(layer, round.experts, round.slots);
        gpu.run(Math.floor(r() * 4));
        roundsRun++;
        passUploads += round.uploads.length;
      });
      if (d.rounds.length > 1) multiRound++;
      // Counts the statistics use.
      const onDemand = d.rounds.flatMap((x) => x.uploads.map((u) => u.expert));
      assert.deepEqual(rep.onDemand, onDemand);
      assert.equal(rep.cacheHits + onDemand.length, expected.length);
      assert.equal(rep.cacheLookups, expected.length);
      hits += rep.cacheHits;
      assert.equal(
        rep.pregateHits,
        rep.predicted ? rep.chosen.filter((e) => rep.predicted!.includes(e)).length : 0,
      );
      // Upload bounds per layer.
      const early = rep.uploaded.filter((e) => !onDemand.includes(e));
      assert.ok(onDemand.length <= expected.length);
      if (predictedHere) assert.ok(early.length <= distinct(predictedHere).length);
      else if (c.mode !== "prefetch-all") assert.equal(early.length, 0);
      if (c.extra >= 0 && d.rounds.length === 1 && li > 0) {
        if (c.mode === "prefetch-all") assert.equal(onDemand.length, 0, "prefetched everything");
        if (c.pregate === "strict" && distinct(predictedHere!).length <= slots) {
          assert.equal(onDemand.length, 0, "strict computes what it prefetched");
        }
      }
      // The prefetch of the next MoE layer.
      const p = d.prefetch;
      if (c.mode === "on-demand" || !hasNext) assert.equal(p, null);
      else {
        assert.ok(p);
        assert.equal(p.layer, c.layers[li + 1]);
        assert.equal(p.at, c.mode === "prefetch-all" ? "now" : "next-sync");
        const want = c.mode === "prefetch-all" ? E : distinct(prediction!).length;
        assert.ok(p.uploads.length <= want);
        residentBeforePrefetch = new Set(
          [...Array(E).keys()].filter((e) => isResident(p.layer, e)),
        );
        prefetched += p.uploads.length;
        if (p.at === "now") {
          p.uploads.forEach((u) => issue(u, p.layer));
          passUploads += p.uploads.length;
        } else due = p;
      }
      if (!p) residentBeforePrefetch = null;
      predictedHere = prediction;
    }
    assert.equal(due, null, "no prefetch left at the end of a pass");
    if (T === 1 && c.extra >= 0) {
      assert.ok(passUploads <= tokenBound(c), `${passUploads} uploads for one token`);
    }
    if (r() < 0.1) s.reset();
  }
  gpu.run();
  assert.equal(gpu.computes, roundsRun);
  return { roundsRun, multiRound, hits, prefetched };
}

const DRIVES: Drive[] = [
  {
    mode: "on-demand",
    experts: 8,
    layers: [0, 1, 2, 3],
    topK: 2,
    extra: 0,
    accuracy: 0,
    maxT: 4,
    passes: 300,
  },
  {
    mode: "on-demand",
    experts: 16,
    layers: [1, 3, 5],
    topK: 3,
    extra: 3,
    accuracy: 0,
    maxT: 6,
    passes: 300,
    cachePolicy: "lfu",
  },
  {
    mode: "prefetch-all",
    experts: 4,
    layers: [0, 1, 2],
    topK: 1,
    extra: 0,
    accuracy: 0,
    maxT: 3,
    passes: 200,
  },
  {
    mode: "prefetch-all",
    experts: 6,
    layers: [0, 2],
    topK: 2,
    extra: 3,
    accuracy: 0,
    maxT: 5,
    passes: 200,
  },
  {
    mode: "pregated",
    experts: 8,
    layers: [0, 1, 2, 3],
    topK: 2,
    extra: 0,
    accuracy: 0.75,
    maxT: 4,
    passes: 300,
  },
  {
    mode: "pregated",
    experts: 16,
    layers: [2, 4, 6],
    topK: 2,
    extra: 9,
    accuracy: 0.6,
    maxT: 6,
    passes: 300,
    cachePolicy: "lfu",
  },
  {
    mode: "pregated",
    experts: 64,
    layers: [1, 3, 5, 7, 9, 11],
    topK: 4,
    extra: 0,
    accuracy: 0.85,
    maxT: 8,
    passes: 80,
  },
  {
    mode: "pregated",
    experts: 3,
    layers: [0, 1, 2],
    topK: 2,
    extra: 0,
    accuracy: 0.5,
    maxT: 2,
    passes: 200,
  },
  {
    mode: "pregated",
    pregate: "strict",
    experts: 8,
    layers: [0, 1, 2, 3],
    topK: 2,
    extra: 0,
    accuracy: 0.5,
    maxT: 4,
    passes: 300,
  },
  {
    mode: "pregated",
    pregate: "strict",
    experts: 32,
    layers: [0, 1, 2],
    topK: 4,
    extra: 4,
    accuracy: 0.7,
    maxT: 6,
    passes: 200,
    cachePolicy: "lfu",
  },
];

Deno.test("property: every mode computes the right experts, resident in their slots, within its upload bound", async (t) => {
  for (const [i, c] of DRIVES.entries()) {
    const seed = 1000 + i * 7919;
    const name = `${c.mode}${c.pregate ? ` ${c.pregate}` : ""} E=${c.experts} k=${c.topK} ` +
      `L=${c.layers.length} extra=${c.extra} maxT=${c.maxT} ${c.cachePolicy ?? "lru"} seed=${seed}`;
    await t.step(name, () => {
      const got = drive(c, seed);
      assert.ok(got.roundsRun >= c.passes * c.layers.length, `${name}: rounds`);
      // Coverage: batches larger than the pool ran in rounds; caches and prefetches were exercised.
      const largest = c.mode === "prefetch-all" ? c.experts : c.maxT * c.topK; // a layer's experts
      if (largest > SlotAllocator.minimumSlots(c.topK, c.mode, c.experts) + c.extra) {
        assert.ok(got.multiRound > 0, `${name}: no layer ran in rounds`);
      }
      if (c.mode !== "on-demand") assert.ok(got.prefetched > 0, `${name}: nothing prefetched`);
      if (c.extra > 0 || c.mode !== "on-demand") assert.ok(got.hits > 0, `${name}: no cache hit`);
    });
  }
});
