/**
 * Expert traces: what the offloading engine did with each MoE layer's experts at each step, how
 * to summarise it (pre-gate hit rate, cache hit rate, on-demand fetches per token, expert usage).
 * `./trace_svg.ts` draws it as a standalone SVG heat map.
 *
 * One {@linkcode TraceRecord} per (step, MoE layer). Step 0 is the prefill (all prompt tokens),
 * then one step per decoded token. Rates are pooled over records (sums of counts divided by sums
 * of counts), never averages of per-record ratios. The pre-gate hit rate counts per token, each
 * token's prediction against its own routing (`tokenHits` / `tokenChoices`), as the engine's
 * `pregate_hit_rate` does: a record's sets are unions over its step's tokens, so over a prefill an
 * expert predicted for one token and chosen by another would count as a hit. Records written before
 * the per-token counts existed fall back to the sets.
 *
 * @example
 * ```ts
 * import { type ExpertTrace, formatTraceSummary, summarizeTrace } from "./trace.ts";
 * const trace: ExpertTrace = {
 *   model: "tiny", arch: "mixtral", mode: "pregated", pregate: "exact", experts: 4,
 *   moeLayers: [0, 1],
 *   records: [
 *     { step: 1, tokens: 1, layer: 0, chosen: [1, 2], predicted: null, resident: [],
 *       uploaded: [1, 2], onDemand: [1, 2] },
 *     { step: 1, tokens: 1, layer: 1, chosen: [0, 3], predicted: [0, 2], resident: [],
 *       uploaded: [0, 2, 3], onDemand: [3] },
 *   ],
 * };
 * const summary = summarizeTrace(trace);
 * console.log(summary.overall.pregateHitRate); // 0.5
 * console.log(formatTraceSummary(summary));
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";

// ---------------------------------------------------------------------------------------------
// Types

/**
 * What happened to one MoE layer's experts in one step.
 *
 * @example
 * ```ts
 * import type { TraceRecord } from "./trace.ts";
 * const r: TraceRecord = { step: 3, tokens: 1, layer: 5, chosen: [2, 7], predicted: [2, 4],
 *   resident: [], uploaded: [2, 4, 7], onDemand: [7] }; // 2 hit, 7 miss, 4 wasted prefetch
 * console.log(r.chosen);
 * ```
 */
export interface TraceRecord {
  /**
   * 0 = prefill (all prompt tokens; an encoder-decoder's encoder pass, its decoder's first pass is
   * 1), then one per decode step.
   */
  step: number;
  /** Tokens in that step (prompt length for step 0, else 1). */
  tokens: number;
  /** Decoder layer index (only MoE layers appear). */
  layer: number;
  /** Experts the layer's true router chose (union over the step's tokens, sorted). */
  chosen: number[];
  /** Experts the pre-gate predicted one block earlier (null: first MoE layer, or no pre-gate). */
  predicted: number[] | null;
  /** Experts already in GPU slots before this layer ran (cache hits). */
  resident: number[];
  /** Experts copied in for this layer (prefetched earlier or on demand). */
  uploaded: number[];
  /** Of those, the ones copied on the critical path (mispredicted / not resident). */
  onDemand: number[];
  /**
   * Per token: the router's choices the pre-gate had predicted for that same token, summed over
   * the step's tokens, and all the router's choices (`tokens x topK`). Absent in traces written
   * before they were recorded; 0 and 0 without a prediction. For one token, `tokenHits` =
   * |predicted ∩ chosen| and `tokenChoices` = |chosen|.
   */
  tokenHits?: number;
  tokenChoices?: number;
}

/**
 * A whole run's expert trace.
 *
 * @example
 * ```ts
 * import type { ExpertTrace } from "./trace.ts";
 * const t: ExpertTrace = { model: "m", arch: "olmoe", mode: "on-demand", pregate: "exact",
 *   experts: 64, moeLayers: [0, 1, 2], records: [] };
 * console.log(t.moeLayers.length);
 * ```
 */
export interface ExpertTrace {
  /** Model name or path. */
  model: string;
  /** Architecture, e.g. `mixtral`. */
  arch: string;
  /** Offloading mode, e.g. `pregated`, `on-demand`, `prefetch-all`. */
  mode: string;
  /**
   * The engine's pre-gate policy, `exact` or `strict` (recorded in every offloading mode; it
   * decides which experts a layer computes with in `pregated` mode only).
   */
  pregate: string;
  /** Experts per MoE layer (E). */
  experts: number;
  /** Decoder layer indices of the MoE layers, ascending. */
  moeLayers: number[];
  /** One record per (step, MoE layer). */
  records: TraceRecord[];
}

