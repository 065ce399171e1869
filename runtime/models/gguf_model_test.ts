// GGUF models through Pregate: a checkpoint converted to GGUF at f32 gives the checkpoint's logits
// bit for bit in each decoder architecture (llama.cpp's names mapped back, stacked experts sliced,
// Mixtral's q/k permutation undone); a Q8_0 / Q4_K file gives its dequantised checkpoint's logits
// (to kernel rounding) in resident and every offloading mode, with experts uploaded and held as
// stored (upload bytes and slots in quantised bytes); f16 and bf16 files give the checkpoint's
// logits to 16-bit rounding.
import assert from "node:assert/strict";
import { loadModel, type LoadOptions } from "../model.ts";
import { ArgumentError } from "../base/errors.ts";
import { GPU_TEST, testGpu } from "../test_util.ts";
import { assertClose } from "../../kernels/check.ts";
import { weightRowBytes, type WeightType } from "../weights/weight_type.ts";
import { openGguf } from "../weights/gguf.ts";
import { writeGguf } from "../weights/gguf_writer.ts";
import { convertToGguf } from "./gguf_convert.ts";
import { dequantisedCheckpoint, makeMoeModel, Q4K_DIMS } from "./gguf_model_test_util.ts";
import type { MoeFfn } from "./model_config.ts";
import { FIXTURES } from "./model_test_util.ts";

const IDS = [3, 17, 250, 9, 41, 77, 128, 5, 200, 13, 66, 1]; // 12 tokens: prefill is a matmul

async function run(path: string, opts: LoadOptions = {}, tokens = 4) {
  const model = await loadModel(path, { device: await testGpu(), ...opts });
  try {
    const logits = await model.logits(IDS);
    const greedy: number[] = [];
    for await (const id of model.generate(IDS.slice(0, 5), { maxTokens: tokens })) greedy.push(id);
    return { logits, greedy, stats: model.lastStats!, slots: model.expertSlots, cfg: model.config };
  } finally {
    await model.dispose();
  }
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_gguf_model_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const arch of ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]) {
  Deno.test({
    name: `${arch}: a GGUF written at f32 gives the checkpoint's logits bit for bit`,
    ...GPU_TEST,
    fn: () =>
      withDir(async (dir) => {
        // Mixtral's HF fixture converts as it is; the Qwen fixtures have dense layers and OLMoE's
        // grouped-query attention, which llama.cpp's graphs do not, so those come from make-model.
        let src = `${FIXTURES}${arch}`;
        if (arch !== "mixtral") await makeMoeModel(arch, src = `${dir}/src`);
        const gguf = `${dir}/m.gguf`;
        await convertToGguf({ model: src, out: gguf, type: "f32" });
        const [a, b] = [await run(src), await run(gguf)];
        assert.deepEqual(b.cfg.layers, a.cfg.layers);
        for (let t = 0; t < IDS.length; t++) {
          assert.deepEqual(b.logits[t], a.logits[t], `logits at position ${t}`);
        }
        assert.deepEqual(b.greedy, a.greedy);
      }),
  });
}

/** Bytes of one expert stored as `gateUp` (gate, up) and `down`. */
function expertBytes(f: MoeFfn, hidden: number, gateUp: WeightType, down: WeightType): number {
  return 2 * f.inter * weightRowBytes(hidden, gateUp) + hidden * weightRowBytes(f.inter, down);
}

