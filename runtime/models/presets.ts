/**
 * Named model shapes for `makeModel`: the real models' dimensions and a tiny model of each
 * architecture ({@linkcode PRESETS}), and how an architecture and a preset name given by a caller
 * resolve to one of them ({@linkcode resolvePreset}).
 *
 * @example
 * ```ts
 * import { PRESETS, presetNames, resolvePreset } from "./presets.ts";
 * console.log(presetNames("olmoe")); // ["tiny", "olmoe-1b-7b"]
 * console.log(resolvePreset("olmoe").preset === PRESETS["tiny/olmoe"]); // true
 * ```
 * @module
 */
import { ArgumentError } from "../errors.ts";
import { type Arch, ARCHITECTURES } from "./config.ts";

/**
 * The dimensions and options of a model to make. `inter` is the routed experts' intermediate size
 * (`intermediate_size` of Mixtral/OLMoE, `moe_intermediate_size` of the Qwen models); `denseInter`
 * is the Qwen models' dense MLP size (`intermediate_size`, used by layers that are not sparse).
 *
 * @example
 * ```ts
 * import { makeModel, type ModelDims } from "./make_model.ts";
 * const overrides: Partial<ModelDims> = { layers: 1, experts: 16, topK: 4 };
 * await makeModel({ arch: "olmoe", out: "/tmp/olmoe-16", overrides, force: true });
 * ```
 */
export interface ModelDims {
  /** Model width (`hidden_size`). */
  hidden: number;
  /** Decoder layers (`num_hidden_layers`). */
  layers: number;
  /** Attention heads. */
  heads: number;
  /** Key/value heads (divides `heads`). */
  kvHeads: number;
  /**
   * Width of one head; `undefined` means `hidden / heads`. Mixtral and Qwen3-MoE write `head_dim`
   * and accept any value; OLMoE and Qwen2-MoE have no such key and need `hidden / heads`.
   */
  headDim?: number;
  /** Routed experts' intermediate size. */
  inter: number;
  /** Dense MLP intermediate size (Qwen models; ignored by Mixtral and OLMoE). */
  denseInter: number;
  /** Shared expert intermediate size (Qwen2-MoE; 0 = none; must be 0 for the others). */
  sharedInter: number;
  /** Routed experts per MoE layer. */
  experts: number;
  /** Experts per token. */
  topK: number;
  /** Vocabulary size. */
  vocab: number;
  /** Qwen `decoder_sparse_step`: layer `i` is MoE when `(i + 1) % step == 0`. */
  sparseStep: number;
  /** Qwen `mlp_only_layers`: layers forced dense. */
  mlpOnlyLayers: readonly number[];
  /** `norm_topk_prob` (Qwen, OLMoE; Mixtral always renormalises). */
  normTopK: boolean;
  /** `tie_word_embeddings`. */
  tieEmbeddings: boolean;
  /** RoPE base. */
  ropeTheta: number;
  /** RMSNorm epsilon. */
  rmsEps: number;
  /** `max_position_embeddings`. */
  maxPositions: number;
  /** OLMoE `clip_qkv` (`null` = none). */
  clipQkv: number | null;
}

/**
 * How config.json is written: `hf5` as transformers 5.x (`rope_parameters`, `dtype`), `hf4` as 4.x
 * (top-level `rope_theta` and `rope_scaling`, `torch_dtype`; Qwen3-MoE's `num_experts`).
 */
export type ConfigStyle = "hf5" | "hf4";

/**
 * A named model shape.
 *
 * @example
 * ```ts
 * import { PRESETS } from "./presets.ts";
 * const p = PRESETS["qwen3-30b-a3b"];
 * console.log(p.arch, p.dims.experts, p.dims.topK); // qwen3_moe 128 8
 * ```
 */
export interface Preset {
  /** The preset's name (`tiny` exists for every architecture; see {@linkcode presetKey}). */
  readonly name: string;
  /** Its architecture. */
  readonly arch: Arch;
  /** One line about it. */
  readonly description: string;
  /** Its dimensions. */
  readonly dims: Readonly<ModelDims>;
  /** How its config.json is written. */
  readonly style: ConfigStyle;
  /** Special token ids written to the configs (`null` = none). */
  readonly tokens: {
    readonly bos: number | null;
    readonly eos: number | null;
    readonly pad: number | null;
  };
  /** Other config.json keys that differ from the class defaults. */
  readonly extra?: Readonly<Record<string, unknown>>;
}

const TINY_TOKENS = { bos: null, eos: null, pad: 0 } as const;

function dims(
  d:
    & Partial<ModelDims>
    & Omit<ModelDims, "denseInter" | "sharedInter" | "sparseStep" | "mlpOnlyLayers" | "clipQkv">,
): ModelDims {
  return {
    denseInter: d.inter,
    sharedInter: 0,
    sparseStep: 1,
    mlpOnlyLayers: [],
    clipQkv: null,
    ...d,
  };
}

