import assert from "node:assert/strict";
import { ArgumentError } from "../base/errors.ts";
import { type ExpertTrace, formatTraceSummary, summarizeTrace, type TraceRecord } from "./trace.ts";
import { traceToSvg } from "./trace_svg.ts";
import { type EngineEvents, EventHub, recordTrace } from "./events.ts";
import { Scheduler } from "./schedule.ts";
import * as traceModule from "./trace.ts";
import * as svgModule from "./trace_svg.ts";
import * as publicModule from "../../mod.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

/** A hand-made trace: 4 experts, MoE layers 1 and 3, a 3-token prefill and 2 decode steps. */
function handTrace(model = "hand"): ExpertTrace {
  const r = (
    step: number,
    tokens: number,
    layer: number,
    chosen: number[],
    predicted: number[] | null,
    resident: number[],
    uploaded: number[],
    onDemand: number[],
  ): TraceRecord => ({ step, tokens, layer, chosen, predicted, resident, uploaded, onDemand });
  return {
    model,
    arch: "mixtral",
    mode: "pregated",
    pregate: "next-router",
    experts: 4,
    moeLayers: [1, 3],
    records: [
      r(0, 3, 1, [0, 1, 2], null, [], [0, 1, 2], [0, 1, 2]),
      r(0, 3, 3, [1, 3], [1, 2], [], [1, 2, 3], [3]),
      r(1, 1, 1, [0], null, [0, 1], [], []),
      r(1, 1, 3, [2, 3], [2, 3], [3], [2], []),
      r(2, 1, 1, [2, 3], null, [0], [2, 3], [2, 3]),
      r(2, 1, 3, [0, 1], [1, 2], [1], [0, 2], [0]),
    ],
  };
}

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

/** A random trace: top-k routing, ~80% right predictions, a few resident experts. */
function randomTrace(experts: number, layers: number, steps: number, k: number): ExpertTrace {
  const rand = rng(7), records: TraceRecord[] = [];
  const pick = (n: number) => {
    const s = new Set<number>();
    while (s.size < n) s.add(Math.floor(rand() * experts));
    return [...s].sort((a, b) => a - b);
  };
  for (let step = 0; step <= steps; step++) {
    for (let l = 0; l < layers; l++) {
      const chosen = pick(step === 0 ? Math.min(experts, 3 * k) : k);
      const predicted = l === 0 ? null : chosen.map((e) => (rand() < 0.8 ? e : (e + 1) % experts));
      const resident = pick(2);
      const onDemand = chosen.filter((e) => !resident.includes(e) && !predicted?.includes(e));
      records.push({
        step,
        tokens: step === 0 ? 16 : 1,
        layer: l,
        chosen,
        predicted: predicted && [...new Set(predicted)].sort((a, b) => a - b),
        resident,
        uploaded: onDemand,
        onDemand,
      });
    }
  }
  return {
    model: "random",
    arch: "olmoe",
    mode: "pregated",
    pregate: "next-router",
    experts,
    moeLayers: Array.from({ length: layers }, (_, l) => l),
    records,
  };
}

/**
 * Checks that `svg` is well-formed XML as far as this module writes it: one root `<svg>`, every
 * tag closed in order, quoted attributes, no stray `<`, `>` or `&` in text. Returns the tag names
 * in document order.
 */
