/**
 * Pregate's logits beside llama.cpp's, step by step, on one GGUF file: llama.cpp (the CPU build of
 * a node-llama-cpp 3.21.1 install, one thread, through `bench/llama_cpp_ffi.mjs`) decodes greedily
 * and writes each step's logits; Pregate, teacher-forced on llama.cpp's tokens one token a pass (as
 * llama.cpp decodes), computes its own. Per step: llama.cpp's token and Pregate's best, the largest
 * logit difference and llama.cpp's margin between its best two, both in units of the standard
 * deviation of llama.cpp's logits. A diagnostic of the cross-check (`tests/llama_cpp_test.ts`):
 *
 *   deno run -A tools/llama_cpp_parity.ts --install DIR --model F.gguf [--prompt TEXT | --ids 1,2,3]
 *     [--tokens 32] [--activations llama.cpp|f32] [--gpu native|dawn|auto] [--json FILE]
 *
 * With `--activations llama.cpp` the products see llama.cpp's rounded activations, so the logits
 * differ only by the order of float additions until one sum lands on the other side of a rounding
 * boundary (`bench/results/gguf.md` has the figures). Exit status 2 for bad arguments or a failed
 * llama.cpp run.
 * @module
 */
import { parseArgs } from "node:util";
import { type Gpu, type GpuChoice, openGpu } from "../runtime/base/gpu/device.ts";
import { type ActivationRounding, loadModel } from "../runtime/model.ts";
import { loadTokenizer } from "../runtime/text/tokenizer.ts";

/** One step of the comparison. */
export interface ParityStep {
  /** llama.cpp's greedy token at this step. */
  llamaCpp: number;
  /** Pregate's best token on the same prefix. */
  pregate: number;
  /** The largest |Pregate - llama.cpp| logit, in units of llama.cpp's logit standard deviation. */
  maxDiff: number;
  /** llama.cpp's best logit minus its second best, in the same units. */
  margin: number;
}

/**
 * Compares one step's logits (see {@linkcode ParityStep}).
 *
 * @example
 * ```ts
 * import { compareStep } from "./llama_cpp_parity.ts";
 * const s = compareStep(new Float32Array([0, 1, 3]), new Float32Array([0, 1.5, 3]));
 * console.log(s.llamaCpp, s.pregate, s.maxDiff.toFixed(3), s.margin.toFixed(3)); // 2 2 0.401 1.604
 * ```
 */
export function compareStep(llamaCpp: Float32Array, pregate: Float32Array): ParityStep {
  const n = llamaCpp.length;
  let mean = 0;
  for (const x of llamaCpp) mean += x / n;
  let sq = 0;
  for (const x of llamaCpp) sq += (x - mean) ** 2;
  const std = Math.sqrt(sq / n) || 1;
  let best = 0, second = -1, mine = 0, maxDiff = 0;
  for (let i = 0; i < n; i++) {
    if (llamaCpp[i] > llamaCpp[best]) [second, best] = [best, i];
    else if (i !== best && (second < 0 || llamaCpp[i] > llamaCpp[second])) second = i;
    if (pregate[i] > pregate[mine]) mine = i;
    maxDiff = Math.max(maxDiff, Math.abs(pregate[i] - llamaCpp[i]));
  }
  const margin = second < 0 ? Infinity : (llamaCpp[best] - llamaCpp[second]) / std;
  return { llamaCpp: best, pregate: mine, maxDiff: maxDiff / std, margin };
}

