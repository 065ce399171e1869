/**
 * Expert traces: what the offloading engine did with each MoE layer's experts at each step, how
 * to summarise it (pre-gate hit rate, cache hit rate, on-demand fetches per token, expert usage)
 * and how to draw it as a standalone SVG heat map.
 *
 * One {@linkcode TraceRecord} per (step, MoE layer). Step 0 is the prefill (all prompt tokens),
 * then one step per decoded token. Rates are pooled over records (sums of counts divided by sums
 * of counts), never averages of per-record ratios.
 *
 * @example
 * ```ts
 * import { type ExpertTrace, formatTraceSummary, summarizeTrace, traceToSvg } from "./trace.ts";
 * const trace: ExpertTrace = {
 *   model: "tiny", arch: "mixtral", mode: "pregated", pregate: "next-router", experts: 4,
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
 * const svg = traceToSvg(trace); // write it to a .svg file and open it in a browser
 * console.log(svg.length);
 * ```
 * @module
 */
import { ArgumentError } from "../errors.ts";

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
  /** 0 = prefill (all prompt tokens), then 1, 2, ... one per decode step. */
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
}

/**
 * A whole run's expert trace.
 *
 * @example
 * ```ts
 * import type { ExpertTrace } from "./trace.ts";
 * const t: ExpertTrace = { model: "m", arch: "olmoe", mode: "on-demand", pregate: "none",
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
  /** How the pre-gate was obtained, e.g. `next-router`, or `none`. */
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
  /** Σ |chosen| over records with a prediction (the pre-gate hit rate's denominator). */
  predictedChosen: number;
  /** Σ |predicted ∩ chosen|. */
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
 * Summarises a trace per MoE layer and overall: pre-gate hit rate (|predicted ∩ chosen| /
 * |chosen| over records with a prediction), cache hit rate (|resident ∩ chosen| / |chosen|),
 * on-demand fetches and uploads per token, wasted prefetches, and per-layer expert usage counts.
 * Throws {@linkcode ArgumentError} on a malformed trace (expert out of range, layer not in
 * `moeLayers`, duplicate (step, layer), inconsistent token counts).
 *
 * @example
 * ```ts
 * import { summarizeTrace } from "./trace.ts";
 * const s = summarizeTrace({
 *   model: "m", arch: "mixtral", mode: "pregated", pregate: "next-router", experts: 4,
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
    stepTokens.set(r.step, r.tokens);
    for (const c of [l, overall]) {
      c.records++;
      c.chosen += chosen.size;
      c.uploads += new Set(r.uploaded).size;
      c.onDemand += new Set(r.onDemand).size;
      for (const e of chosen) if (resident.has(e)) c.cacheHits++;
      if (predicted) {
        c.predictedRecords++;
        c.predictedChosen += chosen.size;
        for (const e of predicted) chosen.has(e) ? c.pregateHits++ : c.wastedPrefetches++;
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

// ---------------------------------------------------------------------------------------------
// SVG

/**
 * The state of one (step, layer, expert) cell, in order of precedence: `hit` (chosen and
 * predicted: the pre-gate was right, whether or not the expert was still resident), `cached`
 * (chosen, not predicted, already resident: no copy needed), `miss` (chosen, neither predicted
 * nor resident: fetched on demand), `wasted` (predicted, not chosen).
 *
 * @example
 * ```ts
 * import { type CellState, TRACE_COLORS } from "./trace.ts";
 * const s: CellState = "miss";
 * console.log(TRACE_COLORS[s]);
 * ```
 */
export type CellState = "cached" | "hit" | "miss" | "wasted";

/**
 * The fill color of each {@linkcode CellState} in {@linkcode traceToSvg}.
 *
 * @example
 * ```ts
 * import { TRACE_COLORS } from "./trace.ts";
 * console.log(TRACE_COLORS.hit); // a green
 * ```
 */
export const TRACE_COLORS: Readonly<Record<CellState, string>> = {
  hit: "#2ca25f",
  cached: "#3d7fd6",
  miss: "#d7301f",
  wasted: "#fdc777",
};

const STATES: CellState[] = ["hit", "cached", "miss", "wasted"];
const LEGEND: Record<CellState, string> = {
  hit: "hit: predicted & chosen",
  cached: "cached: resident, not predicted",
  miss: "miss: fetched on demand",
  wasted: "wasted: predicted, not chosen",
};

/**
 * Options of {@linkcode traceToSvg}.
 *
 * @example
 * ```ts
 * import type { TraceSvgOptions } from "./trace.ts";
 * const opts: TraceSvgOptions = { layout: "strips", maxWidth: 1200 };
 * console.log(opts);
 * ```
 */
export interface TraceSvgOptions {
  /**
   * `"cells"`: one row per expert, one rect per non-empty (step, layer, expert) cell.
   * `"strips"`: one strip per layer, each column a 100% stacked bar of cell states (steps binned
   * when there are many). `"auto"` (default): cells when they fit in `maxWidth` x `maxHeight` at
   * 2 px or more and need at most `maxRects` rects, else strips.
   */
  layout?: "auto" | "cells" | "strips";
  /** Target width in px (default 1800). */
  maxWidth?: number;
  /** Target height in px (default 2400). */
  maxHeight?: number;
  /** Most data rects to draw (default 40000; ~45 bytes each), bounding the file size. */
  maxRects?: number;
  /** Title text (default: the model and mode). */
  title?: string;
}

/** Escapes text for SVG/XML content and attribute values. */
function esc(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => `&${{ "&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos" }[c]};`,
  );
}

const fmt = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(1).replace(/\.0$/, ""));
const rect = (x: number, y: number, w: number, h: number) =>
  `<rect x="${fmt(x)}" y="${fmt(y)}" width="${fmt(w)}" height="${fmt(h)}"/>`;
const group = (cls: string, fill: string, parts: string[]) =>
  `<g class="${cls}" fill="${fill}">${parts.join("")}</g>`;
const text = (x: number, y: number, s: string, attrs = "") =>
  `<text x="${fmt(x)}" y="${fmt(y)}"${attrs ? " " + attrs : ""}>${esc(s)}</text>`;

function stateOf(e: number, chosen: Set<number>, pred: Set<number> | null, res: Set<number>) {
  if (chosen.has(e)) return pred?.has(e) ? "hit" : res.has(e) ? "cached" : "miss";
  return pred?.has(e) ? "wasted" : null;
}

/** A step interval that puts tick labels at least `minPx` apart. */
function tickEvery(pxPerStep: number, minPx: number): number {
  for (let m = 1;; m *= 10) {
    for (const k of [1, 2, 5]) if (k * m * pxPerStep >= minPx) return k * m;
  }
}

/** A drawn plot area: bands (one per MoE layer), columns (steps or bins of steps), data rects. */
interface Plot {
  w: number;
  h: number;
  bandY: number[];
  bandH: number;
  /** Left edge of column i (column 0 is the prefill when there is one), its width. */
  colX: (i: number) => number;
  colW: number;
  /** [first, last] decode step of each decode column. */
  spans: [number, number][];
  /** Extra width right of the plot before the per-layer stats. */
  extraRight: number;
  body: string[];
  note: string;
}

/** The steps of a trace and the states of each record's non-empty cells. */
interface Grid {
  E: number;
  layerIndex: Map<number, number>;
  hasPrefill: boolean;
  decode: number[];
  cells: { r: TraceRecord; out: [number, CellState][] }[];
}

function grid(trace: ExpertTrace): Grid {
  const steps = [...new Set(trace.records.map((r) => r.step))].sort((a, b) => a - b);
  const hasPrefill = steps[0] === 0;
  const cells = trace.records.map((r) => {
    const chosen = new Set(r.chosen), res = new Set(r.resident);
    const pred = r.predicted === null ? null : new Set(r.predicted);
    const out: [number, CellState][] = [];
    for (const e of new Set([...chosen, ...(pred ?? [])])) {
      out.push([e, stateOf(e, chosen, pred, res)!]);
    }
    return { r, out };
  });
  return {
    E: trace.experts,
    layerIndex: new Map(trace.moeLayers.map((l, i) => [l, i])),
    hasPrefill,
    decode: hasPrefill ? steps.slice(1) : steps,
    cells,
  };
}

/** Column geometry: `n` columns of width `cw`, the prefill column (if any) set apart. */
function columns(g: Grid, cw: number) {
  const pg = g.hasPrefill ? Math.max(3, Math.round(cw / 2)) : 0;
  return (i: number) => i * cw + (g.hasPrefill && i > 0 ? pg : 0);
}

const ROW_GAP = (ch: number) => (ch >= 4 ? 1 : 0);

/** One row per expert, one rect per non-empty cell, expert usage bars on the right. */
function drawCells(g: Grid, s: TraceSummary, cw: number, ch: number): Plot {
  const L = g.layerIndex.size, E = g.E, gap = 6, usageW = 44;
  const colX = columns(g, cw);
  const nCols = g.decode.length + (g.hasPrefill ? 1 : 0);
  const w = Math.max(1, colX(nCols - 1) + cw);
  const bandY = Array.from({ length: L }, (_, i) => i * (E * ch + gap));
  const col = new Map(g.decode.map((st, i) => [st, i + (g.hasPrefill ? 1 : 0)]));
  if (g.hasPrefill) col.set(0, 0);
  const groups: Record<CellState, string[]> = { hit: [], cached: [], miss: [], wasted: [] };
  const cwr = cw - ROW_GAP(cw), chr = ch - ROW_GAP(ch);
  for (const { r, out } of g.cells) {
    const x = colX(col.get(r.step)!), y0 = bandY[g.layerIndex.get(r.layer)!];
    for (const [e, st] of out) groups[st].push(rect(x, y0 + e * ch, cwr, chr));
  }
  const body = STATES.map((st) => group(`cell-${st}`, TRACE_COLORS[st], groups[st]));
  // Usage: how often each expert was chosen, relative to the layer's busiest expert.
  const ux = w + 10, bars: string[] = [];
  s.layers.forEach((l, i) => {
    const top = Math.max(1, ...l.usage);
    l.usage.forEach((n, e) => {
      if (n > 0) {
        bars.push(rect(ux, bandY[i] + e * ch, Math.max(1, Math.round(usageW * n / top)), chr));
      }
    });
  });
  body.push(group("usage", "#9aa3ad", bars));
  body.push(text(ux, -6, "usage", `font-size="10" fill="#555"`));
  if (ch >= 4 && E * ch >= 40) {
    const a = `font-size="8" fill="#999" text-anchor="end"`;
    for (const y of bandY) {
      body.push(text(-3, y + 7, "e0", a), text(-3, y + E * ch, `e${E - 1}`, a));
    }
  }
  const h = Math.max(0, L * (E * ch + gap) - gap),
    spans = g.decode.map((st): [number, number] => [st, st]);
  const note = "y: MoE layer × expert (e0 on top)", extraRight = usageW + 12;
  return { w, h, bandY, bandH: E * ch, colX, colW: cw, spans, extraRight, body, note };
}

/** One strip per layer; each column is a 100% stacked bar of its cells' states. */
function drawStrips(g: Grid, availW: number, availH: number, maxRects: number): Plot {
  const L = g.layerIndex.size, gap = 4, pre = g.hasPrefill ? 1 : 0;
  const byRects = Math.floor(maxRects / (4 * Math.max(1, L))) - pre;
  const maxCols = Math.max(1, Math.min(Math.floor(availW / 2) - pre, byRects));
  const k = Math.max(1, Math.ceil(g.decode.length / maxCols));
  const bins = Math.ceil(g.decode.length / k), nCols = bins + pre;
  const cw = Math.max(1, Math.min(12, Math.floor((availW - 4) / Math.max(1, nCols))));
  const sh = Math.max(6, Math.min(28, Math.floor(availH / Math.max(1, L))));
  const colX = columns(g, cw);
  const bandY = Array.from({ length: L }, (_, i) => i * (sh + gap));
  const col = new Map(g.decode.map((st, i) => [st, pre + Math.floor(i / k)]));
  if (g.hasPrefill) col.set(0, 0);
  const counts = new Float64Array(L * nCols * 4);
  for (const { r, out } of g.cells) {
    const base = (g.layerIndex.get(r.layer)! * nCols + col.get(r.step)!) * 4;
    for (const [, st] of out) counts[base + STATES.indexOf(st)]++;
  }
  // Stacked from the bottom: miss, wasted, cached, hit.
  const order: CellState[] = ["miss", "wasted", "cached", "hit"];
  const groups: Record<CellState, string[]> = { hit: [], cached: [], miss: [], wasted: [] };
  const cwr = cw - ROW_GAP(cw);
  for (let li = 0; li < L; li++) {
    for (let c = 0; c < nCols; c++) {
      const n = counts.subarray((li * nCols + c) * 4, (li * nCols + c + 1) * 4);
      const total = n[0] + n[1] + n[2] + n[3];
      let y = bandY[li] + sh;
      for (const st of order) {
        const v = n[STATES.indexOf(st)];
        if (v === 0) continue;
        const hh = Math.round((sh * v / total) * 10) / 10;
        y -= hh;
        groups[st].push(rect(colX(c), y, cwr, hh));
      }
    }
  }
  const spans: [number, number][] = [];
  for (let b = 0; b < bins; b++) {
    spans.push([g.decode[b * k], g.decode[Math.min(g.decode.length, (b + 1) * k) - 1]]);
  }
  const w = Math.max(1, colX(nCols - 1) + cw), h = Math.max(0, L * (sh + gap) - gap);
  const body = STATES.map((st) => group(`seg-${st}`, TRACE_COLORS[st], groups[st]));
  const note = `y: MoE layer; bar = share of the layer's experts by state` +
    (k > 1 ? `, ${k} steps per column` : "");
  return { w, h, bandY, bandH: sh, colX, colW: cw, spans, extraRight: 0, body, note };
}

