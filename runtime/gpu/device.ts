/**
 * The GPU layer: one function, {@linkcode openGpu}, that returns a ready {@linkcode Gpu} from a chosen
 * WebGPU implementation (Deno's native `navigator.gpu`, or Dawn from the npm package `webgpu`).
 *
 * The {@linkcode Gpu} object is the only thing the rest of Pregate talks to. It
 * - requests the adapter's limits explicitly (WebGPU's defaults cap buffers at 256 MiB),
 * - records the optional features kernels may specialise on,
 * - accounts every buffer it creates (current and peak bytes, by purpose),
 * - caches compute pipelines by (kernel, constants) and turns compile errors into thrown errors,
 * - funnels every GPU->CPU readback through {@linkcode Gpu.read}, which counts syncs (each costs
 *   >= 10 ms on Deno's native implementation).
 *
 * @example
 * ```ts
 * import { openGpu } from "./device.ts";
 * const gpu = await openGpu({ gpu: "native" });
 * const buf = gpu.createBuffer({ size: 1024, usage: GPUBufferUsage.STORAGE, purpose: "activations" });
 * console.log(gpu.memory().current); // 1024
 * gpu.destroy();
 * ```
 * @module
 */
import { ArgumentError, GpuError, GpuUnavailableError } from "../errors.ts";
import { readEnv } from "../env.ts";

/** A WebGPU implementation Pregate can run on. */
export type GpuImpl = "native" | "dawn";
/** What the user asks for: an implementation, or `auto` (Dawn if it loads and has an adapter). */
export type GpuChoice = GpuImpl | "auto";

/** What a GPU buffer is for; memory is accounted per purpose. */
export type BufferPurpose =
  | "dense"
  | "experts"
  | "kv"
  | "activations"
  | "staging"
  | "readback"
  | "uniform"
  | "other";

/** Optional features kernels may specialise on. The portable variant never needs any of them. */
export interface GpuFeatures {
  /** WGSL `f16` arithmetic (`enable f16;`). */
  readonly shaderF16: boolean;
  /** Subgroup operations. */
  readonly subgroups: boolean;
  /** GPU timestamp queries. */
  readonly timestampQuery: boolean;
  /** Dawn's experimental subgroup matrices (tensor cores). */
  readonly subgroupMatrix: boolean;
}

/** One subgroup-matrix shape an adapter supports (Dawn's `adapter.info.subgroupMatrixConfigs`). */
export interface SubgroupMatrixConfigInfo {
  readonly componentType: string;
  readonly resultComponentType: string;
  readonly M: number;
  readonly N: number;
  readonly K: number;
}

/** What Pregate keeps of `GPUAdapterInfo`. */
export interface AdapterInfoSnapshot {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  /** Subgroup sizes, when the implementation reports them. */
  readonly subgroupMinSize?: number;
  readonly subgroupMaxSize?: number;
  /** Subgroup-matrix shapes (Dawn with `chromium-experimental-subgroup-matrix`); else empty. */
  readonly subgroupMatrixConfigs: readonly SubgroupMatrixConfigInfo[];
}

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

/**
 * Current and peak bytes of GPU buffers. `current` and `peak` count device memory: every buffer that
 * cannot be mapped. Mappable buffers (MAP_WRITE upload staging, MAP_READ readback) live in
 * host-visible memory on discrete GPUs and are counted apart, in `host`; `byPurpose` has both.
 */
export interface MemoryReport {
  /** Device bytes held now. */
  current: number;
  /** Most device bytes held at once since the device was opened (or {@linkcode Gpu.resetPeak}). */
  peak: number;
  /** The same two figures for mappable (host-visible) buffers. */
  host: { current: number; peak: number };
  /** Current and peak for each purpose that was ever used (device and host-visible buffers). */
  byPurpose: Partial<Record<BufferPurpose, { current: number; peak: number }>>;
}

/** Counters of the work submitted and of the GPU->CPU synchronisations paid. */
export interface GpuCounters {
  /** GPU->CPU waits (readbacks, explicit syncs). */
  syncs: number;
  /** Queue submissions. */
  submits: number;
  /** Compute dispatches encoded through {@linkcode Gpu.submit}. */
  dispatches: number;
  /** Bytes written host->GPU through {@linkcode Gpu.write}. */
  uploadBytes: number;
}

/** Options of {@linkcode openGpu}. */
export interface OpenGpuOptions {
  /** Which implementation to use; default `native`. */
  gpu?: GpuChoice;
  /** Adapter power preference; default `high-performance`. */
  powerPreference?: GPUPowerPreference;
  /** Receives one-line notices (e.g. which implementation `auto` chose). Default: none. */
  log?: (message: string) => void;
  /**
   * Flags for Dawn's instance (`create(flags)` of npm `webgpu`); default {@linkcode DAWN_FLAGS}, or
   * the space-separated `PREGATE_DAWN_FLAGS` environment variable when set and readable.
   */
  dawnFlags?: readonly string[];
}

