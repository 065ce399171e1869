// The offloading engine on the HF-written fixtures: every mode with --pregate exact must give exactly
// the resident result (logits and greedy tokens); strict pre-gating runs and reports its hit rate;
// upload and memory figures follow the paper's accounting; an impossible budget is a clear error.
import assert from "node:assert/strict";
import { loadModel, type LoadOptions } from "../runtime/model.ts";
import { ArgumentError, BudgetError } from "../runtime/base/errors.ts";
import { loadConfig, type MoeFfn } from "../runtime/models/config.ts";
import { openCheckpoint } from "../runtime/weights/safetensors.ts";
import { writeSafetensors } from "../runtime/weights/safetensors_writer.ts";
import { pregateName } from "../runtime/models/names.ts";
import { makeModel } from "../runtime/models/make_model.ts";
import { randn, testGpu } from "./test_util.ts";

const ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];
const MODES = ["on-demand", "prefetch-all", "pregated"] as const;
const GPU = { sanitizeResources: false, sanitizeOps: false };
const fixture = (arch: string) => new URL(`./fixtures/hf/${arch}/`, import.meta.url).pathname;

async function run(arch: string, opts: LoadOptions, ids: number[], n: number) {
  const model = await loadModel(fixture(arch), { device: await testGpu(), ...opts });
  try {
    const logits = await model.logits(ids);
    const tokens: number[] = [];
    for await (const id of model.generate(ids, { maxTokens: n })) tokens.push(id);
    return { logits, tokens, stats: model.lastStats!, cfg: model.config, slots: model.expertSlots };
  } finally {
    await model.dispose();
  }
}

for (const arch of ARCHS) {
  const ref = JSON.parse(await Deno.readTextFile(`${fixture(arch)}reference.json`));
  Deno.test({
    name: `${arch}: on-demand, prefetch-all and pregated (exact) equal resident`,
    ...GPU,
    fn: async () => {
      const base = await run(arch, { mode: "resident" }, ref.ids, 8);
      assert.deepEqual(base.tokens, ref.greedy.slice(0, 8));
      assert.equal(base.stats.upload_bytes_per_token, 0);
      for (const mode of MODES) {
        const r = await run(arch, { mode }, ref.ids, 8);
        assert.deepEqual(r.tokens, base.tokens, `${mode} tokens`);
        for (let t = 0; t < base.logits.length; t++) {
          assert.deepEqual(r.logits[t], base.logits[t], `${mode} logits at position ${t}`); // bit-identical
        }
        // Upload accounting: bytes per decode token against the experts the modes must move.
        const moe = r.cfg.layers.filter((l) => l.ffn.kind === "moe").map((l) => l.ffn as MoeFfn);
        const expertBytes = 3 * r.cfg.hidden * moe[0].inter * 4; // fixtures are f32
        const perToken = r.stats.upload_bytes_per_token / expertBytes;
        const E = moe[0].experts, k = moe[0].topK, L = moe.length;
        if (mode === "prefetch-all") {
          // Every expert of every MoE layer, every token: the pool holds one layer's worth, so with
          // more than one MoE layer nothing survives to the next token; with one, everything does.
          if (L > 1) assert.equal(perToken, L * E, `${mode} experts per token`);
          else assert.ok(perToken <= L * E, `${mode}: ${perToken}`);
        } else if (mode === "on-demand") {
          // the chosen top-k of every MoE layer (fewer when an expert is still resident)
          assert.ok(perToken > 0 && perToken <= L * k, `${mode}: ${perToken}`);
        } else {
          // the pre-gate's top-k, plus on demand what it missed (random routers: many misses)
          assert.ok(perToken > 0 && perToken <= L * 2 * k, `${mode}: ${perToken}`);
        }
        assert.equal(
          r.slots,
          mode === "prefetch-all" ? moe[0].experts : (mode === "pregated" ? 2 : 1) * moe[0].topK,
        );
        if (mode === "pregated") assert.ok(r.stats.pregate_hit_rate !== null);
      }
    },
  });
}

Deno.test({
  name: "strict pre-gating runs, uses the pre-gate's choice and reports its hit rate",
  ...GPU,
  fn: async () => {
    const ref = JSON.parse(await Deno.readTextFile(`${fixture("mixtral")}reference.json`));
    const r = await run("mixtral", { mode: "pregated", pregate: "strict" }, ref.ids, 8);
    assert.equal(r.tokens.length, 8);
    const rate = r.stats.pregate_hit_rate!;
    assert.ok(rate > 0 && rate < 1, `hit rate ${rate} (random router weights: neither 0 nor 1)`);
    // strict pre-gating changes the computation for a model not trained with pre-gates
    const exact = await run("mixtral", { mode: "pregated" }, ref.ids, 8);
    assert.notDeepEqual(r.logits, exact.logits);
  },
});

