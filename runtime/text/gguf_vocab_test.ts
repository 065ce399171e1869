// Vocabularies through GGUF files: a byte-level BPE tokenizer written as tokenizer.ggml.* keys and
// rebuilt from them gives the tokenizer.json path's ids and decodings (HF's own, recorded in the
// fixtures) for the demo model and the qwen2 and olmoe fixtures; the special tokens, EOS ids and
// chat template survive; tokenizers llama.cpp would split otherwise are refused when writing.
// SentencePiece-style (llama) vocabularies of the llama and mixtral fixtures, with and without the
// merges (rebuilt from the scores, as for llama.cpp's own files), give HF's ids of the legacy
// (mixtral) form, which is how llama.cpp splits text.
import assert from "node:assert/strict";
import { TokenizerError } from "../base/errors.ts";
import { ggufValue as v, writeGguf } from "../weights/gguf_writer.ts";
import { GGUF_PRE_TOKENIZERS, ggufVocabMetadata } from "./gguf_vocab.ts";
import { loadTokenizer, readTokenizerFiles } from "./tokenizer.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const FIXTURES = `${ROOT}tests/fixtures/tokenizers/`;
const TEXTS = [
  "Once upon a time, a little fox found a shiny stone.",
  "  leading spaces, tabs\tand\nnew lines\r\n  ",
  "Numbers 1234567 and 3.14159; émigrés naïve café — “quotes” 日本語 🙂",
  "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
  "don't you'll we've I'M",
];

/**
 * Writes the vocabulary of tokenizer directory `dir` as a GGUF file (no tensors), without the keys
 * in `drop`.
 */
async function vocabGguf(dir: string, out: string, drop: string[] = []) {
  const meta = ggufVocabMetadata(await readTokenizerFiles(dir));
  for (const key of drop) delete meta[key];
  await writeGguf(out, { "general.architecture": v.string("qwen3moe"), ...meta }, []);
  return meta;
}

const dirs: [string, string][] = [
  ["demo", `${ROOT}models/demo`],
  ["qwen2", `${FIXTURES}qwen2`],
  ["olmoe", `${FIXTURES}olmoe`],
];

