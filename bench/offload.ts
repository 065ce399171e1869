/**
 * The offloading experiment (Pre-gated MoE, Table/Fig. of the paper, on WebGPU): for each model and
 * each mode — resident (GPU-only), on-demand, prefetch-all, pregated (exact and strict) — decode
 * tokens/s, peak GPU bytes, expert bytes uploaded per token, syncs per token and the time split, beside
 * the PCIe ceiling measured on the same machine (upload bytes per token / measured host->GPU rate of
 * expert copies from the mapped file).
 *
 * Run: `deno run -A bench/offload.ts` (or `deno bench -A bench/offload.ts`). Environment:
 * PREGATE_GPU (native|dawn|auto), PREGATE_BENCH_MODELS (comma list of `arch:preset:layers:dtype`),
 * PREGATE_BENCH_OVERRIDES (JSON of make-model dimension overrides applied to every model, e.g.
 * `{"hidden":512,"inter":1536,"experts":16}`), PREGATE_BENCH_DIR (checkpoint cache dir), PREGATE_BENCH_TOKENS (decode tokens, default 16; prefetch-
 * all uses a quarter), PREGATE_BENCH_OUT (path prefix for .json and .md results),
 * PREGATE_BENCH_WARMUP_S (untimed runs for this many seconds per mode first; default 2 on a GPU),
 * PREGATE_BENCH_RUNS (timed runs per mode, default 3; the median run is reported),
 * PREGATE_BENCH_MODES (comma list of mode keys to run: resident, on-demand, prefetch-all,
 * pregated-exact, pregated-strict; default all), PREGATE_BENCH_TYPE (a `convert` type: f16, bf16,
 * q8_0, q4_k, q4_k_m, ...: convert each checkpoint to a GGUF file of that type, cached beside it,
 * and run that; default: the safetensors checkpoint), PREGATE_UPLOADER (auto|write|mapped|pinned;
 * default auto).
 *
 * Besides the probe of the upload rate (one layer's first experts, again and again), it times one
 * copy of every expert of every layer ("sweep") before and after the modes: the rate a process that
 * has copied a lot sustains.
 * @module
 */
import { type Gpu, openGpu } from "../runtime/base/gpu/device.ts";
import { type GenerateStats, loadModel, type LoadOptions } from "../runtime/model.ts";
import { loadModelConfig, openModelStore } from "../runtime/models/gguf_model.ts";
import { parseConvertType } from "../runtime/models/convert_command.ts";
import {
  benchCheckpoint,
  benchGguf,
  measureUploadRate,
  meminfo,
  settleWriteback,
  writeResults,
} from "./harness.ts";
import { ClockSampler, warmUp } from "./clock.ts";
import { type RunFigures, runsCell, timedRun } from "./run_figures.ts";

const gpu: Gpu = await openGpu({
  gpu: (Deno.env.get("PREGATE_GPU") ?? "native") as "native" | "dawn" | "auto",
  log: (m) => console.error(m),
});
const specs = (Deno.env.get("PREGATE_BENCH_MODELS") ??
  (gpu.isFallback ? "qwen3_moe:tiny:3:f32" : "qwen3_moe:qwen3-30b-a3b:8:bf16")).split(",");
const tokens = Number(Deno.env.get("PREGATE_BENCH_TOKENS") ?? 16);
const root = Deno.env.get("PREGATE_BENCH_DIR") ??
  await Deno.makeTempDir({ prefix: "pregate-offload-" });
const outPrefix = Deno.env.get("PREGATE_BENCH_OUT");
const overrides = JSON.parse(Deno.env.get("PREGATE_BENCH_OVERRIDES") ?? "{}");
const log = (m: string) => console.error(`[offload] ${m}`);
const typeEnv = Deno.env.get("PREGATE_BENCH_TYPE");
const ggufType = typeEnv ? parseConvertType(typeEnv, "PREGATE_BENCH_TYPE") : null;
/** Seconds of untimed runs per mode first (PREGATE_BENCH_WARMUP_S; default 2 on a GPU, 0 on CPU). */
/** The SM clock, sampled every 100 ms where nvidia-smi runs (each timed run records its range). */
const clock = gpu.isFallback ? null : ClockSampler.start(100);
const warmupSeconds = Number(Deno.env.get("PREGATE_BENCH_WARMUP_S") ?? (gpu.isFallback ? 0 : 2));
/** Timed runs per mode (PREGATE_BENCH_RUNS, default 3): the median run is reported. */
const timedRuns = Math.max(1, Number(Deno.env.get("PREGATE_BENCH_RUNS") ?? 3));

