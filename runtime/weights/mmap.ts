/**
 * Memory-mapped weight files, and host `memcpy`: the only FFI in Pregate.
 *
 * {@linkcode openMapped} maps a whole file read-only (`mmap(PROT_READ, MAP_PRIVATE)` through
 * `Deno.dlopen` of the C library: `libc.so.6` on Linux, `libSystem.B.dylib` on macOS) and hands out
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
 * The same library handle also gives {@linkcode hostMemcpy}: libc `memcpy` between raw addresses,
 * on the calling thread or (`copyAsync`) on one of Deno's blocking-pool threads, so that several
 * copies run at once (the expert uploader fills GPU staging buffers this way).
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
// The C library
// ---------------------------------------------------------------------------------------------

const O_RDONLY = 0;
const SEEK_END = 2;
const PROT_READ = 1;
const MAP_PRIVATE = 2;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
/** `madvise` values; identical on Linux and macOS. */
const ADVICE: Readonly<Record<Advice, number>> = {
  normal: 0,
  random: 1,
  sequential: 2,
  willneed: 3,
  dontneed: 4,
};

const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  9: "EBADF",
  12: "ENOMEM",
  13: "EACCES",
  19: "ENODEV",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  27: "EFBIG",
};

function libcSymbols(errnoName: string) {
  return {
    open: { parameters: ["buffer", "i32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
    lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
    mmap: {
      parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
      result: "pointer",
    },
    munmap: { parameters: ["pointer", "usize"], result: "i32" },
    madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
    mincore: { parameters: ["pointer", "usize", "buffer"], result: "i32" },
    getpagesize: { parameters: [], result: "i32" },
    memcpy: { parameters: ["pointer", "pointer", "usize"], result: "void" },
    memcpyAsync: {
      name: "memcpy",
      parameters: ["pointer", "pointer", "usize"],
      result: "void",
      nonblocking: true,
    },
    errnoLocation: { name: errnoName, parameters: [], result: "pointer" },
  } as const;
}

type Libc = Deno.DynamicLibrary<ReturnType<typeof libcSymbols>>["symbols"];

interface LibcState {
  libc: Libc | null;
  pageSize: number;
  /** Why FFI is unavailable, when it is. */
  reason: string;
}

let libcState: LibcState | undefined;

function loadLibc(): LibcState {
  if (libcState) return libcState;
  const os = Deno.build.os;
  let name: string;
  let errnoName: string;
  if (os === "linux") {
    name = "libc.so.6";
    errnoName = "__errno_location";
  } else if (os === "darwin") {
    name = "libSystem.B.dylib";
    errnoName = "__error";
  } else {
    return libcState = {
      libc: null,
      pageSize: 0,
      reason: `memory mapping is not supported on ${os}`,
    };
  }
  let granted = false;
  try {
    granted = Deno.permissions.querySync({ name: "ffi" }).state === "granted" ||
      Deno.permissions.querySync({ name: "ffi", path: name }).state === "granted";
  } catch {
    granted = false;
  }
  if (!granted) {
    // Not granted: never call dlopen, which would prompt on a terminal.
    return libcState = { libc: null, pageSize: 0, reason: "FFI is not permitted (no --allow-ffi)" };
  }
  try {
    const lib = Deno.dlopen(name, libcSymbols(errnoName));
    const pageSize = lib.symbols.getpagesize();
    return libcState = { libc: lib.symbols, pageSize: pageSize > 0 ? pageSize : 4096, reason: "" };
  } catch (e) {
    return libcState = {
      libc: null,
      pageSize: 0,
      reason: `could not load ${name} (${e instanceof Error ? e.message : String(e)})`,
    };
  }
}

function errnoText(libc: Libc): string {
  const loc = libc.errnoLocation();
  if (!loc) return "errno unknown";
  const n = new Deno.UnsafePointerView(loc).getInt32();
  return `errno ${n}${ERRNO_NAMES[n] ? ` ${ERRNO_NAMES[n]}` : ""}`;
}

/**
 * Whether {@linkcode openMapped} can memory-map in this process, and if not, why.
 *
 * @example
 * ```ts
 * import { mmapSupport } from "./mmap.ts";
 * const s = mmapSupport();
 * if (!s.available) console.log(`reading weights instead of mapping: ${s.reason}`);
 * ```
 */
export function mmapSupport(): { available: boolean; reason?: string } {
  const s = loadLibc();
  return s.libc ? { available: true } : { available: false, reason: s.reason };
}

/**
 * libc `memcpy` between raw addresses (see {@linkcode hostMemcpy}). Both ranges must stay valid and
 * unmoved until the copy returns (for `copyAsync`, until its promise settles): keep a reference to
 * the buffers they point into, and never unmap or detach them meanwhile. Tiny typed arrays may live
 * on the V8 heap, which moves them: give `copyAsync` only `ArrayBuffer`-backed memory (reading a
 * view's `.buffer` moves it off the heap for good) or mapped memory.
 */
export interface HostMemcpy {
  /** Copies `bytes` bytes from `src` to `dst` on the calling thread. */
  copy(dst: Deno.PointerObject, src: Deno.PointerObject, bytes: number): void;
  /**
   * Copies on one of Deno's blocking-pool threads (a `nonblocking` FFI call); several calls in
   * flight run in parallel. The JS thread is free meanwhile.
   */
  copyAsync(dst: Deno.PointerObject, src: Deno.PointerObject, bytes: number): Promise<void>;
}

let memcpyCache: HostMemcpy | null | undefined;

/**
 * libc `memcpy` through the same library handle as the mappings, or `null` when FFI is unusable
 * (then {@linkcode mmapSupport} says why).
 *
 * @example
 * ```ts
 * import { hostMemcpy } from "./mmap.ts";
 * const m = hostMemcpy();
 * const a = new Uint8Array(new ArrayBuffer(1 << 20)).fill(7), b = new Uint8Array(1 << 20);
 * const [pa, pb] = [Deno.UnsafePointer.of(a)!, Deno.UnsafePointer.of(b)!];
 * if (m) await Promise.all([0, 1].map((h) => m.copyAsync(
 *   Deno.UnsafePointer.offset(pb, h << 19)!, Deno.UnsafePointer.offset(pa, h << 19)!, 1 << 19)));
 * console.log(m ? b[b.length - 1] : 7); // 7
 * ```
 */
export function hostMemcpy(): HostMemcpy | null {
  if (memcpyCache !== undefined) return memcpyCache;
  const libc = loadLibc().libc;
  if (!libc) return memcpyCache = null;
  return memcpyCache = {
    copy: (dst, src, bytes) => libc.memcpy(dst, src, BigInt(bytes)),
    copyAsync: (dst, src, bytes) => libc.memcpyAsync(dst, src, BigInt(bytes)),
  };
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

interface Mapping {
  ptr: Deno.PointerObject;
  length: number;
  /** The file's descriptor, kept for {@linkcode MappedFile.checkIntact}. */
  fd: number;
}

const unmapper = new FinalizationRegistry<Mapping>((m) => {
  const libc = libcState?.libc;
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
