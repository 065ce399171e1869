/**
 * Host -> GPU copies of expert weights, by one of three paths:
 *
 * - `write`: `queue.writeBuffer` straight from the memory-mapped file (one host memcpy into the
 *   implementation's staging, then the DMA). The fast path on Deno's native WebGPU and the default
 *   (`auto`) there.
 * - `mapped`: a ring of MAP_WRITE staging buffers, each filled on the CPU by several `memcpy` calls
 *   running at once, then copied into the slot by `copyBufferToBuffer`. On Dawn the mapped range is
 *   the staging memory itself, so this is the fast path there. On native it is the slow path (Deno
 *   copies the mapping into a V8 buffer and back) but gives the same bytes. `auto` picks it on Dawn.
 * - `pinned`: every expert copied once, at load, into host-visible buffers; an upload is a GPU-side
 *   copy over the bus with no CPU copy (`./uploader_pinned.ts`). It holds a second host copy of the
 *   experts, so it is chosen explicitly, never by `auto`.
 *
 * The rates of both paths and the soak the mapped ring passed: `docs/decisions.md`.
 *
 * How `mapped` fills its staging buffers, and the rules its ring keeps: `./uploader_mapped.ts`.
 * Copies staged by `mapped` are submitted when a staging buffer fills or on
 * {@linkcode Uploader.flush}; callers flush before submitting the work that reads the destination,
 * and keep the source (e.g. the mapped checkpoint) open until `upload()` has returned.
 *
 * @example
 * ```ts ignore
 * const up = createUploader(gpu, "mapped", { stagingBytes: 64 << 20, buffers: 3, threads: 8 });
 * await up.upload(slotBuffer, 0, tensor.bytes());
 * up.flush();
 * console.log(up.stats.fill, up.stats.waitSeconds);
 * await up.dispose();
 * ```
 * @module
 */
import type { Gpu } from "../base/gpu/device.ts";
import { ArgumentError, PregateError } from "../base/errors.ts";
import { type HostMemcpy, hostMemcpy, mmapSupport } from "../weights/mmap.ts";
import {
  badOffset,
  itemBytes,
  type Uploader,
  type UploaderOptions,
  type UploaderStats,
  type UploadItem,
  type UploadPath,
  type UploadSource,
} from "./uploader_types.ts";
import { MappedUploader } from "./uploader_mapped.ts";

export { PinnedUploader } from "./uploader_pinned.ts";
export type {
  FillMode,
  Uploader,
  UploaderOptions,
  UploaderStats,
  UploadItem,
  UploadPath,
  UploadSource,
} from "./uploader_types.ts";

/** `queue.writeBuffer` through {@linkcode Gpu.write}. */
class WriteUploader implements Uploader {
  readonly path = "write" as const;
  bytes = 0;
  #gpu: Gpu;
  constructor(gpu: Gpu) {
    this.#gpu = gpu;
  }
  get stats(): UploaderStats {
    return {
      path: this.path,
      fill: "writeBuffer",
      threads: 1,
      bytes: this.bytes,
      cycles: 0,
      submits: 0,
      pieces: 0,
      fillSeconds: 0,
      waitSeconds: 0,
      callSeconds: 0,
      stagingBuffers: 0,
      stagingBytes: 0,
    };
  }
  upload(dst: GPUBuffer, offset: number, source: Uint8Array | UploadSource): Promise<void> {
    const bad = badOffset([{ offset }]);
    if (bad) return Promise.reject(bad);
    const data = itemBytes(source);
    this.#gpu.write(dst, data, offset); // chunked, ragged tail padded
    this.bytes += data.byteLength;
    return Promise.resolve();
  }
  async uploadMany(items: readonly UploadItem[]): Promise<void> {
    for (const it of items) await this.upload(it.dst, it.offset, it.data);
  }
  flush(): void {}
  dispose(): Promise<void> {
    return Promise.resolve();
  }
}

const noticed = new WeakSet<(message: string) => void>();
const defaultLog = (message: string): void => console.error(message);

function notice(log: (message: string) => void, message: string): void {
  if (noticed.has(log)) return;
  noticed.add(log);
  log(message);
}

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new ArgumentError(name, `expected an integer >= ${min}, got ${v}`);
  }
}

/**
 * The path `auto` stands for on `gpu`: `mapped` on Dawn, `write` on Deno's native WebGPU.
 *
 * @example
 * ```ts ignore
 * console.log(resolveUploadPath(gpu, "auto")); // "mapped" on Dawn
 * ```
 */
export function resolveUploadPath(gpu: Pick<Gpu, "impl">, path: UploadPath | "auto"): UploadPath {
  return path === "auto" ? (gpu.impl === "dawn" ? "mapped" : "write") : path;
}

/**
 * Creates an uploader. `auto` picks `mapped` on Dawn and `write` on native, the faster path of each.
 */
export function createUploader(
  gpu: Gpu,
  path: UploadPath | "auto" = "auto",
  opts: UploaderOptions = {},
): Uploader {
  if (path === "pinned") {
    throw new ArgumentError(
      "uploader",
      "'pinned' copies from a store filled at load: create it with PinnedUploader.create",
    );
  }
  if (path !== "auto" && path !== "write" && path !== "mapped") {
    throw new ArgumentError("uploader", `expected auto, write, mapped or pinned, got '${path}'`);
  }
  path = resolveUploadPath(gpu, path);
  if (path !== "mapped") return new WriteUploader(gpu);
  const stagingBytes = opts.stagingBytes ?? 64 << 20;
  const buffers = opts.buffers ?? 3;
  // At most 8 copy threads: more slowed expert copies beside decode (docs/decisions.md).
  const threads = opts.threads ?? Math.min(8, Math.max(1, navigator.hardwareConcurrency || 4));
  const minPieceBytes = opts.minPieceBytes ?? 256 << 10;
  const fill = opts.fill ?? "auto";
  const log = opts.log ?? defaultLog;
  if (!Number.isInteger(stagingBytes) || stagingBytes < 256 || stagingBytes % 4) {
    throw new ArgumentError(
      "stagingBytes",
      `expected a multiple of 4 >= 256, got ${stagingBytes}`,
    );
  }
  checkInt("buffers", buffers, 1);
  checkInt("threads", threads, 1);
  checkInt("minPieceBytes", minPieceBytes, 64);
  if (fill !== "auto" && fill !== "ffi" && fill !== "set") {
    throw new ArgumentError("fill", `expected auto, ffi or set, got '${fill}'`);
  }
  let memcpy: HostMemcpy | null = null;
  if (fill !== "set") {
    memcpy = hostMemcpy();
    if (!memcpy) {
      const reason = mmapSupport().reason ?? "FFI is unavailable";
      if (fill === "ffi") {
        throw new PregateError(
          "E_NO_FFI",
          `uploader: cannot fill staging with memcpy: ${reason}`,
          "run with --allow-ffi, or use fill 'set'",
        );
      }
      notice(
        log,
        `pregate: uploader: ${reason}: staging buffers are filled with Uint8Array.set on one ` +
          `thread (run with --allow-ffi for parallel memcpy)`,
      );
    }
  }
  return new MappedUploader(gpu, {
    stagingBytes,
    buffers,
    threads,
    minPieceBytes,
    memcpy,
    log,
  });
}
