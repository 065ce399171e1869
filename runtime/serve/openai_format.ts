/**
 * Answers in OpenAI's formats: `chat.completion` and `text_completion` objects, the streamed
 * `chat.completion.chunk` / `text_completion` chunks, and server-sent events. Pure.
 *
 * @example
 * ```ts
 * import { AnswerFormat } from "./openai_format.ts";
 * const f = new AnswerFormat("chat", "tiny");
 * const usage = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 };
 * console.log(JSON.stringify(f.complete("Hi!", "stop", usage)));
 * console.log(AnswerFormat.event(f.delta("Hi")), AnswerFormat.event("[DONE]"));
 * ```
 * @module
 */

/** Token counts of one request. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Why the text ended: a stop string or EOS (`stop`), or max_tokens (`length`). */
export type FinishReason = "stop" | "length";

/** Which endpoint answers. */
export type AnswerKind = "chat" | "completion";

/** Makes the answer objects of one request (one id and creation time for all of them). */
export class AnswerFormat {
  /** `chatcmpl-...` or `cmpl-...`. */
  readonly id: string;
  /** Seconds since the epoch. */
  readonly created: number;
  /** The model id. */
  readonly model: string;
  /** The endpoint. */
  readonly kind: AnswerKind;
  /** Streamed with `stream_options.include_usage`: every chunk carries `usage: null`. */
  readonly usageField: boolean;

  /** The format of one answer. */
  constructor(kind: AnswerKind, model: string, opts: { includeUsage?: boolean } = {}) {
    const hex = [...crypto.getRandomValues(new Uint8Array(12))]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    this.id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${hex}`;
    this.created = Math.floor(Date.now() / 1000);
    this.model = model;
    this.kind = kind;
    this.usageField = opts.includeUsage ?? false;
  }

  #head(object: string) {
    return { id: this.id, object, created: this.created, model: this.model };
  }

  /** The whole answer (`stream: false`). */
  complete(text: string, finishReason: FinishReason, usage: Usage): Record<string, unknown> {
    const choice = this.kind === "chat"
      ? {
        index: 0,
        message: { role: "assistant", content: text, refusal: null },
        logprobs: null,
        finish_reason: finishReason,
      }
      : { index: 0, text, logprobs: null, finish_reason: finishReason };
    return {
      ...this.#head(this.kind === "chat" ? "chat.completion" : "text_completion"),
      choices: [choice],
      usage,
    };
  }

  #chunk(choice: Record<string, unknown>): Record<string, unknown> {
    const object = this.kind === "chat" ? "chat.completion.chunk" : "text_completion";
    return {
      ...this.#head(object),
      choices: [{ index: 0, ...choice, logprobs: null }],
      ...(this.usageField ? { usage: null } : {}),
    };
  }

  /** The first chunk of a chat stream: the assistant's role. */
  role(): Record<string, unknown> {
    return this.#chunk({ delta: { role: "assistant", content: "" }, finish_reason: null });
  }

  /** A chunk with a piece of text. */
  delta(text: string): Record<string, unknown> {
    return this.kind === "chat"
      ? this.#chunk({ delta: { content: text }, finish_reason: null })
      : this.#chunk({ text, finish_reason: null });
  }

  /** The chunk that ends the choice. */
  finish(finishReason: FinishReason): Record<string, unknown> {
    return this.kind === "chat"
      ? this.#chunk({ delta: {}, finish_reason: finishReason })
      : this.#chunk({ text: "", finish_reason: finishReason });
  }

  /** The last chunk with `stream_options.include_usage`: no choices, the usage. */
  usage(usage: Usage): Record<string, unknown> {
    return {
      ...this.#head(this.kind === "chat" ? "chat.completion.chunk" : "text_completion"),
      choices: [],
      usage,
    };
  }

  /** One server-sent event: `data: JSON` (or `data: [DONE]`) and a blank line. */
  static event(data: Record<string, unknown> | "[DONE]"): string {
    return `data: ${data === "[DONE]" ? data : JSON.stringify(data)}\n\n`;
  }
}

/** Usage from token counts. */
export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}