function checkWellFormed(svg: string): string[] {
  const stack: string[] = [], names: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<>]*")*)\s*(\/?)>/y;
  let i = 0, roots = 0;
  while (i < svg.length) {
    const lt = svg.indexOf("<", i);
    const textPart = svg.slice(i, lt < 0 ? svg.length : lt);
    assert.ok(!textPart.includes(">"), `stray '>' in text near ${i}: ${textPart.slice(0, 60)}`);
    assert.ok(
      !/&(?!(amp|lt|gt|quot|apos);)/.test(textPart),
      `unescaped '&' in text: ${textPart.slice(0, 60)}`,
    );
    if (lt < 0) break;
    tag.lastIndex = lt;
    const m = tag.exec(svg);
    assert.ok(m, `malformed tag at ${lt}: ${svg.slice(lt, lt + 80)}`);
    const [all, close, name, , self] = m;
    for (const v of all.matchAll(/="([^"]*)"/g)) {
      assert.ok(!/&(?!(amp|lt|gt|quot|apos);)/.test(v[1]), `unescaped '&' in attribute: ${v[1]}`);
    }
    if (close) {
      assert.equal(stack.pop(), name, `</${name}> closes the wrong tag at ${lt}`);
    } else {
      if (stack.length === 0) roots++;
      names.push(name);
      if (!self) stack.push(name);
    }
    i = lt + all.length;
  }
  assert.deepEqual(stack, [], "unclosed tags");
  assert.equal(roots, 1, "expected exactly one root element");
  assert.equal(names[0], "svg");
  return names;
}

/** Counts the `<rect>`s in each `<g class="PREFIX-state">` group. */
function groupCounts(svg: string, prefix: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of svg.matchAll(new RegExp(`<g class="${prefix}-(\\w+)"[^>]*>(.*?)</g>`, "gs"))) {
    out[m[1]] = (m[2].match(/<rect /g) ?? []).length;
  }
  return out;
}

const sizeOf = (svg: string) => {
  const m = svg.match(/^<svg [^>]*width="(\d+)" height="(\d+)"/)!;
  return { w: Number(m[1]), h: Number(m[2]) };
};

// ---------------------------------------------------------------------------------------------
// Summary

Deno.test("summarizeTrace: exact per-layer and overall rates on a hand-made trace", () => {
  const s = summarizeTrace(handTrace());
  assert.equal(s.steps, 3);
  assert.deepEqual(s.layers.map((l) => l.layer), [1, 3]);
  const [l1, l3] = s.layers;
  // Layer 1: first MoE layer, no pre-gate.
  assert.equal(l1.pregateHitRate, null);
  assert.equal(l1.predictedRecords, 0);
  assert.equal(l1.chosen, 6);
  assert.equal(l1.cacheHits, 1);
  assert.equal(l1.cacheHitRate, 1 / 6);
  assert.equal(l1.tokens, 5);
  assert.equal(l1.onDemandPerToken, 1);
  assert.equal(l1.uploadsPerToken, 1);
  assert.deepEqual(l1.usage, [2, 1, 2, 1]);
  // Layer 3: hits 1 + 2 + 1 of 6 chosen, wasted {2} twice, resident hits 3 and 1.
  assert.equal(l3.pregateHits, 4);
  assert.equal(l3.predictedChosen, 6);
  assert.equal(l3.pregateHitRate, 2 / 3);
  assert.equal(l3.wastedPrefetches, 2);
  assert.equal(l3.cacheHitRate, 1 / 3);
  assert.equal(l3.onDemandPerToken, 0.4);
  assert.equal(l3.uploadsPerToken, 1.2);
  assert.deepEqual(l3.usage, [1, 2, 1, 2]);
  // Overall: each step's tokens counted once (3 + 1 + 1).
  const o = s.overall;
  assert.equal(o.records, 6);
  assert.equal(o.tokens, 5);
  assert.equal(o.chosen, 12);
  assert.equal(o.pregateHitRate, 2 / 3);
  assert.equal(o.cacheHitRate, 0.25);
  assert.equal(o.onDemand, 7);
  assert.equal(o.onDemandPerToken, 1.4);
  assert.equal(o.uploadsPerToken, 2.2);
  assert.equal(o.wastedPrefetches, 2);
});

Deno.test("summarizeTrace: skipPrefill leaves out step 0", () => {
  const s = summarizeTrace(handTrace(), { skipPrefill: true });
  assert.equal(s.steps, 2);
  assert.equal(s.overall.tokens, 2);
  assert.equal(s.layers[1].pregateHitRate, 0.75);
  assert.equal(s.layers[1].cacheHitRate, 0.5);
  assert.equal(s.overall.onDemandPerToken, 1.5);
  assert.deepEqual(s.layers[0].usage, [1, 0, 1, 1]);
});

