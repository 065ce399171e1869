/**
 * Checkpoint inspection: what a Hugging Face MoE checkpoint holds, checked against what its
 * `config.json` says it must hold.
 *
 * {@linkcode inspectModel} opens a checkpoint directory (headers only, no weight data is read),
 * validates that every expected tensor is present with the expected shape and a supported dtype (a
 * {@linkcode WeightFileError} naming the tensor otherwise), and reports parameter counts (total,
 * dense, routed experts, active per token), the bytes of one expert, a dtype histogram, the files
 * and their sizes, and warnings (e.g. tensors the model does not use). {@linkcode formatInspect}
 * renders the report as text. The list of tensors a configuration needs ({@linkcode expectedTensors},
 * names.ts) and their parameter counts ({@linkcode countParams}, param_counts.ts) are re-exported.
 *
 * @example
 * ```ts
 * import { formatInspect, inspectModel } from "./inspect.ts";
 * const report = await inspectModel("tests/fixtures/hf/mixtral");
 * console.log(report.params.total, report.layers); // 440256 ["moe", "moe", "moe"]
 * console.log(formatInspect(report));
 * ```
 * @module
 */
import { WeightFileError } from "../base/errors.ts";
import { type DType, DTYPE_BYTES } from "../base/dtype.ts";
import { type NonFiniteTensor, scanNonFinite } from "../weights/finite.ts";
import { INDEX_FILE_NAME } from "../weights/safetensors.ts";
import type { ModelConfig } from "./config.ts";
import { loadModelConfig, openModelStore } from "./gguf_model.ts";
import { type ExpectedTensor, expectedTensors, pregateNames } from "./names.ts";
import { countParams, type ParamCounts } from "./param_counts.ts";

export { type ExpectedTensor, expectedTensors, type Projection, type TensorRole } from "./names.ts";
export { countParams, type ParamCounts } from "./param_counts.ts";

/**
 * The configuration at a glance (from the parsed {@linkcode ModelConfig}).
 *
 * @example
 * ```ts
 * import { inspectModel } from "./inspect.ts";
 * const r = await inspectModel("tests/fixtures/hf/qwen3_moe");
 * console.log(r.config.headDim, r.config.tieEmbeddings); // 32 true
 * ```
 */
export interface ConfigSummary {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
  /** Routed experts per MoE layer (0 without MoE layers). */
  experts: number;
  /** Experts chosen per token (0 without MoE layers). */
  topK: number;
  /** Intermediate size of one routed expert (0 without MoE layers). */
  expertInter: number;
  /** Intermediate size of the dense MLP layers (0 when every layer is MoE). */
  denseInter: number;
  /** Intermediate size of the shared expert (0 when absent). */
  sharedInter: number;
  /** Whether the chosen experts' weights are renormalised to sum to 1. */
  renormalize: boolean;
  tieEmbeddings: boolean;
  ropeTheta: number;
  rmsEps: number;
  qkvBias: boolean;
  qkNorm: ModelConfig["qkNorm"];
  clipQkv: number;
  maxPositions: number;
}

/**
 * A file of the checkpoint and its size.
 *
 * @example
 * ```ts
 * import type { CheckpointFile } from "./inspect.ts";
 * const f: CheckpointFile = { name: "config.json", path: "m/config.json", bytes: 800 };
 * console.log(f.bytes);
 * ```
 */
export interface CheckpointFile {
  /** The file name within the directory. */
  name: string;
  /** Its path. */
  path: string;
  /** Its size in bytes. */
  bytes: number;
}

/**
 * Tensors, parameters and bytes stored in one dtype.
 *
 * @example
 * ```ts
 * import type { DTypeCount } from "./inspect.ts";
 * const d: DTypeCount = { tensors: 3, params: 96, bytes: 192 };
 * console.log(d.bytes / d.params); // 2
 * ```
 */
export interface DTypeCount {
  tensors: number;
  params: number;
  bytes: number;
}

/**
 * The bytes of the routed experts as stored.
 *
 * @example
 * ```ts
 * import { inspectModel } from "./inspect.ts";
 * const r = await inspectModel("tests/fixtures/hf/olmoe");
 * console.log(r.expertBytes?.perExpert, r.expertBytes?.dtype); // 61440 F32
 * ```
 */
export interface ExpertBytes {
  /** Bytes of one expert (gate + up + down) of the first MoE layer, as stored. */
  perExpert: number;
  /** The stored dtype of the experts (`F32`, `BF16`, ...), or `mixed`. */
  dtype: string;
  /** What one expert would take in each compute dtype. */
  byDType: Record<DType, number>;
  /** Bytes of all routed experts of all layers, as stored. */
  total: number;
  /** Number of routed experts in the whole model (experts x MoE layers). */
  count: number;
}