const ALL_MODES: { key: string; name: string; opts: LoadOptions; tokens: number }[] = [
  { key: "resident", name: "resident (GPU-only)", opts: { mode: "resident" }, tokens },
  { key: "on-demand", name: "on-demand", opts: { mode: "on-demand" }, tokens },
  {
    key: "prefetch-all",
    name: "prefetch-all",
    opts: { mode: "prefetch-all" },
    tokens: Math.max(2, tokens >> 2),
  },
  {
    key: "pregated-exact",
    name: "pregated (exact)",
    opts: { mode: "pregated", pregate: "exact" },
    tokens,
  },
  {
    key: "pregated-strict",
    name: "pregated (strict)",
    opts: { mode: "pregated", pregate: "strict" },
    tokens,
  },
];
const modeKeys = Deno.env.get("PREGATE_BENCH_MODES")?.split(",").map((k) => k.trim());
for (const k of modeKeys ?? []) {
  if (!ALL_MODES.some((m) => m.key === k)) {
    throw new Error(
      `PREGATE_BENCH_MODES: unknown mode '${k}'; expected ${
        ALL_MODES.map((m) => m.key).join(", ")
      }`,
    );
  }
}
const MODES = ALL_MODES.filter((m) => !modeKeys || modeKeys.includes(m.key));

/**
 * The checkpoint's share in the page cache and the kernel's memory figures (Linux): expert copies
 * that miss the cache read the disk.
 */
async function cacheState(dir: string): Promise<{
  resident: number | null;
  memTotalGiB?: number;
  memAvailableGiB?: number;
  dirtyGiB?: number;
  writebackGiB?: number;
}> {
  const store = openModelStore(dir, await loadModelConfig(dir));
  const resident = store.resident();
  store.close();
  const info = await meminfo();
  if (!info) return { resident };
  const gib = (k: string) => (info[k] ?? NaN) / 2 ** 30;
  return {
    resident,
    memTotalGiB: gib("MemTotal"),
    memAvailableGiB: gib("MemAvailable"),
    dirtyGiB: gib("Dirty"),
    writebackGiB: gib("Writeback"),
  };
}

function cacheText(c: Awaited<ReturnType<typeof cacheState>>): string {
  const pct = c.resident === null ? "unknown" : `${(100 * c.resident).toFixed(1)}%`;
  const g = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? "?" : v.toFixed(2));
  return `checkpoint in page cache ${pct}` +
    (c.memTotalGiB === undefined
      ? ""
      : `; memory ${g(c.memTotalGiB)} GiB, available ${g(c.memAvailableGiB)}, dirty ` +
        `${g(c.dirtyGiB)}, writeback ${g(c.writebackGiB)}`);
}

