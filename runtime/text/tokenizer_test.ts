// Tokenizers against Hugging Face's own: ids, tokens, decodings, streamed chunks and chat
// renderings recorded by tools/tokenizer_fixtures.py for one trained tokenizer per family; plus the
// loader's errors and the streaming detokenizer on crafted byte-split characters.
import assert from "node:assert/strict";
import { TokenizerError } from "../base/errors.ts";
import { type ChatMessage, renderChat } from "./chat.ts";
import { DecodeStream } from "./detokenize.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
import {
  byteFallbackTokenizer,
  byteLevelTokenizer,
  type TokenizerFileSet,
  writeTokenizer,
} from "./text_test_util.ts";

const FIXTURES = new URL("../../tests/fixtures/tokenizers/", import.meta.url).pathname;
const FAMILIES = ["qwen2", "olmoe", "llama", "mixtral", "t5"];

interface Case {
  text: string;
  ids: number[];
  tokens: string[];
  ids_with_special: number[];
  decoded: string;
  decoded_with_special: string;
  decoded_skip_special: string;
  stream: (string | null)[];
}
interface Expected {
  vocab_size: number;
  special: Record<string, { content: string; id: number }>;
  cases: Case[];
  prefix_cases: { text: string; ids: number[]; decoded_prefixes: string[] }[];
  chat: { messages: ChatMessage[]; add_generation_prompt: boolean; text: string; ids: number[] }[];
}

function hasFixture(family: string): boolean {
  try {
    return Deno.statSync(`${FIXTURES}${family}/expected.json`).isFile;
  } catch {
    return false;
  }
}

const show = (s: string) => JSON.stringify(s);

for (const family of FAMILIES) {
  Deno.test({
    name: `${family}: ids, tokens, decodings and streamed chunks equal HF tokenizers'`,
    ignore: !hasFixture(family),
    fn: async () => {
      const dir = `${FIXTURES}${family}`;
      const exp: Expected = JSON.parse(await Deno.readTextFile(`${dir}/expected.json`));
      const tok = await loadTokenizer(dir);
      const json = await Deno.readTextFile(`${dir}/tokenizer.json`);
      const byteFallback = JSON.stringify(JSON.parse(json).decoder).includes("ByteFallback");
      const unk = exp.special.unk_token?.id;
      assert.equal(tok.vocabSize, exp.vocab_size);
      for (const [key, s] of Object.entries(exp.special)) {
        assert.equal(tok.tokenToId(s.content), s.id, key);
      }
      for (const c of exp.cases) {
        const ids = tok.encode(c.text);
        assert.deepEqual(ids, c.ids, `ids of ${show(c.text)}`);
        // HF names an unknown piece by its text; its id is unk's
        const tokens = c.tokens.map((t, i) => (c.ids[i] === unk ? tok.idToToken(unk) : t));
        assert.deepEqual(ids.map((i) => tok.idToToken(i)), tokens, `tokens of ${show(c.text)}`);
        assert.deepEqual(
          tok.encode(c.text, { addSpecialTokens: true }),
          c.ids_with_special,
          `ids with special tokens of ${show(c.text)}`,
        );
        assert.equal(tok.decode(c.ids), c.decoded, `decode of ${show(c.text)}`);
        assert.equal(tok.decode(c.ids_with_special), c.decoded_with_special, `${show(c.text)}`);
        assert.equal(
          tok.decode(c.ids_with_special, { skipSpecialTokens: true }),
          c.decoded_skip_special,
          `decode skipping special tokens of ${show(c.text)}`,
        );
        const stream = new DecodeStream(tok);
        assert.deepEqual(c.ids.map((id) => stream.step(id)), c.stream, `stream of ${show(c.text)}`);
        assert.equal(stream.flush(), "");
      }
      for (const c of exp.prefix_cases) {
        assert.deepEqual(tok.encode(c.text), c.ids);
        c.decoded_prefixes.forEach((want, i) => {
          const got = tok.decode(c.ids.slice(0, i + 1)), what = `the first ${i + 1} ids`;
          if (!byteFallback || !want.includes("\uFFFD")) {
            assert.equal(got, want, `decode of ${what} of ${show(c.text)}`);
          } else {
            // An invalid byte-fallback run: U+FFFD per byte of the whole run in HF's Rust decoder,
            // per invalid subsequence here. Both end the text in U+FFFD (streaming waits).
            assert.ok(got.endsWith("\uFFFD"), `${what} of ${show(c.text)}: ${show(got)}`);
          }
        });
      }
      for (const c of exp.chat) {
        const text = renderChat(tok, c.messages, { addGenerationPrompt: c.add_generation_prompt });
        assert.equal(text, c.text, `chat rendering of ${JSON.stringify(c.messages)}`);
        assert.deepEqual(tok.encode(text), c.ids);
      }
    },
  });
}

