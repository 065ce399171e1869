// A GGUF model that does not map onto a Pregate model gives a typed error naming the file and the
// tensor or key, before anything reaches the GPU: a missing or misshapen tensor, an unsupported
// tensor type, a missing or mistyped key, an architecture Pregate does not read, metadata that
// changes the math in ways Pregate does not compute, config values its architecture refuses, and
// vocabularies it cannot rebuild.
import assert from "node:assert/strict";
import { GgufError, TokenizerError } from "../base/errors.ts";
import { ggufValue as v, writeGguf } from "../weights/gguf_writer.ts";
import { ggufVocabMetadata } from "../text/gguf_vocab.ts";
import { loadTokenizer, readTokenizerFiles } from "../text/tokenizer.ts";
import { convertToGguf } from "./gguf_convert.ts";
import { loadModelConfig, openModelStore } from "./gguf_model.ts";
import { type GgufEdit, makeMoeModel, rewriteGguf } from "./gguf_model_test_util.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "pregate_gguf_malformed_" });
const good = `${dir}/good.gguf`;
await makeMoeModel("qwen3_moe", `${dir}/src`);
await convertToGguf({ model: `${dir}/src`, out: good, type: "q8_0" });
let n = 0;

/** Opens `good` rewritten with `edit` as a model (config, then tensors); returns the error. */
async function openEdited(edit: GgufEdit): Promise<unknown> {
  const path = `${dir}/bad${n++}.gguf`;
  await rewriteGguf(good, path, edit);
  try {
    const cfg = await loadModelConfig(path);
    openModelStore(path, cfg).close();
  } catch (e) {
    return e;
  }
  return null;
}

/** Asserts a GgufError naming `what` (`tensor` or `key`) and containing `text`. */
function assertGguf(e: unknown, what: { tensor?: string; key?: string }, text: string): void {
  assert.ok(e instanceof GgufError, `expected a GgufError, got ${e}`);
  assert.ok(e.file.startsWith(dir), e.message);
  if (what.tensor) assert.equal(e.tensor, what.tensor, e.message);
  if (what.key) assert.equal(e.key, what.key, e.message);
  assert.ok(e.message.includes(text), `${e.message} (expected: ${text})`);
}

Deno.test("the unedited file opens", async () => {
  assert.equal(await openEdited({}), null);
});

Deno.test("a missing tensor names the GGUF tensor and what Pregate reads it as", async () => {
  const e = await openEdited({ dropTensors: ["blk.1.ffn_down_exps.weight"] });
  assertGguf(e, { tensor: "blk.1.ffn_down_exps.weight" }, "model.layers.1.mlp.experts");
  assertGguf(await openEdited({ dropTensors: ["token_embd.weight"] }), {
    tensor: "token_embd.weight",
  }, "missing tensor");
});

Deno.test("a tensor of the wrong shape or an unsupported type names the tensor", async () => {
  const q = { type: "F32", shape: [100, 64], data: new Uint8Array(100 * 64 * 4) };
  assertGguf(
    await openEdited({ replace: { "blk.0.attn_q.weight": q } }),
    { tensor: "blk.0.attn_q.weight" },
    "found [100, 64]",
  );
  const experts = { type: "F32", shape: [7, 96, 64], data: new Uint8Array(7 * 96 * 64 * 4) };
  assertGguf(
    await openEdited({ replace: { "blk.2.ffn_gate_exps.weight": experts } }),
    { tensor: "blk.2.ffn_gate_exps.weight" },
    "[experts, 96, 64]",
  );
  const q4 = { type: "Q4_1", shape: [256, 64], data: new Uint8Array(256 * 2 * 20) };
  assertGguf(
    await openEdited({ replace: { "token_embd.weight": q4 } }),
    { tensor: "token_embd.weight" },
    "type Q4_1 is not supported",
  );
});

