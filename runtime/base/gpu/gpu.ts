/**
 * The {@linkcode Gpu} class: a ready WebGPU device with the adapter's limits, the optional features
 * kernels may specialise on, accounted buffers (current and peak bytes by purpose), a pipeline cache
 * that turns compile errors into thrown errors, plans of dispatches and copies encoded into one
 * submit, GPU-timestamp profiles, and the one readback path, which counts syncs. `openGpu`
 * (`open.ts`) makes one; import both from `device.ts`.
 *
 * @example
 * ```ts
 * import { openGpu } from "./device.ts";
 * const gpu = await openGpu();
 * const buf = gpu.storage("activations", new Float32Array([1, 2, 3]));
 * console.log(await gpu.readF32(buf)); // Float32Array [1, 2, 3]
 * console.log(gpu.counters.syncs); // 1
 * gpu.destroy();
 * ```
 * @module
 */
import { ArgumentError, GpuError, GpuUnavailableError } from "../errors.ts";
import { BufferLedger } from "./memory.ts";
import type {
  AdapterInfoSnapshot,
  Binding,
  BufferPurpose,
  Dispatch,
  GpuCounters,
  GpuEntry,
  GpuFeatures,
  GpuImpl,
  MemoryReport,
  PipelineSource,
  ProfiledDispatch,
  Step,
} from "./types.ts";

/**
 * @internal The hint of every "no GPU" error: what to install, and how to check what WebGPU finds.
 */
export const NO_ADAPTER_HINT = "WebGPU needs a GPU driver or a software rasteriser. On " +
  "Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libegl1` (llvmpipe/lavapipe run on the " +
  "CPU); with an NVIDIA GPU install the driver and the Vulkan loader (`libvulkan1`). Check what " +
  "WebGPU finds with `deno task pregate gpu-info` in Pregate's repository (add `--gpu dawn` for " +
  "Dawn).";

const WRITE_CHUNK = 64 << 20;

const LIMIT_NAMES = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxUniformBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxBindGroups",
  "maxBindingsPerBindGroup",
] as const;

const OPTIONAL_FEATURES = [
  "shader-f16",
  "subgroups",
  "timestamp-query",
  "chromium-experimental-subgroup-matrix",
] as const;

function snapshotInfo(info: GPUAdapterInfo): AdapterInfoSnapshot {
  const raw = info as unknown as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === "number" ? v : undefined);
  const cfgs = Array.isArray(raw.subgroupMatrixConfigs) ? raw.subgroupMatrixConfigs : [];
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    subgroupMinSize: num(raw.subgroupMinSize),
    subgroupMaxSize: num(raw.subgroupMaxSize),
    subgroupMatrixConfigs: cfgs.map((c) => {
      const o = c as Record<string, unknown>;
      return {
        componentType: String(o.componentType),
        resultComponentType: String(o.resultComponentType),
        M: Number(o.M),
        N: Number(o.N),
        K: Number(o.K),
      };
    }),
  };
}

export class Gpu {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** Which implementation it came from. */
  readonly impl: GpuImpl;
  /** Adapter description, e.g. "NVIDIA H200" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  readonly adapterName: string;
  /** Whether the adapter is a software/fallback adapter. */
  readonly isFallback: boolean;
  /**
   * The adapter's info as plain data, taken when the device was created (Dawn reports the
   * subgroup-matrix configurations only on `adapter.info`, not on `device.adapterInfo`).
   */
  readonly adapterInfo: AdapterInfoSnapshot;
  /** Optional features enabled on the device. */
  readonly features: GpuFeatures;
  /** The device's limits (as requested: the adapter's own). */
  readonly limits: GPUSupportedLimits;
  /** Work and sync counters; reset them freely. */
  readonly counters: GpuCounters = { syncs: 0, submits: 0, dispatches: 0, uploadBytes: 0 };

  #keepAlive: unknown;
  #ledger = new BufferLedger();
  #pipelines = new Map<string, Promise<GPUComputePipeline>>();
  #sources = new Map<string, Promise<string>>();
  #readbacks: GPUBuffer[] = [];
  #uncaptured: string[] = [];
  #lost = false;

