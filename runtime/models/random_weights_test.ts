// Tests of random_weights.ts through written checkpoints: determinism, independence of tensors,
// dtypes, the initialisation's statistics, and that random models behave (O(1) logits, spread
// routing) under a plain float64 CPU forward pass that is first checked against the HF fixtures.
import assert from "node:assert/strict";
import { roundTo } from "../base/dtype.ts";
import { openCheckpoint } from "../weights/safetensors.ts";
import { loadConfig } from "./config.ts";
import { makeModel, type MakeModelOptions } from "./make_model.ts";
import { planModel } from "./plan_model.ts";
import { tensorValues } from "./random_weights.ts";
import {
  ARCHS,
  assertEquals,
  assertNotEquals,
  cpuForward,
  existsSync,
  FIXTURES,
  make,
  reference,
  sameBytes,
  tempDir,
  tensorGetter,
  withTemp,
} from "./model_test_util.ts";

/** The largest |logit - HF| of the CPU forward pass on HF fixture `name`. */
async function referenceError(name: string): Promise<number> {
  const ref = reference(name);
  const cfg = await loadConfig(`${FIXTURES}${name}`);
  const store = openCheckpoint(`${FIXTURES}${name}`, { mode: "read" });
  try {
    const out = cpuForward(cfg, tensorGetter(store), ref.ids as number[]);
    const want = ref.logits as number[][];
    let err = 0;
    for (let t = 0; t < want.length; t++) {
      for (let v = 0; v < want[t].length; v++) {
        err = Math.max(err, Math.abs(out.logits[t][v] - want[t][v]));
      }
    }
    return err;
  } finally {
    store.close();
  }
}

Deno.test("reference forward reproduces the HF fixtures' logits (validates the checks below)", async () => {
  for (const arch of ARCHS) {
    const err = await referenceError(arch);
    assert(err < 1e-4, `${arch}: max |logit - HF| = ${err}`);
  }
});

Deno.test({
  name: "reference forward reproduces HF's olmoe_clip logits (clip_qkv after the q/k norms)",
  // Written on the GPU host: python3 tools/hf_fixtures.py --out tests/fixtures/hf --only olmoe_clip
  ignore: !existsSync(`${FIXTURES}olmoe_clip/reference.json`),
  fn: async () => {
    const err = await referenceError("olmoe_clip");
    assert(err < 1e-4, `olmoe_clip: max |logit - HF| = ${err}`);
  },
});

