/**
 * Host -> GPU copies of expert weights, by one of two paths:
 *
 * - `write`: `queue.writeBuffer` straight from the memory-mapped file (one host memcpy into the
 *   implementation's staging, then the DMA). The fast path on Deno's native WebGPU (1.7-4.1 GB/s on
 *   the H200) and the default everywhere for now.
 * - `mapped`: a ring of MAP_WRITE staging buffers filled through `getMappedRange`, then
 *   `copyBufferToBuffer` into the slot. Measured 8.9-12.6 GB/s on Dawn (vs 2.5 GB/s for writeBuffer) and
 *   0.02 GB/s on native. Dawn has crashed after a few dozen 64 MB map/unmap cycles in an earlier probe
 *   (../shared/docs/platform.md), so this path is opt-in until `tools/soak_upload.ts` has run thousands
 *   of cycles on the GPU host without a fault.
 *
 * Copies staged by `mapped` are submitted when a staging buffer fills or on {@linkcode Uploader.flush};
 * callers flush before submitting the work that reads the destination.
 *
 * @example
 * ```ts ignore
 * const up = createUploader(gpu, "mapped", { stagingBytes: 64 << 20, buffers: 4 });
 * await up.upload(slotBuffer, 0, tensor.bytes());
 * up.flush();
 * ```
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { ArgumentError } from "../errors.ts";

/** How expert bytes travel to the GPU. */
export type UploadPath = "write" | "mapped";

/** Copies host bytes into GPU buffers. */
export interface Uploader {
  /** The path in use. */
  readonly path: UploadPath;
  /** Bytes copied so far. */
  readonly bytes: number;
  /** Copies `data` into `dst` at byte `offset` (a multiple of 4); may wait for a staging buffer. */
  upload(dst: GPUBuffer, offset: number, data: Uint8Array): Promise<void>;
  /** Submits every staged copy (no-op for `write`). */
  flush(): void;
  /** Submits what is staged and frees the staging buffers. */
  dispose(): void;
}

/** `queue.writeBuffer` through {@linkcode Gpu.write}. */
class WriteUploader implements Uploader {
  readonly path = "write" as const;
  bytes = 0;
  #gpu: Gpu;
  constructor(gpu: Gpu) {
    this.#gpu = gpu;
  }
  upload(dst: GPUBuffer, offset: number, data: Uint8Array): Promise<void> {
    this.#gpu.write(dst, data, offset); // chunked, ragged tail padded
    this.bytes += data.byteLength;
    return Promise.resolve();
  }
  flush(): void {}
  dispose(): void {}
}

interface Staging {
  buffer: GPUBuffer;
  /** The mapped range while mapped, else null. */
  view: Uint8Array | null;
  /** Pending remap, while the buffer's copies are in flight. */
  remap: Promise<void> | null;
  cursor: number;
  copies: { src: number; dst: GPUBuffer; dstOffset: number; size: number }[];
}

/** A ring of mapped staging buffers, filled on the CPU and copied on the GPU. */
class MappedUploader implements Uploader {
  readonly path = "mapped" as const;
  bytes = 0;
  /** Map/unmap cycles completed (for soak tests). */
  cycles = 0;
  #gpu: Gpu;
  #ring: Staging[];
  #current = 0;

  constructor(gpu: Gpu, stagingBytes: number, buffers: number) {
    this.#gpu = gpu;
    this.#ring = Array.from({ length: buffers }, (_, i) => {
      const buffer = gpu.createBuffer({
        size: stagingBytes,
        purpose: "staging",
        label: `upload.staging.${i}`,
        usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
        mappedAtCreation: true,
      });
      return {
        buffer,
        view: new Uint8Array(buffer.getMappedRange()),
        remap: null,
        cursor: 0,
        copies: [],
      };
    });
  }

  async #ready(): Promise<Staging> {
    const s = this.#ring[this.#current];
    if (!s.view) {
      await s.remap;
      s.remap = null;
      s.view = new Uint8Array(s.buffer.getMappedRange());
      s.cursor = 0;
    }
    return s;
  }

  /** Unmaps the current buffer, submits its copies and starts remapping it; moves to the next. */
  #seal(): void {
    const s = this.#ring[this.#current];
    if (!s.view || s.copies.length === 0) return;
    s.view = null;
    s.buffer.unmap();
    const enc = this.#gpu.device.createCommandEncoder();
    for (const c of s.copies) enc.copyBufferToBuffer(s.buffer, c.src, c.dst, c.dstOffset, c.size);
    this.#gpu.device.queue.submit([enc.finish()]);
    s.copies = [];
    s.remap = s.buffer.mapAsync(GPUMapMode.WRITE).then(() => {
      this.cycles++;
    });
    s.remap.catch(() => {}); // a buffer destroyed while remapping (dispose) is not an error
    this.#current = (this.#current + 1) % this.#ring.length;
  }

  async upload(dst: GPUBuffer, offset: number, data: Uint8Array): Promise<void> {
    if (offset % 4) throw new ArgumentError("offset", `must be a multiple of 4, got ${offset}`);
    let done = 0;
    while (done < data.byteLength) {
      const s = await this.#ready();
      const room = s.view!.byteLength - s.cursor;
      if (room < 4) {
        this.#seal();
        continue;
      }
      const n = Math.min(room & ~3, data.byteLength - done);
      const padded = (n + 3) & ~3;
      s.view!.set(data.subarray(done, done + n), s.cursor);
      if (padded > n) s.view!.fill(0, s.cursor + n, s.cursor + padded);
      s.copies.push({ src: s.cursor, dst, dstOffset: offset + done, size: padded });
      s.cursor += padded;
      done += n;
      if (s.cursor >= s.view!.byteLength) this.#seal();
    }
    this.bytes += data.byteLength;
  }

  flush(): void {
    this.#seal();
  }

  dispose(): void {
    this.flush();
    for (const s of this.#ring) this.#gpu.destroyBuffer(s.buffer);
  }
}

/** Options of {@linkcode createUploader}. */
export interface UploaderOptions {
  /** Bytes per staging buffer (`mapped`); default 64 MiB. */
  stagingBytes?: number;
  /** Staging buffers in the ring (`mapped`); default 3. */
  buffers?: number;
}

/**
 * Creates an uploader. `auto` picks `write` for now on both implementations (see the module docs for
 * why `mapped` is opt-in on Dawn).
 */
export function createUploader(
  gpu: Gpu,
  path: UploadPath | "auto" = "auto",
  opts: UploaderOptions = {},
): Uploader & { cycles?: number } {
  if (path !== "auto" && path !== "write" && path !== "mapped") {
    throw new ArgumentError("uploader", `expected auto, write or mapped, got '${path}'`);
  }
  if (path === "mapped") {
    const stagingBytes = opts.stagingBytes ?? 64 << 20;
    const buffers = opts.buffers ?? 3;
    if (!Number.isInteger(stagingBytes) || stagingBytes < 256 || stagingBytes % 4) {
      throw new ArgumentError(
        "stagingBytes",
        `expected a multiple of 4 >= 256, got ${stagingBytes}`,
      );
    }
    if (!Number.isInteger(buffers) || buffers < 1) {
      throw new ArgumentError("buffers", `expected a positive integer, got ${buffers}`);
    }
    return new MappedUploader(gpu, stagingBytes, buffers);
  }
  return new WriteUploader(gpu);
}