  private constructor(entry: GpuEntry, device: GPUDevice, adapter: GPUAdapter) {
    this.device = device;
    this.impl = entry.impl;
    this.#keepAlive = entry.keepAlive;
    this.adapterName = adapter.info.description || adapter.info.device || adapter.info.vendor;
    this.isFallback = adapter.info.isFallbackAdapter;
    this.adapterInfo = snapshotInfo(adapter.info);
    const f = device.features as unknown as { has(name: string): boolean };
    this.features = {
      shaderF16: f.has("shader-f16"),
      subgroups: f.has("subgroups"),
      timestampQuery: f.has("timestamp-query"),
      subgroupMatrix: f.has("chromium-experimental-subgroup-matrix"),
    };
    this.limits = device.limits;
    device.addEventListener("uncapturederror", (ev) => {
      const err = (ev as GPUUncapturedErrorEvent).error;
      this.#uncaptured.push(err.message);
    });
    device.lost.then((info) => {
      this.#lost = true;
      if (info.reason !== "destroyed") this.#uncaptured.push(`device lost: ${info.message}`);
    });
  }

  /**
   * Creates the device with the adapter's limits and optional features (`openGpu` is the way in;
   * tests use this for adapters of their own, e.g. Dawn's null backend).
   */
  static async fromAdapter(entry: GpuEntry, adapter: GPUAdapter): Promise<Gpu> {
    const requiredLimits: Record<string, number> = {};
    for (const name of LIMIT_NAMES) {
      const v = (adapter.limits as unknown as Record<string, number>)[name];
      if (typeof v === "number") requiredLimits[name] = v;
    }
    const has = adapter.features as unknown as { has(name: string): boolean };
    const requiredFeatures = OPTIONAL_FEATURES.filter((f) => has.has(f)) as GPUFeatureName[];
    let device: GPUDevice;
    try {
      device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
    } catch (e) {
      throw new GpuUnavailableError(
        `${entry.impl} WebGPU: requestDevice failed on ${adapter.info.description}: ${
          (e as Error).message
        }`,
        NO_ADAPTER_HINT,
        { cause: e },
      );
    }
    return new Gpu(entry, device, adapter);
  }

  /** A one-line description, e.g. `native: NVIDIA H200 [shader-f16, timestamp-query]`. */
  describe(): string {
    const f = Object.entries(this.features).filter(([, v]) => v).map(([k]) => k);
    return `${this.impl}: ${this.adapterName}${f.length ? ` [${f.join(", ")}]` : ""}`;
  }

  // ---------------------------------------------------------------- buffers and accounting

  /**
   * Creates an accounted buffer. Sizes are rounded up to a multiple of 16 bytes, so any buffer can
   * also be bound as an array of 16-byte vectors.
   */
  createBuffer(desc: {
    size: number;
    usage: GPUBufferUsageFlags;
    purpose: BufferPurpose;
    label?: string;
    mappedAtCreation?: boolean;
  }): GPUBuffer {
    const size = Math.max(16, Math.ceil(desc.size / 16) * 16);
    if (size > this.limits.maxBufferSize) {
      throw new GpuError(
        `buffer '${desc.label ?? desc.purpose}' of ${size} bytes exceeds this device's ` +
          `maxBufferSize of ${this.limits.maxBufferSize}`,
      );
    }
    const buffer = this.device.createBuffer({
      size,
      usage: desc.usage,
      label: desc.label ?? desc.purpose,
      mappedAtCreation: desc.mappedAtCreation ?? false,
    });
    const host = (desc.usage & (GPUBufferUsage.MAP_READ | GPUBufferUsage.MAP_WRITE)) !== 0;
    const requested = Math.ceil(desc.size / 4) * 4;
    this.#ledger.add(buffer, { size, requested, purpose: desc.purpose, host });
    return buffer;
  }

