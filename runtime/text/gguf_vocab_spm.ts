/**
 * SentencePiece-style vocabularies in GGUF files (`tokenizer.ggml.model` `llama`: Llama 2, Mistral,
 * Mixtral), both ways; `gguf_vocab.ts` dispatches here.
 *
 * Written ({@linkcode spmVocabMetadata}) from a tokenizer.json that is a BPE model with byte fallback
 * and the "▁" pipeline (a Prepend("▁") + Replace(" ", "▁") normaliser, or a Metaspace
 * pre-tokenizer) and the Replace / ByteFallback / Fuse / Strip decoder: every id with its piece,
 * score and llama.cpp token type (`<0xNN>` byte, special added tokens control, the unknown token
 * unknown, other added tokens user-defined, ids no token has `[PAD<id>]` unused), the special ids,
 * `add_bos_token` / `add_eos_token`, `add_space_prefix`, the chat template, and the merges.
 *
 * Scores: llama.cpp's SentencePiece tokenizer merges, among adjacent pieces whose concatenation is
 * in the vocabulary, the one whose concatenation scores highest (leftmost on ties). A piece the
 * merge of rank r makes gets score -r, so that order is HF's merge order; other normal pieces
 * (single characters, pieces no merge makes) score below every merged piece. (llama.cpp's
 * convert_hf_to_gguf.py gives every piece -1000 when it converts a tokenizer.json without
 * tokenizer.model, which makes its tokenizer merge leftmost-first; Pregate does not copy that.)
 *
 * Read ({@linkcode spmTokenizerFiles}) into the tokenizer.json HF's converter builds for such a
 * vocabulary: BPE with byte fallback and the unknown token, merges from `tokenizer.ggml.merges` or,
 * when the file has none (as llama.cpp's own files), from the vocabulary and scores as
 * transformers' SentencePiece converter derives them (every split of a piece into two vocabulary
 * pieces, ranked by the piece's score), the legacy "▁" normaliser (llama.cpp prepends "▁" to every
 * text and to text after a special token, as that normaliser does), the llama decoder, and BOS
 * added when `add_bos_token` says so (llama.cpp's default for these: yes).
 *
 * @example
 * ```ts ignore
 * import { readTokenizerFiles } from "./tokenizer_files.ts";
 * import { spmVocabMetadata } from "./gguf_vocab_spm.ts";
 * const meta = spmVocabMetadata(await readTokenizerFiles("tests/fixtures/tokenizers/mixtral"));
 * console.log(meta["tokenizer.ggml.model"].value); // "llama"
 * ```
 * @module
 */
import { TokenizerError } from "../base/errors.ts";
import type { GgufFile } from "../weights/gguf.ts";
import { ggufValue as v, type GgufValueToWrite } from "../weights/gguf_writer.ts";
import type { TokenizerFiles } from "./tokenizer_files.ts";

/** llama.cpp's token types (`llama_token_type`). */
export const GGUF_TOKEN_TYPE = Object.freeze({
  normal: 1,
  unknown: 2,
  control: 3,
  userDefined: 4,
  unused: 5,
  byte: 6,
});
const T = GGUF_TOKEN_TYPE;

type Json = Record<string, unknown>;

function obj(x: unknown): Json | null {
  return x && typeof x === "object" && !Array.isArray(x) ? x as Json : null;
}

const SPACE = "▁";
const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

/** Whether normaliser `n` is Replace(" ", "▁"). */
function isSpaceReplace(n: Json | null): boolean {
  return n?.type === "Replace" && obj(n.pattern)?.String === " " && n.content === SPACE;
}

/**
 * Whether a tokenizer.json's BPE model is SentencePiece-style (byte fallback): such a tokenizer
 * goes to {@linkcode spmVocabMetadata}.
 */
export function isSpmTokenizer(tj: Json): boolean {
  const model = obj(tj.model);
  return model?.type === "BPE" && model.byte_fallback === true;
}

