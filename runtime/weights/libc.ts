/**
 * The C library through `Deno.dlopen` (`libc.so.6` on Linux, `libSystem.B.dylib` on macOS): the
 * only FFI in Pregate. `mmap.ts` maps weight files with it; {@linkcode hostMemcpy} gives libc
 * `memcpy` between raw addresses, on the calling thread or (`copyAsync`) on one of Deno's
 * blocking-pool threads, so that several copies run at once (the expert uploader fills GPU staging
 * buffers this way). Without `--allow-ffi`, or on another OS, nothing is loaded and
 * {@linkcode mmapSupport} says why.
 *
 * @example
 * ```ts
 * import { mmapSupport } from "./libc.ts";
 * console.log(mmapSupport().available || mmapSupport().reason);
 * ```
 * @module
 */

/** `open`, `lseek` and `mmap` flags; identical on Linux and macOS. */
export const O_RDONLY = 0;
export const SEEK_END = 2;
export const PROT_READ = 1;
export const MAP_PRIVATE = 2;
export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

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

/** The C library's functions Pregate binds. */
export type Libc = Deno.DynamicLibrary<ReturnType<typeof libcSymbols>>["symbols"];

/** The C library once loaded: its functions (null when FFI is unusable), page size, or why not. */
export interface LibcState {
  libc: Libc | null;
  pageSize: number;
  /** Why FFI is unavailable, when it is. */
  reason: string;
}

let libcState: LibcState | undefined;

/** Loads the C library once (never prompting for permission); later calls return the same state. */
export function loadLibc(): LibcState {
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

/** The calling thread's `errno`, as `errno N NAME`. */
export function errnoText(libc: Libc): string {
  const loc = libc.errnoLocation();
  if (!loc) return "errno unknown";
  const n = new Deno.UnsafePointerView(loc).getInt32();
  return `errno ${n}${ERRNO_NAMES[n] ? ` ${ERRNO_NAMES[n]}` : ""}`;
}

/**
 * Whether `openMapped` (`mmap.ts`) can memory-map in this process, and if not, why.
 *
 * @example
 * ```ts
 * import { mmapSupport } from "./libc.ts";
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
 * import { hostMemcpy } from "./libc.ts";
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
