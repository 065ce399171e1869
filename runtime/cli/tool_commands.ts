/**
 * The commands that run no model: `tokenize`, `make-model`, `inspect` and `gpu-info`. `cli.ts` lists
 * them.
 *
 * @example
 * ```sh
 * deno task pregate inspect --model tests/fixtures/hf/mixtral
 * ```
 * @module
 */
import { makeModelGguf, parseConvertType } from "../models/convert_command.ts";
import { ArgumentError, NumericError } from "../base/errors.ts";
import { openGpu } from "../base/gpu/device.ts";
import { makeModel, type ModelDims, removePartialFiles } from "../models/make_model.ts";
import { formatInspect, inspectModel, nonFiniteWarning } from "../models/inspect.ts";
import { ARCHITECTURES } from "../models/arch/mod.ts";
import { withSignalCleanup } from "../interrupt.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { type Command, GPU_OPTION, intFlag, parseGpu, requireModel } from "./flags.ts";

const ARCH_LIST = ARCHITECTURES.join(", ");

/** `tokenize`: the token ids of a text. */
export const TOKENIZE: Command = {
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
};

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

/** `make-model`: a random-weight checkpoint in Hugging Face hub format. */
export const MAKE_MODEL: Command = {
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
};

/** `inspect`: architecture, parameter counts, dtypes; `--check` scans for NaN/Inf. */
export const INSPECT: Command = {
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
};

/** `gpu-info`: the GPU's implementation, adapter, features and limits. */
export const GPU_INFO: Command = {
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
      v.json ? JSON.stringify(info) : gpu.describe() + "\n" + JSON.stringify(info.limits, null, 2),
    );
    gpu.destroy();
  },
};
