/**
 * Errors the server answers with, in OpenAI's shape: `{"error": {"message", "type", "param",
 * "code"}}` with an HTTP status.
 *
 * @example
 * ```ts
 * import { ApiError } from "./api_error.ts";
 * const e = ApiError.badRequest("max_tokens", "expected an integer >= 1, got -5");
 * console.log(e.status, JSON.stringify(e.body()));
 * ```
 * @module
 */
import { PregateError } from "../base/errors.ts";

/** The `error` object of an OpenAI error response. */
export interface ApiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Options of {@linkcode ApiError}. */
export interface ApiErrorOptions {
  /** OpenAI's error type; default from the status. */
  type?: string;
  /** The request field at fault. */
  param?: string | null;
  /** A machine-readable code, e.g. `model_not_found`. */
  code?: string | null;
  /** Extra response headers (`Retry-After`, `Allow`). */
  headers?: Record<string, string>;
}

const TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  404: "invalid_request_error",
  405: "invalid_request_error",
  413: "invalid_request_error",
  429: "rate_limit_error",
  500: "server_error",
  503: "server_error",
  504: "server_error",
};

/** An HTTP error answer (see the module doc). */
export class ApiError extends PregateError {
  /** The HTTP status. */
  readonly status: number;
  /** OpenAI's error type. */
  readonly type: string;
  /** The request field at fault, or null. */
  readonly param: string | null;
  /** The machine-readable code, or null. */
  readonly apiCode: string | null;
  /** Extra response headers. */
  readonly headers: Record<string, string>;

  /** Creates the error. */
  constructor(status: number, message: string, opts: ApiErrorOptions = {}) {
    super("E_REQUEST", message);
    this.status = status;
    this.type = opts.type ?? TYPES[status] ?? "server_error";
    this.param = opts.param ?? null;
    this.apiCode = opts.code ?? null;
    this.headers = opts.headers ?? {};
  }

  /** A 400 naming the request field at fault. */
  static badRequest(param: string | null, message: string, code?: string): ApiError {
    return new ApiError(400, param ? `${param}: ${message}` : message, { param, code });
  }

  /** The JSON body of the answer. */
  body(): ApiErrorBody {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.apiCode },
    };
  }

  /** The HTTP answer. */
  response(): Response {
    return Response.json(this.body(), { status: this.status, headers: this.headers });
  }
}
