/**
 * The commands that run a model on token ids or a prompt: `logits`, `generate`, `eval` and
 * `trace`. `cli.ts` lists them.
 *
 * @example
 * ```sh
 * deno task pregate generate --model tests/fixtures/hf/qwen3_moe --ids 5,77,301 --max-tokens 4
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import type { GenerateOptions } from "../model.ts";
import { formatTraceSummary, summarizeTrace } from "../experts/trace.ts";
import { traceToSvg } from "../experts/trace_svg.ts";
import { checkOutputFile, writeTextOutput } from "../output_files.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { generateText } from "../text/generate_text.ts";
import { renderChat } from "../text/chat.ts";
import { EVAL_CONTEXT, evaluatePerplexity } from "../eval.ts";
import {
  type Command,
  decoderStart,
  encoderIdsFlag,
  type Flags,
  intFlag,
  MODE_USAGE,
  MODEL_OPTIONS,
  openModel,
  parseIds,
  parseMode,
  readTextFile,
  requireModel,
} from "./flags.ts";

/** `logits`: full-vocabulary logits per input position, as JSON. */
export const LOGITS: Command = {
  usage: `logits --model DIR --ids 5,77,301 [--encoder-ids LIST] ${MODE_USAGE}`,
  summary: 'print {"logits": [[...], ...]}: full-vocabulary logits per input position ' +
    "(an encoder-decoder's decoder positions, after its encoder has read --encoder-ids)",
  options: { ...MODEL_OPTIONS, ids: { type: "string" }, "encoder-ids": { type: "string" } },
  async run(v) {
    const ids = parseIds(v.ids);
    const encoderIds = encoderIdsFlag(v);
    const model = await openModel({ ...v, json: true });
    try {
      const rows = await model.logits(ids, { encoderIds });
      console.log(JSON.stringify({ logits: rows.map((r) => Array.from(r)) }));
    } finally {
      await model.dispose();
    }
  },
};

/** `generate`: tokens after ids, or text after a prompt. */
export const GENERATE: Command = {
  usage: "generate --model DIR (--ids LIST | --prompt TEXT [--chat] | --encoder-ids LIST) " +
    "[--max-tokens N] " +
    `[--temperature T] [--top-p P] [--seed S] [--stats] [--json] ${MODE_USAGE}`,
  summary:
    "generate after a prompt (greedy unless --temperature > 0): --prompt streams text until " +
    "EOS, --chat applies the model's chat template; --ids prints token ids; an " +
    "encoder-decoder reads --encoder-ids and decodes from its decoder start token until EOS",
  options: {
    ...MODEL_OPTIONS,
    ids: { type: "string" },
    "encoder-ids": { type: "string" },
    prompt: { type: "string" },
    chat: { type: "boolean" },
    "max-tokens": { type: "string" },
    temperature: { type: "string" },
    "top-p": { type: "string" },
    seed: { type: "string" },
    stats: { type: "boolean" },
    json: { type: "boolean" },
  },
  async run(v) {
    const maxTokens = intFlag(v["max-tokens"], "--max-tokens", 1, 32);
    const temperature = v.temperature === undefined ? 0 : Number(v.temperature);
    if (!Number.isFinite(temperature) || temperature < 0) {
      throw new ArgumentError("--temperature", `expected a number >= 0, got '${v.temperature}'`);
    }
    const topP = v["top-p"] === undefined ? 1 : Number(v["top-p"]);
    if (!(topP > 0 && topP <= 1)) {
      throw new ArgumentError("--top-p", `expected a number in (0, 1], got '${v["top-p"]}'`);
    }
    const seed = intFlag(v.seed, "--seed", 0, 0);
    const sampling = { maxTokens, temperature, topP, seed };
    if (v.prompt !== undefined) return await generateFromPrompt(v, sampling);
    if (v.chat) throw new ArgumentError("--chat", "applies to --prompt");
    const encoderIds = encoderIdsFlag(v);
    const ids = encoderIds && v.ids === undefined ? undefined : parseIds(v.ids);
    const model = await openModel(v);
    try {
      const out: number[] = [];
      const start = decoderStart(model, ids, encoderIds);
      const gen = model.generate(start.ids, { ...sampling, encoderIds, stopIds: start.stopIds });
      for await (const id of gen) {
        out.push(id);
        if (!v.json) await Deno.stdout.write(new TextEncoder().encode(`${id} `));
      }
      if (v.json) {
        console.log(JSON.stringify({ ids: out, stats: model.lastStats }));
      } else {
        console.log();
        if (v.stats) console.error(JSON.stringify(model.lastStats, null, 2));
      }
    } finally {
      await model.dispose();
    }
  },
};

