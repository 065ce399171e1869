/**
 * `pregate serve`: loads one model and its tokenizer once, then answers the OpenAI API on
 * `Deno.serve` until SIGINT or SIGTERM (which let the answers in flight finish).
 *
 * @example
 * ```sh
 * deno task pregate serve --model models/demo --port 8080 --api-key secret
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import type { Model } from "../model.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { startServer } from "./server.ts";

/** The flags of `pregate serve` beyond the model's. */
export const SERVE_OPTIONS = {
  host: { type: "string" as const },
  port: { type: "string" as const },
  "api-key": { type: "string" as const },
  queue: { type: "string" as const },
  timeout: { type: "string" as const },
  "max-body": { type: "string" as const },
};

/** The usage of those flags. */
export const SERVE_USAGE = "[--host 127.0.0.1] [--port 8080] [--api-key KEY] [--queue N] " +
  "[--timeout SECONDS] [--max-body BYTES]";

function intFlag(v: unknown, flag: string, min: number, max: number, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== "string" || !/^[0-9]+$/.test(v.trim()) || n < min || n > max) {
    throw new ArgumentError(flag, `expected an integer in [${min}, ${max}], got '${v}'`);
  }
  return n;
}

/** The model id clients name: the model directory's last path component. */
export function modelIdOf(dir: string): string {
  const parts = dir.replace(/[\\/]+$/, "").split(/[\\/]/);
  return parts.at(-1) || "model";
}

/**
 * Runs `pregate serve` with parsed flags; `openModel` loads the model with the model flags
 * (mode, budget, GPU, ...). Resolves when the server has stopped.
 */
export async function serveCommand(
  v: Record<string, string | boolean | undefined>,
  openModel: () => Promise<Model>,
): Promise<void> {
  if (typeof v.model !== "string" || !v.model) {
    throw new ArgumentError(
      "--model",
      "is required: a directory with config.json, *.safetensors " +
        "and tokenizer.json",
    );
  }
  const port = intFlag(v.port, "--port", 0, 65535, 8080);
  const queue = intFlag(v.queue, "--queue", 0, 1 << 20, 16);
  const timeoutSeconds = intFlag(v.timeout, "--timeout", 1, 86400 * 7, 600);
  const maxBodyBytes = intFlag(v["max-body"], "--max-body", 1024, 2 ** 31, 1 << 20);
  const hostname = v.host === undefined ? "127.0.0.1" : String(v.host);
  if (!hostname) {
    throw new ArgumentError("--host", "expected an address, e.g. 127.0.0.1 or 0.0.0.0");
  }
  const apiKey = v["api-key"] === undefined ? undefined : String(v["api-key"]);
  if (apiKey !== undefined && !apiKey) throw new ArgumentError("--api-key", "is empty");
  const t0 = performance.now();
  console.error(`pregate serve: loading ${v.model}`);
  const tokenizer = await loadTokenizer(v.model);
  const model = await openModel();
  const modelId = modelIdOf(v.model);
  console.error(
    `pregate serve: loaded '${modelId}' (${model.mode}, context ${model.contextLength}, ` +
      `${model.gpu.describe()}) in ${((performance.now() - t0) / 1e3).toFixed(1)} s`,
  );
  try {
    const server = startServer({
      model,
      tokenizer,
      modelId,
      hostname,
      port,
      apiKey,
      queue,
      timeoutSeconds,
      maxBodyBytes,
      log: (m) => console.error(m),
    });
    console.log(`pregate serve: listening on ${server.url} (model '${modelId}')`);
    if (hostname !== "127.0.0.1" && hostname !== "localhost" && hostname !== "::1" && !apiKey) {
      console.error(
        `pregate serve: warning: bound to ${hostname} without --api-key: anyone who can reach ` +
          "this address can use the GPU",
      );
    }
    const stop = () => {
      console.error("pregate serve: shutting down (answers in flight finish first)");
      server.shutdown();
    };
    const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
    for (const s of signals) Deno.addSignalListener(s, stop);
    try {
      await server.finished;
    } finally {
      for (const s of signals) Deno.removeSignalListener(s, stop);
    }
  } finally {
    await model.dispose();
  }
}
