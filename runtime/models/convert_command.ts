/**
 * `pregate convert`: a checkpoint directory written as a GGUF file llama.cpp loads (see
 * `gguf_convert.ts`). Its flags, usage line and body, for `cli.ts`.
 *
 * @example
 * ```sh
 * deno task pregate convert --model models/demo --out /tmp/demo-q4_k.gguf --type q4_k
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { checkOutputFile } from "../output_files.ts";
import { CONVERT_TYPES, convertToGguf, type ConvertType } from "./gguf_convert.ts";

/** The flags of `convert` (node:util parseArgs options). */
export const CONVERT_OPTIONS = {
  model: { type: "string" as const },
  out: { type: "string" as const },
  type: { type: "string" as const },
  pregates: { type: "boolean" as const },
  "no-vocab": { type: "boolean" as const },
  threads: { type: "string" as const },
  json: { type: "boolean" as const },
};

/** The usage line of `convert`. */
export const CONVERT_USAGE = "convert --model DIR --out FILE.gguf " +
  "--type f16|bf16|q8_0|q4_k|q4_k_m|... [--pregates] [--no-vocab] [--threads N] [--json]";

/** What `convert` does, for the command list. */
export const CONVERT_SUMMARY = "write a checkpoint directory as a GGUF file llama.cpp loads " +
  "(metadata, vocabulary from tokenizer.json, llama.cpp's tensor names, experts stacked; " +
  "routers and vectors F32; rows that are not whole blocks fall back q4_k -> q8_0 -> f16; " +
  "q4_k_m: llama-quantize's Q4_K_M mix of Q4_K, Q5_K, Q6_K, Q5_0 and Q8_0); " +
  "--pregates adds Pregate's trained pre-gates (llama.cpp then refuses the file)";

/**
 * Parses a `--type` flag of `convert` (or `make-model`): a weight type or `q4_k_m`.
 *
 * @throws {ArgumentError} naming `argument` for anything else.
 */
export function parseConvertType(value: unknown, argument = "--type"): ConvertType {
  const type = String(value).toLowerCase() as ConvertType;
  if (!CONVERT_TYPES.includes(type)) {
    throw new ArgumentError(
      argument,
      `unsupported type '${value}'`,
      `use one of ${CONVERT_TYPES.join(", ")}`,
    );
  }
  return type;
}

/** The GGUF file `make-model --type T` writes beside checkpoint directory `dir`: `dir-T.gguf`. */
export function ggufBeside(dir: string, type: ConvertType): string {
  return `${dir.replace(/\/+$/, "")}-${type}.gguf`;
}

/**
 * `make-model --type T`: writes the checkpoint directory `dir` just made as a GGUF file of `type`
 * beside it ({@linkcode ggufBeside}), for benchmarks of quantised models. Returns what was written.
 */
export async function makeModelGguf(
  dir: string,
  type: ConvertType,
): Promise<{ gguf: string; ggufBytes: number; ggufTensors: Record<string, number> }> {
  const r = await convertToGguf({
    model: dir,
    out: ggufBeside(dir, type),
    type,
    log: (m) => console.error(m),
  });
  return { gguf: r.path, ggufBytes: r.bytes, ggufTensors: r.types };
}

/** Runs `convert` with parsed flags `v`. */
export async function convertCommand(
  v: Record<string, string | boolean | undefined>,
): Promise<void> {
  if (typeof v.model !== "string" || !v.model) {
    throw new ArgumentError(
      "--model",
      "is required: a checkpoint directory (config.json, safetensors)",
    );
  }
  if (typeof v.out !== "string" || !v.out) {
    throw new ArgumentError("--out", "is required: a .gguf path");
  }
  if (typeof v.type !== "string") {
    throw new ArgumentError("--type", "is required", `one of ${CONVERT_TYPES.join(", ")}`);
  }
  const type = parseConvertType(v.type);
  const threads = v.threads === undefined ? undefined : Number(v.threads);
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
    throw new ArgumentError("--threads", `expected an integer >= 1, got '${v.threads}'`);
  }
  checkOutputFile(v.out, "--out");
  const t0 = performance.now();
  let shown = 0;
  const r = await convertToGguf({
    model: v.model,
    out: v.out,
    type,
    pregates: Boolean(v.pregates),
    noVocab: Boolean(v["no-vocab"]),
    threads,
    log: (m) => console.error(m),
    onProgress: v.json ? undefined : (done, total) => {
      if (done === total || done - shown >= total / 10) {
        shown = done;
        console.error(`convert: ${done}/${total} tensors`);
      }
    },
  });
  const summary = {
    out: r.path,
    type,
    bytes: r.bytes,
    tensors: r.types,
    vocab: r.vocab,
    seconds: Number(((performance.now() - t0) / 1e3).toFixed(2)),
  };
  console.log(
    v.json
      ? JSON.stringify(summary)
      : Object.entries(summary).map(([k, x]) =>
        `${k}: ${typeof x === "object" ? JSON.stringify(x) : x}`
      ).join("\n"),
  );
}