for (const [name, dir] of dirs) {
  Deno.test(`${name}: the GGUF vocabulary rebuilds the tokenizer.json tokenizer exactly`, async () => {
    const tmp = await Deno.makeTempDir({ prefix: "pregate_gguf_vocab_" });
    try {
      await vocabGguf(dir, `${tmp}/v.gguf`);
      const [want, got] = [await loadTokenizer(dir), await loadTokenizer(`${tmp}/v.gguf`)];
      const texts = [...TEXTS];
      try {
        const exp = JSON.parse(await Deno.readTextFile(`${dir}/expected.json`));
        texts.push(...exp.cases.map((c: { text: string }) => c.text));
      } catch { /* the demo model has no fixture file */ }
      for (const text of texts) {
        const ids = want.encode(text);
        assert.deepEqual(got.encode(text), ids, JSON.stringify(text));
        assert.equal(got.decode(ids), want.decode(ids), JSON.stringify(text));
        assert.equal(
          got.decode(ids, { skipSpecialTokens: true }),
          want.decode(ids, { skipSpecialTokens: true }),
        );
      }
      assert.equal(got.vocabSize, want.vocabSize);
      assert.deepEqual(got.eosIds, want.eosIds);
      assert.equal(got.bosId, want.bosId);
      assert.equal(got.chatTemplate, want.chatTemplate);
      for (let id = 0; id < want.vocabSize; id++) {
        assert.equal(got.isSpecial(id), want.isSpecial(id));
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
}

Deno.test("the demo's vocabulary is written as llama.cpp reads it", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "pregate_gguf_vocab_" });
  try {
    const meta = await vocabGguf(`${ROOT}models/demo`, `${tmp}/v.gguf`);
    assert.equal(meta["tokenizer.ggml.model"].value, "gpt2");
    assert.equal(meta["tokenizer.ggml.pre"].value, "qwen2");
    assert.equal(meta["tokenizer.ggml.eos_token_id"].value, 0);
    const types = (meta["tokenizer.ggml.token_type"].value as { items: Int32Array }).items;
    assert.deepEqual([...types.slice(0, 4)], [3, 3, 3, 1]); // <|endoftext|>, <|im_...|>: control
    const merges = (meta["tokenizer.ggml.merges"].value as { items: readonly string[] }).items;
    assert.equal(merges[0], "Ġ t");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

interface Case {
  text: string;
  ids: number[];
  ids_with_special: number[];
  decoded: string;
  decoded_with_special: string;
  decoded_skip_special: string;
}

const spm: [string, string[]][] = [
  ["llama", []],
  ["mixtral", []],
  ["mixtral", ["tokenizer.ggml.merges"]],
];
for (const [name, drop] of spm) {
  const how = drop.length ? "scores alone (no merges)" : "tokens, scores and merges";
  Deno.test(`${name}: a llama GGUF vocabulary from ${how} gives HF's ids`, async () => {
    const tmp = await Deno.makeTempDir({ prefix: "pregate_gguf_vocab_" });
    try {
      const meta = await vocabGguf(`${FIXTURES}${name}`, `${tmp}/v.gguf`, drop);
      assert.equal(meta["tokenizer.ggml.model"].value, "llama");
      const got = await loadTokenizer(`${tmp}/v.gguf`);
      // llama.cpp prepends "▁" to text after a special token too: the legacy (mixtral) form.
      const exp = JSON.parse(await Deno.readTextFile(`${FIXTURES}mixtral/expected.json`));
      const want = await loadTokenizer(`${FIXTURES}mixtral`);
      for (const c of exp.cases as Case[]) {
        const what = JSON.stringify(c.text);
        assert.deepEqual(got.encode(c.text), c.ids, what);
        assert.deepEqual(got.encode(c.text, { addSpecialTokens: true }), c.ids_with_special, what);
        for (const ids of [c.ids, c.ids_with_special]) {
          assert.equal(got.decode(ids), want.decode(ids), what);
          const skip = { skipSpecialTokens: true };
          assert.equal(got.decode(ids, skip), want.decode(ids, skip), what);
        }
      }
      assert.equal(got.vocabSize, want.vocabSize);
      assert.deepEqual(got.eosIds, want.eosIds);
      assert.equal(got.bosId, 1);
      assert.deepEqual(got.specialTokens, want.specialTokens);
      const files = await readTokenizerFiles(`${FIXTURES}${name}`);
      assert.equal(got.chatTemplate, files.chatTemplate);
      for (let id = 0; id < want.vocabSize; id++) {
        assert.equal(got.isSpecial(id), want.isSpecial(id), `${id}`);
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
}

Deno.test("a llama vocabulary is written as llama.cpp reads it", async () => {
  const files = await readTokenizerFiles(`${FIXTURES}mixtral`);
  const meta = ggufVocabMetadata(files);
  const items = <X>(key: string) => (meta[key].value as unknown as { items: X }).items;
  const tokens = items<readonly string[]>("tokenizer.ggml.tokens");
  const types = items<Int32Array>("tokenizer.ggml.token_type");
  const scores = items<Float32Array>("tokenizer.ggml.scores");
  assert.deepEqual(tokens.slice(0, 4), ["<unk>", "<s>", "</s>", "<0x00>"]);
  assert.deepEqual([...types.slice(0, 4)], [2, 3, 3, 6]); // unknown, control, control, byte
  assert.equal(types[258], 6);
  assert.ok(types.slice(259).every((t) => t === 1));
  // The piece the first merge makes scores highest; single characters below every merged piece.
  const model = files.tokenizerJson.model as { merges: string[][] };
  const [l, r] = model.merges[0];
  const first = tokens.indexOf(l + r);
  assert.equal(scores[first], 0);
  const merged = new Set(model.merges.map((m) => m.join("")));
  const single = tokens.findIndex((t, id) => types[id] === 1 && !merged.has(t));
  assert.ok(scores[single] < Math.min(...[...merged].map((t) => scores[tokens.indexOf(t)])));
  for (const [key, value] of Object.entries({ bos: 1, eos: 2, unknown: 0 })) {
    assert.equal(meta[`tokenizer.ggml.${key}_token_id`].value, value, key);
  }
  assert.equal(meta["tokenizer.ggml.add_bos_token"].value, true);
  assert.equal(meta["tokenizer.ggml.add_eos_token"].value, false);
  assert.equal(meta["tokenizer.ggml.add_space_prefix"].value, true);
  assert.equal(meta["tokenizer.ggml.pre"].value, "default");
});

Deno.test("tokenizers llama.cpp would split otherwise are refused when writing", async () => {
  const t5 = await readTokenizerFiles(`${FIXTURES}t5`);
  assert.throws(() => ggufVocabMetadata(t5), (e) => {
    return e instanceof TokenizerError && e.message.includes("Unigram");
  });
  const llama = await readTokenizerFiles(`${FIXTURES}llama`);
  const split = structuredClone(llama.tokenizerJson) as Record<string, unknown>;
  (split.pre_tokenizer as { split: boolean }).split = true;
  assert.throws(() => ggufVocabMetadata({ ...llama, tokenizerJson: split }), (e) => {
    return e instanceof TokenizerError && e.message.includes("Metaspace");
  });
  const qwen = await readTokenizerFiles(`${FIXTURES}qwen2`);
  const pre = structuredClone(qwen.tokenizerJson) as Record<string, unknown>;
  const seq = pre.pre_tokenizer as { pretokenizers: { pattern: { Regex: string } }[] };
  seq.pretokenizers[0].pattern.Regex = "\\s+";
  assert.throws(() => ggufVocabMetadata({ ...qwen, tokenizerJson: pre }), (e) => {
    return e instanceof TokenizerError &&
      Object.keys(GGUF_PRE_TOKENIZERS).every((p) => e.message.includes(p));
  });
});
