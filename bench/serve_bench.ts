/**
 * Streamed tokens/s through `pregate serve` against `generate`'s on the same model:
 * `deno run -A bench/serve_bench.ts` (also picked up by `deno task bench`).
 *
 * Writes (or reuses) a `make-model` checkpoint with a small byte-level tokenizer (vocabulary 384,
 * no EOS, so every run makes all its tokens), loads it in this process and starts `pregate serve`
 * on it in a subprocess (as users run it: the client and the server do not share a thread). It
 * first checks that the server's greedy text equals `generateText`'s, then alternates timed runs:
 * `generateText` in this process (its `decode_tokens_per_s`), and a streamed `POST
 * /v1/completions` read as server-sent events (completion tokens after the first over the seconds
 * from the first text event to the last). Medians are compared; the server's own decode rate (its
 * `/metrics`) is reported beside them.
 *
 * Environment: PREGATE_GPU (native|dawn|auto, default native); PREGATE_BENCH_MODEL
 * (`arch:preset:layers:dtype`, default `qwen3_moe:qwen3-30b-a3b:8:bf16` on a GPU,
 * `qwen3_moe:tiny:2:f32` on a software adapter); PREGATE_BENCH_MODE (resident, or an offloading
 * mode; default resident); PREGATE_BENCH_DIR (checkpoints, default a temp dir);
 * PREGATE_BENCH_TOKENS (default 128); PREGATE_BENCH_RUNS (timed runs of each, default 7);
 * PREGATE_BENCH_WARMUP_S (default 3 on a GPU, 0 on a software adapter); PREGATE_BENCH_OUT (JSON).
 * @module
 */
import { openGpu } from "../runtime/base/gpu/device.ts";
import { loadModel } from "../runtime/model.ts";
import { generateText } from "../runtime/text/generate_text.ts";
import { loadTokenizer } from "../runtime/text/tokenizer.ts";
import {
  byteLevelTokenizer,
  TEXT_MODEL_VOCAB,
  writeTokenizer,
} from "../runtime/text/text_test_util.ts";
import { parsePrometheus } from "../runtime/serve/metrics.ts";
import { benchCheckpoint, median } from "./harness.ts";
import { ClockSampler, warmUp } from "./clock.ts";

const env = (k: string) => Deno.env.get(k);
const gpuChoice = (env("PREGATE_GPU") ?? "native") as "native" | "dawn" | "auto";
const gpu = await openGpu({ gpu: gpuChoice, log: (m) => console.error(m) });
const spec = env("PREGATE_BENCH_MODEL") ??
  (gpu.isFallback ? "qwen3_moe:tiny:2:f32" : "qwen3_moe:qwen3-30b-a3b:8:bf16");
const mode = env("PREGATE_BENCH_MODE") ?? "resident";
const tokens = Number(env("PREGATE_BENCH_TOKENS") ?? 128);
const runs = Math.max(1, Number(env("PREGATE_BENCH_RUNS") ?? 7));
const warmupSeconds = Number(env("PREGATE_BENCH_WARMUP_S") ?? (gpu.isFallback ? 0 : 3));
const tStart = performance.now();
const phase = (what: string) =>
  console.error(`[serve_bench +${((performance.now() - tStart) / 1e3).toFixed(1)} s] ${what}`);

const root = env("PREGATE_BENCH_DIR") ?? await Deno.makeTempDir({ prefix: "pregate-bench-" });
const dir = await benchCheckpoint(spec, root, {
  overrides: { vocab: TEXT_MODEL_VOCAB },
  log: (m) => console.error(m),
  what: "PREGATE_BENCH_MODEL",
});
// The byte-level test tokenizer without an EOS token: runs are never cut short.
const files = byteLevelTokenizer();
await writeTokenizer(dir, { json: files.json, config: { ...files.config, eos_token: null } });
const tokenizer = await loadTokenizer(dir);
phase(`${spec}: loading (${mode})`);
const context = Math.min(
  512,
  JSON.parse(await Deno.readTextFile(`${dir}/config.json`))
    .max_position_embeddings,
);
const model = await loadModel(dir, {
  device: gpu,
  contextLength: context,
  mode: mode as "resident",
});
const prompt = "Hello the world, on a world in the world. ".repeat(2);

