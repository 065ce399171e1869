/**
 * Memory-mapped weight files.
 *
 * {@linkcode openMapped} maps a whole file read-only (`mmap(PROT_READ, MAP_PRIVATE)` through the C
 * library of `libc.ts`, the only FFI in Pregate) and hands out
 * zero-copy `Uint8Array` views of it, so a multi-GB checkpoint costs no heap and the kernel pages
 * experts in and out on demand.
 *
 * When FFI cannot be used (no `--allow-ffi`, the C library does not load, or another OS), it falls
 * back to positional reads (`Deno.open` + `seek` + `read`): each {@linkcode MappedFile.bytes} call
 * then reads its range into a fresh buffer, and a one-line notice is logged once.
 *
 * Rules for mapped views (`kind === "mmap"`):
 * - They are **read-only** memory. Writing into one crashes the process (SIGSEGV); copy first
 *   (`view.slice()`).
 * - They must not be used after {@linkcode MappedFile.close}. `close()` detaches the underlying
 *   `ArrayBuffer` before unmapping, so views made by this module become zero-length rather than
 *   dangling (a stale read gives `undefined`, not a crash). Copies of the memory made elsewhere (for
 *   example a GPU upload already queued) are unaffected.
 * - If the file is truncated by another process while mapped, touching the lost pages raises SIGBUS,
 *   which kills the process (no JavaScript error can be caught). Do not rewrite weight files in
 *   place while Pregate runs. {@linkcode MappedFile.checkIntact} turns a truncation seen before a
 *   copy into a {@linkcode WeightFileError}; the descriptor it asks stays open while mapped.
 * - A mapping that is never closed is unmapped when its buffer and every view of it are
 *   garbage-collected.
 *
 * The same library handle also gives `hostMemcpy` (`libc.ts`, re-exported here).
 *
 * @example
 * ```ts
 * import { openMapped } from "./mmap.ts";
 * const file = openMapped("tests/fixtures/hf/olmoe/model.safetensors");
 * file.advise(0, 8, "willneed");
 * const head = file.bytes(0, 8); // zero-copy when file.kind === "mmap"
 * console.log(file.kind, file.byteLength, head[0]);
 * file.close();
 * ```
 * @module
 */
import { ArgumentError, PregateError, WeightFileError } from "../base/errors.ts";
import {
  errnoText,
  type Libc,
  loadLibc,
  MAP_FAILED,
  MAP_PRIVATE,
  O_RDONLY,
  PROT_READ,
  SEEK_END,
} from "./libc.ts";

export { type HostMemcpy, hostMemcpy, mmapSupport } from "./libc.ts";

/** How a file is accessed: mapped into memory, or read on demand. */
export type MapKind = "mmap" | "read";

/**
 * What {@linkcode openMapped} should do: `auto` maps when FFI is usable and reads otherwise (with a
 * notice), `mmap` maps or throws, `read` always reads (no notice).
 */
export type MapMode = "auto" | MapKind;

/** An access-pattern hint for {@linkcode MappedFile.advise} (`madvise`). */
export type Advice = "normal" | "random" | "sequential" | "willneed" | "dontneed";

/** Options of {@linkcode openMapped}. */
export interface OpenMappedOptions {
  /** `auto` (default), `mmap` or `read`; see {@linkcode MapMode}. */
  mode?: MapMode;
  /**
   * Where the one-line "FFI is off, reading instead of mapping" notice goes (default
   * `console.error`). Each callback receives the notice at most once per process.
   */
  log?: (message: string) => void;
}

/**
 * A whole file opened for reading, mapped (`kind === "mmap"`) or read on demand (`kind === "read"`).
 * See the module documentation for the rules on mapped views.
 *
 * @example
 * ```ts
 * import { openMapped } from "./mmap.ts";
 * const f = openMapped("tests/fixtures/hf/olmoe/model.safetensors");
 * const head = f.bytes(0, Math.min(16, f.byteLength));
 * console.log(head.length); // 16
 * f.close(); // mapped views must not be used after this
 * console.log(f.closed); // true
 * ```
 */
