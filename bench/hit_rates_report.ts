/**
 * The report of `bench/hit_rates.ts`: its JSON shape and the Markdown it writes (tables and a few
 * computed lines of interpretation). Pure; no GPU.
 *
 * @example
 * ```ts ignore
 * import { formatReport } from "./hit_rates_report.ts";
 * const report = JSON.parse(await Deno.readTextFile("bench/results/hit_rates.json"));
 * console.log(formatReport(report));
 * ```
 * @module
 */

/** Hits over a denominator; `rate` null when it is 0. */
export interface Rate {
  hits: number;
  /** Pre-gate: the router's choices (tokens x top-k) in layers with a prediction. */
  choices: number;
  rate: number | null;
}

/** Pre-gate hit rates of a set of passes: pooled and per MoE layer (keyed by layer index). */
export interface PregateRates {
  overall: Rate;
  layers: Record<string, Rate>;
}

/** One pregated run: a model and a pre-gate policy, over decode and teacher-forced windows. */
export interface PregateRun {
  /** `trained pre-gate` or `next-router stand-in`. */
  label: string;
  model: string;
  pregate: "strict" | "exact";
  /** Decode steps (the prompts' prefill left out). */
  decode: PregateRates;
  /** The prompts' prefill passes (per token, as decode counts). */
  prefill: PregateRates;
  /** Teacher-forced held-out windows, with the perplexity of those windows in this run. */
  teacherForced: PregateRates & { perplexity: number };
  /** The first prompt and its continuation. */
  sample: string;
  seconds: number;
}

/** Hits / requested experts of one replay. */
export interface CacheRate {
  hits: number;
  requested: number;
  rate: number;
}

/** A replay of all passes and of the decode passes only (the same run; prefill still fills it). */
export interface CacheSplit {
  all: CacheRate;
  decode: CacheRate;
}

/** What `bench/hit_rates.ts` writes as JSON. */
export interface HitRateReport {
  date: string;
  command: string;
  machine: string;
  heldout: { file: string; tokens: number };
  prompts: { count: number; promptTokens: number; generated: number };
  windows: { count: number; length: number; indices: number[]; of: number };
  pregate: PregateRun[];
  cache: {
    model: string;
    experts: number;
    moeLayers: number;
    topK: number;
    /** Real on-demand runs: Pregate's counters (all passes), and whether the replay matched. */
    measured: {
      policy: "lru" | "lfu";
      extra: number;
      slots: number;
      hits: number;
      lookups: number;
      rate: number;
      replayEqual: boolean;
      seconds: number;
    }[];
    /** The measured runs' request stream replayed with the allocator's LRU/LFU and with OPT. */
    replayed: { extra: number; slots: number; lru: CacheSplit; lfu: CacheSplit; opt: CacheSplit }[];
  };
  /** PyTorch's agreement over every protocol window (the training run's eval), when found. */
  torchEval: {
    file: string;
    trainedStrict: number | null;
    trainedExact: number | null;
    standInStrict: number | null;
    standInExact: number | null;
  } | null;
  seconds: number;
}

const pct = (x: number | null | undefined, d = 1) =>
  x === null || x === undefined ? "-" : `${(100 * x).toFixed(d)}%`;
const pts = (x: number) => `${(100 * x).toFixed(1)} points`;
const table = (head: string[], rows: string[][]) =>
  [
    `| ${head.join(" | ")} |`,
    `|${head.map(() => " --- ").join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");

/**
 * The Markdown report: the pre-gate tables (pooled, then per layer for decode and teacher-forced),
 * the cache tables (measured runs, then the replay of every size with OPT), and the reading.
 *
 * @example
 * ```ts ignore
 * import { formatReport } from "./hit_rates_report.ts";
 * await Deno.writeTextFile("hit_rates.md", formatReport(report));
 * ```
 */
export function formatReport(r: HitRateReport): string {
  return [
    `# Real routing, real hit rates`,
    "",
    `${r.date}, ${r.machine}. Written by \`bench/hit_rates.ts\` in ${
      (r.seconds / 60).toFixed(1)
    } min:`,
    "",
    "```sh",
    r.command,
    "```",
    "",
    `These numbers come from the trained models on held-out English (\`${r.heldout.file}\`, ` +
    `${r.heldout.tokens} tokens) and **supersede the hit rates measured on random-weight ` +
    `checkpoints** quoted in earlier results and docs (e.g. the stand-in pre-gate's 0.88 in ` +
    "`bench/results/README.md`, sessions 3-5): with random weights routing is noise, so those " +
    "rates said nothing about real models.",
    "",
    ...pregateSection(r),
    ...cacheSection(r),
    "## Reading",
    "",
    ...reading(r).map((s) => `- ${s}`),
    "",
  ].join("\n");
}

