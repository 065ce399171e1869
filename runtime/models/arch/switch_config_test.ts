import assert from "node:assert/strict";
import { ConfigError } from "../../base/errors.ts";
import {
  parseSwitchConfig,
  pickSwitchEmbedding,
  switchNames,
  switchSparseLayers,
  switchTensors,
} from "./switch_config.ts";
import { SWITCH_PRESETS, switchConfigJson } from "./switch_presets.ts";

const FIXTURE = new URL("../../../tests/fixtures/hf/switch_tiny/", import.meta.url).pathname;
const hasFixture = await Deno.stat(`${FIXTURE}reference.json`).then(() => true, () => false);

const base = (extra: Record<string, unknown> = {}) => ({
  ...switchConfigJson(SWITCH_PRESETS["switch-tiny"]),
  ...extra,
});

/** Asserts a ConfigError naming config.json and `field`. */
function rejectsField(raw: Record<string, unknown>, field: string): void {
  assert.throws(
    () => parseSwitchConfig(raw, "/m/config.json"),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
      assert.match(e.message, /\/m\/config\.json/);
      assert.ok(e.message.includes(`'${field}'`), `message names '${field}': ${e.message}`);
      return true;
    },
  );
}

Deno.test("switch presets round-trip through config.json with the real shapes", () => {
  for (const [name, p] of Object.entries(SWITCH_PRESETS)) {
    const cfg = parseSwitchConfig(switchConfigJson(p));
    const d = p.dims;
    assert.deepEqual(
      [cfg.dModel, cfg.dFf, cfg.dKv, cfg.heads, cfg.experts, cfg.vocabSize],
      [d.dModel, d.dFf, d.dKv, d.heads, d.experts, d.vocab],
      name,
    );
    assert.equal(cfg.encoder.layers, d.encoderLayers);
    assert.equal(cfg.decoder.layers, d.decoderLayers);
    // Every other layer is sparse, starting at layer 1, in both stacks.
    for (const s of [cfg.encoder, cfg.decoder]) {
      assert.deepEqual(s.sparse, s.sparse.map((_, i) => i % 2 === 1), name);
    }
    assert.equal(cfg.decoderStartTokenId, 0);
    assert.deepEqual(cfg.eosTokenIds, [1]);
    assert.equal(cfg.headScale, d.dModel ** -0.5);
  }
  const names = Object.keys(SWITCH_PRESETS);
  for (const e of [8, 16, 32, 64, 128, 256]) assert.ok(names.includes(`switch-base-${e}`));
  const b = SWITCH_PRESETS["switch-base-8"].dims, l = SWITCH_PRESETS["switch-large-128"].dims;
  // One f32 expert (wi + wo): the paper's 18.9 MB (Base) and 33.6 MB (Large).
  assert.equal((2 * b.dModel * b.dFf * 4 / 1e6).toFixed(1), "18.9");
  assert.equal((2 * l.dModel * l.dFf * 4 / 1e6).toFixed(1), "33.6");
  assert.deepEqual([l.encoderLayers, l.decoderLayers, l.heads, l.experts], [24, 24, 16, 128]);
});

Deno.test("switch sparse layers follow transformers' rule", () => {
  assert.deepEqual(switchSparseLayers(4, 2), [false, true, false, true]);
  assert.deepEqual(switchSparseLayers(6, 3), [false, true, false, false, true, false]);
  assert.deepEqual(switchSparseLayers(3, 1), [true, true, true]);
  assert.deepEqual(switchSparseLayers(3, 0), [false, false, false]);
  // num_sparse 3 of 12 layers: step 4 -> layers 1, 5, 9.
  const c = parseSwitchConfig(base({
    num_layers: 12,
    num_decoder_layers: 12,
    num_sparse_encoder_layers: 3,
    num_sparse_decoder_layers: 0,
    encoder_sparse_step: undefined,
    decoder_sparse_step: undefined,
  }));
  assert.deepEqual(c.encoder.sparse.flatMap((s, i) => s ? [i] : []), [1, 5, 9]);
  assert.equal(c.encoder.sparseStep, 4);
  // num_sparse 0: HF sets the step to the layer count, which still makes layer 1 sparse
  // (1 % 12 == 1); the checkpoint then holds that layer's experts, so follow HF.
  assert.deepEqual(c.decoder.sparse.flatMap((s, i) => s ? [i] : []), [1]);
  // A lone *_sparse_step is used as is; num_decoder_layers defaults to num_layers.
  const s = parseSwitchConfig({
    model_type: "switch_transformers",
    num_layers: 5,
    encoder_sparse_step: 1,
    decoder_sparse_step: 3,
  });
  assert.deepEqual(s.encoder.sparse, [true, true, true, true, true]);
  assert.deepEqual(s.decoder.sparse, [false, true, false, false, true]);
  // HF defaults for omitted keys: 12 layers, 3 sparse (step 4), d_ff 2048.
  const d = parseSwitchConfig({ model_type: "switch_transformers" });
  assert.deepEqual([d.encoder.layers, d.encoder.sparseStep, d.dFf, d.experts], [12, 4, 2048, 8]);
});

