/**
 * An OpenAI-compatible HTTP server for one loaded model, on `Deno.serve`: `POST
 * /v1/chat/completions`, `POST /v1/completions` (streamed as server-sent events or not), `GET
 * /v1/models`, `GET /health`, `GET /metrics`. One generation runs at a time (batch 1); others wait
 * in a bounded FIFO queue ({@linkcode GpuQueue}) and are turned away with 429 when it is full. A
 * request that outlives the timeout is answered with an error, a client that goes away cancels its
 * generation, and the GPU goes to the next request at the next token in both cases.
 *
 * @example
 * ```ts ignore
 * import { startServer } from "./server.ts";
 * const server = startServer({ model, tokenizer, modelId: "tiny", port: 0 });
 * console.log(server.url); // http://127.0.0.1:PORT
 * await server.shutdown();
 * ```
 * @module
 */
import { ArgumentError, PregateError } from "../base/errors.ts";
import type { Model } from "../model.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import { ApiError } from "./api_error.ts";
import { CompletionRun, prepareCompletion } from "./completion.ts";
import { type GenerationOutcome, ServerMetrics } from "./metrics.ts";
import { AnswerFormat, type AnswerKind, usageOf } from "./openai_format.ts";
import { GpuQueue, QueueFullError, type Release } from "./queue.ts";
import { parseJsonBody, validateChatRequest, validateCompletionRequest } from "./validate.ts";

/** Options of {@linkcode startServer}. */
export interface ServeOptions {
  /** The loaded model. */
  model: Model;
  /** Its tokenizer. */
  tokenizer: Tokenizer;
  /** The id clients name in `model` (and `GET /v1/models` lists). */
  modelId: string;
  /** Address to bind; default 127.0.0.1 (loopback only). */
  hostname?: string;
  /** Port; default 8080; 0 picks a free one. */
  port?: number;
  /** When set, every request needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Most requests waiting for the GPU (the running one not counted); default 16. */
  queue?: number;
  /** Seconds a request may take, waiting included, before it is answered with an error; 600. */
  timeoutSeconds?: number;
  /** Largest request body in bytes; default 1 MiB. */
  maxBodyBytes?: number;
  /** Called once listening, with the URL. */
  onListen?: (url: string) => void;
  /** One-line notices (errors answered with 500). */
  log?: (message: string) => void;
}

/** A running server. */
export interface PregateServer {
  /** `http://host:port`. */
  readonly url: string;
  /** Its counters. */
  readonly metrics: ServerMetrics;
  /** Its scheduler. */
  readonly queue: GpuQueue;
  /** Stops accepting connections and waits for the answers in flight. */
  shutdown(): Promise<void>;
  /** Settles when the server has stopped. */
  readonly finished: Promise<void>;
}

const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  "x-accel-buffering": "no",
};

/** Marks a client that went away (the reason its request's signal aborted). */
class ClientGone extends Error {}

/** One request's abort signal: the client going away, or the server's timeout. */
class RequestDeadline {
  readonly signal: AbortSignal;
  #ctrl = new AbortController();
  #timer: ReturnType<typeof setTimeout>;
  #timedOut = false;

  /**
   * `req.signal` aborts when the client goes away (and, in Deno.serve's legacy mode, after a
   * successful answer too, when this deadline no longer matters); `delivered` rejects when a
   * streamed answer could not be delivered.
   */
  constructor(req: Request, delivered: Promise<void>, seconds: number) {
    this.signal = this.#ctrl.signal;
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#ctrl.abort(
        new ApiError(504, `the request took longer than the server's timeout of ${seconds} s`, {
          code: "timeout",
        }),
      );
    }, seconds * 1000);
    delivered.catch(() => this.clientGone());
    if (req.signal.aborted) this.clientGone();
    else req.signal.addEventListener("abort", () => this.clientGone(), { once: true });
  }

  /** Aborts the request because its client went away. */
  clientGone(): void {
    this.#ctrl.abort(new ClientGone("client went away"));
  }

  /** What ended the request early, for the metrics. */
  outcome(): GenerationOutcome {
    return this.#timedOut ? "timeout" : "cancelled";
  }

  dispose(): void {
    clearTimeout(this.#timer);
  }
}

/** Reads a body of at most `limit` bytes as UTF-8 text; more is a 413. */
async function readBody(req: Request, limit: number): Promise<string> {
  const tooLarge = () =>
    new ApiError(413, `the request body is larger than the server's limit of ${limit} bytes`, {
      code: "request_too_large",
    });
  const declared = Number(req.headers.get("content-length") ?? 0);
  if (declared > limit) throw tooLarge();
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of req.body) {
    total += chunk.length;
    if (total > limit) throw tooLarge();
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) bytes.set(c, (at += c.length) - c.length);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw ApiError.badRequest(null, "the body is not valid UTF-8", "invalid_json");
  }
}

