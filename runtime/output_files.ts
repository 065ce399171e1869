/**
 * Files Pregate writes (checkpoints, traces): output paths checked before any work is done, and
 * file-system failures (a missing or read-only directory, a full disk, a path through a file)
 * turned into a {@linkcode FileWriteError} naming the file, instead of a stack trace.
 *
 * @example
 * ```ts
 * import { checkOutputFile, writeTextOutput } from "./output_files.ts";
 * const path = `${await Deno.makeTempDir()}/trace.svg`;
 * checkOutputFile(path, "--out"); // the directory exists, the path is not a directory: fine
 * await writeTextOutput(path, "<svg/>");
 * ```
 * @module
 */
import { ArgumentError, FileWriteError, PregateError } from "./base/errors.ts";

/** What an OS error code means for a write, and what to do about it. */
const REASONS: Record<string, [string, string]> = {
  ENOSPC: ["the disk is full", "free space on that file system, or write elsewhere"],
  EDQUOT: ["the disk quota is exhausted", "free space, or write elsewhere"],
  EROFS: ["the file system is read-only", "write to a writable directory"],
  EACCES: ["permission denied", "write to a directory you may write to"],
  EPERM: ["operation not permitted", "write to a directory you may write to"],
  ENOENT: ["its directory does not exist", "create the directory first"],
  ENOTDIR: ["a component of the path is not a directory", "check the path"],
  EISDIR: ["it is a directory", "give a file path"],
  EFBIG: ["the file is too large for the file system", "write to another file system"],
};

/**
 * Turns a file-system error `e` from writing `file` into a {@linkcode FileWriteError} naming the
 * file and saying why (full disk, read-only, missing directory, ...); returns any other value as it
 * is, so callers can `throw asWriteError(e, file)`.
 *
 * @example
 * ```ts
 * import { asWriteError } from "./output_files.ts";
 * try {
 *   await Deno.writeFile("/dev/full", new Uint8Array(4));
 * } catch (e) {
 *   console.log(String(asWriteError(e, "/dev/full")).split("\n")[0]); // FileWriteError: /dev/full: cannot write: the disk is full ...
 * }
 * ```
 */
export function asWriteError(e: unknown, file: string): unknown {
  if (!(e instanceof Error) || e instanceof PregateError) return e;
  const code = (e as { code?: unknown }).code;
  if (typeof code !== "string" || !/^E[A-Z0-9]+$/.test(code)) return e;
  const [why, hint] = REASONS[code] ?? [e.message, "check the path and the file system"];
  return new FileWriteError(file, `cannot write: ${why} (${code})`, { hint, cause: e });
}

/**
 * Checks, before any work is done, that `path` can be an output file: not a directory, and in a
 * directory that exists. Throws {@linkcode ArgumentError} naming `argument` (e.g. `--out`)
 * otherwise. Whether the directory may be written is only known when writing.
 *
 * @example
 * ```ts
 * import { checkOutputFile } from "./output_files.ts";
 * try {
 *   checkOutputFile("/no/such/dir/trace.svg", "--out");
 * } catch (e) {
 *   console.log((e as Error).message.split("\n")[0]); // --out: cannot write /no/such/dir/trace.svg: ...
 * }
 * ```
 */
export function checkOutputFile(path: string, argument: string): void {
  if (typeof path !== "string" || path === "") {
    throw new ArgumentError(argument, "expected a file path");
  }
  const info = statOrNull(path);
  if (info?.isDirectory) {
    throw new ArgumentError(
      argument,
      `cannot write ${path}: it is a directory`,
      "give a file path",
    );
  }
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  const parent = statOrNull(dir);
  if (!parent || !parent.isDirectory) {
    throw new ArgumentError(
      argument,
      `cannot write ${path}: ${dir} ${parent ? "is not a directory" : "does not exist"}`,
      "create the directory first, or choose another path",
    );
  }
}

function statOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

/**
 * Writes `text` to `path`, throwing {@linkcode FileWriteError} naming the file when the file system
 * refuses (see {@linkcode asWriteError}).
 *
 * @example
 * ```ts
 * import { writeTextOutput } from "./output_files.ts";
 * await writeTextOutput(`${await Deno.makeTempDir()}/summary.json`, "{}");
 * ```
 */
export async function writeTextOutput(path: string, text: string): Promise<void> {
  try {
    await Deno.writeTextFile(path, text);
  } catch (e) {
    throw asWriteError(e, path);
  }
}