/**
 * The presets by key: the real models' shapes (`mixtral-8x7b`, `qwen3-30b-a3b`, `olmoe-1b-7b`,
 * `qwen1.5-moe-a2.7b`) and, under `tiny/<arch>`, a tiny model of each architecture (hidden 64, 8
 * experts, vocabulary 256; the tiny Mixtral and Qwen3-MoE write the older `hf4` config form so both
 * config code paths are exercised). Shrink the real ones with `overrides: {layers: n}`.
 *
 * @example
 * ```ts
 * import { PRESETS } from "./presets.ts";
 * console.log(Object.keys(PRESETS));
 * console.log(PRESETS["tiny/qwen2_moe"].dims.sharedInter); // 128
 * ```
 */
// deno-fmt-ignore
export const PRESETS: Readonly<Record<string, Preset>> = Object.freeze({
  "tiny/mixtral": {
    name: "tiny",
    arch: "mixtral",
    description: "tiny Mixtral: 2 layers, 8 experts top-2, hf4-style config",
    dims: dims({
      hidden: 64, layers: 2, heads: 4, kvHeads: 2, inter: 96, experts: 8, topK: 2, vocab: 256,
      normTopK: true, tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-5, maxPositions: 256,
    }),
    style: "hf4",
    tokens: TINY_TOKENS,
  },
  "tiny/qwen3_moe": {
    name: "tiny",
    arch: "qwen3_moe",
    description:
      "tiny Qwen3-MoE: 3 layers (layer 1 dense), head_dim 32, tied, 8 experts top-2, hf4-style config",
    dims: dims({
      hidden: 64, layers: 3, heads: 4, kvHeads: 2, headDim: 32, inter: 96, denseInter: 128,
      experts: 8, topK: 2, vocab: 256, mlpOnlyLayers: [1], normTopK: true, tieEmbeddings: true,
      ropeTheta: 1e6, rmsEps: 1e-6, maxPositions: 256,
    }),
    style: "hf4",
    tokens: TINY_TOKENS,
  },
  "tiny/olmoe": {
    name: "tiny",
    arch: "olmoe",
    description: "tiny OLMoE: 2 layers, 8 experts top-3, full-projection q/k norms",
    dims: dims({
      hidden: 64, layers: 2, heads: 4, kvHeads: 2, inter: 80, experts: 8, topK: 3, vocab: 256,
      normTopK: false, tieEmbeddings: false, ropeTheta: 5e5, rmsEps: 1e-5, maxPositions: 256,
    }),
    style: "hf5",
    tokens: TINY_TOKENS,
  },
  "tiny/qwen2_moe": {
    name: "tiny",
    arch: "qwen2_moe",
    description:
      "tiny Qwen2-MoE: 4 layers (sparse step 2: 0 and 2 dense), shared expert, qkv bias, 8 experts top-2",
    dims: dims({
      hidden: 64, layers: 4, heads: 4, kvHeads: 2, inter: 80, denseInter: 96, sharedInter: 128,
      experts: 8, topK: 2, vocab: 256, sparseStep: 2, normTopK: false, tieEmbeddings: false,
      ropeTheta: 5e4, rmsEps: 1e-6, maxPositions: 256,
    }),
    style: "hf5",
    tokens: TINY_TOKENS,
  },
  "mixtral-8x7b": {
    name: "mixtral-8x7b",
    arch: "mixtral",
    description: "Mixtral-8x7B: 32 layers, hidden 4096, 8 experts of 14336 top-2 (46.7B params)",
    dims: dims({
      hidden: 4096, layers: 32, heads: 32, kvHeads: 8, inter: 14336, experts: 8, topK: 2,
      vocab: 32000, normTopK: true, tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-5,
      maxPositions: 32768,
    }),
    style: "hf5",
    tokens: { bos: 1, eos: 2, pad: null },
    extra: { router_aux_loss_coef: 0.02 },
  },
  "qwen3-30b-a3b": {
    name: "qwen3-30b-a3b",
    arch: "qwen3_moe",
    description: "Qwen3-30B-A3B: 48 layers, hidden 2048, 128 experts of 768 top-8 (30.5B params)",
    dims: dims({
      hidden: 2048, layers: 48, heads: 32, kvHeads: 4, headDim: 128, inter: 768, denseInter: 6144,
      experts: 128, topK: 8, vocab: 151936, normTopK: true, tieEmbeddings: false, ropeTheta: 1e6,
      rmsEps: 1e-6, maxPositions: 40960,
    }),
    style: "hf5",
    tokens: { bos: 151643, eos: 151645, pad: null },
  },
  "olmoe-1b-7b": {
    name: "olmoe-1b-7b",
    arch: "olmoe",
    description: "OLMoE-1B-7B: 16 layers, hidden 2048, 64 experts of 1024 top-8 (6.9B params)",
    dims: dims({
      hidden: 2048, layers: 16, heads: 16, kvHeads: 16, inter: 1024, experts: 64, topK: 8,
      vocab: 50304, normTopK: false, tieEmbeddings: false, ropeTheta: 10000, rmsEps: 1e-5,
      maxPositions: 4096,
    }),
    style: "hf5",
    tokens: { bos: null, eos: 50279, pad: 1 },
  },
  "qwen1.5-moe-a2.7b": {
    name: "qwen1.5-moe-a2.7b",
    arch: "qwen2_moe",
    description:
      "Qwen1.5-MoE-A2.7B: 24 layers, hidden 2048, 60 experts of 1408 top-4 + shared 5632 (14.3B params)",
    dims: dims({
      hidden: 2048, layers: 24, heads: 16, kvHeads: 16, inter: 1408, denseInter: 5632,
      sharedInter: 5632, experts: 60, topK: 4, vocab: 151936, normTopK: false,
      tieEmbeddings: false, ropeTheta: 1e6, rmsEps: 1e-6, maxPositions: 8192,
    }),
    style: "hf5",
    tokens: { bos: 151643, eos: 151643, pad: null },
    extra: { max_window_layers: 21 },
  },
} satisfies Record<string, Preset>);

