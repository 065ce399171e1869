/**
 * The tokenizer files of a model directory, read and checked: `tokenizer.json` (required),
 * `tokenizer_config.json`, `chat_template.jinja`, and the `eos_token_id` of `config.json` and
 * `generation_config.json`. `tokenizer.ts` builds a tokenizer from them; `gguf_vocab.ts` converts
 * them to and from a GGUF file's vocabulary.
 *
 * @example
 * ```ts
 * import { readTokenizerFiles } from "./tokenizer_files.ts";
 * const files = await readTokenizerFiles("tests/fixtures/tokenizers/qwen2");
 * console.log(typeof files.tokenizerJson.model); // object
 * ```
 * @module
 */
import { TokenizerError } from "../base/errors.ts";

/** What a model directory holds about its tokenizer, parsed (`tokenizer.ts` builds on it). */
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

/** Reads and parses the tokenizer files of a model directory (`loadTokenizer` in `tokenizer.ts`). */
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
