/**
 * Request validation for the OpenAI-compatible server: a JSON body in, a typed request out, or an
 * {@linkcode ApiError} naming the field at fault (HTTP 400, or 404 for an unknown model). Pure: no
 * HTTP, no model.
 *
 * Fields follow OpenAI's API. A `null` field counts as absent. Fields the server cannot honour are
 * rejected unless they hold their no-op value (`n: 1`, `presence_penalty: 0`, `logprobs: false`,
 * ...): nothing that changes the answer is silently ignored. `user`, `metadata`, `store`,
 * `service_tier` and `parallel_tool_calls` are accepted and have no effect.
 *
 * @example
 * ```ts
 * import { validateChatRequest } from "./validate.ts";
 * const r = validateChatRequest({
 *   model: "demo",
 *   messages: [{ role: "user", content: "Hi" }],
 *   max_tokens: 16,
 *   temperature: 0,
 * }, "demo");
 * console.log(r.maxTokens, r.messages[0].content); // 16 "Hi"
 * ```
 * @module
 */
import type { ChatMessage } from "../text/chat.ts";
import { ApiError } from "./api_error.ts";

/** What both endpoints take: sampling, stopping and streaming. */
export interface SamplingRequest {
  /** The model id asked for (the one served). */
  model: string;
  /** Most new tokens; null: the rest of the context. */
  maxTokens: number | null;
  /** 0 = greedy; default 1 (OpenAI's default). */
  temperature: number;
  /** Nucleus mass in (0, 1]; default 1. */
  topP: number;
  /** Seed of the sampler; null: the server picks one. */
  seed: number | null;
  /** Strings that end the text (not included), at most {@linkcode MAX_STOP_STRINGS}. */
  stop: string[];
  /** Answer with server-sent events. */
  stream: boolean;
  /** With `stream`: send a last chunk with the usage (`stream_options.include_usage`). */
  includeUsage: boolean;
}

/** A validated `POST /v1/chat/completions` body. */
export interface ChatRequest extends SamplingRequest {
  kind: "chat";
  /** The conversation (`developer` messages become `system`). */
  messages: ChatMessage[];
}

/** A validated `POST /v1/completions` body. */
export interface CompletionRequest extends SamplingRequest {
  kind: "completion";
  /** The prompt text. */
  prompt: string;
}

/** Most stop strings per request (OpenAI's limit). */
export const MAX_STOP_STRINGS = 4;
/** Highest temperature accepted (OpenAI's range is [0, 2]). */
export const MAX_TEMPERATURE = 2;

const ROLES = new Set(["system", "developer", "user", "assistant"]);
const INERT = new Set(["user", "metadata", "store", "service_tier", "parallel_tool_calls"]);

/** Fields accepted only with their no-op value, and what that value is. */
const NO_OP: Record<string, [(v: unknown) => boolean, string]> = {
  n: [(v) => v === 1, "only n=1 is supported (one choice per request)"],
  presence_penalty: [(v) => v === 0, "penalties are not supported; omit it or send 0"],
  frequency_penalty: [(v) => v === 0, "penalties are not supported; omit it or send 0"],
  logit_bias: [(v) => isRecord(v) && Object.keys(v).length === 0, "logit_bias is not supported"],
  logprobs: [
    (v) => v === false || v === 0,
    "logprobs are not supported (the GPU picks tokens without reading the logits back); " +
    "omit it",
  ],
  top_logprobs: [(v) => v === 0, "logprobs are not supported; omit it"],
  tools: [(v) => Array.isArray(v) && v.length === 0, "tools (function calling) are not supported"],
  tool_choice: [(v) => v === "none", "tools (function calling) are not supported"],
  response_format: [
    (v) => isRecord(v) && v.type === "text" && Object.keys(v).length === 1,
    'only {"type": "text"} is supported',
  ],
  echo: [(v) => v === false, "echo is not supported"],
  suffix: [(v) => v === "", "suffix (insertion) is not supported"],
  best_of: [(v) => v === 1, "only best_of=1 is supported"],
};

const COMMON = [
  "model",
  "max_tokens",
  "temperature",
  "top_p",
  "seed",
  "stop",
  "stream",
  "stream_options",
  "n",
  "presence_penalty",
  "frequency_penalty",
  "logit_bias",
  "logprobs",
];
const CHAT_FIELDS = new Set([
  ...COMMON,
  "messages",
  "max_completion_tokens",
  "top_logprobs",
  "tools",
  "tool_choice",
  "response_format",
]);
const COMPLETION_FIELDS = new Set([...COMMON, "prompt", "echo", "suffix", "best_of"]);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Parses a request body; malformed JSON or a non-object is a 400. */
export function parseJsonBody(text: string): Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw ApiError.badRequest(
      null,
      `the body is not valid JSON (${(e as Error).message})`,
      "invalid_json",
    );
  }
  if (!isRecord(body)) {
    throw ApiError.badRequest(
      null,
      `expected a JSON object, got ${describe(body)}`,
      "invalid_json",
    );
  }
  return body;
}

