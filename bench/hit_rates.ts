/**
 * Real routing, real hit rates (issue 13, item 5): on held-out English text, with the trained
 * models (not random weights),
 *
 * 1. the pre-gate hit rate (share of the router's choices the pre-gate predicted for the same
 *    token, per MoE layer and pooled) of the trained pre-gates (`models/demo`) and of the
 *    training-free stand-in (the next layer's router on the current hidden state) on the
 *    conventional twin (`.models/a`), each in `pregated` mode with `--pregate strict` and `exact`:
 *    over greedy decode from prompts taken from the held-out text, and over teacher-forced
 *    held-out windows of the evaluation protocol (`runtime/eval.ts`);
 * 2. the expert-cache hit rate of `on-demand` mode with LRU and LFU at several `--expert-cache`
 *    sizes, measured from Pregate's counters on real runs, next to the same stream replayed
 *    offline (`runtime/experts/belady.ts`): the allocator's LRU/LFU (checked equal to the
 *    measured counts) and Belady's OPT, the best any eviction policy could do.
 *
 * Writes `OUT.json` and `OUT.md` (default `bench/results/hit_rates`). Not a test; about 20-30
 * minutes on llvmpipe with the defaults (fewer prompts, tokens or windows run faster).
 *
 * Run: `deno run -A bench/hit_rates.ts [--heldout FILE] [--trained DIR] [--conventional DIR]
 * [--prompts 8] [--prompt-tokens 32] [--tokens 48] [--windows 4] [--window 256]
 * [--cache-extra 6,14,30] [--sim-extra 0,2,6,14,22,30,46,62] [--gpu native|dawn|auto] [--out PREFIX]`
 * @module
 */
