/**
 * The `mapped` upload path: a ring of MAP_WRITE staging buffers, each filled on the CPU by several
 * `memcpy` calls running at once, then copied into the destination by `copyBufferToBuffer`.
 *
 * ## How `mapped` fills a staging buffer
 * A copy of `n` bytes is split into up to `threads` pieces of at least `minPieceBytes`, and each
 * piece is one libc `memcpy` from the source's address to the mapped range's address, called
 * through FFI with `nonblocking: true` (`hostMemcpy`, ../weights/libc.ts): the pieces run on
 * Deno's blocking-pool threads at the same time while the JS thread stays free (Dawn resolves
 * `mapAsync` from the JS event loop, so remaps keep completing during a fill). Addresses come from
 * `Deno.UnsafePointer.of`, which works for mapped-file views (`UnsafePointerView.getArrayBuffer`),
 * ordinary buffers, Dawn's mapped ranges and native's V8 copies of them. A copy shorter than
 * `minPieceBytes` is one `memcpy` on the JS thread (a thread hop would cost more). Without FFI (no
 * `--allow-ffi`, or `fill: "set"`) staging is filled by `Uint8Array.set` on the JS thread, and
 * `log` says so once. While one buffer's copy runs on the GPU, the next one is filled; a fill waits
 * only when the ring comes round to a buffer whose remap has not completed (counted in
 * {@linkcode UploaderStats.waitSeconds}).
 *
 * ## Rules the ring keeps (the dawn.node crash)
 * ../shared/docs/platform.md reports dawn.node dying (segfault; once `std::system_error: Invalid
 * argument`) after a few dozen 64 MB map/unmap cycles, with and without FFI, cause unknown.
 * dawn.node hands out each mapped range as an external `ArrayBuffer` over Dawn's memory, detaches
 * it on `unmap()`/`destroy()`, and resolves `mapAsync` through a callback holding a raw pointer to
 * its buffer object; when V8 collects such a detached `ArrayBuffer` (GCs come with bytes mapped, so
 * with cycles), Deno's N-API runs its backing store's deleter. The suspects are therefore a JS view
 * of a range used after its unmap, a copy still writing into a range being unmapped, a buffer
 * destroyed (or collected) while its `mapAsync` is pending, and the collection of detached mapped
 * buffers. The ring rules the first three out by construction (the fourth is V8's to
 * decide; the soak the ring passed is in `docs/decisions.md`):
 * 1. A mapped range's `ArrayBuffer` (and its address) is held only while the buffer is mapped and
 *    only by the ring: both are dropped immediately before `unmap()`; no view of it is handed out.
 * 2. Every `memcpy` of a fill has settled before `upload()` returns, uploads run one at a time, and
 *    buffers are unmapped only between uploads: {@linkcode Uploader.flush} throws while an upload
 *    is in flight. So no copy is in flight at an unmap.
 * 3. A buffer is never destroyed (nor unmapped) while its `mapAsync` is pending: `dispose()` waits
 *    for every remap to settle, unmaps what is mapped, then destroys. The ring keeps each staging
 *    `GPUBuffer` referenced until it is destroyed, so none is collected with a map pending.
 *
 * Copies staged by `mapped` are submitted when a staging buffer fills or on
 * {@linkcode Uploader.flush}; callers flush before submitting the work that reads the destination,
 * and keep the source (e.g. the mapped checkpoint) open until `upload()` has returned.
 *
 * @example
 * ```ts ignore
 * const up = new MappedUploader(gpu, {
 *   stagingBytes: 64 << 20, buffers: 3, threads: 8, minPieceBytes: 256 << 10, memcpy: hostMemcpy(),
 *   log: console.error,
 * });
 * await up.upload(slotBuffer, 0, tensor.bytes());
 * up.flush();
 * ```
 * @module
 */
import type { Gpu } from "../base/gpu/device.ts";
import { PregateError } from "../base/errors.ts";
import type { HostMemcpy } from "../weights/mmap.ts";
import {
  addressOf,
  itemBytes,
  refusal,
  type Uploader,
  type UploaderStats,
  type UploadItem,
  type UploadSource,
} from "./uploader_types.ts";

interface Staging {
  readonly buffer: GPUBuffer;
  /** The mapped range, only while mapped (rule 1); null otherwise. */
  range: ArrayBuffer | null;
  /** Its address for FFI copies, only while mapped. */
  ptr: Deno.PointerObject | null;
  /** Whether the buffer is mapped now (at creation, or after its remap resolved). */
  mapped: boolean;
  /** The pending remap, while the buffer's copies are in flight. */
  remap: Promise<void> | null;
  cursor: number;
  copies: { src: number; dst: GPUBuffer; dstOffset: number; size: number }[];
}

/** Awaits every promise, then rethrows the first rejection (none is left running). */
async function settleAll(jobs: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(jobs);
  for (const r of results) if (r.status === "rejected") throw r.reason;
}