function run(r: HitRateReport, label: string, pregate: string): PregateRun | undefined {
  return r.pregate.find((p) => p.label === label && p.pregate === pregate);
}

function pregateSection(r: HitRateReport): string[] {
  const t = r.torchEval;
  const torch = (label: string, pregate: string) => {
    if (!t) return "-";
    const x = label.startsWith("trained")
      ? (pregate === "strict" ? t.trainedStrict : t.trainedExact)
      : (pregate === "strict" ? t.standInStrict : t.standInExact);
    return pct(x);
  };
  const rows = r.pregate.map((p) => [
    p.label,
    `\`${p.model}\``,
    p.pregate,
    `${pct(p.decode.overall.rate)} (${p.decode.overall.choices})`,
    `${pct(p.teacherForced.overall.rate)} (${p.teacherForced.overall.choices})`,
    p.teacherForced.perplexity.toFixed(2),
    torch(p.label, p.pregate),
  ]);
  const layers = Object.keys(r.pregate[0]?.decode.layers ?? {}).filter((l) =>
    r.pregate.some((p) => p.decode.layers[l].choices > 0)
  );
  const perLayer = (pick: (p: PregateRun) => PregateRates) =>
    table(
      ["layer", ...r.pregate.map((p) => `${p.label.split(" ")[0]} ${p.pregate}`)],
      layers.map((l) => [l, ...r.pregate.map((p) => pct(pick(p).layers[l].rate))]),
    );
  return [
    "## Pre-gate hit rate",
    "",
    "The share of the router's top-k choices that the pre-gate, one MoE block earlier, had " +
    "predicted for the same token (Pregate's per-token count; the first MoE layer has no " +
    "pre-gate). *Trained pre-gate*: the fine-tuned pre-gated model. *Next-router stand-in*: its " +
    "conventional twin (same data, steps and seed, no pre-gates), where the pre-gate is the next " +
    "block's router applied to the current block's input (training-free). `strict` computes each " +
    "layer with the predicted experts (so the hidden states and the text follow the prediction); " +
    "`exact` with the router's own, copying the misses on demand.",
    "",
    `Decode: ${r.prompts.count} prompts (the first ${r.prompts.promptTokens} tokens of evenly ` +
    `spaced held-out paragraphs), ${r.prompts.generated} greedy tokens each; the prefill passes ` +
    `are left out. Teacher-forced: ${r.windows.count} of the ${r.windows.of} windows of ` +
    `${r.windows.length} tokens the evaluation protocol cuts the held-out text into (evenly ` +
    `spaced: ${r.windows.indices.join(", ")}), each from an empty cache, as \`eval\` runs them; ` +
    "ppl is the perplexity of those windows in that run. In brackets: the router's choices " +
    "counted (tokens x top-k x MoE layers with a pre-gate). The last column is PyTorch's agreement " +
    "over all the windows (the training run's evaluation" + (t ? `, \`${t.file}\`` : "") + ").",
    "",
    table(
      ["pre-gate", "model", "policy", "decode", "teacher-forced", "ppl", "PyTorch, all windows"],
      rows,
    ),
    "",
    "Per MoE layer, decode:",
    "",
    perLayer((p) => p.decode),
    "",
    "Per MoE layer, teacher-forced:",
    "",
    perLayer((p) => p.teacherForced),
    "",
  ];
}

function cacheSection(r: HitRateReport): string[] {
  const c = r.cache, all = c.experts * c.moeLayers;
  const measured = table(
    ["policy", "--expert-cache", "slots", "measured hit rate", "hits / lookups", "replay", "s"],
    c.measured.map((m) => [
      m.policy.toUpperCase(),
      String(m.extra),
      String(m.slots),
      pct(m.rate),
      `${m.hits} / ${m.lookups}`,
      m.replayEqual ? "equal" : "DIFFERS",
      m.seconds.toFixed(0),
    ]),
  );
  const isMeasured = (extra: number) => c.measured.some((m) => m.extra === extra);
  const replay = table(
    [
      "--expert-cache",
      "slots (of all experts)",
      "LRU",
      "LFU",
      "OPT",
      "decode only: LRU",
      "LFU",
      "OPT",
    ],
    c.replayed.map((x) => [
      `${x.extra}${isMeasured(x.extra) ? " (measured)" : ""}`,
      `${x.slots} (${pct(x.slots / all, 0)})`,
      pct(x.lru.all.rate),
      pct(x.lfu.all.rate),
      pct(x.opt.all.rate),
      pct(x.lru.decode.rate),
      pct(x.lfu.decode.rate),
      pct(x.opt.decode.rate),
    ]),
  );
  return [
    "## Expert-cache hit rate (on-demand)",
    "",
    `\`${c.model}\` in \`on-demand\` mode: ${c.moeLayers} MoE layers x ${c.experts} experts ` +
    `(${all} in all), top-${c.topK}, so the pool holds ${c.topK} slots plus \`--expert-cache\`, ` +
    "shared by all layers. One load per row, the same prompts and tokens as above, the cache kept " +
    "warm from prompt to prompt. The hit rate is the share of the experts a layer computes with " +
    "that were already in a slot (`expert_cache_hit_rate`; all passes, prefill included).",
    "",
    measured,
    "",
    "The measured runs made the same request stream (on-demand computes with the router's experts; " +
    "checked). Replayed offline (`runtime/experts/belady.ts`) on Pregate's own slot allocator, the " +
    "LRU and LFU counts equal the measured ones in every measured row (`replay` above). OPT is " +
    "Belady's rule on the same slot semantics (pinned while acquired, every miss copied into a " +
    "slot): the most hits any eviction policy can get on this stream. The decode-only columns " +
    "count the decode passes' requests of the same replays.",
    "",
    replay,
    "",
  ];
}

