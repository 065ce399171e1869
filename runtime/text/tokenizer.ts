/**
 * Hugging Face tokenizers from a model directory: `tokenizer.json` (the pipeline: normaliser,
 * pre-tokenizer, BPE / Unigram model, post-processor, decoder), `tokenizer_config.json` (special
 * tokens, chat template), and the EOS ids of `config.json` / `generation_config.json`.
 *
 * Encoding and decoding run in `@huggingface/tokenizers` (pure JS). Ids equal those of HF's Rust
 * `tokenizers` for byte-level BPE (Qwen, OLMoE), SentencePiece-style BPE with byte fallback
 * (Mixtral, Llama) and Unigram (T5/Switch) on the fixtures in tests/fixtures/tokenizers. Decoding
 * equals the Rust library's as well (ids outside the vocabulary dropped,
 * `clean_up_tokenization_spaces` never applied) but for byte-fallback runs that are not valid UTF-8:
 * they get one U+FFFD per maximal invalid subsequence, as byte-level BPE does in both libraries,
 * where Rust's ByteFallback gives one per byte. This keeps decoding prefix-stable, which streaming
 * relies on (detokenize.ts).
 *
 * @example
 * ```ts ignore
 * import { loadTokenizer } from "./tokenizer.ts";
 * const tok = await loadTokenizer("models/my-model");
 * const ids = tok.encode("Hello world");
 * console.log(ids, tok.decode(ids), tok.eosIds);
 * ```
 * @module
 */
import {
  ByteFallbackDecoder,
  type Decoder,
  SequenceDecoder,
  Tokenizer as HfTokenizer,
} from "npm:@huggingface/tokenizers@0.2.0";
import { TokenizerError } from "../base/errors.ts";
import { isGgufFile, openGguf } from "../weights/gguf.ts";
import { ggufTokenizerFiles } from "./gguf_vocab.ts";

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Add the special tokens the tokenizer's post-processor adds (Llama's `<s>`, T5's `</s>`);
   * default false.
   */
  addSpecialTokens?: boolean;
}

/** Options of {@linkcode Tokenizer.decode}. */
export interface DecodeOptions {
  /** Leave out special tokens (`<s>`, `<|im_end|>`, ...); default false. */
  skipSpecialTokens?: boolean;
}

/** The special-token strings of tokenizer_config.json that chat templates use. */
export interface SpecialTokens {
  bos_token?: string;
  eos_token?: string;
  unk_token?: string;
  pad_token?: string;
}

/** What a model directory holds about its tokenizer, parsed (see {@linkcode loadTokenizer}). */
export interface TokenizerFiles {
  /** The model directory. */
  dir: string;
  /** tokenizer.json, parsed. */
  tokenizerJson: Record<string, unknown>;
  /** tokenizer_config.json, parsed (empty when the file is absent). */
  tokenizerConfig: Record<string, unknown>;
  /** EOS ids named by config.json and generation_config.json. */
  modelEosIds: number[];
  /** The chat template: tokenizer_config.json's `chat_template` or chat_template.jinja. */
  chatTemplate: string | null;
}

/**
 * A loaded tokenizer. Ids are those of Hugging Face `tokenizers` for the same tokenizer.json.
 *
 * @example
 * ```ts ignore
 * const tok = await loadTokenizer("models/tiny");
 * tok.encode("Hi", { addSpecialTokens: true }); // [1, 345] with a Llama-style tokenizer
 * ```
 */
export class Tokenizer {
  /** The model directory it was loaded from. */
  readonly dir: string;
  /** One more than the largest id (added tokens included). */
  readonly vocabSize: number;
  /** The BOS id, or null when the tokenizer has none. */
  readonly bosId: number | null;
  /** Ids that end a generation: tokenizer_config's eos_token and config/generation_config's. */
  readonly eosIds: readonly number[];
  /** The chat template (Jinja), or null. */
  readonly chatTemplate: string | null;
  /** bos/eos/unk/pad token strings, for chat templates. */
  readonly specialTokens: Readonly<SpecialTokens>;

  #hf: HfTokenizer;
  #special: Set<number>;

  /** Builds a tokenizer from parsed files; {@linkcode loadTokenizer} reads them. */
  constructor(files: TokenizerFiles) {
    const file = files.dir.endsWith(".gguf") ? files.dir : `${files.dir}/tokenizer.json`;
    try {
      this.#hf = new HfTokenizer(files.tokenizerJson, files.tokenizerConfig);
    } catch (e) {
      throw new TokenizerError(
        file,
        `cannot be used: ${(e as Error).message}`,
        "Pregate reads tokenizer.json files written by Hugging Face tokenizers (BPE, Unigram, " +
          "WordPiece models)",
        { cause: e },
      );
    }
    keepByteOrderMarks(this.#hf.decoder);
    this.dir = files.dir;
    let max = -1;
    for (const id of this.#hf.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
    this.#special = new Set(
      [...this.#hf.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.id),
    );
    const cfg = files.tokenizerConfig;
    const special: SpecialTokens = {};
    for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"] as const) {
      const s = tokenString(cfg[key]);
      if (s !== null) special[key] = s;
    }
    this.specialTokens = special;
    this.bosId = special.bos_token === undefined
      ? null
      : this.#idOf(special.bos_token, "bos_token", files.dir);
    const eos = special.eos_token === undefined
      ? []
      : [this.#idOf(special.eos_token, "eos_token", files.dir)];
    this.eosIds = [...new Set([...eos, ...files.modelEosIds])];
    this.chatTemplate = files.chatTemplate;
  }

  #idOf(token: string, key: string, dir: string): number {
    const id = this.#hf.token_to_id(token);
    if (id === undefined) {
      throw new TokenizerError(
        `${dir}/tokenizer_config.json`,
        `${key} '${token}' is not in the vocabulary of tokenizer.json`,
        "tokenizer.json and tokenizer_config.json must come from the same tokenizer",
      );
    }
    return id;
  }

  /** Token ids of `text`. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    return this.#hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
  }

  /** The text of `ids`; ids outside the vocabulary are dropped, as HF `tokenizers` does. */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const kept = ids.filter((id) =>
      this.#hf.id_to_token(id) !== undefined && !(opts.skipSpecialTokens && this.#special.has(id))
    );
    if (kept.length === 0) return "";
    return this.#hf.decode(kept, {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: false,
    });
  }

  /** The token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  /** The id of a token string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  /** Whether `id` is a special added token (`<s>`, `<|im_end|>`, ...). */
  isSpecial(id: number): boolean {
    return this.#special.has(id);
  }
}