export interface MappedFile {
  /** The path as given to {@linkcode openMapped}. */
  readonly path: string;
  /** The file's size in bytes when it was opened. */
  readonly byteLength: number;
  /** `mmap` (views are zero-copy) or `read` (every {@linkcode bytes} call reads a copy). */
  readonly kind: MapKind;
  /** Whether {@linkcode close} was called. */
  readonly closed: boolean;
  /**
   * The bytes `[offset, offset + length)`: a zero-copy read-only view of the mapping (`mmap`), or a
   * freshly read copy (`read`). Throws {@linkcode WeightFileError} naming the file if the range is
   * outside the file or the file is closed.
   */
  bytes(offset: number, length: number): Uint8Array;
  /**
   * The whole file: the mapping's own `ArrayBuffer` (`mmap`; zero-copy, read-only, the same object
   * on every call, detached by {@linkcode close}), or a copy read now (`read`).
   */
  arrayBuffer(): ArrayBuffer;
  /**
   * Tells the kernel how a range will be used (`madvise`; the range is widened to whole pages).
   * Returns whether the hint was applied: always `false` in `read` mode or for an empty range.
   * Never throws for a failed hint; throws {@linkcode WeightFileError} for a range outside the file.
   */
  advise(offset: number, length: number, advice: Advice): boolean;
  /**
   * The fraction (0 .. 1) of the range's pages that are in RAM now (`mincore`; the page cache), or
   * `null` where that cannot be known (`read` mode, an empty range, a failed call). Reading pages
   * that are not resident goes to the disk: expert copies then run at the disk's speed.
   * Throws {@linkcode WeightFileError} for a range outside the file.
   */
  resident(offset: number, length: number): number | null;
  /**
   * Throws {@linkcode WeightFileError} if the file is now shorter than when it was opened: another
   * process truncated it (or is rewriting it in place), and touching a lost page of a mapping would
   * kill this process with SIGBUS. One `lseek` (`fstat` in read mode) on the open descriptor, so a
   * file replaced by rename, which leaves the mapped one intact, passes. Meant to be called before
   * copying from the file; a truncation after the check is not caught. `tensor` is named in the
   * error.
   */
  checkIntact(tensor?: string): void;
  /** Unmaps (or closes) the file. Idempotent. Views must not be used afterwards. */
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// Shared checks
// ---------------------------------------------------------------------------------------------

const noticed = new WeakSet<(message: string) => void>();
const defaultLog = (message: string): void => console.error(message);

function checkRange(file: MappedFile, offset: number, length: number): void {
  if (file.closed) {
    throw new WeightFileError(file.path, "the file was used after close()", {
      hint: "keep the weight file open while its tensors are in use",
    });
  }
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > file.byteLength
  ) {
    throw new WeightFileError(
      file.path,
      `byte range [${offset}, ${offset}+${length}) is outside the file (${file.byteLength} bytes)`,
      { hint: "the file may be truncated or its header corrupt" },
    );
  }
}

function statFile(path: string): number {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new WeightFileError(path, "file not found", {
        hint: "check the path (weights are looked up relative to the current directory)",
      });
    }
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new WeightFileError(path, `cannot read the file: ${(e as Error).message}`, {
        hint: "run with --allow-read",
      });
    }
    throw new WeightFileError(path, `cannot stat the file: ${(e as Error).message}`);
  }
  if (!info.isFile) {
    throw new WeightFileError(
      path,
      `expected a regular file, found a ${info.isDirectory ? "directory" : "special file"}`,
    );
  }
  return info.size;
}

// ---------------------------------------------------------------------------------------------
// mmap
// ---------------------------------------------------------------------------------------------

/** `madvise` values; identical on Linux and macOS. */
const ADVICE: Readonly<Record<Advice, number>> = {
  normal: 0,
  random: 1,
  sequential: 2,
  willneed: 3,
  dontneed: 4,
};

interface Mapping {
  ptr: Deno.PointerObject;
  length: number;
  /** The file's descriptor, kept for {@linkcode MappedFile.checkIntact}. */
  fd: number;
}

const unmapper = new FinalizationRegistry<Mapping>((m) => {
  // A mapping exists only once the C library has loaded: this returns the loaded one.
  const libc = loadLibc().libc;
  if (!libc) return;
  libc.munmap(m.ptr, BigInt(m.length));
  libc.close(m.fd);
});