Deno.test("a missing or mistyped key names the key", async () => {
  assertGguf(
    await openEdited({ dropKeys: ["qwen3moe.expert_count"] }),
    { key: "qwen3moe.expert_count" },
    "missing metadata key",
  );
  assertGguf(
    await openEdited({ setKeys: { "qwen3moe.embedding_length": v.string("64") } }),
    { key: "qwen3moe.embedding_length" },
    "expected a non-negative integer",
  );
  assertGguf(
    await openEdited({ dropKeys: ["general.architecture"] }),
    { key: "general.architecture" },
    "missing metadata key",
  );
});

Deno.test("an architecture Pregate does not read names general.architecture and lists those it does", async () => {
  const e = await openEdited({ setKeys: { "general.architecture": v.string("gemma3") } });
  assertGguf(e, { key: "general.architecture" }, '"gemma3"');
  assert.ok((e as Error).message.includes("qwen3moe (qwen3_moe)"), (e as Error).message);
});

Deno.test("keys that change the math in ways Pregate does not compute are refused by name", async () => {
  assertGguf(
    await openEdited({ setKeys: { "qwen3moe.rope.scaling.type": v.string("yarn") } }),
    { key: "qwen3moe.rope.scaling.type" },
    "yarn",
  );
  assertGguf(
    await openEdited({ setKeys: { "qwen3moe.expert_weights_norm": v.bool(false) } }),
    { key: "qwen3moe.expert_weights_norm" },
    "expected true",
  );
  assertGguf(
    await openEdited({ setKeys: { "qwen3moe.attention.sliding_window": v.u32(64) } }),
    { key: "qwen3moe.attention.sliding_window" },
    "sliding-window",
  );
});

Deno.test("a config value the architecture refuses names the GGUF key behind the field", async () => {
  // 4 heads over 3 KV heads: num_key_value_heads must divide num_attention_heads.
  const e = await openEdited({ setKeys: { "qwen3moe.attention.head_count_kv": v.u32(3) } });
  assertGguf(e, { key: "qwen3moe.attention.head_count_kv" }, "num_key_value_heads");
  assert.ok((e as Error).message.includes("<- qwen3moe.attention.head_count_kv"));
});

Deno.test("vocabularies Pregate cannot rebuild are TokenizerErrors naming the key", async () => {
  // A SentencePiece (llama) vocabulary alone, from the mixtral fixture.
  const spm = `${dir}/spm.gguf`;
  const files = await readTokenizerFiles(`${ROOT}tests/fixtures/tokenizers/mixtral`);
  await writeGguf(
    spm,
    { "general.architecture": v.string("llama"), ...ggufVocabMetadata(files) },
    [],
  );
  const open = async (edit: GgufEdit, src = good) => {
    const path = `${dir}/tok${n++}.gguf`;
    await rewriteGguf(src, path, edit);
    return await loadTokenizer(path).then(() => null, (e) => e);
  };
  assert.equal(await open({}, spm), null, "the unedited llama vocabulary loads");
  const keys: [GgufEdit, string, string, string?][] = [
    [{ dropKeys: ["tokenizer.ggml.model"] }, "tokenizer.ggml.model", "no vocabulary"],
    [{ setKeys: { "tokenizer.ggml.model": v.string("bert") } }, "tokenizer.ggml.model", "bert"],
    [{ setKeys: { "tokenizer.ggml.model": v.string("gpt2") } }, "tokenizer.ggml.pre", "default"],
    [{ dropKeys: ["tokenizer.ggml.tokens"] }, "tokenizer.ggml.tokens", "missing", spm],
    [
      { dropKeys: ["tokenizer.ggml.scores", "tokenizer.ggml.merges"] },
      "tokenizer.ggml.scores",
      "missing",
      spm,
    ],
    [
      { setKeys: { "tokenizer.ggml.scores": v.array("f32", [0, -1]) } },
      "tokenizer.ggml.scores",
      "one per token",
      spm,
    ],
  ];
  for (const [edit, key, text, src] of keys) {
    const e = await open(edit, src);
    assert.ok(e instanceof TokenizerError, `${key}: ${e}`);
    assert.ok(e.message.includes(`[key ${key}]`) && e.message.includes(text), e.message);
  }
});

Deno.test("cleanup", async () => {
  await Deno.remove(dir, { recursive: true });
});