/**
 * Loads the tokenizer of a model directory: tokenizer.json (required), tokenizer_config.json,
 * chat_template.jinja, and the `eos_token_id` of config.json and generation_config.json; or of a
 * GGUF file: its vocabulary (`tokenizer.ggml.*`, rebuilt by `gguf_vocab.ts`).
 *
 * @example
 * ```ts ignore
 * const tok = await loadTokenizer("models/qwen-tiny");
 * console.log(tok.vocabSize, tok.eosIds, tok.chatTemplate !== null);
 * ```
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  if (isGgufFile(dir)) {
    const g = openGguf(dir);
    try {
      return new Tokenizer(ggufTokenizerFiles(g));
    } finally {
      g.close();
    }
  }
  return new Tokenizer(await readTokenizerFiles(dir));
}

/** Reads and parses the tokenizer files of a model directory (see {@linkcode loadTokenizer}). */
export async function readTokenizerFiles(dir: string): Promise<TokenizerFiles> {
  const tokenizerJson = await readJson(`${dir}/tokenizer.json`);
  if (tokenizerJson === null) {
    const spm = await exists(`${dir}/tokenizer.model`);
    throw new TokenizerError(
      `${dir}/tokenizer.json`,
      "not found: the model directory has no tokenizer",
      spm
        ? "only a SentencePiece tokenizer.model is there; write tokenizer.json with transformers: " +
          "AutoTokenizer.from_pretrained(dir).save_pretrained(dir)"
        : "copy tokenizer.json (and tokenizer_config.json) from the model's repository, or pass " +
          "token ids with --ids",
    );
  }
  const tokenizerConfig = await readJson(`${dir}/tokenizer_config.json`) ?? {};
  const modelEosIds = [
    ...eosIdsOf(await readJson(`${dir}/config.json`), `${dir}/config.json`),
    ...eosIdsOf(await readJson(`${dir}/generation_config.json`), `${dir}/generation_config.json`),
  ];
  return {
    dir,
    tokenizerJson,
    tokenizerConfig,
    modelEosIds,
    chatTemplate: chatTemplateOf(tokenizerConfig, `${dir}/tokenizer_config.json`) ??
      await readText(`${dir}/chat_template.jinja`),
  };
}

/** A JSON object file, or null when the file does not exist. */
async function readJson(file: string): Promise<Record<string, unknown> | null> {
  const text = await readText(file);
  if (text === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(file, `is not valid JSON: ${(e as Error).message}`, undefined, {
      cause: e,
    });
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new TokenizerError(file, "expected a JSON object at the top level");
  }
  return value as Record<string, unknown>;
}

async function readText(file: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new TokenizerError(file, `cannot be read: ${(e as Error).message}`, undefined, {
      cause: e,
    });
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await Deno.stat(file);
    return true;
  } catch {
    return false;
  }
}

/** `eos_token_id` of a config: an id, a list of ids, or absent/null. */
function eosIdsOf(cfg: Record<string, unknown> | null, file: string): number[] {
  const v = cfg?.eos_token_id;
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (!Number.isInteger(id) || id < 0) {
      throw new TokenizerError(
        file,
        `eos_token_id: expected a token id or a list of them, got ${JSON.stringify(v)}`,
      );
    }
  }
  return list as number[];
}

/** A special token as tokenizer_config.json writes it: a string or `{"content": ...}`. */
function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return null;
}

/** `chat_template`: a string, or a list of `{name, template}` of which `default` is used. */
function chatTemplateOf(cfg: Record<string, unknown>, file: string): string | null {
  const v = cfg.chat_template;
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => t && typeof t === "object" && t.name === "default") ?? v[0];
    if (named && typeof named.template === "string") return named.template;
  }
  throw new TokenizerError(
    file,
    "chat_template: expected a string or a list of {name, template}",
  );
}

/**
 * Makes ByteFallback decoders (also inside a Sequence) keep a leading U+FEFF as HF's Rust one does
 * (the JS one's TextDecoder drops it).
 */
function keepByteOrderMarks(decoder: Decoder | null): void {
  if (decoder instanceof ByteFallbackDecoder) {
    decoder.text_decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  }
  if (decoder instanceof SequenceDecoder) decoder.decoders.forEach(keepByteOrderMarks);
}