/** Whether the tokenizer prepends "▁" (llama.cpp's `add_space_prefix`), or null: not the "▁" form. */
function spacePrefix(tj: Json): boolean | null {
  const norm = obj(tj.normalizer), pre = obj(tj.pre_tokenizer);
  let prefix: boolean | null = null;
  if (pre === null && norm?.type === "Sequence" && Array.isArray(norm.normalizers)) {
    const ns = norm.normalizers.map(obj);
    if (ns.length === 2 && ns[0]?.type === "Prepend" && ns[0].prepend === SPACE) {
      prefix = isSpaceReplace(ns[1]) ? true : null;
    } else if (ns.length === 1 && isSpaceReplace(ns[0])) prefix = false;
  } else if (pre === null && isSpaceReplace(norm)) {
    prefix = false;
  } else if (norm === null && pre?.type === "Metaspace" && pre.replacement === SPACE) {
    prefix = pre.split === false ? pre.prepend_scheme !== "never" : null;
  }
  const decoders = obj(tj.decoder)?.decoders;
  const steps = Array.isArray(decoders) ? decoders.map(obj) : [];
  const strip = steps[3];
  const ok = obj(tj.decoder)?.type === "Sequence" && steps[0]?.type === "Replace" &&
    obj(steps[0].pattern)?.String === SPACE && steps[0].content === " " &&
    steps[1]?.type === "ByteFallback" && steps[2]?.type === "Fuse" &&
    (prefix
      ? steps.length === 4 && strip?.type === "Strip" && strip.content === " " &&
        strip.start === 1 && strip.stop === 0
      : steps.length === 3);
  return ok ? prefix : null;
}

/** The string of a tokenizer_config.json special token (a string or `{content}`), or null. */
function tokenString(x: unknown): string | null {
  const s = typeof x === "string" ? x : obj(x)?.content;
  return typeof s === "string" ? s : null;
}

/** Whether BOS (`which` 0) or EOS (`which` -1) is added: tokenizer_config.json, else the template. */
function addsSpecial(files: TokenizerFiles, key: string, which: 0 | -1, token: string | null) {
  const flag = files.tokenizerConfig[key];
  if (typeof flag === "boolean") return flag;
  const pp = obj(files.tokenizerJson.post_processor);
  const single = pp?.type === "TemplateProcessing" && Array.isArray(pp.single) ? pp.single : [];
  const item = obj(obj(single.at(which))?.SpecialToken);
  return single.length > 1 && token !== null && item?.id === token;
}

/**
 * The `tokenizer.*` metadata of a SentencePiece-style BPE tokenizer (see the module
 * documentation).
 *
 * @throws {TokenizerError} naming tokenizer.json when its pipeline is not the "▁" form llama.cpp
 *   reproduces, or a merge holds a space.
 */