/**
 * Pooled counts and rates over a set of records. A rate is `null` when its denominator is 0.
 *
 * @example
 * ```ts
 * import { summarizeTrace } from "./trace.ts";
 * const s = summarizeTrace({ model: "m", arch: "a", mode: "pregated", pregate: "p", experts: 2,
 *   moeLayers: [0], records: [] });
 * console.log(s.overall.cacheHitRate); // null
 * ```
 */
export interface TraceCounts {
  /** Records counted. */
  records: number;
  /** Tokens processed (each step's tokens counted once). */
  tokens: number;
  /** Σ |chosen|. */
  chosen: number;
  /** Records with a prediction. */
  predictedRecords: number;
  /**
   * Router choices over records with a prediction (the pre-gate hit rate's denominator): Σ
   * `tokenChoices` (tokens × top-k), or |chosen| for a record without the per-token counts.
   */
  predictedChosen: number;
  /**
   * Choices the pre-gate had predicted for the same token: Σ `tokenHits`, or |predicted ∩ chosen|
   * for a record without the per-token counts.
   */
  pregateHits: number;
  /** Σ |predicted \ chosen| (prefetched for nothing). */
  wastedPrefetches: number;
  /** Σ |resident ∩ chosen|. */
  cacheHits: number;
  /** Σ |uploaded|. */
  uploads: number;
  /** Σ |onDemand|. */
  onDemand: number;
  /** pregateHits / predictedChosen. */
  pregateHitRate: number | null;
  /** cacheHits / chosen. */
  cacheHitRate: number | null;
  /** onDemand / tokens (for `overall`: fetches on the critical path per token, all layers). */
  onDemandPerToken: number | null;
  /** uploads / tokens. */
  uploadsPerToken: number | null;
}

/**
 * One MoE layer's counts plus its expert usage.
 *
 * @example
 * ```ts
 * import type { LayerTraceSummary } from "./trace.ts";
 * const hottest = (l: LayerTraceSummary) => l.usage.indexOf(Math.max(...l.usage));
 * console.log(hottest);
 * ```
 */
export interface LayerTraceSummary extends TraceCounts {
  /** Decoder layer index. */
  layer: number;
  /** usage[e]: records (steps) in which the router chose expert e. */
  usage: number[];
}

/**
 * The result of {@linkcode summarizeTrace}.
 *
 * @example
 * ```ts
 * import { summarizeTrace, type TraceSummary } from "./trace.ts";
 * const s: TraceSummary = summarizeTrace({ model: "m", arch: "a", mode: "pregated",
 *   pregate: "p", experts: 2, moeLayers: [0], records: [] });
 * console.log(s.layers.length); // 1
 * ```
 */
export interface TraceSummary {
  model: string;
  arch: string;
  mode: string;
  pregate: string;
  experts: number;
  /** Distinct steps counted. */
  steps: number;
  /** Per MoE layer, in `moeLayers` order. */
  layers: LayerTraceSummary[];
  /** All layers pooled. */
  overall: TraceCounts;
}

/**
 * Options of {@linkcode summarizeTrace}.
 *
 * @example
 * ```ts
 * import type { SummarizeOptions } from "./trace.ts";
 * const decodeOnly: SummarizeOptions = { skipPrefill: true };
 * console.log(decodeOnly);
 * ```
 */
