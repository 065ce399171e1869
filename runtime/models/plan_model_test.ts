// Tests of planModel (plan_model.ts), the presets (presets.ts) and the config.json they give
// (hf_config.ts), without writing anything.
import assert from "node:assert/strict";
import { ArgumentError, PregateError } from "../base/errors.ts";
import { parseConfig } from "./config.ts";
import { countParams } from "./param_counts.ts";
import { type MakeModelOptions, planModel } from "./plan_model.ts";
import { type ModelDims, presetNames, PRESETS } from "./presets.ts";
import { ARCHS, assertEquals } from "./model_test_util.ts";
import { ARCHITECTURES } from "./arch/mod.ts";

function throwsArgumentError(fn: () => unknown): ArgumentError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ArgumentError) return e;
    throw e;
  }
  throw new Error("expected an ArgumentError, nothing was thrown");
}

Deno.test("tiny presets: the intended configs, two in the HF 4 form (top-level rope_theta)", () => {
  const hf4 = ["mixtral", "qwen3_moe"];
  for (const arch of ARCHS) {
    const plan = planModel({ arch, out: "" });
    const j = plan.configJson;
    assertEquals(j.model_type, arch);
    assertEquals(j.hidden_size, 64);
    assertEquals(j.vocab_size, 256);
    assertEquals(j.num_local_experts ?? j.num_experts, 8);
    if (hf4.includes(arch)) {
      assertEquals(plan.configStyle, "hf4");
      assertEquals(j.rope_parameters, undefined);
      assertEquals(j.rope_scaling, null);
      assertEquals(typeof j.rope_theta, "number");
      assertEquals(j.torch_dtype, "float32");
      assertEquals(j.dtype, undefined);
      assert(plan.configText.includes('"rope_theta": 1000000.0'));
    } else {
      assertEquals(plan.configStyle, "hf5");
      assertEquals(j.rope_theta, undefined);
      assertEquals((j.rope_parameters as Record<string, unknown>).rope_type, "default");
      assertEquals(j.dtype, "float32");
    }
    // both forms parse to the same model
    const other = planModel({ arch, out: "", configStyle: hf4.includes(arch) ? "hf5" : "hf4" });
    assertEquals({ ...other.config, raw: null }, { ...plan.config, raw: null });
    assertEquals(parseConfig(JSON.parse(plan.configText)).layers, plan.config.layers);
  }
  const q3 = planModel({ arch: "qwen3_moe", out: "" });
  assertEquals(q3.configJson.num_experts, 8); // 4.x key; HF 5 writes num_local_experts
  assertEquals(q3.configJson.head_dim, 32);
  assertEquals(q3.config.tieEmbeddings, true);
  assertEquals(q3.config.qkNorm, "head");
  const q2 = planModel({ arch: "qwen2_moe", out: "" }).config;
  assertEquals(q2.qkvBias, true);
  const moe = q2.layers[1].ffn;
  assert(moe.kind === "moe" && moe.sharedInter === 128 && !moe.renormalize);
  assertEquals(planModel({ arch: "olmoe", out: "" }).config.qkNorm, "full");
});

Deno.test("real presets: shapes, configs and parameter counts of the published models", () => {
  const want: Record<string, { total: number; active: number; layers: number }> = {
    "mixtral-8x7b": { total: 46.70, active: 12.88, layers: 32 },
    "qwen3-30b-a3b": { total: 30.53, active: 3.35, layers: 48 },
    "olmoe-1b-7b": { total: 6.92, active: 1.28, layers: 16 },
    "qwen1.5-moe-a2.7b": { total: 14.32, active: 2.69, layers: 24 },
  };
  for (const [preset, w] of Object.entries(want)) {
    const plan = planModel({ preset, out: "", dtype: "bf16" });
    const p = countParams(plan.config);
    assertEquals((p.total / 1e9).toFixed(2), w.total.toFixed(2), preset);
    assertEquals((p.activePerToken / 1e9).toFixed(2), w.active.toFixed(2), preset);
    assertEquals(plan.config.layers.length, w.layers);
    assertEquals(plan.totalBytes, p.total * 2);
    assert(plan.config.layers.every((l) => l.ffn.kind === "moe"));
    assertEquals(plan.configJson.transformers_version, "5.17.0");
    // shrinking keeps the real layer shapes
    const small = planModel({ preset, out: "", dtype: "bf16", overrides: { layers: 2 } });
    assertEquals(small.config.layers.length, 2);
    assertEquals(small.config.layers[0], plan.config.layers[0]);
    assertEquals(
      small.tensors.filter((t) => t.layer === 0),
      plan.tensors.filter((t) => t.layer === 0),
    );
  }
  const m = planModel({ preset: "mixtral-8x7b", out: "" }).config;
  assertEquals([m.hidden, m.heads, m.kvHeads, m.headDim, m.vocabSize, m.ropeTheta], [
    4096,
    32,
    8,
    128,
    32000,
    1e6,
  ]);
  const q = planModel({ preset: "qwen3-30b-a3b", out: "" }).config;
  assertEquals([q.hidden, q.heads, q.kvHeads, q.headDim, q.tieEmbeddings], [
    2048,
    32,
    4,
    128,
    false,
  ]);
  const f = q.layers[0].ffn;
  assert(f.kind === "moe" && f.experts === 128 && f.topK === 8 && f.inter === 768 && f.renormalize);
  const o = planModel({ preset: "olmoe-1b-7b", out: "" });
  assertEquals(o.configJson.clip_qkv, null);
  assertEquals(o.config.clipQkv, 0);
  const q2 = planModel({ preset: "qwen1.5-moe-a2.7b", out: "" }).config.layers[0].ffn;
  assert(
    q2.kind === "moe" && q2.experts === 60 && q2.topK === 4 && q2.inter === 1408 &&
      q2.sharedInter === 5632,
  );
  assertEquals(planModel({ preset: "mixtral-8x7b", out: "" }).arch, "mixtral");
  assertEquals(presetNames("mixtral"), ["tiny", "mixtral-8x7b"]);
  assertEquals(
    Object.values(PRESETS).filter((p) => p.name === "tiny").length,
    ARCHITECTURES.length,
  );
});

