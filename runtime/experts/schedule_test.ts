// Targeted cases of the pre-gate scheduler, step by step. Property tests: schedule_property_test.ts.
import assert from "node:assert/strict";
import { ArgumentError } from "../base/errors.ts";
import { Scheduler } from "./schedule.ts";

const ids = (...xs: number[]) => Uint32Array.from(xs);

Deno.test("pregated exact: the router's experts; misses on demand, the prediction copied at the next sync", () => {
  const s = new Scheduler({ mode: "pregated", experts: 8, layers: [1, 3], slots: 4 });
  s.beginPass(1);
  assert.deepEqual(s.readback(1), { routing: true, prediction: true });
  assert.deepEqual(s.readback(3), { routing: true, prediction: false });
  const a = s.layer(1, ids(6, 2), ids(4, 5));
  assert.equal(a.rounds.length, 1);
  assert.deepEqual(a.rounds[0], {
    experts: [2, 6],
    slots: [0, 1],
    uploads: [{ layer: 1, expert: 2, slot: 0 }, { layer: 1, expert: 6, slot: 1 }],
    part: "all",
    hits: 0,
  });
  // Layer 3's prediction goes into the two free slots, while layer 3's routing is read back.
  assert.deepEqual(a.prefetch, {
    layer: 3,
    at: "next-sync",
    uploads: [{ layer: 3, expert: 4, slot: 2 }, { layer: 3, expert: 5, slot: 3 }],
  });
  assert.equal(a.report.predicted, null);
  const b = s.layer(3, ids(5, 7), null); // 5 predicted, 7 missed
  assert.deepEqual(b.rounds[0].experts, [5, 7]);
  assert.equal(b.rounds[0].hits, 1);
  // 7 takes the slot of the least recently used unpinned expert (layer 1's expert 2, slot 0).
  assert.deepEqual(b.rounds[0].uploads, [{
    layer: 3,
    expert: 7,
    slot: 0,
    evicted: { layer: 1, expert: 2 },
  }]);
  assert.equal(b.prefetch, null);
  assert.deepEqual(b.report, {
    step: 0,
    tokens: 1,
    layer: 3,
    chosen: [5, 7],
    predicted: [4, 5],
    compute: [5, 7],
    resident: [],
    uploaded: [4, 5, 7],
    onDemand: [7],
    pregateHits: 1,
    tokenHits: 1,
    tokenChoices: 2,
    cacheHits: 1,
    cacheLookups: 2,
  });
});

Deno.test("pregated strict: a predicted layer computes with the prediction, copied before it", () => {
  const s = new Scheduler({
    mode: "pregated",
    pregate: "strict",
    experts: 8,
    layers: [0, 1, 2],
    slots: 4,
  });
  s.beginPass(1);
  s.layer(0, ids(0, 1), ids(6, 6)); // the first MoE layer has no prediction: its router's experts
  const b = s.layer(1, ids(2, 3), ids(7, 4));
  assert.deepEqual(b.rounds[0].experts, [6]); // the prediction (distinct), not the router's 2 and 3
  assert.deepEqual(b.rounds[0].uploads, []);
  assert.deepEqual(b.report.chosen, [2, 3]);
  assert.equal(b.report.pregateHits, 0);
  const c = s.layer(2, ids(4, 5), null);
  assert.deepEqual(c.rounds[0].experts, [4, 7]);
  assert.equal(c.rounds[0].hits, 2);
  assert.equal(c.report.pregateHits, 1);
});

Deno.test("prefetch-all: no readback; every expert, the next layer's copied while this one computes", () => {
  const E = 3;
  const s = new Scheduler({ mode: "prefetch-all", experts: E, layers: [0, 1], slots: 2 * E });
  s.beginPass(1);
  assert.deepEqual(s.readback(0), { routing: false, prediction: false });
  const a = s.layer(0, null, null);
  assert.deepEqual(a.rounds[0].experts, [0, 1, 2]);
  assert.equal(a.rounds[0].uploads.length, E); // cold: on demand
  assert.equal(a.prefetch?.at, "now");
  assert.deepEqual(a.prefetch?.uploads.map((u) => [u.layer, u.slot]), [[1, 3], [1, 4], [1, 5]]);
  const b = s.layer(1, null, null);
  assert.deepEqual(b.rounds[0].uploads, []);
  assert.deepEqual(b.report.resident, []); // all copied in by the prefetch
  assert.deepEqual(b.report.uploaded, [0, 1, 2]);
  assert.deepEqual(b.report.onDemand, []);
});