export interface SummarizeOptions {
  /** Leave out step 0 (the prefill, whose union over prompt tokens inflates every count). */
  skipPrefill?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Validation and summary

/** Throws an {@linkcode ArgumentError} naming `where`. */
function bad(where: string, message: string): never {
  throw new ArgumentError(where, message);
}

function checkTrace(trace: ExpertTrace): void {
  const E = trace.experts, moe = new Set(trace.moeLayers);
  if (!Number.isInteger(E) || E < 1) bad("trace.experts", `expected an integer >= 1, found ${E}`);
  if (moe.size !== trace.moeLayers.length) bad("trace.moeLayers", "a layer appears twice");
  const seen = new Set<string>(), stepTokens = new Map<number, number>();
  trace.records.forEach((r, i) => {
    const at = `trace.records[${i}]`, key = `${r.step}/${r.layer}`, t = stepTokens.get(r.step);
    if (!Number.isInteger(r.step) || r.step < 0) {
      bad(`${at}.step`, `expected >= 0, found ${r.step}`);
    }
    if (!Number.isInteger(r.tokens) || r.tokens < 1) {
      bad(`${at}.tokens`, `expected an integer >= 1, found ${r.tokens}`);
    }
    if (!moe.has(r.layer)) {
      bad(`${at}.layer`, `${r.layer} is not in moeLayers [${trace.moeLayers}]`);
    }
    if (seen.has(key)) bad(at, `a second record for step ${r.step}, layer ${r.layer}`);
    if (t !== undefined && t !== r.tokens) {
      bad(`${at}.tokens`, `step ${r.step} has ${t} tokens in another record, ${r.tokens} here`);
    }
    seen.add(key);
    stepTokens.set(r.step, r.tokens);
    checkTokenCounts(r, at);
    for (const name of ["chosen", "predicted", "resident", "uploaded", "onDemand"] as const) {
      const list = r[name];
      if (name === "predicted" && list === null) continue;
      if (!Array.isArray(list)) bad(`${at}.${name}`, `expected an array, found ${list}`);
      const e = list.find((e) => !Number.isInteger(e) || e < 0 || e >= E);
      if (e !== undefined) {
        bad(`${at}.${name}`, `expert ${e} is out of [0, ${E}) (step ${r.step}, layer ${r.layer})`);
      }
    }
  });
}

/** `tokenHits` and `tokenChoices`: both absent, or integers with 0 <= hits <= choices. */
function checkTokenCounts(r: TraceRecord, at: string): void {
  if (r.tokenHits === undefined && r.tokenChoices === undefined) return;
  for (const name of ["tokenHits", "tokenChoices"] as const) {
    const v = r[name];
    if (!Number.isInteger(v) || v! < 0) {
      bad(
        `${at}.${name}`,
        `expected an integer >= 0 (tokenHits and tokenChoices come together), found ${v}`,
      );
    }
  }
  if (r.tokenHits! > r.tokenChoices!) {
    bad(`${at}.tokenHits`, `${r.tokenHits} hits exceed ${r.tokenChoices} choices`);
  }
}

/** A record's pre-gate hits and choices: per token when it has the counts, else over its sets. */
function pregateCounts(r: TraceRecord, chosen: Set<number>, predicted: Set<number>) {
  if (r.tokenHits !== undefined && r.tokenChoices !== undefined) {
    return { hits: r.tokenHits, choices: r.tokenChoices };
  }
  let hits = 0;
  for (const e of predicted) if (chosen.has(e)) hits++;
  return { hits, choices: chosen.size };
}

function emptyCounts(): TraceCounts {
  return {
    records: 0,
    tokens: 0,
    chosen: 0,
    predictedRecords: 0,
    predictedChosen: 0,
    pregateHits: 0,
    wastedPrefetches: 0,
    cacheHits: 0,
    uploads: 0,
    onDemand: 0,
    pregateHitRate: null,
    cacheHitRate: null,
    onDemandPerToken: null,
    uploadsPerToken: null,
  };
}

const ratio = (a: number, b: number): number | null => (b > 0 ? a / b : null);

function finish(c: TraceCounts): void {
  c.pregateHitRate = ratio(c.pregateHits, c.predictedChosen);
  c.cacheHitRate = ratio(c.cacheHits, c.chosen);
  c.onDemandPerToken = ratio(c.onDemand, c.tokens);
  c.uploadsPerToken = ratio(c.uploads, c.tokens);
}

/**
 * Summarises a trace per MoE layer and overall: pre-gate hit rate (per token: Σ `tokenHits` /
 * Σ `tokenChoices` over records with a prediction; |predicted ∩ chosen| / |chosen| for records
 * without those counts), cache hit rate (|resident ∩ chosen| / |chosen|),
 * on-demand fetches and uploads per token, wasted prefetches, and per-layer expert usage counts.
 * Throws {@linkcode ArgumentError} on a malformed trace (expert out of range, layer not in
 * `moeLayers`, duplicate (step, layer), inconsistent token counts, per-token counts out of range).
 *
 * @example
 * ```ts
 * import { summarizeTrace } from "./trace.ts";
 * const s = summarizeTrace({
 *   model: "m", arch: "mixtral", mode: "pregated", pregate: "exact", experts: 4,
 *   moeLayers: [1],
 *   records: [{ step: 1, tokens: 1, layer: 1, chosen: [0, 1], predicted: [0, 3],
 *     resident: [1], uploaded: [0, 3], onDemand: [] }],
 * });
 * console.log(s.overall.pregateHitRate, s.overall.cacheHitRate); // 0.5 0.5
 * ```
 */
export function summarizeTrace(trace: ExpertTrace, opts: SummarizeOptions = {}): TraceSummary {
  checkTrace(trace);
  const layers: LayerTraceSummary[] = trace.moeLayers.map((layer) => ({
    ...emptyCounts(),
    layer,
    usage: new Array(trace.experts).fill(0),
  }));
  const byLayer = new Map(layers.map((l) => [l.layer, l]));
  const overall = emptyCounts();
  const stepTokens = new Map<number, number>();
  for (const r of trace.records) {
    if (opts.skipPrefill && r.step === 0) continue;
    const l = byLayer.get(r.layer)!;
    const chosen = new Set(r.chosen);
    const resident = new Set(r.resident);
    const predicted = r.predicted === null ? null : new Set(r.predicted);
    const pregate = predicted && pregateCounts(r, chosen, predicted);
    stepTokens.set(r.step, r.tokens);
    for (const c of [l, overall]) {
      c.records++;
      c.chosen += chosen.size;
      c.uploads += new Set(r.uploaded).size;
      c.onDemand += new Set(r.onDemand).size;
      for (const e of chosen) if (resident.has(e)) c.cacheHits++;
      if (predicted && pregate) {
        c.predictedRecords++;
        c.predictedChosen += pregate.choices;
        c.pregateHits += pregate.hits;
        for (const e of predicted) if (!chosen.has(e)) c.wastedPrefetches++;
      }
    }
    l.tokens += r.tokens;
    for (const e of chosen) l.usage[e]++;
  }
  for (const t of stepTokens.values()) overall.tokens += t;
  for (const l of layers) finish(l);
  finish(overall);
  const { model, arch, mode, pregate, experts } = trace;
  return { model, arch, mode, pregate, experts, steps: stepTokens.size, layers, overall };
}

const pct = (x: number | null) => (x === null ? "-" : `${(100 * x).toFixed(1)}%`);
const num = (x: number | null, d = 2) => (x === null ? "-" : x.toFixed(d));

/**
 * Formats a summary as a short fixed-width text table: one row per MoE layer plus an `all` row,
 * with pre-gate and cache hit rates, wasted prefetches, on-demand fetches and uploads per token,
 * and each layer's three most used experts as `expert×count`.
 *
 * @example
 * ```ts
 * import { formatTraceSummary, summarizeTrace } from "./trace.ts";
 * console.log(formatTraceSummary(summarizeTrace({ model: "m", arch: "a", mode: "pregated",
 *   pregate: "p", experts: 2, moeLayers: [0], records: [] })));
 * ```
 */
export function formatTraceSummary(summary: TraceSummary): string {
  const s = summary;
  const head = `${s.model} (${s.arch}) · mode ${s.mode} · pre-gate ${s.pregate} · ` +
    `${s.experts} experts · ${s.layers.length} MoE layers · ${s.steps} steps · ` +
    `${s.overall.tokens} tokens`;
  const cols = ["layer", "pre-gate hit", "cache hit", "wasted", "on-demand/tok", "uploads/tok"];
  const row = (name: string, c: TraceCounts, top: string) =>
    [
      name.padStart(5),
      pct(c.pregateHitRate).padStart(12),
      pct(c.cacheHitRate).padStart(9),
      String(c.wastedPrefetches).padStart(6),
      num(c.onDemandPerToken).padStart(13),
      num(c.uploadsPerToken).padStart(11),
      top,
    ].join("  ").trimEnd();
  const topOf = (usage: number[]) =>
    usage.map((n, e) => [e, n]).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || a[0] - b[0])
      .slice(0, 3).map(([e, n]) => `${e}×${n}`).join(" ");
  const lines = [head, [...cols, "top experts"].join("  ")];
  for (const l of s.layers) lines.push(row(String(l.layer), l, topOf(l.usage)));
  lines.push(row("all", s.overall, ""));
  return lines.join("\n");
}
