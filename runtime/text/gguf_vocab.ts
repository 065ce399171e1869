/**
 * Vocabularies in GGUF files (llama.cpp's `tokenizer.ggml.*` keys), both ways, so a GGUF model
 * needs no tokenizer.json: {@linkcode ggufVocabMetadata} writes a tokenizer.json's vocabulary,
 * merges, special tokens and chat template as llama.cpp reads them, and
 * {@linkcode ggufTokenizerFiles} builds the tokenizer.json (and tokenizer_config.json) equivalent of
 * a file's keys for `@huggingface/tokenizers`.
 *
 * Byte-level BPE tokenizers (GPT-2 style: Qwen, OLMoE, Llama 3) are `tokenizer.ggml.model` `gpt2`
 * with the pre-tokenizer by llama.cpp's name (`tokenizer.ggml.pre`); the pre-tokenizers both
 * directions know are those whose llama.cpp name fixes HF's pipeline exactly
 * ({@linkcode GGUF_PRE_TOKENIZERS}), another is a {@linkcode TokenizerError} naming the file and the
 * key. SentencePiece-style BPE tokenizers with byte fallback (Llama 2, Mistral, Mixtral) are
 * `llama` vocabularies with scores, in `gguf_vocab_spm.ts`. Unigram (T5) is neither written nor
 * read.
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "../weights/gguf.ts";
 * import { Tokenizer } from "./tokenizer.ts";
 * import { ggufTokenizerFiles } from "./gguf_vocab.ts";
 * const tok = new Tokenizer(ggufTokenizerFiles(openGguf("model.gguf")));
 * console.log(tok.encode("Hello"));
 * ```
 * @module
 */
import { TokenizerError } from "../base/errors.ts";
import type { GgufFile } from "../weights/gguf.ts";
import { ggufValue as v, type GgufValueToWrite } from "../weights/gguf_writer.ts";
import type { TokenizerFiles } from "./tokenizer_files.ts";
import {
  GGUF_TOKEN_TYPE as TOKEN_TYPE,
  isSpmTokenizer,
  spmTokenizerFiles,
  spmVocabMetadata,
} from "./gguf_vocab_spm.ts";

const QWEN2_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+" +
  "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}" +
  "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** What a llama.cpp pre-tokenizer name fixes of HF's pipeline. */
interface PreTokenizer {
  /** The Split regex before a ByteLevel without its own regex, or `null`: ByteLevel's GPT-2 regex. */
  readonly regex: string | null;
  /** Whether HF's pipeline normalises to NFC first. */
  readonly nfc: boolean;
  /** HF's BPE `ignore_merges` (whole-word vocabulary hits first). */
  readonly ignoreMerges: boolean;
}

/**
 * The pre-tokenizers (by llama.cpp's `tokenizer.ggml.pre` name) whose HF pipeline Pregate writes
 * and rebuilds.
 */
export const GGUF_PRE_TOKENIZERS: Readonly<Record<string, PreTokenizer>> = Object.freeze({
  qwen2: { regex: QWEN2_REGEX, nfc: true, ignoreMerges: false },
  "llama-bpe": { regex: LLAMA3_REGEX, nfc: false, ignoreMerges: true },
  olmo: { regex: null, nfc: true, ignoreMerges: false },
  "gpt-2": { regex: null, nfc: false, ignoreMerges: false },
});

type Json = Record<string, unknown>;

function obj(x: unknown): Json | null {
  return x && typeof x === "object" && !Array.isArray(x) ? x as Json : null;
}

/** The llama.cpp pre-tokenizer name of a tokenizer.json's pipeline, or null. */
function preTokenizerName(tj: Json): string | null {
  const nfc = obj(tj.normalizer)?.type === "NFC";
  if (tj.normalizer !== null && tj.normalizer !== undefined && !nfc) return null;
  const pre = obj(tj.pre_tokenizer);
  const model = obj(tj.model);
  const ignore = model?.ignore_merges === true;
  let regex: string | null | undefined;
  if (pre?.type === "ByteLevel" && pre.use_regex === true && pre.add_prefix_space === false) {
    regex = null;
  } else if (pre?.type === "Sequence" && Array.isArray(pre.pretokenizers)) {
    const [split, bl] = pre.pretokenizers.map(obj);
    const ok = pre.pretokenizers.length === 2 && split?.type === "Split" &&
      split.behavior === "Isolated" && split.invert === false && bl?.type === "ByteLevel" &&
      bl.use_regex === false && bl.add_prefix_space === false;
    const r = obj(split?.pattern)?.Regex;
    if (ok && typeof r === "string") regex = r;
  }
  if (regex === undefined) return null;
  const found = Object.entries(GGUF_PRE_TOKENIZERS).find(([, p]) =>
    p.regex === regex && p.nfc === nfc && p.ignoreMerges === ignore
  );
  return found?.[0] ?? null;
}