function reading(r: HitRateReport): string[] {
  const out: string[] = [];
  for (const pregate of ["strict", "exact"]) {
    const tr = run(r, "trained pre-gate", pregate), si = run(r, "next-router stand-in", pregate);
    if (!tr || !si) continue;
    const d1 = tr.decode.overall.rate!, d0 = si.decode.overall.rate!;
    const f1 = tr.teacherForced.overall.rate!, f0 = si.teacherForced.overall.rate!;
    out.push(
      `Pre-gate, ${pregate}: the trained pre-gate predicts ${pct(d1)} of the router's choices ` +
        `in decode and ${pct(f1)} teacher-forced, against ${pct(d0)} and ${pct(f0)} for the ` +
        `stand-in: ${pts(d1 - d0)} and ${pts(f1 - f0)} more, i.e. ${
          pct(1 - (1 - d1) / (1 - d0), 0)
        } and ${pct(1 - (1 - f1) / (1 - f0), 0)} fewer mispredicted experts (each one an ` +
        "on-demand copy in exact mode, a wrong expert in strict mode).",
    );
  }
  const tr = run(r, "trained pre-gate", "exact");
  if (tr) {
    const rates = Object.entries(tr.decode.layers).filter(([, x]) => x.rate !== null);
    if (rates.length) {
      const lo = rates.reduce((a, b) => (b[1].rate! < a[1].rate! ? b : a));
      const hi = rates.reduce((a, b) => (b[1].rate! > a[1].rate! ? b : a));
      out.push(
        `Per layer (trained, exact, decode) the hit rate runs from ${pct(lo[1].rate)} ` +
          `(layer ${lo[0]}) to ${pct(hi[1].rate)} (layer ${hi[0]}).`,
      );
    }
  }
  const rows = r.cache.replayed.filter((x) => x.opt.all.rate > 0);
  for (const x of rows.filter((x) => r.cache.measured.some((m) => m.extra === x.extra))) {
    const miss = (s: CacheSplit) => s.all.requested - s.all.hits;
    out.push(
      `Cache, ${x.slots} slots (\`--expert-cache ${x.extra}\`): LRU ${pct(x.lru.all.rate)}, ` +
        `LFU ${pct(x.lfu.all.rate)}, OPT ${pct(x.opt.all.rate)}; LRU is ` +
        `${pts(x.opt.all.rate - x.lru.all.rate)} and LFU ${pts(x.opt.all.rate - x.lfu.all.rate)} ` +
        `below OPT (${(miss(x.lru) / miss(x.opt)).toFixed(2)}x and ` +
        `${(miss(x.lfu) / miss(x.opt)).toFixed(2)}x OPT's copies).`,
    );
  }
  const perToken = r.cache.topK * r.cache.moeLayers;
  const cyclic = r.cache.replayed.filter((x) =>
    x.extra > 0 && x.slots < perToken && x.lru.all.rate < 0.01
  ).at(-1);
  if (cyclic) {
    out.push(
      `Up to ${cyclic.slots} slots LRU hits almost nothing (${pct(cyclic.lru.all.rate)}; LFU ` +
        `${pct(cyclic.lfu.all.rate)}, OPT ${
          pct(cyclic.opt.all.rate)
        }): each token visits the MoE ` +
        `layers in turn, and with fewer slots than one token's experts (top-${r.cache.topK} x ` +
        `${r.cache.moeLayers} layers = ${perToken}) LRU always evicts the ones the next token ` +
        "reaches first.",
    );
  }
  const none = r.cache.replayed.find((x) => x.extra === 0);
  if (none) {
    out.push(
      `With no cache (${none.slots} slots) every policy, OPT included, hits ` +
        `${pct(none.opt.all.rate)}: the next request always comes from another layer.`,
    );
  }
  return out;
}
