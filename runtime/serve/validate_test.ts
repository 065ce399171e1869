// Request validation: good bodies become typed requests; each bad one is an ApiError with the
// status, the OpenAI error shape and the field at fault.
import assert from "node:assert/strict";
import { ApiError } from "./api_error.ts";
import {
  parseJsonBody,
  resolveMaxTokens,
  validateChatRequest,
  validateCompletionRequest,
} from "./validate.ts";

const M = "tiny";
const chat = (extra: Record<string, unknown> = {}) => ({
  model: M,
  messages: [{ role: "user", content: "Hi" }],
  ...extra,
});

/** Asserts `fn` throws an ApiError with this status, param and (optionally) code. */
function rejects(fn: () => unknown, status: number, param: string | null, code?: string) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof ApiError, String(e));
    assert.equal(e.status, status, e.message);
    assert.equal(e.param, param, e.message);
    if (code) assert.equal(e.apiCode, code, e.message);
    const body = e.body();
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
    assert.ok(body.error.message.length > 0);
    return true;
  });
}

Deno.test("good chat and completion bodies, with OpenAI's defaults", () => {
  const r = validateChatRequest(chat(), M);
  assert.deepEqual(r, {
    kind: "chat",
    model: M,
    maxTokens: null,
    temperature: 1,
    topP: 1,
    seed: null,
    stop: [],
    stream: false,
    includeUsage: false,
    messages: [{ role: "user", content: "Hi" }],
  });
  const full = validateChatRequest(
    chat({
      messages: [
        { role: "developer", content: "Be brief." },
        { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] },
        { role: "assistant", content: "ok", refusal: null, tool_calls: [] },
      ],
      max_completion_tokens: 7,
      temperature: 0,
      top_p: 0.5,
      seed: 42,
      stop: "\n",
      stream: true,
      stream_options: { include_usage: true },
      n: 1,
      presence_penalty: 0,
      logprobs: false,
      user: "someone",
      tools: null,
    }),
    M,
  );
  assert.deepEqual(full.messages.map((m) => m.role), ["system", "user", "assistant"]);
  assert.equal(full.messages[1].content, "a\nb");
  assert.equal(full.maxTokens, 7);
  assert.deepEqual([full.temperature, full.topP, full.seed], [0, 0.5, 42]);
  assert.deepEqual(full.stop, ["\n"]);
  assert.deepEqual([full.stream, full.includeUsage], [true, true]);
  const c = validateCompletionRequest({
    model: M,
    prompt: ["Once"],
    max_tokens: 3,
    stop: ["a", "b"],
  }, M);
  assert.deepEqual([c.kind, c.prompt, c.maxTokens, c.stop], ["completion", "Once", 3, ["a", "b"]]);
});