Deno.test({
  name: "a budget too small for the mode fails with the smallest budget that works",
  ...GPU,
  fn: async () => {
    let needed = 0;
    await assert.rejects(
      async () =>
        loadModel(fixture("olmoe"), { device: await testGpu(), mode: "pregated", budget: 1 << 20 }),
      (e) => {
        assert.ok(e instanceof BudgetError, String(e));
        assert.match(e.message, /smallest budget that works is/);
        needed = e.minimumBytes!;
        return true;
      },
    );
    // ...and that budget does work, with exactly the minimum slots.
    const m = await loadModel(fixture("olmoe"), {
      device: await testGpu(),
      mode: "pregated",
      budget: needed,
    });
    assert.equal(m.expertSlots, 6);
    await m.dispose();
  },
});

Deno.test({
  name: "an expert cache adds slots and raises the cache hit rate",
  ...GPU,
  fn: async () => {
    const ref = JSON.parse(await Deno.readTextFile(`${fixture("qwen3_moe")}reference.json`));
    const small = await run("qwen3_moe", { mode: "on-demand" }, ref.ids, 12);
    const big = await run("qwen3_moe", { mode: "on-demand", expertCache: 14 }, ref.ids, 12);
    assert.equal(big.slots, small.slots! + 14);
    assert.deepEqual(big.tokens, small.tokens);
    assert.ok(big.stats.expert_cache_hit_rate! > small.stats.expert_cache_hit_rate!);
    assert.ok(big.stats.upload_bytes_per_token < small.stats.upload_bytes_per_token);
    const lfu = await run(
      "qwen3_moe",
      { mode: "on-demand", expertCache: 6, cachePolicy: "lfu" },
      ref.ids,
      12,
    );
    assert.deepEqual(lfu.tokens, small.tokens);
    assert.ok(lfu.stats.expert_cache_hit_rate! > small.stats.expert_cache_hit_rate!);
  },
});

Deno.test({
  name:
    "peak GPU memory of pregated mode is dense + two blocks' active experts (the paper's Eq. 1)",
  ...GPU,
  fn: async () => {
    const ref = JSON.parse(await Deno.readTextFile(`${fixture("mixtral")}reference.json`));
    const resident = await run("mixtral", { mode: "resident" }, ref.ids, 4);
    const pregated = await run("mixtral", { mode: "pregated" }, ref.ids, 4);
    const moe = resident.cfg.layers.filter((l) => l.ffn.kind === "moe").map((l) => l.ffn as MoeFfn);
    const slotBytes = 3 * Math.ceil((moe[0].inter * resident.cfg.hidden * 4) / 256) * 256;
    const allExperts = moe.length * moe[0].experts * slotBytes;
    assert.equal(pregated.slots, 2 * moe[0].topK);
    // Same dense weights, KV cache and activations; the experts shrink to 2 x top-k slots.
    const expected = resident.stats.peak_gpu_bytes - allExperts + pregated.slots! * slotBytes;
    const slack = Math.abs(pregated.stats.peak_gpu_bytes - expected);
    assert.ok(slack < 64 << 10, `peak ${pregated.stats.peak_gpu_bytes}, expected ~${expected}`);
    assert.ok(pregated.stats.peak_gpu_bytes < resident.stats.peak_gpu_bytes - allExperts / 2);
  },
});

Deno.test({
  name:
    "the mapped and pinned uploaders give writeBuffer's logits, tokens and copies in every mode",
  ...GPU,
  fn: async () => {
    const ref = JSON.parse(await Deno.readTextFile(`${fixture("qwen2_moe")}reference.json`));
    for (const mode of MODES) {
      const w = await run("qwen2_moe", { mode, uploader: "write" }, ref.ids, 8);
      for (const uploader of ["mapped", "pinned"] as const) {
        const u = await run("qwen2_moe", { mode, uploader }, ref.ids, 8);
        assert.deepEqual(u.tokens, w.tokens, `${mode} ${uploader}`);
        assert.deepEqual(u.logits, w.logits, `${mode} ${uploader}`);
        assert.equal(u.stats.upload_bytes_per_token, w.stats.upload_bytes_per_token);
        // The pinned copy of every expert is host memory, reported beside the device peak.
        if (uploader === "pinned") {
          const cfg = u.cfg, moe = cfg.layers.filter((l) => l.ffn.kind === "moe");
          const f = moe[0].ffn as MoeFfn;
          const all = moe.length * f.experts * 3 * cfg.hidden * f.inter * 4; // fixtures are f32
          assert.ok(u.stats.peak_host_staging_bytes >= all, `${u.stats.peak_host_staging_bytes}`);
          // and not device memory (the shared test device's small caches aside).
          const more = u.stats.peak_gpu_bytes - w.stats.peak_gpu_bytes;
          assert.ok(more < 64 << 10, `${mode}: device peak ${more} bytes above writeBuffer's`);
        }
      }
    }
  },
});

