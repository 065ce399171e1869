// Switch Transformers end to end on the GPU against the float64 CPU reference
// (runtime/models/switch_reference.ts) on tiny random checkpoints written by make-model: logits
// (< 2e-3) and greedy tokens in every expert mode (offloading modes bit-identical to resident,
// strict pre-gating runs and reports its hit rate), both position-bias readings, bf16, the CLI, and
// the errors of a missing or misplaced encoder input.
import assert from "node:assert/strict";
import { loadModel, type LoadOptions } from "../../model.ts";
import { ArgumentError } from "../../base/errors.ts";
import { makeModel } from "../make_model.ts";
import { planModel } from "../plan_model.ts";
import { parseConfig } from "../config.ts";
import { countParams } from "../param_counts.ts";
import { type PositionBiasReading, SwitchReference } from "../switch_reference.ts";
import { GPU_TEST, testGpu } from "../../../kernels/test_util.ts";

const ENC = [13, 7, 42, 99, 5, 61, 23, 88, 2, 47, 74, 30, 11, 56, 95, 38, 19, 66, 81, 27];
const DEC = [0, 44, 9, 71, 3, 58];
const NEW = 8;
const root = await Deno.makeTempDir({ prefix: "switch_test_" });
const made = new Map<string, Promise<string>>();

/** A switch-tiny checkpoint (seed 3) in `dtype`, written once. */
function checkpoint(dtype: "f32" | "bf16" = "f32"): Promise<string> {
  let dir = made.get(dtype);
  if (!dir) {
    const out = `${root}/${dtype}`;
    dir = makeModel({ arch: "switch_transformers", out, dtype, seed: 3 }).then(() => out);
    made.set(dtype, dir);
  }
  return dir;
}

async function run(dir: string, opts: LoadOptions) {
  const model = await loadModel(dir, {
    device: await testGpu(),
    trace: opts.mode !== "resident",
    ...opts,
  });
  try {
    const logits = await model.logits(DEC, { encoderIds: ENC });
    const tokens: number[] = [];
    const start = model.encoderDecoder!.decoderStartTokenId!;
    for await (const id of model.generate([start], { encoderIds: ENC, maxTokens: NEW })) {
      tokens.push(id);
    }
    return {
      logits,
      tokens,
      stats: model.lastStats!,
      slots: model.expertSlots,
      trace: model.trace(),
    };
  } finally {
    await model.dispose();
  }
}

async function reference(dir: string, positionBias: PositionBiasReading = "shared") {
  const ref = await SwitchReference.open(dir, { positionBias });
  try {
    return { logits: ref.logits(ENC, DEC), greedy: ref.greedy(ENC, NEW, false) };
  } finally {
    ref.close();
  }
}

function maxDiff(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  a.forEach((row, t) => {
    assert.equal(row.length, b[t].length);
    for (let i = 0; i < row.length; i++) worst = Math.max(worst, Math.abs(row[i] - b[t][i]));
  });
  return worst;
}

Deno.test("switch config: the encoder's layers, then the decoder's; MoE every other layer, top-1 ReLU", () => {
  const cfg = parseConfig(planModel({ arch: "switch_transformers", out: "" }).configJson);
  assert.deepEqual(cfg.stacks, [
    { name: "encoder", first: 0, count: 4 },
    { name: "decoder", first: 4, count: 6 },
  ]);
  assert.deepEqual(cfg.layers.map((l) => l.ffn.kind[0]).join(""), "dmdmdmdmdm");
  const moe = cfg.layers[1].ffn;
  assert.ok(moe.kind === "moe" && moe.topK === 1 && moe.act === "relu" && !moe.renormalize);
});

