/**
 * Perplexity of a model on a text, by the protocol the PyTorch evaluation (tools/train/) uses too:
 *
 * 1. tokenize the whole text with the model's tokenizer, no special tokens (BOS) added;
 * 2. split the ids into consecutive, non-overlapping windows of `context` ids (default 256); the
 *    last window may be shorter and is kept when it has at least 2 ids;
 * 3. evaluate each window on its own, from an empty cache (position 0);
 * 4. loss = the mean, over every predicted id (positions 1..len-1 of every window, each predicted
 *    from the ids before it in its window), of `-log softmax(logits)[id]`, computed in float64 on
 *    the CPU from the float32 logits; perplexity = exp(loss).
 *
 * With pre-gating, `pregate_hit_rate` is the share of the experts the true router chose that the
 * pre-gate had predicted, from the model's counters (see {@linkcode Model.offloadCounters}): the
 * engine counts each token's prediction against that token's routing, so a window of T tokens
 * counts as T decode steps would.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "./model.ts";
 * import { loadTokenizer } from "./text/tokenizer.ts";
 * import { evaluatePerplexity } from "./eval.ts";
 * const model = await loadModel("models/demo", { contextLength: 256 });
 * const tok = await loadTokenizer("models/demo");
 * const r = await evaluatePerplexity(model, tok, await Deno.readTextFile("heldout.txt"));
 * console.log(r.perplexity, r.tokens);
 * ```
 * @module
 */
import { ArgumentError } from "./base/errors.ts";
import type { Model } from "./model.ts";
import { checkIdsFit } from "./text/generate_text.ts";
import type { Tokenizer } from "./text/tokenizer.ts";

/** Default window length. */
export const EVAL_CONTEXT = 256;

/** Options of {@linkcode evaluatePerplexity}. */
export interface EvalOptions {
  /** Window length in tokens; default 256. The model's context length must hold it. */
  context?: number;
  /** Called after each window: windows done, windows in all. */
  onWindow?: (done: number, total: number) => void;
}

/** What {@linkcode evaluatePerplexity} measured (the `eval` command prints it as JSON). */
export interface EvalResult {
  /** Predicted tokens (all windows' lengths minus one each). */
  tokens: number;
  /** Mean negative log-likelihood per predicted token, in nats. */
  nll: number;
  /** exp(nll). */
  perplexity: number;
  /** Windows evaluated. */
  windows: number;
  /** Window length. */
  context: number;
  /** Where experts lived. */
  mode: string;
  /** Pre-gate policy in pregated mode, else null. */
  pregate: string | null;
  /** Share of the true router's experts the pre-gate predicted (pregated mode), else null. */
  pregate_hit_rate: number | null;
}

/** The protocol's windows of `ids`: consecutive, `context` long, a last one of >= 2 kept. */
export function evalWindows(ids: readonly number[], context: number): number[][] {
  if (!Number.isInteger(context) || context < 2) {
    throw new ArgumentError("context", `expected an integer >= 2, got ${context}`);
  }
  const out: number[][] = [];
  for (let start = 0; start < ids.length; start += context) {
    const w = ids.slice(start, start + context);
    if (w.length >= 2) out.push(w);
  }
  return out;
}

/**
 * Sum over positions 0..n-2 of `-log softmax(rows[t])[ids[t + 1]]`, in float64; `rows[t]` are the
 * logits after `ids[0..t]`.
 */
export function windowNll(rows: readonly Float32Array[], ids: readonly number[]): number {
  let sum = 0;
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = rows[t];
    let max = -Infinity;
    for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
    let z = 0;
    for (let i = 0; i < row.length; i++) z += Math.exp(row[i] - max);
    sum += max + Math.log(z) - row[ids[t + 1]];
  }
  return sum;
}

/** Perplexity of `model` on `text` by the protocol in the module doc. */
export async function evaluatePerplexity(
  model: Model,
  tokenizer: Tokenizer,
  text: string,
  opts: EvalOptions = {},
): Promise<EvalResult> {
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  checkIdsFit(model, tokenizer, ids);
  return await evaluateIds(model, ids, opts);
}

/** Perplexity of `model` on token ids (steps 2-4 of the protocol). */
export async function evaluateIds(
  model: Model,
  ids: readonly number[],
  opts: EvalOptions = {},
): Promise<EvalResult> {
  const context = opts.context ?? EVAL_CONTEXT;
  const windows = evalWindows(ids, context);
  if (windows.length === 0) {
    throw new ArgumentError("text", `has ${ids.length} token(s); perplexity needs at least 2`);
  }
  const before = model.offloadCounters;
  let sum = 0, count = 0;
  for (const [i, w] of windows.entries()) {
    sum += windowNll(await model.logits(w), w);
    count += w.length - 1;
    opts.onWindow?.(i + 1, windows.length);
  }
  const after = model.offloadCounters;
  const pregated = model.mode === "pregated";
  const chosen = before && after ? after.pregateChosen - before.pregateChosen : 0;
  const nll = sum / count;
  return {
    tokens: count,
    nll,
    perplexity: Math.exp(nll),
    windows: windows.length,
    context,
    mode: model.mode,
    pregate: model.pregatePolicy,
    pregate_hit_rate: pregated && chosen > 0
      ? (after!.pregateHits - before!.pregateHits) / chosen
      : null,
  };
}