Deno.test({
  name: "trained pre-gate tensors in a checkpoint are used instead of the next layer's router",
  ...GPU,
  fn: async () => {
    // The mixtral fixture plus a pre-gate per MoE block (but the last): random [experts, hidden].
    const src = fixture("mixtral");
    const dir = await Deno.makeTempDir();
    const store = openCheckpoint(src);
    const cfg = await loadConfig(src);
    const tensors = store.names().map((name) => {
      const t = store.get(name);
      return { name, dtype: t.dtype, shape: t.shape, data: t.bytes().slice() as Uint8Array };
    });
    const E = (cfg.layers[0].ffn as MoeFfn).experts;
    for (let i = 0; i + 1 < cfg.layers.length; i++) {
      tensors.push({
        name: pregateName(cfg, i),
        dtype: "f32",
        shape: [E, cfg.hidden],
        data: new Uint8Array(randn(E * cfg.hidden, 0.5, 1000 + i).buffer) as Uint8Array,
      });
    }
    await writeSafetensors(`${dir}/model.safetensors`, tensors);
    await Deno.copyFile(`${src}config.json`, `${dir}/config.json`);
    store.close();
    const ref = JSON.parse(await Deno.readTextFile(`${src}reference.json`));
    const opts = { mode: "pregated" as const, pregate: "strict" as const };
    const stock = await run("mixtral", opts, ref.ids, 6);
    const model = await loadModel(dir, { device: await testGpu(), ...opts });
    const trained = await model.logits(ref.ids);
    await model.dispose();
    // Different pre-gates choose different experts: strict outputs differ from the stock stand-in.
    assert.notDeepEqual(trained, stock.logits);
    // Exact mode still reproduces the model whatever the pre-gate predicts.
    const exact = await loadModel(dir, { device: await testGpu(), mode: "pregated" });
    const exactLogits = await exact.logits(ref.ids);
    await exact.dispose();
    const resident = await run("mixtral", { mode: "resident" }, ref.ids, 1);
    assert.deepEqual(exactLogits, resident.logits);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "bf16 checkpoints, chunked prefill and expert rounds: every mode matches resident",
  ...GPU,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    await makeModel({ arch: "qwen2_moe", preset: "tiny", out: `${dir}/m`, dtype: "bf16", seed: 5 });
    const ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5];
    const go = async (opts: LoadOptions) => {
      // prefillChunk 4: the 11-token prompt runs in three passes at positions 0, 4, 8; each pass's
      // 4 x top-k choices exceed on-demand's slots, so layers run in rounds.
      const m = await loadModel(`${dir}/m`, { device: await testGpu(), prefillChunk: 4, ...opts });
      const logits = await m.logits(ids);
      const out: number[] = [];
      for await (const id of m.generate(ids, { maxTokens: 6 })) out.push(id);
      await m.dispose();
      return { logits, out };
    };
    const base = await go({ mode: "resident" });
    for (const mode of MODES) {
      const r = await go({ mode });
      assert.deepEqual(r.out, base.out, mode);
      assert.deepEqual(r.logits, base.logits, mode);
    }
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "--expert-cache auto fills the budget and needs one",
  ...GPU,
  fn: async () => {
    await assert.rejects(
      async () =>
        loadModel(fixture("olmoe"), {
          device: await testGpu(),
          mode: "on-demand",
          expertCache: "auto",
        }),
      (e) =>
        e instanceof ArgumentError && e.argument === "expertCache" && /--budget/.test(e.message),
    );
    const small = await loadModel(fixture("olmoe"), {
      device: await testGpu(),
      mode: "on-demand",
      expertCache: "auto",
      budget: 2 << 20,
    });
    const big = await loadModel(fixture("olmoe"), {
      device: await testGpu(),
      mode: "on-demand",
      expertCache: "auto",
      budget: 64 << 20,
    });
    assert.ok(small.expertSlots! >= 3 && small.expertSlots! < big.expertSlots!);
    assert.equal(big.expertSlots, 3 * 8); // every expert of the 3 MoE layers fits in 64 MiB
    await small.dispose();
    await big.dispose();
  },
});
