/**
 * Native vs Dawn on the same machine: for every HF fixture (tests/fixtures/hf/<arch>), the
 * teacher-forced logits and 16 greedy tokens from `--gpu native` and `--gpu dawn`, compared with each
 * other and with HF's reference. Each implementation runs its own kernel variants (Dawn: subgroup
 * GEMVs where the device has them), so logits agree to rounding, not bits. Exit status 1 when any
 * architecture differs by more than `--tol` (default 1e-3) or the tokens differ; 2 when an
 * implementation cannot be opened. Run on the GPU host: `deno run -A tools/impl_parity.ts`.
 * @module
 */
import { parseArgs } from "node:util";
import { openGpu } from "../runtime/base/gpu/device.ts";
import { loadModel } from "../runtime/model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { tol: { type: "string", default: "1e-3" }, json: { type: "string" } },
});
const tol = Number(values.tol);
const ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];
const fixtures = new URL("../tests/fixtures/hf/", import.meta.url);

const gpus = [];
for (const impl of ["native", "dawn"] as const) {
  try {
    gpus.push(await openGpu({ gpu: impl }));
  } catch (e) {
    console.error(`impl_parity: cannot open ${impl}: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
console.log(gpus.map((g) => g.describe()).join("\n"));
const rows: Record<string, unknown>[] = [];
let ok = true;
console.log(
  "| arch | max abs diff native vs Dawn | native vs HF | Dawn vs HF | greedy tokens | verdict |",
);
console.log("|---|---|---|---|---|---|");
for (const arch of ARCHS) {
  const dir = new URL(`${arch}/`, fixtures).pathname;
  const ref = JSON.parse(await Deno.readTextFile(`${dir}reference.json`));
  const out = [];
  for (const gpu of gpus) {
    const model = await loadModel(dir, { device: gpu });
    try {
      const logits = await model.logits(ref.ids);
      const tokens: number[] = [];
      for await (const id of model.generate(ref.ids, { maxTokens: ref.greedy.length })) {
        tokens.push(id);
      }
      out.push({ logits, tokens });
    } finally {
      await model.dispose();
    }
  }
  const diff = (a: ArrayLike<number>[], b: ArrayLike<number>[]) => {
    let m = 0;
    for (let t = 0; t < a.length; t++) {
      for (let v = 0; v < a[t].length; v++) m = Math.max(m, Math.abs(a[t][v] - b[t][v]));
    }
    return m;
  };
  const nd = diff(out[0].logits, out[1].logits);
  const nh = diff(out[0].logits, ref.logits), dh = diff(out[1].logits, ref.logits);
  const same = JSON.stringify(out[0].tokens) === JSON.stringify(out[1].tokens) &&
    JSON.stringify(out[0].tokens) === JSON.stringify(ref.greedy);
  const pass = nd <= tol && same;
  ok &&= pass;
  rows.push({ arch, native_vs_dawn: nd, native_vs_hf: nh, dawn_vs_hf: dh, tokens_equal: same });
  console.log(
    `| ${arch} | ${nd.toExponential(2)} | ${nh.toExponential(2)} | ${dh.toExponential(2)} | ${
      same ? "equal (both = HF)" : "DIFFER"
    } | ${pass ? "ok" : "FAIL"} |`,
  );
}
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ gpus: gpus.map((g) => g.describe()), tol, rows }, null, 1),
  );
}
console.log(ok ? `PASS: native and Dawn agree within ${tol}` : "FAIL");
Deno.exit(ok ? 0 : 1);
