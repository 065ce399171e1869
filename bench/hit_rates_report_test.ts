// The hit-rate report's Markdown: its tables and the computed reading.
import assert from "node:assert/strict";
import {
  type CacheSplit,
  formatReport,
  type HitRateReport,
  type PregateRun,
  type Rate,
} from "./hit_rates_report.ts";

const rate = (hits: number, choices: number): Rate => ({ hits, choices, rate: hits / choices });
const none: Rate = { hits: 0, choices: 0, rate: null };

function pregateRun(label: string, pregate: "strict" | "exact", d: number, f: number): PregateRun {
  const rates = (x: number) => ({
    overall: rate(x, 100),
    layers: { "0": none, "1": rate(x - 10, 100), "2": rate(x + 10, 100) },
  });
  return {
    label,
    model: label.startsWith("trained") ? "models/demo" : ".models/a",
    pregate,
    decode: rates(d),
    prefill: rates(d),
    teacherForced: { ...rates(f), perplexity: 35.5 },
    sample: "",
    seconds: 1,
  };
}

const split = (all: number, decode: number): CacheSplit => ({
  all: { hits: all, requested: 100, rate: all / 100 },
  decode: { hits: decode, requested: 80, rate: decode / 80 },
});

const report: HitRateReport = {
  date: "2026-12-07",
  command: "deno run -A bench/hit_rates.ts",
  machine: "native: test",
  heldout: { file: "heldout.txt", tokens: 1000 },
  prompts: { count: 2, promptTokens: 32, generated: 48 },
  windows: { count: 1, length: 256, indices: [3], of: 7 },
  pregate: [
    pregateRun("trained pre-gate", "strict", 90, 88),
    pregateRun("trained pre-gate", "exact", 86, 85),
    pregateRun("next-router stand-in", "strict", 80, 84),
    pregateRun("next-router stand-in", "exact", 72, 70),
  ],
  cache: {
    model: "models/demo",
    experts: 8,
    moeLayers: 8,
    topK: 2,
    measured: [
      {
        policy: "lru",
        extra: 6,
        slots: 8,
        hits: 0,
        lookups: 100,
        rate: 0,
        replayEqual: true,
        seconds: 9,
      },
    ],
    replayed: [
      { extra: 0, slots: 2, lru: split(0, 0), lfu: split(0, 0), opt: split(0, 0) },
      { extra: 6, slots: 8, lru: split(0, 0), lfu: split(6, 5), opt: split(20, 18) },
    ],
  },
  torchEval: null,
  seconds: 600,
};

Deno.test("the report tabulates every run and computes the reading from the numbers", () => {
  const md = formatReport(report);
  assert.match(md, /supersede the hit rates measured on random-weight/);
  assert.match(
    md,
    /\| trained pre-gate \| `models\/demo` \| strict \| 90\.0% \(100\) \| 88\.0% \(100\) \| 35\.50 \| - \|/,
  );
  // Per layer: layer 0 has no pre-gate and no row.
  assert.doesNotMatch(md, /^\| 0 \| - \|/m);
  assert.match(md, /^\| 1 \| 80\.0% \| 76\.0% \| 70\.0% \| 62\.0% \|$/m);
  // Strict: 90 vs 80 in decode is 10 points, half the misses (10 vs 20).
  assert.match(md, /against 80\.0% and 84\.0% for the stand-in: 10\.0 points and 4\.0 points more/);
  assert.match(md, /i\.e\. 50% and 25% fewer mispredicted experts/);
  assert.match(md, /\| LRU \| 6 \| 8 \| 0\.0% \| 0 \/ 100 \| equal \| 9 \|/);
  assert.match(md, /\| 6 \(measured\) \| 8 \(13%\) \| 0\.0% \| 6\.0% \| 20\.0% \|/);
  // 100 - 0 vs 100 - 20 misses: 1.25x OPT's copies.
  assert.match(md, /LRU is 20\.0 points and LFU 14\.0 points below OPT \(1\.25x and 1\.18x/);
  assert.match(md, /Up to 8 slots LRU hits almost nothing/);
  assert.match(md, /With no cache \(2 slots\) every policy, OPT included, hits 0\.0%/);
});
