// `convert`: the GGUF a checkpoint becomes, as llama.cpp reads it: metadata keys, tensor names,
// ggml dimensions and types (matrices in the asked type with llama-quantize's fallbacks, routers
// and vectors in F32), Pregate's pre-gates only when asked, no vocabulary without tokenizer.json;
// configs llama.cpp's graphs do not compute are refused; the q/k permutation inverts.
import assert from "node:assert/strict";
import { ConfigError } from "../base/errors.ts";
import { openGguf } from "../weights/gguf.ts";
import { convertToGguf, ggufTypeOf } from "./gguf_convert.ts";
import { q4kmTypeOf, useMoreBits } from "./gguf_mix.ts";
import { loadModelConfig, openModelStore, permuteQkRows } from "./gguf_model.ts";
import { makeMoeModel } from "./gguf_model_test_util.ts";
import { makeModel } from "./make_model.ts";
import { FIXTURES } from "./model_test_util.ts";
import { pregateName } from "./names.ts";
import { openCheckpoint } from "../weights/safetensors.ts";

const DEMO = new URL("../../models/demo", import.meta.url).pathname;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_gguf_convert_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the demo model at q4_k: llama.cpp's keys, names, dimensions and types", () =>
  withDir(async (dir) => {
    const r = await convertToGguf({ model: DEMO, out: `${dir}/d.gguf`, type: "q4_k" });
    // 8 layers: q, k, v, o, gate/up experts in Q4_K; down experts (rows of 128) in Q8_0; F32:
    // norms (2 + 2 q/k per layer), routers, the final norm; token_embd and output in Q4_K.
    assert.deepEqual(r.types, { F32: 8 * 5 + 1, Q4_K: 8 * 6 + 2, Q8_0: 8 });
    assert.ok(r.vocab);
    const g = openGguf(`${dir}/d.gguf`);
    try {
      assert.equal(g.string("general.architecture"), "qwen3moe");
      assert.equal(g.alignment, 32);
      const keys: [string, number][] = [
        ["qwen3moe.block_count", 8],
        ["qwen3moe.embedding_length", 256],
        ["qwen3moe.attention.head_count", 4],
        ["qwen3moe.attention.head_count_kv", 2],
        ["qwen3moe.attention.key_length", 64],
        ["qwen3moe.expert_count", 8],
        ["qwen3moe.expert_used_count", 2],
        ["qwen3moe.expert_feed_forward_length", 128],
        ["qwen3moe.context_length", 256],
        ["general.file_type", 14],
      ];
      for (const [key, want] of keys) assert.equal(g.uint(key), want, key);
      assert.equal(g.float("qwen3moe.rope.freq_base"), 10000);
      const down = g.describe("blk.3.ffn_down_exps.weight");
      assert.deepEqual([down.type, down.dims], ["Q8_0", [128, 256, 8]]); // [in, out, experts]
      assert.equal(g.describe("blk.3.ffn_gate_exps.weight").type, "Q4_K");
      assert.equal(g.describe("blk.3.ffn_gate_inp.weight").type, "F32");
      assert.deepEqual(g.describe("blk.3.attn_q_norm.weight").dims, [64]);
      assert.ok(g.hasTensor("output.weight"), "untied: output.weight written");
      assert.ok(!g.names().some((n) => n.includes("pregate")), "no pre-gates unless asked");
    } finally {
      g.close();
    }
  }));

Deno.test("the demo model at q4_k_m: llama-quantize's Q4_K_M mix, loaded back as stored", () =>
  withDir(async (dir) => {
    const r = await convertToGguf({ model: DEMO, out: `${dir}/m.gguf`, type: "q4_k_m" });
    // 8 layers of 8 experts: q, gate and up experts Q4_K; k and v Q8_0, o Q5_K (8-expert rules);
    // down experts (rows of 128) Q6_K -> Q8_0 in layers 0, 3, 6, 7 and Q4_K -> Q5_0 in the others;
    // token_embd Q4_K, output Q6_K.
    assert.deepEqual(r.types, { F32: 41, Q4_K: 25, Q8_0: 20, Q5_K: 8, Q5_0: 4, Q6_K: 1 });
    const cfg = await loadModelConfig(`${dir}/m.gguf`);
    const store = openModelStore(`${dir}/m.gguf`, cfg);
    const g = openGguf(`${dir}/m.gguf`);
    try {
      assert.equal(g.uint("general.file_type"), 15); // MOSTLY_Q4_K_M
      const types = [0, 1, 2, 3, 6, 7].map((i) => g.describe(`blk.${i}.ffn_down_exps.weight`).type);
      assert.deepEqual(types, ["Q8_0", "Q5_0", "Q5_0", "Q8_0", "Q8_0", "Q8_0"]);
      assert.equal(store.get("lm_head.weight").dtype, "q6_k");
      assert.equal(store.get("model.layers.1.self_attn.o_proj.weight").dtype, "q5_k");
    } finally {
      g.close();
      store.close();
    }
  }));

