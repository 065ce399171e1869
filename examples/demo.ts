/**
 * The demo: the embedded pre-gated MoE (`models/demo`, trained with pre-gates by `tools/train/`)
 * continues an English prompt with its experts streamed into GPU slots in `pregated` mode, using
 * its trained pre-gates (`strict`: each MoE layer computes with the experts the previous layer's
 * pre-gate chose). The text streams to stdout as it is decoded, then a one-screen summary follows
 * (tokens/s, expert bytes uploaded per token, peak GPU bytes against resident, pre-gate and
 * expert-cache hit rates, device) and the expert trace is drawn as SVG. Progress goes to stderr.
 *
 * Tokens are sampled (temperature 0.7, top-p 0.9, seed 1: the same text on the same device each
 * run): greedy decoding of a model this small soon repeats a sentence; `--temperature 0` shows it.
 *
 * Peak GPU bytes when resident are measured, not generated: the model is loaded a second time with
 * every expert on the GPU and that load's accounted bytes are added to this run's per-generation
 * buffers (the peak during generation above the bytes held after loading).
 *
 * Usage: deno task demo [--prompt TEXT] [--max-tokens N] [--mode pregated|on-demand|prefetch-all|
 *          resident] [--pregate strict|exact] [--temperature T] [--top-p P] [--seed S]
 *          [--trace FILE.svg] [--model DIR] [--gpu native|dawn|auto]
 *
 * The HF parity check and the four modes on the random fixtures: `examples/modes.ts`.
 * @module
 */
import { relative } from "node:path";
import { parseArgs } from "node:util";
import { type GpuChoice, openGpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError, PregateError } from "../runtime/base/errors.ts";
import { EXPERT_MODES, type ExpertMode, type PregatePolicy } from "../runtime/experts/engine.ts";
import { summarizeTrace } from "../runtime/experts/trace.ts";
import { traceToSvg } from "../runtime/experts/trace_svg.ts";
import { type GenerateStats, loadModel, type Model } from "../runtime/model.ts";
import { formatBytes, inspectModel, type InspectReport } from "../runtime/models/inspect.ts";
import type { MoeFfn } from "../runtime/models/config.ts";
import { pregateNames } from "../runtime/models/names.ts";
import { openCheckpoint } from "../runtime/weights/safetensors.ts";
import { checkOutputFile, writeTextOutput } from "../runtime/output_files.ts";
import { generateText } from "../runtime/text/generate_text.ts";
import { loadTokenizer } from "../runtime/text/tokenizer.ts";

const USAGE = "deno task demo [--prompt TEXT] [--max-tokens N] [--mode MODE] " +
  "[--pregate strict|exact] [--temperature T] [--top-p P] [--seed S] [--trace FILE.svg] " +
  "[--model DIR] [--gpu native|dawn|auto]";

/** What the demo was asked to do. */
interface DemoOptions {
  model: string;
  prompt: string;
  maxTokens: number;
  mode: ExpertMode;
  pregate: PregatePolicy;
  temperature: number;
  topP: number;
  seed: number;
  trace: string;
  gpu: GpuChoice;
}

function parseOptions(args: string[]): DemoOptions {
  const { values: v } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string", default: new URL("../models/demo", import.meta.url).pathname },
      prompt: { type: "string", default: "The history of the United States" },
      "max-tokens": { type: "string", default: "64" },
      mode: { type: "string", default: "pregated" },
      pregate: { type: "string", default: "strict" },
      temperature: { type: "string", default: "0.7" },
      "top-p": { type: "string", default: "0.9" },
      seed: { type: "string", default: "1" },
      trace: { type: "string", default: "demo_trace.svg" },
      gpu: { type: "string", default: "native" },
    },
  });
  const num = (flag: string, text: string, ok: (x: number) => boolean, want: string) => {
    const x = Number(text);
    if (text.trim() === "" || !ok(x)) {
      throw new ArgumentError(flag, `expected ${want}, got '${text}'`);
    }
    return x;
  };
  if (!EXPERT_MODES.includes(v.mode as ExpertMode)) {
    throw new ArgumentError("--mode", `unknown mode '${v.mode}'`, `use ${EXPERT_MODES.join(", ")}`);
  }
  if (v.pregate !== "strict" && v.pregate !== "exact") {
    throw new ArgumentError("--pregate", `expected strict or exact, got '${v.pregate}'`);
  }
  if (v.prompt.trim() === "") throw new ArgumentError("--prompt", "expected some text");
  checkOutputFile(v.trace, "--trace");
  return {
    model: v.model,
    prompt: v.prompt,
    maxTokens: num("--max-tokens", v["max-tokens"], (x) => Number.isInteger(x) && x >= 1, "N >= 1"),
    mode: v.mode as ExpertMode,
    pregate: v.pregate,
    temperature: num("--temperature", v.temperature, (x) => x >= 0, "a number >= 0 (0: greedy)"),
    topP: num("--top-p", v["top-p"], (x) => x > 0 && x <= 1, "a number in (0, 1]"),
    seed: num("--seed", v.seed, (x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32, "0..2^32-1"),
    trace: v.trace,
    gpu: v.gpu as GpuChoice,
  };
}