/**
 * Draws a trace as a standalone SVG heat map (no scripts, no external resources). x: steps (the
 * prefill column `P` first, set apart), y: one band per MoE layer. In the `cells` layout a band
 * has one row per expert and each non-empty cell is one `<rect>` colored by its
 * {@linkcode CellState} ({@linkcode TRACE_COLORS}), with a bar of each expert's usage to the
 * right; in the `strips` layout (large traces) a band is a strip whose columns show the share of
 * each state. Each band is labelled with its layer and its pre-gate and cache hit rates (hover a
 * band for more); the title gives the overall rates. The size is bounded by `maxWidth`,
 * `maxHeight` and `maxRects`.
 *
 * @example
 * ```ts
 * import { traceToSvg } from "./trace.ts";
 * const svg = traceToSvg({
 *   model: "m", arch: "mixtral", mode: "pregated", pregate: "next-router", experts: 8,
 *   moeLayers: [0, 1],
 *   records: [
 *     { step: 1, tokens: 1, layer: 0, chosen: [1, 4], predicted: null, resident: [4],
 *       uploaded: [1], onDemand: [1] },
 *     { step: 1, tokens: 1, layer: 1, chosen: [2, 3], predicted: [2, 6], resident: [],
 *       uploaded: [2, 6, 3], onDemand: [3] },
 *   ],
 * });
 * console.log(svg.startsWith("<svg")); // true
 * ```
 */
