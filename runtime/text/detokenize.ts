/**
 * Streaming detokenization: text pieces from token ids arriving one at a time, each piece printed
 * only once it is final. A character whose UTF-8 bytes are split over several tokens (byte-level
 * BPE pieces, `<0xE2>` byte-fallback tokens) comes out whole, with the token that completes it;
 * spaces that depend on the neighbouring tokens (Metaspace, the Strip decoder) come out as in the
 * decoding of the whole sequence.
 *
 * The algorithm is HF `tokenizers`' `DecodeStream` (`step_decode_stream`): decode a short window
 * of ids, and emit what extends the previous window's text once it does not end in U+FFFD (an
 * incomplete character). Unlike it, a stream can be seeded with the prompt's last ids (so the
 * first generated word gets its leading space right), and {@linkcode DecodeStream.flush} emits
 * what is left at the end (an incomplete character as U+FFFD), so the pieces always add up to the
 * decoding of all the ids.
 *
 * @example
 * ```ts ignore
 * import { DecodeStream } from "./detokenize.ts";
 * const stream = new DecodeStream(tokenizer);
 * for (const id of ids) {
 *   const piece = stream.step(id);
 *   if (piece !== null) await write(piece);
 * }
 * await write(stream.flush());
 * ```
 * @module
 */
import type { DecodeOptions, Tokenizer } from "./tokenizer.ts";

/** Options of {@linkcode DecodeStream}. */
export interface DecodeStreamOptions extends DecodeOptions {
  /** Ids that come before the stream's (the prompt); their text is context, never emitted. */
  context?: readonly number[];
}

/** How many ids of the context seed a stream: enough for any decoder's look-behind. */
const CONTEXT_IDS = 8;

/** Turns token ids into text pieces as they arrive (see the module doc). */
export class DecodeStream {
  #tok: Tokenizer;
  #opts: DecodeOptions;
  /** The window: the ids of the last piece emitted (the prefix), then ids not emitted yet. */
  #ids: number[];
  /** The text of the window's first `#prefixIndex` ids. */
  #prefix = "";
  #prefixIndex = 0;

  /** A stream over `tokenizer`, optionally seeded with context ids. */
  constructor(tokenizer: Tokenizer, opts: DecodeStreamOptions = {}) {
    this.#tok = tokenizer;
    this.#opts = { skipSpecialTokens: opts.skipSpecialTokens };
    this.#ids = (opts.context ?? []).slice(-CONTEXT_IDS);
    if (this.#ids.length) {
      this.#prefix = this.#decode(this.#ids);
      this.#prefixIndex = this.#ids.length;
    }
  }

  #decode(ids: readonly number[]): string {
    return this.#tok.decode(ids, this.#opts);
  }

  /** Adds one id; returns the text it completes, or null when it completes none yet. */
  step(id: number): string | null {
    if (this.#prefix === "" && this.#ids.length) {
      const prefix = this.#decode(this.#ids);
      if (!prefix.endsWith("\uFFFD")) {
        this.#prefix = prefix;
        this.#prefixIndex = this.#ids.length;
      }
    }
    this.#ids.push(id);
    const text = this.#decode(this.#ids);
    if (text.length <= this.#prefix.length || text.endsWith("\uFFFD")) return null;
    const piece = text.slice(commonPrefixLength(text, this.#prefix));
    const kept = this.#ids.length - this.#prefixIndex;
    this.#ids = this.#ids.slice(this.#prefixIndex);
    this.#prefix = this.#decode(this.#ids);
    this.#prefixIndex = kept;
    return piece;
  }

  /** The text not emitted yet (an incomplete character at the end comes out as U+FFFD). */
  flush(): string {
    const text = this.#decode(this.#ids);
    const piece = text.length > this.#prefix.length
      ? text.slice(commonPrefixLength(text, this.#prefix))
      : "";
    this.#ids = this.#ids.slice(this.#prefixIndex);
    this.#prefix = this.#decode(this.#ids);
    this.#prefixIndex = this.#ids.length;
    return piece;
  }
}

/**
 * Length of the common prefix of `a` and `b` in UTF-16 units, never inside a surrogate pair. It is
 * `b.length` when `b` is a prefix of `a`, the case HF's DecodeStream requires; otherwise (a
 * context that ended in an incomplete character the next token completed) the differing tail is
 * emitted.
 */
function commonPrefixLength(a: string, b: string): number {
  if (a.startsWith(b)) return b.length;
  let n = 0;
  while (n < a.length && n < b.length && a.charCodeAt(n) === b.charCodeAt(n)) n++;
  if (n > 0 && n < a.length && isHighSurrogate(a.charCodeAt(n - 1))) n--;
  return n;
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}