async function withTokenizer(
  files: TokenizerFileSet | null,
  fn: (tok: Tokenizer, dir: string) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_tokenizer_" });
  try {
    if (files) await writeTokenizer(dir, files);
    await fn(files ? await loadTokenizer(dir) : (null as unknown as Tokenizer), dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a model directory without tokenizer.json is a TokenizerError naming the file", async () => {
  await withTokenizer(null, async (_, dir) => {
    const e1 = await loadTokenizer(dir).catch((e) => e);
    assert.ok(e1 instanceof TokenizerError);
    assert.equal(e1.file, `${dir}/tokenizer.json`);
    assert.match(e1.message, /not found/);
    await Deno.writeTextFile(`${dir}/tokenizer.model`, "spm");
    const e2 = await loadTokenizer(dir).catch((e) => e);
    assert.match(e2.message, /save_pretrained/, "a SentencePiece-only directory gets a hint");
    await Deno.writeTextFile(`${dir}/tokenizer.json`, "{ not json");
    const e3 = await loadTokenizer(dir).catch((e) => e);
    assert.ok(e3 instanceof TokenizerError);
    assert.match(e3.message, /tokenizer\.json: is not valid JSON/);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify({ model: { type: "Magic" } }));
    const e4 = await loadTokenizer(dir).catch((e) => e);
    assert.ok(e4 instanceof TokenizerError, String(e4));
  });
});

Deno.test("tokenizer_config's eos/bos and config.json's eos_token_id are read", async () => {
  await withTokenizer(byteFallbackTokenizer(), async (_, dir) => {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ eos_token_id: [2, 7] }));
    await Deno.writeTextFile(`${dir}/generation_config.json`, JSON.stringify({ eos_token_id: 9 }));
    const tok = await loadTokenizer(dir);
    assert.equal(tok.bosId, 1);
    assert.deepEqual([...tok.eosIds].sort((a, b) => a - b), [2, 7, 9]);
    assert.deepEqual(tok.encode("Hello", { addSpecialTokens: true })[0], 1);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ eos_token_id: "x" }));
    const e = await loadTokenizer(dir).catch((e) => e);
    assert.ok(e instanceof TokenizerError);
    assert.match(e.message, /config\.json: eos_token_id/);
  });
});

/** Steps `ids` through a stream; returns the non-null pieces and what each step returned. */
function streamAll(tok: Tokenizer, ids: readonly number[], context: number[] = []) {
  const s = new DecodeStream(tok, { context });
  const steps = ids.map((id) => s.step(id));
  const pieces = [...steps.filter((p): p is string => p !== null), s.flush()];
  return { steps, text: pieces.join("") };
}

Deno.test("byte fallback: a character split over <0x..> tokens is printed once complete", async () => {
  await withTokenizer(byteFallbackTokenizer(), (tok) => {
    const ids = tok.encode("Hi é€😀!");
    // é = C3 A9, € = E2 82 AC, 😀 = F0 9F 98 80: none is in the vocabulary
    assert.deepEqual(ids.map((i) => tok.idToToken(i)), [
      "▁H",
      "i",
      "▁",
      "<0xC3>",
      "<0xA9>",
      "<0xE2>",
      "<0x82>",
      "<0xAC>",
      "<0xF0>",
      "<0x9F>",
      "<0x98>",
      "<0x80>",
      "!",
    ]);
    const { steps, text } = streamAll(tok, ids);
    assert.deepEqual(steps, [
      "H",
      "i",
      " ",
      null,
      "é",
      null,
      null,
      "€",
      null,
      null,
      null,
      "😀",
      "!",
    ]);
    assert.equal(text, "Hi é€😀!");
    assert.equal(tok.decode(ids), text);
    // an unfinished character at the end comes out of flush() as U+FFFD, as decode() gives it
    const cut = streamAll(tok, ids.slice(0, 7));
    assert.deepEqual(cut.steps.slice(5), [null, null]);
    assert.equal(cut.text, "Hi é\uFFFD");
    assert.equal(cut.text, tok.decode(ids.slice(0, 7)));
  });
});