const direct = async () => {
  const gen = generateText(model, tokenizer, prompt, { maxTokens: tokens });
  for await (const _ of gen) { /* drain */ }
  if (gen.ids.length !== tokens) throw new Error(`generateText made ${gen.ids.length} tokens`);
  return { text: gen.text, tps: gen.stats!.decode_tokens_per_s };
};

phase("starting pregate serve");
const cli = new URL("../cli.ts", import.meta.url).pathname;
const server = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    cli,
    "serve",
    "--model",
    dir,
    "--port",
    "0",
    "--context",
    String(context),
    "--gpu",
    gpuChoice,
    "--mode",
    mode,
  ],
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
let banner = "";
while (!/listening on (\S+)/.test(banner)) {
  const { value, done } = await reader.read();
  if (done) throw new Error(`pregate serve exited: ${banner}`);
  banner += value;
}
reader.releaseLock();
server.stdout.cancel().catch(() => {});
const url = /listening on (\S+)/.exec(banner)![1];
const modelId = dir.split("/").at(-1)!;

/**
 * One streamed completion through the server, timed from the first text event to the finish event
 * (as generate's decode rate runs from the first token to the end).
 */
const served = async () => {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    body: JSON.stringify({
      model: modelId,
      prompt,
      max_tokens: tokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200) throw new Error(`server: ${res.status} ${await res.text()}`);
  let text = "", buffer = "", first = 0, last = 0, completion = 0;
  for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(6, end);
      buffer = buffer.slice(end + 2);
      if (data === "[DONE]") continue;
      const event = JSON.parse(data);
      if (event.error) throw new Error(`server: ${event.error.message}`);
      if (event.usage) completion = event.usage.completion_tokens;
      const choice = event.choices[0];
      if (choice?.text) {
        first ||= performance.now();
        text += choice.text;
      }
      if (choice?.finish_reason) last = performance.now();
    }
  }
  if (completion !== tokens) throw new Error(`the server made ${completion} tokens`);
  return { text, tps: (completion - 1) / ((last - first) / 1e3) };
};

const serverDecodeRate = async () => {
  const m = parsePrometheus(await (await fetch(`${url}/metrics`)).text());
  return m.get("pregate_decode_tokens_per_second")!;
};

try {
  phase("validating: the server's text equals generateText's");
  const want = await direct();
  const got = await served();
  if (got.text !== want.text) {
    throw new Error(
      `texts differ:\n  generateText: ${JSON.stringify(want.text)}\n  server: ${
        JSON.stringify(got.text)
      }`,
    );
  }
  const clock = ClockSampler.start();
  phase("warming up");
  await warmUp(async () => (await direct(), await served()), warmupSeconds);
  phase(`timing ${runs} alternating runs of each`);
  const d: number[] = [], s: number[] = [], inside: number[] = [];
  for (let i = 0; i < runs; i++) {
    d.push((await direct()).tps);
    s.push((await served()).tps);
    inside.push(await serverDecodeRate());
  }
  await clock?.stop();
  const result = {
    gpu: gpu.describe(),
    spec,
    mode,
    tokens,
    runs,
    generate_decode_tokens_per_s: median(d),
    served_stream_tokens_per_s: median(s),
    server_internal_decode_tokens_per_s: median(inside),
    ratio: median(s) / median(d),
    samples: { generate: d, served: s, server_internal: inside },
  };
  console.log(
    `\nPregate serve bench, ${new Date().toISOString().slice(0, 10)}, ${result.gpu}\n` +
      `${spec} (${mode}), ${tokens} tokens, median of ${runs} alternating runs\n` +
      `  generate (in process):     ${result.generate_decode_tokens_per_s.toFixed(1)} tok/s\n` +
      `  streamed through serve:    ${result.served_stream_tokens_per_s.toFixed(1)} tok/s ` +
      `(${(100 * result.ratio).toFixed(1)}% of generate's)\n` +
      `  server's own decode rate:  ${result.server_internal_decode_tokens_per_s.toFixed(1)} tok/s`,
  );
  const out = env("PREGATE_BENCH_OUT");
  if (out) await Deno.writeTextFile(out, JSON.stringify(result, null, 2));
} finally {
  server.kill("SIGTERM");
  await server.status;
  await model.dispose();
}