Deno.test("each bad field is a 400 naming it; an unknown model is a 404", () => {
  rejects(() => parseJsonBody("{not json"), 400, null, "invalid_json");
  rejects(() => parseJsonBody("[1, 2]"), 400, null, "invalid_json");
  rejects(() => parseJsonBody('"text"'), 400, null, "invalid_json");
  rejects(() => validateChatRequest(chat({ model: "gpt-4" }), M), 404, "model", "model_not_found");
  rejects(() => validateChatRequest(chat({ model: 3 }), M), 400, "model");
  rejects(() => validateChatRequest({ messages: [] }, M), 400, "model");
  rejects(() => validateChatRequest(chat({ messages: [] }), M), 400, "messages");
  rejects(() => validateChatRequest(chat({ messages: "Hi" }), M), 400, "messages");
  rejects(() => validateChatRequest(chat({ messages: undefined }), M), 400, "messages");
  rejects(() => validateChatRequest(chat({ messages: [7] }), M), 400, "messages[0]");
  rejects(
    () => validateChatRequest(chat({ messages: [{ role: "wizard", content: "x" }] }), M),
    400,
    "messages[0].role",
  );
  rejects(
    () => validateChatRequest(chat({ messages: [{ role: "tool", content: "x" }] }), M),
    400,
    "messages[0].role",
  );
  rejects(
    () => validateChatRequest(chat({ messages: [{ role: "user", content: 5 }] }), M),
    400,
    "messages[0].content",
  );
  rejects(
    () =>
      validateChatRequest(
        chat({ messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] }),
        M,
      ),
    400,
    "messages[0].content[0]",
  );
  rejects(
    () => validateChatRequest(chat({ messages: [{ role: "user", content: "x", name: "bob" }] }), M),
    400,
    "messages[0].name",
  );
  for (const v of [-5, 0, 1.5, "10", true]) {
    rejects(() => validateChatRequest(chat({ max_tokens: v }), M), 400, "max_tokens");
  }
  rejects(() => validateChatRequest(chat({ max_tokens: 2 ** 40 }), M), 400, "max_tokens");
  rejects(
    () => validateChatRequest(chat({ max_completion_tokens: -1 }), M),
    400,
    "max_completion_tokens",
  );
  rejects(
    () => validateChatRequest(chat({ max_tokens: 4, max_completion_tokens: 5 }), M),
    400,
    "max_completion_tokens",
  );
  for (const v of [-0.1, 2.5, "hot", NaN]) {
    rejects(() => validateChatRequest(chat({ temperature: v }), M), 400, "temperature");
  }
  for (const v of [0, 1.01, "x"]) {
    rejects(() => validateChatRequest(chat({ top_p: v }), M), 400, "top_p");
  }
  for (const v of [-1, 0.5, 2 ** 32, "7"]) {
    rejects(() => validateChatRequest(chat({ seed: v }), M), 400, "seed");
  }
  for (const v of ["", ["a", ""], ["a", "b", "c", "d", "e"], 5, [1]]) {
    rejects(() => validateChatRequest(chat({ stop: v }), M), 400, "stop");
  }
  rejects(() => validateChatRequest(chat({ stream: "yes" }), M), 400, "stream");
  rejects(
    () => validateChatRequest(chat({ stream_options: { include_usage: true } }), M),
    400,
    "stream_options",
  );
  rejects(
    () => validateChatRequest(chat({ stream: true, stream_options: { foo: 1 } }), M),
    400,
    "stream_options",
  );
  rejects(() => validateChatRequest(chat({ n: 2 }), M), 400, "n", "unsupported_value");
  rejects(() => validateChatRequest(chat({ logprobs: true }), M), 400, "logprobs");
  rejects(() => validateChatRequest(chat({ top_logprobs: 3 }), M), 400, "top_logprobs");
  rejects(() => validateChatRequest(chat({ presence_penalty: 0.5 }), M), 400, "presence_penalty");
  rejects(() => validateChatRequest(chat({ logit_bias: { "5": 10 } }), M), 400, "logit_bias");
  rejects(() => validateChatRequest(chat({ tools: [{}] }), M), 400, "tools");
  rejects(
    () => validateChatRequest(chat({ response_format: { type: "json_object" } }), M),
    400,
    "response_format",
  );
  rejects(
    () => validateChatRequest(chat({ temprature: 0 }), M),
    400,
    "temprature",
    "unknown_parameter",
  );
  rejects(() => validateChatRequest([chat()], M), 400, null);
  // completions
  const comp = (extra: Record<string, unknown>) => ({ model: M, prompt: "x", ...extra });
  rejects(() => validateCompletionRequest(comp({ prompt: undefined }), M), 400, "prompt");
  rejects(() => validateCompletionRequest(comp({ prompt: ["a", "b"] }), M), 400, "prompt");
  rejects(() => validateCompletionRequest(comp({ prompt: [1, 2] }), M), 400, "prompt");
  rejects(() => validateCompletionRequest(comp({ logprobs: 2 }), M), 400, "logprobs");
  rejects(() => validateCompletionRequest(comp({ echo: true }), M), 400, "echo");
  rejects(() => validateCompletionRequest(comp({ best_of: 3 }), M), 400, "best_of");
  rejects(() => validateCompletionRequest(comp({ messages: [] }), M), 400, "messages");
  rejects(() => validateCompletionRequest(comp({ model: "other" }), M), 404, "model");
});

Deno.test("max_tokens against the context: the rest by default, too long prompts rejected", () => {
  assert.equal(resolveMaxTokens(10, null, 64, "prompt"), 54);
  assert.equal(resolveMaxTokens(10, 54, 64, "prompt"), 54);
  rejects(
    () => resolveMaxTokens(10, 55, 64, "prompt"),
    400,
    "max_tokens",
    "context_length_exceeded",
  );
  rejects(
    () => resolveMaxTokens(64, null, 64, "messages"),
    400,
    "messages",
    "context_length_exceeded",
  );
  rejects(() => resolveMaxTokens(100, 1, 64, "prompt"), 400, "prompt", "context_length_exceeded");
});