/** At most `limit` jobs at once; the rest wait their turn in order. */
class Gate {
  #active = 0;
  #waiting: (() => void)[] = [];
  constructor(readonly limit: number) {}
  async run(job: () => Promise<void>): Promise<void> {
    if (this.#active >= this.limit) await new Promise<void>((r) => this.#waiting.push(r));
    this.#active++;
    try {
      await job();
    } finally {
      this.#active--;
      this.#waiting.shift()?.();
    }
  }
}

/** A ring of mapped staging buffers, filled on the CPU (in parallel) and copied on the GPU. */
export class MappedUploader implements Uploader {
  readonly path = "mapped" as const;
  #bytes = 0;
  #cycles = 0;
  #submits = 0;
  #pieces = 0;
  #fillSeconds = 0;
  #waitSeconds = 0;
  #callSeconds = 0;
  #gpu: Gpu;
  #size: number;
  #ring: Staging[];
  #current = 0;
  #memcpy: HostMemcpy | null;
  #threads: number;
  #minPiece: number;
  #log: (message: string) => void;
  #sourceNoticed = false;
  /** Uploads accepted and not yet settled; they run one at a time, in order. */
  #inFlight = 0;
  #tail: Promise<void> = Promise.resolve();
  #disposed: Promise<void> | null = null;
  /** Bounds the memcpy pieces running at once to `threads` (batches issue many fills together). */
  #gate: Gate;

