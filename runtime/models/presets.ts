/**
 * Named model shapes for `makeModel`: the real models' dimensions and a tiny model of each
 * architecture ({@linkcode PRESETS}, gathered from the architecture files through the registry),
 * and how an architecture and a preset name given by a caller resolve to one of them
 * ({@linkcode resolvePreset}).
 *
 * @example
 * ```ts
 * import { PRESETS, presetNames, resolvePreset } from "./presets.ts";
 * console.log(presetNames("olmoe")); // ["tiny", "olmoe-1b-7b"]
 * console.log(resolvePreset("olmoe").preset === PRESETS["tiny/olmoe"]); // true
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { type Arch, ARCHITECTURES, archNamed, isArch } from "./arch/mod.ts";
import type { PresetSpec } from "./model_dims.ts";

export type { ConfigStyle, ModelDims, PresetSpec } from "./model_dims.ts";

/**
 * A named model shape: a {@linkcode PresetSpec} of an architecture file, with its name and
 * architecture.
 *
 * @example
 * ```ts
 * import { PRESETS } from "./presets.ts";
 * const p = PRESETS["qwen3-30b-a3b"];
 * console.log(p.arch, p.dims.experts, p.dims.topK); // qwen3_moe 128 8
 * ```
 */
export interface Preset extends PresetSpec {
  /** The preset's name (`tiny` exists for every architecture; see {@linkcode presetKey}). */
  readonly name: string;
  /** Its architecture. */
  readonly arch: Arch;
}

/**
 * The presets of every registered architecture by key: each architecture's `tiny` model (hidden 64,
 * 8 experts, vocabulary 256; the tiny Mixtral and Qwen3-MoE write the older `hf4` config form so
 * both config code paths are exercised) under `tiny/<arch>`, then the real models' shapes under
 * their names (`mixtral-8x7b`, `qwen1.5-moe-a2.7b`, `qwen3-30b-a3b`, `olmoe-1b-7b`). Shrink the
 * real ones with `overrides: {layers: n}`.
 *
 * @example
 * ```ts
 * import { PRESETS } from "./presets.ts";
 * console.log(Object.keys(PRESETS));
 * console.log(PRESETS["tiny/qwen2_moe"].dims.sharedInter); // 128
 * ```
 */
export const PRESETS: Readonly<Record<string, Preset>> = Object.freeze(Object.fromEntries(
  [true, false].flatMap((tiny) =>
    ARCHITECTURES.flatMap((arch) =>
      Object.entries(archNamed(arch).make.presets)
        .filter(([name]) => (name === "tiny") === tiny)
        .map(([name, spec]) => [presetKey(arch, name), { ...spec, name, arch }])
    )
  ),
));

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
    if (!isArch(archName)) {
      throw new ArgumentError(
        "arch",
        `unknown architecture ${JSON.stringify(archName)}`,
        `valid architectures: ${ARCHITECTURES.join(", ")}`,
      );
    }
    arch = archName;
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