const results: Record<string, unknown>[] = [];
const pageCache: Record<string, unknown> = {};
const sweeps: Record<string, unknown> = {};
const tables: string[] = [];
for (const spec of specs) {
  const tag = Object.entries(overrides).map(([k, v]) => `${k}${v}`).join("-");
  const checkpoint = await benchCheckpoint(spec, root, {
    overrides,
    log,
    what: "PREGATE_BENCH_MODELS",
  });
  const dir = ggufType ? await benchGguf(checkpoint, ggufType, log) : checkpoint;
  const uploaderPath = (Deno.env.get("PREGATE_UPLOADER") ?? "auto") as NonNullable<
    LoadOptions["uploader"]
  >;
  await settleWriteback(log);
  const cacheBefore = await cacheState(dir);
  log(`${spec}: ${cacheText(cacheBefore)}`);
  const uploadGBs = await measureUploadRate(gpu, dir, uploaderPath);
  log(`${spec}: expert upload rate ${uploadGBs.toFixed(2)} GB/s`);
  const sweepBefore = await measureUploadRate(gpu, dir, uploaderPath, true);
  log(`${spec}: every expert once (sweep) ${sweepBefore.toFixed(2)} GB/s`);
  const vocab = (await loadModelConfig(dir)).vocabSize;
  const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919 + 13) % vocab);
  const rows: string[] = [];
  let reference: number[] | null = null;
  for (const m of MODES) {
    log(`${spec}: ${m.name}`);
    const model = await loadModel(dir, {
      device: gpu,
      contextLength: 256,
      uploader: uploaderPath,
      ...m.opts,
    });
    try {
      const once = async () => {
        const generate = model.generate(prompt, { maxTokens: m.tokens });
        return {
          ...await timedRun(generate, () => model.lastStats!, clock),
          stats: model.lastStats!,
        };
      };
      // Warm up (the GPU's clock climbs only under sustained work), then time `runs` runs and
      // report the median one.
      const warmRuns = await warmUp(once, warmupSeconds);
      const runs: { ids: number[]; stats: GenerateStats; figures: RunFigures }[] = [];
      for (let r = 0; r < timedRuns; r++) runs.push(await once());
      const figures = runs.map((r) => r.figures);
      runs.sort((a, b) => a.stats.decode_tokens_per_s - b.stats.decode_tokens_per_s);
      const mid = runs[runs.length >> 1];
      log(
        `  ${warmRuns} warm-up runs; decode tok/s of ${timedRuns} runs in order (readback / ` +
          `copies / rest ms per token): ${runsCell(figures)}`,
      );
      if (runs.some((r) => r.ids.join() !== mid.ids.join())) {
        throw new Error(`${spec} ${m.name}: runs of the same prompt gave different tokens`);
      }
      // Validate: exact modes reproduce the resident tokens (as far as both ran).
      const ids = mid.ids;
      if (!reference) reference = ids;
      const exact = m.opts.pregate !== "strict";
      const agree = ids.every((x, i) => i >= reference!.length || x === reference![i]);
      if (exact && !agree) throw new Error(`${spec} ${m.name}: tokens differ from resident`);
      const st = mid.stats;
      const ceiling = st.upload_bytes_per_token > 0
        ? (uploadGBs * 1e9) / st.upload_bytes_per_token
        : Infinity;
      results.push({
        ...st,
        spec,
        weights: ggufType ?? "checkpoint",
        mode: m.name,
        upload_gb_s: uploadGBs,
        ceiling_tokens_per_s: ceiling,
        runs: figures,
      });
      const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "-");
      rows.push(
        `| ${m.name} | ${f(st.decode_tokens_per_s, 2)} | ${f(ceiling, 2)} | ${
          (st.peak_gpu_bytes / 2 ** 30).toFixed(2)
        } + ${(st.peak_host_staging_bytes / 2 ** 30).toFixed(2)} | ${
          (st.upload_bytes_per_token / 2 ** 20).toFixed(1)
        } | ${st.syncs_per_token.toFixed(2)} | ${
          st.pregate_hit_rate === null ? "-" : st.pregate_hit_rate.toFixed(2)
        } | ${st.expert_cache_hit_rate === null ? "-" : st.expert_cache_hit_rate.toFixed(2)} | ${
          (st.time_per_token.sync_wait * 1e3).toFixed(1)
        } / ${(st.time_per_token.upload * 1e3).toFixed(1)} / ${
          (st.time_per_token.compute * 1e3).toFixed(1)
        } | ${(st.time_per_token.upload_fill * 1e3).toFixed(1)} / ${
          (st.time_per_token.upload_staging_wait * 1e3).toFixed(1)
        } | ${st.expert_slots ?? "all"} | ${
          exact ? (agree ? "same as resident" : "DIFFERENT") : "differs (expected)"
        } |`,
      );
    } finally {
      await model.dispose();
    }
  }
  const cacheAfter = await cacheState(dir);
  log(`${spec}: after the modes: ${cacheText(cacheAfter)}`);
  const sweepAfter = await measureUploadRate(gpu, dir, uploaderPath, true);
  log(`${spec}: after the modes: every expert once (sweep) ${sweepAfter.toFixed(2)} GB/s`);
  pageCache[spec] = { before: cacheBefore, after: cacheAfter };
  sweeps[spec] = { before_gb_s: sweepBefore, after_gb_s: sweepAfter };
  tables.push(
    [
      `### ${spec}${tag ? ` (${tag})` : ""}${
        ggufType ? `, GGUF ${ggufType}` : ""
      } on ${gpu.describe()}`,
      "",
      `Expert copies (uploader ${uploaderPath}) measured at ${
        uploadGBs.toFixed(2)
      } GB/s on this machine; ` +
      `the ceiling column is that rate over the mode's upload bytes per token. Before: ` +
      `${cacheText(cacheBefore)}; after the modes: ${cacheText(cacheAfter)}. Every expert ` +
      `copied once (sweep): ${sweepBefore.toFixed(2)} GB/s before the modes, ` +
      `${sweepAfter.toFixed(2)} after.`,
      "",
      "| mode | decode tok/s | PCIe ceiling tok/s | peak GPU GiB (+ host staging or pinned store) | upload MiB/token | syncs/token | pre-gate hit | cache hit | ms/token sync / upload / rest | upload ms: fill / staging wait | slots | tokens |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      ...rows,
    ].join("\n"),
  );
}

const md = `Pregate offloading experiment, ${
  new Date().toISOString().slice(0, 10)
}, ${gpu.describe()}\n\n${tables.join("\n\n")}\n`;
console.log(md);
if (outPrefix) {
  const data = {
    gpu: gpu.describe(),
    uploader: Deno.env.get("PREGATE_UPLOADER") ?? "auto",
    results,
    page_cache: pageCache,
    upload_sweeps: sweeps,
  };
  await writeResults(outPrefix, md, data);
}
await clock?.stop();
gpu.destroy();
