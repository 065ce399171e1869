import assert from "node:assert/strict";
import { ConfigError } from "../base/errors.ts";
import { ConfigFields, decoderFields, freezeConfig } from "./model_config.ts";

const throwsField = (fn: () => unknown, field: string, found: string) =>
  assert.throws(
    fn,
    (e) =>
      e instanceof ConfigError && e.message.startsWith("c.json: ") &&
      e.message.includes(`'${field}'`) && e.message.includes(`found ${found}`),
  );

Deno.test("ConfigFields: absent and null take the fallback, required fields say they are missing", () => {
  const f = new ConfigFields({ a: null, n: 3, b: true }, "c.json");
  assert.equal(f.int("a", 7), 7);
  assert.equal(f.int("n"), 3);
  assert.equal(f.bool("b", false), true);
  assert.equal(f.bool("missing", true), true);
  throwsField(() => f.int("missing"), "missing", "nothing");
  throwsField(() => f.positive("a"), "a", "nothing");
});

Deno.test("ConfigFields: wrong types and ranges are errors, never a silent fallback", () => {
  const f = new ConfigFields(
    { s: "1", x: 1.5, z: 0, neg: -2, inf: Infinity, layers: [0, 4], yes: "true" },
    "c.json",
  );
  throwsField(() => f.int("s"), "s", '"1"');
  throwsField(() => f.int("x"), "x", "1.5");
  throwsField(() => f.int("z"), "z", "0");
  assert.equal(f.int("z", undefined, 0), 0);
  throwsField(() => f.positive("neg"), "neg", "-2");
  throwsField(() => f.number("inf"), "inf", "Infinity");
  throwsField(() => f.bool("yes", false), "yes", '"true"');
  throwsField(() => f.layerList("layers", 4), "layers", "[0,4]");
  assert.deepEqual(f.layerList("layers", 5), [0, 4]);
  throwsField(() => f.oneOf("s", ["2"], "2"), "s", '"1"');
});

Deno.test("decoderFields and freezeConfig: derived widths, frozen result", () => {
  const f = new ConfigFields({
    vocab_size: 8,
    hidden_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 6,
    num_key_value_heads: 2,
    partial_rotary_factor: 0.5,
  }, "c.json");
  const { numLayers, ...d } = decoderFields(f, { ropeTheta: 1234 });
  assert.deepEqual([numLayers, d.headDim, d.rotaryDim, d.ropeTheta, d.rmsEps], [
    2,
    8,
    4,
    1234,
    1e-6,
  ]);
  const cfg = freezeConfig(f, {
    ...d,
    arch: "test",
    layers: [{ ffn: { kind: "dense", inter: 16 } }, { ffn: { kind: "dense", inter: 16 } }],
    qkvBias: false,
    qkNorm: "none",
    clipQkv: 0,
  });
  assert.ok(
    Object.isFrozen(cfg) && Object.isFrozen(cfg.layers) && Object.isFrozen(cfg.layers[1].ffn),
  );
  assert.equal(cfg.raw.hidden_size, 48);
});
