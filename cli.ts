/**
 * The `pregate` command line. Run `deno task pregate help` for usage.
 *
 * Exit codes: 0 success, 1 runtime error (a typed Pregate error is printed without a stack),
 * 2 bad arguments (usage is printed).
 *
 * @example
 * ```sh
 * deno task pregate gpu-info --gpu native
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { ArgumentError, NumericError, PregateError } from "./runtime/errors.ts";
import { type GpuChoice, openGpu } from "./runtime/gpu/device.ts";
import { type GenerateOptions, loadModel, type LoadOptions, type Model } from "./runtime/model.ts";
import { EXPERT_MODES, type ExpertMode } from "./runtime/experts/engine.ts";
import { formatTraceSummary, summarizeTrace } from "./runtime/experts/trace.ts";
import { traceToSvg } from "./runtime/experts/trace_svg.ts";
import {
  makeModel,
  type ModelDims,
  presetNames,
  removePartialFiles,
} from "./runtime/models/make_model.ts";
import { formatInspect, inspectModel, nonFiniteWarning } from "./runtime/models/inspect.ts";
import { ARCHITECTURES } from "./runtime/models/arch/mod.ts";
import { checkOutputFile, writeTextOutput } from "./runtime/output_files.ts";
import { withSignalCleanup } from "./runtime/interrupt.ts";
import { loadTokenizer } from "./runtime/text/tokenizer.ts";
import { generateText } from "./runtime/text/generate_text.ts";
import { renderChat } from "./runtime/text/chat.ts";
import { EVAL_CONTEXT, evaluatePerplexity } from "./runtime/eval.ts";
import { SERVE_OPTIONS, SERVE_USAGE, serveCommand } from "./runtime/serve/serve_command.ts";
import {
  CONVERT_OPTIONS,
  CONVERT_SUMMARY,
  CONVERT_USAGE,
  convertCommand,
  makeModelGguf,
  parseConvertType,
} from "./runtime/models/convert_command.ts";

/** A CLI command: its usage line, its flags (node:util parseArgs options) and its body. */
interface Command {
  usage: string;
  summary: string;
  options: Record<string, { type: "string" | "boolean"; short?: string; default?: string }>;
  run(values: Record<string, string | boolean | undefined>): Promise<void>;
}

const GPU_OPTION = { gpu: { type: "string" as const, default: "native" } };

function parseGpu(v: unknown): GpuChoice {
  if (v === "native" || v === "dawn" || v === "auto") return v;
  throw new ArgumentError("--gpu", `expected native, dawn or auto, got '${v}'`);
}

const IDS_HELP = "token ids are decimal integers separated by commas, e.g. 5,77,301";

/** Parses `--ids`: decimal integers separated by commas (spaces around them allowed). */
export function parseIds(v: unknown, flag = "--ids"): number[] {
  if (typeof v !== "string" || !v.trim()) {
    throw new ArgumentError(flag, "expected a comma-separated list of token ids, e.g. 5,77,301");
  }
  const items = v.split(",");
  return items.map((x, i) => {
    const item = x.trim();
    if (item === "") {
      throw new ArgumentError(
        flag,
        `item ${i + 1} of ${items.length} in '${v}' is empty`,
        IDS_HELP,
      );
    }
    const n = Number(item);
    if (!/^[0-9]+$/.test(item) || !Number.isSafeInteger(n)) {
      throw new ArgumentError(
        flag,
        `'${item}' is not a token id (a non-negative decimal integer)`,
        IDS_HELP,
      );
    }
    return n;
  });
}

function intFlag(v: unknown, flag: string, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new ArgumentError(flag, `expected an integer >= ${min}, got '${v}'`);
  }
  return n;
}

function requireModel(v: unknown): string {
  if (typeof v !== "string" || !v) {
    throw new ArgumentError(
      "--model",
      "is required: a directory with config.json and *.safetensors, or a GGUF file",
    );
  }
  return v;
}

