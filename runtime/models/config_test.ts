import assert from "node:assert/strict";
import { ARCHITECTURES, loadConfig, parseConfig } from "./config.ts";
import { ConfigError } from "../base/errors.ts";
import { loadModel } from "../model.ts";

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

// ---- every config value is validated at load (issue 15): each case names config.json and the
// field, what was expected and what was found. Before, each of these was accepted by parseConfig
// (some silently replaced by a default, the others failing later in a kernel or a weight check).

const olmoe = {
  model_type: "olmoe",
  vocab_size: 256,
  hidden_size: 64,
  intermediate_size: 80,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_experts: 8,
  num_experts_per_tok: 2,
};
const qwen3 = {
  ...base,
  model_type: "qwen3_moe",
  num_hidden_layers: 4,
  num_experts: 8,
  moe_intermediate_size: 32,
  intermediate_size: 128,
};

const INVALID: [string, Record<string, unknown>, string][] = [
  ["negative rms_norm_eps", { ...base, rms_norm_eps: -1e-5 }, "rms_norm_eps"],
  ["zero rms_norm_eps", { ...olmoe, rms_norm_eps: 0 }, "rms_norm_eps"],
  [
    "partial_rotary_factor above 1",
    { ...base, partial_rotary_factor: 1.5 },
    "partial_rotary_factor",
  ],
  ["zero partial_rotary_factor", { ...base, partial_rotary_factor: 0 }, "partial_rotary_factor"],
  [
    "negative partial_rotary_factor",
    { ...qwen3, partial_rotary_factor: -0.5 },
    "partial_rotary_factor",
  ],
  [
    "partial_rotary_factor giving an odd rotated width",
    { ...base, partial_rotary_factor: 0.2 },
    "partial_rotary_factor",
  ],
  ["odd head_dim", { ...qwen3, head_dim: 17 }, "head_dim"],
  ["OLMoE head_dim other than hidden / heads", { ...olmoe, head_dim: 32 }, "head_dim"],
  ["infinite rope_theta", { ...base, rope_theta: Infinity }, "rope_theta"],
  ["rope_parameters not an object", { ...base, rope_parameters: "default" }, "rope_parameters"],
  ["partial_rotary_factor above 1 in rope_parameters", {
    ...base,
    rope_parameters: { rope_type: "default", rope_theta: 1e6, partial_rotary_factor: 2 },
  }, "partial_rotary_factor"],
  [
    "tie_word_embeddings as a string",
    { ...qwen3, tie_word_embeddings: "true" },
    "tie_word_embeddings",
  ],
  ["norm_topk_prob as a number", { ...olmoe, norm_topk_prob: 1 }, "norm_topk_prob"],
  ["qkv_bias as a number", { ...qwen3, model_type: "qwen2_moe", qkv_bias: 1 }, "qkv_bias"],
  ["attention_bias as a string", { ...olmoe, attention_bias: "true" }, "attention_bias"],
  ["use_sliding_window as a string", { ...qwen3, use_sliding_window: "yes" }, "use_sliding_window"],
  ["mlp_only_layers beyond the layers", { ...qwen3, mlp_only_layers: [7] }, "mlp_only_layers"],
  ["sliding-window layer_types", {
    ...qwen3,
    layer_types: ["full_attention", "sliding_attention", "full_attention", "full_attention"],
  }, "layer_types"],
  ["layer_types of the wrong length", { ...qwen3, layer_types: ["full_attention"] }, "layer_types"],
  ["sliding_window not a number", { ...base, sliding_window: "4096" }, "sliding_window"],
  ["model_type not a string", { ...base, model_type: 3 }, "model_type"],
];

for (const [what, raw, field] of INVALID) {
  Deno.test(`config.json: ${what} is a ConfigError naming the file and '${field}'`, () => {
    assert.throws(
      () => parseConfig(raw, "/m/config.json"),
      (e) =>
        e instanceof ConfigError && e.message.startsWith("/m/config.json: ") &&
        e.message.includes(field) && / found /.test(e.message),
    );
  });
}

Deno.test("config.json: valid edge values still parse (partial rotary, clip_qkv, head_dim)", () => {
  assert.equal(parseConfig({ ...base, partial_rotary_factor: 0.5 }).rotaryDim, 8);
  assert.equal(parseConfig({ ...base, partial_rotary_factor: 1 }).rotaryDim, 16);
  const nested = { rope_type: "default", rope_theta: 5e5, partial_rotary_factor: 0.5 };
  const c = parseConfig({ ...base, rope_parameters: nested });
  assert.deepEqual([c.rotaryDim, c.ropeTheta], [8, 5e5], "HF 5 keeps both in rope_parameters");
  assert.equal(parseConfig({ ...olmoe, clip_qkv: 0.5 }).clipQkv, 0.5);
  assert.equal(parseConfig({ ...olmoe, clip_qkv: null }).clipQkv, 0);
  assert.equal(parseConfig({ ...olmoe, head_dim: 16 }).headDim, 16);
  assert.equal(parseConfig({ ...qwen3, head_dim: 32 }).headDim, 32);
  assert.equal(
    parseConfig({ ...base, clip_qkv: 8 }).clipQkv,
    0,
    "clip_qkv is OLMoE's (HF ignores it elsewhere)",
  );
  assert.equal(parseConfig({ ...base, tie_word_embeddings: null }).tieEmbeddings, false);
});

Deno.test("loadModel rejects a negative rms_norm_eps at load, naming config.json and the field", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fixture = new URL("../../tests/fixtures/hf/olmoe/", import.meta.url).pathname;
    const raw = JSON.parse(await Deno.readTextFile(`${fixture}config.json`));
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...raw, rms_norm_eps: -1e-5 }));
    await Deno.copyFile(`${fixture}model.safetensors`, `${dir}/model.safetensors`);
    await assert.rejects(
      () => loadModel(dir),
      (e) =>
        e instanceof ConfigError && e.message.includes(`${dir}/config.json`) &&
        e.message.includes("'rms_norm_eps' must be a finite number > 0, found -0.00001"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfig: a rope_theta that JSON reads as Infinity is rejected", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text = JSON.stringify({ ...base, rope_theta: 1 }).replace(
      '"rope_theta":1',
      '"rope_theta":1e999',
    );
    await Deno.writeTextFile(`${dir}/config.json`, text);
    await assert.rejects(
      () => loadConfig(dir),
      (e) =>
        e instanceof ConfigError && e.message.includes("'rope_theta'") && e.message.includes(dir),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
