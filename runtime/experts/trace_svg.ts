/**
 * Draws an expert trace as a standalone SVG heat map: {@linkcode traceToSvg}, its options
 * ({@linkcode TraceSvgOptions}) and the cell states and colors it uses ({@linkcode CellState},
 * {@linkcode TRACE_COLORS}). The trace types and the summary are in `./trace.ts`.
 *
 * @example
 * ```ts
 * import { traceToSvg } from "./trace_svg.ts";
 * const svg = traceToSvg({ model: "m", arch: "mixtral", mode: "on-demand", pregate: "exact",
 *   experts: 4, moeLayers: [0], records: [] });
 * console.log(svg.startsWith("<svg")); // true
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { type ExpertTrace, summarizeTrace, type TraceRecord, type TraceSummary } from "./trace.ts";

// Same as the private helpers of formatTraceSummary in trace.ts.
const pct = (x: number | null) => (x === null ? "-" : `${(100 * x).toFixed(1)}%`);
const num = (x: number | null, d = 2) => (x === null ? "-" : x.toFixed(d));

/**
 * The state of one (step, layer, expert) cell, in order of precedence: `hit` (chosen and
 * predicted: the pre-gate was right, whether or not the expert was still resident), `cached`
 * (chosen, not predicted, already resident: no copy needed), `miss` (chosen, neither predicted
 * nor resident: fetched on demand), `wasted` (predicted, not chosen).
 *
 * @example
 * ```ts
 * import { type CellState, TRACE_COLORS } from "./trace_svg.ts";
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
 * import { TRACE_COLORS } from "./trace_svg.ts";
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
 * import type { TraceSvgOptions } from "./trace_svg.ts";
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
 * import { traceToSvg } from "./trace_svg.ts";
 * const svg = traceToSvg({
 *   model: "m", arch: "mixtral", mode: "pregated", pregate: "exact", experts: 8,
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