/** Parses a byte size: 123, 512MiB, 1.5GiB, 2GB, 800M, 4G (binary units for M/G/K). */
export function parseSize(v: unknown, flag: string): number {
  const m = typeof v === "string" ? /^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*$/i.exec(v) : null;
  if (!m) {
    throw new ArgumentError(
      flag,
      `expected a size such as 512MiB, 1.5GiB or 2000000000, got '${v}'`,
    );
  }
  const unit = m[2].toLowerCase();
  const decimal = m[3].toLowerCase() === "b" && unit !== "";
  const base = decimal ? 1000 : 1024;
  const exp = { "": 0, k: 1, m: 2, g: 3, t: 4 }[unit as "" | "k" | "m" | "g" | "t"];
  const n = Number(m[1]) * base ** exp;
  if (!(n > 0)) throw new ArgumentError(flag, `expected a positive size, got '${v}'`);
  return Math.floor(n);
}

function parseMode(v: unknown): ExpertMode {
  const mode = (v ?? "resident") as ExpertMode;
  if (!EXPERT_MODES.includes(mode)) {
    throw new ArgumentError("--mode", `expected ${EXPERT_MODES.join(", ")}, got '${v}'`);
  }
  return mode;
}

function modelOptions(v: Record<string, string | boolean | undefined>) {
  const mode = parseMode(v.mode);
  if (v.pregate !== undefined && v.pregate !== "exact" && v.pregate !== "strict") {
    throw new ArgumentError("--pregate", `expected exact or strict, got '${v.pregate}'`);
  }
  if (v.pregate !== undefined && mode !== "pregated") {
    throw new ArgumentError("--pregate", "only applies to --mode pregated");
  }
  const cache = v["expert-cache"];
  if (mode === "resident" && (v.budget !== undefined || cache !== undefined)) {
    throw new ArgumentError(
      v.budget !== undefined ? "--budget" : "--expert-cache",
      "applies to the offloading modes (--mode on-demand|prefetch-all|pregated)",
    );
  }
  const policy = v["cache-policy"];
  if (policy !== undefined && policy !== "lru" && policy !== "lfu") {
    throw new ArgumentError("--cache-policy", `expected lru or lfu, got '${policy}'`);
  }
  const uploader = v.uploader;
  if (
    uploader !== undefined && uploader !== "auto" && uploader !== "write" && uploader !== "mapped"
  ) {
    throw new ArgumentError("--uploader", `expected auto, write or mapped, got '${uploader}'`);
  }
  return {
    mode,
    uploader: uploader as "auto" | "write" | "mapped" | undefined,
    cachePolicy: policy as "lru" | "lfu" | undefined,
    pregate: v.pregate as "exact" | "strict" | undefined,
    budget: v.budget === undefined ? undefined : parseSize(v.budget, "--budget"),
    expertCache: cache === undefined || cache === "auto"
      ? (cache as "auto" | undefined)
      : intFlag(cache, "--expert-cache", 0, 0),
  };
}

async function openModel(
  v: Record<string, string | boolean | undefined>,
  extra: Pick<LoadOptions, "trace" | "prefillChunk"> = {},
): Promise<Model> {
  const quiet = Boolean(v.json);
  let lastPct = -1;
  const encoder = encoderIdsFlag(v)?.length ?? 0; // room for it, at least the default 512 tokens
  return await loadModel(requireModel(v.model), {
    ...modelOptions(v),
    ...extra,
    maxEncoderTokens: encoder > 512 ? encoder : undefined,
    gpu: parseGpu(v.gpu),
    contextLength: v.context === undefined ? undefined : intFlag(v.context, "--context", 1, 0),
    log: (m) => console.error(m),
    onProgress: quiet ? undefined : (done, total) => {
      const pct = total ? Math.floor((100 * done) / total) : 100;
      if (pct !== lastPct && (pct % 10 === 0 || done === total) && total > 64 << 20) {
        lastPct = pct;
        console.error(`loading weights: ${pct}% of ${(total / 2 ** 30).toFixed(2)} GiB`);
      }
    },
  });
}

const MODEL_OPTIONS = {
  ...GPU_OPTION,
  model: { type: "string" as const },
  context: { type: "string" as const },
  mode: { type: "string" as const },
  pregate: { type: "string" as const },
  budget: { type: "string" as const },
  "expert-cache": { type: "string" as const },
  "cache-policy": { type: "string" as const },
  uploader: { type: "string" as const },
};

const MODE_USAGE = "[--mode resident|on-demand|prefetch-all|pregated] [--pregate exact|strict] " +
  "[--budget SIZE] [--expert-cache N|auto] [--cache-policy lru|lfu] [--uploader auto|write|mapped] " +
  "[--context N] " +
  "[--gpu native|dawn|auto]";