/** An error answer for anything a handler threw. */
function toApiError(e: unknown, log?: (m: string) => void): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof ArgumentError) return ApiError.badRequest(e.argument, e.message);
  log?.(`pregate serve: answered 500: ${e instanceof Error ? e.stack ?? e.message : e}`);
  const message = e instanceof PregateError ? `${e.name}: ${e.message}` : "internal error";
  return new ApiError(500, message, { code: e instanceof PregateError ? e.code : null });
}

/** The server's state and handlers. */
class Handlers {
  readonly metrics = new ServerMetrics();
  readonly queue: GpuQueue;
  #o: Required<Omit<ServeOptions, "apiKey" | "onListen" | "log">> & ServeOptions;
  #contextLength: number;
  /** Mean seconds of recent generations, for Retry-After. */
  #meanSeconds = 1;

  constructor(o: ServeOptions) {
    this.#o = {
      hostname: "127.0.0.1",
      port: 8080,
      queue: 16,
      timeoutSeconds: 600,
      maxBodyBytes: 1 << 20,
      ...o,
    };
    if (!(this.#o.timeoutSeconds > 0)) {
      throw new ArgumentError("timeout", `expected seconds > 0, got ${this.#o.timeoutSeconds}`);
    }
    this.queue = new GpuQueue(this.#o.queue);
    this.#contextLength = Math.min(o.model.contextLength, o.model.config.maxPositions);
  }

  /** Routes a request; every error becomes an OpenAI error answer. */
  async handle(req: Request, info: Deno.ServeHandlerInfo): Promise<Response> {
    const path = new URL(req.url).pathname;
    const route = this.#route(path);
    let res: Response;
    try {
      this.#authorize(req);
      if (!route) {
        throw new ApiError(404, `no endpoint ${req.method} ${path}`, { code: "not_found" });
      }
      if (req.method !== route.method) {
        throw new ApiError(405, `${path} takes ${route.method}, not ${req.method}`, {
          code: "method_not_allowed",
          headers: { allow: route.method },
        });
      }
      res = await route.run(req, info.completed);
    } catch (e) {
      res = toApiError(e, this.#o.log).response();
    }
    this.metrics.countRequest(route ? path : "other", res.status);
    return res;
  }

  #route(
    path: string,
  ): { method: string; run: (req: Request, delivered: Promise<void>) => Promise<Response> } | null {
    const id = this.#o.modelId;
    switch (path) {
      case "/v1/chat/completions":
        return { method: "POST", run: (r, d) => this.#complete(r, d, "chat") };
      case "/v1/completions":
        return { method: "POST", run: (r, d) => this.#complete(r, d, "completion") };
      case "/v1/models":
        return { method: "GET", run: () => Promise.resolve(Response.json(this.#models())) };
      case `/v1/models/${id}`:
        return { method: "GET", run: () => Promise.resolve(Response.json(this.#models().data[0])) };
      case "/health":
        return {
          method: "GET",
          run: () =>
            Promise.resolve(Response.json({
              status: "ok",
              model: id,
              busy: this.queue.busy,
              queue_depth: this.queue.waiting,
            })),
        };
      case "/metrics":
        return {
          method: "GET",
          run: () =>
            Promise.resolve(
              new Response(this.#renderMetrics(), {
                headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
              }),
            ),
        };
    }
    return null;
  }

  #renderMetrics(): string {
    return this.metrics.render({
      queueDepth: this.queue.waiting,
      queueCapacity: this.queue.capacity,
      busy: this.queue.busy,
      offload: this.#o.model.offloadCounters,
    });
  }

  #models() {
    const created = Math.floor(Date.now() / 1000);
    return {
      object: "list",
      data: [{ id: this.#o.modelId, object: "model", created, owned_by: "pregate" }],
    };
  }

  #authorize(req: Request): void {
    const key = this.#o.apiKey;
    if (key === undefined) return;
    const given = req.headers.get("authorization") ?? "";
    const expected = `Bearer ${key}`;
    let diff = given.length ^ expected.length;
    for (let i = 0; i < expected.length; i++) {
      diff |= expected.charCodeAt(i) ^ (given.charCodeAt(i) || 0);
    }
    if (diff !== 0) {
      throw new ApiError(
        401,
        given ? "invalid API key" : "missing API key: send Authorization: Bearer <key>",
        { code: "invalid_api_key", headers: { "www-authenticate": "Bearer" } },
      );
    }
  }

  /** `POST /v1/chat/completions` and `POST /v1/completions`. */
  async #complete(req: Request, delivered: Promise<void>, kind: AnswerKind): Promise<Response> {
    const o = this.#o;
    const body = parseJsonBody(await readBody(req, o.maxBodyBytes));
    const request = kind === "chat"
      ? validateChatRequest(body, o.modelId)
      : validateCompletionRequest(body, o.modelId);
    const prepared = prepareCompletion(o.model, o.tokenizer, this.#contextLength, request);
    const deadline = new RequestDeadline(req, delivered, o.timeoutSeconds);
    let release: Release;
    try {
      release = await this.queue.acquire(deadline.signal);
    } catch (e) {
      deadline.dispose();
      if (e instanceof QueueFullError) {
        const wait = Math.max(1, Math.ceil(this.#meanSeconds * (this.queue.waiting + 1)));
        throw new ApiError(429, e.message, {
          code: "queue_full",
          headers: { "retry-after": String(wait) },
        });
      }
      throw e instanceof ClientGone ? new ApiError(499, "client closed the request") : e;
    }
    const seed = crypto.getRandomValues(new Uint32Array(1))[0];
    const run = new CompletionRun(o.model, o.tokenizer, prepared, seed);
    const started = performance.now();
    /** Gives the GPU back once the model's generator has finished, and records the run. */
    const done = (outcome: GenerationOutcome) => {
      deadline.dispose();
      run.finished.then(() => {
        release();
        this.#meanSeconds = 0.8 * this.#meanSeconds + 0.2 * (performance.now() - started) / 1e3;
        this.metrics.recordGeneration({
          promptTokens: run.promptTokens,
          completionTokens: run.completionTokens,
          outcome,
          stats: run.stats,
        });
      });
    };
    const format = new AnswerFormat(kind, o.modelId, { includeUsage: request.includeUsage });
    if (request.stream) return this.#stream(run, format, deadline, done);
    let text = "", outcome: GenerationOutcome = "error";
    try {
      for await (const piece of run.pieces(deadline.signal)) text += piece;
      outcome = run.finishReason!;
    } catch (e) {
      if (deadline.signal.aborted) outcome = deadline.outcome();
      throw e instanceof ClientGone ? new ApiError(499, "client closed the request") : e;
    } finally {
      done(outcome);
    }
    const usage = usageOf(run.promptTokens, run.completionTokens);
    return Response.json(format.complete(text, run.finishReason!, usage));
  }

  /** A streamed answer: server-sent events, ending with `data: [DONE]`. */
  #stream(
    run: CompletionRun,
    format: AnswerFormat,
    deadline: RequestDeadline,
    done: (outcome: GenerationOutcome) => void,
  ): Response {
    const utf8 = new TextEncoder();
    let closed = false;
    const pump = async (controller: ReadableStreamDefaultController<Uint8Array>) => {
      // A stream the client has left throws on enqueue: from then on nothing more is sent.
      const send = (data: Record<string, unknown> | "[DONE]") => {
        if (closed) return;
        try {
          controller.enqueue(utf8.encode(AnswerFormat.event(data)));
        } catch {
          closed = true;
        }
      };
      let outcome: GenerationOutcome = "error";
      try {
        if (format.kind === "chat") send(format.role());
        for await (const piece of run.pieces(deadline.signal)) send(format.delta(piece));
        send(format.finish(run.finishReason!));
        if (format.usageField) send(format.usage(usageOf(run.promptTokens, run.completionTokens)));
        send("[DONE]");
        outcome = run.finishReason!;
      } catch (e) {
        if (deadline.signal.aborted) outcome = deadline.outcome();
        // Headers are out: the error goes in the stream, where OpenAI clients raise it.
        if (!(e instanceof ClientGone)) send({ ...toApiError(e, this.#o.log).body() });
      } finally {
        done(outcome);
        if (!closed) {
          closed = true;
          try {
            controller.close();
          } catch { /* already closed by the client */ }
        }
      }
    };
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => void pump(controller),
      cancel: () => {
        closed = true;
        deadline.clientGone();
      },
    });
    return new Response(body, { headers: SSE_HEADERS });
  }
}

/**
 * Starts serving `model`; see the module doc. Binds to 127.0.0.1 unless `hostname` says
 * otherwise.
 *
 * @example
 * ```ts ignore
 * const server = startServer({ model, tokenizer, modelId: "tiny", port: 8080, apiKey: "secret" });
 * await server.finished;
 * ```
 */
export function startServer(opts: ServeOptions): PregateServer {
  const handlers = new Handlers(opts);
  const server = Deno.serve({
    hostname: opts.hostname ?? "127.0.0.1",
    port: opts.port ?? 8080,
    onListen: () => {},
    onError: (e) => toApiError(e, opts.log).response(),
  }, (req, info) => handlers.handle(req, info));
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = `http://${host}:${addr.port}`;
  opts.onListen?.(url);
  return {
    url,
    metrics: handlers.metrics,
    queue: handlers.queue,
    shutdown: () => server.shutdown(),
    finished: server.finished,
  };
}
