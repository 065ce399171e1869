/**
 * One completion on the model: the request's prompt encoded and checked against the context,
 * then a text generation whose pieces pass through the stop strings and stop when the request's
 * signal aborts (a client gone, a timeout). The model is left at the next token; its generator
 * has finished once {@linkcode CompletionRun.finished} settles, and only then may the next
 * generation start.
 *
 * @example
 * ```ts ignore
 * import { CompletionRun, prepareCompletion } from "./completion.ts";
 * const prepared = prepareCompletion(model, tokenizer, contextLength, request);
 * const run = new CompletionRun(model, tokenizer, prepared);
 * for await (const piece of run.pieces(signal)) console.log(piece);
 * await run.finished;
 * console.log(run.finishReason, run.completionTokens);
 * ```
 * @module
 */
import { ArgumentError, TokenizerError } from "../base/errors.ts";
import type { GenerateStats, Model } from "../model.ts";
import { encodePrompt, TextGeneration } from "../text/generate_text.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import { ApiError } from "./api_error.ts";
import type { FinishReason } from "./openai_format.ts";
import { StopMatcher } from "./stop_strings.ts";
import { type ChatRequest, type CompletionRequest, resolveMaxTokens } from "./validate.ts";

/** A request with its prompt encoded and its token budget known. */
export interface PreparedCompletion {
  request: ChatRequest | CompletionRequest;
  /** The prompt (the rendered chat template for chats) and its ids. */
  prompt: { text: string; ids: number[] };
  /** New tokens at most. */
  maxTokens: number;
}

/**
 * Encodes the request's prompt (a chat through the model's template) and fits it to the context;
 * a prompt the template rejects, that encodes to nothing, or that is too long is a 400.
 */
export function prepareCompletion(
  model: Model,
  tokenizer: Tokenizer,
  contextLength: number,
  request: ChatRequest | CompletionRequest,
): PreparedCompletion {
  const param = request.kind === "chat" ? "messages" : "prompt";
  let prompt: { text: string; ids: number[] };
  try {
    prompt = encodePrompt(
      model,
      tokenizer,
      request.kind === "chat" ? request.messages : request.prompt,
    );
  } catch (e) {
    if (e instanceof TokenizerError && tokenizer.chatTemplate === null && request.kind === "chat") {
      throw ApiError.badRequest(
        "messages",
        "this model has no chat template; send a plain prompt to /v1/completions",
        "no_chat_template",
      );
    }
    if (e instanceof ArgumentError) throw ApiError.badRequest(param, e.message);
    throw e;
  }
  const maxTokens = resolveMaxTokens(prompt.ids.length, request.maxTokens, contextLength, param);
  return { request, prompt, maxTokens };
}

/** Rejects with `signal.reason` once `signal` aborts, else settles as `p` does. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** A running completion (see the module doc). */
export class CompletionRun {
  /** Why it ended; null until it has. */
  finishReason: FinishReason | null = null;
  /**
   * Settles once the model's generator has finished (after the last token, an error, or the
   * token after an abort): the GPU is free again.
   */
  finished: Promise<void> = Promise.resolve();

  #generation: TextGeneration;
  #stops: StopMatcher;

  /** A completion of `prepared` (`seed` for sampling: the request's, or the server's pick). */
  constructor(model: Model, tokenizer: Tokenizer, prepared: PreparedCompletion, seed = 0) {
    const r = prepared.request;
    // The prompt is already encoded: the generation starts from its ids.
    this.#generation = new TextGeneration(model, tokenizer, prepared.prompt, {
      maxTokens: prepared.maxTokens,
      chat: r.kind === "chat",
      temperature: r.temperature,
      topP: r.topP,
      seed: r.seed ?? seed,
    });
    this.#stops = new StopMatcher(r.stop);
  }

  /** Prompt tokens. */
  get promptTokens(): number {
    return this.#generation.promptIds.length;
  }

  /** Tokens generated so far (an EOS that ended the text included). */
  get completionTokens(): number {
    return this.#generation.ids.length;
  }

  /** The model's statistics of the run, once it has finished. */
  get stats(): GenerateStats | null {
    return this.#generation.stats;
  }

  /**
   * The text pieces, stop strings applied. Throws `signal.reason` when `signal` aborts: at once,
   * while the model's generator stops at its next token ({@linkcode CompletionRun.finished}).
   */
  async *pieces(signal: AbortSignal): AsyncGenerator<string> {
    const it = this.#generation[Symbol.asyncIterator]();
    let finish: FinishReason | null = null;
    try {
      while (true) {
        const next = await abortable(it.next(), signal);
        if (next.done) break;
        const step = this.#stops.push(next.value);
        if (step.text) yield step.text;
        if (step.stopped) {
          finish = "stop";
          break;
        }
      }
      if (finish === null) {
        const rest = this.#stops.flush();
        if (rest) yield rest;
        finish = this.#generation.stopReason === "max_tokens" ? "length" : "stop";
      }
      this.finishReason = finish;
    } finally {
      // Not awaited: after an abort, return() waits for the pending token; the caller waits on
      // `finished` before the GPU goes to the next request.
      this.finished = it.return(undefined).then(() => {}, () => {});
    }
  }
}