/** The body's fields, `null` ones left out; unknown fields and non-default no-op fields rejected. */
function presentFields(body: unknown, known: Set<string>): Record<string, unknown> {
  if (!isRecord(body)) {
    throw ApiError.badRequest(null, `expected a JSON object, got ${describe(body)}`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    if (value === null || value === undefined) continue;
    if (INERT.has(key)) continue;
    if (!known.has(key)) {
      throw ApiError.badRequest(key, "unrecognized request argument", "unknown_parameter");
    }
    const noOp = NO_OP[key];
    if (noOp && !noOp[0](value)) {
      throw ApiError.badRequest(key, `${noOp[1]} (got ${describe(value)})`, "unsupported_value");
    }
    out[key] = value;
  }
  return out;
}

function integer(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw ApiError.badRequest(
      name,
      `expected an integer in [${min}, ${max}], got ${describe(v)}`,
      typeof v === "number" ? "invalid_value" : "invalid_type",
    );
  }
  return v;
}

function numberIn(v: unknown, name: string, ok: (x: number) => boolean, range: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || !ok(v)) {
    throw ApiError.badRequest(
      name,
      `expected a number in ${range}, got ${describe(v)}`,
      typeof v === "number" ? "invalid_value" : "invalid_type",
    );
  }
  return v;
}

function boolean(v: unknown, name: string): boolean {
  if (typeof v !== "boolean") {
    throw ApiError.badRequest(name, `expected true or false, got ${describe(v)}`, "invalid_type");
  }
  return v;
}

function stopStrings(v: unknown): string[] {
  if (v === undefined) return [];
  const list = typeof v === "string" ? [v] : v;
  if (
    !Array.isArray(list) || list.length > MAX_STOP_STRINGS ||
    !list.every((s) => typeof s === "string" && s.length > 0)
  ) {
    throw ApiError.badRequest(
      "stop",
      `expected a non-empty string or a list of at most ${MAX_STOP_STRINGS} non-empty strings, ` +
        `got ${describe(v)}`,
      "invalid_value",
    );
  }
  return list;
}

/** The fields both endpoints share, checked. */
function sampling(
  f: Record<string, unknown>,
  modelId: string,
  maxTokensField: "max_tokens" | "max_completion_tokens",
): SamplingRequest {
  if (typeof f.model !== "string") {
    throw ApiError.badRequest(
      "model",
      `expected the model id '${modelId}', got ${describe(f.model)}`,
    );
  }
  if (f.model !== modelId) {
    throw new ApiError(404, `The model '${f.model}' does not exist; this server has '${modelId}'`, {
      param: "model",
      code: "model_not_found",
    });
  }
  const stream = f.stream === undefined ? false : boolean(f.stream, "stream");
  let includeUsage = false;
  if (f.stream_options !== undefined) {
    const o = f.stream_options;
    if (!stream) {
      throw ApiError.badRequest("stream_options", "only allowed when stream is true");
    }
    if (!isRecord(o) || Object.keys(o).some((k) => k !== "include_usage")) {
      throw ApiError.badRequest(
        "stream_options",
        `expected {"include_usage": boolean}, got ${describe(o)}`,
      );
    }
    includeUsage = o.include_usage === undefined
      ? false
      : boolean(o.include_usage, "stream_options.include_usage");
  }
  return {
    model: f.model,
    maxTokens: f[maxTokensField] === undefined
      ? null
      : integer(f[maxTokensField], maxTokensField, 1, 2 ** 31 - 1),
    temperature: f.temperature === undefined ? 1 : numberIn(
      f.temperature,
      "temperature",
      (x) => x >= 0 && x <= MAX_TEMPERATURE,
      `[0, ${MAX_TEMPERATURE}]`,
    ),
    topP: f.top_p === undefined ? 1 : numberIn(f.top_p, "top_p", (x) => x > 0 && x <= 1, "(0, 1]"),
    seed: f.seed === undefined ? null : integer(f.seed, "seed", 0, 2 ** 32 - 1),
    stop: stopStrings(f.stop),
    stream,
    includeUsage,
  };
}

function messageText(content: unknown, name: string): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part, i) => {
      if (!isRecord(part) || part.type !== "text" || typeof part.text !== "string") {
        throw ApiError.badRequest(
          `${name}[${i}]`,
          `only text parts ({"type": "text", "text": string}) are supported, got ${describe(part)}`,
        );
      }
      return part.text;
    }).join("\n");
  }
  throw ApiError.badRequest(
    name,
    `expected a string or a list of text parts, got ${describe(content)}`,
  );
}

