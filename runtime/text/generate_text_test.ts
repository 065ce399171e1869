// Text generation on a tiny random model: the streamed pieces are the decoding of exactly the ids
// Model.generate makes, chat prompts are the rendered template, and ids the model cannot embed are
// a typed error.
import assert from "node:assert/strict";
import { TokenizerError } from "../base/errors.ts";
import { loadModel, type Model } from "../model.ts";
import { testGpu } from "../../kernels/test_util.ts";
import { generateText } from "./generate_text.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
import {
  byteFallbackTokenizer,
  byteLevelTokenizer,
  makeTextModel,
  TEXT_MODEL_VOCAB,
  writeTokenizer,
} from "./text_test_util.ts";

const GPU = { sanitizeResources: false, sanitizeOps: false };

async function withTextModel(fn: (model: Model, tokenizers: Tokenizer[]) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "pregate_text_" });
  const model = await (async () => {
    await makeTextModel(root, byteFallbackTokenizer());
    return await loadModel(root, { device: await testGpu(), contextLength: 64 });
  })();
  try {
    await Deno.mkdir(`${root}/bl`);
    await writeTokenizer(`${root}/bl`, byteLevelTokenizer());
    await fn(model, [await loadTokenizer(root), await loadTokenizer(`${root}/bl`)]);
  } finally {
    await model.dispose();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test({
  name: "generateText streams the decoding of the ids Model.generate makes",
  ...GPU,
  fn: () =>
    withTextModel(async (model, tokenizers) => {
      for (const tok of tokenizers) {
        const prompt = "Hello the world, in the world é";
        const gen = generateText(model, tok, prompt, { maxTokens: 12 });
        const pieces: string[] = [];
        for await (const piece of gen) pieces.push(piece);
        assert.equal(pieces.join(""), gen.text);
        assert.ok(pieces.every((p) => p.length > 0));
        assert.deepEqual(gen.promptIds, tok.encode(prompt, { addSpecialTokens: true }));
        // the same ids as the token API, stopping where it stops
        const direct: number[] = [];
        for await (
          const id of model.generate(gen.promptIds, { maxTokens: 12, stopIds: tok.eosIds })
        ) {
          direct.push(id);
        }
        assert.deepEqual(gen.ids, direct);
        assert.equal(gen.stats?.generated_tokens, direct.length);
        const eosAtEnd = tok.eosIds.includes(gen.ids.at(-1)!);
        assert.equal(gen.stopReason, eosAtEnd ? "eos" : "max_tokens");
        // the pieces are exactly what the new ids add to the prompt's text
        const newIds = eosAtEnd ? gen.ids.slice(0, -1) : gen.ids;
        const opts = { skipSpecialTokens: true };
        assert.equal(
          tok.decode([...gen.promptIds, ...newIds], opts),
          tok.decode(gen.promptIds, opts) + gen.text,
        );
        // a caller's stop id ends the generation after it
        const stopped = generateText(model, tok, prompt, { maxTokens: 12, stopIds: [direct[0]] });
        for await (const _ of stopped) { /* drain */ }
        assert.deepEqual(stopped.ids, [direct[0]]);
        assert.equal(stopped.stopReason, tok.eosIds.includes(direct[0]) ? "eos" : "stop_id");
      }
    }),
});

Deno.test({
  name: "a chat prompt is the rendered template; an id past the model's vocabulary is an error",
  ...GPU,
  fn: () =>
    withTextModel(async (model, [llamaLike, qwenLike]) => {
      const chat = generateText(model, qwenLike, [{ role: "user", content: "Hi" }], {
        maxTokens: 2,
      });
      assert.equal(
        chat.promptText,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
          "<|im_start|>assistant\n",
      );
      assert.deepEqual(chat.promptIds, qwenLike.encode(chat.promptText));
      for await (const _ of chat) { /* runs */ }
      assert.equal(chat.ids.length > 0, true);
      // --chat with a string prompt: one user message; the template's <s> is the only BOS
      const inst = generateText(model, llamaLike, "Hi", { chat: true, maxTokens: 1 });
      assert.equal(inst.promptText, "<s>[INST] Hi [/INST]");
      assert.equal(inst.promptIds.filter((id) => id === llamaLike.bosId).length, 1);
      // a tokenizer with an id the model has no embedding for
      const files = byteLevelTokenizer();
      (files.json.added_tokens as unknown[]).push({
        id: TEXT_MODEL_VOCAB + 10,
        content: "<|big|>",
        special: true,
        normalized: false,
      });
      const dir = await Deno.makeTempDir();
      await writeTokenizer(dir, files);
      const big = await loadTokenizer(dir);
      await Deno.remove(dir, { recursive: true });
      assert.throws(
        () => generateText(model, big, "a <|big|>"),
        (e) => e instanceof TokenizerError && /token id 394 .*vocabulary has 384/.test(e.message),
      );
    }),
});
