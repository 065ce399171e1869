/**
 * What an architecture file (`arch/<name>.ts`) provides, as one {@linkcode Architecture} object that
 * the registry (`arch/mod.ts`) lists: how its config.json is parsed (every value checked), how its
 * tensors are named and which it needs, how one forward pass is built, and how `makeModel` writes
 * a checkpoint of it (presets, config.json keys, which dimensions it can express). Everything that
 * differs between architectures lives behind this interface; the rest of Pregate asks the registry.
 *
 * @example
 * ```ts
 * import { ARCHITECTURES, archNamed } from "./arch/mod.ts";
 * const olmoe = archNamed("olmoe");
 * console.log(ARCHITECTURES.length, olmoe.make.hfClass); // 5 OlmoeForCausalLM
 * ```
 * @module
 */
import type { Gpu } from "../base/gpu/device.ts";
import type { Json, ModelConfig } from "./model_config.ts";
import type { ExpectedTensor, TensorNaming } from "./tensor_names.ts";
import type { LayerWeights, ModelWeights } from "./gpu_weights.ts";
import type { RunState, StateSizes } from "./state.ts";
import type { TensorStore } from "../weights/safetensors.ts";
import type { UploadOptions, WeightUpload } from "./weight_upload.ts";
import type { DType } from "../base/dtype.ts";
import type { ForwardOptions, ForwardPlan } from "./plan.ts";
import type { GgufSpec } from "./gguf_spec.ts";
import type { ConfigStyle, DimRules, ModelDims, PresetSpec } from "./model_dims.ts";

/** How `makeModel` writes a checkpoint of an architecture. */
export interface MakeSpec {
  /** The HF class written to config.json's `architectures`, e.g. `MixtralForCausalLM`. */
  readonly hfClass: string;
  /** Named shapes; `tiny` (a few-KB model for tests) is required. */
  readonly presets: Readonly<Record<string, PresetSpec>>;
  /** Which dimensions its config.json can express. */
  readonly dims: DimRules;
  /**
   * The architecture's own config.json keys for `d` (floats marked with `PyFloat`), beside the keys
   * every decoder writes (`hf_config.ts`).
   */
  hfConfig(d: ModelDims, style: ConfigStyle): Record<string, unknown>;
  /**
   * The whole config.json and generation_config.json instead of the decoder keys `hf_config.ts`
   * writes with `hfConfig` (an architecture whose config shares none of them, e.g. an
   * encoder-decoder). `preset` names the preset the dimensions `d` came from.
   */
  configFiles?(d: ModelDims, dtype: DType, preset: { name: string }): HfConfigFiles;
  /**
   * The random initialisation of tensor `t` where the architecture wants its own (mean and standard
   * deviation); `undefined` keeps `make-model`'s default (`initOf` in plan_model.ts).
   */
  init?(t: ExpectedTensor, cfg: ModelConfig): { mean: number; std: number } | undefined;
}

/** A checkpoint's config files: config.json as an object and as text, generation_config.json's text. */
export interface HfConfigFiles {
  configJson: Record<string, unknown>;
  configText: string;
  generationConfigText: string;
}

/**
 * What an encoder-decoder architecture adds. Its {@linkcode ModelConfig} lists the encoder's layers,
 * then the decoder's (`stacks` says where each starts), so MoE layers, expert pools and the
 * offloading engine see one list of layers. The encoder runs once per input over its tokens (all at
 * once: its attention is not causal) and leaves the decoder's cross-attention keys and values in the
 * run state; `buildForward` builds the decoder's passes (`opts.encoderLength`: the encoder tokens).
 *
 * @example
 * ```ts ignore
 * const ed = archOf(cfg).encoderDecoder!;
 * const weights = uploadModelWeights(gpu, cfg, store, { experts: "resident" }); // arch/mod.ts
 * const state = ed.allocState(gpu, cfg, { maxT: 128, maxSeq: 512, maxEncoder: 512 });
 * const encoder = await ed.buildEncoder(gpu, cfg, weights, state, { T: 20, logits: "last" });
 * ```
 */
export interface EncoderDecoderSpec {
  /**
   * Uploads every weight: the layers' as {@linkcode ModelWeights} and the architecture's own beside
   * them, through `up` (it queues; the hook runs it); `uploadLayer(i)` queues layer i's common
   * weights. (The registry passes both in, so arch files need not import the upload module.)
   */
  uploadWeights(
    up: WeightUpload,
    cfg: ModelConfig,
    store: TensorStore,
    opts: UploadOptions,
    uploadLayer: (i: number) => LayerWeights,
  ): ModelWeights;
  /** Allocates the run state, with room for `maxEncoder` encoder tokens. */
  allocState(gpu: Gpu, cfg: ModelConfig, sizes: StateSizes & { maxEncoder: number }): RunState;
  /** Builds the encoder's pass over `opts.T` encoder tokens (state.ids). */
  buildEncoder(
    gpu: Gpu,
    cfg: ModelConfig,
    weights: ModelWeights,
    state: RunState,
    opts: ForwardOptions,
  ): Promise<ForwardPlan>;
  /** The decoder's first input (null when the config names none) and the ids that end generation. */
  generation(cfg: ModelConfig): { start: number | null; eos: readonly number[] };
}

/**
 * One architecture: its HF `model_type` as `name`, and everything Pregate needs to know about it.
 *
 * @example
 * ```ts
 * import { archNamed } from "./arch/mod.ts";
 * const arch = archNamed("mixtral");
 * const cfg = arch.parseConfig({
 *   model_type: "mixtral", vocab_size: 8, hidden_size: 8, intermediate_size: 8,
 *   num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 2, num_experts_per_tok: 1,
 * }, "config.json");
 * console.log(arch.tensors(cfg).length); // 16
 * ```
 */
export interface Architecture<N extends string = string> {
  /** The HF `model_type`, e.g. `mixtral`. */
  readonly name: N;
  /** One line about it (listings). */
  readonly description: string;
  /**
   * Parses a config.json object of this architecture into a frozen {@linkcode ModelConfig},
   * validating every value (a `ConfigError` naming `where` and the field otherwise).
   */
  parseConfig(raw: Json, where: string): ModelConfig;
  /** How its checkpoint tensors are named. */
  readonly names: TensorNaming;
  /** Every tensor a configuration needs, with its shape and role. */
  tensors(cfg: ModelConfig): ExpectedTensor[];
  /** Builds the plan of one forward pass over `opts.T` tokens. */
  buildForward(
    gpu: Gpu,
    cfg: ModelConfig,
    weights: ModelWeights,
    state: RunState,
    opts: ForwardOptions,
  ): Promise<ForwardPlan>;
  /** How `makeModel` writes one. */
  readonly make: MakeSpec;
  /** An encoder-decoder's encoder and what it needs (absent for a decoder-only model). */
  readonly encoderDecoder?: EncoderDecoderSpec;
  /** Its form in llama.cpp's GGUF files (absent when llama.cpp has no such architecture). */
  readonly gguf?: GgufSpec;
}

/**
 * Declares an architecture, keeping its name's literal type (the registry's `Arch` is the union of
 * these names).
 *
 * @example
 * ```ts ignore
 * export const mixtral = defineArch({ name: "mixtral", description: "...", ... });
 * ```
 */
export function defineArch<const N extends string>(arch: Architecture<N>): Architecture<N> {
  return Object.freeze(arch);
}
