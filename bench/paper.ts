/**
 * The Pre-gated MoE paper's experiment (`../shared/docs/pregated-moe.md`) on WebGPU: Switch
 * Transformers checkpoints of the paper's shapes (random weights, `make-model`), batch 1, an encoder
 * input of random ids, greedy decoding, in the paper's configurations: GPU-only (`resident`),
 * MoE-OnDemand (`on-demand`), MoE-Prefetch (`prefetch-all`) and Pre-gated (`pregated`: `strict`, the
 * next block's router standing in for the pre-gate as the paper's artifact does, and `exact`, which
 * fetches the pre-gate's misses on demand and gives the model's own tokens).
 *
 * Per configuration: decode tokens/s, decoder MoE-block latency (the block with its experts resident
 * timed with GPU timestamps, `moe_block.ts`, plus the configuration's extra decode time per token
 * over the decoder's MoE blocks), peak GPU bytes, expert bytes uploaded per decode token, the
 * pre-gate's hit rate over the decode steps, and the copy ceiling (the measured host->GPU rate of
 * expert copies over the upload bytes per token). Each configuration is validated before it is
 * timed (the exact ones must give GPU-only's tokens), warmed up, and its median run reported.
 * GPU-only is skipped (as out of memory, like the paper's A100) when the checkpoint exceeds the
 * GPU's memory; a configuration the device cannot hold (e.g. prefetch-all's two layers of experts
 * beyond the binding limit) is recorded as skipped with the reason.
 *
 * Run: `deno run -A bench/paper.ts`. Environment:
 * - PREGATE_GPU (native|dawn|auto; default native), PREGATE_UPLOADER (auto|write|mapped|pinned)
 * - PREGATE_PAPER_MODELS: presets (default switch-base-8,switch-base-64,switch-base-128,
 *   switch-large-128; `tiny` on a software adapter), PREGATE_PAPER_DTYPES (default f32,bf16),
 *   PREGATE_PAPER_MODES (resident,pregated-strict,pregated-exact,on-demand,prefetch-all)
 * - PREGATE_PAPER_ENCODER (encoder tokens, default 256), PREGATE_PAPER_TOKENS (decode tokens,
 *   default 64), PREGATE_PAPER_PREFETCH_TOKENS (prefetch-all's, default 4)
 * - PREGATE_BENCH_DIR (checkpoints; default a temporary directory), PREGATE_PAPER_KEEP=1 keeps each
 *   checkpoint (default: removed after its run, so the disk holds one at a time)
 * - PREGATE_PAPER_HF=1: also run `bench/paper_hf.py` (HF transformers, GPU-only and experts
 *   offloaded through accelerate) on each checkpoint; PREGATE_PAPER_HF_MODES (gpu-only,offload)
 * - PREGATE_BENCH_WARMUP_S (default 2 on a GPU), PREGATE_BENCH_RUNS (default 3),
 *   PREGATE_PAPER_GPU_BYTES (GPU memory; default from nvidia-smi), PREGATE_BENCH_OUT (path prefix
 *   of the .json, .md and .svg results)
 * @module
 */
import { type Gpu, openGpu } from "../runtime/base/gpu/device.ts";
import { type GenerateStats, loadModel, type LoadOptions, type Model } from "../runtime/model.ts";
import { BudgetError } from "../runtime/base/errors.ts";
import { archNamed } from "../runtime/models/arch/mod.ts";
import { loadConfig } from "../runtime/models/config.ts";
import { benchCheckpoint, measureUploadRate, settleWriteback } from "./harness.ts";
import { ClockSampler, warmUp } from "./clock.ts";
import { moeBlockTime } from "./moe_block.ts";
import {
  type HfRow,
  PAPER_MODES,
  paperMarkdown,
  type PaperRow,
  type PaperRun,
  paperSvg,
} from "./paper_report.ts";
import { type RunFigures, runsCell, timedRun } from "./run_figures.ts";

const env = (k: string, fallback: string) => Deno.env.get(k) ?? fallback;
const list = (k: string, fallback: string) =>
  env(k, fallback).split(",").map((x) => x.trim()).filter(Boolean);
