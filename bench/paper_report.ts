/**
 * The Pre-gated MoE experiment's report: merges the JSON of `bench/paper.ts` runs (one per GPU-host
 * call) and of `bench/paper_hf.py` (HF transformers on the same checkpoints) into a markdown report
 * laid out like the paper's figures, with the paper's A100 figures and ratios beside ours, and an
 * SVG plot of decode tokens/s per mode (`bench/plot_offload.ts`).
 *
 * Run: `deno run -R -W bench/paper_report.ts --out bench/results/paper RUN.json [RUN.json ...]
 * [--hf HF.json ...]` (writes PREFIX.md and PREFIX.svg).
 * @module
 */
import { parseArgs } from "node:util";
import { renderSvg } from "./plot_offload.ts";
import { type RunFigures, runsCell } from "./run_figures.ts";

/** The configurations of the experiment, in the paper's order, with the paper's names. */
export const PAPER_MODES = [
  { key: "resident", paper: "GPU-only" },
  {
    key: "pregated-strict",
    paper: "Pre-gated (strict: the next router as pre-gate, as the artifact)",
  },
  { key: "pregated-exact", paper: "Pre-gated (exact: misses fetched on demand)" },
  { key: "on-demand", paper: "MoE-OnDemand" },
  { key: "prefetch-all", paper: "MoE-Prefetch" },
] as const;

/** One configuration of one model and dtype, as `bench/paper.ts` measured it. */
export interface PaperRow {
  model: string;
  dtype: string;
  mode: string;
  status: "ok" | "skipped" | "failed";
  reason?: string;
  decode_tokens_per_s?: number;
  /** Decoder MoE-block latency: the GPU-only block (timestamps) + this mode's extra time per block. */
  moe_block_ms?: number | null;
  peak_gpu_bytes?: number;
  /**
   * Peak bytes of the uploader's staging ring (host-visible buffers; on a host with a resizable
   * BAR Dawn places them in GPU memory). Absent in runs before it was recorded.
   */
  peak_staging_bytes?: number;
  upload_bytes_per_token?: number;
  /** Share of the decoder's chosen experts the pre-gate had predicted (decode steps only). */
  pregate_hit_rate?: number | null;
  /** The copy ceiling: measured host->GPU rate / upload bytes per token. */
  ceiling_tokens_per_s?: number | null;
  /** Exact modes: whether the tokens are the reference mode's (resident, else the first exact). */
  same_tokens?: boolean | null;
  /** Every timed run in the order run (absent in runs before it was recorded). */
  runs?: RunFigures[];
  tokens?: number[];
}

/** One `bench/paper.ts` run. */
export interface PaperRun {
  gpu: string;
  date: string;
  encoder_tokens: number;
  decode_tokens: number;
  /** Per `model/dtype`: the measured expert copy rate (GB/s) and the GPU-only MoE block (ms). */
  copy_gb_s: Record<string, number>;
  /** GB/s of one copy of every expert (sources not in the CPU's caches); absent in older runs. */
  sweep_gb_s?: Record<string, number>;
  moe_block_gpu_ms: Record<string, number | null>;
  rows: PaperRow[];
  /** HF transformers on the same checkpoints, when the run measured it (PREGATE_PAPER_HF=1). */
  hf?: HfRow[];
}

/** One HF transformers measurement (`bench/paper_hf.py`). */
export interface HfRow {
  model: string;
  dtype: string;
  mode: "hf-gpu-only" | "hf-offload";
  status: "ok" | "skipped" | "failed";
  reason?: string;
  decode_tokens_per_s?: number;
  peak_gpu_bytes?: number;
  tokens?: number[];
}

/** The paper's A100 figures (FP32, batch 1; `../shared/docs/pregated-moe.md`). */
export const PAPER_A100: Record<string, {
  block_ms: Record<string, number | null>;
  tokens_per_s: Record<string, number | null>;
  peak_gb?: Record<string, number>;
}> = {
  "switch-base-8": {
    block_ms: { resident: 0.946, pregated: 1.128, "on-demand": 1.887, "prefetch-all": 6.73 },
    tokens_per_s: { resident: 129, pregated: 112, "on-demand": 79, "prefetch-all": 24 },
    peak_gb: { resident: 2.48, pregated: 1.62, "on-demand": 1.60, "prefetch-all": 1.88 },
  },
  "switch-base-64": {
    block_ms: { resident: 0.947, pregated: 1.129, "on-demand": 1.778, "prefetch-all": 51.0 },
    tokens_per_s: { resident: 142, pregated: 113, "on-demand": 78, "prefetch-all": 3 },
  },
  "switch-base-128": {
    block_ms: { resident: 0.946, pregated: 1.127, "on-demand": 1.790, "prefetch-all": 101.6 },
    tokens_per_s: { resident: 142, pregated: 109, "on-demand": 76, "prefetch-all": 2 },
    peak_gb: { resident: 17.30, pregated: 2.84, "on-demand": 2.83, "prefetch-all": 7.64 },
  },
  "switch-large-128": {
    block_ms: { resident: null, pregated: 1.388, "on-demand": 2.631, "prefetch-all": 173.5 },
    tokens_per_s: { resident: null, pregated: 42, "on-demand": 26, "prefetch-all": 0 },
  },
};

