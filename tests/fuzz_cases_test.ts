// Issue 15's cases on a loaded model. Non-finite: NaN or Inf planted in a tiny Mixtral's router,
// experts, embedding or lm_head must end in a NumericError naming the position (generate, greedy and
// sampled; logits), never in plausible tokens; prompts that do not touch the bad weights still get
// the clean answer. Also: unused tensors warned at load, positions past the model's maximum.
import assert from "node:assert/strict";
import { loadModel, type LoadOptions } from "../runtime/model.ts";
import { ArgumentError, NumericError } from "../runtime/base/errors.ts";
import { makeModel } from "../runtime/models/make_model.ts";
import { pokeTensor } from "../runtime/weights/safetensors_test_util.ts";
import { openCheckpoint } from "../runtime/weights/safetensors.ts";
import { writeShardedCheckpoint } from "../runtime/weights/safetensors_writer.ts";
import { testGpu } from "../kernels/test_util.ts";

const GPU = { sanitizeResources: false, sanitizeOps: false };
const root = await Deno.makeTempDir({ prefix: "pregate_fuzz_" });
globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
const clean = `${root}/clean`;
// hidden 64, 2 MoE layers of 8 experts (top-2, inter 96), vocab 256, untied lm_head; f32.
await makeModel({ arch: "mixtral", out: clean, seed: 15 });
const HIDDEN = 64, INTER = 96, VOCAB = 256;
const L0 = "model.layers.0.block_sparse_moe";

/** A copy of the clean model with `value` planted at the given elements of each tensor. */
async function variant(
  name: string,
  pokes: [tensor: string, indices: Iterable<number>][],
  value = NaN,
): Promise<string> {
  const dir = `${root}/${name}`;
  await Deno.mkdir(dir);
  for await (const e of Deno.readDir(clean)) {
    await Deno.copyFile(`${clean}/${e.name}`, `${dir}/${e.name}`);
  }
  for (const [tensor, indices] of pokes) await pokeTensor(dir, tensor, indices, value);
  return dir;
}

const range = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);

/** Generated tokens, or the NumericError that stopped the generation. */
async function generate(
  dir: string,
  prompts: number[][],
  opts: { temperature?: number; maxTokens?: number } & LoadOptions = {},
): Promise<(number[] | NumericError)[]> {
  const model = await loadModel(dir, { device: await testGpu(), ...opts });
  try {
    const out: (number[] | NumericError)[] = [];
    for (const ids of prompts) {
      const tokens: number[] = [];
      try {
        for await (const id of model.generate(ids, { maxTokens: opts.maxTokens ?? 3, ...opts })) {
          tokens.push(id);
        }
        out.push(tokens);
      } catch (e) {
        if (!(e instanceof NumericError)) throw e;
        out.push(e);
      }
    }
    return out;
  } finally {
    await model.dispose();
  }
}

async function logits(dir: string, ids: number[]): Promise<Float32Array[] | NumericError> {
  const model = await loadModel(dir, { device: await testGpu() });
  try {
    return await model.logits(ids);
  } catch (e) {
    if (e instanceof NumericError) return e;
    throw e;
  } finally {
    await model.dispose();
  }
}

function numericAt(r: unknown, position: number, what: string): NumericError {
  assert.ok(r instanceof NumericError, `${what}: expected a NumericError, got ${r}`);
  assert.equal(r.code, "E_NUMERIC");
  assert.equal(r.position, position, `${what}: ${r.message}`);
  assert.match(r.message, new RegExp(`position ${position}\\b`), what);
  assert.match(r.message, /inspect --model DIR --check/);
  return r;
}

const PROMPT = [5, 77, 201];

Deno.test({
  name: "one NaN in lm_head row 5: generate (greedy, sampled) and logits fail naming the position",
  ...GPU,
  fn: async () => {
    const [ok] = await generate(clean, [PROMPT]);
    assert.ok(Array.isArray(ok) && ok.length === 3 && !ok.includes(5), `clean: ${ok}`);
    const dir = await variant("lm_head5", [["lm_head.weight", [5 * HIDDEN + 17]]]);
    const [greedy] = await generate(dir, [PROMPT]);
    numericAt(greedy, 2, "greedy");
    const [sampled] = await generate(dir, [PROMPT], { temperature: 0.8 });
    numericAt(sampled, 2, "sampled");
    const l = numericAt(await logits(dir, PROMPT), 0, "logits");
    assert.match(l.message, /hold NaN \(token 5\); 3 of the 768 logits/);
  },
});

Deno.test({
  name: "NaN in the embedding row of a prompt token fails from that position on; +Inf too",
  ...GPU,
  fn: async () => {
    const nan = await variant("embed_nan", [["model.embed_tokens.weight", [77 * HIDDEN + 3]]]);
    const [gen, other] = await generate(nan, [PROMPT, [5, 78, 201]]);
    numericAt(gen, 2, "generate");
    const [clean78] = await generate(clean, [[5, 78, 201]]);
    assert.deepEqual(other, clean78, "a prompt without token 77 is unaffected");
    numericAt(await logits(nan, PROMPT), 1, "logits");
    const inf = await variant(
      "embed_inf",
      [["model.embed_tokens.weight", [77 * HIDDEN]]],
      Infinity,
    );
    numericAt((await generate(inf, [PROMPT]))[0], 2, "generate with +Inf");
  },
});

