/**
 * The modes example: runs the embedded checkpoints (tiny random MoE models of four architectures,
 * written by Hugging Face transformers' own save_pretrained, in tests/fixtures/hf/) on the GPU it
 * finds, generates greedily, and checks each result against the tokens HF transformers produced. Then it
 * runs one of them with the experts kept off the GPU in each offloading mode and compares tokens,
 * GPU memory and expert traffic.
 *
 * Usage: deno run -A examples/modes.ts [--gpu native|dawn|auto]
 *          [--arch mixtral|qwen2_moe|qwen3_moe|olmoe]
 * @module
 */
import { parseArgs } from "node:util";
import { type GpuChoice, openGpu } from "../runtime/base/gpu/device.ts";
import { loadModel } from "../runtime/model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { gpu: { type: "string", default: "native" }, arch: { type: "string" } },
});
const gpu = await openGpu({ gpu: values.gpu as GpuChoice, log: (m) => console.error(m) });
console.log(`GPU: ${gpu.describe()}\n`);

const archs = values.arch ? [values.arch] : ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];
let failures = 0;
for (const arch of archs) {
  const dir = new URL(`../tests/fixtures/hf/${arch}/`, import.meta.url).pathname;
  const ref = JSON.parse(await Deno.readTextFile(`${dir}reference.json`));
  const model = await loadModel(dir, { device: gpu });
  const out: number[] = [];
  for await (const id of model.generate(ref.ids, { maxTokens: ref.greedy.length })) out.push(id);
  const st = model.lastStats!;
  const same = out.length === ref.greedy.length && out.every((x, i) => x === ref.greedy[i]);
  if (!same) failures++;
  console.log(`${arch} (${model.config.layers.length} layers, ${describeFfn(model.config)})`);
  console.log(`  prompt    ${ref.ids.join(" ")}`);
  console.log(`  pregate   ${out.join(" ")}`);
  console.log(
    `  HF ${ref.transformers_version}  ${ref.greedy.join(" ")}  ${
      same ? "(identical)" : "(DIFFERENT)"
    }`,
  );
  console.log(
    `  ${st.decode_tokens_per_s.toFixed(1)} tok/s decode, ${
      st.syncs_per_token.toFixed(2)
    } GPU syncs ` +
      `per token, peak GPU memory ${(st.peak_gpu_bytes / 2 ** 20).toFixed(1)} MiB\n`,
  );
  await model.dispose();
}
console.log(
  failures
    ? `${failures} architecture(s) differ from HF`
    : "all match HF transformers' greedy tokens",
);

// The main job: the same model with its experts streamed from the memory-mapped file.
const arch = archs.includes("olmoe") ? "olmoe" : archs[0];
const dir = new URL(`../tests/fixtures/hf/${arch}/`, import.meta.url).pathname;
const prompt = [3, 17, 42, 99, 128, 201, 250];
console.log(`\n${arch}, 24 greedy tokens, experts resident vs streamed from the mapped file:\n`);
console.log("mode               tokens   peak GPU  expert KiB/token  syncs/token  pre-gate hit");
let reference = "";
for (
  const [mode, pregate] of [
    ["resident", undefined],
    ["on-demand", undefined],
    ["prefetch-all", undefined],
    ["pregated", "exact"],
    ["pregated", "strict"],
  ] as const
) {
  const model = await loadModel(dir, { device: gpu, mode, pregate });
  const out: number[] = [];
  for await (const id of model.generate(prompt, { maxTokens: 24 })) out.push(id);
  const st = model.lastStats!;
  await model.dispose();
  const key = out.join(" ");
  reference ||= key;
  const label = pregate ? `${mode} (${pregate})` : mode;
  const hit = st.pregate_hit_rate === null ? "-" : `${(100 * st.pregate_hit_rate).toFixed(0)}%`;
  console.log(
    `${label.padEnd(18)} ${(key === reference ? "same" : "differ").padEnd(7)} ` +
      `${(st.peak_gpu_bytes / 2 ** 20).toFixed(2).padStart(5)} MiB  ` +
      `${(st.upload_bytes_per_token / 1024).toFixed(0).padStart(16)}  ` +
      `${st.syncs_per_token.toFixed(2).padStart(11)}  ${hit.padStart(12)}`,
  );
}
console.log(
  "\nExact modes reproduce the model's own tokens; strict pre-gating computes with the experts the\n" +
    "pre-gate chose, so a model not trained with pre-gates may change (random weights here).",
);
gpu.destroy();
if (failures) Deno.exit(1);

function describeFfn(cfg: { layers: readonly { ffn: { kind: string } }[] }): string {
  const moe = cfg.layers.filter((l) => l.ffn.kind === "moe").length;
  return `${moe} MoE + ${cfg.layers.length - moe} dense`;
}
