/**
 * Tiny tokenizers for tests, written in Hugging Face's tokenizer.json format: a Qwen-style
 * byte-level BPE and a Llama-style BPE with byte fallback, each under 384 ids, with a chat template.
 * Test-only.
 * @module
 */
import { makeModel } from "../models/make_model.ts";

/** A tokenizer.json and tokenizer_config.json, as objects. */
export interface TokenizerFileSet {
  json: Record<string, unknown>;
  config: Record<string, unknown>;
}

/** The Qwen ChatML template (as Qwen1.5 ships it). */
export const CHATML_TEMPLATE = "{% for message in messages %}" +
  "{% if loop.first and messages[0]['role'] != 'system' %}" +
  "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}" +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Mixtral's [INST] template. */
export const INST_TEMPLATE = "{{ bos_token }}{% for message in messages %}" +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}" +
  "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}" +
  "{% endfor %}";

const added = (id: number, content: string) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});

/** GPT-2's byte -> printable character map (ByteLevel). */
export function byteChars(): string[] {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + n++);
  }
  return out;
}

/** BPE vocabulary and merges from a base alphabet and merge pairs (merged tokens appended). */
function bpe(alphabet: string[], pairs: [string, string][], first: number) {
  const vocab: Record<string, number> = {};
  let n = first;
  for (const c of alphabet) if (!(c in vocab)) vocab[c] = n++;
  for (const [a, b] of pairs) {
    if (!(a in vocab) || !(b in vocab)) throw new Error(`merge ${a} + ${b}: part not in vocab`);
    if (!(a + b in vocab)) vocab[a + b] = n++;
  }
  return { vocab, merges: pairs, next: n };
}

/** Qwen-style byte-level BPE: 256 byte tokens, a few merges, ChatML special tokens (< 300 ids). */
export function byteLevelTokenizer(): TokenizerFileSet {
  const chars = byteChars();
  const bl = (s: string) => [...new TextEncoder().encode(s)].map((b) => chars[b]).join("");
  const words: [string, string][] = [
    [" ", "t"],
    ["h", "e"],
    [" t", "he"],
    [" ", "a"],
    ["i", "n"],
    ["e", "r"],
    [" ", "w"],
    ["o", "r"],
    [" w", "or"],
    ["l", "d"],
    [" wor", "ld"],
    ["l", "l"],
    ["e", "ll"],
    ["H", "ell"],
    ["Hell", "o"],
    [" ", "s"],
    ["o", "n"],
  ];
  const pairs = words.map(([a, b]) => [bl(a), bl(b)] as [string, string]);
  pairs.push([chars[0xc3], chars[0xa9]]); // é as one token; € and emoji stay in bytes
  const { vocab, merges, next } = bpe(chars, pairs, 0);
  const byteLevel = {
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  };
  return {
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: [
        added(next, "<|endoftext|>"),
        added(next + 1, "<|im_start|>"),
        added(next + 2, "<|im_end|>"),
      ],
      normalizer: { type: "NFC" },
      pre_tokenizer: byteLevel,
      post_processor: { ...byteLevel, use_regex: false, trim_offsets: false },
      decoder: byteLevel,
      model: bpeModel(vocab, merges, {}),
    },
    config: {
      bos_token: null,
      eos_token: "<|im_end|>",
      pad_token: "<|endoftext|>",
      chat_template: CHATML_TEMPLATE,
    },
  };
}

/** The 256 byte-fallback token strings, `<0x00>` .. `<0xFF>`. */
export const BYTE_TOKENS: string[] = Array.from(
  { length: 256 },
  (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`,
);

/**
 * Llama-style BPE: `<unk> <s> </s>`, the 256 byte tokens, ASCII and a few merges; Metaspace,
 * byte fallback, `<s>` added by the post-processor (< 384 ids).
 */
export function byteFallbackTokenizer(): TokenizerFileSet {
  const ascii: string[] = ["▁"];
  for (let c = 0x21; c <= 0x7e; c++) ascii.push(String.fromCharCode(c));
  const pairs: [string, string][] = [
    ["▁", "t"],
    ["h", "e"],
    ["▁t", "he"],
    ["▁", "a"],
    ["i", "n"],
    ["▁", "w"],
    ["o", "r"],
    ["▁w", "or"],
    ["l", "d"],
    ["▁wor", "ld"],
    ["l", "l"],
    ["e", "ll"],
    ["▁", "H"],
    ["▁H", "ell"],
    ["▁Hell", "o"],
    ["▁", "▁"],
  ];
  const { vocab, merges } = bpe(["<unk>", "<s>", "</s>", ...BYTE_TOKENS, ...ascii], pairs, 0);
  return {
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
      normalizer: null,
      pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, {
          Sequence: { id: "A", type_id: 0 },
        }],
        pair: [
          { SpecialToken: { id: "<s>", type_id: 0 } },
          { Sequence: { id: "A", type_id: 0 } },
          { SpecialToken: { id: "<s>", type_id: 1 } },
          { Sequence: { id: "B", type_id: 1 } },
        ],
        special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
      },
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "▁" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      },
      model: bpeModel(vocab, merges, { unk: "<unk>", byteFallback: true }),
    },
    config: {
      bos_token: "<s>",
      eos_token: "</s>",
      unk_token: "<unk>",
      chat_template: INST_TEMPLATE,
    },
  };
}

function bpeModel(
  vocab: Record<string, number>,
  merges: [string, string][],
  o: { unk?: string; byteFallback?: boolean },
) {
  return {
    type: "BPE",
    dropout: null,
    unk_token: o.unk ?? null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: o.byteFallback ?? false,
    byte_fallback: o.byteFallback ?? false,
    ignore_merges: false,
    vocab,
    merges,
  };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir`. */
export async function writeTokenizer(dir: string, files: TokenizerFileSet): Promise<void> {
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(files.json));
  await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(files.config));
}

/** Vocabulary of {@linkcode makeTextModel}'s models: both tiny tokenizers fit. */
export const TEXT_MODEL_VOCAB = 384;

/** A tiny random qwen3_moe checkpoint with `files` as its tokenizer, in `dir`. */
export async function makeTextModel(dir: string, files: TokenizerFileSet): Promise<void> {
  await makeModel({
    arch: "qwen3_moe",
    out: dir,
    force: true,
    overrides: { vocab: TEXT_MODEL_VOCAB },
  });
  await writeTokenizer(dir, files);
}