export function spmVocabMetadata(files: TokenizerFiles): Record<string, GgufValueToWrite> {
  const tj = files.tokenizerJson, file = `${files.dir}/tokenizer.json`;
  const prefix = spacePrefix(tj);
  if (prefix === null) {
    throw new TokenizerError(
      file,
      "its normaliser, pre-tokenizer and decoder are not the SentencePiece form llama.cpp " +
        "reproduces",
      'Pregate writes byte-fallback BPE tokenizers with Prepend/Replace("▁") normalisers or a ' +
        "Metaspace pre-tokenizer (split false) and the Replace/ByteFallback/Fuse/Strip decoder",
    );
  }
  const model = obj(tj.model)!;
  const merges = (Array.isArray(model.merges) ? model.merges : []).map((m): [string, string] =>
    Array.isArray(m) ? [String(m[0]), String(m[1])] : String(m).split(" ", 2) as [string, string]
  );
  if (merges.some(([l, r]) => `${l}${r}`.includes(" "))) {
    throw new TokenizerError(
      file,
      "a merge holds a space",
      "SentencePiece pieces use ▁ for spaces",
    );
  }
  const cfg = files.tokenizerConfig;
  const unk = tokenString(cfg.unk_token) ?? tokenString(model.unk_token);
  const byId = new Map<number, { text: string; type: number }>();
  for (const [text, id] of Object.entries(obj(model.vocab) ?? {})) {
    byId.set(id as number, { text, type: BYTE_PIECE.test(text) ? T.byte : T.normal });
  }
  for (const a of Array.isArray(tj.added_tokens) ? tj.added_tokens.map(obj) : []) {
    if (!a || typeof a.id !== "number" || typeof a.content !== "string") continue;
    const type = a.content === unk ? T.unknown : a.special ? T.control : T.userDefined;
    byId.set(a.id, { text: a.content, type });
  }
  const rank = new Map<string, number>();
  merges.forEach(([l, r], i) => rank.has(l + r) || rank.set(l + r, i));
  const n = Math.max(...byId.keys()) + 1;
  const tokens: string[] = [], types = new Int32Array(n), scores = new Float32Array(n);
  for (let id = 0; id < n; id++) {
    const t = byId.get(id) ?? { text: `[PAD${id}]`, type: T.unused };
    tokens.push(t.text);
    types[id] = t.type;
    scores[id] = t.type === T.normal
      ? 0 - (rank.get(t.text) ?? merges.length + id)
      : t.type === T.userDefined || t.type === T.unused
      ? -1000
      : 0;
  }
  const idOf = (s: string | null) => {
    const id = s === null ? -1 : tokens.indexOf(s);
    return id >= 0 ? id : undefined;
  };
  const bos = tokenString(cfg.bos_token), eos = tokenString(cfg.eos_token);
  const out: Record<string, GgufValueToWrite> = {
    "tokenizer.ggml.model": v.string("llama"),
    "tokenizer.ggml.pre": v.string("default"),
    "tokenizer.ggml.tokens": v.strings(tokens),
    "tokenizer.ggml.scores": v.array("f32", scores),
    "tokenizer.ggml.token_type": v.array("i32", types),
    "tokenizer.ggml.merges": v.strings(merges.map(([l, r]) => `${l} ${r}`)),
  };
  const ids: [string, number | undefined][] = [
    ["bos_token_id", idOf(bos)],
    ["eos_token_id", idOf(eos) ?? files.modelEosIds[0]],
    ["unknown_token_id", idOf(unk)],
    ["padding_token_id", idOf(tokenString(cfg.pad_token))],
  ];
  for (const [key, id] of ids) if (id !== undefined) out[`tokenizer.ggml.${key}`] = v.u32(id);
  out["tokenizer.ggml.add_bos_token"] = v.bool(addsSpecial(files, "add_bos_token", 0, bos));
  out["tokenizer.ggml.add_eos_token"] = v.bool(addsSpecial(files, "add_eos_token", -1, eos));
  out["tokenizer.ggml.add_space_prefix"] = v.bool(prefix);
  if (files.chatTemplate !== null) out["tokenizer.chat_template"] = v.string(files.chatTemplate);
  return out;
}

/**
 * Merges from pieces and scores as transformers' SentencePiece converter derives them: every split
 * of a piece into two pieces of the vocabulary (by the pieces' ids), all ordered by the piece's
 * score, highest first, then by the longer left part, then the longer right part.
 */
export function mergesFromScores(
  pieces: ReadonlyMap<string, number>,
  scores: readonly number[],
): [string, string][] {
  const found: { l: string; r: string; score: number; nl: number; nr: number }[] = [];
  for (const [piece, id] of pieces) {
    const chars = Array.from(piece);
    const local: typeof found = [];
    for (let i = 1; i < chars.length; i++) {
      const l = chars.slice(0, i).join(""), r = chars.slice(i).join("");
      if (pieces.has(l) && pieces.has(r)) {
        local.push({ l, r, score: scores[id], nl: i, nr: chars.length - i });
      }
    }
    local.sort((a, b) =>
      pieces.get(a.l)! - pieces.get(b.l)! || pieces.get(a.r)! - pieces.get(b.r)!
    );
    found.push(...local);
  }
  found.sort((a, b) => b.score - a.score || b.nl - a.nl || b.nr - a.nr);
  return found.map((m) => [m.l, m.r]);
}

/**
 * The tokenizer files equivalent to the `llama` vocabulary of GGUF file `g` (see the module
 * documentation).
 *
 * @throws {TokenizerError} naming the file and the key: no tokens, neither scores nor merges, or
 *   an array whose length is not the number of tokens.
 */