const int = (k: string, fallback: number) => {
  const v = Number(env(k, String(fallback)));
  if (!Number.isInteger(v) || v < 1) throw new Error(`${k}: expected a positive integer, got ${v}`);
  return v;
};

const gpu: Gpu = await openGpu({
  gpu: env("PREGATE_GPU", "native") as "native" | "dawn" | "auto",
  log: (m) => console.error(m),
});
const small = gpu.isFallback;
/** The SM clock, sampled every 100 ms where nvidia-smi runs (each timed run records its range). */
const clock = small ? null : ClockSampler.start(100);
const MODELS = list(
  "PREGATE_PAPER_MODELS",
  small ? "tiny" : "switch-base-8,switch-base-64,switch-base-128,switch-large-128",
);
const DTYPES = list("PREGATE_PAPER_DTYPES", "f32,bf16");
const MODES = list("PREGATE_PAPER_MODES", PAPER_MODES.map((m) => m.key).join(","));
for (const m of MODES) {
  if (!PAPER_MODES.some((p) => p.key === m)) throw new Error(`PREGATE_PAPER_MODES: unknown '${m}'`);
}
const ENCODER = int("PREGATE_PAPER_ENCODER", small ? 16 : 256);
const TOKENS = int("PREGATE_PAPER_TOKENS", small ? 4 : 64);
const PREFETCH_TOKENS = Math.min(TOKENS, int("PREGATE_PAPER_PREFETCH_TOKENS", 4));
const root = Deno.env.get("PREGATE_BENCH_DIR") ??
  await Deno.makeTempDir({ prefix: "pregate-paper-" });
const KEEP = env("PREGATE_PAPER_KEEP", "") === "1";
const HF = env("PREGATE_PAPER_HF", "") === "1";
const WARMUP_S = Number(env("PREGATE_BENCH_WARMUP_S", small ? "0" : "2"));
const RUNS = int("PREGATE_BENCH_RUNS", 3);
const UPLOADER = env("PREGATE_UPLOADER", "auto") as NonNullable<LoadOptions["uploader"]>;
const OUT = Deno.env.get("PREGATE_BENCH_OUT");
const log = (m: string) => console.error(`[paper] ${m}`);

const MODE_OPTS: Record<string, LoadOptions> = {
  resident: { mode: "resident" },
  "on-demand": { mode: "on-demand" },
  "prefetch-all": { mode: "prefetch-all" },
  "pregated-exact": { mode: "pregated", pregate: "exact" },
  "pregated-strict": { mode: "pregated", pregate: "strict" },
};

