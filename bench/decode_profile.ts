/**
 * Where one decode step's time goes, kernel by kernel: loads a model, checks that two greedy runs
 * agree, warms up, times unprofiled decode (median of 3 runs), then decodes again with every
 * dispatch timestamped (`Gpu.startProfile`) and prints each kernel's GPU microseconds per forward
 * pass and its share, beside the time between dispatches (the CPU's encoding, submits and
 * readbacks). Profiling puts each dispatch in its own compute pass, so the profiled run is slower
 * than the unprofiled one; both are printed.
 *
 * Run: `PREGATE_GPU=dawn deno run -A bench/decode_profile.ts`. Environment:
 * - PREGATE_BENCH_MODEL: a model directory or GGUF file, or a `make-model` spec
 *   `arch:preset:layers:dtype` (default `qwen3_moe:qwen3-30b-a3b:8:bf16` on a GPU, a tiny model on
 *   a software adapter), written under PREGATE_BENCH_DIR (default a temporary directory)
 * - PREGATE_BENCH_TYPE: a `convert` type (q8_0, q4_k, ...): profile the spec's checkpoint converted
 *   to a GGUF file of that type (cached beside it)
 * - PREGATE_BENCH_MODE: resident (default), on-demand, prefetch-all, pregated-exact, pregated-strict
 * - PREGATE_BENCH_TOKENS (profiled tokens, default 8; fewer when the dispatches would pass the
 *   profile's 2048), PREGATE_BENCH_WARMUP_S (default 2 on a GPU), PREGATE_BENCH_OUT (path prefix of
 *   the .json and .md results)
 * @module
 */
import { type Gpu, openGpu } from "../runtime/base/gpu/device.ts";
import { loadModel, type LoadOptions } from "../runtime/model.ts";
import { parseConvertType } from "../runtime/models/convert_command.ts";
import { benchCheckpoint, benchGguf, median, settleWriteback, writeResults } from "./harness.ts";
import { warmUp } from "./clock.ts";
import { profileByKernel, profileMarkdown } from "./profile_table.ts";

const MODES: Record<string, LoadOptions> = {
  "resident": { mode: "resident" },
  "on-demand": { mode: "on-demand" },
  "prefetch-all": { mode: "prefetch-all" },
  "pregated-exact": { mode: "pregated", pregate: "exact" },
  "pregated-strict": { mode: "pregated", pregate: "strict" },
};
/** The most dispatches one profile holds (4096 timestamps). */
const PROFILE_CAPACITY = 2048;

const log = (m: string) => console.error(`[decode_profile] ${m}`);
const gpu: Gpu = await openGpu({
  gpu: (Deno.env.get("PREGATE_GPU") ?? "native") as "native" | "dawn" | "auto",
  log,
});
const modeKey = Deno.env.get("PREGATE_BENCH_MODE") ?? "resident";
if (!(modeKey in MODES)) {
  throw new Error(
    `PREGATE_BENCH_MODE: unknown mode '${modeKey}'; expected ${Object.keys(MODES).join(", ")}`,
  );
}
const tokens = Number(Deno.env.get("PREGATE_BENCH_TOKENS") ?? 8);
if (!Number.isInteger(tokens) || tokens < 2) {
  throw new Error(`PREGATE_BENCH_TOKENS: an integer >= 2, got '${tokens}'`);
}
const warmupSeconds = Number(Deno.env.get("PREGATE_BENCH_WARMUP_S") ?? (gpu.isFallback ? 0 : 2));
const outPrefix = Deno.env.get("PREGATE_BENCH_OUT");
const typeEnv = Deno.env.get("PREGATE_BENCH_TYPE");

/** The model to profile: a path as given, or the spec's checkpoint (converted when asked). */
async function modelPath(): Promise<string> {
  const given = Deno.env.get("PREGATE_BENCH_MODEL") ??
    (gpu.isFallback ? "qwen3_moe:tiny:3:f32" : "qwen3_moe:qwen3-30b-a3b:8:bf16");
  if (await Deno.stat(given).catch(() => null)) return given;
  const root = Deno.env.get("PREGATE_BENCH_DIR") ??
    await Deno.makeTempDir({ prefix: "pregate-profile-" });
  const checkpoint = await benchCheckpoint(given, root, { log, what: "PREGATE_BENCH_MODEL" });
  if (!typeEnv) return checkpoint;
  return await benchGguf(checkpoint, parseConvertType(typeEnv, "PREGATE_BENCH_TYPE"), log);
}

const path = await modelPath();
await settleWriteback(log);
log(`${path}: loading (${modeKey})`);
const model = await loadModel(path, { device: gpu, contextLength: 256, ...MODES[modeKey] });
const vocab = model.config.vocabSize;
const prompt = [13 % vocab];
const decode = async (n: number) => {
  const ids: number[] = [];
  for await (const id of model.generate(prompt, { maxTokens: n })) ids.push(id);
  return { ids, stats: model.lastStats! };
};

// Validate: two greedy runs agree and generate every token asked for.
const first = await decode(tokens);
const again = await decode(tokens);
if (first.ids.join() !== again.ids.join()) throw new Error(`${path}: greedy runs disagree`);
const warmRuns = await warmUp(() => decode(tokens), warmupSeconds);
const timed = [await decode(tokens), await decode(tokens), await decode(tokens)];
const tps = median(timed.map((r) => r.stats.decode_tokens_per_s));
log(`${warmRuns} warm-up runs; unprofiled decode ${tps.toFixed(1)} tok/s`);

// One forward pass per generated token (the prompt is one token); fit them in the profile.
const perPass = Math.max(1, Math.ceil(first.stats.dispatches_per_token));
const passes = Math.min(tokens, Math.floor(PROFILE_CAPACITY / (perPass + 2)));
if (passes < 2) throw new Error(`${path}: ${perPass} dispatches a token leave no room to profile`);
gpu.startProfile(PROFILE_CAPACITY);
const profiled = await decode(passes).catch(async (e) => {
  await gpu.stopProfile();
  throw e;
});
const dispatches = await gpu.stopProfile();
if (dispatches.length >= PROFILE_CAPACITY) {
  throw new Error(`${path}: the profile filled up; set PREGATE_BENCH_TOKENS lower`);
}
if (profiled.ids.join() !== first.ids.slice(0, passes).join()) {
  throw new Error(`${path}: the profiled run's tokens differ`);
}
const profile = profileByKernel(dispatches, passes);
const header = `Decode profile, ${new Date().toISOString().slice(0, 10)}, ${gpu.describe()}\n\n` +
  `${path} (${modeKey}), ${passes} forward passes of one token: unprofiled decode ` +
  `${tps.toFixed(1)} tok/s (${(1e3 / tps).toFixed(3)} ms a token, median of 3); profiled run ` +
  `${profiled.stats.decode_tokens_per_s.toFixed(1)} tok/s; GPU busy ${
    (profile.busyNs / 1e6).toFixed(3)
  } ms a pass, between dispatches ${(profile.idleNs / 1e6).toFixed(3)} ms.\n`;
const md = `${header}\n${profileMarkdown(profile)}\n`;
console.log(md);
if (outPrefix) {
  await writeResults(outPrefix, md, {
    gpu: gpu.describe(),
    model: path,
    mode: modeKey,
    unprofiled_tokens_per_s: tps,
    profiled_stats: profiled.stats,
    ...profile,
  });
}
await model.dispose();