function messages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) {
    throw ApiError.badRequest(
      "messages",
      `expected a non-empty list of {role, content}, got ${describe(v)}`,
    );
  }
  return v.map((m, i) => {
    const name = `messages[${i}]`;
    if (!isRecord(m)) {
      throw ApiError.badRequest(name, `expected {role, content}, got ${describe(m)}`);
    }
    for (const [key, value] of Object.entries(m)) {
      const empty = value === null || (Array.isArray(value) && value.length === 0);
      if (key !== "role" && key !== "content" && !empty) {
        throw ApiError.badRequest(
          `${name}.${key}`,
          "is not supported (messages have a role and text content)",
          "unknown_parameter",
        );
      }
    }
    if (typeof m.role !== "string" || !ROLES.has(m.role)) {
      throw ApiError.badRequest(
        `${name}.role`,
        `expected one of ${[...ROLES].join(", ")}, got ${describe(m.role)}`,
        "invalid_value",
      );
    }
    return {
      role: m.role === "developer" ? "system" : m.role,
      content: messageText(m.content, `${name}.content`),
    };
  });
}

/**
 * Checks a `POST /v1/chat/completions` body.
 *
 * @example
 * ```ts
 * import { validateChatRequest } from "./validate.ts";
 * const req = validateChatRequest({ model: "m", messages: [{ role: "user", content: "Hi" }] }, "m");
 * console.log(req.kind, req.messages); // chat [{ role: "user", content: "Hi" }]
 * try {
 *   validateChatRequest({ model: "m", messages: [] }, "m");
 * } catch (e) {
 *   console.log((e as Error).message); // messages: expected a non-empty list of {role, content}, got []
 * }
 * ```
 */
export function validateChatRequest(body: unknown, modelId: string): ChatRequest {
  const f = presentFields(body, CHAT_FIELDS);
  if (
    f.max_tokens !== undefined && f.max_completion_tokens !== undefined &&
    f.max_tokens !== f.max_completion_tokens
  ) {
    throw ApiError.badRequest(
      "max_completion_tokens",
      `differs from max_tokens (${describe(f.max_completion_tokens)} vs ${
        describe(f.max_tokens)
      }): send one of them`,
    );
  }
  const field = f.max_completion_tokens === undefined ? "max_tokens" : "max_completion_tokens";
  const s = sampling(f, modelId, field);
  return { kind: "chat", ...s, messages: messages(f.messages) };
}

/**
 * Checks a `POST /v1/completions` body. The prompt is a string (or a list holding one string).
 *
 * @example
 * ```ts
 * import { validateCompletionRequest } from "./validate.ts";
 * validateCompletionRequest({ model: "m", prompt: "Once", max_tokens: 8 }, "m").prompt; // "Once"
 * ```
 */
export function validateCompletionRequest(body: unknown, modelId: string): CompletionRequest {
  const f = presentFields(body, COMPLETION_FIELDS);
  const s = sampling(f, modelId, "max_tokens");
  const p = Array.isArray(f.prompt) && f.prompt.length === 1 ? f.prompt[0] : f.prompt;
  if (typeof p !== "string") {
    throw ApiError.badRequest(
      "prompt",
      `expected a string (or a list of one string: one prompt per request), got ${
        describe(f.prompt)
      }`,
    );
  }
  return { kind: "completion", ...s, prompt: p };
}

/**
 * The number of new tokens to generate: the request's `max_tokens`, or the rest of the context;
 * a 400 (`context_length_exceeded`) when the prompt, or the prompt and `max_tokens`, do not fit.
 *
 * @example
 * ```ts
 * import { resolveMaxTokens } from "./validate.ts";
 * resolveMaxTokens(10, null, 64, "prompt"); // 54
 * ```
 */
export function resolveMaxTokens(
  promptTokens: number,
  requested: number | null,
  contextLength: number,
  promptParam: string,
): number {
  if (promptTokens >= contextLength) {
    throw ApiError.badRequest(
      promptParam,
      `the prompt is ${promptTokens} tokens, and the context holds ${contextLength} ` +
        `(prompt and new tokens): no room for a new token`,
      "context_length_exceeded",
    );
  }
  if (requested === null) return contextLength - promptTokens;
  if (promptTokens + requested > contextLength) {
    throw ApiError.badRequest(
      "max_tokens",
      `${promptTokens} prompt tokens + ${requested} new tokens exceed the context length ` +
        `${contextLength}; ask for at most ${contextLength - promptTokens}`,
      "context_length_exceeded",
    );
  }
  return requested;
}
