// OLMoE's quirks on the GPU against the plain CPU forward pass (model_test_util.ts, itself checked
// against HF's fixtures): clip_qkv clamps q, k (after their norms) and v, in prefill and decode and
// in every expert mode.
import assert from "node:assert/strict";
import { GPU_TEST, testGpu } from "../../../kernels/test_util.ts";
import { loadModel } from "../../model.ts";
import { openCheckpoint } from "../../weights/safetensors.ts";
import { makeModel } from "../make_model.ts";
import type { ModelConfig } from "../model_config.ts";
import { cpuForward, tensorGetter, withTemp } from "../model_test_util.ts";

function maxDiff(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  let worst = 0;
  for (let t = 0; t < a.length; t++) {
    for (let v = 0; v < a[t].length; v++) worst = Math.max(worst, Math.abs(a[t][v] - b[t][v]));
  }
  return worst;
}

const argmax = (row: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
};

Deno.test({
  name: "olmoe clip_qkv: logits and greedy tokens match the CPU reference, which the clamp changes",
  ...GPU_TEST,
  fn: () =>
    withTemp(async (dir) => {
      // q and k after their norms have rms ~1, v ~1: a bound of 0.7 clamps about half of them.
      const made = await makeModel({
        arch: "olmoe",
        out: dir,
        seed: 11,
        overrides: { clipQkv: 0.7 },
      });
      assert.equal(made.config.clipQkv, 0.7);
      const ids = [5, 77, 3, 120, 9, 44, 200, 17, 1, 99, 250, 31]; // 12 > 8: the prefill path
      const store = openCheckpoint(dir, { mode: "read" });
      const get = tensorGetter(store);
      const cpu = (cfg: ModelConfig, seq: number[]) => cpuForward(cfg, get, seq).logits;
      let want: Float64Array[], greedy: number[];
      try {
        want = cpu(made.config, ids);
        const unclamped = cpu({ ...made.config, clipQkv: 0 }, ids);
        assert(maxDiff(want, unclamped) > 0.1, "the clamp must change the logits");
        const seq = [...ids];
        greedy = [];
        for (let i = 0; i < 4; i++) {
          const logits = cpu(made.config, seq);
          greedy.push(argmax(logits[logits.length - 1]));
          seq.push(greedy[i]);
        }
      } finally {
        store.close();
      }
      const device = await testGpu();
      for (const mode of ["resident", "on-demand"] as const) {
        const model = await loadModel(dir, { device, mode });
        try {
          const got = await model.logits(ids);
          const err = maxDiff(got, want);
          assert(err < 2e-3, `${mode}: max |GPU - CPU| logit ${err}`);
          const out: number[] = []; // decode: T = 1, the fused q/k/v GEMV path
          for await (const id of model.generate(ids, { maxTokens: greedy.length })) out.push(id);
          assert.deepEqual(out, greedy, mode);
        } finally {
          await model.dispose();
        }
      }
    }),
});
