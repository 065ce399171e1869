/**
 * The command line's shared flags: the {@linkcode Command} shape, the parsers of ids, sizes, integers
 * and modes, and the model flags every command that loads a model takes ({@linkcode openModel}).
 *
 * @example
 * ```ts
 * import { parseIds, parseSize } from "./flags.ts";
 * console.log(parseIds("5, 77,301"), parseSize("1.5GiB", "--budget")); // [ 5, 77, 301 ] 1610612736
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import type { GpuChoice } from "../base/gpu/device.ts";
import { loadModel, type LoadOptions, type Model } from "../model.ts";
import { EXPERT_MODES, type ExpertMode } from "../experts/engine.ts";

/** A command's parsed flags. */
export type Flags = Record<string, string | boolean | undefined>;

/** A CLI command: its usage line, its flags (node:util parseArgs options) and its body. */
export interface Command {
  usage: string;
  summary: string;
  options: Record<string, { type: "string" | "boolean"; short?: string; default?: string }>;
  run(values: Flags): Promise<void>;
}

/** `--gpu`, for the commands that open a GPU. */
export const GPU_OPTION = { gpu: { type: "string" as const, default: "native" } };

/** Parses `--gpu`. */
export function parseGpu(v: unknown): GpuChoice {
  if (v === "native" || v === "dawn" || v === "auto") return v;
  throw new ArgumentError("--gpu", `expected native, dawn or auto, got '${v}'`);
}

/** How token ids are written on the command line. */
export const IDS_HELP = "token ids are decimal integers separated by commas, e.g. 5,77,301";

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

/** An integer flag >= `min`, or `fallback` when absent. */
export function intFlag(v: unknown, flag: string, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new ArgumentError(flag, `expected an integer >= ${min}, got '${v}'`);
  }
  return n;
}

/** `--model`, required. */
export function requireModel(v: unknown): string {
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

/** Parses `--mode` (default resident). */
export function parseMode(v: unknown): ExpertMode {
  const mode = (v ?? "resident") as ExpertMode;
  if (!EXPERT_MODES.includes(mode)) {
    throw new ArgumentError("--mode", `expected ${EXPERT_MODES.join(", ")}, got '${v}'`);
  }
  return mode;
}

/** The load options the model flags set (mode, pre-gate, budget, cache, uploader, activations). */
function modelOptions(v: Flags) {
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
  if (uploader !== undefined && !["auto", "write", "mapped", "pinned"].includes(String(uploader))) {
    throw new ArgumentError(
      "--uploader",
      `expected auto, write, mapped or pinned, got '${uploader}'`,
    );
  }
  if (uploader === "pinned" && mode === "resident") {
    throw new ArgumentError("--uploader", "pinned applies to the offloading modes");
  }
  const activations = v.activations;
  if (activations !== undefined && activations !== "f32" && activations !== "llama.cpp") {
    throw new ArgumentError("--activations", `expected f32 or llama.cpp, got '${activations}'`);
  }
  return {
    mode,
    activations: activations as "f32" | "llama.cpp" | undefined,
    uploader: uploader as LoadOptions["uploader"],
    cachePolicy: policy as "lru" | "lfu" | undefined,
    pregate: v.pregate as "exact" | "strict" | undefined,
    budget: v.budget === undefined ? undefined : parseSize(v.budget, "--budget"),
    expertCache: cache === undefined || cache === "auto"
      ? (cache as "auto" | undefined)
      : intFlag(cache, "--expert-cache", 0, 0),
  };
}

/** Loads `--model` with the model flags, reporting progress on stderr unless `--json`. */
export async function openModel(
  v: Flags,
  extra: Pick<LoadOptions, "trace" | "prefillChunk"> = {},
): Promise<Model> {
  const quiet = Boolean(v.json);
  let lastKey = "";
  const encoder = encoderIdsFlag(v)?.length ?? 0; // room for it, at least the default 512 tokens
  return await loadModel(requireModel(v.model), {
    ...modelOptions(v),
    ...extra,
    maxEncoderTokens: encoder > 512 ? encoder : undefined,
    gpu: parseGpu(v.gpu),
    contextLength: v.context === undefined ? undefined : intFlag(v.context, "--context", 1, 0),
    log: (m) => console.error(m),
    onProgress: quiet ? undefined : (done, total, what) => {
      const pct = total ? Math.floor((100 * done) / total) : 100;
      const key = `${what} ${pct}`;
      if (key !== lastKey && (pct % 10 === 0 || done === total) && total > 64 << 20) {
        lastKey = key;
        console.error(`loading ${what}: ${pct}% of ${(total / 2 ** 30).toFixed(2)} GiB`);
      }
    },
  });
}

/** The flags of every command that loads a model. */
export const MODEL_OPTIONS = {
  ...GPU_OPTION,
  model: { type: "string" as const },
  context: { type: "string" as const },
  mode: { type: "string" as const },
  pregate: { type: "string" as const },
  budget: { type: "string" as const },
  "expert-cache": { type: "string" as const },
  "cache-policy": { type: "string" as const },
  uploader: { type: "string" as const },
  activations: { type: "string" as const },
};

/** The usage of those flags. */
export const MODE_USAGE =
  "[--mode resident|on-demand|prefetch-all|pregated] [--pregate exact|strict] " +
  "[--budget SIZE] [--expert-cache N|auto] [--cache-policy lru|lfu] [--uploader auto|write|mapped|pinned] " +
  "[--context N] [--activations f32|llama.cpp] " +
  "[--gpu native|dawn|auto]";

/** `--encoder-ids`, parsed, or undefined when not given. */
export function encoderIdsFlag(v: Flags): number[] | undefined {
  return v["encoder-ids"] === undefined ? undefined : parseIds(v["encoder-ids"], "--encoder-ids");
}

/**
 * The decoder's first ids and stop ids: `ids` (--ids) as given, or, for an encoder-decoder read
 * from --encoder-ids, its decoder start token, stopping at its EOS ids.
 */
export function decoderStart(
  model: Model,
  ids?: number[],
  encoderIds?: number[],
): { ids: number[]; stopIds: readonly number[] | undefined } {
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

/** The text of the file a flag names; an unreadable file is an ArgumentError naming the flag. */
export async function readTextFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new ArgumentError(flag, `cannot read '${path}': ${(e as Error).message}`);
  }
}