/**
 * Dawn instance flags used by default. `allow_unsafe_apis` exposes
 * `chromium-experimental-subgroup-matrix` (tensor cores); `vulkan_enable_f16_on_nvidia` exposes
 * `shader-f16` on NVIDIA's Vulkan driver, where Dawn hides it by default. Measured on the H200
 * (`tools/probe_dawn.ts`): without them Dawn offers neither feature; with them a 16x16x16 f16
 * subgroup-matrix product is correct. Kernels still validate every path against CPU references.
 * Disabling `timestamp_quantization` makes GPU timestamps exact: by default Dawn rounds them (a
 * browser's defence against timing attacks); the likely reason a single GEMV read 140 us in the
 * kernel bench on the H200 where `tools/tune_gemv.ts`, with it disabled, measured ~34 us.
 * `disable_robustness` drops the bounds clamps Dawn adds to every buffer access in shaders (as
 * Chrome's Graphite and ONNX Runtime's WebGPU backend do): on the H200 the tensor-core matmul ran 22.3
 * -> 32.8 TFLOP/s with it (`tools/probe_sgmatrix.ts`), and resident decode of Mixtral-shape layers
 * 1384 tok/s (decode bench) against 1327 without it (`tools/profile_decode.ts`; two tools, one
 * machine; `bench/results/README.md`). Pregate's kernels
 * keep every access in bounds themselves (their tests check the bytes past each output); set
 * `PREGATE_DAWN_FLAGS` to run without it.
 */
export const DAWN_FLAGS: readonly string[] = [
  "enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness",
  "disable-dawn-features=timestamp_quantization",
];

function dawnFlagsFromEnv(): string[] | undefined {
  return readEnv("PREGATE_DAWN_FLAGS")?.split(" ").filter(Boolean);
}

/** What a pipeline is built from: a name for the cache and errors, WGSL source and entry point. */
export interface PipelineSource {
  /** Kernel name, unique per source. */
  readonly name: string;
  /** Entry point function. */
  readonly entry: string;
  /** Returns the WGSL source (may fetch it); called once per name. */
  source(): Promise<string>;
}

/** One compute dispatch, ready to encode (or to record in a plan and replay). */
export interface Dispatch {
  /** The pipeline to run. */
  readonly pipeline: GPUComputePipeline;
  /** Its bind group 0. */
  readonly bindGroup: GPUBindGroup;
  /** Workgroup counts. */
  readonly workgroups: readonly [number, number, number];
  /** For error messages and profiles. */
  readonly label: string;
}

/** A buffer-to-buffer copy recorded in a plan beside dispatches. */
export interface Copy {
  /** Source buffer. */
  readonly src: GPUBuffer;
  /** Byte offset in the source (a multiple of 4). */
  readonly srcOffset: number;
  /** Destination buffer. */
  readonly dst: GPUBuffer;
  /** Byte offset in the destination (a multiple of 4). */
  readonly dstOffset: number;
  /** Bytes to copy (a multiple of 4). */
  readonly size: number;
}

/** One dispatch timed by {@linkcode Gpu.startProfile}: GPU nanoseconds from the profile's start. */
export interface ProfiledDispatch {
  /** The dispatch's label (its pipeline's key). */
  readonly label: string;
  /** Start and end, in nanoseconds after the first profiled dispatch began. */
  readonly start: number;
  readonly end: number;
}

/** One step of a plan: a compute dispatch or a buffer copy. */
export type Step = Dispatch | Copy;

/** A storage or uniform buffer binding: a whole buffer, or a range of it. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

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

const NO_ADAPTER_HINT = "WebGPU needs a GPU driver or a software rasteriser. On Debian/Ubuntu: " +
  "`apt-get install mesa-vulkan-drivers libegl1` (llvmpipe/lavapipe run on the CPU); with an NVIDIA " +
  "GPU install the driver and the Vulkan loader (`libvulkan1`). Check with `deno run -A " +
  "examples/gpu_info.ts`.";

interface GpuEntry {
  readonly gpu: GPU;
  readonly impl: GpuImpl;
  /** Keeps Dawn's instance alive for as long as the device is used. */
  readonly keepAlive?: unknown;
}

async function loadDawn(flags: readonly string[]): Promise<GpuEntry> {
  // Loaded lazily so that native users never download or load dawn.node.
  const spec = "npm:webgpu@0.6.2";
  let mod: { create: (flags: string[]) => GPU };
  try {
    mod = await import(spec);
  } catch (e) {
    throw new GpuUnavailableError(
      `could not load Dawn from ${spec}: ${(e as Error).message}`,
      "run `deno install` in the project (the npm package `webgpu` must be reachable), or use " +
        "--gpu native",
      { cause: e },
    );
  }
  const gpu = mod.create([...flags]);
  return { gpu, impl: "dawn", keepAlive: gpu };
}

async function requestAdapter(entry: GpuEntry, pref: GPUPowerPreference) {
  try {
    return await entry.gpu.requestAdapter({ powerPreference: pref });
  } catch (e) {
    throw new GpuUnavailableError(
      `${entry.impl} WebGPU: requestAdapter failed: ${(e as Error).message}`,
      NO_ADAPTER_HINT,
      { cause: e },
    );
  }
}