/** make-model's dimension flags and the ModelDims field each sets. */
const DIM_FLAGS: Record<string, keyof ModelDims> = {
  hidden: "hidden",
  layers: "layers",
  heads: "heads",
  "kv-heads": "kvHeads",
  "head-dim": "headDim",
  inter: "inter",
  "dense-inter": "denseInter",
  "shared-inter": "sharedInter",
  experts: "experts",
  "top-k": "topK",
  vocab: "vocab",
};

const COMMANDS: Record<string, Command> = {
  logits: {
    usage: `logits --model DIR --ids 5,77,301 [--encoder-ids LIST] ${MODE_USAGE}`,
    summary: 'print {"logits": [[...], ...]}: full-vocabulary logits per input position ' +
      "(an encoder-decoder's decoder positions, after its encoder has read --encoder-ids)",
    options: { ...MODEL_OPTIONS, ids: { type: "string" }, "encoder-ids": { type: "string" } },
    async run(v) {
      const ids = parseIds(v.ids);
      const encoderIds = encoderIdsFlag(v);
      const model = await openModel({ ...v, json: true });
      try {
        const rows = await model.logits(ids, { encoderIds });
        console.log(JSON.stringify({ logits: rows.map((r) => Array.from(r)) }));
      } finally {
        await model.dispose();
      }
    },
  },
  generate: {
    usage: "generate --model DIR (--ids LIST | --prompt TEXT [--chat] | --encoder-ids LIST) " +
      "[--max-tokens N] " +
      `[--temperature T] [--top-p P] [--seed S] [--stats] [--json] ${MODE_USAGE}`,
    summary:
      "generate after a prompt (greedy unless --temperature > 0): --prompt streams text until " +
      "EOS, --chat applies the model's chat template; --ids prints token ids; an " +
      "encoder-decoder reads --encoder-ids and decodes from its decoder start token until EOS",
    options: {
      ...MODEL_OPTIONS,
      ids: { type: "string" },
      "encoder-ids": { type: "string" },
      prompt: { type: "string" },
      chat: { type: "boolean" },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string" },
      stats: { type: "boolean" },
      json: { type: "boolean" },
    },
    async run(v) {
      const maxTokens = intFlag(v["max-tokens"], "--max-tokens", 1, 32);
      const temperature = v.temperature === undefined ? 0 : Number(v.temperature);
      if (!Number.isFinite(temperature) || temperature < 0) {
        throw new ArgumentError("--temperature", `expected a number >= 0, got '${v.temperature}'`);
      }
      const topP = v["top-p"] === undefined ? 1 : Number(v["top-p"]);
      if (!(topP > 0 && topP <= 1)) {
        throw new ArgumentError("--top-p", `expected a number in (0, 1], got '${v["top-p"]}'`);
      }
      const seed = intFlag(v.seed, "--seed", 0, 0);
      const sampling = { maxTokens, temperature, topP, seed };
      if (v.prompt !== undefined) return await generateFromPrompt(v, sampling);
      if (v.chat) throw new ArgumentError("--chat", "applies to --prompt");
      const encoderIds = encoderIdsFlag(v);
      const ids = encoderIds && v.ids === undefined ? undefined : parseIds(v.ids);
      const model = await openModel(v);
      try {
        const out: number[] = [];
        const start = decoderStart(model, ids, encoderIds);
        const gen = model.generate(start.ids, { ...sampling, encoderIds, stopIds: start.stopIds });
        for await (const id of gen) {
          out.push(id);
          if (!v.json) await Deno.stdout.write(new TextEncoder().encode(`${id} `));
        }
        if (v.json) {
          console.log(JSON.stringify({ ids: out, stats: model.lastStats }));
        } else {
          console.log();
          if (v.stats) console.error(JSON.stringify(model.lastStats, null, 2));
        }
      } finally {
        await model.dispose();
      }
    },
  },
  tokenize: {
    usage: "tokenize --model DIR --text TEXT [--no-special-tokens] [--json]",
    summary: "print the token ids of a text, comma-separated as --ids takes them (--json: " +
      '{"ids": [...]}); special tokens (BOS) are added as generate --prompt adds them',
    options: {
      model: { type: "string" },
      text: { type: "string" },
      "no-special-tokens": { type: "boolean" },
      json: { type: "boolean" },
    },
    async run(v) {
      if (typeof v.text !== "string") throw new ArgumentError("--text", "is required");
      const tokenizer = await loadTokenizer(requireModel(v.model));
      const ids = tokenizer.encode(v.text, { addSpecialTokens: !v["no-special-tokens"] });
      console.log(v.json ? JSON.stringify({ ids }) : ids.join(","));
    },
  },
  eval: {
    usage: `eval --model DIR --text FILE [--context N] [--json] ${MODE_USAGE}`,
    summary: "perplexity over a text file: windows of --context tokens (default " +
      `${EVAL_CONTEXT}), each from an empty cache; with --mode pregated also the pre-gate hit rate`,
    options: { ...MODEL_OPTIONS, text: { type: "string" }, json: { type: "boolean" } },
    async run(v) {
      if (typeof v.text !== "string") throw new ArgumentError("--text", "is required: a text file");
      const context = intFlag(v.context, "--context", 2, EVAL_CONTEXT);
      const text = await readTextFile(v.text, "--text");
      const tokenizer = await loadTokenizer(requireModel(v.model));
      const model = await openModel({ ...v, context: String(context) });
      try {
        let shown = 0;
        const r = await evaluatePerplexity(model, tokenizer, text, {
          context,
          onWindow: v.json ? undefined : (done, total) => {
            if (done === total || done - shown >= Math.max(1, total / 10)) {
              shown = done;
              console.error(`eval: ${done}/${total} windows`);
            }
          },
        });
        console.log(
          v.json ? JSON.stringify(r) : Object.entries(r).map(([k, x]) => `${k}: ${x}`).join("\n"),
        );
      } finally {
        await model.dispose();
      }
    },
  },
  trace: {
    usage: "trace --model DIR (--ids LIST | --encoder-ids LIST) --out FILE.svg [--max-tokens N] " +
      "[--json FILE.json] " +
      "[--mode pregated|on-demand|prefetch-all] [--pregate exact|strict] [--budget SIZE] " +
      "[--expert-cache N|auto] [--gpu native|dawn|auto]",
    summary: "generate with an offloading mode and draw which experts were chosen, predicted, " +
      "cached and fetched per layer and token (SVG heat map + summary)",
    options: {
      ...MODEL_OPTIONS,
      ids: { type: "string" },
      "encoder-ids": { type: "string" },
      out: { type: "string" },
      json: { type: "string" },
      "max-tokens": { type: "string" },
    },
    async run(v) {
      const encoderIds = encoderIdsFlag(v);
      const ids = encoderIds && v.ids === undefined ? undefined : parseIds(v.ids);
      if (typeof v.out !== "string") throw new ArgumentError("--out", "is required: an .svg path");
      checkOutputFile(v.out, "--out");
      if (typeof v.json === "string") checkOutputFile(v.json, "--json");
      const maxTokens = intFlag(v["max-tokens"], "--max-tokens", 1, 32);
      const opts = { ...v, mode: v.mode ?? "pregated", json: undefined };
      if (parseMode(opts.mode) === "resident") {
        throw new ArgumentError(
          "--mode",
          "a trace needs an offloading mode (experts are not moved when resident)",
        );
      }
      const model = await openModel(opts, { trace: true });
      try {
        const start = decoderStart(model, ids, encoderIds);
        const gen = model.generate(start.ids, { maxTokens, encoderIds, stopIds: start.stopIds });
        for await (const _ of gen) { /* trace records as it goes */ }
        const trace = model.trace()!;
        await writeTextOutput(v.out, traceToSvg(trace));
        if (typeof v.json === "string") await writeTextOutput(v.json, JSON.stringify(trace));
        console.log(formatTraceSummary(summarizeTrace(trace)));
        console.log(`wrote ${v.out}${typeof v.json === "string" ? ` and ${v.json}` : ""}`);
      } finally {
        await model.dispose();
      }
    },
  },
  "make-model": {
    usage: "make-model --arch ARCH --out DIR [--preset NAME] [--dtype f32|f16|bf16] [--seed N] " +
      "[--force] [--hidden N] [--layers N] [--heads N] [--kv-heads N] [--head-dim N] [--inter N] " +
      "[--dense-inter N] [--shared-inter N] [--experts N] [--top-k N] [--vocab N] " +
      "[--type q8_0|q4_k|q4_k_m|...]",
    summary:
      "write a random-weight checkpoint in Hugging Face hub format (config.json + safetensors); " +
      "--type T also writes it as a GGUF file of convert's type T beside it (DIR-T.gguf)",
    options: {
      arch: { type: "string" },
      out: { type: "string" },
      preset: { type: "string" },
      dtype: { type: "string" },
      seed: { type: "string" },
      force: { type: "boolean" },
      json: { type: "boolean" },
      type: { type: "string" },
      ...Object.fromEntries(Object.keys(DIM_FLAGS).map((k) => [k, { type: "string" as const }])),
    },
    async run(v) {
      if (typeof v.arch !== "string") {
        throw new ArgumentError("--arch", "is required", `one of ${ARCH_LIST}`);
      }
      if (typeof v.out !== "string") throw new ArgumentError("--out", "is required: a directory");
      const overrides: Partial<Record<keyof ModelDims, number>> = {};
      for (const [flag, key] of Object.entries(DIM_FLAGS)) {
        if (v[flag] !== undefined) overrides[key] = intFlag(v[flag], `--${flag}`, 1, 0);
      }
      let last = -1;
      const arch = v.arch, out = v.out, seed = intFlag(v.seed, "--seed", 0, 0);
      const ggufType = v.type === undefined ? undefined : parseConvertType(v.type);
      // An interrupted run (Ctrl-C, kill) removes its half-written *.partial files.
      const made = await withSignalCleanup(() => removePartialFiles(out), () =>
        makeModel({
          arch,
          out,
          preset: v.preset as string | undefined,
          dtype: (v.dtype as string | undefined) ?? "f32",
          seed,
          force: Boolean(v.force),
          overrides: overrides as Partial<ModelDims>,
          onProgress: (done, total) => {
            const pct = total ? Math.floor((100 * done) / total) : 100;
            if (total > 256 << 20 && pct !== last && pct % 10 === 0) {
              last = pct;
              console.error(`writing: ${pct}% of ${(total / 2 ** 30).toFixed(2)} GiB`);
            }
          },
        }));
      const summary = {
        dir: made.dir,
        arch: made.arch,
        preset: made.preset,
        dtype: made.dtype,
        files: made.files.length,
        bytes: made.tensorBytes,
        seconds: Number(made.seconds.toFixed(2)),
        ...(ggufType ? await makeModelGguf(made.dir, ggufType) : {}),
      };
      console.log(
        v.json
          ? JSON.stringify(summary)
          : Object.entries(summary).map(([k, x]) =>
            `${k}: ${typeof x === "object" ? JSON.stringify(x) : x}`
          ).join("\n"),
      );
    },
  },
  inspect: {
    usage: "inspect --model DIR [--json] [--check]",
    summary: "architecture, parameter counts (dense vs experts), bytes per expert, dtypes; " +
      "--check reads every tensor and names those holding NaN or Inf (exit 1 if any)",
    options: { model: { type: "string" }, json: { type: "boolean" }, check: { type: "boolean" } },
    async run(v) {
      const report = await inspectModel(requireModel(v.model), { check: Boolean(v.check) });
      console.log(v.json ? JSON.stringify(report) : formatInspect(report));
      const bad = report.nonFinite ?? [];
      if (bad.length) {
        throw new NumericError(
          nonFiniteWarning(bad, 20)!,
          { hint: "the checkpoint is corrupt: download or convert it again" },
        );
      }
    },
  },
  serve: {
    usage: `serve --model DIR ${SERVE_USAGE} ${MODE_USAGE}`,
    summary: "answer the OpenAI API (POST /v1/chat/completions and /v1/completions, streamed or " +
      "not; GET /v1/models, /health, /metrics) with one model, one generation at a time",
    options: { ...MODEL_OPTIONS, ...SERVE_OPTIONS },
    run: (v) => serveCommand(v, () => openModel(v)),
  },
  convert: {
    usage: CONVERT_USAGE,
    summary: CONVERT_SUMMARY,
    options: CONVERT_OPTIONS,
    run: convertCommand,
  },
  "gpu-info": {
    usage: "gpu-info [--gpu native|dawn|auto] [--json]",
    summary: "open the GPU and print its implementation, adapter, features and limits",
    options: { ...GPU_OPTION, json: { type: "boolean" } },
    async run(v) {
      const gpu = await openGpu({ gpu: parseGpu(v.gpu), log: (m) => console.error(m) });
      const l = gpu.limits;
      const info = {
        impl: gpu.impl,
        adapter: gpu.adapterName,
        fallback: gpu.isFallback,
        features: gpu.features,
        limits: {
          maxBufferSize: l.maxBufferSize,
          maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
          maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
          maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
          maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
        },
      };
      console.log(
        v.json
          ? JSON.stringify(info)
          : gpu.describe() + "\n" + JSON.stringify(info.limits, null, 2),
      );
      gpu.destroy();
    },
  },
};