  /** A storage buffer (STORAGE | COPY_SRC | COPY_DST), optionally filled with `data`. */
  storage(
    purpose: BufferPurpose,
    sizeOrData: number | ArrayBufferView,
    label?: string,
  ): GPUBuffer {
    const size = typeof sizeOrData === "number" ? sizeOrData : sizeOrData.byteLength;
    const buf = this.createBuffer({
      size,
      purpose,
      label,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    if (typeof sizeOrData !== "number") this.write(buf, sizeOrData);
    return buf;
  }

  /** A uniform buffer holding `data` (kernel parameters). */
  uniform(data: ArrayBufferView, label?: string): GPUBuffer {
    const buf = this.createBuffer({
      size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
      purpose: "uniform",
      label,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.write(buf, data);
    return buf;
  }

  /** Destroys an accounted buffer and releases its bytes from the accounting. */
  destroyBuffer(buffer: GPUBuffer): void {
    this.#ledger.remove(buffer);
    buffer.destroy();
  }

  /** Current and peak GPU bytes, in total and by purpose. */
  memory(): MemoryReport {
    return this.#ledger.report();
  }

  /** Restarts peak tracking from the current figures. */
  resetPeak(): void {
    this.#ledger.resetPeak();
  }

  /**
   * The size a buffer was asked for (rounded to 4 bytes), which reads default to; the allocation
   * itself is a multiple of 16. Buffers not created here report their own size.
   */
  byteLength(buffer: GPUBuffer): number {
    return this.#ledger.get(buffer)?.requested ?? buffer.size;
  }

  /**
   * Writes host data into a buffer (`queue.writeBuffer`), counting the bytes. Large writes go in
   * 64 MiB chunks; a length that is not a multiple of 4 gets its last word padded with zeros.
   */
  write(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    const whole = bytes.byteLength & ~3;
    for (let o = 0; o < whole; o += WRITE_CHUNK) {
      const n = Math.min(WRITE_CHUNK, whole - o);
      this.device.queue.writeBuffer(buffer, offset + o, bytes.buffer, bytes.byteOffset + o, n);
    }
    if (whole < bytes.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(whole));
      this.device.queue.writeBuffer(buffer, offset + whole, tail.buffer, 0, 4);
    }
    this.counters.uploadBytes += bytes.byteLength;
  }

  // ---------------------------------------------------------------- pipelines and dispatch

  /**
   * Returns the compute pipeline for a kernel specialised by override `constants`, compiling it on
   * first use. Compile or validation errors become a {@linkcode GpuError} naming the kernel.
   */
  pipeline(
    src: PipelineSource,
    constants: Record<string, number> = {},
  ): Promise<GPUComputePipeline> {
    const keys = Object.keys(constants).sort();
    const key = `${src.name}:${src.entry}|${keys.map((k) => `${k}=${constants[k]}`).join(",")}`;
    let p = this.#pipelines.get(key);
    if (!p) {
      p = this.#compile(src, constants, key);
      this.#pipelines.set(key, p);
      p.catch(() => this.#pipelines.delete(key));
    }
    return p;
  }

  async #compile(src: PipelineSource, constants: Record<string, number>, key: string) {
    let code = this.#sources.get(`${src.name}:${src.entry}`);
    if (!code) {
      code = src.source();
      this.#sources.set(`${src.name}:${src.entry}`, code);
    }
    const device = this.device;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code: await code, label: src.name });
    const pipeline = device.createComputePipeline({
      label: key,
      layout: "auto",
      compute: { module, entryPoint: src.entry, constants },
    });
    const err = await device.popErrorScope();
    if (err) {
      const info = await module.getCompilationInfo().catch(() => undefined);
      const detail = info?.messages.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join(
        "\n",
      );
      throw new GpuError(
        `kernel '${key}' failed to compile: ${err.message}${detail ? `\n${detail}` : ""}`,
      );
    }
    return pipeline;
  }

  /** Builds a dispatch: bind group 0 gets `bindings` at binding indices 0, 1, 2, ... */
  dispatch(
    pipeline: GPUComputePipeline,
    bindings: readonly Binding[],
    workgroups: readonly [number, number?, number?],
    label = pipeline.label,
  ): Dispatch {
    const bindGroup = this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: bindings.map((b, i) => ({
        binding: i,
        resource: "buffer" in b ? b : { buffer: b },
      })),
    });
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    const wg: [number, number, number] = [workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1];
    if (wg.some((n) => n > max || n < 0 || !Number.isInteger(n))) {
      throw new GpuError(`dispatch '${label}': workgroup counts ${wg} exceed the limit ${max}`);
    }
    return { pipeline, bindGroup, workgroups: wg, label };
  }

  /**
   * Splits `n` workgroups into a 2-D grid that respects the per-dimension limit. Kernels recover the
   * linear index as `wid.x + wid.y * nwg.x` and return when it is >= n.
   */
  grid(n: number): [number, number, number] {
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (n <= max) return [Math.max(1, n), 1, 1];
    const y = Math.ceil(n / max);
    return [Math.ceil(n / y), y, 1];
  }

  /**
   * Encodes `steps` in order (consecutive dispatches share one compute pass; copies go between
   * passes) and submits them as one command buffer.
   */
  submit(steps: readonly Step[], after?: (encoder: GPUCommandEncoder) => void): void {
    const encoder = this.device.createCommandEncoder();
    this.encode(encoder, steps);
    after?.(encoder);
    this.device.queue.submit([encoder.finish()]);
    this.counters.submits++;
  }

  /** Encodes `steps` into `encoder` (see {@linkcode Gpu.submit}). */
  encode(encoder: GPUCommandEncoder, steps: readonly Step[]): void {
    let pass: GPUComputePassEncoder | null = null;
    const prof = this.#profile;
    for (const s of steps) {
      if ("pipeline" in s && prof && prof.labels.length < prof.capacity) {
        // Profiling: each dispatch in its own pass, timestamped at its start and end.
        pass?.end();
        pass = null;
        const i = prof.labels.length;
        prof.labels.push(s.label);
        const p = encoder.beginComputePass({
          timestampWrites: {
            querySet: prof.querySet,
            beginningOfPassWriteIndex: 2 * i,
            endOfPassWriteIndex: 2 * i + 1,
          },
        });
        p.setPipeline(s.pipeline);
        p.setBindGroup(0, s.bindGroup);
        p.dispatchWorkgroups(s.workgroups[0], s.workgroups[1], s.workgroups[2]);
        p.end();
        this.counters.dispatches++;
      } else if ("pipeline" in s) {
        pass ??= encoder.beginComputePass();
        pass.setPipeline(s.pipeline);
        pass.setBindGroup(0, s.bindGroup);
        pass.dispatchWorkgroups(s.workgroups[0], s.workgroups[1], s.workgroups[2]);
        this.counters.dispatches++;
      } else {
        pass?.end();
        pass = null;
        encoder.copyBufferToBuffer(s.src, s.srcOffset, s.dst, s.dstOffset, s.size);
      }
    }
    pass?.end();
  }

  // ---------------------------------------------------------------- profiling

  #profile: { querySet: GPUQuerySet; labels: string[]; capacity: number } | null = null;

  /**
   * Starts timing every dispatch encoded from now on (up to `maxDispatches`) with GPU timestamps:
   * each runs in its own compute pass, which adds pass boundaries, so a profile shows where GPU time
   * goes, not the unprofiled speed. Needs the `timestamp-query` feature.
   */
  startProfile(maxDispatches = 4096): void {
    if (!this.features.timestampQuery) {
      throw new GpuError(`${this.describe()}: profiling needs the timestamp-query feature`);
    }
    if (this.#profile) throw new GpuError("a profile is already running");
    if (!Number.isInteger(maxDispatches) || maxDispatches < 1 || 2 * maxDispatches > 4096) {
      throw new ArgumentError(
        "maxDispatches",
        `expected an integer in [1, 2048], got ${maxDispatches}`,
      );
    }
    this.#profile = {
      querySet: this.device.createQuerySet({ type: "timestamp", count: 2 * maxDispatches }),
      labels: [],
      capacity: maxDispatches,
    };
  }

  /**
   * Ends the profile started by {@linkcode Gpu.startProfile} (waits for the GPU) and returns each
   * timed dispatch in submission order: its label and its start and end in GPU nanoseconds (relative
   * to the first dispatch's start).
   */
  async stopProfile(): Promise<ProfiledDispatch[]> {
    const prof = this.#profile;
    if (!prof) throw new GpuError("no profile is running (call startProfile first)");
    this.#profile = null;
    const n = prof.labels.length;
    if (n === 0) {
      prof.querySet.destroy();
      return [];
    }
    const resolve = this.createBuffer({
      size: 16 * n,
      purpose: "other",
      label: "profile",
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    try {
      const enc = this.device.createCommandEncoder();
      enc.resolveQuerySet(prof.querySet, 0, 2 * n, resolve, 0);
      this.device.queue.submit([enc.finish()]);
      const ts = new BigUint64Array(await this.read(resolve, 0, 16 * n));
      const t0 = ts[0];
      return prof.labels.map((label, i) => ({
        label,
        start: Number(ts[2 * i] - t0),
        end: Number(ts[2 * i + 1] - t0),
      }));
    } finally {
      this.destroyBuffer(resolve);
      prof.querySet.destroy();
    }
  }

  // ---------------------------------------------------------------- readback

  /**
   * Copies `size` bytes at `offset` of `buffer` back to the CPU. This is the one place Pregate waits on
   * the GPU; every call counts as a sync (>= 10 ms on Deno's native WebGPU). Throws the first GPU
   * error raised since the last read, if any.
   */
  async read(
    buffer: GPUBuffer,
    offset = 0,
    size = this.byteLength(buffer) - offset,
  ): Promise<ArrayBuffer> {
    const alignedSize = Math.ceil(size / 4) * 4;
    const staging = this.#takeReadback(alignedSize);
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buffer, offset, staging, 0, alignedSize);
    this.device.queue.submit([enc.finish()]);
    this.counters.submits++;
    this.counters.syncs++;
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, alignedSize);
    } catch (e) {
      this.#throwPending();
      throw new GpuError(`readback failed: ${(e as Error).message}`, undefined, { cause: e });
    }
    const out = staging.getMappedRange(0, alignedSize).slice(0, size);
    staging.unmap();
    this.#readbacks.push(staging);
    this.#throwPending();
    return out;
  }

  /** Reads a buffer range as float32 values. */
  async readF32(buffer: GPUBuffer, offset = 0, count?: number): Promise<Float32Array> {
    const size = count === undefined ? this.byteLength(buffer) - offset : count * 4;
    return new Float32Array(await this.read(buffer, offset, size));
  }

  /** Reads a buffer range as uint32 values. */
  async readU32(buffer: GPUBuffer, offset = 0, count?: number): Promise<Uint32Array> {
    const size = count === undefined ? this.byteLength(buffer) - offset : count * 4;
    return new Uint32Array(await this.read(buffer, offset, size));
  }

  /** Waits for all submitted work to finish (counted as a sync). Throws pending GPU errors. */
  async sync(): Promise<void> {
    this.counters.syncs++;
    await this.device.queue.onSubmittedWorkDone();
    this.#throwPending();
  }

  #takeReadback(size: number): GPUBuffer {
    const i = this.#readbacks.findIndex((b) => b.size >= size && b.size <= size * 4 + 4096);
    if (i >= 0) return this.#readbacks.splice(i, 1)[0];
    return this.createBuffer({
      size,
      purpose: "readback",
      label: "readback",
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  #throwPending() {
    if (this.#uncaptured.length) {
      const msgs = this.#uncaptured.splice(0);
      throw new GpuError(`GPU error: ${msgs.join("; ")}`);
    }
    if (this.#lost) throw new GpuError("the GPU device was lost");
  }

  /** Destroys every accounted buffer and the device. */
  destroy(): void {
    for (const b of this.#ledger.buffers()) this.destroyBuffer(b);
    this.#readbacks = [];
    this.device.destroy();
    if (this.#keepAlive) this.#keepAlive = undefined; // lets Dawn's instance be collected
  }
}