export function spmTokenizerFiles(g: GgufFile): TokenizerFiles {
  const fail = (key: string, message: string, hint?: string): never => {
    throw new TokenizerError(g.path, `[key ${key}] ${message}`, hint);
  };
  const need = "a SentencePiece (llama) vocabulary needs";
  if (!g.has("tokenizer.ggml.tokens")) fail("tokenizer.ggml.tokens", `missing: ${need} its pieces`);
  const tokens = g.strings("tokenizer.ggml.tokens");
  const hasMerges = g.has("tokenizer.ggml.merges");
  if (!g.has("tokenizer.ggml.scores") && !hasMerges) {
    fail("tokenizer.ggml.scores", `missing: ${need} scores (or tokenizer.ggml.merges)`);
  }
  const arrayOf = (key: string, fallback: number) => {
    const a = g.has(key) ? g.numbers(key) : tokens.map(() => fallback);
    if (a.length !== tokens.length) {
      fail(key, `expected ${tokens.length} items (one per token), found ${a.length}`);
    }
    return a;
  };
  const types = arrayOf("tokenizer.ggml.token_type", T.normal);
  const scores = arrayOf("tokenizer.ggml.scores", 0);
  const vocab: Record<string, number> = {};
  const normal = new Map<string, number>();
  const added: Json[] = [];
  tokens.forEach((text, id) => {
    const type = types[id];
    if (type === T.unused) return;
    if (!(text in vocab)) vocab[text] = id;
    if (type === T.normal && !normal.has(text)) normal.set(text, id);
    if (type === T.control || type === T.unknown || type === T.userDefined) {
      const special = type !== T.userDefined;
      added.push({ id, content: text, single_word: false, lstrip: false, rstrip: false });
      Object.assign(added.at(-1)!, { normalized: false, special });
    }
  });
  const tokenOf = (key: string, fallback?: number) => {
    const id = g.has(key) ? g.uint(key) : fallback;
    return id !== undefined && id < tokens.length ? tokens[id] : null;
  };
  const bos = tokenOf("tokenizer.ggml.bos_token_id");
  const eos = tokenOf("tokenizer.ggml.eos_token_id");
  const unk = tokenOf("tokenizer.ggml.unknown_token_id", 0);
  const addBos = g.bool("tokenizer.ggml.add_bos_token", true) && bos !== null;
  const addEos = g.bool("tokenizer.ggml.add_eos_token", false) && eos !== null;
  const prefix = g.bool("tokenizer.ggml.add_space_prefix", true);
  const merges = hasMerges
    ? [...g.strings("tokenizer.ggml.merges")]
    : mergesFromScores(normal, scores);
  const tokenizerJson: Json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: prefix
      ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: SPACE }, spaceReplace()] }
      : spaceReplace(),
    pre_tokenizer: null,
    post_processor: templateProcessing(tokens, addBos ? bos : null, addEos ? eos : null),
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: SPACE }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        ...(prefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const eot = g.has("tokenizer.ggml.eot_token_id") ? g.uint("tokenizer.ggml.eot_token_id") : null;
  return {
    dir: g.path,
    tokenizerJson,
    tokenizerConfig: {
      add_bos_token: addBos,
      add_eos_token: addEos,
      bos_token: bos,
      eos_token: eos,
      unk_token: unk,
      pad_token: tokenOf("tokenizer.ggml.padding_token_id"),
    },
    modelEosIds: [eos === null ? null : tokens.indexOf(eos), eot]
      .filter((x): x is number => x !== null && x >= 0),
    chatTemplate: g.has("tokenizer.chat_template") ? g.string("tokenizer.chat_template") : null,
  };
}

function spaceReplace(): Json {
  return { type: "Replace", pattern: { String: " " }, content: SPACE };
}

/** HF's post-processor adding `bos` before and `eos` after each sequence (none: a no-op one). */
function templateProcessing(tokens: readonly string[], bos: string | null, eos: string | null) {
  const seq = (id: "A" | "B", typeId: number) => {
    const s = (t: string | null) =>
      t === null ? [] : [{ SpecialToken: { id: t, type_id: typeId } }];
    return [...s(bos), { Sequence: { id, type_id: typeId } }, ...s(eos)];
  };
  const specials: Json = {};
  for (const t of [bos, eos]) {
    if (t !== null) specials[t] = { id: t, ids: [tokens.indexOf(t)], tokens: [t] };
  }
  return {
    type: "TemplateProcessing",
    single: seq("A", 0),
    pair: [...seq("A", 0), ...seq("B", 1)],
    special_tokens: specials,
  };
}
