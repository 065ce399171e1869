/**
 * Model configuration: a Hugging Face `config.json` becomes one frozen {@linkcode ModelConfig},
 * parsed and validated once (every value, each bad one a {@linkcode ConfigError} naming the file and
 * the field, what was expected and what was found). Everything later (weights, plans, state sizes)
 * is derived from it. The `model_type` picks the architecture in the registry (`arch/mod.ts`),
 * whose file owns the parsing; the types live in `model_config.ts`.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * const cfg = parseConfig({
 *   model_type: "mixtral", vocab_size: 256, hidden_size: 64, intermediate_size: 128,
 *   num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
 *   num_local_experts: 8, num_experts_per_tok: 2, rms_norm_eps: 1e-5, rope_theta: 1e6,
 * }, "config.json");
 * console.log(cfg.arch, cfg.layers[0].ffn.kind); // mixtral moe
 * ```
 * @module
 */
import { ConfigError } from "../base/errors.ts";
import { archNamed } from "./arch/mod.ts";
import type { Json, ModelConfig } from "./model_config.ts";

export { type Arch, ARCHITECTURES } from "./arch/mod.ts";
export type {
  DenseFfn,
  FfnActivation,
  Json,
  LayerConfig,
  LayerStack,
  ModelConfig,
  MoeFfn,
} from "./model_config.ts";

/**
 * Parses a config.json object into a frozen {@linkcode ModelConfig}, through the architecture its
 * `model_type` names.
 * @param where names the file in error messages.
 * @throws {ConfigError} for unsupported architectures or invalid values, naming `where` and the field.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * try {
 *   parseConfig({ model_type: "llama" }, "m/config.json");
 * } catch (e) {
 *   console.log((e as Error).message.split("\n")[0]); // m/config.json: unsupported model_type "llama"
 * }
 * ```
 */
export function parseConfig(raw: Json, where = "config.json"): ModelConfig {
  if (typeof raw.model_type !== "string") {
    throw new ConfigError(
      `${where}: 'model_type' must be a string naming the architecture, found ${
        JSON.stringify(raw.model_type) ?? "nothing"
      }`,
    );
  }
  return archNamed(raw.model_type, where).parseConfig(raw, where);
}

/**
 * Reads and parses `<dir>/config.json`.
 *
 * @throws {ConfigError} naming the file when it is missing, unreadable, not a JSON object, or
 *   invalid (see {@linkcode parseConfig}).
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const cfg = await loadConfig("tests/fixtures/hf/olmoe");
 * console.log(cfg.arch, cfg.qkNorm); // olmoe full
 * ```
 */
export async function loadConfig(dir: string): Promise<ModelConfig> {
  const path = `${dir}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(
      `${path}: cannot read the model config: ${(e as Error).message}`,
      "--model must be a directory holding config.json and *.safetensors (a Hugging Face checkpoint)",
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(`${path}: expected a JSON object`);
  }
  return parseConfig(raw as Json, path);
}