Deno.test("switch presets: the published models' sizes, one expert of the paper's bytes", () => {
  for (
    const [preset, params, expertMB] of [
      ["switch-base-8", 0.619, 18.9],
      ["switch-base-128", 7.415, 18.9],
      ["switch-large-128", 26.309, 33.6],
    ] as const
  ) {
    const plan = planModel({ preset, out: "" });
    const p = countParams(plan.config);
    assert.equal((p.total / 1e9).toFixed(3), params.toFixed(3), preset);
    assert.equal((p.perExpert * 4 / 1e6).toFixed(1), expertMB.toFixed(1), preset);
    assert.equal(plan.totalBytes, p.total * 4);
    assert.equal(plan.configJson.model_type, "switch_transformers");
  }
  const small = planModel({ preset: "switch-base-8", out: "", overrides: { layers: 2 } }).config;
  assert.deepEqual(small.stacks?.map((s) => s.count), [2, 2]);
});

Deno.test({
  name: "switch: GPU logits and greedy tokens match the float64 reference in every mode",
  ...GPU_TEST,
  fn: async () => {
    const dir = await checkpoint();
    const ref = await reference(dir);
    assert.ok(new Set(ref.greedy).size >= 3, `a varied greedy sequence: ${ref.greedy}`);
    const base = await run(dir, { mode: "resident" });
    const diff = maxDiff(base.logits, ref.logits);
    assert.ok(diff < 2e-3, `resident: max abs logit difference ${diff}`);
    assert.deepEqual(base.tokens, ref.greedy);
    assert.equal(base.stats.upload_bytes_per_token, 0);
    for (const mode of ["on-demand", "prefetch-all", "pregated"] as const) {
      const r = await run(dir, { mode });
      assert.deepEqual(r.tokens, base.tokens, `${mode} tokens`);
      assert.equal(maxDiff(r.logits, base.logits), 0, `${mode} logits are resident's, bit for bit`);
      assert.ok(r.stats.upload_bytes_per_token > 0, `${mode} streams experts`);
      // One slot per top-1 expert on demand, two (this layer's, the next's) pre-gated, all
      // experts of one layer for prefetch-all (the next layer's copies reuse its slots).
      assert.equal(r.slots, { "on-demand": 1, pregated: 2, "prefetch-all": 8 }[mode]);
      // The trace holds the encoder pass (20 tokens, the encoder's MoE layers 1 and 3), then the
      // decoder's passes (MoE layers 5, 7, 9).
      const records = r.trace!.records;
      assert.deepEqual(records.filter((x) => x.step === 0).map((x) => [x.layer, x.tokens]), [
        [1, 20],
        [3, 20],
      ]);
      assert.deepEqual(records.filter((x) => x.step === 2).map((x) => x.layer), [5, 7, 9]);
      if (mode === "pregated") {
        // Pre-gates chain within a stack: layer 3 and layers 7, 9 were predicted; 1 and 5 not.
        const predicted = records.filter((x) => x.predicted !== null).map((x) => x.layer);
        assert.deepEqual([...new Set(predicted)].sort(), [3, 7, 9]);
        assert.ok(r.stats.pregate_hit_rate !== null);
      }
    }
    const strict = await run(dir, { mode: "pregated", pregate: "strict" });
    assert.equal(strict.tokens.length, NEW);
    const hit = strict.stats.pregate_hit_rate;
    assert.ok(hit !== null && hit >= 0 && hit <= 1, `strict hit rate ${hit}`);
  },
});

Deno.test({
  name: "switch: a budget-sized expert cache and an LFU pool give the same tokens",
  ...GPU_TEST,
  fn: async () => {
    const dir = await checkpoint();
    const base = await run(dir, { mode: "resident" });
    const cached = await run(dir, { mode: "pregated", expertCache: 5, cachePolicy: "lfu" });
    assert.deepEqual(cached.tokens, base.tokens);
    assert.equal(cached.slots, 7);
    assert.ok(cached.stats.expert_cache_hit_rate! > 0);
  },
});