/** `generate --prompt`: text streamed to stdout as it is decoded, until EOS or --max-tokens. */
async function generateFromPrompt(
  v: Flags,
  sampling: GenerateOptions,
): Promise<void> {
  if (v.ids !== undefined) throw new ArgumentError("--prompt", "give --prompt or --ids, not both");
  const tokenizer = await loadTokenizer(requireModel(v.model));
  // A missing or failing chat template is reported before the model loads.
  if (v.chat) renderChat(tokenizer, [{ role: "user", content: String(v.prompt) }]);
  const model = await openModel(v);
  try {
    const gen = generateText(model, tokenizer, String(v.prompt), {
      ...sampling,
      chat: Boolean(v.chat),
    });
    const utf8 = new TextEncoder();
    for await (const piece of gen) if (!v.json) await Deno.stdout.write(utf8.encode(piece));
    if (v.json) {
      console.log(JSON.stringify({
        text: gen.text,
        ids: gen.ids,
        stop_reason: gen.stopReason,
        stats: gen.stats,
      }));
    } else {
      console.log();
      if (v.stats) console.error(JSON.stringify(gen.stats, null, 2));
    }
  } finally {
    await model.dispose();
  }
}

/** `eval`: perplexity over a text file. */
export const EVAL: Command = {
  usage: `eval --model DIR --text FILE [--context N] [--json] ${MODE_USAGE}`,
  summary: "perplexity over a text file: windows of --context tokens (default " +
    `${EVAL_CONTEXT}), each from an empty cache; with --mode pregated also the pre-gate hit rate`,
  options: { ...MODEL_OPTIONS, text: { type: "string" }, json: { type: "boolean" } },
  async run(v) {
    if (typeof v.text !== "string") throw new ArgumentError("--text", "is required: a text file");
    const context = intFlag(v.context, "--context", 2, EVAL_CONTEXT);
    const text = await readTextFile(v.text, "--text");
    const tokenizer = await loadTokenizer(requireModel(v.model));
    const model = await openModel({ ...v, context: String(context) });
    try {
      let shown = 0;
      const r = await evaluatePerplexity(model, tokenizer, text, {
        context,
        onWindow: v.json ? undefined : (done, total) => {
          if (done === total || done - shown >= Math.max(1, total / 10)) {
            shown = done;
            console.error(`eval: ${done}/${total} windows`);
          }
        },
      });
      console.log(
        v.json ? JSON.stringify(r) : Object.entries(r).map(([k, x]) => `${k}: ${x}`).join("\n"),
      );
    } finally {
      await model.dispose();
    }
  },
};

/** `trace`: generate with an offloading mode and draw the expert trace. */
export const TRACE: Command = {
  usage: "trace --model DIR (--ids LIST | --encoder-ids LIST) --out FILE.svg [--max-tokens N] " +
    "[--json FILE.json] " +
    "[--mode pregated|on-demand|prefetch-all] [--pregate exact|strict] [--budget SIZE] " +
    "[--expert-cache N|auto] [--gpu native|dawn|auto]",
  summary: "generate with an offloading mode and draw which experts were chosen, predicted, " +
    "cached and fetched per layer and token (SVG heat map + summary)",
  options: {
    ...MODEL_OPTIONS,
    ids: { type: "string" },
    "encoder-ids": { type: "string" },
    out: { type: "string" },
    json: { type: "string" },
    "max-tokens": { type: "string" },
  },
  async run(v) {
    const encoderIds = encoderIdsFlag(v);
    const ids = encoderIds && v.ids === undefined ? undefined : parseIds(v.ids);
    if (typeof v.out !== "string") throw new ArgumentError("--out", "is required: an .svg path");
    checkOutputFile(v.out, "--out");
    if (typeof v.json === "string") checkOutputFile(v.json, "--json");
    const maxTokens = intFlag(v["max-tokens"], "--max-tokens", 1, 32);
    const opts = { ...v, mode: v.mode ?? "pregated", json: undefined };
    if (parseMode(opts.mode) === "resident") {
      throw new ArgumentError(
        "--mode",
        "a trace needs an offloading mode (experts are not moved when resident)",
      );
    }
    const model = await openModel(opts, { trace: true });
    try {
      const start = decoderStart(model, ids, encoderIds);
      const gen = model.generate(start.ids, { maxTokens, encoderIds, stopIds: start.stopIds });
      for await (const _ of gen) { /* trace records as it goes */ }
      const trace = model.trace()!;
      await writeTextOutput(v.out, traceToSvg(trace));
      if (typeof v.json === "string") await writeTextOutput(v.json, JSON.stringify(trace));
      console.log(formatTraceSummary(summarizeTrace(trace)));
      console.log(`wrote ${v.out}${typeof v.json === "string" ? ` and ${v.json}` : ""}`);
    } finally {
      await model.dispose();
    }
  },
};
