// The float64 Switch reference: against HF's logits, greedy tokens and routing on the HF-written
// tiny checkpoint (tests/fixtures/hf/switch_tiny, generated on the GPU host by
// `tools/hf_fixtures.py --only switch_tiny`; ignored while absent), and properties that hold for
// any weights on a random checkpoint written here.
import assert from "node:assert/strict";
import { WeightFileError } from "../base/errors.ts";
import { encodeTensor, writeShardedCheckpoint } from "../weights/safetensors_writer.ts";
import { randn } from "../../kernels/test_util.ts";
import { parseSwitchConfig, switchTensors } from "./arch/switch_config.ts";
import { SWITCH_PRESETS, switchConfigJson } from "./arch/switch_presets.ts";
import { type PositionBiasReading, SwitchReference } from "./switch_reference.ts";

const FIXTURE = new URL("../../tests/fixtures/hf/switch_tiny/", import.meta.url).pathname;
const hasFixture = await Deno.stat(`${FIXTURE}reference.json`).then(() => true, () => false);

interface HfReference {
  encoder_ids: number[];
  decoder_input_ids: number[];
  logits: number[][];
  greedy: number[];
  routing: {
    encoder: { layer: number; expert: number[] }[];
    decoder: { layer: number; expert: number[] }[];
  };
  hf_semantics: { position_bias: PositionBiasReading };
  transformers_version: string;
}

Deno.test({
  name: "switch reference matches HF's logits (< 1e-4), routing and greedy tokens",
  ignore: !hasFixture,
  fn: async () => {
    const ref: HfReference = JSON.parse(await Deno.readTextFile(`${FIXTURE}reference.json`));
    const model = await SwitchReference.open(FIXTURE, {
      positionBias: ref.hf_semantics.position_bias,
    });
    try {
      const logits = model.logits(ref.encoder_ids, ref.decoder_input_ids);
      assert.equal(logits.length, ref.logits.length);
      let worst = 0;
      logits.forEach((row, t) => {
        assert.equal(row.length, ref.logits[t].length);
        row.forEach((v, i) => worst = Math.max(worst, Math.abs(v - ref.logits[t][i])));
      });
      assert.ok(
        worst < 1e-4,
        `max abs logit difference ${worst} (transformers ${ref.transformers_version})`,
      );
      for (const stack of ["encoder", "decoder"] as const) {
        assert.deepEqual(
          model.routes[stack].map((r) => [r.layer, r.expert]),
          ref.routing[stack].map((r) => [r.layer, r.expert]),
          `${stack} routing`,
        );
      }
      assert.deepEqual(model.greedy(ref.encoder_ids, ref.greedy.length, false), ref.greedy);
    } finally {
      model.close();
    }
  },
});

/** Writes a random checkpoint of `config` (the fixture's init scales) into a fresh directory. */
async function randomCheckpoint(config: Record<string, unknown>, seed = 7): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "switch_ref_" });
  const cfg = parseSwitchConfig(config);
  const scale = (name: string, role: string) =>
    role === "embedding" || role === "relative_bias"
      ? 1
      : role === "router"
      ? 0.5
      : role === "lm_head"
      ? 0.2
      : name.endsWith("wi.weight")
      ? 0.2
      : 0.15;
  let s = seed;
  const tensors = switchTensors(cfg).map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const values = t.role === "norm"
      ? randn(n, 0.1, s++).map((v) => 1 + v)
      : randn(n, scale(t.name, t.role), s++);
    return {
      name: t.name,
      dtype: "f32" as const,
      shape: [...t.shape],
      data: encodeTensor(values, "f32"),
    };
  });
  await writeShardedCheckpoint(dir, tensors);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  return dir;
}

const TINY = switchConfigJson(SWITCH_PRESETS["switch-tiny"]);
const ENC = [13, 7, 42, 99, 5, 61, 23, 88, 2, 47, 74, 30, 11, 56, 95, 38, 19, 66, 81, 27];
const DEC = [0, 44, 9, 71, 3, 58, 90, 16];

