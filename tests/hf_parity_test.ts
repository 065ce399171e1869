// Parity with the Hugging Face transformers implementation: for each architecture, a tiny random
// checkpoint written by HF's own save_pretrained (tools/hf_fixtures.py, run on the GPU host with
// transformers 5.17) is loaded by Pregate, and its teacher-forced logits and greedy tokens are
// compared with HF's (tests/fixtures/hf/<arch>/reference.json).
import assert from "node:assert/strict";
import { loadModel } from "../runtime/model.ts";
import { testGpu } from "./test_util.ts";

const ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];
const fixtures = new URL("./fixtures/hf/", import.meta.url);

interface Reference {
  ids: number[];
  logits: number[][];
  greedy: number[];
  transformers_version: string;
}

for (const arch of ARCHS) {
  const dir = new URL(`${arch}/`, fixtures).pathname;
  const ref: Reference = JSON.parse(await Deno.readTextFile(`${dir}reference.json`));

  Deno.test({
    name: `${arch}: logits match HF transformers ${ref.transformers_version} (max abs diff < 2e-3)`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const model = await loadModel(dir, { device: await testGpu() });
      try {
        const logits = await model.logits(ref.ids);
        assert.equal(logits.length, ref.ids.length);
        let worst = 0;
        for (let t = 0; t < ref.ids.length; t++) {
          assert.equal(logits[t].length, ref.logits[t].length);
          for (let v = 0; v < logits[t].length; v++) {
            worst = Math.max(worst, Math.abs(logits[t][v] - ref.logits[t][v]));
          }
        }
        assert.ok(worst < 2e-3, `max abs logit difference ${worst}`);
      } finally {
        await model.dispose();
      }
    },
  });

  Deno.test({
    name: `${arch}: greedy generation reproduces HF's ${ref.greedy.length} tokens`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const model = await loadModel(dir, { device: await testGpu() });
      try {
        const out: number[] = [];
        for await (const id of model.generate(ref.ids, { maxTokens: ref.greedy.length })) {
          out.push(id);
        }
        assert.deepEqual(out, ref.greedy);
        const st = model.lastStats!;
        assert.equal(st.generated_tokens, ref.greedy.length);
        assert.ok(st.syncs_per_token < 1, `syncs per token ${st.syncs_per_token}`);
      } finally {
        await model.dispose();
      }
    },
  });
}
