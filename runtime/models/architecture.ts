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
 * console.log(ARCHITECTURES.length, olmoe.make.hfClass); // 4 OlmoeForCausalLM
 * ```
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import type { Json, ModelConfig } from "./model_config.ts";
import type { ExpectedTensor, TensorNaming } from "./tensor_names.ts";
import type { ModelWeights } from "./gpu_weights.ts";
import type { RunState } from "./state.ts";
import type { ForwardOptions, ForwardPlan } from "./plan.ts";
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
