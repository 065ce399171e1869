// The registry is the one list of architectures: every entry is complete and consistent, config
// parsing and names dispatch through it, and no architecture is named in code outside its file.
import assert from "node:assert/strict";
import { ConfigError } from "../../base/errors.ts";
import { parseConfig } from "../config.ts";
import { expectedTensors, layerNames, pregateName } from "../names.ts";
import { planModel } from "../plan_model.ts";
import { presetNames } from "../presets.ts";
import { ARCHITECTURES, archNamed, archOf, isArch } from "./mod.ts";

Deno.test("registry: unique names; archNamed finds each; an unknown name lists them all", () => {
  assert.equal(new Set(ARCHITECTURES).size, ARCHITECTURES.length);
  for (const name of ARCHITECTURES) {
    assert.equal(archNamed(name).name, name);
    assert.ok(isArch(name));
  }
  assert.ok(!isArch("llama") && !isArch(undefined));
  assert.throws(
    () => archNamed("llama", "m/config.json"),
    (e) =>
      e instanceof ConfigError && e.message.startsWith("m/config.json: ") &&
      ARCHITECTURES.every((a) => e.message.includes(a)),
  );
});

Deno.test("every architecture: a tiny preset whose config.json parses back to it, tensors named once", () => {
  for (const name of ARCHITECTURES) {
    const arch = archNamed(name);
    assert.ok("tiny" in arch.make.presets, `${name} has no tiny preset`);
    assert.ok(presetNames(name).includes("tiny"));
    const plan = planModel({ arch: name, out: "" });
    assert.deepEqual(plan.configJson.architectures, [arch.make.hfClass]);
    assert.equal(plan.configJson.model_type, name);
    const cfg = parseConfig(plan.configJson);
    assert.equal(cfg.arch, name);
    assert.equal(archOf(cfg), arch);
    const tensors = arch.tensors(cfg);
    assert.deepEqual(tensors, expectedTensors(cfg));
    assert.equal(
      new Set(tensors.map((t) => t.name)).size,
      tensors.length,
      `${name}: duplicate names`,
    );
    assert.ok(tensors.every((t) => t.shape.every((d) => Number.isInteger(d) && d > 0)));
    for (let i = 0; i < cfg.layers.length; i++) {
      assert.equal(layerNames(cfg, i).ffn.kind, cfg.layers[i].ffn.kind, `${name} layer ${i}`);
      assert.ok(!tensors.some((t) => t.name === pregateName(cfg, i)), "pre-gates are optional");
    }
  }
});

Deno.test("no architecture is named in code outside runtime/models/arch/ (comments aside)", async () => {
  const root = new URL("../../../", import.meta.url);
  const files = ["cli.ts", "mod.ts", "runtime/model.ts"];
  for await (const e of Deno.readDir(new URL("runtime/models/", root))) {
    if (e.isFile && e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) {
      if (!e.name.endsWith("test_util.ts")) files.push(`runtime/models/${e.name}`);
    }
  }
  for (const file of files) {
    const lines = (await Deno.readTextFile(new URL(file, root))).split("\n");
    lines.forEach((line, i) => {
      const code = line.trim();
      if (code.startsWith("*") || code.startsWith("/*") || code.startsWith("//")) return;
      for (const name of ARCHITECTURES) {
        assert.ok(!code.includes(`"${name}"`), `${file}:${i + 1} names ${name}: ${code}`);
      }
    });
  }
});
