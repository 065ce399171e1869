/**
 * Planning a random-weight checkpoint: {@linkcode planModel} resolves the options of `makeModel`
 * (make_model.ts) — architecture, preset, dimension overrides, dtype, seed, config form — validates
 * them, and returns everything that will be written except the weight bytes: config.json (checked
 * by a round trip through `parseConfig`), generation_config.json, and every tensor's name, shape,
 * dtype, size and initialisation (see `initOf`).
 *
 * @example
 * ```ts
 * import { planModel } from "./plan_model.ts";
 * const plan = planModel({ arch: "qwen2_moe", out: "" });
 * console.log(plan.config.layers.map((l) => l.ffn.kind)); // ["dense", "moe", "dense", "moe"]
 * ```
 * @module
 */
import { ArgumentError, ConfigError } from "../base/errors.ts";
import { type DType, DTYPE_BYTES, DTYPES } from "../base/dtype.ts";
import { type Arch, archNamed } from "./arch/mod.ts";
import { parseConfig } from "./config.ts";
import type { ModelConfig } from "./model_config.ts";
import type { ConfigStyle, DimRules, ModelDims } from "./model_dims.ts";
import { hfConfigFiles } from "./hf_config.ts";
import { type ExpectedTensor, expectedTensors, type TensorRole } from "./names.ts";
import { type Preset, resolvePreset } from "./presets.ts";

/**
 * Options of `makeModel` (and {@linkcode planModel}, which ignores `out`, `force`,
 * `maxShardBytes` and `onProgress`).
 *
 * @example
 * ```ts
 * import { makeModel, type MakeModelOptions } from "./make_model.ts";
 * const opts: MakeModelOptions = {
 *   arch: "qwen2_moe", out: "/tmp/q2", dtype: "bf16", seed: 7, force: true,
 *   overrides: { layers: 2, experts: 4 },
 * };
 * await makeModel(opts);
 * ```
 */
export interface MakeModelOptions {
  /** The architecture; may be omitted when `preset` names a real model. */
  arch?: Arch | string;
  /** The output directory (created; must be absent or empty unless `force`). */
  out: string;
  /** A preset name (see `presetNames` in presets.ts); default `tiny`. */
  preset?: string;
  /** Weight dtype (default `f32`). 16-bit dtypes need even row lengths. */
  dtype?: DType | string;
  /** Random seed, a non-negative safe integer (default 0). */
  seed?: number;
  /** Dimensions that replace the preset's, e.g. `{layers: 2}` to shrink a real model. */
  overrides?: Partial<ModelDims>;
  /** Config form; default the preset's (`hf5` for all but the tiny Mixtral and Qwen3-MoE). */
  configStyle?: ConfigStyle;
  /** Shard size limit in bytes of tensor data (default 2e9). */
  maxShardBytes?: number;
  /**
   * Overwrite a non-empty output directory: its config.json, generation_config.json, index and
   * `*.safetensors` files are removed first (other files are left alone).
   */
  force?: boolean;
  /** Called as tensor bytes are produced, and once at the end with `(total, total)`. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

/**
 * One tensor of a planned model.
 *
 * @example
 * ```ts
 * import { planModel } from "./plan_model.ts";
 * const t = planModel({ arch: "mixtral", out: "" }).tensors[0];
 * console.log(t.name, t.shape, t.std); // model.embed_tokens.weight [256, 64] 1
 * ```
 */
export interface PlannedTensor extends ExpectedTensor {
  /** The stored dtype. */
  readonly dtype: DType;
  /** Bytes of data. */
  readonly bytes: number;
  /** The values' mean (1 for norm weights, else 0). */
  readonly mean: number;
  /** The values' standard deviation. */
  readonly std: number;
}

/**
 * A model to make: the resolved preset and dimensions, the config.json object and text, the parsed
 * configuration and the tensors.
 *
 * @example
 * ```ts
 * import { planModel } from "./plan_model.ts";
 * const plan = planModel({ preset: "qwen3-30b-a3b", out: "", dtype: "bf16" });
 * console.log(plan.config.layers.length, (plan.totalBytes / 1e9).toFixed(1)); // 48 61.1
 * ```
 */
export interface ModelPlan {
  /** The architecture. */
  arch: Arch;
  /** The preset used (its name, e.g. `tiny`). */
  preset: string;
  /** The dimensions after overrides. */
  dims: ModelDims;
  /** The weight dtype. */
  dtype: DType;
  /** The seed. */
  seed: number;
  /** The config form written. */
  configStyle: ConfigStyle;
  /** config.json as an object. */
  configJson: Record<string, unknown>;
  /** config.json's text, exactly as written. */
  configText: string;
  /** generation_config.json's text. */
  generationConfigText: string;
  /** The configuration as Pregate parses it (validated by a round trip through `parseConfig`). */
  config: ModelConfig;
  /** The tensors, in file order. */
  tensors: PlannedTensor[];
  /** Total bytes of tensor data. */
  totalBytes: number;
}

function positiveInt(name: string, v: unknown, min = 1): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    throw new ArgumentError(
      `overrides.${name}`,
      `expected an integer >= ${min}, found ${JSON.stringify(v)}`,
    );
  }
  return v;
}
const DIM_KEYS: readonly (keyof ModelDims)[] = [
  "hidden",
  "layers",
  "heads",
  "kvHeads",
  "headDim",
  "inter",
  "denseInter",
  "sharedInter",
  "experts",
  "topK",
  "vocab",
  "sparseStep",
  "mlpOnlyLayers",
  "normTopK",
  "tieEmbeddings",
  "ropeTheta",
  "rmsEps",
  "maxPositions",
  "clipQkv",
];

