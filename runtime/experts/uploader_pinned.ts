/**
 * The `pinned` upload path: every expert tensor is copied once, at load, into host-visible GPU
 * buffers (`MAP_WRITE | COPY_SRC`, unmapped once filled). An upload is then one
 * `copyBufferToBuffer` per tensor, run by the GPU's copy engine over the bus, with no CPU copy per
 * token: the pinned host memory the Pre-gated MoE paper copies its experts from.
 *
 * Where Dawn (or wgpu) places mappable buffers is the driver's choice. On a host without a
 * resizable BAR they are system memory and this is the bus-speed path; on a host with one they may
 * be GPU memory, which would put every expert on the GPU. So after the fill a short copy out of the
 * store is timed, and a rate above what PCIe 5 x16 can carry is reported through `log` (the
 * measured rate stays in {@linkcode PinnedUploader.storeGBs}). The store's bytes count as host
 * memory in `Gpu.memory()` (mappable buffers), not against the device budget.
 *
 * Uploads pass their source tensor ({@linkcode UploadItem.data}), found by name and never read
 * again; raw bytes, a source that was not pinned, or one whose length differs from the pinned copy
 * are refused with a typed error.
 *
 * @example
 * ```ts ignore
 * const up = await PinnedUploader.create(gpu, [tensor]); // a Tensor is a UploadSource
 * await up.uploadMany([{ dst: slot, offset: 0, data: tensor }]);
 * up.flush();
 * await up.dispose();
 * ```
 * @module
 */
import type { Gpu } from "../base/gpu/device.ts";
import { ArgumentError, GpuError } from "../base/errors.ts";
import type { HostMemcpy } from "../weights/mmap.ts";
import {
  addressOf,
  refusal,
  type Uploader,
  type UploaderStats,
  type UploadItem,
  type UploadSource,
} from "./uploader_types.ts";

/** Options of {@linkcode PinnedUploader.create}. */
export interface PinnedOptions {
  /** Most bytes per store buffer (a multiple of 4); default min(1 GiB, the device's limit). */
  bufferBytes?: number;
  /** Parallel `memcpy` calls filling the store; default min(8, cores). */
  threads?: number;
  /** libc `memcpy` through FFI, or null to fill with `Uint8Array.set`. */
  memcpy?: HostMemcpy | null;
  /** Fill progress: bytes pinned, total bytes. */
  onProgress?: (done: number, total: number) => void;
  /** Receives one-line notices (the store's placement). Default stderr. */
  log?: (message: string) => void;
  /**
   * A device buffer (COPY_DST) whose contents may be overwritten, for the timed copy out of the
   * store; default: a temporary one.
   */
  scratch?: GPUBuffer;
  /**
   * Most bytes the store may take; default the host's available memory
   * (`Deno.systemMemoryInfo().available` where `--allow-sys` grants it; unbounded otherwise).
   */
  hostMemoryLimit?: number;
}

/** Above this copy rate (GB/s) out of the store, its bytes did not cross PCIe 5 x16 (63 GB/s). */
export const BUS_CEILING_GBS = 64;

interface Place {
  readonly buffer: GPUBuffer;
  readonly offset: number;
  readonly size: number;
}

interface Pending {
  readonly src: Place;
  readonly dst: GPUBuffer;
  readonly dstOffset: number;
}

/**
 * Where each source goes in the store: buffers of at most `bufferBytes` (one source alone may take
 * a larger one), each source at a 4-aligned offset, none split across buffers.
 *
 * @example
 * ```ts
 * import { packSources } from "./uploader_pinned.ts";
 * const { places, bufferSizes } = packSources([6, 8, 10], 16);
 * console.log(places, bufferSizes); // [{0,0}, {0,8}, {1,0}], [16, 12]
 * ```
 */
