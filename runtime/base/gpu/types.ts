/**
 * The types of the GPU layer: what {@linkcode OpenGpuOptions} asks for, what a `Gpu` reports
 * ({@linkcode GpuFeatures}, {@linkcode AdapterInfoSnapshot}, {@linkcode MemoryReport},
 * {@linkcode GpuCounters}) and what plans are made of ({@linkcode PipelineSource},
 * {@linkcode Dispatch}, {@linkcode Copy}, {@linkcode Step}, {@linkcode Binding}). Import them from
 * `device.ts`.
 *
 * @example
 * ```ts
 * import type { BufferPurpose } from "./types.ts";
 * const purpose: BufferPurpose = "experts";
 * console.log(purpose); // "experts"
 * ```
 * @module
 */
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

/**
 * Current and peak bytes of GPU buffers. `current` and `peak` count device memory: every buffer that
 * cannot be mapped. Mappable buffers (MAP_WRITE upload staging, MAP_READ readback) live in
 * host-visible memory on discrete GPUs and are counted apart, in `host`; `byPurpose` has both.
 */
export interface MemoryReport {
  /** Device bytes held now. */
  current: number;
  /** Most device bytes held at once since the device was opened (or `Gpu.resetPeak`). */
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
  /** Compute dispatches encoded through `Gpu.submit`. */
  dispatches: number;
  /** Bytes written host->GPU through `Gpu.write`. */
  uploadBytes: number;
}

/** Options of `openGpu`. */
export interface OpenGpuOptions {
  /** Which implementation to use; default `native`. */
  gpu?: GpuChoice;
  /** Adapter power preference; default `high-performance`. */
  powerPreference?: GPUPowerPreference;
  /** Receives one-line notices (e.g. which implementation `auto` chose). Default: none. */
  log?: (message: string) => void;
  /**
   * Flags for Dawn's instance (`create(flags)` of npm `webgpu`); default `DAWN_FLAGS`, or
   * the space-separated `PREGATE_DAWN_FLAGS` environment variable when set and readable.
   */
  dawnFlags?: readonly string[];
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

/** One dispatch timed by `Gpu.startProfile`: GPU nanoseconds from the profile's start. */
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

/** @internal A WebGPU implementation's entry point, as `Gpu.fromAdapter` takes it. */
export interface GpuEntry {
  readonly gpu: GPU;
  readonly impl: GpuImpl;
  /** Keeps Dawn's instance alive for as long as the device is used. */
  readonly keepAlive?: unknown;
}