function resolveDims(arch: Arch, preset: Preset, overrides: Partial<ModelDims>): ModelDims {
  const rules: DimRules = archNamed(arch).make.dims;
  if (overrides === null || typeof overrides !== "object") {
    throw new ArgumentError("overrides", `expected an object, found ${JSON.stringify(overrides)}`);
  }
  for (const k of Object.keys(overrides)) {
    if (!DIM_KEYS.includes(k as keyof ModelDims)) {
      throw new ArgumentError(
        `overrides.${k}`,
        "unknown dimension",
        `valid: ${DIM_KEYS.join(", ")}`,
      );
    }
  }
  const d: ModelDims = { ...preset.dims, ...overrides };
  // A preset's mlp_only_layers beyond a reduced layer count are dropped (explicit ones are checked).
  if (overrides.layers !== undefined && overrides.mlpOnlyLayers === undefined) {
    d.mlpOnlyLayers = d.mlpOnlyLayers.filter((i) => i < (overrides.layers as number));
  }
  // A preset's head width follows a changed hidden size / head count unless the arch stores it.
  if (
    (overrides.hidden !== undefined || overrides.heads !== undefined) &&
    overrides.headDim === undefined && rules.headDim !== "stored"
  ) {
    d.headDim = undefined;
  }
  for (
    const k of [
      "hidden",
      "layers",
      "heads",
      "kvHeads",
      "inter",
      "experts",
      "topK",
      "vocab",
    ] as const
  ) {
    positiveInt(k, d[k]);
  }
  positiveInt("denseInter", d.denseInter);
  positiveInt("sparseStep", d.sparseStep);
  positiveInt("maxPositions", d.maxPositions);
  positiveInt("sharedInter", d.sharedInter, 0);
  if (d.headDim !== undefined) positiveInt("headDim", d.headDim);
  for (const k of ["ropeTheta", "rmsEps"] as const) {
    if (typeof d[k] !== "number" || !(d[k] > 0) || !Number.isFinite(d[k])) {
      throw new ArgumentError(`overrides.${k}`, `expected a positive number, found ${d[k]}`);
    }
  }
  for (const k of ["normTopK", "tieEmbeddings"] as const) {
    if (typeof d[k] !== "boolean") {
      throw new ArgumentError(
        `overrides.${k}`,
        `expected true or false, found ${JSON.stringify(d[k])}`,
      );
    }
  }
  if (d.clipQkv !== null && (typeof d.clipQkv !== "number" || !(d.clipQkv > 0))) {
    throw new ArgumentError(
      "overrides.clipQkv",
      `expected a positive number or null, found ${d.clipQkv}`,
    );
  }
  if (d.clipQkv !== null && !rules.clipQkv) {
    throw new ArgumentError("overrides.clipQkv", `clip_qkv is an OLMoE option, not ${arch}'s`);
  }
  if (
    !Array.isArray(d.mlpOnlyLayers) ||
    d.mlpOnlyLayers.some((i) => !Number.isSafeInteger(i) || i < 0 || i >= d.layers)
  ) {
    throw new ArgumentError(
      "overrides.mlpOnlyLayers",
      `expected layer indices in [0, ${d.layers}), found ${JSON.stringify(d.mlpOnlyLayers)}`,
    );
  }
  if (!rules.denseLayers) {
    if (d.mlpOnlyLayers.length > 0 || d.sparseStep !== 1) {
      throw new ArgumentError(
        overrides.sparseStep !== undefined ? "overrides.sparseStep" : "overrides.mlpOnlyLayers",
        `${arch} has no dense layers (every layer is MoE)`,
        "sparseStep and mlpOnlyLayers are Qwen2-MoE / Qwen3-MoE options",
      );
    }
  }
  if (!rules.sharedExpert && d.sharedInter !== 0) {
    throw new ArgumentError(
      "overrides.sharedInter",
      `${arch} has no shared expert`,
    );
  }
  if (rules.alwaysRenormalizes && !d.normTopK) {
    throw new ArgumentError("overrides.normTopK", `${arch} always renormalises the top-k weights`);
  }
  if (d.topK > d.experts) {
    throw new ArgumentError(
      "overrides.topK",
      `topK ${d.topK} exceeds the number of experts ${d.experts}`,
      "topK must be at most experts",
    );
  }
  if (d.heads % d.kvHeads !== 0) {
    throw new ArgumentError(
      "overrides.kvHeads",
      `heads ${d.heads} is not a multiple of kvHeads ${d.kvHeads}`,
      "kvHeads must divide heads (grouped-query attention)",
    );
  }
  if (d.headDim === undefined && d.hidden % d.heads !== 0) {
    throw new ArgumentError(
      "overrides.heads",
      `hidden ${d.hidden} is not divisible by heads ${d.heads}`,
      rules.headDim !== "derived"
        ? "pick a head count dividing hidden, or set headDim"
        : "pick a head count dividing hidden",
    );
  }
  const headDim = d.headDim ?? d.hidden / d.heads;
  if (rules.headDim === "derived" && headDim * d.heads !== d.hidden) {
    throw new ArgumentError(
      "overrides.headDim",
      `${arch} has no head_dim setting: its heads are hidden / heads = ${
        d.hidden / d.heads
      } wide, ` +
        `not ${headDim}`,
    );
  }
  if (headDim % 2 !== 0) {
    throw new ArgumentError(
      "overrides.headDim",
      `head width ${headDim} is odd (RoPE rotates pairs)`,
    );
  }
  return d;
}