const f = (x: number | null | undefined, d = 2) =>
  x === null || x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(d);
const ratio = (a: number | null | undefined, b: number | null | undefined) =>
  a && b ? `${(a / b).toFixed(2)}x` : "-";
const gib = (b: number | undefined) => (b === undefined ? "-" : (b / 2 ** 30).toFixed(2));

function find(rows: readonly PaperRow[], model: string, dtype: string, mode: string) {
  const r = rows.find((x) => x.model === model && x.dtype === dtype && x.mode === mode);
  return r?.status === "ok" ? r : undefined;
}

function cell(r: PaperRow | undefined, all: readonly PaperRow[], key: keyof PaperRow, d = 2) {
  if (r) return f(r[key] as number, d);
  return all.length ? "n/a" : "-";
}

/** The headline table of one dtype: tokens/s and block latency per configuration, paper beside. */
function headline(rows: readonly PaperRow[], hf: readonly HfRow[], dtype: string): string[] {
  const models = [...new Set(rows.filter((r) => r.dtype === dtype).map((r) => r.model))];
  if (!models.length) return [];
  const out = [
    `### ${dtype.toUpperCase()}: decode tokens/s and decoder MoE-block latency (ms)`,
    "",
    "Ours (paper's A100 FP32 in brackets). Pre-gated: strict / exact.",
    "",
    "| model | GPU-only | Pre-gated | OnDemand | Prefetch | HF GPU-only | HF accelerate |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const m of models) {
    const p = PAPER_A100[m], get = (mode: string) => find(rows, m, dtype, mode);
    /** Our figure of `mode` (pre-gated: strict / exact), the paper's in brackets. */
    const column = (key: "decode_tokens_per_s" | "moe_block_ms", d: number) => (mode: string) => {
      const ours = mode === "pregated"
        ? `${cell(get("pregated-strict"), rows, key, d)} / ${
          cell(get("pregated-exact"), rows, key, d)
        }`
        : cell(get(mode), rows, key, d);
      const table = p?.[key === "moe_block_ms" ? "block_ms" : "tokens_per_s"];
      return table ? `${ours} [${f(table[mode], d)}]` : ours;
    };
    const hfTps = (mode: string) =>
      f(
        hf.find((h) => h.model === m && h.dtype === dtype && h.mode === mode && h.status === "ok")
          ?.decode_tokens_per_s,
        1,
      );
    for (
      const [what, key, d] of [["tok/s", "decode_tokens_per_s", 1], [
        "block ms",
        "moe_block_ms",
        3,
      ]] as const
    ) {
      const c = column(key, d);
      out.push(
        `| ${m} ${what} | ${c("resident")} | ${c("pregated")} | ${c("on-demand")} | ${
          c("prefetch-all")
        } | ${what === "tok/s" ? hfTps("hf-gpu-only") : ""} | ${
          what === "tok/s" ? hfTps("hf-offload") : ""
        } |`,
      );
    }
  }
  return [...out, ""];
}

