/**
 * Typed errors. Every error Pregate throws for bad input or an unusable environment is a
 * {@linkcode PregateError} with a stable `code`, and its message says what was expected, what was
 * found, where (file, tensor, argument) and, when there is one, what to do.
 *
 * @example
 * ```ts
 * import { PregateError } from "./errors.ts";
 * try {
 *   throw new PregateError("E_EXAMPLE", "something went wrong");
 * } catch (e) {
 *   if (e instanceof PregateError) console.log(e.code);
 * }
 * ```
 * @module
 */

/** Base class of every error Pregate throws on purpose. */
export class PregateError extends Error {
  /** A stable machine-readable code, e.g. `E_NO_ADAPTER`. */
  readonly code: string;
  /** Optional advice on how to fix the problem (also appended to the message). */
  readonly hint?: string;

  /** Creates an error with a code, a message and an optional hint. */
  constructor(code: string, message: string, hint?: string, options?: ErrorOptions) {
    super(hint ? `${message}\n  hint: ${hint}` : message, options);
    this.name = new.target.name;
    this.code = code;
    this.hint = hint;
  }
}

/** No WebGPU implementation or adapter could be found, or the device could not be created. */
export class GpuUnavailableError extends PregateError {
  /** Creates the error. */
  constructor(message: string, hint?: string, options?: ErrorOptions) {
    super("E_NO_GPU", message, hint, options);
  }
}

/** WebGPU reported a validation, out-of-memory or internal error (shader compile, pipeline, ...). */
export class GpuError extends PregateError {
  /** Creates the error. */
  constructor(message: string, hint?: string, options?: ErrorOptions) {
    super("E_GPU", message, hint, options);
  }
}

/** A weight file is missing, truncated, corrupt or does not hold what the model needs. */
export class WeightFileError extends PregateError {
  /** The file the problem was found in. */
  readonly file: string;
  /** The tensor concerned, when there is one. */
  readonly tensor?: string;
  /** Creates the error. */
  constructor(file: string, message: string, opts: { tensor?: string; hint?: string } = {}) {
    super(
      "E_WEIGHTS",
      `${file}${opts.tensor ? ` [tensor ${opts.tensor}]` : ""}: ${message}`,
      opts.hint,
    );
    this.file = file;
    this.tensor = opts.tensor;
  }
}

/**
 * A GGUF file is malformed, or lacks a metadata key or tensor the caller needs. A
 * {@linkcode WeightFileError} (code `E_WEIGHTS`) that may also name the metadata key.
 */
export class GgufError extends WeightFileError {
  /** The metadata key concerned, when there is one. */
  readonly key?: string;
  /** Creates the error. */
  constructor(
    file: string,
    message: string,
    opts: { tensor?: string; key?: string; hint?: string } = {},
  ) {
    super(file, opts.key === undefined ? message : `[key ${opts.key}] ${message}`, opts);
    this.key = opts.key;
  }
}

/** A model configuration is unsupported or invalid. */
export class ConfigError extends PregateError {
  /** Creates the error. */
  constructor(message: string, hint?: string) {
    super("E_CONFIG", message, hint);
  }
}

/**
 * A tokenizer file (tokenizer.json, tokenizer_config.json) is missing, malformed or unusable, or a
 * chat was asked of a model without a chat template.
 */
export class TokenizerError extends PregateError {
  /** The file concerned. */
  readonly file: string;
  /** Creates the error. */
  constructor(file: string, message: string, hint?: string, options?: ErrorOptions) {
    super("E_TOKENIZER", `${file}: ${message}`, hint, options);
    this.file = file;
  }
}

/** A function or command-line argument is invalid. */
export class ArgumentError extends PregateError {
  /** The argument's name, e.g. `--max-tokens` or `rows`. */
  readonly argument: string;
  /** Creates the error. */
  constructor(argument: string, message: string, hint?: string) {
    super("E_ARGUMENT", `${argument}: ${message}`, hint);
    this.argument = argument;
  }
}

/** The GPU memory budget (or a device limit) is too small for what was asked. */
export class BudgetError extends PregateError {
  /** The smallest budget in bytes that would work, when known. */
  readonly minimumBytes?: number;
  /** Creates the error. */
  constructor(message: string, minimumBytes?: number, hint?: string) {
    super("E_BUDGET", message, hint);
    this.minimumBytes = minimumBytes;
  }
}

/**
 * An invariant of Pregate's own code broke (e.g. two kernels declared under one name): a bug in
 * Pregate, not in the caller's input. The message says which invariant.
 */
export class InternalError extends PregateError {
  /** Creates the error. */
  constructor(message: string) {
    super("E_INTERNAL", message, "this is a bug in Pregate; please report it with the message");
  }
}

/**
 * The model computed a NaN or an infinity where it must not (logits, activations): the answer
 * would be wrong, so none is given. Usually the weights hold NaN/Inf values (`pregate inspect
 * --check` names the tensors) or an activation overflowed its dtype.
 */
export class NumericError extends PregateError {
  /** The sequence position whose logits were not finite, when known. */
  readonly position?: number;
  /** Creates the error. */
  constructor(message: string, opts: { position?: number; hint?: string } = {}) {
    super("E_NUMERIC", message, opts.hint);
    this.position = opts.position;
  }
}

/** A file could not be written (a missing or read-only directory, a full disk, ...). */
export class FileWriteError extends PregateError {
  /** The file that could not be written. */
  readonly file: string;
  /** Creates the error; `cause` is the file system's error. */
  constructor(file: string, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super("E_WRITE", `${file}: ${message}`, opts.hint, { cause: opts.cause });
    this.file = file;
  }
}