function checkEven(d: ModelDims, layers: ModelConfig["layers"], dtype: DType): void {
  if (dtype === "f32") return;
  const headDim = d.headDim ?? d.hidden / d.heads;
  const rows: [string, number][] = [
    ["hidden", d.hidden],
    ["heads x headDim", d.heads * headDim],
    ["inter", d.inter],
  ];
  if (layers.some((l) => l.ffn.kind === "dense")) rows.push(["denseInter", d.denseInter]);
  if (d.sharedInter > 0) rows.push(["sharedInter", d.sharedInter]);
  for (const [name, v] of rows) {
    if (v % 2 !== 0) {
      throw new ArgumentError(
        `overrides.${name.startsWith("heads") ? "headDim" : name}`,
        `${name} = ${v} is odd, but ${dtype} weights need even row lengths (two values per 32-bit word)`,
        "use an even size, or dtype f32",
      );
    }
  }
}

/**
 * The initialisation of a tensor (see the module documentation). The embedding sets the scale of
 * the residual stream (std 1, or `1/sqrt(hidden)` when it is also the LM head, so logits stay O(1));
 * the projections writing into the residual stream (o, down) are scaled by that and by
 * `1/sqrt(2 refLayers)`, so the token's own embedding stays a large part of the stream in every
 * layer (otherwise deep layers see nearly the same hidden state for every token and route them all
 * to a few experts). RMSNorm makes the overall scale irrelevant to everything downstream.
 * `refLayers` is the larger of the preset's and the model's layer count, so a preset shrunk with
 * `overrides.layers` keeps every remaining tensor identical to the full model's. An architecture
 * may initialise its tensors its own way (`make.init` of its file).
 */