Deno.test("summarizeTrace: an empty trace has null rates, not NaN", () => {
  const s = summarizeTrace({ ...handTrace(), records: [] });
  assert.equal(s.steps, 0);
  for (const c of [s.overall, ...s.layers]) {
    assert.equal(c.pregateHitRate, null);
    assert.equal(c.cacheHitRate, null);
    assert.equal(c.onDemandPerToken, null);
  }
});

Deno.test("summarizeTrace: malformed traces throw ArgumentError naming the record", () => {
  const bad = (edit: (t: ExpertTrace) => void, ...includes: string[]) => {
    const t = handTrace();
    edit(t);
    assert.throws(() => summarizeTrace(t), (e: unknown) => {
      assert.ok(e instanceof ArgumentError, String(e));
      for (const s of includes) assert.ok(e.message.includes(s), `"${s}" not in: ${e.message}`);
      return true;
    });
  };
  bad((t) => (t.records[1].chosen = [1, 4]), "records[1].chosen", "expert 4", "[0, 4)");
  bad((t) => (t.records[3].predicted = [-1]), "records[3].predicted", "expert -1");
  bad((t) => (t.records[2].layer = 2), "records[2].layer", "moeLayers");
  bad((t) => (t.records[2].step = 0), "records[2]", "second record for step 0, layer 1");
  bad((t) => (t.records[1].tokens = 2), "records[1].tokens", "3 tokens");
  bad((t) => (t.records[0].tokens = 0), "records[0].tokens");
  bad((t) => (t.experts = 0), "trace.experts");
  bad((t) => (t.moeLayers = [1, 1, 3]), "trace.moeLayers");
  bad((t) => (t.records[1].tokenHits = 2), "records[1].tokenChoices", "found undefined");
  bad(
    (t) => Object.assign(t.records[1], { tokenHits: 7, tokenChoices: 6 }),
    "records[1].tokenHits",
    "7 hits exceed 6 choices",
  );
  bad(
    (t) => Object.assign(t.records[3], { tokenHits: 1, tokenChoices: 1.5 }),
    "records[3].tokenChoices",
  );
});

Deno.test("summarizeTrace: the pre-gate hit rate counts per token where records have the counts", () => {
  // A 2-token prefill whose union over the pass looks perfect: the pre-gate predicted {0, 1} for
  // token 0 and {2, 3} for token 1, and the router chose {2, 3} for token 0 and {0, 1} for token
  // 1 (top-2). Per token, none of the 4 choices was predicted for its own token.
  const t = handTrace();
  t.records[1] = {
    ...t.records[1],
    chosen: [0, 1, 2, 3],
    predicted: [0, 1, 2, 3],
    tokenHits: 0,
    tokenChoices: 6,
  };
  // A decode step (one token): its per-token counts agree with the sets (chosen [2, 3], both
  // predicted).
  t.records[3] = { ...t.records[3], tokenHits: 2, tokenChoices: 2 };
  const s = summarizeTrace(t);
  const l3 = s.layers[1];
  // Records 1 and 3 per token (0/6, 2/2); record 5 has no counts: its sets give 1 of 2.
  assert.equal(l3.pregateHits, 0 + 2 + 1);
  assert.equal(l3.predictedChosen, 6 + 2 + 2);
  assert.equal(l3.pregateHitRate, 0.3);
  assert.equal(s.overall.pregateHitRate, 0.3);
  assert.equal(l3.wastedPrefetches, 1, "wasted prefetches stay over the sets: {2} in step 2");
  assert.equal(summarizeTrace(t, { skipPrefill: true }).layers[1].pregateHitRate, 0.75);
  // Without the per-token counts the union over the prefill counts all 4 as hits.
  const union = structuredClone(t);
  for (const r of union.records) delete r.tokenHits, delete r.tokenChoices;
  assert.equal(summarizeTrace(union).layers[1].pregateHitRate, (4 + 2 + 1) / (4 + 2 + 2));
  assert.match(formatTraceSummary(s).split("\n")[4], /^\s+all\s+30\.0%/);
});

