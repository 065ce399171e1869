// The paper report's tables: our figures beside the paper's A100 ones, the headline ratios, skipped
// configurations, HF rows, and the plot.
import assert from "node:assert/strict";
import {
  type HfRow,
  paperMarkdown,
  type PaperRow,
  type PaperRun,
  paperSvg,
} from "./paper_report.ts";

const row = (mode: string, tps: number, peak: number): PaperRow => ({
  model: "switch-base-8",
  dtype: "f32",
  mode,
  status: "ok",
  decode_tokens_per_s: tps,
  peak_gpu_bytes: peak,
  moe_block_ms: 1000 / tps / 6,
  upload_bytes_per_token: mode === "resident" ? 0 : 2 ** 20,
  pregate_hit_rate: mode.startsWith("pregated") ? 0.25 : null,
  ceiling_tokens_per_s: 500,
  same_tokens: mode === "pregated-strict" ? null : true,
});

const run: PaperRun = {
  gpu: "dawn: test",
  date: "2026-12-07",
  encoder_tokens: 256,
  decode_tokens: 64,
  copy_gb_s: { "switch-base-8/f32": 25 },
  moe_block_gpu_ms: { "switch-base-8/f32": 0.5 },
  rows: [
    row("resident", 200, 4 * 2 ** 30),
    row("pregated-strict", 150, 2 ** 30),
    row("pregated-exact", 140, 2 ** 30),
    row("on-demand", 100, 2 ** 30),
    {
      model: "switch-base-8",
      dtype: "f32",
      mode: "prefetch-all",
      status: "skipped",
      reason: "binding limit",
    },
  ],
};
const hf: HfRow[] = [
  {
    model: "switch-base-8",
    dtype: "f32",
    mode: "hf-gpu-only",
    status: "ok",
    decode_tokens_per_s: 36.6,
  },
  {
    model: "switch-base-8",
    dtype: "f32",
    mode: "hf-offload",
    status: "ok",
    decode_tokens_per_s: 14,
  },
];

Deno.test("paper report: ours beside the paper's A100 figures, ratios, skipped configurations, HF", () => {
  const md = paperMarkdown([run], hf);
  // tokens/s row: GPU-only 200 [129], Pre-gated strict / exact [112], OnDemand [79], Prefetch n/a.
  assert.match(
    md,
    /\| switch-base-8 tok\/s \| 200\.0 \[129\.0\] \| 150\.0 \/ 140\.0 \[112\.0\] \| 100\.0 \[79\.0\] \| n\/a \[24\.0\] \| 36\.6 \| 14\.0 \|/,
  );
  // Pre-gated / OnDemand: 1.50x / 1.40x against the paper's 112 / 79 = 1.42x; memory 0.25x [0.65x].
  assert.match(md, /1\.50x \/ 1\.40x \[1\.42x\]/);
  assert.match(md, /0\.25x \/ 0\.25x \[0\.65x\]/);
  assert.match(md, /10\.71x \/ 10\.00x/); // against HF with experts offloaded
  assert.match(md, /MoE-Prefetch \| skipped: binding limit/);
  assert.match(md, /expert copies 25\.00 GB\/s/);
  const svg = paperSvg([run], hf);
  assert.ok(svg.startsWith("<svg") && svg.includes(">hf-offload<") && svg.includes(">base-8 f32<"));
});

Deno.test("paper report: a repeated model and dtype shows the first run's figures in the tables", () => {
  const repeat: PaperRun = {
    ...run,
    date: "2026-12-08",
    rows: run.rows.map((r) => ({ ...r, decode_tokens_per_s: 1 })),
  };
  const md = paperMarkdown([run, repeat], [...hf, { ...hf[0], decode_tokens_per_s: 99 }]);
  assert.match(md, /\| switch-base-8 tok\/s \| 200\.0 \[129\.0\] \| 150\.0 \/ 140\.0/);
  assert.match(md, /\| switch-base-8 \| f32 \| GPU-only \| 1\.0 \|/); // the repeat's details
  assert.doesNotMatch(md, /99\.0/);
});

Deno.test("paper report: a configuration the first run skipped comes from a later run", () => {
  const later: PaperRun = {
    ...run,
    date: "2026-12-08",
    rows: [
      { ...row("resident", 7, 4 * 2 ** 30) },
      { ...row("prefetch-all", 3.5, 2 ** 31) },
    ],
  };
  const md = paperMarkdown([run, later], hf);
  // GPU-only stays the first run's (200); MoE-Prefetch, skipped there, is the later run's 3.5.
  assert.match(
    md,
    /\| switch-base-8 tok\/s \| 200\.0 \[129\.0\] \| 150\.0 \/ 140\.0 \[112\.0\] \| 100\.0 \[79\.0\] \| 3\.5 \[24\.0\] \|/,
  );
});