/**
 * What {@linkcode inspectModel} found.
 *
 * @example
 * ```ts
 * import { inspectModel } from "./inspect.ts";
 * const r = await inspectModel("tests/fixtures/hf/qwen2_moe");
 * console.log(r.arch, r.layers, r.tensors, r.warnings); // qwen2_moe ["dense","moe","dense","moe"] 103 []
 * ```
 */
export interface InspectReport {
  /** The checkpoint directory. */
  dir: string;
  /** The architecture (a registered name, see `ARCHITECTURES`). */
  arch: string;
  /** The parsed configuration. */
  config: ConfigSummary;
  /** The kind of each decoder layer's feed-forward block. */
  layers: ("dense" | "moe")[];
  /** Parameter counts (from the config; the tensors were checked to match). */
  params: ParamCounts;
  /** Routed expert sizes as stored, or `null` without MoE layers. */
  expertBytes: ExpertBytes | null;
  /** Stored dtype (`F32`, `BF16`, ...) -> tensors, parameters and bytes, over all stored tensors. */
  dtypes: Record<string, DTypeCount>;
  /** config.json, generation_config.json, the index and the safetensors files that exist. */
  files: CheckpointFile[];
  /** The sum of the sizes of {@linkcode InspectReport.files}. */
  checkpointBytes: number;
  /** Bytes of tensor data over all stored tensors. */
  tensorBytes: number;
  /** Number of tensors stored in the safetensors files. */
  tensors: number;
  /** Number of tensors the model needs. */
  expectedTensors: number;
  /** Tensors stored but not used by the model. */
  unusedTensors: string[];
  /** Human-readable warnings (unused tensors, mixed dtypes, NaN/Inf values, ...). */
  warnings: string[];
  /** With `check`: the tensors holding NaN or Inf values (empty when all are finite). */
  nonFinite?: NonFiniteTensor[];
}

/** Options of {@linkcode inspectModel}. */
export interface InspectOptions {
  /** How many unused tensor names to list in the warning (default 5; all are in `unusedTensors`). */
  maxListed?: number;
  /**
   * Also read every tensor and report those holding NaN or Inf values (`nonFinite`, and a warning
   * naming them). Reads all the weights: as slow as the disk for a large checkpoint.
   */
  check?: boolean;
}

/**
 * The tensors of a checkpoint (`names`) that the model of `cfg` does not use (its optional trained
 * pre-gates, {@linkcode pregateNames}, count as used).
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * import { unusedTensors } from "./inspect.ts";
 * const cfg = await loadConfig("tests/fixtures/hf/mixtral");
 * console.log(unusedTensors(cfg, ["lm_head.weight", "extra.bias"])); // ["extra.bias"]
 * ```
 */
export function unusedTensors(cfg: ModelConfig, names: readonly string[]): string[] {
  const wanted = new Set([...expectedTensors(cfg).map((t) => t.name), ...pregateNames(cfg)]);
  return names.filter((n) => !wanted.has(n));
}

/**
 * The warning about unused tensors (listing up to `maxListed` names), or `null` when none. Both
 * `inspect` and loading a model give it.
 *
 * @example
 * ```ts
 * import { unusedTensorsWarning } from "./inspect.ts";
 * console.log(unusedTensorsWarning(["a.weight"])); // 1 tensor(s) in the checkpoint are not used ...
 * ```
 */
export function unusedTensorsWarning(unused: readonly string[], maxListed = 5): string | null {
  if (unused.length === 0) return null;
  return `${unused.length} tensor(s) in the checkpoint are not used by the model and will be ` +
    `ignored: ${unused.slice(0, maxListed).join(", ")}${unused.length > maxListed ? ", ..." : ""}`;
}

/**
 * The warning naming the tensors that hold NaN or Inf values (up to `maxListed`), or `null`.
 *
 * @example
 * ```ts
 * import { nonFiniteWarning } from "./inspect.ts";
 * console.log(nonFiniteWarning([
 *   { tensor: "lm_head.weight", file: "m", dtype: "f32", nan: 1, inf: 0, firstIndex: 5 },
 * ])); // 1 tensor(s) hold NaN or Inf values: lm_head.weight (1 NaN, 0 Inf; first at element 5)
 * ```
 */
