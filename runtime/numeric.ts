/**
 * Non-finite numbers in what a model computes: the checks that turn a NaN or an infinity in the
 * logits into a {@linkcode NumericError} naming the position, instead of a plausible but wrong
 * token. Generation checks the token ids it reads back anyway: the GPU's argmax and sampler write
 * {@linkcode NON_FINITE_TOKEN} for a logits row without a finite maximum (see kernels/argmax.ts),
 * so the check costs no extra readback. Full logits are on the CPU already and are scanned.
 *
 * @example
 * ```ts
 * import { checkLogitRows, checkToken } from "./numeric.ts";
 * checkToken(17, { position: 3, promptTokens: 4 }); // a token id: fine
 * try {
 *   checkLogitRows(new Float32Array([0.5, NaN]), 2, 0);
 * } catch (e) {
 *   console.log((e as Error).message.split("\n")[0]); // the logits at position 0 hold a NaN (token 1) ...
 * }
 * ```
 * @module
 */
import { NumericError } from "./base/errors.ts";
import { NON_FINITE_TOKEN } from "../kernels/argmax.ts";

export { NON_FINITE_TOKEN };

const HINT = "the weights may hold NaN or Inf values: `pregate inspect --model DIR --check` " +
  "names the tensors (or an activation overflowed its dtype)";

/**
 * Throws {@linkcode NumericError} when `id`, a token the GPU chose from the logits at `position`,
 * is {@linkcode NON_FINITE_TOKEN}: that row held a NaN or a +Infinity, or only -Infinity values.
 *
 * @example
 * ```ts
 * import { checkToken, NON_FINITE_TOKEN } from "./numeric.ts";
 * try {
 *   checkToken(NON_FINITE_TOKEN, { position: 9, promptTokens: 8 });
 * } catch (e) {
 *   console.log((e as Error).name); // NumericError
 * }
 * ```
 */
export function checkToken(id: number, at: { position: number; promptTokens: number }): void {
  if (id !== NON_FINITE_TOKEN) return;
  const generated = at.position - (at.promptTokens - 1);
  throw new NumericError(
    `the logits at position ${at.position} are not finite (a NaN, a +Infinity, or only ` +
      `-Infinity), so no token can be chosen (${at.promptTokens} prompt tokens, ${generated} ` +
      "generated before it)",
    { position: at.position, hint: HINT },
  );
}

/**
 * Throws {@linkcode NumericError} naming the first position and vocabulary index of `flat`
 * (`rows x vocab` logits, row `r` at position `firstPosition + r`) that is NaN or infinite.
 *
 * @example
 * ```ts
 * import { checkLogitRows } from "./numeric.ts";
 * checkLogitRows(new Float32Array([0, 1, 2, 3]), 2, 5); // finite: returns
 * ```
 */
export function checkLogitRows(flat: Float32Array, vocab: number, firstPosition: number): void {
  for (let i = 0; i < flat.length; i++) {
    const v = flat[i];
    if (v - v === 0) continue; // finite (NaN and +-Infinity give NaN)
    const position = firstPosition + Math.floor(i / vocab);
    let count = 0;
    for (const x of flat) if (!Number.isFinite(x)) count++;
    const last = firstPosition + Math.ceil(flat.length / vocab) - 1;
    throw new NumericError(
      `the logits at position ${position} hold ${Number.isNaN(v) ? "NaN" : v} (token ${
        i % vocab
      }); ${count} of the ${flat.length} logits of positions ${firstPosition}..${last} are not ` +
        "finite",
      { position, hint: HINT },
    );
  }
}
