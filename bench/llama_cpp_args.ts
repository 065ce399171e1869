// What the two llama.cpp peers (llama_cpp_peer.mjs through node-llama-cpp's API, llama_cpp_ffi.mjs
// through FFI) share: their common flags and checks, the prompt, and the median they report.
import { parseArgs, type ParseArgsConfig } from "node:util";

/** Prints `name: why` and exits with status 2. */
export type Fail = (why: string) => never;

/** The peers' parsed flags. */
export interface PeerArgs {
  args: Record<string, string | undefined>;
  steps: number;
  runs: number;
  threads: number | undefined;
  fail: Fail;
}

/**
 * Parses the peers' common flags (--install, --model, --gpu vulkan|cuda|cpu, --prompt-ids,
 * --tokens, --runs, --threads) and `extra` ones; on a bad value prints `name: why` and exits 2.
 */
export function peerArgs(name: string, extra: ParseArgsConfig["options"] = {}): PeerArgs {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      install: { type: "string" },
      model: { type: "string" },
      gpu: { type: "string", default: "vulkan" },
      "prompt-ids": { type: "string", default: "offload" },
      tokens: { type: "string", default: "16" },
      runs: { type: "string", default: "3" },
      threads: { type: "string" },
      ...extra,
    },
  });
  const args = values as Record<string, string | undefined>;
  const fail: Fail = (m) => {
    console.error(`${name}: ${m}`);
    Deno.exit(2);
  };
  if (!args.install) fail("--install DIR (holding node_modules/node-llama-cpp) is required");
  if (!args.model) fail("--model FILE.gguf is required");
  if (!["vulkan", "cuda", "cpu"].includes(args.gpu!)) {
    fail(`--gpu: vulkan, cuda or cpu, got '${args.gpu}'`);
  }
  const steps = Number(args.tokens), runs = Number(args.runs);
  if (!Number.isInteger(steps) || steps < 2) {
    fail(`--tokens: an integer >= 2, got '${args.tokens}'`);
  }
  if (!Number.isInteger(runs) || runs < 1) fail(`--runs: an integer >= 1, got '${args.runs}'`);
  const threads = args.threads === undefined ? undefined : Number(args.threads);
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
    fail(`--threads: an integer >= 1, got '${args.threads}'`);
  }
  return { args, steps, runs, threads, fail };
}

/**
 * The prompt of `--prompt-ids`: `offload` is bench/offload.ts's ((i * 7919 + 13) % vocab for
 * i < 16), else comma-separated ids, each checked against `vocab`.
 */
export function promptIds(spec: string, vocab: number, fail: Fail): number[] {
  const prompt = spec === "offload"
    ? Array.from({ length: 16 }, (_, i) => (i * 7919 + 13) % vocab)
    : spec.split(",").map(Number);
  const bad = prompt.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
  if (bad !== undefined) fail(`--prompt-ids: ids in [0, ${vocab}), got ${bad}`);
  return prompt;
}

/**
 * The median of `xs` (the upper one of an even count). bench/harness.ts has one too, but the peers
 * run outside the project's configuration and cannot import the runtime it pulls in.
 */
function median(xs: number[]): number {
  return xs.toSorted((a, b) => a - b)[xs.length >> 1];
}

/** One greedy generation of a peer: its ids and the prefill / decode split. */
export interface PeerRun {
  ids: number[];
  prefillSeconds: number;
  decodeSeconds: number;
  decodeTokensPerS: number;
}

/**
 * The run fields of a peer's JSON line (prompt and token counts, decode tok/s and prefill seconds
 * per timed run and their medians, the ids), after checking that every timed run gave the warm-up
 * run's tokens; logs the decode tok/s with `log`.
 */
export function runFigures(
  prompt: number[],
  warm: PeerRun,
  timed: PeerRun[],
  fail: Fail,
  log: (m: string) => void,
): Record<string, unknown> {
  for (const r of timed) {
    if (r.ids.join() !== warm.ids.join()) {
      fail(`runs of the same prompt gave different tokens: ${warm.ids} vs ${r.ids}`);
    }
  }
  const tps = timed.map((r) => r.decodeTokensPerS), prefill = timed.map((r) => r.prefillSeconds);
  log(`decode tok/s of ${timed.length} runs: ${tps.map((t) => t.toFixed(1)).join(" ")}`);
  return {
    prompt_tokens: prompt.length,
    generated_tokens: warm.ids.length,
    runs: timed.length,
    decode_tokens_per_s: tps,
    decode_tokens_per_s_median: median(tps),
    prefill_seconds: prefill,
    prefill_seconds_median: median(prefill),
    prompt,
    ids: warm.ids,
  };
}

/**
 * A run from its ids and times (ms, `performance.now()`): prefill is from `start` until the first
 * token is on the CPU, decode the tokens after the first over the time after it.
 */
export function peerRun(ids: number[], start: number, first: number, last: number): PeerRun {
  const decodeSeconds = (last - first) / 1e3;
  return {
    ids,
    prefillSeconds: (first - start) / 1e3,
    decodeSeconds,
    decodeTokensPerS: (ids.length - 1) / decodeSeconds,
  };
}