export function packSources(
  sizes: readonly number[],
  bufferBytes: number,
): { places: { buffer: number; offset: number }[]; bufferSizes: number[] } {
  const places: { buffer: number; offset: number }[] = [];
  const bufferSizes: number[] = [];
  let cursor = 0;
  for (const size of sizes) {
    const padded = (size + 3) & ~3;
    if (!bufferSizes.length || (cursor > 0 && cursor + padded > bufferBytes)) {
      bufferSizes.push(4);
      cursor = 0;
    }
    const buffer = bufferSizes.length - 1;
    places.push({ buffer, offset: cursor });
    cursor += padded;
    bufferSizes[buffer] = Math.max(cursor, 4);
  }
  return { places, bufferSizes };
}

/** A host-visible copy of every expert, copied into slots by the GPU. */
export class PinnedUploader implements Uploader {
  readonly path = "pinned" as const;
  /** GB/s of the timed copy out of the store after the fill (see the module's notes). */
  readonly storeGBs: number;
  #gpu: Gpu;
  #places: Map<string, Place>;
  #buffers: GPUBuffer[];
  #largest: number;
  #pending: Pending[] = [];
  #bytes = 0;
  #submits = 0;
  #callSeconds = 0;
  #disposed = false;

  private constructor(gpu: Gpu, places: Map<string, Place>, buffers: GPUBuffer[], gbs: number) {
    this.#gpu = gpu;
    this.#places = places;
    this.#buffers = buffers;
    this.#largest = Math.max(0, ...buffers.map((b) => b.size));
    this.storeGBs = gbs;
  }

  /**
   * Allocates the store, fills it from `sources` (in parallel through `memcpy` when given), unmaps
   * it and times a copy out of it.
   *
   * @throws {ArgumentError} for a repeated name, a source larger than the device's largest
   * buffer, or a store larger than `hostMemoryLimit`.
   * @throws {GpuError} when the driver cannot allocate a store buffer.
   */
  static async create(
    gpu: Gpu,
    sources: readonly UploadSource[],
    opts: PinnedOptions = {},
  ): Promise<PinnedUploader> {
    const limit = gpu.limits.maxBufferSize;
    const bufferBytes = Math.min(opts.bufferBytes ?? 1 << 30, limit) & ~3;
    const names = new Set<string>();
    for (const s of sources) {
      if (names.has(s.name)) throw new ArgumentError("sources", `'${s.name}' is given twice`);
      names.add(s.name);
      if (s.byteLength > limit - 3) {
        throw new ArgumentError(
          "sources",
          `'${s.name}' has ${s.byteLength} bytes, more than the device's largest buffer ` +
            `(maxBufferSize ${limit})`,
        );
      }
    }
    const { places: at, bufferSizes } = packSources(sources.map((s) => s.byteLength), bufferBytes);
    const inBuffer: number[][] = bufferSizes.map(() => []);
    at.forEach((p, i) => inBuffer[p.buffer].push(i));
    const total = sources.reduce((n, s) => n + s.byteLength, 0);
    const hostLimit = opts.hostMemoryLimit ?? hostAvailableBytes();
    if (total > hostLimit) {
      throw new ArgumentError(
        "uploader",
        `'pinned' keeps a copy of every expert in host memory: ${gib(total)} for ` +
          `${sources.length} tensors, but ${gib(hostLimit)} is available`,
        USE_MAPPED,
      );
    }
    const buffers: GPUBuffer[] = [];
    const places = new Map<string, Place>();
    try {
      let done = 0;
      for (let b = 0; b < bufferSizes.length; b++) {
        const buffer = await allocate(gpu, bufferSizes[b], b, done, total);
        buffers.push(buffer);
        const mine = inBuffer[b];
        const parts = mine.map((i) => ({ at: at[i].offset, data: bytesOf(sources[i]) }));
        await fillBuffer(buffer, parts, {
          memcpy: opts.memcpy ?? null,
          threads: opts.threads ?? Math.min(8, Math.max(1, navigator.hardwareConcurrency || 4)),
        });
        buffer.unmap();
        for (const i of mine) {
          places.set(sources[i].name, {
            buffer,
            offset: at[i].offset,
            size: sources[i].byteLength,
          });
          done += sources[i].byteLength;
        }
        opts.onProgress?.(done, total);
      }
      const gbs = buffers.length ? await copyRate(gpu, buffers[0], opts.scratch) : 0;
      const notice = placementNotice(gbs, gpu.isFallback);
      if (notice) (opts.log ?? ((m) => console.error(m)))(notice);
      return new PinnedUploader(gpu, places, buffers, gbs);
    } catch (e) {
      for (const b of buffers) gpu.destroyBuffer(b);
      throw e;
    }
  }