export function nonFiniteWarning(bad: readonly NonFiniteTensor[], maxListed = 5): string | null {
  if (bad.length === 0) return null;
  const list = bad.slice(0, maxListed).map((t) =>
    `${t.tensor} (${t.nan} NaN, ${t.inf} Inf; first at element ${t.firstIndex})`
  );
  return `${bad.length} tensor(s) hold NaN or Inf values: ${list.join(", ")}${
    bad.length > maxListed ? ", ..." : ""
  }`;
}

function shapeText(s: readonly number[]): string {
  return `[${s.join(", ")}]`;
}

function summarize(cfg: ModelConfig): ConfigSummary {
  const moe = cfg.layers.find((l) => l.ffn.kind === "moe")?.ffn;
  const dense = cfg.layers.find((l) => l.ffn.kind === "dense")?.ffn;
  return {
    hidden: cfg.hidden,
    layers: cfg.layers.length,
    heads: cfg.heads,
    kvHeads: cfg.kvHeads,
    headDim: cfg.headDim,
    vocabSize: cfg.vocabSize,
    experts: moe?.kind === "moe" ? moe.experts : 0,
    topK: moe?.kind === "moe" ? moe.topK : 0,
    expertInter: moe?.inter ?? 0,
    denseInter: dense?.inter ?? 0,
    sharedInter: moe?.kind === "moe" ? moe.sharedInter : 0,
    renormalize: moe?.kind === "moe" ? moe.renormalize : false,
    tieEmbeddings: cfg.tieEmbeddings,
    ropeTheta: cfg.ropeTheta,
    rmsEps: cfg.rmsEps,
    qkvBias: cfg.qkvBias,
    qkNorm: cfg.qkNorm,
    clipQkv: cfg.clipQkv,
    maxPositions: cfg.maxPositions,
  };
}

function sizeOf(path: string): number | null {
  try {
    const st = Deno.statSync(path);
    return st.isFile ? st.size : null;
  } catch {
    return null;
  }
}

/**
 * Inspects a checkpoint directory: parses `config.json`, opens the safetensors files (headers only:
 * read mode, no FFI needed, no weight data read), checks that every tensor the model needs (see
 * {@linkcode expectedTensors}) exists with the expected shape and an F32/F16/BF16 dtype, and reports
 * what it found. Tensors the model does not use are listed in `unusedTensors` and warned about.
 *
 * @throws {ConfigError} when config.json is missing, unreadable or unsupported.
 * @throws {WeightFileError} naming the tensor when a tensor is missing (the message counts and lists
 *   the missing ones), has the wrong shape (expected vs found) or an unsupported dtype, or when the
 *   safetensors files are malformed.
 *
 * @example
 * ```ts
 * import { inspectModel } from "./inspect.ts";
 * const r = await inspectModel("tests/fixtures/hf/mixtral");
 * console.log(r.params.experts, r.params.activePerToken, r.checkpointBytes); // 368640 163776 1773058
 * ```
 */