Deno.test({
  name: "NaN in a router row fails every prompt, resident and pre-gated",
  ...GPU,
  fn: async () => {
    const dir = await variant("router", [[`${L0}.gate.weight`, [2 * HIDDEN + 9]]]);
    for (const mode of ["resident", "pregated"] as const) {
      const [a, b] = await generate(dir, [PROMPT, [9]], { mode });
      numericAt(a, 2, mode);
      numericAt(b, 0, mode);
    }
  },
});

Deno.test({
  name: "an all-NaN expert fails exactly the prompts routed to it; the others get the clean tokens",
  ...GPU,
  fn: async () => {
    const expert = (p: string) => `${L0}.experts.3.${p}.weight`;
    const dir = await variant("expert", [
      [expert("w1"), range(0, INTER * HIDDEN)],
      [expert("w2"), range(0, HIDDEN * INTER)],
      [expert("w3"), range(0, INTER * HIDDEN)],
    ]);
    const prompts = range(0, 16).map((t) => [t * 13 % VOCAB]);
    const want = await generate(clean, prompts, { maxTokens: 1 });
    for (const mode of ["resident", "on-demand"] as const) {
      const got = await generate(dir, prompts, { maxTokens: 1, mode });
      let failed = 0;
      got.forEach((r, i) => {
        if (r instanceof NumericError) {
          numericAt(r, 0, `${mode} prompt ${prompts[i]}`);
          failed++;
        } else assert.deepEqual(r, want[i], `${mode} prompt ${prompts[i]}`);
      });
      assert.ok(failed > 0 && failed < prompts.length, `${mode}: ${failed} of 16 failed`);
    }
  },
});

Deno.test({
  name: "a +Inf in every expert of layer 1 (one element each) fails every prompt",
  ...GPU,
  fn: async () => {
    const pokes: [string, number[]][] = range(0, 8).map((e) => [
      `model.layers.1.block_sparse_moe.experts.${e}.w2.weight`,
      [7 * INTER],
    ]);
    const dir = await variant("expert_inf", pokes, Infinity);
    const got = await generate(dir, [PROMPT, [42]]);
    numericAt(got[0], 2, "prompt 1");
    numericAt(got[1], 0, "prompt 2");
  },
});

Deno.test({
  name: "unused checkpoint tensors are warned about once at load, as inspect does",
  ...GPU,
  fn: async () => {
    const dir = `${root}/unused`;
    const store = openCheckpoint(clean, { mode: "read" });
    await writeShardedCheckpoint(dir, [
      ...store.names().map((name) => {
        const t = store.get(name);
        return { name, dtype: t.fileDType, shape: t.shape, data: t.bytes() };
      }),
      { name: "model.rotary_emb.inv_freq", dtype: "f32", shape: [8], data: new Float32Array(8) },
    ]);
    store.close();
    await Deno.copyFile(`${clean}/config.json`, `${dir}/config.json`);
    for (const [model, want] of [[clean, 0], [dir, 1]] as const) {
      const notes: string[] = [];
      const m = await loadModel(model, { device: await testGpu(), log: (n) => notes.push(n) });
      for await (const _ of m.generate([1, 2], { maxTokens: 2 })) { /* runs */ }
      await m.dispose();
      const warned = notes.filter((n) => n.includes("not used by the model"));
      assert.equal(warned.length, want, notes.join("\n"));
      if (want) {
        assert.match(warned[0], /warning: 1 tensor\(s\) .* ignored: model\.rotary_emb\.inv_freq/);
      }
    }
  },
});

Deno.test({
  name: "a context past max_position_embeddings is warned about; a sequence past it is refused",
  ...GPU,
  fn: async () => {
    const notes: string[] = [];
    const m = await loadModel(clean, {
      device: await testGpu(),
      contextLength: 300,
      log: (n) => notes.push(n),
    });
    try {
      assert.match(notes.join("\n"), /--context 300 exceeds the model's maximum of 256 positions/);
      await assert.rejects(
        async () => {
          for await (const _ of m.generate([1, 2], { maxTokens: 255 })) { /* refused first */ }
        },
        (e) => e instanceof ArgumentError && /257 positions .* maximum of 256/.test(e.message),
      );
      await assert.rejects(
        () => m.logits(Array.from({ length: 257 }, (_, i) => i % VOCAB)),
        (e) => e instanceof ArgumentError && e.argument === "ids",
      );
      const tokens: number[] = [];
      for await (const id of m.generate([1, 2], { maxTokens: 2 })) tokens.push(id);
      assert.equal(tokens.length, 2);
    } finally {
      await m.dispose();
    }
  },
});