/** llama.cpp's greedy ids and per-step logits on `model` (bench/llama_cpp_ffi.mjs, CPU). */
async function llamaCppLogits(
  install: string,
  model: string,
  prompt: number[],
  tokens: number,
): Promise<{ ids: number[]; rows: Float32Array[] }> {
  const file = await Deno.makeTempFile({ suffix: ".f32" });
  try {
    const script = new URL("../bench/llama_cpp_ffi.mjs", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", script, "--install", install, "--model", model]
        .concat(["--gpu", "cpu", "--threads", "1", "--runs", "1", "--tokens", `${tokens}`])
        .concat(["--prompt-ids", prompt.join(), "--logits", file]),
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.code !== 0) {
      const err = new TextDecoder().decode(out.stderr).split("\n").slice(-5).join("\n");
      throw new Error(`llama.cpp (bench/llama_cpp_ffi.mjs) failed on ${model}:\n${err}`);
    }
    const run = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
    const flat = new Float32Array((await Deno.readFile(file)).buffer);
    const V = run.vocab as number;
    const rows = run.ids.map((_: number, i: number) => flat.subarray(i * V, (i + 1) * V));
    return { ids: run.ids, rows };
  } finally {
    await Deno.remove(file);
  }
}

/** What {@linkcode llamaCppParity} compares. */
export interface ParityOptions {
  /** A node-llama-cpp 3.21.1 install (its CPU build runs llama.cpp). */
  install: string;
  model: string;
  prompt: number[];
  tokens: number;
  activations: ActivationRounding;
  gpu: Gpu;
}

/** llama.cpp's greedy decode and Pregate teacher-forced on it, compared step by step. */
export async function llamaCppParity(o: ParityOptions): Promise<ParityStep[]> {
  const ll = await llamaCppLogits(o.install, o.model, o.prompt, o.tokens);
  const model = await loadModel(o.model, {
    device: o.gpu,
    activations: o.activations,
    prefillChunk: 1,
  });
  try {
    const mine = await model.logits([...o.prompt, ...ll.ids.slice(0, -1)]);
    return ll.rows.map((row, i) => compareStep(row, mine[o.prompt.length - 1 + i]));
  } finally {
    await model.dispose();
  }
}

async function main(): Promise<void> {
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      install: { type: "string" },
      model: { type: "string" },
      prompt: { type: "string" },
      ids: { type: "string" },
      tokens: { type: "string", default: "32" },
      activations: { type: "string", default: "llama.cpp" },
      gpu: { type: "string", default: "native" },
      json: { type: "string" },
    },
  });
  const fail = (m: string): never => {
    console.error(`llama_cpp_parity: ${m}`);
    Deno.exit(2);
  };
  if (!a.install) fail("--install DIR (a node-llama-cpp 3.21.1 install) is required");
  if (!a.model) fail("--model FILE.gguf is required");
  if (a.activations !== "llama.cpp" && a.activations !== "f32") {
    fail(`--activations: llama.cpp or f32, got '${a.activations}'`);
  }
  const tokens = Number(a.tokens);
  if (!Number.isInteger(tokens) || tokens < 1) {
    fail(`--tokens: a positive integer, got ${a.tokens}`);
  }
  const prompt = a.ids !== undefined
    ? a.ids.split(",").map(Number)
    : (await loadTokenizer(a.model!)).encode(a.prompt ?? "Once upon a time");
  if (prompt.some((t) => !Number.isInteger(t) || t < 0)) fail(`--ids: token ids, got '${a.ids}'`);

  const steps = await llamaCppParity({
    install: a.install!,
    model: a.model!,
    prompt,
    tokens,
    activations: a.activations as ActivationRounding,
    gpu: await openGpu({ gpu: a.gpu as GpuChoice }),
  });

  console.log(`${a.model}, ${a.activations} activations, prompt ${prompt.length} tokens`);
  console.log("| step | llama.cpp | Pregate | max diff (std) | llama.cpp margin (std) |");
  console.log("|---|---|---|---|---|");
  steps.forEach((s, i) => {
    const mark = s.pregate === s.llamaCpp ? "" : " (differs)";
    console.log(
      `| ${i} | ${s.llamaCpp} | ${s.pregate}${mark} | ${s.maxDiff.toExponential(2)} | ` +
        `${s.margin.toExponential(2)} |`,
    );
  });
  if (a.json) {
    await Deno.writeTextFile(
      a.json,
      JSON.stringify({ model: a.model, activations: a.activations, prompt, steps }) + "\n",
    );
  }
}

if (import.meta.main) await main();
