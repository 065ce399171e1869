// Vocabularies through GGUF files: a byte-level BPE tokenizer written as tokenizer.ggml.* keys and
// rebuilt from them gives the tokenizer.json path's ids and decodings (HF's own, recorded in the
// fixtures) for the demo model and the qwen2 and olmoe fixtures; the special tokens, EOS ids and
// chat template survive; tokenizers llama.cpp would split otherwise are refused when writing.
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

/** Writes the vocabulary of tokenizer directory `dir` as a GGUF file (no tensors). */
async function vocabGguf(dir: string, out: string) {
  const meta = ggufVocabMetadata(await readTokenizerFiles(dir));
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

Deno.test("tokenizers llama.cpp would split otherwise are refused when writing", async () => {
  const llama = await readTokenizerFiles(`${FIXTURES}llama`);
  assert.throws(() => ggufVocabMetadata(llama), (e) => {
    return e instanceof TokenizerError && e.message.includes("byte-level BPE");
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