Deno.test("switch config rejects what changes the math and is not supported, naming the field", () => {
  rejectsField(base({ model_type: "t5" }), "model_type");
  rejectsField(base({ dense_act_fn: "gelu_new" }), "dense_act_fn");
  rejectsField(base({ feed_forward_proj: "gated-gelu" }), "feed_forward_proj");
  rejectsField(base({ is_gated_act: true }), "is_gated_act");
  rejectsField(base({ router_dtype: "bfloat16" }), "router_dtype");
  rejectsField(base({ num_selected_experts: 2 }), "num_selected_experts");
  rejectsField(base({ router_type: "experts_choice" }), "router_type");
  rejectsField(base({ is_encoder_decoder: false }), "is_encoder_decoder");
  rejectsField(base({ d_model: 0 }), "d_model");
  rejectsField(base({ d_kv: "64" }), "d_kv");
  rejectsField(base({ num_experts: 2.5 }), "num_experts");
  rejectsField(base({ relative_attention_num_buckets: 2 }), "relative_attention_num_buckets");
  rejectsField(base({ relative_attention_max_distance: 4 }), "relative_attention_max_distance");
  rejectsField(base({ num_sparse_encoder_layers: 5 }), "num_sparse_encoder_layers");
  rejectsField(base({ decoder_sparse_step: 3 }), "decoder_sparse_step");
  rejectsField(base({ tie_word_embeddings: "yes" }), "tie_word_embeddings");
  rejectsField(base({ router_bias: 1 }), "router_bias");
  rejectsField(base({ layer_norm_epsilon: -1 }), "layer_norm_epsilon");
  rejectsField(
    base({ decoder_start_token_id: [0, 1] }),
    "decoder_start_token_id",
  );
  rejectsField(base({ eos_token_id: [1, -2] }), "eos_token_id");
});

Deno.test("switch config ignores what does not change inference", () => {
  const ref = parseSwitchConfig(base());
  const other = parseSwitchConfig(base({
    expert_capacity: 1,
    router_jitter_noise: 0.5,
    router_ignore_padding_tokens: true,
    dropout_rate: 0.3,
    router_z_loss_coef: 1,
    add_router_probs: true,
    num_selected_experts: 1,
    router_type: "tokens_masked",
    is_gated_act: false,
    feed_forward_proj: "relu",
  }));
  const { raw: _a, ...a } = ref;
  const { raw: _b, ...b } = other;
  assert.deepEqual(a, b);
});

Deno.test("switch config: generation_config.json and tying", () => {
  const g = parseSwitchConfig(base({ decoder_start_token_id: 0, eos_token_id: 1 }), "c", {
    decoder_start_token_id: 5,
    eos_token_id: [2, 3],
  });
  assert.equal(g.decoderStartTokenId, 5);
  assert.deepEqual(g.eosTokenIds, [2, 3]);
  assert.equal(
    parseSwitchConfig(base({ decoder_start_token_id: null, bos_token_id: 7 }))
      .decoderStartTokenId,
    7,
  );
  assert.deepEqual(parseSwitchConfig(base({ eos_token_id: null })).eosTokenIds, []);
  const none = parseSwitchConfig(base({ decoder_start_token_id: null, bos_token_id: null }));
  assert.equal(none.decoderStartTokenId, null);

  const tied = parseSwitchConfig(base());
  const untied = parseSwitchConfig(base({ tie_word_embeddings: false }));
  assert.equal(untied.headScale, 1);
  assert.equal(switchNames(tied).lmHead, undefined);
  assert.equal(switchNames(untied).lmHead, "lm_head.weight");
  const roles = (c: typeof tied) => switchTensors(c).filter((t) => t.role === "lm_head").length;
  assert.deepEqual([roles(tied), roles(untied)], [0, 1]);
});