/** `--encoder-ids`, parsed, or undefined when not given. */
function encoderIdsFlag(v: Record<string, string | boolean | undefined>): number[] | undefined {
  return v["encoder-ids"] === undefined ? undefined : parseIds(v["encoder-ids"], "--encoder-ids");
}

/**
 * The decoder's first ids and stop ids: `ids` (--ids) as given, or, for an encoder-decoder read
 * from --encoder-ids, its decoder start token, stopping at its EOS ids.
 */
function decoderStart(model: Model, ids?: number[], encoderIds?: number[]) {
  const ed = encoderIds ? model.encoderDecoder : null;
  const first = ed?.decoderStartTokenId;
  const start = ids ?? (first === undefined || first === null ? undefined : [first]);
  if (!start) {
    throw new ArgumentError(
      "--ids",
      ed ? "the config names no decoder_start_token_id" : "is required",
    );
  }
  return { ids: start, stopIds: ed?.eosTokenIds };
}

/** `generate --prompt`: text streamed to stdout as it is decoded, until EOS or --max-tokens. */
async function generateFromPrompt(
  v: Record<string, string | boolean | undefined>,
  sampling: GenerateOptions,
): Promise<void> {
  if (v.ids !== undefined) throw new ArgumentError("--prompt", "give --prompt or --ids, not both");
  const tokenizer = await loadTokenizer(requireModel(v.model));
  // A missing or failing chat template is reported before the model loads.
  if (v.chat) renderChat(tokenizer, [{ role: "user", content: String(v.prompt) }]);
  const model = await openModel(v);
  try {
    const gen = generateText(model, tokenizer, String(v.prompt), {
      ...sampling,
      chat: Boolean(v.chat),
    });
    const utf8 = new TextEncoder();
    for await (const piece of gen) if (!v.json) await Deno.stdout.write(utf8.encode(piece));
    if (v.json) {
      console.log(JSON.stringify({
        text: gen.text,
        ids: gen.ids,
        stop_reason: gen.stopReason,
        stats: gen.stats,
      }));
    } else {
      console.log();
      if (v.stats) console.error(JSON.stringify(gen.stats, null, 2));
    }
  } finally {
    await model.dispose();
  }
}