/**
 * The {@linkcode PRESETS} key of a preset name for an architecture (`tiny` -> `tiny/<arch>`).
 *
 * @example
 * ```ts
 * import { presetKey } from "./presets.ts";
 * console.log(presetKey("olmoe", "tiny"), presetKey("olmoe", "olmoe-1b-7b")); // tiny/olmoe olmoe-1b-7b
 * ```
 */
export function presetKey(arch: Arch, name: string): string {
  return name === "tiny" ? `tiny/${arch}` : name;
}

/**
 * The preset names usable with an architecture (or with any, when `arch` is omitted).
 *
 * @example
 * ```ts
 * import { presetNames } from "./presets.ts";
 * console.log(presetNames("mixtral")); // ["tiny", "mixtral-8x7b"]
 * ```
 */
export function presetNames(arch?: Arch): string[] {
  const out: string[] = [];
  for (const p of Object.values(PRESETS)) {
    if ((arch === undefined || p.arch === arch) && !out.includes(p.name)) out.push(p.name);
  }
  return out;
}

/**
 * The architecture and preset a caller asked for: `presetName` (default `tiny`) looked up for
 * `archName`, or, when `archName` is omitted, a real model's preset alone.
 *
 * @throws {ArgumentError} for an unknown architecture or preset (listing the valid ones), the tiny
 *   preset without an architecture, or a preset of another architecture.
 *
 * @example
 * ```ts
 * import { resolvePreset } from "./presets.ts";
 * const { arch, preset } = resolvePreset(undefined, "qwen3-30b-a3b");
 * console.log(arch, preset.dims.layers); // qwen3_moe 48
 * ```
 */
export function resolvePreset(
  archName: Arch | string | undefined,
  presetName = "tiny",
): { arch: Arch; preset: Preset } {
  let arch: Arch | undefined;
  if (archName !== undefined) {
    if (!ARCHITECTURES.includes(archName as Arch)) {
      throw new ArgumentError(
        "arch",
        `unknown architecture ${JSON.stringify(archName)}`,
        `valid architectures: ${ARCHITECTURES.join(", ")}`,
      );
    }
    arch = archName as Arch;
  }
  if (arch === undefined) {
    const p = PRESETS[presetName];
    if (!p) {
      throw new ArgumentError(
        "arch",
        presetName === "tiny"
          ? "the architecture is required with the tiny preset"
          : `unknown preset ${JSON.stringify(presetName)}, and no architecture given`,
        `valid architectures: ${ARCHITECTURES.join(", ")}; presets: ${presetNames().join(", ")}`,
      );
    }
    return { arch: p.arch, preset: p };
  }
  const p = PRESETS[presetKey(arch, presetName)];
  if (!p || p.name !== presetName) {
    throw new ArgumentError(
      "preset",
      `unknown preset ${JSON.stringify(presetName)} for ${arch}`,
      `valid presets for ${arch}: ${presetNames(arch).join(", ")} (all: ${
        presetNames().join(", ")
      })`,
    );
  }
  if (p.arch !== arch) {
    throw new ArgumentError(
      "preset",
      `preset '${presetName}' is a ${p.arch} model, not ${arch}`,
      `drop the architecture or pick one of: ${presetNames(arch).join(", ")}`,
    );
  }
  return { arch, preset: p };
}