Deno.test("prefetch-all in E slots: the next layer's copies take the slots this layer released", () => {
  const E = 3;
  const s = new Scheduler({ mode: "prefetch-all", experts: E, layers: [0, 1, 2], slots: E });
  s.beginPass(1);
  const a = s.layer(0, null, null);
  assert.deepEqual(a.rounds[0].slots, [0, 1, 2]);
  assert.deepEqual(a.prefetch?.uploads.map((u) => [u.layer, u.slot]).sort(), [[1, 0], [1, 1], [
    1,
    2,
  ]]);
  const b = s.layer(1, null, null);
  assert.deepEqual(b.rounds[0].uploads, []); // resident: prefetched
  assert.equal(b.prefetch?.uploads.length, E);
  assert.deepEqual(s.layer(2, null, null).rounds[0].uploads, []);
});

Deno.test("a batch whose experts exceed the slots runs in rounds that reuse them", () => {
  const s = new Scheduler({ mode: "on-demand", experts: 8, layers: [0], slots: 2 });
  s.beginPass(3);
  const d = s.layer(0, ids(7, 1, 3, 1, 5, 7), null); // 4 distinct experts, 2 slots
  assert.deepEqual(d.rounds.map((r) => [r.experts, r.slots, r.part]), [
    [[1, 3], [0, 1], "round"],
    [[5, 7], [0, 1], "last"],
  ]);
  assert.deepEqual(d.report.onDemand, [1, 3, 5, 7]);
  assert.equal(d.report.tokens, 3);
});

Deno.test("passes are numbered per sequence; reset forgets predictions and keeps the cache", () => {
  const s = new Scheduler({
    mode: "pregated",
    pregate: "strict",
    experts: 4,
    layers: [0, 1],
    slots: 4,
  });
  s.beginPass(1);
  s.layer(0, ids(0), ids(3));
  assert.deepEqual(s.layer(1, ids(1), null).report.compute, [3]);
  s.beginPass(1);
  assert.equal(s.layer(0, ids(0), ids(2)).report.step, 1); // predicts 2 for layer 1
  s.reset();
  s.beginPass(1);
  const b = s.layer(1, ids(1), null);
  assert.equal(b.report.step, 0);
  assert.equal(b.report.predicted, null); // forgotten: the router's expert
  assert.deepEqual(b.report.compute, [1]);
  assert.deepEqual(s.layer(0, ids(0), ids(2)).report.resident, [0]); // still in its slot
});

Deno.test("bad calls are typed errors naming the argument", () => {
  const bad = (fn: () => unknown, argument: string) =>
    assert.throws(fn, (e) => e instanceof ArgumentError && e.argument === argument);
  const s = new Scheduler({ mode: "pregated", experts: 4, layers: [0, 1], slots: 2 });
  bad(() => s.layer(0, ids(1), ids(2)), "layer"); // before beginPass
  bad(() => s.beginPass(0), "tokens");
  s.beginPass(1);
  bad(() => s.layer(0, null, ids(2)), "routed");
  bad(() => s.layer(0, ids(1), null), "predictedNext");
  bad(() => s.layer(1, ids(1), ids(2)), "predictedNext"); // the last MoE layer predicts nothing
  bad(
    () => new Scheduler({ mode: "resident" as never, experts: 4, layers: [0], slots: 2 }),
    "mode",
  );
  bad(
    () =>
      new Scheduler({
        mode: "pregated",
        pregate: "loose" as never,
        experts: 4,
        layers: [0],
        slots: 2,
      }),
    "pregate",
  );
  bad(() => new Scheduler({ mode: "on-demand", experts: 4, layers: [0], slots: 0 }), "slots");
});

Deno.test("pre-gate hits are counted per token: a pass of two tokens whose predictions are swapped hits nothing", () => {
  const s = new Scheduler({
    mode: "pregated",
    pregate: "exact",
    experts: 8,
    layers: [0, 1],
    slots: 8,
  });
  s.beginPass(2);
  // Layer 0 predicts layer 1: token 0 -> {1, 2}, token 1 -> {3, 4}.
  s.layer(0, new Uint32Array([0, 5, 0, 5]), new Uint32Array([1, 2, 3, 4]));
  // Layer 1's router: token 0 -> {3, 4}, token 1 -> {2, 1}: every expert predicted for some token.
  const d = s.layer(1, new Uint32Array([3, 4, 2, 1]), null);
  assert.equal(d.report.pregateHits, 4, "over the pass's union every chosen expert was predicted");
  assert.equal(d.report.tokenHits, 0, "but not for the token that chose it");
  assert.equal(d.report.tokenChoices, 4);
  s.beginPass(1);
  s.layer(0, new Uint32Array([0, 5]), new Uint32Array([1, 2]));
  const one = s.layer(1, new Uint32Array([2, 7]), null);
  assert.equal(one.report.tokenHits, 1);
  assert.equal(one.report.tokenHits, one.report.pregateHits, "one token: the two counts agree");
});