for (const type of ["q8_0", "q4_0", "q4_k"] as const) {
  Deno.test({
    name: `qwen3_moe ${type}: logits equal the dequantised checkpoint's in every mode; experts ` +
      "move and sit in GPU slots as stored",
    ...GPU_TEST,
    fn: () =>
      withDir(async (dir) => {
        const src = `${dir}/src`, gguf = `${dir}/m.gguf`, ref = `${dir}/dequantised`;
        await makeMoeModel("qwen3_moe", src, Q4K_DIMS);
        await convertToGguf({ model: src, out: gguf, type });
        await dequantisedCheckpoint(gguf, src, ref);
        const want = await run(ref);
        const resident = await run(gguf);
        for (let t = 0; t < IDS.length; t++) {
          assertClose(resident.logits[t], want.logits[t], 1e-5, `${type} logits at ${t}`);
        }
        const f = resident.cfg.layers[0].ffn as MoeFfn;
        const quant = expertBytes(f, resident.cfg.hidden, type, type);
        const f32 = expertBytes(f, resident.cfg.hidden, "f32", "f32");
        for (const mode of ["on-demand", "prefetch-all", "pregated"] as const) {
          const r = await run(gguf, { mode });
          assert.deepEqual(r.greedy, resident.greedy, `${mode} tokens`);
          for (let t = 0; t < IDS.length; t++) {
            assert.deepEqual(r.logits[t], resident.logits[t], `${mode} logits at ${t}`);
          }
          const perToken = r.stats.upload_bytes_per_token;
          assert.ok(perToken > 0 && perToken % quant === 0, `${mode}: ${perToken} B per token`);
          // The same mode over the dequantised f32 checkpoint moves the same experts, f32-sized.
          const d = await run(ref, { mode });
          assert.equal(d.stats.upload_bytes_per_token / f32, perToken / quant, `${mode} experts`);
          // A budget holding the f32 model's minimum slots holds more quantised slots.
          if (mode === "on-demand") {
            const budget = 4 * f32 + 6 * 2 ** 20;
            const [q, full] = [
              await run(gguf, { mode, budget, expertCache: "auto" }, 1),
              await run(ref, { mode, budget, expertCache: "auto" }, 1),
            ];
            assert.ok(q.slots! > full.slots!, `slots ${q.slots} (${type}) vs ${full.slots} (f32)`);
          }
        }
      }),
  });
}

Deno.test({
  name: "qwen3_moe q4_k_m: experts whose types differ by layer (Q4_K / Q6_K, Q5_0 / Q8_0 down " +
    "projections) give the dequantised checkpoint's logits, resident and in every offloading mode",
  ...GPU_TEST,
  fn: () =>
    withDir(async (dir) => {
      // 3 layers: llama-quantize's Q4_K_M gives layer 2's down projections Q6_K, the others Q4_K;
      // with rows of 384 those fall back to Q8_0 and Q5_0. One slot pool serves every layer.
      for (const [inter, types] of [[256, ["Q4_K", "Q6_K"]], [384, ["Q5_0", "Q8_0"]]] as const) {
        const src = `${dir}/src${inter}`, gguf = `${dir}/m${inter}.gguf`;
        const ref = `${dir}/dequantised${inter}`;
        await makeMoeModel("qwen3_moe", src, { ...Q4K_DIMS, inter });
        await convertToGguf({ model: src, out: gguf, type: "q4_k_m" });
        const g = openGguf(gguf);
        const down = [0, 1, 2].map((i) => g.describe(`blk.${i}.ffn_down_exps.weight`).type);
        g.close();
        assert.deepEqual(down, [types[0], types[0], types[1]]);
        await dequantisedCheckpoint(gguf, src, ref);
        const want = await run(ref);
        const resident = await run(gguf);
        for (let t = 0; t < IDS.length; t++) {
          assertClose(resident.logits[t], want.logits[t], 1e-5, `${inter}: logits at ${t}`);
        }
        for (const mode of ["on-demand", "prefetch-all", "pregated"] as const) {
          const r = await run(gguf, { mode });
          assert.deepEqual(r.greedy, resident.greedy, `${inter} ${mode} tokens`);
          for (let t = 0; t < IDS.length; t++) {
            assert.deepEqual(r.logits[t], resident.logits[t], `${inter} ${mode} logits at ${t}`);
          }
          assert.ok(r.stats.upload_bytes_per_token > 0, `${inter} ${mode}: experts streamed`);
        }
      }
    }),
});

for (const type of ["f16", "bf16"] as const) {
  Deno.test({
    name: `mixtral ${type}: a 16-bit GGUF gives the checkpoint's logits to ${type} rounding`,
    ...GPU_TEST,
    fn: () =>
      withDir(async (dir) => {
        const src = `${FIXTURES}mixtral`, gguf = `${dir}/m.gguf`, ref = `${dir}/rounded`;
        await convertToGguf({ model: src, out: gguf, type });
        await dequantisedCheckpoint(gguf, src, ref);
        const [a, b, exact] = [await run(src), await run(gguf), await run(ref)];
        for (let t = 0; t < IDS.length; t++) {
          assertClose(b.logits[t], exact.logits[t], 1e-5, `vs rounded weights at ${t}`);
          assertClose(b.logits[t], a.logits[t], type === "f16" ? 5e-3 : 3e-2, `vs f32 at ${t}`);
        }
      }),
  });
}