  constructor(
    gpu: Gpu,
    o: {
      stagingBytes: number;
      buffers: number;
      threads: number;
      minPieceBytes: number;
      memcpy: HostMemcpy | null;
      log: (message: string) => void;
    },
  ) {
    this.#gpu = gpu;
    this.#size = o.stagingBytes;
    this.#memcpy = o.memcpy;
    this.#threads = o.memcpy ? o.threads : 1;
    this.#gate = new Gate(this.#threads);
    this.#minPiece = o.minPieceBytes;
    this.#log = o.log;
    this.#ring = Array.from({ length: o.buffers }, (_, i) => ({
      buffer: gpu.createBuffer({
        size: o.stagingBytes,
        purpose: "staging",
        label: `upload.staging.${i}`,
        usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
        mappedAtCreation: true,
      }),
      range: null,
      ptr: null,
      mapped: true,
      remap: null,
      cursor: 0,
      copies: [],
    }));
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Map/unmap cycles completed (for soak tests). */
  get cycles(): number {
    return this.#cycles;
  }

  get stats(): UploaderStats {
    return {
      path: this.path,
      fill: this.#memcpy ? "ffi" : "set",
      threads: this.#threads,
      bytes: this.#bytes,
      cycles: this.#cycles,
      submits: this.#submits,
      pieces: this.#pieces,
      fillSeconds: this.#fillSeconds,
      waitSeconds: this.#waitSeconds,
      callSeconds: this.#callSeconds,
      stagingBuffers: this.#ring.length,
      stagingBytes: this.#size,
    };
  }

  /** The current staging buffer, mapped, its range taken. */
  async #ready(): Promise<Staging> {
    const s = this.#ring[this.#current];
    if (s.remap) {
      const t0 = performance.now();
      await s.remap; // a failed remap (device lost) fails this upload
      this.#waitSeconds += (performance.now() - t0) / 1e3;
      s.remap = null;
      s.mapped = true;
      s.cursor = 0;
    }
    if (!s.range) {
      const t0 = performance.now();
      s.range = s.buffer.getMappedRange(0, this.#size);
      s.ptr = this.#memcpy ? Deno.UnsafePointer.of(s.range) : null;
      this.#callSeconds += (performance.now() - t0) / 1e3;
    }
    return s;
  }

  /** Unmaps the current buffer, submits its copies and starts remapping it; moves to the next. */
  #seal(): void {
    const s = this.#ring[this.#current];
    if (!s.mapped || s.copies.length === 0) return;
    const t0 = performance.now();
    // Rule 1: no JS reference to the mapped range outlives the unmap.
    s.range = null;
    s.ptr = null;
    s.mapped = false;
    s.buffer.unmap();
    const enc = this.#gpu.device.createCommandEncoder();
    for (const c of s.copies) enc.copyBufferToBuffer(s.buffer, c.src, c.dst, c.dstOffset, c.size);
    this.#gpu.device.queue.submit([enc.finish()]);
    this.#submits++;
    s.copies = [];
    s.cursor = 0;
    const remap = s.buffer.mapAsync(GPUMapMode.WRITE, 0, this.#size).then(() => {
      this.#cycles++;
    });
    remap.catch(() => {}); // observed by #ready or dispose
    s.remap = remap;
    this.#current = (this.#current + 1) % this.#ring.length;
    this.#callSeconds += (performance.now() - t0) / 1e3;
  }

  /**
   * The address of `data`'s first byte, or null (then `set` is used, with a notice once). `data` is
   * referenced by the caller until its copies settle, so the memory stays valid meanwhile.
   */
  #sourcePointer(data: Uint8Array): Deno.PointerObject | null {
    const p = addressOf(data);
    if (p) return p;
    if (!this.#sourceNoticed) {
      this.#sourceNoticed = true;
      this.#log(
        "pregate: uploader: a source's address is not available to FFI; such copies use " +
          "Uint8Array.set on one thread",
      );
    }
    return null;
  }

  /** Copies `data[from, from + n)` into staging `s` at byte `at`. */
  async #fill(s: Staging, at: number, data: Uint8Array, from: number, n: number): Promise<void> {
    const t0 = performance.now();
    try {
      const m = this.#memcpy;
      const src = m && s.ptr ? this.#sourcePointer(data) : null;
      if (!m || !s.ptr || !src) {
        new Uint8Array(s.range!, at, n).set(data.subarray(from, from + n));
        return;
      }
      const dst = Deno.UnsafePointer.offset(s.ptr, at)!;
      const start = Deno.UnsafePointer.offset(src, from)!;
      if (n < this.#minPiece) {
        m.copy(dst, start, n); // short: a thread hop would cost more than the copy
        return;
      }
      const pieces = Math.min(this.#threads, Math.floor(n / this.#minPiece));
      const step = Math.ceil(n / pieces / 64) * 64;
      const jobs: Promise<void>[] = [];
      for (let p = 0; p < n; p += step) {
        const len = Math.min(step, n - p);
        jobs.push(
          this.#gate.run(() =>
            m.copyAsync(
              Deno.UnsafePointer.offset(dst, p)!,
              Deno.UnsafePointer.offset(start, p)!,
              len,
            )
          ),
        );
      }
      this.#pieces += jobs.length;
      await settleAll(jobs); // rule 2: every piece settles before the range can be unmapped
    } finally {
      this.#fillSeconds += (performance.now() - t0) / 1e3;
    }
  }

  /** Zeroes `[at, at + n)` of staging `s` (n < 4: a ragged tail's padding). */
  #zero(s: Staging, at: number, n: number): void {
    new Uint8Array(s.range!, at, n).fill(0);
  }

  /**
   * Stages `items` in order. Fills into one staging buffer run concurrently (bounded by the gate);
   * all of them settle before that buffer is sealed (rule 2), and before this returns.
   */
  async #uploadAll(items: readonly UploadItem[]): Promise<void> {
    let pending: Promise<void>[] = [];
    const sealCurrent = async () => {
      const jobs = pending;
      pending = [];
      await settleAll(jobs);
      this.#seal();
    };
    try {
      for (const item of items) {
        const { dst, offset } = item;
        const data = itemBytes(item.data);
        let done = 0;
        const total = data.byteLength;
        while (done < total) {
          const s = await this.#ready();
          const room = this.#size - s.cursor;
          if (room < 4) {
            await sealCurrent();
            continue;
          }
          const n = Math.min(room & ~3, total - done);
          const padded = (n + 3) & ~3;
          pending.push(this.#fill(s, s.cursor, data, done, n));
          if (padded > n) this.#zero(s, s.cursor + n, padded - n);
          s.copies.push({ src: s.cursor, dst, dstOffset: offset + done, size: padded });
          s.cursor += padded;
          done += n;
          if (s.cursor >= this.#size) await sealCurrent();
        }
        this.#bytes += total;
      }
    } finally {
      await settleAll(pending); // never leave a fill running (rule 2), even on failure
    }
  }

  #enqueue(items: readonly UploadItem[]): Promise<void> {
    const refused = refusal(this.#disposed !== null, items);
    if (refused) return Promise.reject(refused);
    this.#inFlight++;
    const run = this.#tail.then(() => this.#uploadAll(items));
    const done = run.finally(() => this.#inFlight--);
    this.#tail = done.catch(() => {});
    return done;
  }

  upload(dst: GPUBuffer, offset: number, data: Uint8Array | UploadSource): Promise<void> {
    return this.#enqueue([{ dst, offset, data }]);
  }

  uploadMany(items: readonly UploadItem[]): Promise<void> {
    return this.#enqueue(items);
  }

  flush(): void {
    if (this.#inFlight > 0) {
      throw new PregateError(
        "E_UPLOAD_IN_FLIGHT",
        "flush() while an upload is in flight",
        "await every upload() before flush()",
      );
    }
    if (!this.#disposed) this.#seal();
  }

  dispose(): Promise<void> {
    if (this.#disposed) return this.#disposed;
    if (this.#inFlight === 0) this.#seal(); // submit what is staged now, as flush() would
    const tail = this.#tail;
    this.#disposed = (async () => {
      await tail; // an upload in flight finishes; its staged copies are submitted next
      this.#seal();
      for (const s of this.#ring) {
        // Rule 3: a pending remap settles before its buffer is unmapped or destroyed.
        if (s.remap) {
          s.mapped = await s.remap.then(() => true, () => false);
          s.remap = null;
        }
        s.range = null; // rule 1
        s.ptr = null;
        if (s.mapped) s.buffer.unmap();
        s.mapped = false;
        this.#gpu.destroyBuffer(s.buffer);
      }
    })().catch((e) => {
      // Callers may not await dispose(); never leave an unhandled rejection behind.
      this.#log(`pregate: uploader: dispose: ${e instanceof Error ? e.message : String(e)}`);
    });
    return this.#disposed;
  }
}
