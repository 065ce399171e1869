/**
 * Run a MoE model with its experts kept in the memory-mapped checkpoint and streamed into a small
 * pool of GPU slots (Pre-gated MoE), under a GPU memory budget, and print what it cost.
 *
 * Usage: deno run -A examples/offload.ts [MODEL_DIR] [--mode pregated] [--budget-mib 64]
 * Without MODEL_DIR it writes a small random Qwen3-MoE checkpoint to a temporary directory first.
 * @module
 */
import { parseArgs } from "node:util";
import { type ExpertMode, loadModel, makeModel, PregateError } from "../mod.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    mode: { type: "string", default: "pregated" },
    "budget-mib": { type: "string" },
    tokens: { type: "string", default: "32" },
  },
});

let dir = positionals[0];
if (!dir) {
  dir = await Deno.makeTempDir({ prefix: "pregate-example-" });
  await makeModel({
    arch: "qwen3_moe",
    preset: "tiny",
    out: dir,
    dtype: "bf16",
    overrides: { hidden: 256, inter: 512, experts: 16, topK: 2, layers: 4 },
    force: true,
  });
  console.log(`wrote a random qwen3_moe checkpoint to ${dir}`);
}

let model;
try {
  model = await loadModel(dir, {
    mode: values.mode as ExpertMode,
    budget: values["budget-mib"] ? Number(values["budget-mib"]) * 2 ** 20 : undefined,
    log: (m) => console.error(m),
  });
} catch (e) {
  // Typed errors say what is wrong and what to do (e.g. the smallest budget that works).
  if (e instanceof PregateError) {
    console.error(e.message);
    Deno.exit(1);
  }
  throw e;
}
const prompt = [1, 2, 3, 4, 5, 6, 7, 8];
const out: number[] = [];
for await (const id of model.generate(prompt, { maxTokens: Number(values.tokens) })) out.push(id);
const s = model.lastStats!;
console.log(`tokens: ${out.join(" ")}`);
console.log(
  `${s.mode}${s.pregate ? ` (${s.pregate})` : ""} on ${s.gpu}: ` +
    `${s.decode_tokens_per_s.toFixed(1)} tok/s, peak GPU ${
      (s.peak_gpu_bytes / 2 ** 20).toFixed(1)
    } MiB, ` +
    `${(s.upload_bytes_per_token / 2 ** 20).toFixed(2)} MiB of experts copied per token, ` +
    `${s.syncs_per_token.toFixed(1)} syncs per token` +
    (s.pregate_hit_rate === null
      ? ""
      : `, pre-gate hit rate ${(100 * s.pregate_hit_rate).toFixed(0)}%`),
);
await model.dispose();