Deno.test("same seed -> identical bytes; different seed -> every tensor differs", async () => {
  const dirs = [await tempDir(), await tempDir(), await tempDir()];
  try {
    await make({ arch: "qwen2_moe", dtype: "bf16", seed: 42 }, dirs[0]);
    await make({ arch: "qwen2_moe", dtype: "bf16", seed: 42 }, dirs[1]);
    await make({ arch: "qwen2_moe", dtype: "bf16", seed: 43 }, dirs[2]);
    for (const f of ["model.safetensors", "config.json", "generation_config.json"]) {
      assertEquals(
        await Deno.readFile(`${dirs[0]}/${f}`),
        await Deno.readFile(`${dirs[1]}/${f}`),
        f,
      );
    }
    const a = openCheckpoint(dirs[0], { mode: "read" });
    const c = openCheckpoint(dirs[2], { mode: "read" });
    try {
      for (const name of a.names()) assertNotEquals(a.get(name).bytes(), c.get(name).bytes(), name);
      // tensors of one model differ from each other too (streams are keyed by name)
      const e0 = a.get("model.layers.1.mlp.experts.0.gate_proj.weight").bytes();
      const e1 = a.get("model.layers.1.mlp.experts.1.gate_proj.weight").bytes();
      assertNotEquals(e0, e1);
    } finally {
      a.close();
      c.close();
    }
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("a tensor's values do not depend on the other tensors (fewer layers: same layer 0)", async () => {
  const dirs = [await tempDir(), await tempDir()];
  try {
    await make({ arch: "mixtral", seed: 9 }, dirs[0]);
    await make({ arch: "mixtral", seed: 9, overrides: { layers: 1 } }, dirs[1]);
    const a = openCheckpoint(dirs[0], { mode: "read" });
    const b = openCheckpoint(dirs[1], { mode: "read" });
    try {
      for (const name of b.names()) {
        assert(sameBytes(a.get(name).bytes(), b.get(name).bytes()), name);
      }
      assertEquals(a.names().length > b.names().length, true);
    } finally {
      a.close();
      b.close();
    }
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("f16 and bf16 files hold the f32 samples rounded; tensorValues predicts the file", async () => {
  const dirs = { f32: await tempDir(), f16: await tempDir(), bf16: await tempDir() };
  try {
    const plans = {
      f32: await make({ arch: "olmoe", dtype: "f32", seed: 3 }, dirs.f32),
      f16: await make({ arch: "olmoe", dtype: "f16", seed: 3 }, dirs.f16),
      bf16: await make({ arch: "olmoe", dtype: "bf16", seed: 3 }, dirs.bf16),
    };
    const stores = {
      f32: openCheckpoint(dirs.f32, { mode: "read" }),
      f16: openCheckpoint(dirs.f16, { mode: "read" }),
      bf16: openCheckpoint(dirs.bf16, { mode: "read" }),
    };
    try {
      for (const t of plans.f32.tensors) {
        const f = stores.f32.tensorF32(t.name);
        assertEquals(f, tensorValues(t, 3), t.name);
        for (const d of ["f16", "bf16"] as const) {
          const got = stores[d].tensorF32(t.name);
          assertEquals(got, roundTo(f, d), `${d} ${t.name}`);
          const pt = plans[d].tensors.find((x) => x.name === t.name)!;
          assertEquals(got, tensorValues(pt, 3));
        }
      }
    } finally {
      for (const s of Object.values(stores)) s.close();
    }
  } finally {
    for (const d of Object.values(dirs)) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("weight statistics: matrices N(0, 1/fan_in), o/down scaled, routers 2x, norms 1 + 0.1 N(0, 1)", () => {
  const plan = planModel({
    preset: "olmoe-1b-7b",
    out: "",
    seed: 11,
    overrides: { layers: 1, experts: 2, topK: 1, vocab: 512 },
  });
  const stats = (v: Float32Array) => {
    let s = 0;
    let ss = 0;
    for (const x of v) s += x;
    const mean = s / v.length;
    for (const x of v) ss += (x - mean) ** 2;
    let max = 0;
    for (const x of v) max = Math.max(max, Math.abs(x));
    return { mean, std: Math.sqrt(ss / v.length), max };
  };
  for (const t of plan.tensors) {
    const v = tensorValues(t, 11);
    const s = stats(v);
    const n = v.length;
    const tol = 5 / Math.sqrt(n); // in units of the std
    assert(Math.abs(s.mean - t.mean) < t.std * tol + 1e-7, `${t.name}: mean ${s.mean}`);
    assert(Math.abs(s.std / t.std - 1) < 2 * tol + 0.01, `${t.name}: std ${s.std} vs ${t.std}`);
    assert(s.max < t.mean + 4.5 * t.std, `${t.name}: max ${s.max}`);
    if (t.role === "expert" || t.role === "attn" || t.role === "lm_head" || t.role === "mlp") {
      // o and down projections write into the residual stream: scaled by 1/sqrt(2 layers), the
      // preset's 16 layers (not the 1 kept), so the kept layer equals the full model's
      const residual = t.projection === "o" || t.projection === "down";
      assertEquals(t.std, (residual ? 1 / Math.sqrt(2 * 16) : 1) / Math.sqrt(t.shape[1]), t.name);
    }
    if (t.role === "embed") assertEquals(t.std, 1);
    if (t.role === "router") assertEquals(t.std, 2 / Math.sqrt(t.shape[1]));
    if (t.role === "norm" || t.role === "qk_norm") assertEquals([t.mean, t.std], [1, 0.1]);
  }
});

Deno.test("multi-chunk tensors (larger than one 4 MiB chunk) are generated correctly", async () => {
  await withTemp(async (dir) => {
    // embedding and LM head 4100 x 1024 bf16 = 8.4 MB: three chunks each, the last one short
    const made = await make({
      arch: "mixtral",
      dtype: "bf16",
      seed: 4,
      overrides: {
        vocab: 4100,
        hidden: 1024,
        heads: 8,
        kvHeads: 8,
        inter: 16,
        experts: 2,
        topK: 1,
        layers: 1,
      },
    }, dir);
    const store = openCheckpoint(dir, { mode: "read" });
    try {
      for (const t of made.tensors) {
        const got = new Uint32Array(store.tensorF32(t.name).buffer);
        const want = new Uint32Array(tensorValues(t, 4).buffer);
        assertEquals(got.length, want.length);
        let bad = -1;
        for (let i = 0; i < got.length && bad < 0; i++) if (got[i] !== want[i]) bad = i;
        assertEquals(bad, -1, `${t.name}: first difference at element ${bad}`);
      }
    } finally {
      store.close();
    }
  });
});

Deno.test("random models give O(1) logits and routing spread over the experts", async () => {
  const cases: MakeModelOptions[] = [
    ...ARCHS.map((arch) => ({ arch, out: "", seed: 1 })),
    {
      arch: "qwen3_moe",
      out: "",
      seed: 2,
      dtype: "bf16",
      overrides: {
        hidden: 256,
        heads: 8,
        kvHeads: 2,
        headDim: 64,
        inter: 64,
        experts: 32,
        topK: 4,
        layers: 8,
        vocab: 1000,
        mlpOnlyLayers: [],
      },
    },
    {
      // untied, many experts, deeper: routing must stay spread in the last layers too
      arch: "olmoe",
      out: "",
      seed: 4,
      dtype: "bf16",
      overrides: { hidden: 256, heads: 8, kvHeads: 8, inter: 32, experts: 64, topK: 8, layers: 8 },
    },
    {
      arch: "mixtral",
      out: "",
      seed: 3,
      dtype: "f16",
      overrides: { hidden: 256, heads: 8, layers: 6, inter: 128 },
    },
  ];
  const ids = Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 256);
  for (const c of cases) {
    await withTemp(async (dir) => {
      const made = await makeModel({ ...c, out: dir });
      const cfg = made.config;
      const store = openCheckpoint(dir, { mode: "read" });
      try {
        const out = cpuForward(cfg, tensorGetter(store), ids);
        let ss = 0;
        let n = 0;
        let max = 0;
        for (const row of out.logits) {
          for (const v of row) {
            assert(Number.isFinite(v));
            ss += v * v;
            n++;
            max = Math.max(max, Math.abs(v));
          }
        }
        const rmsLogit = Math.sqrt(ss / n);
        const label = `${cfg.arch} ${JSON.stringify(c.overrides ?? {})}`;
        assert(rmsLogit > 0.3 && rmsLogit < 3, `${label}: logit rms ${rmsLogit}`);
        assert(max < 20, `${label}: max |logit| ${max}`);
        // the argmax differs between positions (not a constant prediction)
        const argmax = out.logits.map((r) => r.indexOf(Math.max(...r)));
        assert(new Set(argmax).size >= ids.length / 3, `${label}: argmax ${argmax}`);
        for (let l = 0; l < out.routes.length; l++) {
          const ffn = cfg.layers.find((x) => x.ffn.kind === "moe")!.ffn;
          assert(ffn.kind === "moe");
          const used = new Set(out.routes[l].flat());
          const picks = ids.length * ffn.topK;
          const want = Math.min(ffn.experts, picks) * 0.6;
          assert(used.size >= want, `${label} moe layer ${l}: ${used.size} experts used`);
          const meanTop = out.topProb[l].reduce((a, b) => a + b, 0) / ids.length;
          assert(meanTop < 0.9, `${label} moe layer ${l}: mean top-1 probability ${meanTop}`);
          assert(meanTop > 1.5 / ffn.experts, `${label}: routing is uniform (${meanTop})`);
        }
      } finally {
        store.close();
      }
    });
  }
});