export function traceToSvg(trace: ExpertTrace, opts: TraceSvgOptions = {}): string {
  const s = summarizeTrace(trace);
  const maxW = opts.maxWidth ?? 1800, maxH = opts.maxHeight ?? 2400;
  const maxRects = opts.maxRects ?? 40000;
  for (const [k, v] of [["maxWidth", maxW], ["maxHeight", maxH], ["maxRects", maxRects]]) {
    if (!(Number(v) > 0)) {
      throw new ArgumentError(`opts.${k}`, `expected a positive number, found ${v}`);
    }
  }
  const g = grid(trace), L = g.layerIndex.size;
  const ML = 58, TOP = 110, BOTTOM = 44, STATS = 190;
  // Cells: fit E * L rows and all steps in the target size, 12 px at most, never taller than wide.
  const nCols = g.decode.length + (g.hasPrefill ? 1 : 0);
  const cwFit = Math.floor((maxW - ML - STATS - 66 - 8) / Math.max(1, nCols));
  const chFit = Math.floor((maxH - TOP - BOTTOM - 6 * (L - 1)) / Math.max(1, g.E * L));
  const nonEmpty = g.cells.reduce((n, c) => n + c.out.length, 0);
  const fits = cwFit >= 2 && chFit >= 2 && nonEmpty <= maxRects;
  const layout = opts.layout && opts.layout !== "auto" ? opts.layout : fits ? "cells" : "strips";
  const cw = Math.max(1, Math.min(cwFit, 12));
  const p = layout === "cells"
    ? drawCells(g, s, cw, Math.max(1, Math.min(chFit, 12, cw)))
    : drawStrips(g, maxW - ML - STATS - 18, maxH - TOP - BOTTOM - 4 * (L - 1), maxRects);

  // Bands (under the data, with a hover title), layer labels and per-layer rates.
  const bands: string[] = [], labels: string[] = [];
  const sx = p.w + p.extraRight + 10, h = p.bandH;
  s.layers.forEach((l, i) => {
    const y = p.bandY[i];
    const tip = `layer ${l.layer}: pre-gate hit ${pct(l.pregateHitRate)}, cache hit ` +
      `${pct(l.cacheHitRate)}, ${num(l.onDemandPerToken)} on-demand/token, ` +
      `${l.wastedPrefetches} wasted prefetches`;
    bands.push(`<g><title>${esc(tip)}</title>${rect(0, y, p.w, h)}</g>`);
    const fs = Math.max(8, Math.min(12, h)), fs2 = Math.max(7, Math.min(11, h));
    labels.push(
      text(6 - ML, y + h / 2 + fs / 3, `L${l.layer}`, `font-size="${fs}" font-weight="bold"`),
    );
    const pre = l.pregateHitRate === null ? "no pre-gate" : `pre-gate ${pct(l.pregateHitRate)}`;
    const stat = `${pre} · cache ${pct(l.cacheHitRate)}`;
    if (h >= 26) {
      labels.push(text(sx, y + h / 2 - 2, stat, `font-size="${fs2}"`));
      const od = `${num(l.onDemandPerToken)} on-demand/token`;
      labels.push(text(sx, y + h / 2 + 11, od, `font-size="10" fill="#777"`));
    } else labels.push(text(sx, y + h / 2 + fs2 / 3, stat, `font-size="${fs2}"`));
  });

  // Step ticks under the last band: the prefill column, then multiples of a readable interval.
  const ticks: [number, string][] = g.hasPrefill ? [[p.colX(0) + p.colW / 2, "P"]] : [];
  const d = g.decode, perCol = d.length ? (d[d.length - 1] - d[0] + 1) / p.spans.length : 1;
  const every = tickEvery(p.colW / perCol, 36);
  const pre = g.hasPrefill ? 1 : 0;
  p.spans.forEach(([a, b], i) => {
    const m = Math.ceil(a / every) * every;
    if (m <= b || (i === 0 && !p.spans.some(([, z]) => z >= m))) {
      ticks.push([p.colX(i + pre) + p.colW / 2, String(m <= b ? m : a)]);
    }
  });
  const tickLines = ticks.map(([x]) =>
    `<line x1="${fmt(x)}" y1="${p.h + 2}" x2="${fmt(x)}" y2="${p.h + 6}"/>`
  );
  const tickText = ticks.map(([x, t]) => text(x, p.h + 17, t));

  // Title, overall rates, sizes, legend.
  const o = s.overall;
  const title = opts.title ?? `${trace.model} — ${trace.mode}` +
      (trace.pregate && trace.pregate !== "none" ? ` (pre-gate: ${trace.pregate})` : "");
  const preRate = o.pregateHitRate === null
    ? "no pre-gate"
    : `pre-gate hit ${pct(o.pregateHitRate)}`;
  const rates = `${preRate} · cache hit ${pct(o.cacheHitRate)} · ` +
    `${num(o.onDemandPerToken)} on-demand fetches/token · ${o.wastedPrefetches} wasted prefetches`;
  const sizes = `${trace.arch} · ${g.E} experts × ${L} MoE layers × ${s.steps} steps ` +
    `(${o.tokens} tokens) · x: step${g.hasPrefill ? " (P = prefill)" : ""} · ${p.note}`;
  const legend: string[] = [];
  let lx = 12;
  for (const st of STATES) {
    legend.push(`<rect x="${lx}" y="76" width="12" height="12" fill="${TRACE_COLORS[st]}"/>`);
    legend.push(text(lx + 17, 86, LEGEND[st], `font-size="11" fill="#333"`));
    lx += 17 + LEGEND[st].length * 6.2 + 18;
  }
  const W = Math.ceil(Math.max(
    ML + p.w + p.extraRight + STATS,
    lx,
    24 + 9.5 * title.length,
    24 + 6.6 * rates.length,
    24 + 6 * sizes.length,
  ));
  const H = TOP + p.h + BOTTOM;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" ` +
    `viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    `<title>${esc(title)}</title>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    text(12, 24, title, `font-size="16" font-weight="bold" fill="#111"`),
    text(12, 45, rates, `font-size="12" fill="#222"`),
    text(12, 64, sizes, `font-size="11" fill="#666"`),
    ...legend,
    `<g transform="translate(${ML},${TOP})">`,
    `<g fill="#f1f3f5">${bands.join("")}</g>`,
    ...p.body,
    `<g fill="#333">${labels.join("")}</g>`,
    `<g stroke="#666">${tickLines.join("")}</g>`,
    `<g font-size="10" fill="#555" text-anchor="middle">${tickText.join("")}</g>`,
    text(p.w / 2, p.h + 34, "step →", `font-size="11" fill="#555" text-anchor="middle"`),
    `</g>`,
    `</svg>`,
  ].join("\n");
}