import { parseArgs } from "node:util";
import { openGpu } from "../runtime/base/gpu/device.ts";
import { loadModel, type Model } from "../runtime/model.ts";
import { loadConfig, type MoeFfn } from "../runtime/models/config.ts";
import { loadTokenizer } from "../runtime/text/tokenizer.ts";
import { evalWindows, windowNll } from "../runtime/eval.ts";
import type { TraceRecord } from "../runtime/experts/trace.ts";
import {
  type CachePool,
  onDemandRequests,
  simulateAllocator,
  simulateOptimal,
} from "../runtime/experts/belady.ts";
import {
  formatReport,
  type HitRateReport,
  type PregateRun,
  type Rate,
} from "./hit_rates_report.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    heldout: { type: "string", default: "heldout_scratch.txt" },
    trained: { type: "string", default: "models/demo" },
    conventional: { type: "string", default: ".models/a" },
    prompts: { type: "string", default: "8" },
    "prompt-tokens": { type: "string", default: "32" },
    tokens: { type: "string", default: "48" },
    windows: { type: "string", default: "4" },
    window: { type: "string", default: "256" },
    "cache-extra": { type: "string", default: "6,14,30" },
    "sim-extra": { type: "string", default: "0,2,6,14,22,30,46,62" },
    "torch-eval": { type: "string", default: "bench/results/2026-12-07_h100_train_eval.json" },
    gpu: { type: "string", default: "native" },
    out: { type: "string", default: "bench/results/hit_rates" },
  },
});
const int = (s: string, name: string) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name}: expected an integer, got ${s}`);
  return n;
};
const ints = (s: string, name: string) => s.split(",").filter((x) => x).map((x) => int(x, name));
const P = int(v.prompts!, "prompts"), promptTokens = int(v["prompt-tokens"]!, "prompt-tokens");
const maxTokens = int(v.tokens!, "tokens"), W = int(v.windows!, "windows");
const windowLen = int(v.window!, "window");
const cacheExtra = ints(v["cache-extra"]!, "cache-extra");
const simExtra = [...new Set([...ints(v["sim-extra"]!, "sim-extra"), ...cacheExtra])].sort((a, b) =>
  a - b
);
if (cacheExtra.length === 0) throw new Error("--cache-extra: give at least one size");
const log = (m: string) => console.error(`[hit_rates] ${m}`);
const t0 = performance.now();

// ---------------------------------------------------------------------------------------------
// Text: prompts (paragraph starts, evenly spaced) and teacher-forced windows (evenly spaced
// windows of the evaluation protocol's grid, so PyTorch's eval scored the very same windows).

const tokenizer = await loadTokenizer(v.trained!);
const [tokA, tokB] = await Promise.all(
  [v.trained!, v.conventional!].map((d) => Deno.readTextFile(`${d}/tokenizer.json`)),
);
if (tokA !== tokB) throw new Error(`${v.trained} and ${v.conventional} have different tokenizers`);
const text = await Deno.readTextFile(v.heldout!);
// Paragraph starts, without the document separators the held-out text keeps.
const paragraphs = text.split("\n")
  .map((line) =>
    tokenizer.encode(line, { addSpecialTokens: false }).filter((id) => !tokenizer.isSpecial(id))
  )
  .filter((ids) => ids.length >= promptTokens);
const prompts = evenly(paragraphs, P).map((ids) => ids.slice(0, promptTokens));
const allIds = tokenizer.encode(text, { addSpecialTokens: false });
const protocolWindows = evalWindows(allIds, windowLen);
const windowIndex = evenly(protocolWindows.map((_, i) => i), W);
const windows = windowIndex.map((i) => protocolWindows[i]);
log(
  `${v.heldout}: ${allIds.length} tokens; ${prompts.length} prompts of ${promptTokens} tokens, ` +
    `${windows.length} of ${protocolWindows.length} windows of ${windowLen}`,
);

const moeFfn = (await loadConfig(v.trained!)).layers.find((l) => l.ffn.kind === "moe")!
  .ffn as MoeFfn;
const cfgTopK = moeFfn.topK;
const gpu = await openGpu({ gpu: v.gpu as "native" | "dawn" | "auto", log });
const contextLength = Math.max(windowLen, promptTokens + maxTokens);

// ---------------------------------------------------------------------------------------------
// 1. Pre-gate hit rates

/** Σ per-token hits and choices per MoE layer of `records`, and pooled. */
function pregateRates(records: readonly TraceRecord[], layers: readonly number[]) {
  const per = new Map(layers.map((l) => [l, { hits: 0, choices: 0 }]));
  for (const r of records) {
    const c = per.get(r.layer)!;
    c.hits += r.tokenHits ?? 0;
    c.choices += r.tokenChoices ?? 0;
  }
  const all = { hits: 0, choices: 0 };
  for (const c of per.values()) {
    [all.hits, all.choices] = [all.hits + c.hits, all.choices + c.choices];
  }
  const rate = (c: { hits: number; choices: number }): Rate => ({
    ...c,
    rate: c.choices > 0 ? c.hits / c.choices : null,
  });
  return {
    overall: rate(all),
    layers: Object.fromEntries([...per].map(([l, c]) => [String(l), rate(c)])),
  };
}

async function generateAll(model: Model) {
  const records: TraceRecord[] = [], texts: string[] = [];
  for (const [i, prompt] of prompts.entries()) {
    const out: number[] = [];
    for await (const id of model.generate(prompt, { maxTokens })) out.push(id);
    records.push(...model.trace()!.records);
    texts.push(tokenizer.decode(out));
    log(`  prompt ${i + 1}/${prompts.length}: ${JSON.stringify(texts.at(-1)!.slice(0, 60))}`);
  }
  return { records, texts };
}

async function pregateRun(label: string, dir: string, pregate: "strict" | "exact") {
  const started = performance.now();
  log(`${label}: ${dir}, pregated ${pregate}`);
  const model = await loadModel(dir, {
    device: gpu,
    mode: "pregated",
    pregate,
    trace: true,
    contextLength,
  });
  try {
    const layers = model.trace()!.moeLayers;
    const c0 = model.offloadCounters!;
    const decode = await generateAll(model);
    const tf: TraceRecord[] = [];
    let nll = 0, predicted = 0;
    for (const w of windows) {
      nll += windowNll(await model.logits(w), w);
      predicted += w.length - 1;
      tf.push(...model.trace()!.records);
    }
    const c1 = model.offloadCounters!;
    // The trace's per-token counts are the engine's: all passes together equal its counters.
    const traced = pregateRates([...decode.records, ...tf], layers).overall;
    const counted = {
      hits: c1.pregateHits - c0.pregateHits,
      choices: c1.pregateChosen - c0.pregateChosen,
    };
    if (traced.hits !== counted.hits || traced.choices !== counted.choices) {
      throw new Error(
        `${label}: trace ${JSON.stringify(traced)} != counters ${JSON.stringify(counted)}`,
      );
    }
    const run: PregateRun = {
      label,
      model: dir,
      pregate,
      decode: pregateRates(decode.records.filter((r) => r.step > 0), layers),
      prefill: pregateRates(decode.records.filter((r) => r.step === 0), layers),
      teacherForced: { ...pregateRates(tf, layers), perplexity: Math.exp(nll / predicted) },
      sample: prompts.length ? tokenizer.decode(prompts[0]) + decode.texts[0] : "",
      seconds: (performance.now() - started) / 1e3,
    };
    log(
      `  decode ${pct(run.decode.overall.rate)}, teacher-forced ${
        pct(run.teacherForced.overall.rate)
      }` +
        ` (ppl ${run.teacherForced.perplexity.toFixed(2)}), ${run.seconds.toFixed(0)} s`,
    );
    return run;
  } finally {
    await model.dispose();
  }
}

const pregateRuns: PregateRun[] = [];
for (
  const [label, dir] of [["trained pre-gate", v.trained!], [
    "next-router stand-in",
    v.conventional!,
  ]]
) {
  for (const policy of ["strict", "exact"] as const) {
    pregateRuns.push(await pregateRun(label, dir, policy));
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Expert-cache hit rates: measured on-demand runs, and the same stream replayed offline

/** The stream's requests for `slots`, and which of them belong to decode passes (step > 0). */
function stream(records: readonly TraceRecord[], slots: number) {
  const requests = onDemandRequests(records, slots);
  const decode = records.flatMap((r) =>
    new Array(Math.ceil(new Set(r.chosen).size / slots)).fill(r.step > 0)
  );
  return { requests, decode };
}

function replayAll(records: readonly TraceRecord[], pool: CachePool) {
  const { requests, decode } = stream(records, pool.slots);
  const split = (r: { requested: number; hits: number; perRequest?: number[] }) => {
    let hits = 0, requested = 0;
    requests.forEach((q, i) => {
      if (!decode[i]) return;
      hits += r.perRequest![i];
      requested += q.experts.length;
    });
    return {
      all: { hits: r.hits, requested: r.requested, rate: r.hits / r.requested },
      decode: { hits, requested, rate: hits / requested },
    };
  };
  return {
    lru: split(simulateAllocator(requests, pool, "lru", { perRequest: true })),
    lfu: split(simulateAllocator(requests, pool, "lfu", { perRequest: true })),
    opt: split(simulateOptimal(requests, pool, { perRequest: true })),
  };
}

const measured: HitRateReport["cache"]["measured"] = [];
let streamRecords: TraceRecord[] | null = null, streamKey = "", pool0: CachePool | null = null;
for (const policy of ["lru", "lfu"] as const) {
  for (const extra of cacheExtra) {
    const started = performance.now();
    log(`cache: ${v.trained}, on-demand, ${policy}, --expert-cache ${extra}`);
    const model = await loadModel(v.trained!, {
      device: gpu,
      mode: "on-demand",
      expertCache: extra,
      cachePolicy: policy,
      trace: true,
      contextLength,
    });
    try {
      const { records } = await generateAll(model);
      const c = model.offloadCounters!;
      const trace = model.trace()!;
      const pool = { experts: trace.experts, layers: trace.moeLayers, slots: model.expertSlots! };
      if (pool.slots !== cfgTopK + extra) {
        throw new Error(`expected ${cfgTopK} + ${extra} slots, the engine has ${pool.slots}`);
      }
      // On-demand computes with the router's experts: every run makes the same request stream.
      const key = JSON.stringify(records.map((r) => [r.step, r.layer, r.chosen]));
      if (streamRecords === null) [streamRecords, streamKey, pool0] = [records, key, pool];
      else if (key !== streamKey) {
        throw new Error(`${policy}/${extra}: the routing differs between runs`);
      }
      const sim = replayAll(records, pool)[policy];
      if (sim.all.hits !== c.cacheHits || sim.all.requested !== c.cacheLookups) {
        throw new Error(
          `${policy}/${extra}: measured ${c.cacheHits}/${c.cacheLookups}, ` +
            `replayed ${sim.all.hits}/${sim.all.requested}`,
        );
      }
      measured.push({
        policy,
        extra,
        slots: pool.slots,
        hits: c.cacheHits,
        lookups: c.cacheLookups,
        rate: c.cacheHits / c.cacheLookups,
        replayEqual: true,
        seconds: (performance.now() - started) / 1e3,
      });
      log(
        `  measured ${
          pct(c.cacheHits / c.cacheLookups)
        } (${c.cacheHits}/${c.cacheLookups}) = replay`,
      );
    } finally {
      await model.dispose();
    }
  }
}
const replayed = simExtra.map((extra) => {
  const pool = { ...pool0!, slots: cfgTopK + extra };
  return { extra, slots: pool.slots, ...replayAll(streamRecords!, pool) };
});

// ---------------------------------------------------------------------------------------------
// Report

let torchEval: HitRateReport["torchEval"] = null;
try {
  const runs = JSON.parse(await Deno.readTextFile(v["torch-eval"]!)).runs;
  torchEval = {
    file: v["torch-eval"]!,
    trainedStrict: runs.c?.agreement ?? null,
    trainedExact: runs.c_own_routers?.agreement ?? null,
    standInStrict: runs.b?.agreement ?? null,
    standInExact: runs.a?.agreement ?? null,
  };
} catch (e) {
  if (!(e instanceof Deno.errors.NotFound)) throw e;
}
const cpu = await Deno.readTextFile("/proc/cpuinfo").then(
  (s) => /model name\s*:\s*(.*)/.exec(s)?.[1] ?? "unknown CPU",
  () => "unknown CPU",
);
const report: HitRateReport = {
  date: new Date().toISOString().slice(0, 10),
  command: ["deno run -A bench/hit_rates.ts", ...Deno.args].join(" "),
  machine: `${gpu.describe()}; ${cpu}, ${navigator.hardwareConcurrency} threads; ` +
    `Deno ${Deno.version.deno}, ${Deno.build.os}/${Deno.build.arch}`,
  heldout: { file: v.heldout!, tokens: allIds.length },
  prompts: { count: prompts.length, promptTokens, generated: maxTokens },
  windows: {
    count: windows.length,
    length: windowLen,
    indices: windowIndex,
    of: protocolWindows.length,
  },
  pregate: pregateRuns,
  cache: {
    model: v.trained!,
    experts: pool0!.experts,
    moeLayers: pool0!.layers.length,
    topK: cfgTopK,
    measured,
    replayed,
  },
  torchEval,
  seconds: (performance.now() - t0) / 1e3,
};
await Deno.writeTextFile(`${v.out}.json`, JSON.stringify(report, null, 2) + "\n");
await Deno.writeTextFile(`${v.out}.md`, formatReport(report));
log(`wrote ${v.out}.json and ${v.out}.md in ${report.seconds.toFixed(0)} s`);
gpu.destroy();

function evenly<T>(xs: readonly T[], n: number): T[] {
  if (n >= xs.length) return [...xs];
  return Array.from({ length: n }, (_, j) => xs[Math.floor(((j + 0.5) * xs.length) / n)]);
}

function pct(x: number | null): string {
  return x === null ? "-" : `${(100 * x).toFixed(1)}%`;
}
