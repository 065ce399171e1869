import assert from "node:assert/strict";
import { ARCHITECTURES, loadConfig, parseConfig } from "./config.ts";
import { ConfigError } from "../errors.ts";

const base = {
  model_type: "mixtral",
  vocab_size: 256,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_local_experts: 8,
  num_experts_per_tok: 2,
};

Deno.test("rope theta: top-level rope_theta, HF 5's rope_parameters, and the arch default", () => {
  assert.equal(parseConfig({ ...base, rope_theta: 12345 }).ropeTheta, 12345);
  assert.equal(
    parseConfig({ ...base, rope_parameters: { rope_type: "default", rope_theta: 777 } }).ropeTheta,
    777,
  );
  assert.equal(parseConfig(base).ropeTheta, 1e6);
  assert.throws(
    () => parseConfig({ ...base, rope_parameters: { rope_type: "yarn", rope_theta: 1e6 } }),
    (e) => e instanceof ConfigError && /yarn/.test(e.message),
  );
});

Deno.test("unsupported architectures and values get errors that list what is supported", () => {
  assert.throws(
    () => parseConfig({ ...base, model_type: "llama" }, "/m/config.json"),
    (e) =>
      e instanceof ConfigError && /\/m\/config.json/.test(e.message) && /llama/.test(e.message) &&
      ARCHITECTURES.every((a) => e.message.includes(a)),
  );
  for (
    const [patch, word] of [
      [{ hidden_act: "gelu" }, "hidden_act"],
      [{ num_key_value_heads: 3 }, "num_key_value_heads"],
      [{ num_experts_per_tok: 9 }, "num_experts_per_tok"],
      [{ hidden_size: "64" }, "hidden_size"],
      [{ sliding_window: 128, max_position_embeddings: 4096 }, "sliding_window"],
      [{ use_sliding_window: true }, "sliding"],
    ] as const
  ) {
    assert.throws(
      () => parseConfig({ ...base, ...patch }),
      (e) => e instanceof ConfigError && e.message.includes(word),
      JSON.stringify(patch),
    );
  }
});

Deno.test("qwen layers: decoder_sparse_step and mlp_only_layers choose the dense layers", () => {
  const q = parseConfig({
    ...base,
    model_type: "qwen3_moe",
    num_hidden_layers: 6,
    num_experts: 8,
    moe_intermediate_size: 32,
    intermediate_size: 128,
    decoder_sparse_step: 2,
    mlp_only_layers: [3],
    tie_word_embeddings: true,
  });
  assert.deepEqual(q.layers.map((l) => l.ffn.kind), [
    "dense",
    "moe",
    "dense",
    "dense",
    "dense",
    "moe",
  ]);
  assert.equal(q.tieEmbeddings, true);
  assert.equal(q.qkNorm, "head");
  const moe = q.layers[1].ffn;
  assert.ok(moe.kind === "moe" && moe.renormalize && moe.inter === 32);
});

Deno.test("loadConfig names the file for missing or invalid config.json", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(
    () => loadConfig(dir),
    (e) => e instanceof ConfigError && e.message.includes(dir),
  );
  await Deno.writeTextFile(`${dir}/config.json`, "{ not json");
  await assert.rejects(
    () => loadConfig(dir),
    (e) => e instanceof ConfigError && /JSON/.test(e.message),
  );
  await Deno.remove(dir, { recursive: true });
});