for (const arch of ["mixtral", "qwen2_moe", "olmoe"]) {
  Deno.test({
    name: `${arch} q8_0: logits equal the dequantised checkpoint's, resident and on-demand ` +
      "(rows of 80 stay f16: experts of two types; Qwen2's shared expert quantised)",
    ...GPU_TEST,
    fn: () =>
      withDir(async (dir) => {
        // (make-model's tiny OLMoE has experts of 80 too; the fixture has grouped-query attention.)
        let src = `${FIXTURES}${arch}`;
        if (arch === "qwen2_moe") {
          await makeMoeModel(arch, src = `${dir}/src`, { sharedInter: 128 });
        }
        if (arch === "olmoe") await makeMoeModel(arch, src = `${dir}/src`);
        const gguf = `${dir}/m.gguf`, ref = `${dir}/dequantised`;
        const made = await convertToGguf({ model: src, out: gguf, type: "q8_0" });
        assert.ok(made.types.Q8_0 > 0 && (arch === "qwen2_moe" || made.types.F16 > 0));
        await dequantisedCheckpoint(gguf, src, ref);
        const want = await run(ref);
        for (const mode of ["resident", "on-demand"] as const) {
          const r = await run(gguf, { mode });
          for (let t = 0; t < IDS.length; t++) {
            assertClose(r.logits[t], want.logits[t], 1e-5, `${mode} logits at ${t}`);
          }
        }
      }),
  });
}

Deno.test({
  name: "mixtral: early llama.cpp files with one tensor per expert (ffn_gate.E) read the same",
  ...GPU_TEST,
  fn: () =>
    withDir(async (dir) => {
      const src = `${FIXTURES}mixtral`, stacked = `${dir}/s.gguf`, split = `${dir}/e.gguf`;
      await convertToGguf({ model: src, out: stacked, type: "q8_0" });
      const g = openGguf(stacked, { mode: "read" });
      const tensors = g.names().flatMap((name) => {
        const t = g.tensor(name), bytes = t.bytes();
        if (!name.endsWith("_exps.weight")) {
          return [{ name, type: t.type, shape: t.shape, data: bytes.slice() }];
        }
        const [E, ...shape] = t.shape, size = bytes.byteLength / E;
        return Array.from({ length: E }, (_, e) => ({
          name: name.replace("_exps.weight", `.${e}.weight`),
          type: t.type,
          shape,
          data: bytes.slice(e * size, (e + 1) * size),
        }));
      });
      await writeGguf(split, g.entries().map((e) => [e.key, e]), tensors);
      g.close();
      const [a, b] = [await run(stacked), await run(split, { mode: "on-demand" })];
      for (let t = 0; t < IDS.length; t++) assert.deepEqual(b.logits[t], a.logits[t]);
    }),
});

Deno.test({
  name: "activations llama.cpp: products over Q8_0 weights take rounded inputs, the same in " +
    "every mode; f32 weights keep theirs (only the f16 KV cache moves the logits); a bad value " +
    "is a typed error",
  ...GPU_TEST,
  fn: () =>
    withDir(async (dir) => {
      const src = `${dir}/src`;
      await makeMoeModel("qwen3_moe", src, Q4K_DIMS);
      for (const type of ["q8_0", "f32"] as const) {
        const gguf = `${dir}/m-${type}.gguf`;
        await convertToGguf({ model: src, out: gguf, type });
        const plain = await run(gguf);
        const rounded = await run(gguf, { activations: "llama.cpp" });
        let num = 0, den = 0;
        for (let t = 0; t < IDS.length; t++) {
          for (let i = 0; i < plain.logits[t].length; i++) {
            num += (rounded.logits[t][i] - plain.logits[t][i]) ** 2;
            den += plain.logits[t][i] ** 2;
          }
        }
        const rel = Math.sqrt(num / den);
        if (type === "f32") {
          // Products over f32 weights keep their inputs; llama.cpp's f16 KV cache and attention
          // alone move the logits by a few f16 roundings.
          assert.ok(rel > 0 && rel < 0.01, `f32 weights: logits moved by ${rel.toExponential(2)}`);
          continue;
        }
        // Q8_0 activations move each product by ~0.3% of its size: the logits move, a little.
        assert.ok(rel > 1e-5 && rel < 0.05, `q8_0: logits moved by ${rel.toExponential(2)}`);
        const pregated = await run(gguf, { activations: "llama.cpp", mode: "pregated" });
        for (let t = 0; t < IDS.length; t++) {
          assert.deepEqual(pregated.logits[t], rounded.logits[t], `pregated logits at ${t}`);
        }
      }
      await assert.rejects(
        loadModel(src, { device: await testGpu(), activations: "q8" as never }),
        (e) => e instanceof ArgumentError && e.argument === "activations",
      );
    }),
});
