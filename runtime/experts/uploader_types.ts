/**
 * The vocabulary of the expert uploaders (paths, the {@linkcode Uploader} interface, options,
 * counters), kept apart from the two implementations. Import these from `./uploader.ts`, which
 * re-exports every one.
 *
 * @module
 */
import { ArgumentError, PregateError } from "../base/errors.ts";

/**
 * How expert bytes travel to the GPU: `write` and `mapped` copy from the mapped checkpoint at each
 * upload; `pinned` copies from a host-visible copy of every expert made once at load.
 */
export type UploadPath = "write" | "mapped" | "pinned";

/** How the `mapped` path fills staging: parallel FFI `memcpy`, or `Uint8Array.set`. */
export type FillMode = "ffi" | "set";

/** What an uploader has done so far. */
export interface UploaderStats {
  /** The path in use. */
  path: UploadPath;
  /** How staging is filled (`mapped`), `writeBuffer`, or `none` (`pinned`: filled at load). */
  fill: FillMode | "writeBuffer" | "none";
  /** Parallel copies per fill (`mapped` with `ffi`), else 1. */
  threads: number;
  /** Bytes copied so far. */
  bytes: number;
  /** Staging map/unmap cycles completed (`mapped`). */
  cycles: number;
  /** Queue submissions of staged copies (`mapped`). */
  submits: number;
  /** `memcpy` calls run on Deno's worker threads (`mapped` with `ffi`). */
  pieces: number;
  /** Seconds spent filling staging buffers on the CPU (`mapped`). */
  fillSeconds: number;
  /** Seconds spent waiting for a staging buffer to be remapped (`mapped`). */
  waitSeconds: number;
  /**
   * Seconds the JS thread spent in WebGPU calls of the staging cycle (`mapped`): `getMappedRange`,
   * `unmap`, encoding and submitting the copies, `mapAsync`. Fills cannot complete meanwhile.
   */
  callSeconds: number;
  /**
   * Staging buffers and bytes of the largest: the ring (`mapped`), the buffers holding every
   * expert (`pinned`); 0 for `write`.
   */
  stagingBuffers: number;
  stagingBytes: number;
}

/**
 * A named tensor whose bytes are read only when needed (a safetensors or GGUF `Tensor` is one):
 * what the `pinned` path copies at load and finds again by name.
 */
export interface UploadSource {
  readonly name: string;
  readonly byteLength: number;
  /** The bytes (a view of a mapped file, say); they stay valid until the upload settles. */
  bytes(): Uint8Array;
}

/** One range for {@linkcode Uploader.uploadMany}. */
export interface UploadItem {
  /** Destination buffer. */
  readonly dst: GPUBuffer;
  /** Byte offset in `dst` (a multiple of 4). */
  readonly offset: number;
  /**
   * The bytes, or a named source whose bytes `write` and `mapped` read when they copy it; `pinned`
   * copies only sources, from its own copy found by name, and never reads them again.
   */
  readonly data: Uint8Array | UploadSource;
}

/** Copies host bytes into GPU buffers. */
export interface Uploader {
  /** The path in use. */
  readonly path: UploadPath;
  /** Bytes copied so far. */
  readonly bytes: number;
  /** Counters and timings. */
  readonly stats: UploaderStats;
  /**
   * Copies `data` into `dst` at byte `offset` (a multiple of 4); a ragged tail is padded with zeros
   * to 4 bytes. May wait for a staging buffer. `data` must stay valid until the promise settles.
   */
  upload(dst: GPUBuffer, offset: number, data: Uint8Array | UploadSource): Promise<void>;
  /**
   * Copies several ranges, as {@linkcode upload} each, in order. On `mapped` the fills of all of
   * them share the copy threads at once (one wait per staging buffer instead of one per range),
   * which is how the engine copies a layer's experts.
   */
  uploadMany(items: readonly UploadItem[]): Promise<void>;
  /** Submits every staged copy (no-op for `write`). Throws while an upload is in flight. */
  flush(): void;
  /**
   * Submits what is staged and frees the staging buffers; the promise resolves once they are
   * destroyed (after any pending remap settles). Await it before destroying the device.
   */
  dispose(): Promise<void>;
}

/** Options of {@linkcode createUploader}. */
export interface UploaderOptions {
  /** Bytes per staging buffer (`mapped`); a multiple of 4, at least 256; default 64 MiB. */
  stagingBytes?: number;
  /** Staging buffers in the ring (`mapped`); default 3. */
  buffers?: number;
  /**
   * Parallel `memcpy` calls per fill (`mapped`); default `min(8, navigator.hardwareConcurrency)`.
   */
  threads?: number;
  /**
   * Least bytes per parallel piece (`mapped`); copies shorter than this use `Uint8Array.set`.
   * At least 64; default 256 KiB.
   */
  minPieceBytes?: number;
  /**
   * How staging is filled (`mapped`): `auto` (default) uses FFI `memcpy` when permitted and
   * `Uint8Array.set` otherwise, with a notice through `log`; `ffi` throws when FFI is unusable.
   */
  fill?: "auto" | FillMode;
  /** Receives one-line notices (e.g. the `set` fallback), each at most once. Default stderr. */
  log?: (message: string) => void;
}

/** The error for the first destination offset that is not a multiple of 4, if any. */
export function badOffset(items: readonly { offset: number }[]): ArgumentError | undefined {
  const it = items.find((i) => !Number.isSafeInteger(i.offset) || i.offset < 0 || i.offset % 4);
  return it && new ArgumentError("offset", `must be a multiple of 4, got ${it.offset}`);
}

/**
 * Why a batch of uploads is refused, if it is: the uploader was disposed, or an offset is bad.
 */
export function refusal(
  disposed: boolean,
  items: readonly { offset: number }[],
): PregateError | ArgumentError | undefined {
  if (disposed) {
    return new PregateError(
      "E_UPLOADER_DISPOSED",
      "upload() after dispose()",
      "create a new uploader",
    );
  }
  return badOffset(items);
}

/**
 * The address of `data`'s first byte for FFI copies, or null when FFI cannot take it (detached, or
 * a buffer kind FFI refuses). The caller keeps `data` referenced while a copy reads it.
 */
export function addressOf(data: Uint8Array): Deno.PointerObject | null {
  try {
    // Touching .buffer moves a small on-heap typed array off the V8 heap, where it stays put.
    void data.buffer;
    return Deno.UnsafePointer.of(data as Uint8Array<ArrayBuffer>);
  } catch {
    return null;
  }
}

/** The bytes of an item's data (a source's are read now). */
export function itemBytes(data: Uint8Array | UploadSource): Uint8Array {
  return data instanceof Uint8Array ? data : data.bytes();
}