/**
 * Opens a GPU device. `gpu: "auto"` tries Dawn first and falls back to native when Dawn does not load
 * or has no hardware adapter, reporting its choice through `log`.
 *
 * @throws {ArgumentError} for an unknown `gpu` choice.
 * @throws {GpuUnavailableError} when no adapter or device can be had.
 */
export async function openGpu(options: OpenGpuOptions = {}): Promise<Gpu> {
  const choice = options.gpu ?? "native";
  const pref = options.powerPreference ?? "high-performance";
  const log = options.log ?? (() => {});
  if (choice !== "native" && choice !== "dawn" && choice !== "auto") {
    throw new ArgumentError(
      "gpu",
      `unknown GPU implementation '${choice}'`,
      "use native, dawn or auto",
    );
  }
  let entry: GpuEntry | undefined;
  let adapter: GPUAdapter | null = null;
  if (choice === "dawn" || choice === "auto") {
    try {
      entry = await loadDawn(options.dawnFlags ?? dawnFlagsFromEnv() ?? DAWN_FLAGS);
      adapter = await requestAdapter(entry, pref);
      if (adapter && choice === "auto" && adapter.info.isFallbackAdapter) adapter = null;
      if (!adapter && choice === "dawn") {
        throw new GpuUnavailableError("Dawn WebGPU found no adapter", NO_ADAPTER_HINT);
      }
    } catch (e) {
      if (choice === "dawn") throw e;
      log(`gpu auto: Dawn unavailable (${(e as Error).message.split("\n")[0]}); using native`);
      adapter = null;
    }
    if (choice === "auto" && !adapter) entry = undefined;
  }
  if (!entry) {
    if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) {
      throw new GpuUnavailableError("this Deno has no navigator.gpu", NO_ADAPTER_HINT);
    }
    entry = { gpu: navigator.gpu, impl: "native" };
    adapter = await requestAdapter(entry, pref);
    if (!adapter) {
      throw new GpuUnavailableError("Deno's native WebGPU found no adapter", NO_ADAPTER_HINT);
    }
  }
  if (choice === "auto") log(`gpu auto: using ${entry.impl} (${adapter!.info.description})`);
  return await Gpu.fromAdapter(entry, adapter!);
}

/** A ready WebGPU device with buffer accounting, a pipeline cache and counted readbacks. */
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
  #buffers = new Map<
    GPUBuffer,
    { size: number; purpose: BufferPurpose; requested: number; host: boolean }
  >();
  #hostCurrent = 0;
  #hostPeak = 0;
  #current = 0;
  #peak = 0;
  #byPurpose: MemoryReport["byPurpose"] = {};
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

  /** @internal Creates the device with the adapter's limits and optional features. */
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
    this.#account(buffer, size, desc.purpose, Math.ceil(desc.size / 4) * 4, host);
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
    const rec = this.#buffers.get(buffer);
    if (rec) {
      this.#buffers.delete(buffer);
      if (rec.host) this.#hostCurrent -= rec.size;
      else this.#current -= rec.size;
      this.#byPurpose[rec.purpose]!.current -= rec.size;
    }
    buffer.destroy();
  }

  /** Current and peak GPU bytes, in total and by purpose. */
  memory(): MemoryReport {
    const byPurpose: MemoryReport["byPurpose"] = {};
    for (const [k, v] of Object.entries(this.#byPurpose)) {
      byPurpose[k as BufferPurpose] = { ...v };
    }
    return {
      current: this.#current,
      peak: this.#peak,
      host: { current: this.#hostCurrent, peak: this.#hostPeak },
      byPurpose,
    };
  }

  /** Restarts peak tracking from the current figures. */
  resetPeak(): void {
    this.#peak = this.#current;
    this.#hostPeak = this.#hostCurrent;
    for (const v of Object.values(this.#byPurpose)) v.peak = v.current;
  }

  #account(
    buffer: GPUBuffer,
    size: number,
    purpose: BufferPurpose,
    requested: number,
    host: boolean,
  ) {
    this.#buffers.set(buffer, { size, purpose, requested, host });
    if (host) {
      this.#hostCurrent += size;
      this.#hostPeak = Math.max(this.#hostPeak, this.#hostCurrent);
    } else {
      this.#current += size;
      this.#peak = Math.max(this.#peak, this.#current);
    }
    const p = this.#byPurpose[purpose] ??= { current: 0, peak: 0 };
    p.current += size;
    p.peak = Math.max(p.peak, p.current);
  }

  /**
   * The size a buffer was asked for (rounded to 4 bytes), which reads default to; the allocation
   * itself is a multiple of 16. Buffers not created here report their own size.
   */
  byteLength(buffer: GPUBuffer): number {
    return this.#buffers.get(buffer)?.requested ?? buffer.size;
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
    for (const b of [...this.#buffers.keys()]) this.destroyBuffer(b);
    this.#readbacks = [];
    this.device.destroy();
    if (this.#keepAlive) this.#keepAlive = undefined; // lets Dawn's instance be collected
  }
}