Deno.test("switch reference: causal decoder, bidirectional encoder, position-bias readings", async () => {
  const dir = await randomCheckpoint(TINY);
  const model = await SwitchReference.open(dir);
  try {
    const a = model.logits(ENC, DEC);
    const b = model.logits(ENC, [...DEC.slice(0, 5), 1, 2, 3]);
    // Positions 0..4 see only decoder ids 0..4: unchanged; position 5 sees the change.
    assert.deepEqual(a.slice(0, 5), b.slice(0, 5));
    assert.notDeepEqual(a[5], b[5]);
    // The encoder is not causal: its first position sees the last token.
    const e1 = model.encode(ENC), e2 = model.encode([...ENC.slice(0, -1), 3]);
    assert.notDeepEqual(Array.from(e1[0]), Array.from(e2[0]));
    // Several experts are used and the probabilities are those of a softmax over 8 experts.
    const routes = [...model.routes.encoder];
    assert.equal(routes.length, 2);
    assert.ok(new Set(routes.flatMap((r) => r.expert)).size >= 3);
    assert.ok(routes.every((r) => r.prob.every((p) => p > 1 / 8 && p <= 1)));
    const first = await SwitchReference.open(dir, { positionBias: "first_layer_only" });
    try {
      const c = first.logits(ENC, DEC);
      assert.notDeepEqual(a, c, "the bias of the later layers changes the logits");
      assert.deepEqual(first.routes.encoder.length, 2);
    } finally {
      first.close();
    }
  } finally {
    model.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("switch reference: an untied head holding embedding * d_model^-0.5 gives the tied logits", async () => {
  const dir = await randomCheckpoint(TINY);
  const tied = await SwitchReference.open(dir);
  const untiedDir = await Deno.makeTempDir({ prefix: "switch_ref_untied_" });
  try {
    // Same weights plus lm_head = shared * 32^-0.5, tie_word_embeddings false.
    const { openCheckpoint } = await import("../weights/safetensors.ts");
    const store = openCheckpoint(dir);
    const tensors = store.names().map((name) => ({
      name,
      dtype: "f32" as const,
      shape: [...store.describe(name).shape],
      data: encodeTensor(store.tensorF32(name), "f32"),
    }));
    const emb = store.tensorF32("shared.weight").map((v) => v * 32 ** -0.5);
    tensors.push({
      name: "lm_head.weight",
      dtype: "f32",
      shape: [100, 32],
      data: encodeTensor(emb, "f32"),
    });
    store.close();
    await writeShardedCheckpoint(untiedDir, tensors);
    await Deno.writeTextFile(
      `${untiedDir}/config.json`,
      JSON.stringify({ ...TINY, tie_word_embeddings: false }),
    );
    const untied = await SwitchReference.open(untiedDir);
    try {
      const a = tied.logits(ENC, DEC), b = untied.logits(ENC, DEC);
      let worst = 0;
      a.forEach((r, t) => r.forEach((v, i) => worst = Math.max(worst, Math.abs(v - b[t][i]))));
      assert.ok(worst < 1e-6, `tied vs untied ${worst}`);
    } finally {
      untied.close();
    }
  } finally {
    tied.close();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(untiedDir, { recursive: true });
  }
});

Deno.test("switch reference: greedy stops after EOS and starts from decoder_start_token_id", async () => {
  const dir = await randomCheckpoint(TINY);
  try {
    const model = await SwitchReference.open(dir);
    const free = model.greedy(ENC, 6, false);
    assert.equal(free.length, 6);
    // Teacher forcing the greedy tokens reproduces them as argmaxes.
    const logits = model.logits(ENC, [0, ...free.slice(0, -1)]);
    logits.forEach((row, t) => assert.equal(row.indexOf(Math.max(...row)), free[t]));
    model.close();
    // With EOS = the third token, generation ends there (EOS included).
    const eos = free[2];
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...TINY, eos_token_id: eos }));
    const stopping = await SwitchReference.open(dir);
    assert.deepEqual(stopping.greedy(ENC, 6), free.slice(0, free.indexOf(eos) + 1));
    stopping.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("switch reference rejects a checkpoint that does not fit its config.json", async () => {
  const dir = await randomCheckpoint({ ...TINY, num_experts: 4 });
  try {
    // 8 experts in config.json, 4 in the checkpoint: the first missing expert is named.
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(TINY));
    await assert.rejects(
      SwitchReference.open(dir),
      (e: unknown) =>
        e instanceof WeightFileError && /router\.classifier\.weight/.test(e.tensor ?? "") &&
        /\[4,32\]|\[4, 32\]|expected/.test(e.message),
    );
    // d_ff 48 in config.json: the first dense wi has the wrong shape.
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...TINY, num_experts: 4, d_ff: 48 }),
    );
    await assert.rejects(
      SwitchReference.open(dir),
      (e: unknown) =>
        e instanceof WeightFileError && e.tensor === "encoder.block.0.layer.1.mlp.wi.weight",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
