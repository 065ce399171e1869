import assert from "node:assert/strict";
import { type OffloadMode, SlotAllocator } from "./allocator.ts";
import { Harness, type HarnessOptions, type Op, rng } from "./allocator_test_util.ts";

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
  const base: OffloadMode = c.mode === "strict" ? "pregated" : c.mode;
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
      // pregated: the prediction may be prefetched before or after the compute acquire;
      // prefetch-all prefetches after the release (the scheduler's order, see minimumSlots)
      const prefetchFirst = c.mode !== "prefetch-all" && r() < 0.3;
      if (prefetchFirst) prefetch();
      const res = h.acquire(layer, ids, "compute");
      if (c.mode === "strict" && li > 0 && res !== "budget" && c.extra >= 0) {
        assert.equal(res.misses, 0, "strict pregated: the prefetched prediction is the routing");
      }
      if (c.mode === "prefetch-all" && li > 0 && res !== "budget" && c.extra >= 0) {
        assert.equal(res.misses, 0, "prefetch-all: everything is resident");
      }
      if (c.mode === "prefetch-all") {
        h.release(layer);
        prefetch();
        continue;
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