Deno.test("switch tensor names and shapes are transformers'", () => {
  const cfg = parseSwitchConfig(base({ router_bias: true }));
  const n = switchNames(cfg);
  assert.equal(n.encoder.length, 4);
  assert.equal(n.decoder.length, 6);
  assert.equal(
    n.encoder[0].relBias,
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
  );
  assert.equal(n.encoder[1].relBias, undefined);
  assert.equal(n.decoder[2].cross?.k, "decoder.block.2.layer.1.EncDecAttention.k.weight");
  assert.equal(n.decoder[2].crossNorm, "decoder.block.2.layer.1.layer_norm.weight");
  assert.equal(n.encoder[2].ffn.kind, "dense");
  const ffn = n.decoder[5].ffn;
  assert.equal(ffn.norm, "decoder.block.5.layer.2.layer_norm.weight");
  assert.ok(ffn.kind === "moe");
  assert.equal(ffn.router, "decoder.block.5.layer.2.mlp.router.classifier.weight");
  assert.equal(ffn.routerBias, "decoder.block.5.layer.2.mlp.router.classifier.bias");
  assert.equal(ffn.expert(7).wo, "decoder.block.5.layer.2.mlp.experts.expert_7.wo.weight");
  assert.equal(
    pickSwitchEmbedding(n, (x) => x === "decoder.embed_tokens.weight"),
    "decoder.embed_tokens.weight",
  );
  assert.equal(pickSwitchEmbedding(n, () => false), undefined);

  const t = switchTensors(cfg);
  const shape = (name: string) => t.find((x) => x.name === name)?.shape;
  assert.deepEqual(shape("encoder.block.0.layer.0.SelfAttention.q.weight"), [48, 32]);
  assert.deepEqual(shape("encoder.block.0.layer.0.SelfAttention.o.weight"), [32, 48]);
  assert.deepEqual(shape(n.encoder[0].relBias!), [8, 4]);
  assert.deepEqual(shape(ffn.expert(0).wi), [64, 32]);
  assert.deepEqual(shape(ffn.routerBias!), [8]);
  assert.equal(new Set(t.map((x) => x.name)).size, t.length, "names are unique");
  // 2 + 3 sparse layers x 8 experts x (wi, wo).
  assert.equal(t.filter((x) => x.role === "expert").length, 5 * 8 * 2);
});

Deno.test({
  name: "switch names and shapes match the HF fixture's checkpoint",
  ignore: !hasFixture,
  fn: async () => {
    const ref = JSON.parse(await Deno.readTextFile(`${FIXTURE}reference.json`));
    const cfg = parseSwitchConfig(ref.config_json, `${FIXTURE}config.json`);
    assert.deepEqual(cfg.encoder.sparse, ref.sparse_layers.encoder);
    assert.deepEqual(cfg.decoder.sparse, ref.sparse_layers.decoder);
    const saved = new Map<string, number[]>(
      ref.tensors.map((t: { name: string; shape: number[] }) => [t.name, t.shape]),
    );
    const embed = pickSwitchEmbedding(switchNames(cfg), (x) => saved.has(x));
    assert.ok(embed, "the fixture holds an embedding under a known name");
    const expected = switchTensors(cfg).map((t) =>
      t.role === "embedding" ? { ...t, name: embed } : t
    );
    for (const t of expected) assert.deepEqual(saved.get(t.name), t.shape, t.name);
    const extra = [...saved.keys()].filter((x) => !expected.some((t) => t.name === x));
    assert.ok(
      extra.every((x) => x.endsWith("embed_tokens.weight") || x === "shared.weight"),
      `unexpected tensors ${extra}`,
    );
  },
});