export async function inspectModel(dir: string, opts: InspectOptions = {}): Promise<InspectReport> {
  const cfg = await loadModelConfig(dir);
  const store = openModelStore(dir, cfg, { mode: "read" });
  try {
    const label = store.files.length > 1 || sizeOf(`${dir}/${INDEX_FILE_NAME}`) !== null
      ? `${dir}/${INDEX_FILE_NAME}`
      : store.files[0];
    const expected = expectedTensors(cfg);
    let expertDType: string | null = null;
    let perExpert = 0;
    let expertTotal = 0;
    const expertCount = cfg.layers.reduce(
      (a, l) => a + (l.ffn.kind === "moe" ? l.ffn.experts : 0),
      0,
    );
    const firstMoe = cfg.layers.findIndex((l) => l.ffn.kind === "moe");
    // Wrong shapes are reported before missing tensors: with a config that does not match the
    // weights (say, another expert count) the first wrong shape says more than a missing expert.
    const missing: ExpectedTensor[] = [];
    for (const t of expected) {
      if (!store.has(t.name)) {
        missing.push(t);
        continue;
      }
      const e = store.describe(t.name);
      if (e.shape.length !== t.shape.length || e.shape.some((d, i) => d !== t.shape[i])) {
        throw new WeightFileError(
          e.file,
          `wrong shape: the model needs ${shapeText(t.shape)} (${t.role}${
            t.layer === null ? "" : ` of layer ${t.layer}`
          }), the file has ${shapeText(e.shape)}`,
          { tensor: t.name, hint: "config.json does not match the weights" },
        );
      }
      if (e.dtype === null) {
        throw new WeightFileError(
          e.file,
          `unsupported dtype ${e.fileDType} (supported: F32, F16, BF16)`,
          { tensor: t.name, hint: "convert the checkpoint's weights to F32, F16 or BF16" },
        );
      }
      if (t.role === "expert") {
        expertTotal += e.byteLength;
        expertDType = expertDType === null || expertDType === e.fileDType ? e.fileDType : "mixed";
        if (t.layer === firstMoe && t.expert === 0) perExpert += e.byteLength;
      }
    }
    if (missing.length > 0) {
      const list = missing.slice(0, 5).map((t) => t.name).join(", ");
      throw new WeightFileError(
        label,
        `missing: the model needs ${expected.length} tensors and ${missing.length} of them ` +
          `${missing.length === 1 ? "is" : "are"} not in the checkpoint (${list}${
            missing.length > 5 ? ", ..." : ""
          }); expected shape ${shapeText(missing[0].shape)}`,
        {
          tensor: missing[0].name,
          hint: "the checkpoint is incomplete, or config.json belongs to a different model",
        },
      );
    }
    const wanted = new Set([...expected.map((t) => t.name), ...pregateNames(cfg)]);
    const dtypes: Record<string, DTypeCount> = {};
    let tensorBytes = 0;
    const unused: string[] = [];
    const names = store.names();
    for (const name of names) {
      const e = store.describe(name);
      const d = (dtypes[e.fileDType] ??= { tensors: 0, params: 0, bytes: 0 });
      d.tensors++;
      d.params += e.elements;
      d.bytes += e.byteLength;
      tensorBytes += e.byteLength;
      if (!wanted.has(name)) unused.push(name);
    }
    const warnings: string[] = [];
    const unusedWarning = unusedTensorsWarning(unused, opts.maxListed);
    if (unusedWarning) warnings.push(unusedWarning);
    const stored = Object.keys(dtypes).sort();
    if (stored.length > 1) {
      warnings.push(
        `tensors are stored in ${stored.length} dtypes (${
          stored.join(", ")
        }); each is used as stored`,
      );
    }
    const files: CheckpointFile[] = [];
    const extra = ["config.json", "generation_config.json", INDEX_FILE_NAME];
    for (const name of extra) {
      const path = `${dir}/${name}`;
      const bytes = sizeOf(path);
      if (bytes !== null) files.push({ name, path, bytes });
    }
    for (const path of store.files) {
      const name = path.slice(path.lastIndexOf("/") + 1);
      files.push({ name, path, bytes: sizeOf(path) ?? 0 });
    }
    const params = countParams(cfg);
    let expertBytes: ExpertBytes | null = null;
    if (firstMoe >= 0) {
      const one = params.perExpert;
      expertBytes = {
        perExpert,
        dtype: expertDType ?? "mixed",
        byDType: {
          f32: one * DTYPE_BYTES.f32,
          f16: one * DTYPE_BYTES.f16,
          bf16: one * DTYPE_BYTES.bf16,
        },
        total: expertTotal,
        count: expertCount,
      };
    }
    const nonFinite = opts.check ? scanAll(dir, cfg) : undefined;
    const nonFiniteText = nonFinite && nonFiniteWarning(nonFinite, opts.maxListed);
    if (nonFiniteText) warnings.push(nonFiniteText);
    return {
      dir,
      arch: cfg.arch,
      config: summarize(cfg),
      layers: cfg.layers.map((l) => l.ffn.kind),
      params,
      expertBytes,
      dtypes,
      files,
      checkpointBytes: files.reduce((a, f) => a + f.bytes, 0),
      tensorBytes,
      tensors: names.length,
      expectedTensors: expected.length,
      unusedTensors: unused,
      warnings,
      ...(nonFinite ? { nonFinite } : {}),
    };
  } finally {
    store.close();
  }
}

/** Every tensor of the checkpoint scanned for NaN/Inf (memory-mapped where FFI allows). */
function scanAll(dir: string, cfg: ModelConfig): NonFiniteTensor[] {
  const store = openModelStore(dir, cfg, { log: () => {} });
  try {
    return scanNonFinite(store);
  } finally {
    store.close();
  }
}

/**
 * A number with thousands separators and, when large, a short form: `46,702,792,704 (46.70 B)`.
 */
function count(n: number): string {
  const full = n.toLocaleString("en-US");
  if (n >= 1e9) return `${full} (${(n / 1e9).toFixed(2)} B)`;
  if (n >= 1e6) return `${full} (${(n / 1e6).toFixed(2)} M)`;
  return full;
}

