/**
 * Resident decode benchmark: `deno bench -A bench/decode_bench.ts`.
 *
 * Writes (or reuses) a `make-model` checkpoint, loads it with every weight on the GPU, checks that
 * two greedy runs agree and that the logits are finite, then measures decode tokens/s. The ceiling is
 * the bandwidth bound: the weight bytes one decode step must read (attention, norms, routers, the
 * chosen experts of every MoE layer, the LM head) over the streaming-read bandwidth measured on the
 * same device.
 *
 * Environment: PREGATE_GPU (native|dawn|auto, default native); PREGATE_BENCH_MODELS: comma list of
 * `arch:preset:layers:dtype` (default: small shapes on a software adapter, real layer shapes on a
 * GPU); PREGATE_BENCH_DIR (where checkpoints are written, default a temp dir);
 * PREGATE_BENCH_TOKENS (decode tokens, default 64); PREGATE_BENCH_RUNS (timed runs, default 7; the
 * median, best and worst are reported, with the SM clock from `nvidia-smi` where there is one);
 * PREGATE_BENCH_WARMUP_S (seconds of untimed decode first, so the GPU's clock has climbed; default 3
 * on a GPU, 0 on a software adapter);
 * PREGATE_BENCH_OUT (JSON results path).
 * @module
 */
import { type Gpu, openGpu } from "../runtime/base/gpu/device.ts";
import { loadModel } from "../runtime/model.ts";
import type { ModelConfig } from "../runtime/models/config.ts";
import { type DType, DTYPE_BYTES } from "../runtime/base/dtype.ts";
import { measureReadBandwidth } from "./ceilings.ts";
import { benchCheckpoint, markdownTable, median, type ResultRow } from "./harness.ts";
import { ClockSampler, warmUp } from "./clock.ts";

const gpu: Gpu = await openGpu({
  gpu: (Deno.env.get("PREGATE_GPU") ?? "native") as "native" | "dawn" | "auto",
  log: (m) => console.error(m),
});
const specs = (Deno.env.get("PREGATE_BENCH_MODELS") ??
  (gpu.isFallback
    ? "mixtral:tiny:2:f32,qwen3_moe:tiny:3:bf16"
    : "mixtral:mixtral-8x7b:4:bf16,qwen3_moe:qwen3-30b-a3b:8:bf16,olmoe:olmoe-1b-7b:8:bf16"))
  .split(",");
const tokens = Number(Deno.env.get("PREGATE_BENCH_TOKENS") ?? 64);
const runs = Math.max(1, Number(Deno.env.get("PREGATE_BENCH_RUNS") ?? 7));

const warmupSeconds = Number(Deno.env.get("PREGATE_BENCH_WARMUP_S") ?? (gpu.isFallback ? 0 : 3));
// A GPU reaches its full clock only after seconds of sustained work, so the bench warms up for
// PREGATE_BENCH_WARMUP_S seconds and reports the clock during each run (docs/decisions.md).
const clock = ClockSampler.start();
const tStart = performance.now();
/** Progress on stderr, with seconds since start (a stalled step shows where it stalled). */
const phase = (what: string) =>
  console.error(`[decode_bench +${((performance.now() - tStart) / 1e3).toFixed(1)} s] ${what}`);
/** Load options: progress at every quarter of the bytes. */
const loadOpts = () => {
  let shown = 0;
  return {
    device: gpu,
    contextLength: 512,
    onProgress: (done: number, total: number) => {
      if (done >= ((shown + 1) * total) / 4) {
        shown = Math.floor((4 * done) / total);
        phase(`  loaded ${(done / 2 ** 30).toFixed(2)} of ${(total / 2 ** 30).toFixed(2)} GiB`);
      }
    },
  };
};
const root = Deno.env.get("PREGATE_BENCH_DIR") ??
  await Deno.makeTempDir({ prefix: "pregate-bench-" });
const readBw = await measureReadBandwidth(gpu);
const rows: ResultRow[] = [];
const results: Record<string, unknown>[] = [];

/** Weight bytes read by one decode step of the resident model (batch 1). */
function activeBytesPerToken(cfg: ModelConfig, dtype: DType): number {
  const b = DTYPE_BYTES[dtype], H = cfg.hidden;
  const Q = cfg.heads * cfg.headDim, KV = cfg.kvHeads * cfg.headDim;
  let n = cfg.vocabSize * H + H; // LM head + final norm
  for (const l of cfg.layers) {
    n += H * (2 * Q + 2 * KV) + 2 * H; // q, k, v, o + norms
    if (l.ffn.kind === "dense") n += 3 * H * l.ffn.inter;
    else n += H * l.ffn.experts + l.ffn.topK * 3 * H * l.ffn.inter + 3 * H * l.ffn.sharedInter;
  }
  return n * b;
}