/** The ratios the paper headlines, ours beside the paper's. */
function ratios(rows: readonly PaperRow[], hf: readonly HfRow[], dtype: string): string[] {
  const models = [...new Set(rows.filter((r) => r.dtype === dtype).map((r) => r.model))];
  if (!models.length) return [];
  const out = [
    `### ${dtype.toUpperCase()}: ratios (ours: strict / exact; paper's in brackets)`,
    "",
    "| model | Pre-gated / OnDemand tok/s | Pre-gated / Prefetch tok/s | Pre-gated / GPU-only tok/s | " +
    "memory Pre-gated / GPU-only | Pre-gated / HF accelerate tok/s |",
    "|---|---|---|---|---|---|",
  ];
  for (const m of models) {
    const p = PAPER_A100[m], get = (mode: string) => find(rows, m, dtype, mode);
    const t = (mode: string) => get(mode)?.decode_tokens_per_s;
    const pt = (mode: string) => p?.tokens_per_s[mode];
    const hfOff = hf.find((h) => h.model === m && h.dtype === dtype && h.mode === "hf-offload")
      ?.decode_tokens_per_s;
    const pair = (den: (mode?: string) => number | null | undefined, paper: string) =>
      `${ratio(t("pregated-strict"), den())} / ${ratio(t("pregated-exact"), den())} [${paper}]`;
    const mem = (mode: string) => get(mode)?.peak_gpu_bytes;
    const pm = p?.peak_gb;
    out.push(
      `| ${m} | ${pair(() => t("on-demand"), ratio(pt("pregated"), pt("on-demand")))} | ${
        pair(() => t("prefetch-all"), ratio(pt("pregated"), pt("prefetch-all")))
      } | ${pair(() => t("resident"), ratio(pt("pregated"), pt("resident")))} | ${
        ratio(mem("pregated-strict"), mem("resident"))
      } / ${ratio(mem("pregated-exact"), mem("resident"))} [${
        pm ? ratio(pm.pregated, pm.resident) : "-"
      }] | ${ratio(t("pregated-strict"), hfOff)} / ${ratio(t("pregated-exact"), hfOff)} |`,
    );
  }
  return [...out, ""];
}

/** Every configuration's figures. */
function details(run: PaperRun): string[] {
  const out = [
    "| model | dtype | configuration | decode tok/s | copy ceiling tok/s | block ms | peak GPU GiB (+ host staging or pinned store) | " +
    "upload MiB/token | pre-gate hit | tokens | runs: tok/s (readback / copies / rest ms per token) |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of run.rows) {
    const name = PAPER_MODES.find((m) => m.key === r.mode)?.paper ?? r.mode;
    if (r.status !== "ok") {
      out.push(`| ${r.model} | ${r.dtype} | ${name} | ${r.status}: ${r.reason ?? ""} ||||||||`);
      continue;
    }
    out.push(
      `| ${r.model} | ${r.dtype} | ${name} | ${f(r.decode_tokens_per_s, 1)} | ${
        f(r.ceiling_tokens_per_s, 1)
      } | ${f(r.moe_block_ms, 3)} | ${gib(r.peak_gpu_bytes)}${
        r.peak_staging_bytes ? ` + ${gib(r.peak_staging_bytes)}` : ""
      } | ${f((r.upload_bytes_per_token ?? 0) / 2 ** 20, 1)} | ${f(r.pregate_hit_rate, 2)} | ${
        r.same_tokens === null || r.same_tokens === undefined
          ? "-"
          : r.same_tokens
          ? "= reference"
          : "DIFFERENT"
      } | ${runsCell(r.runs)} |`,
    );
  }
  return out;
}

/**
 * The rows the tables and the plot show: of each model and dtype, those of the first run (in the
 * order given) that measured it, except that a configuration it skipped (or failed) comes from the
 * first later run that measured it; of HF's, the first row of each model, dtype and mode. Later
 * runs of the same configuration (repeats) appear in their run's details only.
 *
 * @example
 * ```ts ignore
 * const { rows, hf } = firstMeasured([run, repeat], hfRows);
 * ```
 */
export function firstMeasured(
  runs: readonly PaperRun[],
  hf: readonly HfRow[],
): { rows: PaperRow[]; hf: HfRow[] } {
  const owner = new Map<string, PaperRun>();
  for (const run of runs) {
    for (const r of run.rows) {
      if (!owner.has(`${r.model}/${r.dtype}`)) owner.set(`${r.model}/${r.dtype}`, run);
    }
  }
  const measuredLater = (r: PaperRow, after: PaperRun) =>
    runs.slice(runs.indexOf(after) + 1).flatMap((run) => run.rows).find((x) =>
      x.model === r.model && x.dtype === r.dtype && x.mode === r.mode && x.status === "ok"
    );
  const rows = runs.flatMap((run) =>
    run.rows.filter((r) => owner.get(`${r.model}/${r.dtype}`) === run).map((r) =>
      r.status === "ok" ? r : measuredLater(r, run) ?? r
    )
  );
  const seen = new Set<string>();
  const firstHf = hf.filter((h) => {
    const key = `${h.model}/${h.dtype}/${h.mode}`;
    return !seen.has(key) && seen.add(key) !== undefined;
  });
  return { rows, hf: firstHf };
}

