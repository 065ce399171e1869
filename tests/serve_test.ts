// `pregate serve` as users run it (a subprocess on loopback) answering the official `openai`
// client: chat and completions, streamed and not, give generateText's text for the same prompt
// and seed, with the right usage; stop strings, the API key, and a clean shutdown.
import assert from "node:assert/strict";
import { AuthenticationError, BadRequestError, NotFoundError, OpenAI } from "openai";
import { expected, type TextFixture, textFixture } from "../runtime/serve/serve_test_util.ts";
import { TEST_CONTEXT } from "../runtime/serve/serve_test_util.ts";

const cli = new URL("../cli.ts", import.meta.url).pathname;
const GPU = { sanitizeResources: false, sanitizeOps: false };

/** Starts `pregate serve --port 0 ...`; resolves with its URL once it listens. */
async function serve(dir: string, ...args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", cli, "serve", "--model", dir, "--port", "0", ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/listening on (\S+)/.test(out)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`pregate serve exited before listening:\n${out}\n${await stderr}`);
    out += value;
  }
  lines.releaseLock();
  const rest = child.stdout.cancel().catch(() => {});
  return { url: /listening on (\S+)/.exec(out)![1], child, stderr, stdout: out, rest };
}

Deno.test({
  name: "pregate serve answers the openai client with generateText's text and the right usage",
  ...GPU,
  fn: async () => {
    const f: TextFixture = await textFixture();
    const server = await serve(f.dir, "--context", String(TEST_CONTEXT), "--api-key", "sk-test");
    try {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/, "loopback unless told otherwise");
      const client = new OpenAI({
        baseURL: `${server.url}/v1`,
        apiKey: "sk-test",
        maxRetries: 0,
        timeout: 30_000,
      });
      const models = await client.models.list();
      assert.deepEqual(models.data.map((m) => m.id), ["tiny"]);
      const messages = [{ role: "user" as const, content: "Hello the world" }];
      const chatWant = await expected(f, messages, { maxTokens: 12 });

      // chat, whole
      const chat = await client.chat.completions.create({
        model: "tiny",
        messages,
        max_tokens: 12,
        temperature: 0,
      });
      assert.equal(chat.object, "chat.completion");
      assert.equal(chat.choices.length, 1);
      assert.equal(chat.choices[0].message.role, "assistant");
      assert.equal(chat.choices[0].message.content, chatWant.text);
      assert.equal(chat.choices[0].finish_reason, chatWant.finishReason);
      assert.deepEqual(chat.usage, {
        prompt_tokens: chatWant.promptTokens,
        completion_tokens: chatWant.completionTokens,
        total_tokens: chatWant.promptTokens + chatWant.completionTokens,
      });

      // chat, streamed, with usage
      const stream = await client.chat.completions.create({
        model: "tiny",
        messages,
        max_completion_tokens: 12,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks = await Array.fromAsync(stream);
      assert.equal(chunks[0].choices[0].delta.role, "assistant");
      assert.ok(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0].id));
      const streamed = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
      assert.equal(streamed, chatWant.text);
      assert.ok(chunks.length >= 4, "content came in pieces");
      const finishes = chunks.flatMap((c) => c.choices[0]?.finish_reason ?? []);
      assert.deepEqual(finishes, [chatWant.finishReason]);
      assert.deepEqual(chunks.at(-1)!.choices, []);
      assert.equal(chunks.at(-1)!.usage?.completion_tokens, chatWant.completionTokens);
      assert.equal(chunks.at(-1)!.usage?.prompt_tokens, chatWant.promptTokens);

      // completions, whole and streamed
      const prompt = "Hello the world, in";
      const want = await expected(f, prompt, { maxTokens: 10 });
      const comp = await client.completions.create({
        model: "tiny",
        prompt,
        max_tokens: 10,
        temperature: 0,
      });
      assert.equal(comp.object, "text_completion");
      assert.equal(comp.choices[0].text, want.text);
      assert.equal(comp.choices[0].finish_reason, want.finishReason);
      assert.equal(comp.usage?.prompt_tokens, want.promptTokens);
      assert.equal(comp.usage?.completion_tokens, want.completionTokens);
      const compStream = await client.completions.create({
        model: "tiny",
        prompt,
        max_tokens: 10,
        temperature: 0,
        stream: true,
      });
      let text = "";
      const reasons: string[] = [];
      for await (const c of compStream) {
        text += c.choices[0].text;
        if (c.choices[0].finish_reason) reasons.push(c.choices[0].finish_reason);
      }
      assert.equal(text, want.text);
      assert.deepEqual(reasons, [want.finishReason]);

      // a stop string that spans tokens: the text ends before it, finish_reason "stop"
      const long = await expected(f, prompt, { maxTokens: 24 });
      const stop = long.text.slice(4, 9);
      assert.ok(stop.length === 5, `a stop string from ${JSON.stringify(long.text)}`);
      for (const streamIt of [false, true]) {
        const params = { model: "tiny", prompt, max_tokens: 24, temperature: 0, stop: [stop] };
        let got = "", reason: string | null = null;
        if (streamIt) {
          const s = await client.completions.create({ ...params, stream: true });
          for await (const c of s) {
            got += c.choices[0].text;
            reason = c.choices[0].finish_reason ?? reason;
          }
        } else {
          const r = await client.completions.create(params);
          got = r.choices[0].text;
          reason = r.choices[0].finish_reason;
        }
        assert.equal(got, long.text.slice(0, long.text.indexOf(stop)), `stream ${streamIt}`);
        assert.equal(reason, "stop");
      }

      // sampling: the same seed gives generateText's tokens for that seed and temperature
      const sampled = await expected(f, messages, { maxTokens: 8, temperature: 0.9, seed: 7 });
      for (let i = 0; i < 2; i++) {
        const r = await client.chat.completions.create({
          model: "tiny",
          messages,
          max_tokens: 8,
          temperature: 0.9,
          seed: 7,
        });
        assert.equal(r.choices[0].message.content, sampled.text);
      }

      // errors through the client
      await assert.rejects(
        client.chat.completions.create({ model: "tiny", messages, n: 2 }),
        (e) => e instanceof BadRequestError && e.param === "n",
      );
      await assert.rejects(
        client.chat.completions.create({ model: "gpt-4o", messages }),
        NotFoundError,
      );
      const stranger = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "wrong", maxRetries: 0 });
      await assert.rejects(stranger.models.list(), AuthenticationError);
      const health = await fetch(`${server.url}/health`);
      assert.equal(health.status, 401, "every request needs the key");
      await health.body?.cancel();
    } finally {
      server.child.kill("SIGTERM");
      const status = await server.child.status;
      await server.rest;
      const stderr = await server.stderr;
      await f.dispose();
      assert.equal(status.code, 0, stderr);
      assert.match(stderr, /loaded 'tiny'/);
      assert.match(stderr, /shutting down/);
    }
  },
});

Deno.test("pregate serve rejects bad flags before loading", async () => {
  for (
    const [flags, name] of [
      [["--port", "70000"], "--port"],
      [["--queue", "-1"], "--queue"],
      [["--timeout", "0"], "--timeout"],
      [["--api-key", ""], "--api-key"],
    ] as const
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-lock", cli, "serve", "--model", "/nonexistent", ...flags],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 2, stderr);
    assert.ok(stderr.includes(name), stderr);
  }
  // a model directory without tokenizer.json: exit 1 naming it
  const fixture = new URL("./fixtures/hf/qwen3_moe/", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", cli, "serve", "--model", fixture, "--port", "0"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, stderr);
  assert.match(stderr, /tokenizer\.json/);
});