/** The GPU's memory in bytes (PREGATE_PAPER_GPU_BYTES, else nvidia-smi's), or Infinity. */
async function gpuMemory(): Promise<number> {
  const set = Deno.env.get("PREGATE_PAPER_GPU_BYTES");
  if (set) return Number(set);
  try {
    const out = await new Deno.Command("nvidia-smi", {
      args: ["--query-gpu=memory.total", "--format=csv,noheader,nounits"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const mib = Number(new TextDecoder().decode(out.stdout).split("\n")[0]);
    return out.success && mib > 0 ? mib * 2 ** 20 : Infinity;
  } catch {
    return Infinity;
  }
}

/** Random encoder ids (never pad 0 or EOS 1), the same formula as bench/paper_hf.py. */
export function encoderIds(n: number, vocab: number): number[] {
  return Array.from({ length: n }, (_, i) => 2 + ((i * 7919 + 13) % (vocab - 2)));
}

/** The pre-gate's hit rate over the decode steps of the last generation (its trace). */
function decodeHitRate(model: Model): number | null {
  const records = (model.trace()?.records ?? []).filter((r) => r.step >= 2 && r.predicted);
  const chosen = records.reduce((a, r) => a + r.chosen.length, 0);
  const hits = records.reduce(
    (a, r) => a + r.chosen.filter((e) => r.predicted!.includes(e)).length,
    0,
  );
  return chosen ? hits / chosen : null;
}

interface Measured {
  ids: number[];
  stats: GenerateStats;
  hit: number | null;
  /** Every timed run, in the order run: decode tok/s and where a token's time went. */
  runs?: RunFigures[];
}

/** Loads `dir` in configuration `mode`, validates, warms up and times it; the median run. */
async function measure(
  dir: string,
  mode: string,
  enc: number[],
  tokens: number,
): Promise<Measured> {
  const model = await loadModel(dir, {
    device: gpu,
    contextLength: tokens + 8,
    maxEncoderTokens: enc.length,
    uploader: UPLOADER,
    trace: mode !== "resident",
    ...MODE_OPTS[mode],
  });
  try {
    const start = model.encoderDecoder?.decoderStartTokenId ?? 0;
    const once = async (): Promise<Measured & { figures: RunFigures }> => {
      const generate = model.generate([start], { encoderIds: enc, maxTokens: tokens });
      const run = await timedRun(generate, () => model.lastStats!, clock);
      return { ...run, stats: model.lastStats!, hit: decodeHitRate(model) };
    };
    let first: Measured | null = null; // the warm-up's first run: compared with the timed ones
    const warm = await warmUp(async () => {
      const r = await once();
      first ??= r;
    }, WARMUP_S);
    const runs: (Measured & { figures: RunFigures })[] = [];
    for (let r = 0; r < RUNS; r++) runs.push(await once());
    const figures = runs.map((r) => r.figures);
    runs.sort((a, b) => a.stats.decode_tokens_per_s - b.stats.decode_tokens_per_s);
    if (runs.some((r) => r.ids.join() !== first!.ids.join())) {
      throw new Error(`${mode}: runs of the same input gave different tokens`);
    }
    log(
      `  ${warm} warm-up runs; decode tok/s (readback / copies / rest ms per token) ${
        runsCell(figures)
      }`,
    );
    return { ...runs[runs.length >> 1], runs: figures };
  } finally {
    await model.dispose();
  }
}

/** Runs bench/paper_hf.py on `dir`; its rows (a failure is a row saying so). */
async function runHf(dir: string, model: string, dtype: string): Promise<HfRow[]> {
  const out = `${dir}.hf.json`;
  const script = new URL("./paper_hf.py", import.meta.url).pathname;
  const args = [
    script,
    "--model",
    dir,
    "--name",
    model,
    "--dtype",
    dtype,
    "--encoder",
    String(ENCODER),
  ];
  args.push(
    "--tokens",
    String(TOKENS),
    "--modes",
    env("PREGATE_PAPER_HF_MODES", "gpu-only,offload"),
  );
  args.push("--out", out);
  log(`${model} ${dtype}: HF transformers (python3 ${args.join(" ")})`);
  const r = await new Deno.Command("python3", { args, stdout: "inherit", stderr: "inherit" })
    .output();
  try {
    return JSON.parse(await Deno.readTextFile(out)).rows;
  } catch (e) {
    return [{
      model,
      dtype,
      mode: "hf-gpu-only",
      status: "failed",
      reason: `exit ${r.code}: ${(e as Error).message}`,
    }];
  }
}

const run: PaperRun & { hf: HfRow[]; commands: string } = {
  gpu: gpu.describe(),
  date: new Date().toISOString(),
  encoder_tokens: ENCODER,
  decode_tokens: TOKENS,
  copy_gb_s: {},
  sweep_gb_s: {},
  moe_block_gpu_ms: {},
  rows: [],
  hf: [],
  commands: `models ${MODELS} dtypes ${DTYPES} modes ${MODES} prefetch tokens ${PREFETCH_TOKENS}` +
    ` uploader ${UPLOADER}`,
};

async function write(): Promise<void> {
  if (!OUT) return;
  await Deno.writeTextFile(`${OUT}.json`, JSON.stringify(run, null, 2));
  await Deno.writeTextFile(`${OUT}.md`, paperMarkdown([run], run.hf));
  if (run.rows.some((r) => r.status === "ok")) {
    await Deno.writeTextFile(`${OUT}.svg`, paperSvg([run], run.hf));
  }
}

const gpuBytes = await gpuMemory();
const presets = archNamed("switch_transformers").make.presets;
for (const model of MODELS) {
  const preset = presets[model];
  if (!preset) {
    throw new Error(`PREGATE_PAPER_MODELS: unknown preset '${model}' (${Object.keys(presets)})`);
  }
  for (const dtype of DTYPES) {
    const key = `${model}/${dtype}`;
    const dir = await benchCheckpoint(
      `switch_transformers:${model}:${preset.dims.layers}:${dtype}`,
      root,
      { log },
    );
    await settleWriteback(log);
    const cfg = await loadConfig(dir);
    const enc = encoderIds(ENCODER, cfg.vocabSize);
    const decoderMoe = cfg.layers.filter((l, i) =>
      l.ffn.kind === "moe" && i >= cfg.stacks![1].first
    ).length;
    const bytes = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".safetensors"))
      .reduce((a, e) => a + Deno.statSync(`${dir}/${e.name}`).size, 0);
    run.copy_gb_s[key] = await measureUploadRate(gpu, dir, UPLOADER);
    // Every expert once: the rate copies sustain when their sources are not in the CPU's caches.
    run.sweep_gb_s![key] = await measureUploadRate(gpu, dir, UPLOADER, true);
    const block = await moeBlockTime(gpu, dir).catch((
      e,
    ) => (log(`block timing failed: ${e}`), null));
    run.moe_block_gpu_ms[key] = block ? block.seconds * 1e3 : null;
    log(
      `${key}: ${(bytes / 1e9).toFixed(1)} GB; copies ${run.copy_gb_s[key].toFixed(2)} GB/s ` +
        `(every expert once: ${run.sweep_gb_s![key].toFixed(2)}); ` +
        `MoE block ${run.moe_block_gpu_ms[key]?.toFixed(3)} ms (${block?.how})`,
    );
    const rows: PaperRow[] = [];
    let reference: number[] | null = null;
    for (const mode of MODES) {
      const base = { model, dtype, mode };
      if (mode === "resident" && bytes > 0.95 * gpuBytes) {
        rows.push({
          ...base,
          status: "skipped",
          reason: `out of memory: ${(bytes / 1e9).toFixed(1)} GB of weights`,
        });
        continue;
      }
      log(`${key}: ${mode}`);
      try {
        const tokens = mode === "prefetch-all" ? PREFETCH_TOKENS : TOKENS;
        const m = await measure(dir, mode, enc, tokens);
        const exact = mode !== "pregated-strict";
        if (exact && !reference) reference = m.ids;
        const same = exact
          ? m.ids.every((x, i) => i >= reference!.length || x === reference![i])
          : null;
        if (same === false) {
          throw new Error(`${mode} gave other tokens than ${MODES[0]}: ${m.ids} vs ${reference}`);
        }
        const st = m.stats, perToken = st.upload_bytes_per_token;
        rows.push({
          ...base,
          status: "ok",
          decode_tokens_per_s: st.decode_tokens_per_s,
          peak_gpu_bytes: st.peak_gpu_bytes,
          peak_staging_bytes: st.peak_host_staging_bytes,
          upload_bytes_per_token: perToken,
          pregate_hit_rate: m.hit,
          ceiling_tokens_per_s: perToken > 0 ? (run.copy_gb_s[key] * 1e9) / perToken : null,
          same_tokens: same,
          runs: m.runs,
          tokens: m.ids,
        });
      } catch (e) {
        const skipped = e instanceof BudgetError;
        rows.push({
          ...base,
          status: skipped ? "skipped" : "failed",
          reason: (e as Error).message.split("\n")[0],
        });
        log(`  ${skipped ? "skipped" : "FAILED"}: ${(e as Error).message}`);
      }
    }
    // Block latency: the resident block plus the configuration's extra time per token per block.
    const gpuOnly = rows.find((r) => r.mode === "resident" && r.status === "ok")
      ?.decode_tokens_per_s;
    for (const r of rows) {
      if (r.status !== "ok" || !block) continue;
      r.moe_block_ms = gpuOnly
        ? block.seconds * 1e3 + (1e3 / r.decode_tokens_per_s! - 1e3 / gpuOnly) / decoderMoe
        : null;
    }
    run.rows.push(...rows);
    if (HF) run.hf.push(...await runHf(dir, model, dtype));
    await write();
    if (!KEEP) await Deno.remove(dir, { recursive: true });
  }
}
console.log(paperMarkdown([run], run.hf));
await clock?.stop();
gpu.destroy();
