/**
 * Random-weight checkpoints in Hugging Face hub format, for tests and benchmarks: a `config.json`
 * exactly as transformers 5.17's `save_pretrained` writes it for the model type (or, for presets
 * that ask for it, in the older 4.x form with a top-level `rope_theta` and `torch_dtype`), a
 * `generation_config.json`, and safetensors weights (one `model.safetensors`, or shards and an index
 * when larger than `maxShardBytes`) holding exactly the tensors Hugging Face would save (names from
 * `names.ts`, see {@linkcode expectedTensors}).
 *
 * Weights are random normal with scales chosen so a forward pass gives O(1) logits and routing that
 * spreads over the experts in every layer: matrices std `1/sqrt(fan_in)`; routers std
 * `2/sqrt(hidden)`; untied embeddings N(0, 1), tied ones std `1/sqrt(hidden)` (they are the LM
 * head too); the o and down projections, which write into the residual stream, additionally scaled
 * by the embedding's std and `1/sqrt(2 layers)` (see `initOf`); norm weights `1 + 0.1 N(0, 1)`;
 * biases `0.1 N(0, 1)`. They are deterministic from the seed: every tensor has its own
 * counter-based random stream keyed by the seed and its name, so a tensor's values do not depend on
 * the other tensors (a preset shrunk with `overrides.layers` holds exactly the full model's first
 * layers) and the three dtypes hold the same samples, rounded.
 * Each random 32-bit word picks two samples from a 65536-entry table of normal quantiles already
 * encoded in the output dtype, and the next chunk is generated while the previous one is being
 * written, so multi-GB checkpoints are written at disk speed.
 *
 * This module writes the files; the parts live beside it: presets.ts (named model shapes),
 * plan_model.ts (options, validation, tensors and their initialisation), hf_config.ts (config.json
 * and generation_config.json text) and random_weights.ts (the samples). What callers use of them is
 * re-exported here.
 *
 * @example
 * ```ts ignore
 * import { makeModel } from "./make_model.ts";
 * const made = await makeModel({ arch: "qwen3_moe", out: "/tmp/tiny-qwen3", force: true });
 * console.log(made.config.layers.map((l) => l.ffn.kind)); // ["moe", "dense", "moe"]
 * const big = await makeModel({
 *   preset: "mixtral-8x7b", out: "/tmp/mixtral-2l", dtype: "bf16", force: true,
 *   overrides: { layers: 2 }, onProgress: (done, total) => console.log(done / total),
 * });
 * console.log(big.files.length, big.tensorBytes); // 4 shards, 6.3 GB
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { asWriteError, writeTextOutput } from "../output_files.ts";
import { INDEX_FILE_NAME } from "../weights/safetensors.ts";
import { type TensorToWrite, writeShardedCheckpoint } from "../weights/safetensors_writer.ts";
import { type MakeModelOptions, type ModelPlan, planModel } from "./plan_model.ts";
import { Producer } from "./random_weights.ts";

export {
  type ConfigStyle,
  type ModelDims,
  type Preset,
  presetKey,
  presetNames,
  PRESETS,
} from "./presets.ts";
export {
  type MakeModelOptions,
  type ModelPlan,
  planModel,
  type PlannedTensor,
} from "./plan_model.ts";
export { tensorValues } from "./random_weights.ts";

/**
 * What {@linkcode makeModel} wrote.
 *
 * @example
 * ```ts
 * import { makeModel } from "./make_model.ts";
 * const m = await makeModel({ arch: "olmoe", out: "/tmp/olmoe-tiny", force: true });
 * console.log(m.files, m.index, m.tensors.length); // ["/tmp/olmoe-tiny/model.safetensors"] null 69
 * ```
 */
export interface MadeModel extends ModelPlan {
  /** The output directory. */
  dir: string;
  /** The safetensors files written. */
  files: string[];
  /** The index, or `null` for a single file. */
  index: string | null;
  /** Bytes of tensor data written (= `totalBytes`). */
  tensorBytes: number;
  /** Wall-clock seconds spent writing. */
  seconds: number;
}

function isCheckpointFile(name: string): boolean {
  return name === "config.json" || name === "generation_config.json" ||
    name === INDEX_FILE_NAME || name === `${INDEX_FILE_NAME}.partial` ||
    name.endsWith(".safetensors") || name.endsWith(".safetensors.partial");
}

/**
 * Removes the half-written `*.partial` checkpoint files in `dir` (what an interrupted
 * {@linkcode makeModel} leaves behind); missing files and a missing directory are fine.
 *
 * @example
 * ```ts
 * import { removePartialFiles } from "./make_model.ts";
 * removePartialFiles("/tmp/no-such-dir"); // nothing to do
 * ```
 */
