/**
 * The official `openai` npm client talking to `pregate serve`: a chat answer, streamed and whole.
 *
 * Against a running server (a model directory with tokenizer.json and a chat template):
 *
 * ```sh
 * deno task pregate serve --model models/qwen1.5-moe --port 8080 --api-key secret
 * deno run --allow-net=127.0.0.1 --allow-env --allow-read examples/openai_client.ts \
 *   --url http://127.0.0.1:8080/v1 --api-key secret
 * ```
 *
 * Without `--url` it is self-contained: it writes a tiny random-weight MoE model with a small
 * byte-level tokenizer to a temp dir, serves it in this process on a free loopback port, and runs
 * the client against that (the text is gibberish: the weights are random).
 *
 * ```sh
 * deno run -A examples/openai_client.ts
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { OpenAI } from "openai";
import { loadModel } from "../runtime/model.ts";
import { loadTokenizer } from "../runtime/text/tokenizer.ts";
import { byteLevelTokenizer, makeTextModel } from "../runtime/text/text_test_util.ts";
import { startServer } from "../runtime/serve/server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    url: { type: "string" },
    "api-key": { type: "string", default: Deno.env.get("OPENAI_API_KEY") ?? "none" },
    model: { type: "string" },
    prompt: { type: "string", default: "Write one sentence about mixture-of-experts models." },
    "max-tokens": { type: "string", default: "32" },
  },
});

/** Chat with the server at `baseURL`, streamed and then whole. */
async function chat(baseURL: string, apiKey: string): Promise<void> {
  const client = new OpenAI({ baseURL, apiKey });
  const model = values.model ?? (await client.models.list()).data[0].id;
  const messages = [{ role: "user" as const, content: values.prompt }];
  const maxTokens = Number(values["max-tokens"]);

  // Streamed: pieces of text as the model makes them, then the usage.
  console.log(`model '${model}', streamed:`);
  const stream = await client.chat.completions.create({
    model,
    messages,
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    const piece = chunk.choices[0]?.delta.content;
    if (piece) await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(piece) + " "));
    if (chunk.usage) console.log(`\n[usage ${JSON.stringify(chunk.usage)}]`);
  }

  // Whole: one chat.completion object.
  const answer = await client.chat.completions.create({
    model,
    messages,
    max_tokens: maxTokens,
    temperature: 0,
  });
  console.log("whole:", JSON.stringify(answer.choices[0].message.content));
  console.log(`finish_reason ${answer.choices[0].finish_reason}, usage`, answer.usage);
}

if (values.url) {
  await chat(values.url, values["api-key"]);
} else {
  const dir = await Deno.makeTempDir({ prefix: "pregate_openai_demo_" });
  try {
    await makeTextModel(`${dir}/tiny`, byteLevelTokenizer());
    const model = await loadModel(`${dir}/tiny`, { contextLength: 256 });
    const server = startServer({
      model,
      tokenizer: await loadTokenizer(`${dir}/tiny`),
      modelId: "tiny",
      port: 0,
    });
    console.log(`serving a tiny random model at ${server.url}`);
    try {
      await chat(`${server.url}/v1`, "none");
    } finally {
      await server.shutdown();
      await model.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
