/**
 * The registry of architectures: the one list of what Pregate runs. The CLI's list, config parsing
 * (`config.ts`), tensor names (`names.ts`), `makeModel`'s presets and `inspect` all derive from it,
 * and `../build.ts` builds a model's parts through it. Adding an architecture is one file beside
 * this one (an {@linkcode Architecture}, see `../architecture.ts`) and one line in `REGISTRY`.
 *
 * @example
 * ```ts
 * import { ARCHITECTURES, archNamed } from "./mod.ts";
 * console.log(ARCHITECTURES); // ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "switch_transformers"]
 * console.log(archNamed("qwen3_moe").make.hfClass); // Qwen3MoeForCausalLM
 * ```
 * @module
 */
import { ConfigError, GgufError } from "../../base/errors.ts";
import type { Architecture } from "../architecture.ts";
import type { ModelConfig } from "../model_config.ts";
import { mixtral } from "./mixtral.ts";
import { olmoe } from "./olmoe.ts";
import { qwen2Moe } from "./qwen2_moe.ts";
import { qwen3Moe } from "./qwen3_moe.ts";
import { switchTransformers } from "./switch_transformers.ts";

/** Every architecture, in listing order. */
const REGISTRY = [mixtral, qwen2Moe, qwen3Moe, olmoe, switchTransformers] as const;

/** The name (HF `model_type`) of a registered architecture. */
export type Arch = typeof REGISTRY[number]["name"];

/**
 * The registered architectures' names, in listing order.
 *
 * @example
 * ```ts
 * import { ARCHITECTURES } from "./mod.ts";
 * console.log(ARCHITECTURES.join(", ")); // mixtral, qwen2_moe, qwen3_moe, olmoe, switch_transformers
 * ```
 */
export const ARCHITECTURES: readonly Arch[] = Object.freeze(REGISTRY.map((a) => a.name));

/**
 * Whether `name` is a registered architecture.
 *
 * @example
 * ```ts
 * import { isArch } from "./mod.ts";
 * console.log(isArch("olmoe"), isArch("llama")); // true false
 * ```
 */
export function isArch(name: unknown): name is Arch {
  return ARCHITECTURES.includes(name as Arch);
}

/**
 * The architecture registered as `name`.
 *
 * @throws {ConfigError} for an unregistered name, listing the registered ones (`where` names the
 *   file the name came from, e.g. a config.json).
 *
 * @example
 * ```ts
 * import { archNamed } from "./mod.ts";
 * console.log(archNamed("mixtral").description);
 * ```
 */
export function archNamed(name: string, where = "model_type"): Architecture {
  const arch = REGISTRY.find((a) => a.name === name);
  if (!arch) {
    throw new ConfigError(
      `${where}: unsupported model_type ${JSON.stringify(name)}`,
      `supported architectures: ${ARCHITECTURES.join(", ")}`,
    );
  }
  return arch;
}

/**
 * The architecture whose GGUF form llama.cpp names `name` (a file's `general.architecture`).
 *
 * @throws {GgufError} naming `file` and the key for an architecture Pregate does not read from GGUF,
 *   listing those it does.
 *
 * @example
 * ```ts
 * import { archOfGguf } from "./mod.ts";
 * console.log(archOfGguf("qwen3moe", "m.gguf").name); // qwen3_moe
 * ```
 */
export function archOfGguf(name: string, file: string): Architecture {
  const arch = REGISTRY.find((a) => a.gguf?.arch === name);
  if (!arch) {
    const known = REGISTRY.flatMap((a) => (a.gguf ? [`${a.gguf.arch} (${a.name})`] : []));
    throw new GgufError(file, `unsupported architecture ${JSON.stringify(name)}`, {
      key: "general.architecture",
      hint: `Pregate reads GGUF files of ${known.join(", ")}`,
    });
  }
  return arch;
}

/**
 * The architecture of a parsed configuration.
 *
 * @example
 * ```ts ignore
 * const tensors = archOf(cfg).tensors(cfg);
 * ```
 */
export function archOf(cfg: ModelConfig): Architecture {
  return archNamed(cfg.arch, "config");
}