/**
 * The report of `runs` (and HF's `hf`): headline tables per dtype, ratios, each run's details.
 *
 * @example
 * ```ts ignore
 * const md = paperMarkdown([run], hfRows);
 * ```
 */
export function paperMarkdown(runs: readonly PaperRun[], allHf: readonly HfRow[] = []): string {
  const { rows, hf } = firstMeasured(runs, allHf);
  const dtypes = [...new Set(rows.map((r) => r.dtype))];
  const out = [
    "# Pre-gated MoE on Switch Transformers, Pregate (WebGPU) beside the paper's A100 figures",
    "",
    `Batch 1, ${runs[0]?.encoder_tokens ?? "?"} encoder tokens (random ids), greedy decode of ` +
    `${
      runs[0]?.decode_tokens ?? "?"
    } tokens; random-weight checkpoints of the real shapes (make-model).`,
    "Block latency: the decoder MoE block with its experts resident (GPU timestamps) plus the mode's " +
    "extra decode time per token spread over the decoder's MoE blocks.",
    "",
    ...dtypes.flatMap((d) => [...headline(rows, hf, d), ...ratios(rows, hf, d)]),
  ];
  for (const run of runs) {
    out.push(`## Run on ${run.gpu}, ${run.date}`, "");
    for (const [k, v] of Object.entries(run.copy_gb_s)) {
      out.push(
        `- ${k}: expert copies ${f(v)} GB/s (the ceiling)${
          run.sweep_gb_s?.[k] === undefined
            ? ""
            : `, every expert once ${f(run.sweep_gb_s[k])} GB/s`
        }; GPU-only MoE block ${f(run.moe_block_gpu_ms[k], 3)} ms`,
      );
    }
    out.push("", ...details(run), "");
  }
  if (hf.length) {
    out.push(
      "## HF transformers on the same checkpoints",
      "",
      "| model | dtype | mode | decode tok/s | peak GPU GiB | status |",
      "|---|---|---|---|---|---|",
    );
    for (const h of hf) {
      out.push(
        `| ${h.model} | ${h.dtype} | ${h.mode} | ${f(h.decode_tokens_per_s, 1)} | ${
          gib(h.peak_gpu_bytes)
        } | ${h.status}${h.reason ? `: ${h.reason}` : ""} |`,
      );
    }
  }
  return out.join("\n") + "\n";
}

/** The plot: decode tokens/s per configuration, one series per model and dtype (and HF's). */
export function paperSvg(runs: readonly PaperRun[], allHf: readonly HfRow[] = []): string {
  const measured = firstMeasured(runs, allHf), hf = measured.hf;
  const rows = measured.rows.filter((r) => r.status === "ok");
  const groups = [...new Set(rows.map((r) => `${r.model} ${r.dtype}`))];
  const series = groups.map((g) => ({
    label: g.replace("switch-", ""),
    rows: [
      ...rows.filter((r) => `${r.model} ${r.dtype}` === g).map((r) => ({
        mode: r.mode,
        decode_tokens_per_s: r.decode_tokens_per_s!,
        ceiling_tokens_per_s: r.ceiling_tokens_per_s ?? null,
        peak_gpu_bytes: r.peak_gpu_bytes ?? 0,
      })),
      ...hf.filter((h) => `${h.model} ${h.dtype}` === g && h.status === "ok").map((h) => ({
        mode: h.mode,
        decode_tokens_per_s: h.decode_tokens_per_s!,
        ceiling_tokens_per_s: null,
        peak_gpu_bytes: h.peak_gpu_bytes ?? 0,
      })),
    ],
  }));
  return renderSvg("Switch Transformers decode tokens/s per configuration (Pregate, HF)", series);
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { out: { type: "string" }, hf: { type: "string", multiple: true } },
    allowPositionals: true,
  });
  if (!values.out || positionals.length === 0) {
    console.error("usage: paper_report.ts --out PREFIX RUN.json [...] [--hf HF.json ...]");
    Deno.exit(2);
  }
  const read = async (p: string) => JSON.parse(await Deno.readTextFile(p));
  const runs: PaperRun[] = await Promise.all(positionals.map(read));
  const hf: HfRow[] = [
    ...runs.flatMap((r) => r.hf ?? []),
    ...(await Promise.all((values.hf ?? []).map(read))).flatMap((h) => h.rows),
  ];
  await Deno.writeTextFile(`${values.out}.md`, paperMarkdown(runs, hf));
  await Deno.writeTextFile(`${values.out}.svg`, paperSvg(runs, hf));
  console.log(`wrote ${values.out}.md and ${values.out}.svg`);
}
