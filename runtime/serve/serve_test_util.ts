/**
 * Helpers of the server tests: a tiny random text model on the test GPU, the answers
 * `generateText` gives for it, raw SSE reading and polling the metrics. Test-only.
 * @module
 */
import { loadModel, type Model } from "../model.ts";
import { testGpu } from "../../kernels/test_util.ts";
import { type ChatMessage } from "../text/chat.ts";
import { generateText, type TextGenerateOptions } from "../text/generate_text.ts";
import { loadTokenizer, type Tokenizer } from "../text/tokenizer.ts";
import { byteLevelTokenizer, makeTextModel } from "../text/text_test_util.ts";
import { parsePrometheus } from "./metrics.ts";

/** Context length of the test models (the CLI tests pass it as --context). */
export const TEST_CONTEXT = 256;

/** A tiny random qwen3_moe model with a byte-level BPE tokenizer and a ChatML template. */
export interface TextFixture {
  dir: string;
  model: Model;
  tokenizer: Tokenizer;
  dispose(): Promise<void>;
}

/** Writes and loads the fixture model (in `dir`, or a temp dir). */
export async function textFixture(): Promise<TextFixture> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_serve_" });
  await makeTextModel(`${dir}/tiny`, byteLevelTokenizer());
  const model = await loadModel(`${dir}/tiny`, {
    device: await testGpu(),
    contextLength: TEST_CONTEXT,
  });
  const tokenizer = await loadTokenizer(`${dir}/tiny`);
  return {
    dir: `${dir}/tiny`,
    model,
    tokenizer,
    dispose: async () => {
      await model.dispose();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** What `generateText` gives: the text, the token counts and the OpenAI finish reason. */
export interface Expected {
  text: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: "stop" | "length";
}

/** Runs `generateText` in this process: the answer the server must give. */
export async function expected(
  f: TextFixture,
  input: string | ChatMessage[],
  opts: TextGenerateOptions,
): Promise<Expected> {
  const gen = generateText(f.model, f.tokenizer, input, opts);
  for await (const _ of gen) { /* drain */ }
  return {
    text: gen.text,
    promptTokens: gen.promptIds.length,
    completionTokens: gen.ids.length,
    finishReason: gen.stopReason === "max_tokens" ? "length" : "stop",
  };
}

/** The `data:` payloads of a server-sent event stream, `[DONE]` included. */
export async function readEvents(res: Response): Promise<string[]> {
  const text = await res.text();
  return text.split("\n\n").filter((e) => e.trim()).map((e) => {
    if (!e.startsWith("data: ")) throw new Error(`not an SSE data event: ${e}`);
    return e.slice(6);
  });
}

/** The server's metrics, parsed. */
export async function metrics(
  url: string,
  headers: HeadersInit = {},
): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`, { headers });
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${await res.text()}`);
  return parsePrometheus(await res.text());
}

/** Polls the metrics until `ok` holds (at most `ms`); returns the last reading. */
export async function waitForMetrics(
  url: string,
  ok: (m: Map<string, number>) => boolean,
  ms = 10_000,
  headers: HeadersInit = {},
): Promise<Map<string, number>> {
  const until = performance.now() + ms;
  while (true) {
    const m = await metrics(url, headers);
    if (ok(m) || performance.now() > until) return m;
    await new Promise((r) => setTimeout(r, 20));
  }
}
