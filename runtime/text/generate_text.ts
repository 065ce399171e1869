/**
 * Text in, text out: a prompt (or chat messages) tokenized, {@linkcode Model.generate} run on the
 * ids, and the new tokens turned back into text pieces as they arrive, stopping at the model's EOS.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model.ts";
 * import { loadTokenizer } from "./tokenizer.ts";
 * import { generateText } from "./generate_text.ts";
 * const model = await loadModel("models/demo", { mode: "pregated" });
 * const tokenizer = await loadTokenizer("models/demo");
 * const gen = generateText(model, tokenizer, "Once upon a time", { maxTokens: 64 });
 * for await (const piece of gen) await Deno.stdout.write(new TextEncoder().encode(piece));
 * console.log(gen.stopReason, gen.stats?.decode_tokens_per_s);
 * ```
 * @module
 */
import { ArgumentError, TokenizerError } from "../base/errors.ts";
import type { GenerateOptions, GenerateStats, Model } from "../model.ts";
import { type ChatMessage, endOfTurnIds, renderChat } from "./chat.ts";
import { DecodeStream } from "./detokenize.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Options of {@linkcode generateText}. */
export interface TextGenerateOptions extends GenerateOptions {
  /**
   * Apply the model's chat template (a string prompt becomes one user message) and stop at its
   * end-of-turn token; implied when the input is a list of messages. Default false.
   */
  chat?: boolean;
  /** Add the tokenizer's special tokens (e.g. Llama's `<s>`) to a plain prompt; default true. */
  addSpecialTokens?: boolean;
  /** Leave special tokens out of the text; default true. */
  skipSpecialTokens?: boolean;
  /**
   * Stop at the tokenizer's and the model config's EOS ids (not printed), and when chatting at the
   * chat template's end-of-turn token too ({@linkcode endOfTurnIds}); default true.
   */
  stopAtEos?: boolean;
}

/** Why a generation ended: an EOS id, one of the caller's `stopIds` (decoded), or the length. */
export type StopReason = "eos" | "stop_id" | "max_tokens";

/**
 * One text generation: iterate it (once) for the text pieces; afterwards `ids`, `text`,
 * `stopReason` and `stats` tell what happened.
 *
 * @example
 * ```ts ignore
 * const gen = generateText(model, tok, "Hello", { maxTokens: 8 });
 * let all = "";
 * for await (const piece of gen) all += piece;
 * console.log(all === gen.text, gen.ids.length);
 * ```
 */
export class TextGeneration implements AsyncIterable<string> {
  /** The prompt as text (the rendered chat template when chatting). */
  readonly promptText: string;
  /** The prompt's ids. */
  readonly promptIds: readonly number[];
  /** Generated ids so far (an EOS that ended the generation included). */
  readonly ids: number[] = [];
  /** Text emitted so far. */
  text = "";
  /** Why it ended; null while running. */
  stopReason: StopReason | null = null;
  /** The model's statistics of the run; null until it ends. */
  stats: GenerateStats | null = null;

  #model: Model;
  #tokenizer: Tokenizer;
  #opts: TextGenerateOptions;
  #started = false;

  /** @internal use {@linkcode generateText}. */
  constructor(
    model: Model,
    tokenizer: Tokenizer,
    prompt: { text: string; ids: number[] },
    opts: TextGenerateOptions,
  ) {
    this.#model = model;
    this.#tokenizer = tokenizer;
    this.#opts = opts;
    this.promptText = prompt.text;
    this.promptIds = prompt.ids;
  }

  /** The text pieces, each as soon as it is complete. */
  [Symbol.asyncIterator](): AsyncGenerator<string> {
    if (this.#started) throw new ArgumentError("generation", "a TextGeneration iterates once");
    this.#started = true;
    return this.#run();
  }

  async *#run(): AsyncGenerator<string> {
    const opts = this.#opts;
    const eos = new Set(
      opts.stopAtEos === false ? [] : [
        ...this.#tokenizer.eosIds,
        ...(opts.chat ? endOfTurnIds(this.#tokenizer) : []),
      ],
    );
    const stream = new DecodeStream(this.#tokenizer, {
      context: this.promptIds,
      skipSpecialTokens: opts.skipSpecialTokens ?? true,
    });
    const userStops = new Set(opts.stopIds ?? []);
    const stopIds = [...new Set([...userStops, ...eos])];
    const statsBefore = this.#model.lastStats;
    try {
      for await (const id of this.#model.generate(this.promptIds, { ...opts, stopIds })) {
        this.ids.push(id);
        if (eos.has(id)) {
          this.stopReason = "eos";
          break;
        }
        const piece = stream.step(id);
        if (piece) {
          this.text += piece;
          yield piece;
        }
      }
      this.stopReason ??= userStops.has(this.ids.at(-1)!) ? "stop_id" : "max_tokens";
      const rest = stream.flush();
      if (rest) {
        this.text += rest;
        yield rest;
      }
    } finally {
      if (this.#model.lastStats !== statsBefore) this.stats = this.#model.lastStats;
    }
  }
}

/**
 * Generates text after `input`: a prompt, or chat messages (rendered with the model's chat
 * template). Returns a {@linkcode TextGeneration} to iterate for the text pieces.
 *
 * @example
 * ```ts ignore
 * const gen = generateText(model, tok, [{ role: "user", content: "Hi!" }], { maxTokens: 32 });
 * for await (const piece of gen) console.log(piece);
 * ```
 */
export function generateText(
  model: Model,
  tokenizer: Tokenizer,
  input: string | readonly ChatMessage[],
  opts: TextGenerateOptions = {},
): TextGeneration {
  const chat = typeof input !== "string" || opts.chat === true;
  const prompt = encodePrompt(model, tokenizer, input, opts);
  return new TextGeneration(model, tokenizer, prompt, { ...opts, chat });
}

/**
 * The text and ids a generation starts from: the chat template applied (then no special tokens
 * are added: the template holds them) or the prompt as is; checked against the model's vocabulary.
 */
export function encodePrompt(
  model: Model,
  tokenizer: Tokenizer,
  input: string | readonly ChatMessage[],
  opts: Pick<TextGenerateOptions, "chat" | "addSpecialTokens"> = {},
): { text: string; ids: number[] } {
  const chat = typeof input !== "string" || opts.chat === true;
  if (typeof input !== "string" && !Array.isArray(input)) {
    throw new ArgumentError("input", "expected a prompt string or a list of chat messages");
  }
  const text = chat
    ? renderChat(tokenizer, typeof input === "string" ? [{ role: "user", content: input }] : input)
    : input as string;
  const ids = tokenizer.encode(text, {
    addSpecialTokens: !chat && opts.addSpecialTokens !== false,
  });
  if (ids.length === 0) {
    throw new ArgumentError(
      "prompt",
      "encodes to no tokens",
      "give a non-empty prompt (this tokenizer adds no BOS token)",
    );
  }
  checkIdsFit(model, tokenizer, ids);
  return { text, ids };
}

/** Throws when the tokenizer produced an id the model has no embedding for. */
export function checkIdsFit(model: Model, tokenizer: Tokenizer, ids: readonly number[]): void {
  const V = model.config.vocabSize;
  const bad = ids.find((id) => id >= V);
  if (bad !== undefined) {
    throw new TokenizerError(
      `${tokenizer.dir}/tokenizer.json`,
      `gives token id ${bad} (${JSON.stringify(tokenizer.idToToken(bad))}) but the model's ` +
        `vocabulary has ${V} ids (config.json vocab_size)`,
      "the tokenizer and the checkpoint must belong together",
    );
  }
}