/**
 * The `tokenizer.*` metadata of a byte-level BPE tokenizer (see the module documentation): every id
 * up to the largest (ids no token has become `[PAD<id>]`, type unused), the merges, the special
 * tokens (`bos` / `eos` / `padding` from tokenizer_config.json, the EOS of config.json), whether
 * BOS is added, the chat template.
 *
 * @throws {TokenizerError} naming tokenizer.json for a tokenizer llama.cpp would not split the same
 *   way (another model type, byte fallback, an unknown pre-tokenizer).
 */
export function ggufVocabMetadata(files: TokenizerFiles): Record<string, GgufValueToWrite> {
  const tj = files.tokenizerJson, file = `${files.dir}/tokenizer.json`;
  if (isSpmTokenizer(tj)) return spmVocabMetadata(files);
  const model = obj(tj.model);
  const decoder = obj(tj.decoder);
  if (model?.type !== "BPE" || decoder?.type !== "ByteLevel") {
    throw new TokenizerError(
      file,
      "only BPE tokenizers (byte-level, or SentencePiece-style with byte fallback) can be " +
        "written to GGUF",
      "Unigram vocabularies (T5) are not written; convert with --no-vocab and pass token ids",
    );
  }
  const pre = preTokenizerName(tj);
  if (pre === null) {
    throw new TokenizerError(
      file,
      "its normaliser and pre-tokenizer are none llama.cpp knows by name",
      `Pregate writes these (tokenizer.ggml.pre): ${Object.keys(GGUF_PRE_TOKENIZERS).join(", ")}`,
    );
  }
  const vocab = obj(model.vocab) ?? {};
  const added = Array.isArray(tj.added_tokens) ? tj.added_tokens.map(obj) : [];
  const byId = new Map<number, { text: string; type: number }>();
  for (const [text, id] of Object.entries(vocab)) byId.set(id as number, { text, type: 1 });
  for (const a of added) {
    if (!a || typeof a.id !== "number" || typeof a.content !== "string") continue;
    const type = a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined;
    byId.set(a.id, { text: a.content, type });
  }
  const n = Math.max(...byId.keys()) + 1;
  const tokens: string[] = [], types = new Int32Array(n);
  for (let id = 0; id < n; id++) {
    const t = byId.get(id);
    tokens.push(t?.text ?? `[PAD${id}]`);
    types[id] = t?.type ?? TOKEN_TYPE.unused;
  }
  const merges = (Array.isArray(model.merges) ? model.merges : []).map((m) =>
    Array.isArray(m) ? m.join(" ") : String(m)
  );
  const cfg = files.tokenizerConfig;
  const idOf = (key: string): number | undefined => {
    const s = typeof cfg[key] === "string" ? cfg[key] : obj(cfg[key])?.content;
    if (typeof s !== "string") return undefined;
    const id = tokens.indexOf(s);
    return id >= 0 ? id : undefined;
  };
  const out: Record<string, GgufValueToWrite> = {
    "tokenizer.ggml.model": v.string("gpt2"),
    "tokenizer.ggml.pre": v.string(pre),
    "tokenizer.ggml.tokens": v.strings(tokens),
    "tokenizer.ggml.token_type": v.array("i32", types),
    "tokenizer.ggml.merges": v.strings(merges),
  };
  const ids: [string, number | undefined][] = [
    ["bos_token_id", idOf("bos_token")],
    ["eos_token_id", idOf("eos_token") ?? files.modelEosIds[0]],
    ["padding_token_id", idOf("pad_token")],
  ];
  for (const [key, id] of ids) if (id !== undefined) out[`tokenizer.ggml.${key}`] = v.u32(id);
  out["tokenizer.ggml.add_bos_token"] = v.bool(cfg.add_bos_token === true);
  if (files.chatTemplate !== null) out["tokenizer.chat_template"] = v.string(files.chatTemplate);
  return out;
}

