/**
 * Chat prompts: a model's chat template (Jinja, from tokenizer_config.json or chat_template.jinja)
 * rendered with `@huggingface/jinja` as transformers' `apply_chat_template(..., tokenize=False)`
 * renders it: `messages`, `add_generation_prompt` and the special-token strings (`bos_token`,
 * `eos_token`, ...) as variables, blocks trimmed, `raise_exception` available.
 *
 * @example
 * ```ts ignore
 * import { renderChat } from "./chat.ts";
 * const text = renderChat(tokenizer, [{ role: "user", content: "Hello!" }]);
 * // "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!..."
 * const ids = tokenizer.encode(text); // the template already holds the special tokens
 * ```
 * @module
 */
import { Template } from "npm:@huggingface/jinja@0.5.13";
import { ArgumentError, TokenizerError } from "../base/errors.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** One chat message. */
export interface ChatMessage {
  /** `system`, `user` or `assistant` (what the template accepts). */
  role: string;
  /** The message text. */
  content: string;
}

/** Options of {@linkcode renderChat}. */
export interface ChatOptions {
  /** End with the opening of an assistant turn, for generation; default true. */
  addGenerationPrompt?: boolean;
}

const templates = new WeakMap<Tokenizer, Template>();

/**
 * The chat template of `tokenizer`'s model applied to `messages`.
 * Throws {@linkcode TokenizerError} when the model has no template (or the template does not
 * parse), {@linkcode ArgumentError} when the template rejects the messages (`raise_exception`).
 *
 * @example
 * ```ts ignore
 * renderChat(tok, [{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
 * ```
 */
export function renderChat(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  opts: ChatOptions = {},
): string {
  checkMessages(messages);
  const template = compiled(tokenizer);
  try {
    return template.render({
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: opts.addGenerationPrompt ?? true,
      ...tokenizer.specialTokens,
    });
  } catch (e) {
    throw new ArgumentError(
      "messages",
      `the chat template of ${tokenizer.dir} rejected them: ${(e as Error).message}`,
      "check the roles and their order against the model's template",
    );
  }
}

/**
 * The special token that closes a turn in the model's chat template (`<|im_end|>`, `<|eot_id|>`,
 * `</s>`, ...), as ids: a chat reply ends there even when the model's EOS is another token. Found
 * by rendering an assistant turn and reading the special token right after its text; empty when
 * the model has no template, the template rejects the probe, or no special token follows.
 *
 * @example
 * ```ts ignore
 * console.log(endOfTurnIds(tok)); // [2] for ChatML's <|im_end|> at id 2
 * ```
 */
export function endOfTurnIds(tokenizer: Tokenizer): number[] {
  if (tokenizer.chatTemplate === null) return [];
  const probe = "\u2063probe\u2063";
  let text: string;
  try {
    text = renderChat(tokenizer, [
      { role: "user", content: "hi" },
      { role: "assistant", content: probe },
    ], { addGenerationPrompt: false });
  } catch {
    return [];
  }
  const at = text.lastIndexOf(probe);
  if (at < 0) return [];
  const first = tokenizer.encode(text.slice(at + probe.length).trimStart())[0];
  return first !== undefined && tokenizer.isSpecial(first) ? [first] : [];
}

function compiled(tokenizer: Tokenizer): Template {
  let t = templates.get(tokenizer);
  if (t) return t;
  const file = `${tokenizer.dir}/tokenizer_config.json`;
  if (tokenizer.chatTemplate === null) {
    throw new TokenizerError(
      file,
      "has no chat_template (nor is there a chat_template.jinja): the model has no chat format",
      "drop --chat and give the prompt as plain text",
    );
  }
  try {
    t = new Template(tokenizer.chatTemplate);
  } catch (e) {
    throw new TokenizerError(
      file,
      `chat_template does not parse: ${(e as Error).message}`,
      undefined,
      { cause: e },
    );
  }
  templates.set(tokenizer, t);
  return t;
}

function checkMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new ArgumentError("messages", "expected a non-empty list of {role, content}");
  }
  messages.forEach((m, i) => {
    if (!m || typeof m.role !== "string" || typeof m.content !== "string") {
      throw new ArgumentError(
        `messages[${i}]`,
        `expected {role: string, content: string}, got ${JSON.stringify(m)}`,
      );
    }
  });
}