Deno.test("formatTraceSummary: one row per layer plus an overall row", () => {
  const text = formatTraceSummary(summarizeTrace(handTrace()));
  const lines = text.split("\n");
  assert.equal(lines.length, 5);
  assert.ok(lines[0].includes("hand (mixtral)") && lines[0].includes("5 tokens"), lines[0]);
  assert.match(lines[1], /^layer\s+pre-gate hit\s+cache hit/);
  assert.match(lines[2], /^\s+1\s+-\s+16\.7%\s+0\s+1\.00\s+1\.00\s+0×2 2×2 1×1$/);
  assert.match(lines[3], /^\s+3\s+66\.7%\s+33\.3%\s+2\s+0\.40\s+1\.20\s+1×2 3×2 0×1$/);
  assert.match(lines[4], /^\s+all\s+66\.7%\s+25\.0%\s+2\s+1\.40\s+2\.20$/);
});

// ---------------------------------------------------------------------------------------------
// SVG

Deno.test("traceToSvg: well-formed, one rect per non-empty cell, colored by state", () => {
  const trace = handTrace();
  const svg = traceToSvg(trace);
  checkWellFormed(svg);
  const counts = groupCounts(svg, "cell");
  // Non-empty cells: |chosen ∪ predicted| per record = 3 + 3 + 1 + 2 + 2 + 3.
  const nonEmpty = trace.records.reduce(
    (n, r) => n + new Set([...r.chosen, ...(r.predicted ?? [])]).size,
    0,
  );
  assert.equal(nonEmpty, 14);
  // hit wins over cached: s1 L3 e3 and s2 L3 e1 were predicted and resident.
  assert.deepEqual(counts, { hit: 4, cached: 1, miss: 7, wasted: 2 });
  assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), nonEmpty);
  assert.deepEqual(groupCounts(svg, "seg"), {});
  // Labels, ticks, legend and title with the overall rates.
  for (const s of ["L1", "L3", ">P<", "hand — pregated", "pre-gate hit 66.7%", "cache hit 25.0%"]) {
    assert.ok(svg.includes(s), `missing ${s}`);
  }
  for (const s of ["hit:", "cached:", "miss:", "wasted:"]) assert.ok(svg.includes(s), s);
});

Deno.test("traceToSvg: the strips layout aggregates states per (layer, step)", () => {
  const svg = traceToSvg(handTrace(), { layout: "strips" });
  checkWellFormed(svg);
  assert.deepEqual(groupCounts(svg, "cell"), {});
  // One segment per state present in each (layer, step): L1 {miss} {cached} {miss};
  // L3 {hit, miss, wasted} {hit} {hit, miss, wasted}.
  assert.deepEqual(groupCounts(svg, "seg"), { hit: 3, cached: 1, miss: 4, wasted: 2 });
});

Deno.test("traceToSvg: the public module exports the SVG API beside the summary", () => {
  assert.equal(publicModule.traceToSvg, svgModule.traceToSvg);
  assert.equal(publicModule.TRACE_COLORS, svgModule.TRACE_COLORS);
  assert.equal(publicModule.summarizeTrace, traceModule.summarizeTrace);
});

Deno.test("traceToSvg: escapes text", () => {
  const svg = traceToSvg(handTrace(`a<b> & "c" 'd'`));
  checkWellFormed(svg);
  assert.ok(svg.includes("a&lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;"));
  assert.ok(!svg.includes("a<b>"));
  const titled = traceToSvg(handTrace(), { title: "x < y && z" });
  checkWellFormed(titled);
  assert.ok(titled.includes("x &lt; y &amp;&amp; z"));
});