function initOf(
  t: ExpectedTensor,
  cfg: ModelConfig,
  refLayers: number,
): { mean: number; std: number } {
  const own = archNamed(cfg.arch).make.init?.(t, cfg);
  if (own) return own;
  const fanIn = t.shape.length === 2 ? t.shape[1] : 1;
  const embedStd = cfg.tieEmbeddings ? 1 / Math.sqrt(cfg.hidden) : 1;
  const role: TensorRole = t.role;
  switch (role) {
    case "norm":
    case "qk_norm":
      return { mean: 1, std: 0.1 };
    case "attn_bias":
      return { mean: 0, std: 0.1 };
    case "embed":
      return { mean: 0, std: embedStd };
    case "router":
      return { mean: 0, std: 2 / Math.sqrt(fanIn) };
    default: {
      const residual = t.projection === "o" || t.projection === "down";
      const scale = residual ? embedStd / Math.sqrt(2 * refLayers) : 1;
      return { mean: 0, std: scale / Math.sqrt(fanIn) };
    }
  }
}

/**
 * Resolves and validates what `makeModel` would write, without writing anything: the
 * preset and dimensions, config.json (round-tripped through `parseConfig`) and every tensor's name,
 * shape, dtype, size and initialisation. Throws {@linkcode ArgumentError} for an unknown
 * architecture or preset (listing the valid ones), a preset of another architecture, or bad
 * dimensions (naming the override).
 *
 * @example
 * ```ts
 * import { planModel } from "./plan_model.ts";
 * const plan = planModel({ preset: "mixtral-8x7b", out: "", dtype: "bf16", overrides: { layers: 1 } });
 * console.log(plan.tensors.length, plan.totalBytes); // 34 3426836480
 * ```
 */
export function planModel(opts: MakeModelOptions): ModelPlan {
  const { arch, preset } = resolvePreset(opts.arch, opts.preset);
  const dtype = (opts.dtype ?? "f32").toLowerCase() as DType;
  if (!DTYPES.includes(dtype)) {
    throw new ArgumentError(
      "dtype",
      `unsupported dtype ${JSON.stringify(opts.dtype)}`,
      `use one of ${DTYPES.join(", ")}`,
    );
  }
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new ArgumentError("seed", `expected a non-negative integer, found ${seed}`);
  }
  const style = opts.configStyle ?? preset.style;
  if (style !== "hf5" && style !== "hf4") {
    throw new ArgumentError("configStyle", `expected hf5 or hf4, found ${JSON.stringify(style)}`);
  }
  const d = resolveDims(arch, preset, opts.overrides ?? {});
  const { configJson, configText, generationConfigText } = hfConfigFiles(
    arch,
    d,
    dtype,
    preset,
    style,
  );
  let config: ModelConfig;
  try {
    config = parseConfig(configJson, "config.json");
  } catch (e) {
    if (e instanceof ConfigError) {
      throw new ArgumentError("overrides", `the resulting config is invalid: ${e.message}`);
    }
    throw e;
  }
  if (config.layers.every((l) => l.ffn.kind === "dense")) {
    throw new ArgumentError(
      "overrides.sparseStep",
      `no layer of the ${d.layers} is MoE (decoder_sparse_step ${d.sparseStep}, mlp_only_layers ` +
        `${JSON.stringify(d.mlpOnlyLayers)})`,
      "a mixture-of-experts model needs at least one MoE layer",
    );
  }
  checkEven(d, config.layers, dtype);
  const tensors: PlannedTensor[] = expectedTensors(config).map((t) => {
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (elements > 2 ** 33) {
      throw new ArgumentError(
        "overrides",
        `tensor ${t.name} ${JSON.stringify(t.shape)} is too large`,
      );
    }
    const init = initOf(t, config, Math.max(preset.dims.layers, d.layers));
    return { ...t, dtype, bytes: elements * DTYPE_BYTES[dtype], ...init };
  });
  return {
    arch,
    preset: preset.name,
    dims: d,
    dtype,
    seed,
    configStyle: style,
    configJson,
    configText,
    generationConfigText,
    config,
    tensors,
    totalBytes: tensors.reduce((a, t) => a + t.bytes, 0),
  };
}
