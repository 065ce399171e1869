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
import { readTokenizerFiles, type TokenizerFiles } from "./tokenizer_files.ts";

export { readTokenizerFiles, type TokenizerFiles } from "./tokenizer_files.ts";

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

/** A special token as tokenizer_config.json writes it: a string or `{"content": ...}`. */
function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return null;
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
