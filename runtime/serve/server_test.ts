// The HTTP server in this process on a tiny model (loopback only): bad input gets OpenAI-style
// errors and leaves the server answering; under load every accepted request gets exactly one
// correct answer and the others a 429; clients that leave and timeouts free the GPU.
import assert from "node:assert/strict";
import { OpenAI, RateLimitError } from "openai";
import { startServer } from "./server.ts";
import { readTokenizerFiles, Tokenizer } from "../text/tokenizer.ts";
import {
  expected,
  readEvents,
  type TextFixture,
  textFixture,
  waitForMetrics,
} from "./serve_test_util.ts";

const GPU = { sanitizeResources: false, sanitizeOps: false };
const CHAT = "/v1/chat/completions";

async function withFixture(fn: (f: TextFixture) => Promise<void>) {
  const f = await textFixture();
  try {
    await fn(f);
  } finally {
    await f.dispose();
  }
}

Deno.test({
  name: "every bad request gets its status and OpenAI's error shape; the server still answers",
  ...GPU,
  fn: () =>
    withFixture(async (f) => {
      const server = startServer({
        model: f.model,
        tokenizer: f.tokenizer,
        modelId: "tiny",
        port: 0,
        apiKey: "sk-test",
        maxBodyBytes: 64 << 10,
      });
      const auth = { authorization: "Bearer sk-test" };
      const post = (path: string, body: string, headers: Record<string, string> = auth) =>
        fetch(`${server.url}${path}`, { method: "POST", body, headers });
      const msg = [{ role: "user", content: "Hi" }];
      const chat = (extra: Record<string, unknown>) =>
        JSON.stringify({ model: "tiny", messages: msg, max_tokens: 2, ...extra });
      const cases: [string, () => Promise<Response>, number, string | null, string?][] = [
        ["no key", () => post(CHAT, chat({}), {}), 401, null, "invalid_api_key"],
        ["wrong key", () => post(CHAT, chat({}), { authorization: "Bearer nope" }), 401, null],
        ["malformed JSON", () => post(CHAT, '{"model": "tiny",'), 400, null, "invalid_json"],
        ["not an object", () => post(CHAT, "[]"), 400, null, "invalid_json"],
        ["invalid UTF-8", () => post(CHAT, "\xff"), 400, null],
        ["unknown model", () => post(CHAT, chat({ model: "gpt-9" })), 404, "model"],
        ["empty messages", () => post(CHAT, chat({ messages: [] })), 400, "messages"],
        [
          "unknown role",
          () => post(CHAT, chat({ messages: [{ role: "robot", content: "x" }] })),
          400,
          "messages[0].role",
        ],
        ["wrong type", () => post(CHAT, chat({ temperature: "warm" })), 400, "temperature"],
        ["negative max_tokens", () => post(CHAT, chat({ max_tokens: -3 })), 400, "max_tokens"],
        [
          "huge max_tokens",
          () => post(CHAT, chat({ max_tokens: 10 ** 9 })),
          400,
          "max_tokens",
          "context_length_exceeded",
        ],
        [
          "prompt longer than the context",
          () =>
            post(
              "/v1/completions",
              JSON.stringify({ model: "tiny", prompt: "a b ".repeat(300), max_tokens: 1 }),
            ),
          400,
          "prompt",
          "context_length_exceeded",
        ],
        ["n=2", () => post(CHAT, chat({ n: 2 })), 400, "n"],
        ["logprobs", () => post(CHAT, chat({ logprobs: true })), 400, "logprobs"],
        [
          "empty prompt",
          () => post("/v1/completions", '{"model":"tiny","prompt":""}'),
          400,
          "prompt",
        ],
        [
          "body over the limit",
          () => post(CHAT, chat({ pad: "x".repeat(70 << 10) })),
          413,
          null,
          "request_too_large",
        ],
        [
          "chunked body over the limit",
          () =>
            fetch(`${server.url}${CHAT}`, {
              method: "POST",
              headers: auth,
              body: ReadableStream.from([new TextEncoder().encode("x".repeat(70 << 10))]),
            }),
          413,
          null,
        ],
        ["unknown path", () => fetch(`${server.url}/v2/nothing`, { headers: auth }), 404, null],
        ["wrong method", () => fetch(`${server.url}${CHAT}`, { headers: auth }), 405, null],
      ];
      for (const [what, send, status, param, code] of cases) {
        const res = await send();
        const body = await res.json();
        assert.equal(res.status, status, `${what}: ${JSON.stringify(body)}`);
        assert.deepEqual(
          Object.keys(body.error).sort(),
          ["code", "message", "param", "type"],
          what,
        );
        assert.equal(typeof body.error.message, "string", what);
        assert.equal(body.error.param, param, `${what}: ${body.error.message}`);
        if (code) assert.equal(body.error.code, code, what);
        if (status === 405) assert.equal(res.headers.get("allow"), "POST");
      }
      // still answering, with the same text as before the bad requests
      const want = await expected(f, msg, { maxTokens: 4 });
      const res = await post(CHAT, chat({ max_tokens: 4, temperature: 0 }));
      const ok = await res.json();
      assert.equal(res.status, 200, JSON.stringify(ok));
      assert.equal(ok.choices[0].message.content, want.text);
      const m = await waitForMetrics(server.url, () => true, 0, auth);
      assert.equal(m.get(`pregate_requests_total{endpoint="${CHAT}",status="400"}`), 10);
      assert.equal(m.get(`pregate_requests_total{endpoint="other",status="404"}`), 1);
      assert.equal(m.get("pregate_gpu_busy"), 0);
      await server.shutdown();
      // a model without a chat template: chats are a 400 saying so, completions still work
      const files = await readTokenizerFiles(f.dir);
      const plain = startServer({
        model: f.model,
        tokenizer: new Tokenizer({ ...files, chatTemplate: null }),
        modelId: "tiny",
        port: 0,
      });
      const noChat = await fetch(`${plain.url}${CHAT}`, { method: "POST", body: chat({}) });
      assert.equal(noChat.status, 400);
      assert.equal((await noChat.json()).error.code, "no_chat_template");
      const text = await fetch(`${plain.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "tiny", prompt: "Hi", max_tokens: 2 }),
      });
      assert.equal(text.status, 200);
      assert.equal((await text.json()).usage.completion_tokens, 2);
      await plain.shutdown();
    }),
});

/** What one load-test request saw. */
type Seen =
  | { kind: "answer"; id: string; text: string; finish: string | null; chunks: number }
  | { kind: "cancelled" }
  | { kind: "rejected"; retryAfter: string | null };

Deno.test({
  name: "load: 8 clients x 3 requests, streamed, cancelled and over the queue: one answer each",
  ...GPU,
  fn: () =>
    withFixture(async (f) => {
      const server = startServer({
        model: f.model,
        tokenizer: f.tokenizer,
        modelId: "tiny",
        port: 0,
        queue: 2,
      });
      const client = new OpenAI({
        baseURL: `${server.url}/v1`,
        apiKey: "none",
        maxRetries: 0,
        timeout: 60_000,
      });
      const prompts = ["Hello", "the world", "on a", "Hello world"];
      const wants = [];
      for (const p of prompts) {
        wants.push(await expected(f, [{ role: "user", content: p }], { maxTokens: 6 }));
      }
      const one = async (c: number, r: number): Promise<Seen> => {
        const p = (c + r) % prompts.length;
        const messages = [{ role: "user" as const, content: prompts[p] }];
        const mode = (c + 2 * r) % 3; // 0 streamed, 1 whole, 2 cancelled mid-stream
        try {
          if (mode === 1) {
            const res = await client.chat.completions.create({
              model: "tiny",
              messages,
              max_tokens: 6,
              temperature: 0,
            });
            const ch = res.choices[0];
            return {
              kind: "answer",
              id: res.id,
              text: ch.message.content ?? "",
              finish: ch.finish_reason,
              chunks: 1,
            };
          }
          const stream = await client.chat.completions.create({
            model: "tiny",
            messages,
            max_tokens: mode === 2 ? 200 : 6,
            temperature: 0,
            stream: true,
          });
          let text = "", finish: string | null = null, chunks = 0, id = "";
          for await (const chunk of stream) {
            id ||= chunk.id;
            assert.equal(chunk.id, id, "one id per answer");
            chunks++;
            text += chunk.choices[0]?.delta.content ?? "";
            if (chunk.choices[0]?.finish_reason) {
              assert.equal(finish, null, "one finish chunk");
              finish = chunk.choices[0].finish_reason;
            }
            if (mode === 2 && text) {
              stream.controller.abort();
              return { kind: "cancelled" };
            }
          }
          return { kind: "answer", id, text, finish, chunks };
        } catch (e) {
          if (e instanceof RateLimitError) {
            return { kind: "rejected", retryAfter: e.headers?.get("retry-after") ?? null };
          }
          throw e;
        }
      };
      const results = await Promise.all(
        Array.from({ length: 8 }, async (_, c) => {
          const seen: [number, Seen][] = [];
          for (let r = 0; r < 3; r++) seen.push([(c + r) % prompts.length, await one(c, r)]);
          return seen;
        }),
      );
      const all = results.flat();
      assert.equal(all.length, 24);
      const answers = all.filter(([, s]) => s.kind === "answer");
      const rejected = all.filter(([, s]) => s.kind === "rejected");
      const cancelled = all.filter(([, s]) => s.kind === "cancelled");
      for (const [p, s] of answers) {
        if (s.kind !== "answer") continue;
        assert.equal(s.text, wants[p].text, `prompt ${p}`);
        assert.equal(s.finish, wants[p].finishReason);
      }
      const ids = new Set(answers.map(([, s]) => (s as { id: string }).id));
      assert.equal(ids.size, answers.length, "no answer given twice");
      for (const [, s] of rejected) {
        assert.ok(s.kind === "rejected" && Number(s.retryAfter) >= 1, "429 with Retry-After");
      }
      assert.ok(rejected.length > 0, "the queue overflowed");
      assert.ok(answers.length > 0 && cancelled.length > 0);
      // the server counted exactly what the clients saw, and the GPU is free again
      const m = await waitForMetrics(server.url, (m) => m.get("pregate_gpu_busy") === 0);
      const count = (status: number) =>
        m.get(`pregate_requests_total{endpoint="${CHAT}",status="${status}"}`) ?? 0;
      assert.equal(count(200), answers.length + cancelled.length);
      assert.equal(count(429), rejected.length);
      assert.equal(m.get("pregate_queue_depth"), 0);
      assert.equal(server.queue.granted, answers.length + cancelled.length);
      assert.equal(m.get('pregate_generations_total{outcome="cancelled"}'), cancelled.length);
      // still answering
      const again = await one(1, 0);
      assert.equal(again.kind, "answer");
      await server.shutdown();
    }),
});

Deno.test({
  name:
    "a timeout answers with an error, waiting or mid-stream; a client that leaves frees the GPU",
  ...GPU,
  fn: () =>
    withFixture(async (f) => {
      const server = startServer({
        model: f.model,
        tokenizer: f.tokenizer,
        modelId: "tiny",
        port: 0,
        timeoutSeconds: 1,
      });
      const body = (stream: boolean, maxTokens: number) =>
        JSON.stringify({
          model: "tiny",
          prompt: "Hello",
          max_tokens: maxTokens,
          temperature: 0,
          stream,
        });
      const post = (b: string, signal?: AbortSignal) =>
        fetch(`${server.url}/v1/completions`, { method: "POST", body: b, signal });
      // A streams for longer than the timeout; B waits behind it and times out in the queue.
      const a = await post(body(true, 240));
      assert.equal(a.status, 200);
      const b = await post(body(false, 4));
      assert.equal(b.status, 504);
      const bErr = await b.json();
      assert.equal(bErr.error.code, "timeout");
      const events = await readEvents(a);
      const last = JSON.parse(events.at(-1)!);
      assert.equal(last.error?.code, "timeout", events.at(-1));
      assert.ok(events.length > 2, "some text came before the timeout");
      let m = await waitForMetrics(server.url, (m) => m.get("pregate_gpu_busy") === 0);
      assert.equal(m.get("pregate_gpu_busy"), 0, "the GPU is free again");
      // A's generation timed out; B's too if A's last token freed the GPU before B's deadline
      const timedOut = m.get('pregate_generations_total{outcome="timeout"}');
      assert.ok(timedOut === 1 || timedOut === 2, `${timedOut} generations timed out`);
      assert.equal(m.get('pregate_requests_total{endpoint="/v1/completions",status="504"}'), 1);
      // a client that leaves a whole (not streamed) answer: its generation stops
      const ctrl = new AbortController();
      const c = post(body(false, 240), ctrl.signal);
      await waitForMetrics(server.url, (m) => m.get("pregate_gpu_busy") === 1);
      ctrl.abort();
      await assert.rejects(c);
      m = await waitForMetrics(server.url, (m) => m.get("pregate_gpu_busy") === 0);
      assert.equal(m.get("pregate_gpu_busy"), 0);
      assert.equal(m.get('pregate_generations_total{outcome="cancelled"}'), 1);
      assert.ok(m.get("pregate_completion_tokens_total")! < 2 * 240, "stopped early");
      await server.shutdown();
    }),
});