Deno.test({
  name: "switch: first-layer-only position bias (transformers 5) matches the reference's reading",
  ...GPU_TEST,
  fn: async () => {
    const dir = await checkpoint();
    const ref = await reference(dir, "first_layer_only");
    const r = await run(dir, { mode: "on-demand", positionBias: "first_layer_only" });
    const diff = maxDiff(r.logits, ref.logits);
    assert.ok(diff < 2e-3, `max abs logit difference ${diff}`);
    assert.deepEqual(r.tokens, ref.greedy);
    const shared = await reference(dir);
    assert.ok(maxDiff(shared.logits, ref.logits) > 1e-2, "the two readings differ");
  },
});

Deno.test({
  name: "switch: bf16 weights match the reference on the same (rounded) weights",
  ...GPU_TEST,
  fn: async () => {
    const dir = await checkpoint("bf16");
    const ref = await reference(dir);
    const r = await run(dir, { mode: "pregated" });
    const diff = maxDiff(r.logits, ref.logits);
    assert.ok(diff < 2e-3, `max abs logit difference ${diff}`);
    assert.deepEqual(r.tokens, ref.greedy);
  },
});

Deno.test({
  name: "switch: the encoder input is required, bounded, and refused by a decoder-only model",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const model = await loadModel(await checkpoint(), { device: gpu, maxEncoderTokens: 8 });
    try {
      await assert.rejects(
        model.logits(DEC),
        (e) => e instanceof ArgumentError && /encoderIds/.test(e.message),
      );
      await assert.rejects(
        model.logits(DEC, { encoderIds: ENC }),
        (e) => e instanceof ArgumentError && /maxEncoderTokens/.test(e.hint ?? ""),
      );
      await assert.rejects(
        model.logits(DEC, { encoderIds: [1, 100] }),
        (e) => e instanceof ArgumentError && /outside the vocabulary/.test(e.message),
      );
    } finally {
      await model.dispose();
    }
    const mixtral = new URL("../../../tests/fixtures/hf/mixtral/", import.meta.url).pathname;
    const decoder = await loadModel(mixtral, { device: gpu });
    try {
      assert.equal(decoder.encoderDecoder, null);
      await assert.rejects(
        decoder.logits([1, 2], { encoderIds: [3] }),
        (e) => e instanceof ArgumentError && /decoder-only/.test(e.message),
      );
    } finally {
      await decoder.dispose();
    }
    await assert.rejects(
      loadModel(mixtral, { device: gpu, positionBias: "shared" }),
      (e) => e instanceof ArgumentError && e.argument === "positionBias",
    );
    await assert.rejects(
      loadModel(await checkpoint(), { device: gpu, activations: "llama.cpp" }),
      (e) => e instanceof ArgumentError && e.argument === "activations",
    );
  },
});

Deno.test({
  name: "switch CLI: make-model preset, logits --encoder-ids, generate --encoder-ids --json",
  ...GPU_TEST,
  fn: async () => {
    const cli = new URL("../../../cli.ts", import.meta.url).pathname;
    const pregate = async (...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-lock", cli, ...args],
        env: { NO_COLOR: "1" },
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      return text;
    };
    const dir = `${root}/cli`;
    await pregate(
      "make-model",
      "--arch",
      "switch_transformers",
      "--out",
      dir,
      "--seed",
      "3",
      "--json",
    );
    const ref = await reference(dir);
    const enc = ENC.join(",");
    const logits = JSON.parse(
      await pregate("logits", "--model", dir, "--encoder-ids", enc, "--ids", DEC.join(",")),
    );
    assert.ok(maxDiff(logits.logits, ref.logits) < 2e-3);
    const gen = JSON.parse(
      await pregate(
        "generate",
        "--model",
        dir,
        "--encoder-ids",
        enc,
        "--max-tokens",
        String(NEW),
        "--json",
      ),
    );
    // Decoding stops after the first EOS (id 1), as HF's generate does.
    const eos = ref.greedy.indexOf(1);
    assert.deepEqual(gen.ids, eos < 0 ? ref.greedy : ref.greedy.slice(0, eos + 1));
    assert.equal(gen.stats.prompt_tokens, ENC.length + 1);
  },
});

globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
