/**
 * Checks of a model against its checkpoint and options: a context length beyond the positions the
 * model was trained for is warned about at load and a sequence that would use them is refused, and
 * tensors the model does not use are warned about once at load (as `pregate inspect` does).
 *
 * @example
 * ```ts
 * import { loadConfig } from "./models/config.ts";
 * import { checkPositions } from "./load_checks.ts";
 * const cfg = await loadConfig("tests/fixtures/hf/mixtral");
 * checkPositions(cfg, 64, "ids"); // within max_position_embeddings: fine
 * ```
 * @module
 */
import { ArgumentError } from "./base/errors.ts";
import type { ModelConfig } from "./models/config.ts";
import { unusedTensors, unusedTensorsWarning } from "./models/inspect.ts";
import type { TensorStore } from "./weights/safetensors.ts";

/**
 * Logs a warning when `contextLength` (the CLI's `--context`) is larger than the model's
 * `max_position_embeddings`. Only a capacity: {@linkcode checkPositions} refuses a sequence that
 * would actually run past the maximum.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./models/config.ts";
 * import { warnContextLength } from "./load_checks.ts";
 * const cfg = await loadConfig("tests/fixtures/hf/olmoe");
 * warnContextLength(cfg, 512, console.log); // pregate: warning: --context 512 exceeds ...
 * ```
 */
export function warnContextLength(
  cfg: ModelConfig,
  contextLength: number | undefined,
  log: ((message: string) => void) | undefined,
): void {
  if (contextLength === undefined || !(contextLength > cfg.maxPositions)) return;
  log?.(
    `pregate: warning: --context ${contextLength} exceeds the model's maximum of ` +
      `${cfg.maxPositions} positions (config.json max_position_embeddings); sequences longer ` +
      "than that are refused",
  );
}

/**
 * Throws {@linkcode ArgumentError} naming `argument` when a sequence of `positions` positions
 * (prompt plus new tokens) would run past the model's `max_position_embeddings`: positions past
 * it were never trained, and rotary embeddings there give answers that look fine and are not.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./models/config.ts";
 * import { checkPositions } from "./load_checks.ts";
 * const cfg = await loadConfig("tests/fixtures/hf/olmoe");
 * checkPositions(cfg, 256, "ids"); // the maximum itself: fine
 * try {
 *   checkPositions(cfg, 257, "ids");
 * } catch (e) {
 *   console.log((e as Error).message.split("\n")[0]); // ids: 257 positions exceed ...
 * }
 * ```
 */
export function checkPositions(cfg: ModelConfig, positions: number, argument: string): void {
  if (!(positions > cfg.maxPositions)) return;
  throw new ArgumentError(
    argument,
    `${positions} positions (prompt + new tokens) exceed the model's maximum of ` +
      `${cfg.maxPositions} (config.json max_position_embeddings)`,
    "shorten the prompt or generate fewer tokens",
  );
}

/**
 * Logs, once, the warning about checkpoint tensors the model does not use (a checkpoint for
 * another variant of the architecture, or weights this engine ignores).
 *
 * @example
 * ```ts ignore
 * warnUnusedTensors(cfg, store, (m) => console.error(m));
 * ```
 */
export function warnUnusedTensors(
  cfg: ModelConfig,
  store: TensorStore,
  log: ((message: string) => void) | undefined,
): void {
  if (!log) return;
  const warning = unusedTensorsWarning(unusedTensors(cfg, store.names()));
  if (warning) log(`pregate: warning: ${warning}`);
}