Deno.test("the Q4_K_M mix follows llama.cpp's rules per tensor, layer and expert count", () => {
  // use_more_bits: the first and last eighth of the layers and every third between.
  const picked = (n: number) =>
    Array.from({ length: n }, (_, i) => i).filter((i) => useMoreBits(i, n));
  assert.deepEqual(picked(8), [0, 3, 6, 7]);
  assert.deepEqual(picked(24), [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
  const m = { layers: 24, experts: 128, tiedEmbeddings: false };
  assert.equal(q4kmTypeOf("blk.5.ffn_down_exps.weight", 768, m), "q6_k");
  assert.equal(q4kmTypeOf("blk.6.ffn_down_exps.weight", 768, m), "q4_k");
  assert.equal(q4kmTypeOf("blk.5.ffn_down_shexp.weight", 1408, m), "q8_0"); // Q6_K rows of 1408
  assert.equal(q4kmTypeOf("blk.6.ffn_down_exps.weight", 1408, m), "q5_0");
  assert.equal(q4kmTypeOf("blk.6.ffn_down_exps.weight", 1400, m), "f16");
  assert.equal(q4kmTypeOf("blk.2.attn_v.weight", 2048, m), "q6_k");
  assert.equal(q4kmTypeOf("blk.3.attn_v.weight", 2048, m), "q4_k");
  assert.equal(q4kmTypeOf("blk.3.attn_k.weight", 2048, m), "q4_k");
  assert.equal(q4kmTypeOf("blk.3.attn_output.weight", 4096, m), "q4_k");
  assert.equal(q4kmTypeOf("blk.3.ffn_gate_exps.weight", 2048, m), "q4_k");
  assert.equal(q4kmTypeOf("output.weight", 2048, m), "q6_k");
  assert.equal(q4kmTypeOf("output.weight", 2080, m), "q8_0");
  assert.equal(q4kmTypeOf("token_embd.weight", 2048, m), "q4_k");
  assert.equal(q4kmTypeOf("token_embd.weight", 2048, { ...m, tiedEmbeddings: true }), "q6_k");
  const mixtral = { layers: 32, experts: 8, tiedEmbeddings: false };
  assert.equal(q4kmTypeOf("blk.9.attn_v.weight", 4096, mixtral), "q8_0");
  assert.equal(q4kmTypeOf("blk.9.attn_k.weight", 4096, mixtral), "q8_0");
  assert.equal(q4kmTypeOf("blk.9.attn_output.weight", 4096, mixtral), "q5_k");
  assert.equal(q4kmTypeOf("blk.9.attn_output.weight", 4000, mixtral), "q8_0");
});

Deno.test("pre-gates are written when asked, and a GGUF model reads them back", () =>
  withDir(async (dir) => {
    await convertToGguf({ model: DEMO, out: `${dir}/p.gguf`, type: "f16", pregates: true });
    const cfg = await loadModelConfig(`${dir}/p.gguf`);
    const store = openModelStore(`${dir}/p.gguf`, cfg);
    try {
      for (let i = 0; i < 7; i++) assert.ok(store.has(pregateName(cfg, i)), `layer ${i}`);
      assert.ok(!store.has(pregateName(cfg, 7)), "the last MoE layer predicts nothing");
      assert.equal(store.get(pregateName(cfg, 0)).dtype, "f32");
    } finally {
      store.close();
    }
  }));

Deno.test("matrix types fall back as llama-quantize's do; vectors and routers stay F32", () => {
  assert.equal(ggufTypeOf("expert", [128, 256], "q4_k"), "q4_k");
  assert.equal(ggufTypeOf("expert", [256, 128], "q4_k"), "q8_0");
  assert.equal(ggufTypeOf("expert", [256, 80], "q4_k"), "f16");
  assert.equal(ggufTypeOf("attn", [64, 48], "q8_0"), "f16");
  assert.equal(ggufTypeOf("router", [8, 256], "q8_0"), "f32");
  assert.equal(ggufTypeOf("norm", [256], "bf16"), "f32");
  assert.equal(ggufTypeOf("shared_gate", [1, 256], "q8_0"), "f32");
});

Deno.test("a checkpoint without tokenizer.json is written without a vocabulary", () =>
  withDir(async (dir) => {
    const r = await convertToGguf({
      model: `${FIXTURES}mixtral`,
      out: `${dir}/o.gguf`,
      type: "f16",
    });
    assert.equal(r.vocab, false);
    const g = openGguf(`${dir}/o.gguf`);
    assert.equal(g.string("tokenizer.ggml.model"), "no_vocab");
    g.close();
  }));

Deno.test("configs llama.cpp's graphs do not compute are refused with a ConfigError", () =>
  withDir(async (dir) => {
    const refused = async (model: string, text: string) => {
      await assert.rejects(
        convertToGguf({ model, out: `${dir}/x.gguf`, type: "f16" }),
        (e) => e instanceof ConfigError && e.message.includes(text),
      );
    };
    await refused(`${FIXTURES}qwen3_moe`, "dense MLP"); // mlp_only_layers [1]
    await makeModel({ arch: "switch_transformers", out: `${dir}/sw`, force: true });
    await refused(`${dir}/sw`, "no GGUF form");
    await makeMoeModel("qwen3_moe", `${dir}/q3`);
    const cfgPath = `${dir}/q3/config.json`;
    const cfg = JSON.parse(await Deno.readTextFile(cfgPath));
    await Deno.writeTextFile(cfgPath, JSON.stringify({ ...cfg, norm_topk_prob: false }));
    await refused(`${dir}/q3`, "norm_topk_prob false");
    await makeMoeModel("qwen2_moe", `${dir}/q2`, { sharedInter: 0 });
    await refused(`${dir}/q2`, "shared expert");
    await refused(`${FIXTURES}olmoe`, "key/value heads"); // grouped-query attention
  }));

Deno.test("the q/k permutation of llama.cpp's llama graph inverts", () => {
  const rows = 2 * 8, rowBytes = 3;
  const bytes = Uint8Array.from({ length: rows * rowBytes }, (_, i) => i);
  const to = permuteQkRows(bytes, rows, 2, true);
  assert.notDeepEqual(to, bytes);
  assert.deepEqual(permuteQkRows(to, rows, 2, false), bytes);
  // Head 0 (D = 8): HF rows 0..3 (first halves) go to even rows, 4..7 to odd rows.
  const order = Array.from({ length: 8 }, (_, r) => to[r * rowBytes] / rowBytes);
  assert.deepEqual(order, [0, 4, 1, 5, 2, 6, 3, 7]);
});

Deno.test("pregate convert writes the file; bad flags are usage errors", () =>
  withDir(async (dir) => {
    const { main } = await import("../../cli.ts");
    const out = `${dir}/c.gguf`;
    const args = ["convert", "--model", `${FIXTURES}mixtral`, "--out", out, "--json"];
    assert.equal(await main([...args, "--type", "q8_0", "--threads", "1"]), 0);
    const g = openGguf(out);
    assert.equal(g.string("general.architecture"), "llama");
    g.close();
    assert.equal(await main([...args.slice(0, 5), "--type", "q3_k"]), 2);
    assert.equal(await main([...args, "--type", "q8_0", "--threads", "0"]), 2);
    assert.equal(await main(["convert", "--model", `${FIXTURES}mixtral`, "--type", "f16"]), 2);
  }));

Deno.test("make-model --type writes the checkpoint's quantised GGUF beside it", () =>
  withDir(async (dir) => {
    const { main } = await import("../../cli.ts");
    const dims = ["--hidden", "256", "--inter", "256", "--layers", "2", "--vocab", "512"];
    const args = ["make-model", "--arch", "mixtral", "--out", `${dir}/m`, ...dims, "--json"];
    assert.equal(await main([...args, "--type", "q4_k"]), 0);
    const g = openGguf(`${dir}/m-q4_k.gguf`);
    const ckpt = openCheckpoint(`${dir}/m`);
    try {
      assert.equal(g.describe("blk.1.ffn_down_exps.weight").type, "Q4_K");
      // The GGUF holds the checkpoint's weights, quantised: within Q4_K's error of them.
      const rel = (a: Float32Array, b: Float32Array) =>
        Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0) / b.reduce((s, x) => s + x * x, 0));
      const lm = ckpt.tensorF32("lm_head.weight");
      const err = rel(g.tensor("output.weight").toF32(), lm);
      assert.ok(err > 0 && err < 0.1, `output.weight off the checkpoint's by ${err}`);
    } finally {
      g.close();
      ckpt.close();
    }
    const run = [
      "generate",
      "--model",
      `${dir}/m-q4_k.gguf`,
      "--ids",
      "1,2,3",
      "--max-tokens",
      "2",
    ];
    assert.equal(await main([...run, "--mode", "pregated"]), 0); // quantised experts streamed
    assert.equal(await main([...args, "--force", "--type", "q3_k"]), 2);
  }));