function truncatedError(file: MappedFile, size: number, tensor?: string): WeightFileError {
  return new WeightFileError(
    file.path,
    `the file shrank from ${file.byteLength} to ${size} bytes while in use (truncated or being ` +
      "rewritten by another process)",
    {
      tensor,
      hint: "do not rewrite weight files while Pregate runs; restart once the file is complete",
    },
  );
}

class MmapFile implements MappedFile {
  readonly kind: MapKind = "mmap";
  #closed = false;
  #buffer: ArrayBuffer;
  #mapping: Mapping | null;

  constructor(
    readonly path: string,
    readonly byteLength: number,
    private readonly libc: Libc,
    private readonly pageSize: number,
  ) {
    if (byteLength === 0) {
      // mmap of 0 bytes fails with EINVAL; an empty file needs no mapping.
      this.#buffer = new ArrayBuffer(0);
      this.#mapping = null;
      return;
    }
    const fd = libc.open(new TextEncoder().encode(path + "\0"), O_RDONLY);
    if (fd < 0) {
      throw new WeightFileError(path, `cannot open the file (${errnoText(libc)})`);
    }
    let ptr: Deno.PointerValue;
    let size: number;
    try {
      size = Number(libc.lseek(fd, 0n, SEEK_END));
      if (size < 0) throw new WeightFileError(path, `cannot size the file (${errnoText(libc)})`);
      if (size === 0) {
        libc.close(fd);
        this.byteLength = 0;
        this.#buffer = new ArrayBuffer(0);
        this.#mapping = null;
        return;
      }
      ptr = libc.mmap(null, BigInt(size), PROT_READ, MAP_PRIVATE, fd, 0n);
      if (ptr === null || BigInt(Deno.UnsafePointer.value(ptr)) === MAP_FAILED) {
        throw new WeightFileError(path, `mmap of ${size} bytes failed (${errnoText(libc)})`, {
          hint: "run with mode 'read' to read the file instead of mapping it",
        });
      }
    } catch (e) {
      libc.close(fd);
      throw e;
    }
    this.byteLength = size;
    // The descriptor stays open (the mapping alone would keep the file alive) so that checkIntact
    // can ask the file's current size.
    this.#mapping = { ptr, length: size, fd };
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(ptr, size);
    unmapper.register(this.#buffer, this.#mapping, this);
  }

  get closed(): boolean {
    return this.#closed;
  }

  bytes(offset: number, length: number): Uint8Array {
    checkRange(this, offset, length);
    return new Uint8Array(this.#buffer, offset, length);
  }

  arrayBuffer(): ArrayBuffer {
    checkRange(this, 0, 0);
    return this.#buffer;
  }

  advise(offset: number, length: number, advice: Advice): boolean {
    checkRange(this, offset, length);
    if (!this.#mapping || length === 0) return false;
    const code = ADVICE[advice];
    if (code === undefined) return false;
    const start = Math.floor(offset / this.pageSize) * this.pageSize;
    const ptr = Deno.UnsafePointer.offset(this.#mapping.ptr, start);
    if (!ptr) return false;
    return this.libc.madvise(ptr, BigInt(offset + length - start), code) === 0;
  }

  resident(offset: number, length: number): number | null {
    checkRange(this, offset, length);
    if (!this.#mapping || length === 0) return null;
    const start = Math.floor(offset / this.pageSize) * this.pageSize;
    const span = offset + length - start;
    const pages = Math.ceil(span / this.pageSize);
    const ptr = Deno.UnsafePointer.offset(this.#mapping.ptr, start);
    if (!ptr) return null;
    const vec = new Uint8Array(pages);
    if (this.libc.mincore(ptr, BigInt(span), vec) !== 0) return null;
    let n = 0;
    for (let i = 0; i < pages; i++) n += vec[i] & 1;
    return n / pages;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const m = this.#mapping;
    this.#mapping = null;
    if (!m) return;
    unmapper.unregister(this);
    // Detach first (zero-copy move to a buffer that is dropped) so every view made by bytes()
    // becomes zero-length instead of pointing at unmapped memory.
    this.#buffer.transfer();
    this.libc.munmap(m.ptr, BigInt(m.length));
    this.libc.close(m.fd);
  }

  checkIntact(tensor?: string): void {
    checkRange(this, 0, 0);
    if (!this.#mapping) return;
    const size = Number(this.libc.lseek(this.#mapping.fd, 0n, SEEK_END));
    if (size >= 0 && size < this.byteLength) throw truncatedError(this, size, tensor);
  }
}

// ---------------------------------------------------------------------------------------------
// read fallback
// ---------------------------------------------------------------------------------------------

class ReadFile implements MappedFile {
  readonly kind: MapKind = "read";
  #file: Deno.FsFile | null;

  constructor(readonly path: string, readonly byteLength: number) {
    try {
      this.#file = Deno.openSync(path, { read: true });
    } catch (e) {
      throw new WeightFileError(path, `cannot open the file: ${(e as Error).message}`);
    }
  }

  get closed(): boolean {
    return this.#file === null;
  }

  bytes(offset: number, length: number): Uint8Array {
    checkRange(this, offset, length);
    const out = new Uint8Array(length);
    const file = this.#file!;
    file.seekSync(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < length) {
      const n = file.readSync(out.subarray(done));
      if (n === null || n === 0) {
        throw new WeightFileError(
          this.path,
          `unexpected end of file at byte ${offset + done} while reading [${offset}, ${
            offset + length
          }) (the file was ${this.byteLength} bytes when opened)`,
          { hint: "the file was truncated while in use" },
        );
      }
      done += n;
    }
    return out;
  }

  arrayBuffer(): ArrayBuffer {
    return this.bytes(0, this.byteLength).buffer as ArrayBuffer;
  }

  checkIntact(tensor?: string): void {
    checkRange(this, 0, 0);
    const size = this.#file!.statSync().size;
    if (size < this.byteLength) throw truncatedError(this, size, tensor);
  }

  resident(offset: number, length: number): number | null {
    checkRange(this, offset, length);
    return null;
  }

  advise(offset: number, length: number, _advice: Advice): boolean {
    checkRange(this, offset, length);
    return false;
  }

  close(): void {
    if (!this.#file) return;
    this.#file.close();
    this.#file = null;
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Opens a whole file for zero-copy reading: memory-mapped read-only when FFI is usable, otherwise
 * (mode `auto`) read on demand with a one-line notice through `options.log`. Throws
 * {@linkcode WeightFileError} naming the file if it is missing, not a regular file or cannot be
 * mapped, and a {@linkcode PregateError} (`E_NO_MMAP`) in mode `mmap` when mapping is unavailable.
 * Empty files work in every mode.
 *
 * @example
 * ```ts
 * import { openMapped } from "./mmap.ts";
 * const f = openMapped("tests/fixtures/hf/olmoe/model.safetensors", { log: (m) => console.warn(m) });
 * try {
 *   const n = new DataView(f.bytes(0, 8).slice().buffer).getBigUint64(0, true);
 *   console.log(`${f.kind}: header is ${n} bytes`);
 * } finally {
 *   f.close();
 * }
 * ```
 */
export function openMapped(path: string, options: OpenMappedOptions = {}): MappedFile {
  const mode = options.mode ?? "auto";
  if (mode !== "auto" && mode !== "mmap" && mode !== "read") {
    throw new ArgumentError("mode", `expected auto, mmap or read, found '${mode}'`);
  }
  const size = statFile(path);
  if (mode === "read") return new ReadFile(path, size);
  const state = loadLibc();
  if (state.libc) return new MmapFile(path, size, state.libc, state.pageSize);
  if (mode === "mmap") {
    throw new PregateError(
      "E_NO_MMAP",
      `${path}: cannot memory-map: ${state.reason}`,
      "run with --allow-ffi on Linux or macOS, or use mode 'read'",
    );
  }
  const log = options.log ?? defaultLog;
  if (!noticed.has(log)) {
    noticed.add(log);
    log(
      `pregate: ${state.reason}: weights are read into memory instead of memory-mapped ` +
        `(run with --allow-ffi to map them)`,
    );
  }
  return new ReadFile(path, size);
}