async function readTextFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new ArgumentError(flag, `cannot read '${path}': ${(e as Error).message}`);
  }
}

const ARCH_LIST = ARCHITECTURES.join(", ");

function usage(): string {
  const lines = ["usage: pregate <command> [flags]", "", "commands:"];
  for (const c of Object.values(COMMANDS)) lines.push(`  ${c.usage}\n      ${c.summary}`);
  lines.push("", `--ids: ${IDS_HELP}.`);
  lines.push(`make-model presets: ${presetNames().join(", ")}`);
  return lines.join("\n");
}

/**
 * `--flag -1` as `--flag=-1` for string flags: parseArgs takes a value starting with `-` for an
 * option ("argument is ambiguous"); joined, the flag's own check says what is wrong with it.
 */
function joinNegativeValues(args: string[], options: Command["options"]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : "";
    const next = args[i + 1];
    if (options[name]?.type === "string" && next !== undefined && /^-\.?[0-9]/.test(next)) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else out.push(args[i]);
  }
  return out;
}

/** Runs the CLI on `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    console.log(usage());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`pregate: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: joinNegativeValues(rest, cmd.options),
      options: cmd.options,
      strict: true,
      allowPositionals: false,
    }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    console.error(`pregate ${name}: ${(e as Error).message}\nusage: pregate ${cmd.usage}`);
    return 2;
  }
  try {
    await cmd.run(values);
    return 0;
  } catch (e) {
    // The reader went away (`pregate generate ... | head`): stop quietly, as other tools do.
    if (e instanceof Deno.errors.BrokenPipe) return 0;
    if (e instanceof ArgumentError) {
      console.error(`pregate ${name}: ${e.message}\nusage: pregate ${cmd.usage}`);
      return 2;
    }
    if (e instanceof PregateError) {
      console.error(`pregate ${name}: ${e.name}: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
