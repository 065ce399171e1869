/**
 * The demo: runs the embedded checkpoints (tiny random MoE models of four architectures, written by
 * Hugging Face transformers' own save_pretrained, in tests/fixtures/hf/) on the GPU it finds,
 * generates greedily, and checks each result against the tokens HF transformers produced.
 *
 * Usage: deno task demo [--gpu native|dawn|auto] [--arch mixtral|qwen2_moe|qwen3_moe|olmoe]
 * @module
 */
import { parseArgs } from "node:util";
import { type GpuChoice, openGpu } from "../runtime/gpu/device.ts";
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
  model.dispose();
}
gpu.destroy();
console.log(
  failures
    ? `${failures} architecture(s) differ from HF`
    : "all match HF transformers' greedy tokens",
);
if (failures) Deno.exit(1);

function describeFfn(cfg: { layers: readonly { ffn: { kind: string } }[] }): string {
  const moe = cfg.layers.filter((l) => l.ffn.kind === "moe").length;
  return `${moe} MoE + ${cfg.layers.length - moe} dense`;
}