const utf8 = new TextEncoder();
const isTty = Deno.stderr.isTerminal();

/** A progress line on stderr: redrawn in place on a terminal, printed once when it ends. */
function progress(label: string): { update(text: string): void; done(text: string): void } {
  const t0 = performance.now();
  const secs = () => ((performance.now() - t0) / 1000).toFixed(1);
  if (!isTty) console.error(`${label}...`);
  return {
    update(text) {
      if (isTty) Deno.stderr.writeSync(utf8.encode(`\r\x1b[K${label}: ${text}`));
    },
    done(text) {
      const line = `${label}: ${text} (${secs()} s)`;
      if (isTty) Deno.stderr.writeSync(utf8.encode(`\r\x1b[K${line}\n`));
      else console.error(line);
    },
  };
}

/** Bytes the model holds on `model.gpu` right after loading `dir` resident (then disposed). */
async function residentLoadBytes(dir: string, model: Model): Promise<number> {
  const p = progress("measuring resident memory (loading every expert too)");
  const before = model.gpu.memory().current;
  const resident = await loadModel(dir, {
    device: model.gpu,
    onProgress: (done, total) => p.update(`${formatBytes(done)} / ${formatBytes(total)}`),
  });
  const bytes = model.gpu.memory().current - before;
  await resident.dispose();
  p.done(formatBytes(bytes));
  return bytes;
}

/** `path` relative to the working directory when it lies below it, else as given. */
function displayPath(path: string): string {
  const rel = relative(Deno.cwd(), path);
  return rel !== "" && !rel.startsWith("..") ? rel : path;
}

/** Whether the checkpoint in `dir` carries any of the model's trained pre-gates. */
function hasTrainedPregates(dir: string, model: Model): boolean {
  const store = openCheckpoint(dir);
  try {
    return pregateNames(model.config).some((name) => store.has(name));
  } finally {
    store.close();
  }
}

async function run(o: DemoOptions): Promise<void> {
  const tokenizer = await loadTokenizer(o.model);
  const opening = progress("opening the GPU");
  const gpu = await openGpu({ gpu: o.gpu, log: (m) => console.error(m) });
  opening.done(gpu.describe());
  const shown = displayPath(o.model);
  const loading = progress(
    `loading ${shown} (${o.mode}${o.mode === "pregated" ? `, ${o.pregate}` : ""})`,
  );
  const before = gpu.memory().current;
  const model = await loadModel(o.model, {
    device: gpu,
    mode: o.mode,
    pregate: o.pregate,
    trace: o.mode !== "resident",
    log: (m) => console.error(m),
    onProgress: (done, total) => loading.update(`${formatBytes(done)} / ${formatBytes(total)}`),
  });
  const loadedBytes = gpu.memory().current - before;
  loading.done(`${formatBytes(loadedBytes)} on the GPU`);
  try {
    const sampling = { temperature: o.temperature, topP: o.topP, seed: o.seed };
    // Warm-up: the first pass compiles the GPU kernels; the measured run starts after it.
    const warming = progress("warming up (compiling GPU kernels)");
    for await (const _ of generateText(model, tokenizer, o.prompt, { maxTokens: 2, ...sampling })) {
      /* drain */
    }
    warming.done("ready");
    console.error("");
    await Deno.stdout.write(utf8.encode(o.prompt));
    const gen = generateText(model, tokenizer, o.prompt, { maxTokens: o.maxTokens, ...sampling });
    for await (const piece of gen) await Deno.stdout.write(utf8.encode(piece));
    console.log(gen.stopReason === "eos" ? " [end of text]\n" : "\n");
    const stats = gen.stats!;
    const extra = stats.peak_gpu_bytes - (before + loadedBytes);
    const resident = o.mode === "resident"
      ? stats.peak_gpu_bytes - before
      : await residentLoadBytes(o.model, model) + extra;
    let tracePath: string | null = null, onDemand: number | null = null;
    const trace = model.trace(); // the last generation's
    if (trace) {
      onDemand = summarizeTrace(trace, { skipPrefill: true }).overall.onDemandPerToken;
      await writeTextOutput(o.trace, traceToSvg({ ...trace, model: shown }));
      tracePath = await Deno.realPath(o.trace);
    }
    console.log(summary(model, stats, {
      model: o.model,
      report: await inspectModel(o.model),
      trainedPregates: hasTrainedPregates(o.model, model),
      peak: stats.peak_gpu_bytes - before,
      resident,
      tracePath,
      onDemand,
    }));
  } finally {
    await model.dispose();
    gpu.destroy();
  }
}

