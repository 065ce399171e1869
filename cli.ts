/**
 * The `pregate` command line: the command table and `main`. Run `deno task pregate help` for usage.
 * The commands live in `runtime/cli/` (`run_commands.ts`: those that run a model; `tool_commands.ts`:
 * those that do not; their shared flags in `flags.ts`), serve and convert beside their modules.
 *
 * Exit codes: 0 success, 1 runtime error (a typed Pregate error is printed without a stack),
 * 2 bad arguments (usage is printed).
 *
 * @example
 * ```sh
 * deno task pregate gpu-info --gpu native
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { ArgumentError, PregateError } from "./runtime/base/errors.ts";
import { presetNames } from "./runtime/models/make_model.ts";
import { SERVE_OPTIONS, SERVE_USAGE, serveCommand } from "./runtime/serve/serve_command.ts";
import {
  CONVERT_OPTIONS,
  CONVERT_SUMMARY,
  CONVERT_USAGE,
  convertCommand,
} from "./runtime/models/convert_command.ts";
import {
  type Command,
  IDS_HELP,
  MODE_USAGE,
  MODEL_OPTIONS,
  openModel,
} from "./runtime/cli/flags.ts";
import { EVAL, GENERATE, LOGITS, TRACE } from "./runtime/cli/run_commands.ts";
import { GPU_INFO, INSPECT, MAKE_MODEL, TOKENIZE } from "./runtime/cli/tool_commands.ts";

export { parseIds, parseSize } from "./runtime/cli/flags.ts";

const COMMANDS: Record<string, Command> = {
  logits: LOGITS,
  generate: GENERATE,
  tokenize: TOKENIZE,
  eval: EVAL,
  trace: TRACE,
  "make-model": MAKE_MODEL,
  inspect: INSPECT,
  serve: {
    usage: `serve --model DIR ${SERVE_USAGE} ${MODE_USAGE}`,
    summary: "answer the OpenAI API (POST /v1/chat/completions and /v1/completions, streamed or " +
      "not; GET /v1/models, /health, /metrics) with one model, one generation at a time",
    options: { ...MODEL_OPTIONS, ...SERVE_OPTIONS },
    run: (v) => serveCommand(v, () => openModel(v)),
  },
  convert: {
    usage: CONVERT_USAGE,
    summary: CONVERT_SUMMARY,
    options: CONVERT_OPTIONS,
    run: convertCommand,
  },
  "gpu-info": GPU_INFO,
};

function usage(): string {
  const lines = ["usage: pregate <command> [flags]", "", "commands:"];
  for (const c of Object.values(COMMANDS)) lines.push(`  ${c.usage}\n      ${c.summary}`);
  lines.push("", `--ids: ${IDS_HELP}.`);
  lines.push(`make-model presets: ${presetNames().join(", ")}`);
  return lines.join("\n");
}

/**
 * `--flag -1` as `--flag=-1` for string flags: parseArgs takes a value starting with `-` for an
 * option ("argument is ambiguous"); joined, the flag's own check says what is wrong with it.
 */
function joinNegativeValues(args: string[], options: Command["options"]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : "";
    const next = args[i + 1];
    if (options[name]?.type === "string" && next !== undefined && /^-\.?[0-9]/.test(next)) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else out.push(args[i]);
  }
  return out;
}

/** Runs the CLI on `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    console.log(usage());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`pregate: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: joinNegativeValues(rest, cmd.options),
      options: cmd.options,
      strict: true,
      allowPositionals: false,
    }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    console.error(`pregate ${name}: ${(e as Error).message}\nusage: pregate ${cmd.usage}`);
    return 2;
  }
  try {
    await cmd.run(values);
    return 0;
  } catch (e) {
    // The reader went away (`pregate generate ... | head`): stop quietly, as other tools do.
    if (e instanceof Deno.errors.BrokenPipe) return 0;
    if (e instanceof ArgumentError) {
      console.error(`pregate ${name}: ${e.message}\nusage: pregate ${cmd.usage}`);
      return 2;
    }
    if (e instanceof PregateError) {
      console.error(`pregate ${name}: ${e.name}: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