/**
 * Bytes in binary units: `1.50 GiB`, `64.0 KiB`, `512 B`.
 *
 * @example
 * ```ts
 * import { formatBytes } from "./inspect.ts";
 * console.log(formatBytes(3 * 2 ** 29)); // 1.50 GiB
 * ```
 */
export function formatBytes(n: number): string {
  const units = ["KiB", "MiB", "GiB", "TiB"];
  if (n < 1024) return `${n} B`;
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

/** `moe x48`, or `dense, moe x2, dense` for mixed patterns. */
function layerPattern(layers: readonly string[]): string {
  const runs: [string, number][] = [];
  for (const k of layers) {
    const last = runs[runs.length - 1];
    if (last && last[0] === k) last[1]++;
    else runs.push([k, 1]);
  }
  if (runs.length > 8) {
    const moe = layers.filter((k) => k === "moe").length;
    return `${moe} moe, ${layers.length - moe} dense: ${
      layers.map((k) => k[0].toUpperCase()).join("")
    }`;
  }
  return runs.map(([k, n]) => (n > 1 ? `${k} x${n}` : k)).join(", ");
}

/**
 * Renders an {@linkcode InspectReport} as a human-readable block of text (no trailing newline).
 *
 * @example
 * ```ts
 * import { formatInspect, inspectModel } from "./inspect.ts";
 * const text = formatInspect(await inspectModel("tests/fixtures/hf/olmoe"));
 * console.log(text.split("\n")[0]); // model    tests/fixtures/hf/olmoe (olmoe)
 * ```
 */
export function formatInspect(r: InspectReport): string {
  const c = r.config;
  const p = r.params;
  const pct = (x: number) => `${((100 * x) / Math.max(1, p.total)).toFixed(1)}%`;
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${k.padEnd(9)}${v}`);
  row("model", `${r.dir} (${r.arch})`);
  row(
    "shape",
    `hidden ${c.hidden}, ${c.layers} layers, ${c.heads} heads / ${c.kvHeads} kv heads of ${c.headDim}, ` +
      `vocab ${c.vocabSize}`,
  );
  row("layers", layerPattern(r.layers));
  if (c.experts > 0) {
    row(
      "moe",
      `${c.experts} experts, top-${c.topK}${c.renormalize ? " (renormalised)" : ""}, expert ` +
        `inter ${c.expertInter}${c.sharedInter ? `, shared expert inter ${c.sharedInter}` : ""}`,
    );
  }
  if (c.denseInter > 0) row("dense", `MLP inter ${c.denseInter}`);
  const attn = [
    `rope theta ${c.ropeTheta}`,
    `rms eps ${c.rmsEps.toExponential()}`,
    c.qkvBias ? "qkv bias" : "",
    c.qkNorm !== "none" ? `qk norm (${c.qkNorm === "head" ? "per head" : "whole projection"})` : "",
    c.clipQkv ? `clip qkv ${c.clipQkv}` : "",
    c.tieEmbeddings ? "tied embeddings" : "untied embeddings",
    `max positions ${c.maxPositions}`,
  ].filter((s) => s !== "");
  row("attn", attn.join(", "));
  row("params", `${count(p.total)} total`);
  row("", `${count(p.dense)} dense (${pct(p.dense)}; embeddings ${count(p.embedding)})`);
  row("", `${count(p.experts)} in routed experts (${pct(p.experts)})`);
  row("", `${count(p.activePerToken)} active per token (${pct(p.activePerToken)})`);
  if (r.expertBytes) {
    const e = r.expertBytes;
    row(
      "expert",
      `${count(p.perExpert)} params, ${formatBytes(e.perExpert)} as stored (${e.dtype}); f32 ` +
        `${formatBytes(e.byDType.f32)}, f16/bf16 ${formatBytes(e.byDType.bf16)}`,
    );
    row("", `${e.count} routed experts, ${formatBytes(e.total)} in all`);
  }
  const dts = Object.entries(r.dtypes).sort((a, b) => b[1].bytes - a[1].bytes);
  row(
    "dtypes",
    dts.map(([d, v]) => `${d}: ${v.tensors} tensors, ${formatBytes(v.bytes)}`).join("; "),
  );
  row(
    "tensors",
    `${r.tensors} stored, ${r.expectedTensors} used, ${formatBytes(r.tensorBytes)} of tensor data`,
  );
  row("files", `${r.files.length} files, ${formatBytes(r.checkpointBytes)}`);
  for (const f of r.files) row("", `${f.name.padEnd(36)} ${formatBytes(f.bytes).padStart(10)}`);
  for (const w of r.warnings) row("warning", w);
  return lines.join("\n");
}