Deno.test("bad arguments are ArgumentErrors naming the argument and listing the valid choices", () => {
  const bad = (opts: Partial<MakeModelOptions>, argument: string, ...parts: string[]) => {
    const e = throwsArgumentError(() => planModel({ out: "", ...opts } as MakeModelOptions));
    assertEquals(e.argument, argument, e.message);
    for (const p of parts) assert(e.message.includes(p), `${e.message} should mention '${p}'`);
    assert(e instanceof PregateError && e.code === "E_ARGUMENT");
  };
  bad({ arch: "llama" }, "arch", "llama", "mixtral, qwen2_moe, qwen3_moe, olmoe");
  bad({}, "arch", "required");
  bad({ preset: "gpt-4" }, "arch", "gpt-4", "mixtral-8x7b");
  bad({ arch: "olmoe", preset: "huge" }, "preset", "huge", "tiny, olmoe-1b-7b");
  bad(
    { arch: "olmoe", preset: "mixtral-8x7b" },
    "preset",
    "mixtral model, not olmoe",
    "olmoe-1b-7b",
  );
  bad({ arch: "mixtral", dtype: "fp8" }, "dtype", "fp8", "f32, f16, bf16");
  bad({ arch: "mixtral", seed: -1 }, "seed");
  bad({ arch: "mixtral", seed: 1.5 }, "seed");
  bad({ arch: "mixtral", configStyle: "hf3" as "hf4" }, "configStyle");
  bad({ arch: "mixtral", overrides: { heads: 5 } }, "overrides.kvHeads", "heads 5", "kvHeads 2");
  bad(
    { arch: "mixtral", overrides: { heads: 6, kvHeads: 2 } },
    "overrides.heads",
    "hidden 64",
    "heads 6",
  );
  bad({ arch: "mixtral", overrides: { topK: 9 } }, "overrides.topK", "topK 9", "experts 8");
  bad({ arch: "mixtral", overrides: { layers: 0 } }, "overrides.layers", "integer >= 1");
  bad({ arch: "mixtral", overrides: { hidden: 64.5 } }, "overrides.hidden");
  bad(
    { arch: "mixtral", overrides: { widht: 3 } as Partial<ModelDims> },
    "overrides.widht",
    "unknown",
    "hidden",
  );
  bad(
    { arch: "mixtral", overrides: { sharedInter: 64 } },
    "overrides.sharedInter",
    "shared expert",
  );
  bad(
    { arch: "mixtral", overrides: { sparseStep: 2 } },
    "overrides.sparseStep",
    "every layer is MoE",
  );
  bad({ arch: "mixtral", overrides: { normTopK: false } }, "overrides.normTopK");
  bad({ arch: "olmoe", overrides: { headDim: 32 } }, "overrides.headDim", "no head_dim");
  bad({ arch: "mixtral", overrides: { headDim: 15 } }, "overrides.headDim", "odd");
  bad({ arch: "mixtral", overrides: { clipQkv: 8 } }, "overrides.clipQkv", "OLMoE");
  bad(
    { arch: "qwen3_moe", overrides: { mlpOnlyLayers: [7] } },
    "overrides.mlpOnlyLayers",
    "[0, 3)",
  );
  bad(
    { arch: "qwen2_moe", overrides: { sparseStep: 5 } },
    "overrides.sparseStep",
    "no layer",
    "MoE",
  );
  bad(
    { arch: "mixtral", dtype: "bf16", overrides: { inter: 95 } },
    "overrides.inter",
    "95 is odd",
    "bf16",
  );
  bad(
    { arch: "qwen2_moe", dtype: "f16", overrides: { sharedInter: 7 } },
    "overrides.sharedInter",
    "odd",
  );
  bad(
    { arch: "qwen3_moe", dtype: "bf16", overrides: { denseInter: 33 } },
    "overrides.denseInter",
    "odd",
  );
  bad(
    {
      arch: "mixtral",
      dtype: "bf16",
      overrides: { hidden: 63, heads: 3, kvHeads: 3, headDim: 12 },
    },
    "overrides.hidden",
    "odd",
  );
  // odd sizes are fine in f32
  const ok = planModel({ arch: "mixtral", out: "", overrides: { inter: 95, vocab: 251 } });
  assertEquals(ok.config.layers[0].ffn.inter, 95);
  // explicit head_dim where the arch stores it
  assertEquals(
    planModel({ arch: "mixtral", out: "", overrides: { headDim: 32 } }).configJson.head_dim,
    32,
  );
  // a preset's mlp_only_layers beyond a reduced layer count are dropped
  assertEquals(
    planModel({ arch: "qwen3_moe", out: "", overrides: { layers: 1 } }).dims.mlpOnlyLayers,
    [],
  );
});