/**
 * The tokenizer files (tokenizer.json and tokenizer_config.json, parsed, the EOS ids, the chat
 * template) equivalent to the vocabulary of GGUF file `g` (see the module documentation).
 *
 * @throws {TokenizerError} naming the file and the key: no vocabulary, a SentencePiece one, or a
 *   pre-tokenizer Pregate does not rebuild.
 */
export function ggufTokenizerFiles(g: GgufFile): TokenizerFiles {
  const fail = (key: string, message: string, hint?: string): never => {
    throw new TokenizerError(g.path, `[key ${key}] ${message}`, hint);
  };
  if (!g.has("tokenizer.ggml.model")) {
    fail("tokenizer.ggml.model", "the file has no vocabulary", "pass token ids (--ids)");
  }
  const kind = g.string("tokenizer.ggml.model");
  if (kind === "llama") return spmTokenizerFiles(g);
  if (kind !== "gpt2") {
    fail(
      "tokenizer.ggml.model",
      kind === "no_vocab" || kind === "none"
        ? "the file has no vocabulary"
        : `${
          JSON.stringify(kind)
        } vocabularies are not read (Pregate reads gpt2: byte-level BPE, and llama: SentencePiece)`,
      "pass token ids (--ids)",
    );
  }
  const preName = g.string("tokenizer.ggml.pre", "default");
  const pre = GGUF_PRE_TOKENIZERS[preName];
  if (!pre) {
    fail(
      "tokenizer.ggml.pre",
      `pre-tokenizer ${JSON.stringify(preName)} is not supported`,
      `Pregate rebuilds ${Object.keys(GGUF_PRE_TOKENIZERS).join(", ")}`,
    );
  }
  const tokens = g.strings("tokenizer.ggml.tokens");
  const types = g.has("tokenizer.ggml.token_type")
    ? g.numbers("tokenizer.ggml.token_type")
    : tokens.map(() => TOKEN_TYPE.normal);
  if (types.length !== tokens.length) {
    fail("tokenizer.ggml.token_type", `expected ${tokens.length} items, found ${types.length}`);
  }
  const vocab: Record<string, number> = {};
  const added: Json[] = [];
  tokens.forEach((text, id) => {
    const type = types[id];
    if (type === TOKEN_TYPE.control || type === TOKEN_TYPE.userDefined) {
      added.push({
        id,
        content: text,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: type === TOKEN_TYPE.userDefined,
        special: type === TOKEN_TYPE.control,
      });
    }
    if (type !== TOKEN_TYPE.unused && !(text in vocab)) vocab[text] = id;
  });
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true };
  const special = (key: string) => {
    const id = g.has(key) ? g.uint(key) : undefined;
    return id !== undefined && id < tokens.length ? tokens[id] : null;
  };
  const bos = special("tokenizer.ggml.bos_token_id");
  const addBos = g.bool("tokenizer.ggml.add_bos_token", false) && bos !== null;
  const tokenizerJson: Json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: pre.nfc ? { type: "NFC" } : null,
    pre_tokenizer: pre.regex === null ? { ...byteLevel, use_regex: true } : {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: pre.regex }, behavior: "Isolated", invert: false },
        { ...byteLevel, use_regex: false },
      ],
    },
    post_processor: addBos
      ? {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { [bos]: { id: bos, ids: [tokens.indexOf(bos)], tokens: [bos] } },
      }
      : { ...byteLevel, add_prefix_space: true, use_regex: true },
    decoder: { ...byteLevel, add_prefix_space: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre.ignoreMerges,
      vocab,
      merges: g.has("tokenizer.ggml.merges") ? [...g.strings("tokenizer.ggml.merges")] : [],
    },
  };
  const eos = g.has("tokenizer.ggml.eos_token_id") ? g.uint("tokenizer.ggml.eos_token_id") : null;
  const eot = g.has("tokenizer.ggml.eot_token_id") ? g.uint("tokenizer.ggml.eot_token_id") : null;
  return {
    dir: g.path,
    tokenizerJson,
    tokenizerConfig: {
      add_bos_token: addBos,
      bos_token: bos,
      eos_token: special("tokenizer.ggml.eos_token_id"),
      pad_token: special("tokenizer.ggml.padding_token_id"),
    },
    modelEosIds: [eos, eot].filter((x): x is number => x !== null),
    chatTemplate: g.has("tokenizer.chat_template") ? g.string("tokenizer.chat_template") : null,
  };
}