  get bytes(): number {
    return this.#bytes;
  }

  get stats(): UploaderStats {
    return {
      path: this.path,
      fill: "none",
      threads: 1,
      bytes: this.#bytes,
      cycles: 0,
      submits: this.#submits,
      pieces: 0,
      fillSeconds: 0,
      waitSeconds: 0,
      callSeconds: this.#callSeconds,
      stagingBuffers: this.#buffers.length,
      stagingBytes: this.#largest,
    };
  }

  upload(dst: GPUBuffer, offset: number, data: Uint8Array | UploadSource): Promise<void> {
    return this.uploadMany([{ dst, offset, data }]);
  }

  /** Queues one copy per item out of the store; {@linkcode flush} submits them. */
  uploadMany(items: readonly UploadItem[]): Promise<void> {
    const refused = refusal(this.#disposed, items);
    if (refused) return Promise.reject(refused);
    const copies: Pending[] = [];
    for (const { dst, offset, data } of items) {
      if (data instanceof Uint8Array) {
        return Promise.reject(
          new ArgumentError(
            "data",
            "the pinned uploader copies only named tensors; the item has no source, only bytes",
          ),
        );
      }
      const src = this.#places.get(data.name);
      if (!src) {
        return Promise.reject(
          new ArgumentError("data", `tensor '${data.name}' was not pinned at load`),
        );
      }
      if (src.size !== data.byteLength) {
        return Promise.reject(
          new ArgumentError(
            "data",
            `tensor '${data.name}': ${data.byteLength} bytes given, ${src.size} pinned`,
          ),
        );
      }
      copies.push({ src, dst, dstOffset: offset });
    }
    this.#pending.push(...copies);
    for (const c of copies) this.#bytes += c.src.size;
    return Promise.resolve();
  }

  /** Submits the queued copies. */
  flush(): void {
    if (!this.#pending.length) return;
    const t0 = performance.now();
    const enc = this.#gpu.device.createCommandEncoder();
    for (const { src, dst, dstOffset } of this.#pending) {
      enc.copyBufferToBuffer(src.buffer, src.offset, dst, dstOffset, (src.size + 3) & ~3);
    }
    this.#gpu.device.queue.submit([enc.finish()]);
    this.#pending = [];
    this.#submits++;
    this.#callSeconds += (performance.now() - t0) / 1e3;
  }

  /** Submits what is queued and frees the store. */
  dispose(): Promise<void> {
    if (!this.#disposed) {
      this.flush();
      this.#disposed = true;
      for (const b of this.#buffers) this.#gpu.destroyBuffer(b);
      this.#places.clear();
    }
    return Promise.resolve();
  }
}

/**
 * The notice for a store whose copies out ran at `gbs` GB/s: above {@linkcode BUS_CEILING_GBS} the
 * bytes did not cross the bus, so the store sits in GPU memory (none on a software adapter, whose
 * memory is host memory whatever the rate).
 *
 * @example
 * ```ts
 * import { placementNotice } from "./uploader_pinned.ts";
 * console.log(placementNotice(40, false)); // null: system memory, read over PCIe
 * ```
 */
export function placementNotice(gbs: number, software: boolean): string | null {
  if (gbs <= BUS_CEILING_GBS || software) return null;
  return `pregate: uploader pinned: copies out of the pinned experts ran at ${gbs.toFixed(0)} ` +
    `GB/s, faster than PCIe 5 x16 carries: this device keeps mappable buffers in GPU memory ` +
    `(resizable BAR), so the experts occupy GPU memory; --uploader mapped avoids it`;
}

/** The hint of the store's refusals. */
const USE_MAPPED = '--uploader mapped (uploader: "mapped") copies each token\'s experts ' +
  "through a small staging ring instead";

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/**
 * The host's available memory in bytes, or Infinity where the runtime does not say (outside Deno,
 * or without `--allow-sys`: the permission is queried, never prompted for).
 */
function hostAvailableBytes(): number {
  try {
    const sys = Deno.permissions.querySync({ name: "sys", kind: "systemMemoryInfo" });
    return sys.state === "granted" ? Deno.systemMemoryInfo().available : Infinity;
  } catch {
    return Infinity;
  }
}

/** One store buffer, mapped; an allocation the driver refuses becomes a typed error. */
async function allocate(
  gpu: Gpu,
  size: number,
  index: number,
  done: number,
  total: number,
): Promise<GPUBuffer> {
  const failed = (cause?: unknown) =>
    new GpuError(
      `the pinned store's buffer ${index} (${size} bytes) could not be allocated after ` +
        `${gib(done)} of ${gib(total)} were pinned`,
      USE_MAPPED,
      { cause },
    );
  gpu.device.pushErrorScope("out-of-memory");
  let buffer: GPUBuffer;
  try {
    buffer = gpu.createBuffer({
      size,
      purpose: "staging",
      label: `upload.pinned.${index}`,
      usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
    });
  } catch (e) {
    await gpu.device.popErrorScope();
    throw failed(e);
  }
  const oom = await gpu.device.popErrorScope();
  if (oom) {
    gpu.destroyBuffer(buffer);
    throw failed(oom.message);
  }
  return buffer;
}

/** The bytes of `s`, checked against its length. */
function bytesOf(s: UploadSource): Uint8Array {
  const data = s.bytes();
  if (data.byteLength !== s.byteLength) {
    throw new ArgumentError(
      "sources",
      `'${s.name}' gave ${data.byteLength} bytes, ${s.byteLength} expected`,
    );
  }
  return data;
}

/** Copies `parts` into the mapped `buffer` (zeroing each one's padding to 4 bytes). */
async function fillBuffer(
  buffer: GPUBuffer,
  parts: readonly { at: number; data: Uint8Array }[],
  o: { memcpy: HostMemcpy | null; threads: number },
): Promise<void> {
  const range = buffer.getMappedRange();
  const view = new Uint8Array(range);
  const m = o.memcpy;
  const base = m ? Deno.UnsafePointer.of(range) : null;
  const jobs: (() => void | Promise<void>)[] = [];
  for (const { at, data } of parts) {
    view.fill(0, at + data.byteLength, at + ((data.byteLength + 3) & ~3));
    const src = base ? addressOf(data) : null;
    if (!m || !base || !src || data.byteLength === 0) {
      jobs.push(() => view.set(data, at));
    } else {
      jobs.push(() => m.copyAsync(Deno.UnsafePointer.offset(base, at)!, src, data.byteLength));
    }
  }
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(o.threads, jobs.length) }, worker));
}

/**
 * GB/s of the best of three copies of up to 64 MiB out of `src` into `scratch` (or a temporary
 * device buffer).
 */
async function copyRate(gpu: Gpu, src: GPUBuffer, scratch?: GPUBuffer): Promise<number> {
  const size = Math.min(src.size, scratch?.size ?? Infinity, 64 << 20) & ~3;
  if (size < 4) return 0;
  const dst = scratch ?? gpu.storage("other", size, "upload.pinned.probe");
  try {
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const enc = gpu.device.createCommandEncoder();
      enc.copyBufferToBuffer(src, 0, dst, 0, size);
      gpu.device.queue.submit([enc.finish()]);
      await gpu.device.queue.onSubmittedWorkDone();
      best = Math.min(best, (performance.now() - t0) / 1e3);
    }
    return size / Math.max(best, 1e-9) / 1e9;
  } finally {
    if (!scratch) gpu.destroyBuffer(dst);
  }
}