Deno.test("byte-level BPE: pieces of a split character wait for its last byte", async () => {
  await withTokenizer(byteLevelTokenizer(), (tok) => {
    const ids = tok.encode("Hello world é €😀");
    const { steps, text } = streamAll(tok, ids);
    assert.equal(text, "Hello world é €😀");
    assert.equal(steps.filter((p) => p !== null).join(""), text);
    assert.ok(steps.every((p) => p === null || !p.includes("\uFFFD")));
    assert.ok(steps.filter((p) => p === null).length >= 5, "€ and 😀 are split over bytes");
    assert.equal(tok.decode(ids), text);
  });
});

Deno.test("streamed pieces add up to the decoding of any id sequence (random ids)", async () => {
  for (const files of [byteFallbackTokenizer(), byteLevelTokenizer()]) {
    await withTokenizer(files, (tok) => {
      let seed = 12345;
      const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
      for (let trial = 0; trial < 40; trial++) {
        const ids = Array.from(
          { length: 1 + Math.floor(rand() * 30) },
          () => Math.floor(rand() * (tok.vocabSize + 4)), // a few ids past the vocabulary: dropped
        );
        for (const skipSpecialTokens of [false, true]) {
          const s = new DecodeStream(tok, { skipSpecialTokens });
          const text = ids.map((id) => s.step(id) ?? "").join("") + s.flush();
          assert.equal(text, tok.decode(ids, { skipSpecialTokens }), `ids ${ids}`);
        }
        // with a context: the pieces are what the ids add to the context's text
        const context = tok.encode("Hello the world");
        const full = tok.decode([...context, ...ids]);
        const head = tok.decode(context);
        if (full.startsWith(head)) {
          assert.equal(streamAll(tok, ids, context).text, full.slice(head.length), `ids ${ids}`);
        }
      }
    });
  }
});

Deno.test("chat templates render as transformers does; a model without one is a TokenizerError", async () => {
  await withTokenizer(byteLevelTokenizer(), async (tok, dir) => {
    assert.equal(
      renderChat(tok, [{ role: "user", content: "Hi" }]),
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    );
    assert.equal(
      renderChat(tok, [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }], {
        addGenerationPrompt: false,
      }),
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    );
    const ids = tok.encode(renderChat(tok, [{ role: "user", content: "Hi" }]));
    assert.equal(
      ids[0],
      tok.tokenToId("<|im_start|>"),
      "special tokens in the template are matched",
    );
    const noTemplate = byteLevelTokenizer();
    delete noTemplate.config.chat_template;
    await writeTokenizer(dir, noTemplate);
    const bare = await loadTokenizer(dir);
    let e: unknown = null;
    try {
      renderChat(bare, [{ role: "user", content: "Hi" }]);
    } catch (err) {
      e = err;
    }
    assert.ok(e instanceof TokenizerError);
    assert.match(e.message, /tokenizer_config\.json: has no chat_template/);
    await Deno.writeTextFile(`${dir}/chat_template.jinja`, "{{ messages[0]['content'] }}!");
    assert.equal(renderChat(await loadTokenizer(dir), [{ role: "user", content: "Hi" }]), "Hi!");
  });
  await withTokenizer(byteFallbackTokenizer(), (tok) => {
    assert.equal(
      renderChat(tok, [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello" },
        { role: "user", content: "More" },
      ]),
      "<s>[INST] Hi [/INST]Hello</s>[INST] More [/INST]",
    );
    assert.throws(
      () => renderChat(tok, [{ role: "assistant", content: "first" }]),
      /roles must alternate/,
    );
  });
});
