// The answer objects carry OpenAI's fields, one id per answer, and SSE framing.
import assert from "node:assert/strict";
import { AnswerFormat, usageOf } from "./openai_format.ts";

Deno.test("chat and text completion objects, chunks and events in OpenAI's shapes", () => {
  const usage = usageOf(5, 3);
  assert.deepEqual(usage, { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
  const chat = new AnswerFormat("chat", "tiny", { includeUsage: true });
  assert.match(chat.id, /^chatcmpl-[0-9a-f]{24}$/);
  const whole = chat.complete("Hi!", "stop", usage);
  assert.equal(whole.object, "chat.completion");
  assert.deepEqual(whole.choices, [{
    index: 0,
    message: { role: "assistant", content: "Hi!", refusal: null },
    logprobs: null,
    finish_reason: "stop",
  }]);
  assert.deepEqual(whole.usage, usage);
  const role = chat.role(), delta = chat.delta("Hi"), fin = chat.finish("length");
  for (const c of [role, delta, fin]) {
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.id, chat.id);
    assert.equal(c.usage, null, "with include_usage every chunk has usage: null");
  }
  assert.deepEqual((role.choices as unknown[])[0], {
    index: 0,
    delta: { role: "assistant", content: "" },
    finish_reason: null,
    logprobs: null,
  });
  assert.deepEqual((fin.choices as { delta: unknown }[])[0].delta, {});
  assert.deepEqual(chat.usage(usage).choices, []);
  const text = new AnswerFormat("completion", "tiny");
  assert.match(text.id, /^cmpl-/);
  assert.notEqual(text.id, chat.id);
  assert.equal(text.complete("x", "length", usage).object, "text_completion");
  const piece = text.delta("abc");
  assert.equal("usage" in piece, false);
  assert.deepEqual(piece.choices, [{ index: 0, text: "abc", finish_reason: null, logprobs: null }]);
  assert.equal(AnswerFormat.event("[DONE]"), "data: [DONE]\n\n");
  assert.equal(AnswerFormat.event({ a: "line\nbreak" }), 'data: {"a":"line\\nbreak"}\n\n');
});