export function removePartialFiles(dir: string): void {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return;
  }
  for (const e of entries) {
    if (e.isFile && e.name.endsWith(".partial") && isCheckpointFile(e.name)) {
      try {
        Deno.removeSync(`${dir}/${e.name}`);
      } catch { /* already gone */ }
    }
  }
}

/**
 * Whether a directory's entries are what an interrupted make-model leaves: only checkpoint files,
 * at least one of them `.partial`, and no `config.json` (written last, so a finished checkpoint
 * always has it). Such a directory is replaced without `force`.
 */
function interrupted(entries: readonly string[]): boolean {
  return entries.every(isCheckpointFile) && !entries.includes("config.json") &&
    entries.some((n) => n.endsWith(".partial"));
}

async function prepareDir(out: string, force: boolean): Promise<void> {
  if (typeof out !== "string" || out === "") {
    throw new ArgumentError("out", "an output directory is required");
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(out);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      try {
        await Deno.mkdir(out, { recursive: true });
      } catch (e) {
        throw asWriteError(e, out);
      }
      return;
    }
    throw new ArgumentError("out", `cannot use ${out}: ${(e as Error).message}`);
  }
  if (!info.isDirectory) {
    throw new ArgumentError(
      "out",
      `${out} exists and is not a directory`,
      "choose a directory path",
    );
  }
  const entries: string[] = [];
  for await (const e of Deno.readDir(out)) entries.push(e.name);
  if (entries.length === 0) return;
  if (!force && !interrupted(entries)) {
    entries.sort();
    throw new ArgumentError(
      "out",
      `directory ${out} is not empty (${entries.length} entries: ${entries.slice(0, 4).join(", ")}${
        entries.length > 4 ? ", ..." : ""
      })`,
      "choose a new directory, or pass force (--force) to overwrite the checkpoint files in it",
    );
  }
  for (const name of entries) {
    if (isCheckpointFile(name)) await Deno.remove(`${out}/${name}`);
  }
}

/**
 * Writes a random-weight checkpoint (see the module documentation) to `opts.out`: the safetensors
 * weights first (sharded when larger than `maxShardBytes`, default 2e9), then
 * `generation_config.json`, then `config.json` last, so an interrupted run never leaves a directory
 * that looks complete. The output is a deterministic function of the options (same seed, same
 * bytes).
 *
 * A directory left by an interrupted run (checkpoint files, one of them `*.partial`, no
 * `config.json`) is recognised and replaced without `force`.
 *
 * @throws {ArgumentError} for an unknown architecture or preset (listing the valid ones), a preset of
 *   another architecture, bad dimensions (heads not dividing hidden, topK > experts, odd sizes with a
 *   16-bit dtype, ...), or an output directory that exists and is not empty (unless `force`).
 * @throws {FileWriteError} naming the file when the file system refuses a write (a read-only
 *   directory or file system, a full disk).
 *
 * @example
 * ```ts
 * import { makeModel } from "./make_model.ts";
 * import { openCheckpoint } from "../weights/safetensors.ts";
 * const m = await makeModel({ arch: "mixtral", out: "/tmp/tiny-mixtral", seed: 1, force: true });
 * const ckpt = openCheckpoint(m.dir);
 * console.log(ckpt.get("model.layers.0.block_sparse_moe.experts.7.w2.weight").shape); // [64, 96]
 * ckpt.close();
 * ```
 */
export async function makeModel(opts: MakeModelOptions): Promise<MadeModel> {
  const plan = planModel(opts);
  const maxShardBytes = opts.maxShardBytes ?? 2e9;
  if (!Number.isSafeInteger(maxShardBytes) || maxShardBytes <= 0) {
    throw new ArgumentError("maxShardBytes", `expected a positive integer, found ${maxShardBytes}`);
  }
  await prepareDir(opts.out, opts.force ?? false);
  const dir = opts.out;
  const producer = new Producer(plan, opts.onProgress);
  const t0 = performance.now();
  let written;
  try {
    const tensors: TensorToWrite[] = plan.tensors.map((t, i) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      data: producer.source(i),
    }));
    written = await writeShardedCheckpoint(dir, tensors, {
      maxShardBytes,
      metadata: { format: "pt" },
    });
  } finally {
    producer.close();
  }
  await writeTextOutput(`${dir}/generation_config.json`, plan.generationConfigText);
  await writeTextOutput(`${dir}/config.json`, plan.configText);
  const seconds = (performance.now() - t0) / 1000;
  opts.onProgress?.(plan.totalBytes, plan.totalBytes);
  return {
    ...plan,
    dir,
    files: written.files,
    index: written.index,
    tensorBytes: written.totalSize,
    seconds,
  };
}
