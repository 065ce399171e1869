// The end-of-turn token of a chat template: found where an assistant turn closes, whatever the
// tokenizer's EOS is; nothing when there is no template or no special token closes the turn.
import assert from "node:assert/strict";
import { endOfTurnIds } from "./chat.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
import {
  byteFallbackTokenizer,
  byteLevelTokenizer,
  type TokenizerFileSet,
  writeTokenizer,
} from "./text_test_util.ts";

async function tokenizerOf(files: TokenizerFileSet): Promise<Tokenizer> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_chat_" });
  try {
    await writeTokenizer(dir, files);
    return await loadTokenizer(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("endOfTurnIds: ChatML's <|im_end|> even when the EOS is <|endoftext|>", async () => {
  const files = byteLevelTokenizer();
  files.config.eos_token = "<|endoftext|>";
  const tok = await tokenizerOf(files);
  const imEnd = tok.tokenToId("<|im_end|>")!;
  assert.deepEqual(tok.eosIds, [tok.tokenToId("<|endoftext|>")]);
  assert.deepEqual(endOfTurnIds(tok), [imEnd]);
});

Deno.test("endOfTurnIds: the [INST] template closes a turn with </s> after a space", async () => {
  const tok = await tokenizerOf(byteFallbackTokenizer());
  assert.deepEqual(endOfTurnIds(tok), [tok.tokenToId("</s>")]);
});

Deno.test("endOfTurnIds: none without a template or without a special token after the turn", async () => {
  const none = byteLevelTokenizer();
  delete none.config.chat_template;
  assert.deepEqual(endOfTurnIds(await tokenizerOf(none)), []);
  const plain = byteLevelTokenizer();
  plain.config.chat_template =
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}" +
    "{% endfor %}";
  assert.deepEqual(endOfTurnIds(await tokenizerOf(plain)), []);
});
