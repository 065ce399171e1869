// Perplexity by the shared protocol: windows as specified, and the NLL equal to one computed
// independently from Model.logits; pre-gated runs report the pre-gate's hit rate.
import assert from "node:assert/strict";
import { ArgumentError } from "./base/errors.ts";
import { loadModel } from "./model.ts";
import { testGpu } from "../kernels/test_util.ts";
import { evaluatePerplexity, evalWindows, windowNll } from "./eval.ts";
import { loadTokenizer } from "./text/tokenizer.ts";
import { byteLevelTokenizer, makeTextModel } from "./text/text_test_util.ts";

const GPU = { sanitizeResources: false, sanitizeOps: false };
const TEXT = "Hello the world. In the world, the sun is on.\nHello world é € 😀 and the rest";

Deno.test("evalWindows: consecutive windows, a last one of >= 2 ids kept", () => {
  const ids = Array.from({ length: 10 }, (_, i) => i);
  assert.deepEqual(evalWindows(ids, 4), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);
  assert.deepEqual(evalWindows(ids.slice(0, 9), 4), [[0, 1, 2, 3], [4, 5, 6, 7]]);
  assert.deepEqual(evalWindows([7], 4), []);
  assert.throws(() => evalWindows(ids, 1), ArgumentError);
});

Deno.test("windowNll is -log softmax at the next id, in float64", () => {
  const x = Math.fround(Math.log(3)); // p(next = 1) ~ 3/4 after row 0
  const rows = [Float32Array.from([0, x]), Float32Array.from([1000, 1000, 1000, 1000])];
  // row 1 is never used by a 2-id window
  assert.ok(Math.abs(windowNll(rows, [0, 1]) - Math.log1p(Math.exp(-x))) < 1e-15);
  assert.ok(Math.abs(windowNll(rows, [0, 0]) - Math.log1p(Math.exp(x))) < 1e-15);
  // large logits do not overflow: uniform over 4
  assert.ok(Math.abs(windowNll([rows[1], rows[1]], [0, 2, 3]) - 2 * Math.log(4)) < 1e-9);
});

Deno.test({
  name: "eval's NLL equals an independent computation from Model.logits; pregated runs report hits",
  ...GPU,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "pregate_eval_" });
    try {
      await makeTextModel(dir, byteLevelTokenizer());
      const tok = await loadTokenizer(dir);
      const device = await testGpu();
      const context = 8;
      const model = await loadModel(dir, { device, contextLength: context });
      let reference: { nll: number; tokens: number };
      try {
        const r = await evaluatePerplexity(model, tok, TEXT, { context });
        // independently: tokenize, cut, score every position with log-sum-exp written out
        const ids = tok.encode(TEXT);
        let sum = 0, n = 0;
        for (let s = 0; s < ids.length; s += context) {
          const w = ids.slice(s, s + context);
          if (w.length < 2) continue;
          const rows = await model.logits(w);
          for (let t = 1; t < w.length; t++) {
            const row = Array.from(rows[t - 1]);
            const m = Math.max(...row);
            const logZ = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
            sum += logZ - row[w[t]];
            n++;
          }
        }
        assert.equal(r.tokens, n);
        assert.ok(Math.abs(r.nll - sum / n) < 1e-12, `${r.nll} vs ${sum / n}`);
        assert.ok(Math.abs(r.perplexity - Math.exp(sum / n)) < 1e-9);
        assert.ok(r.windows >= 3 && r.nll > 0);
        assert.equal(r.mode, "resident");
        assert.equal(r.pregate, null);
        assert.equal(r.pregate_hit_rate, null);
        reference = { nll: r.nll, tokens: r.tokens };
      } finally {
        await model.dispose();
      }
      for (const pregate of ["exact", "strict"] as const) {
        const m = await loadModel(dir, {
          device,
          contextLength: context,
          mode: "pregated",
          pregate,
          prefillChunk: 1,
        });
        try {
          const r = await evaluatePerplexity(m, tok, TEXT, { context });
          assert.equal(r.pregate, pregate);
          assert.ok(
            r.pregate_hit_rate !== null && r.pregate_hit_rate > 0 && r.pregate_hit_rate <= 1,
          );
          assert.equal(r.tokens, reference.tokens);
          // exact pre-gating computes the model itself; strict uses the pre-gate's experts
          if (pregate === "exact") assert.ok(Math.abs(r.nll - reference.nll) < 1e-4);
          else assert.ok(Number.isFinite(r.nll) && r.nll > 0);
        } finally {
          await m.dispose();
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