for (const spec of specs) {
  const [arch, preset, layers, dtype] = spec.split(":");
  const dir = await benchCheckpoint(spec, root, {
    log: (m) => console.error(m),
    what: "PREGATE_BENCH_MODELS",
  });
  phase(`${spec}: loading`);
  const t0 = performance.now();
  const model = await loadModel(dir, loadOpts());
  phase(`${spec}: loaded; validating`);
  const loadSeconds = (performance.now() - t0) / 1e3;
  const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919 + 13) % model.config.vocabSize);
  // Validate: finite logits, and two greedy runs give the same tokens.
  const logits = await model.logits(prompt.slice(0, 4));
  if (!logits.every((r) => r.every(Number.isFinite))) throw new Error(`${spec}: non-finite logits`);
  const run = async () => {
    const out: number[] = [];
    for await (const id of model.generate(prompt, { maxTokens: tokens })) out.push(id);
    return { out, stats: model.lastStats! };
  };
  const first = await run();
  phase(`${spec}: warming up`);
  const warmRuns = await warmUp(run, warmupSeconds);
  phase(`${spec}: ${warmRuns} warm-up runs; timing ${runs} runs`);
  const samples = [];
  const clocks: ({ min: number; max: number } | null)[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = await run();
    clocks.push(clock?.range(t0, performance.now()) ?? null);
    if (r.out.join() !== first.out.join()) throw new Error(`${spec}: greedy runs disagree`);
    samples.push(r.stats);
  }
  const all = samples.map((s) => s.decode_tokens_per_s);
  const tps = median(all), best = Math.max(...all), worst = Math.min(...all);
  const smSeen = clocks.filter((c) => c !== null).flatMap((c) => [c!.min, c!.max]);
  const active = activeBytesPerToken(model.config, dtype as DType);
  const ceiling = (readBw * 1e9) / active;
  const peak = Math.max(...samples.map((s) => s.peak_gpu_bytes));
  rows.push({
    name: `${arch} ${preset} (${layers} layers, ${dtype}) resident decode`,
    value: tps,
    unit: "tok/s",
    ceiling,
    ceilingNote: `${(active / 2 ** 20).toFixed(0)} MiB/token at ${readBw.toFixed(0)} GB/s`,
    note: `median of ${runs} runs after ${warmRuns} warm-up runs (best ${best.toFixed(0)}, worst ${
      worst.toFixed(0)
    }${
      smSeen.length
        ? `; SM clock ${Math.min(...smSeen)}-${Math.max(...smSeen)} of ${clock?.maxMhz} MHz`
        : ""
    }), peak GPU ${(peak / 2 ** 30).toFixed(2)} GiB, ${
      samples[0].syncs_per_token.toFixed(2)
    } syncs/token, ${samples[0].dispatches_per_token.toFixed(0)} dispatches/token, load ${
      loadSeconds.toFixed(1)
    } s`,
  });
  results.push({
    spec,
    decode_tokens_per_s: tps,
    decode_tokens_per_s_best: best,
    decode_tokens_per_s_worst: worst,
    sm_clock_mhz_per_run: clocks,
    sm_clock_max_mhz: clock?.maxMhz ?? null,
    warmup_runs: warmRuns,
    ceiling_tokens_per_s: ceiling,
    active_bytes_per_token: active,
    read_bandwidth_gb_s: readBw,
    load_seconds: loadSeconds,
    stats: samples,
  });
  phase(`${spec}: done`);
  // deno bench's own statistics, on the same loaded model (kept until the process ends). Not on
  // Dawn, where async work inside a Deno.bench case stalls at random (denoland/deno#23253,
  // docs/decisions.md); the table above already holds the measurement.
  if (gpu.impl === "dawn") {
    console.error(
      `[decode_bench] ${spec}: deno bench's own iterations skipped on Dawn (see source)`,
    );
    continue;
  }
  Deno.bench({ name: `decode ${spec} (${tokens} tokens)`, n: 3, warmup: 1 }, async () => {
    for await (const _ of model.generate(prompt, { maxTokens: tokens })) { /* drain */ }
  });
}

const header = `Pregate resident decode bench, ${
  new Date().toISOString().slice(0, 10)
}, ${gpu.describe()}`;
await clock?.stop();
console.log(`\n${header}\n\n${markdownTable(rows)}\n`);
const out = Deno.env.get("PREGATE_BENCH_OUT");
if (out) {
  await Deno.writeTextFile(out, JSON.stringify({ header, gpu: gpu.describe(), results }, null, 2));
}