Deno.test("traceToSvg: empty traces and bad options", () => {
  checkWellFormed(traceToSvg({ ...handTrace(), records: [] }));
  checkWellFormed(traceToSvg({ ...handTrace(), moeLayers: [], records: [] }));
  assert.throws(() => traceToSvg(handTrace(), { maxWidth: 0 }), ArgumentError);
  assert.throws(() => traceToSvg(handTrace(), { maxRects: NaN }), ArgumentError);
});

Deno.test("traceToSvg: 64 experts x 16 layers x 200 steps draws every cell within the size", () => {
  const trace = randomTrace(64, 16, 200, 4);
  const svg = traceToSvg(trace);
  checkWellFormed(svg);
  const nonEmpty = trace.records.reduce(
    (n, r) => n + new Set([...r.chosen, ...(r.predicted ?? [])]).size,
    0,
  );
  const counts = groupCounts(svg, "cell");
  assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), nonEmpty);
  const { w, h } = sizeOf(svg);
  assert.ok(w <= 1800 && h <= 2400, `${w} x ${h}`);
  assert.ok(svg.length < 1_500_000, `${svg.length} bytes`);
});

Deno.test("traceToSvg: a very large trace collapses to strips under the size cap", () => {
  const trace = randomTrace(128, 48, 2000, 8);
  const svg = traceToSvg(trace);
  checkWellFormed(svg);
  assert.deepEqual(groupCounts(svg, "cell"), {});
  const segs = Object.values(groupCounts(svg, "seg")).reduce((a, b) => a + b, 0);
  assert.ok(segs > 0 && segs <= 40000, `${segs} segments`);
  const { w, h } = sizeOf(svg);
  assert.ok(w <= 1800 && h <= 2400, `${w} x ${h}`);
  assert.ok(svg.length < 2_500_000, `${svg.length} bytes`);
  assert.ok(svg.includes("steps per column"));
  // A smaller rect budget gives a smaller file.
  const small = traceToSvg(trace, { maxRects: 5000 });
  checkWellFormed(small);
  assert.ok(small.length < 400_000, `${small.length} bytes`);
  // Forced cells that cannot fit in the target size still make a well-formed picture.
  const few = randomTrace(8, 2, 30, 2);
  checkWellFormed(traceToSvg(few, { layout: "cells", maxWidth: 100, maxHeight: 100 }));
});

Deno.test("trace records carry the scheduler's per-token pre-gate counts", () => {
  const events = new EventHub<EngineEvents>();
  const records: TraceRecord[] = [];
  recordTrace(events, records);
  const s = new Scheduler({ mode: "pregated", experts: 8, layers: [0, 1], slots: 8 });
  s.beginPass(2);
  // Token 0 is predicted {1, 2} and chooses {3, 4}; token 1 the other way round.
  events.emit(
    "layer",
    s.layer(0, new Uint32Array([0, 5, 0, 5]), new Uint32Array([1, 2, 3, 4])).report,
  );
  events.emit("layer", s.layer(1, new Uint32Array([3, 4, 2, 1]), null).report);
  assert.deepEqual(records.map((r) => [r.layer, r.tokenHits, r.tokenChoices]), [[0, 0, 0], [
    1,
    0,
    4,
  ]]);
  const trace = {
    model: "m",
    arch: "a",
    mode: "pregated",
    pregate: "exact",
    experts: 8,
    moeLayers: [0, 1],
    records,
  };
  const summary = summarizeTrace(trace);
  assert.equal(summary.layers[1].pregateHits, 0, "per token: no choice was predicted for it");
  assert.equal(summary.layers[1].predictedChosen, 4);
  assert.equal(summary.overall.pregateHitRate, 0);
  const union = summarizeTrace({
    ...trace,
    records: records.map(({ tokenHits: _h, tokenChoices: _c, ...r }) => r),
  });
  assert.equal(union.layers[1].pregateHits, 4, "the union over the pass hides the misses");
});