/** What the summary reports besides the generation's statistics. */
interface RunFacts {
  /** The model directory. */
  model: string;
  /** The checkpoint, as inspected. */
  report: InspectReport;
  /** Whether the checkpoint carries trained pre-gates. */
  trainedPregates: boolean;
  /** Peak GPU bytes of this model during the generation. */
  peak: number;
  /** The same when resident (measured; see the module doc). */
  resident: number;
  /** Where the trace picture went, or null. */
  tracePath: string | null;
  /** Expert copies per decoded token that a layer waited for (from the trace), or null. */
  onDemand: number | null;
}

function summary(model: Model, st: GenerateStats, f: RunFacts): string {
  const cfg = model.config, moe = cfg.layers.filter((l) => l.ffn.kind === "moe");
  const ffn = moe[0]?.ffn as MoeFfn | undefined;
  const perExpert = f.report.expertBytes?.perExpert ?? 0;
  const rate = (x: number | null, what: string) =>
    x === null ? "n/a" : `${x.toFixed(3)} (${(100 * x).toFixed(1)}% ${what})`;
  const upload = Math.round(st.upload_bytes_per_token);
  const copies = perExpert > 0 ? upload / perExpert : 0;
  const predictor = f.trainedPregates ? "trained pre-gates" : "next layer's router as pre-gate";
  const mode = st.mode === "resident"
    ? "resident (every weight on the GPU)"
    : st.mode + (st.pregate ? `, pre-gate ${st.pregate} (${predictor})` : "") +
      `, ${st.expert_slots} expert slots`;
  const rows: [string, string][] = [
    [
      "model",
      `${f.model.split("/").filter(Boolean).at(-1)} (${cfg.arch}, ` +
      `${(f.report.params.total / 1e6).toFixed(1)}M params, ${cfg.layers.length} layers` +
      (ffn ? `, ${ffn.experts} experts top-${ffn.topK} in ${moe.length} MoE layers)` : ")"),
    ],
    ["device", st.gpu],
    ["mode", mode],
    ["prefill", `${st.prompt_tokens} tokens at ${st.prefill_tokens_per_s.toFixed(1)} tokens/s`],
    [
      "decode",
      `${st.generated_tokens} tokens generated, ${st.decode_tokens_per_s.toFixed(1)} tokens/s`,
    ],
    [
      "upload/token",
      `${upload} bytes (${formatBytes(upload)}` +
      (copies > 0 ? `: ${copies.toFixed(1)} expert copies of ${formatBytes(perExpert)})` : ")"),
    ],
    ...(f.onDemand === null ? [] : [[
      "waited for",
      `${f.onDemand.toFixed(2)} expert copies per token (the rest were prefetched or reused)`,
    ] as [string, string]]),
    [
      "peak GPU",
      `${f.peak} bytes (${formatBytes(f.peak)}) vs resident ${f.resident} bytes ` +
      `(${formatBytes(f.resident)}): ${(100 * f.peak / f.resident).toFixed(0)}%`,
    ],
    ["pre-gate hit", rate(st.pregate_hit_rate, "of the routers' choices predicted a layer ahead")],
    ["cache hit", rate(st.expert_cache_hit_rate, "of expert uses found in a GPU slot")],
    ["syncs/token", st.syncs_per_token.toFixed(2)],
    ["trace", f.tracePath ?? "none (resident: no experts move)"],
  ];
  return "summary\n" + rows.map(([k, v]) => `  ${k.padEnd(13)} ${v}`).join("\n");
}

if (import.meta.main) {
  try {
    await run(parseOptions(Deno.args));
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (
      e instanceof ArgumentError || (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))
    ) {
      console.error(`demo: ${(e as Error).message}\nusage: ${USAGE}`);
      Deno.exit(2);
    }
    if (e instanceof PregateError) {
      console.error(`demo: ${e.name}: ${e.message}`);
      Deno.exit(1);
    }
    throw e;
  }
}
