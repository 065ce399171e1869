/**
 * The GPU weights' shapes, as the forward blocks and the executors see them: a matrix in its file
 * dtype ({@linkcode GpuMatrix}), a SwiGLU MLP, a decoder layer's and a model's weights, and the
 * expert slots of a MoE layer ({@linkcode ExpertPool}: one stacked buffer per projection
 * `[slots, rows, cols]` plus a slot table `u32[experts]`, expert -> slot, that the MoE kernels read;
 * resident mode gives every expert its own slot, the offloading engine fewer). Uploading a
 * checkpoint into these is `weights.ts`'s job.
 *
 * @example
 * ```ts ignore
 * import { expertPool } from "./gpu_weights.ts";
 * const pool = expertPool(gpu, 64, 16, 1024, 2048, "bf16"); // 16 slots for 64 experts
 * console.log(pool.bytes.gateUp);
 * ```
 * @module
 */
import type { Gpu } from "../base/gpu/device.ts";
import { BudgetError } from "../base/errors.ts";
import { weightRowBytes, type WeightType } from "../weights/weight_type.ts";
import type { Tensor } from "../weights/safetensors.ts";
import type { FfnActivation } from "./model_config.ts";

/**
 * A weight matrix `[rows, cols]` (rows = outputs) on the GPU, packed in its file's weight type
 * (block-quantised types: rows of whole blocks, as stored).
 */
export interface GpuMatrix {
  readonly buffer: GPUBuffer;
  readonly dtype: WeightType;
  readonly rows: number;
  readonly cols: number;
}

/** The projections of an MLP: SwiGLU's gate, up and down, or a ReLU MLP's `wi` (gate) and `wo` (down). */
export interface GpuMlp {
  readonly gate: GpuMatrix;
  /** Absent in a ReLU MLP. */
  readonly up?: GpuMatrix;
  readonly down: GpuMatrix;
}

/**
 * Expert slots of one MoE layer: stacked projections `[slots, inter, hidden]` (gate, up) and
 * `[slots, hidden, inter]` (down), and the slot table `u32[experts]` (expert -> slot). ReLU experts
 * (Switch) have no up projection: `wi` is held as `gate`, `wo` as `down`.
 */
export interface ExpertPool {
  readonly gate: GPUBuffer;
  /** Null for ReLU experts. */
  readonly up: GPUBuffer | null;
  readonly down: GPUBuffer;
  readonly table: GPUBuffer;
  /** The weight type of gate and up. */
  readonly dtype: WeightType;
  /** The weight type of down (a quantised file may store it otherwise than gate and up). */
  readonly downDtype: WeightType;
  readonly slots: number;
  readonly experts: number;
  readonly inter: number;
  readonly hidden: number;
  /** Bytes of one expert in each projection (gate and up are equal). */
  readonly bytes: { readonly gateUp: number; readonly down: number };
}

/** The GPU weights of one decoder layer. */
export interface LayerWeights {
  readonly inputNorm: GPUBuffer;
  readonly postNorm: GPUBuffer;
  readonly q: GpuMatrix;
  readonly k: GpuMatrix;
  readonly v: GpuMatrix;
  readonly o: GpuMatrix;
  readonly bias?: { readonly q: GPUBuffer; readonly k: GPUBuffer; readonly v: GPUBuffer };
  readonly qkNorm?: { readonly q: GPUBuffer; readonly k: GPUBuffer };
  readonly ffn:
    | ({ readonly kind: "dense" } & GpuMlp)
    | {
      readonly kind: "moe";
      readonly router: GpuMatrix;
      /** f32 [experts]: the router's bias (Switch with `router_bias`). */
      readonly routerBias?: GPUBuffer;
      /** A trained pre-gate for the next MoE layer, when the checkpoint has one. */
      readonly pregate?: GpuMatrix;
      /** The layer's expert pool (null when experts live off the GPU and slots are elsewhere). */
      readonly pool: ExpertPool | null;
      readonly shared?: GpuMlp & { readonly gateWeight: GpuMatrix };
    };
}

/** All GPU weights of a model. */
export interface ModelWeights {
  readonly embed: GpuMatrix;
  readonly lmHead: GpuMatrix;
  readonly finalNorm: GPUBuffer;
  readonly layers: readonly LayerWeights[];
}

/** Writes a tensor's bytes (zero-copy view of the mapped file) into `buffer` at `offset`. */
export function uploadTensor(gpu: Gpu, t: Tensor, buffer: GPUBuffer, offset = 0): void {
  gpu.write(buffer, t.bytes(), offset);
}

/** The weight types of an expert's projections: gate and up share one, down may differ. */
export interface ExpertTypes {
  readonly gateUp: WeightType;
  readonly down: WeightType;
}

/** `t` as {@linkcode ExpertTypes}: one type for every projection, or the pair as given. */
export function expertTypes(t: WeightType | ExpertTypes): ExpertTypes {
  return typeof t === "string" ? { gateUp: t, down: t } : t;
}

/**
 * Bytes of one slot of one projection of an expert pool: an (inter x hidden) matrix in `dtype`,
 * rounded up to 256 bytes so each slot can also be bound on its own.
 */
export function expertSlotBytes(inter: number, hidden: number, dtype: WeightType): number {
  return Math.ceil((inter * weightRowBytes(hidden, dtype)) / 256) * 256;
}

/**
 * Bytes of one slot of each projection of an expert pool (gate and up: `inter` rows of `hidden`
 * values; down: `hidden` rows of `inter`), each rounded up to 256 bytes.
 */
export function expertProjectionBytes(
  inter: number,
  hidden: number,
  types: WeightType | ExpertTypes,
): { gateUp: number; down: number } {
  const t = expertTypes(types);
  return {
    gateUp: expertSlotBytes(inter, hidden, t.gateUp),
    down: expertSlotBytes(hidden, inter, t.down),
  };
}

/**
 * Allocates an expert pool of `slots` slots for `experts` experts of shape (inter, hidden) in
 * `types` (one weight type, or gate/up's and down's), without an up projection for `relu` experts.
 * Slot sizes are each projection's stored bytes rounded up to 256 bytes so each slot can also be
 * bound on its own.
 */
export function expertPool(
  gpu: Gpu,
  experts: number,
  slots: number,
  inter: number,
  hidden: number,
  types: WeightType | ExpertTypes,
  act: FfnActivation = "swiglu",
): ExpertPool {
  const t = expertTypes(types);
  const bytes = expertProjectionBytes(inter, hidden, t);
  const size = Math.max(bytes.gateUp, bytes.down) * slots;
  const maxBind = gpu.limits.maxStorageBufferBindingSize;
  if (size > maxBind) {
    throw new BudgetError(
      `an expert pool of ${slots} slots x ${Math.max(bytes.gateUp, bytes.down)} bytes (${size} ` +
        `bytes) exceeds this GPU's storage binding limit of ${maxBind} bytes`,
      undefined,
      "use fewer expert slots (offloading modes) or a device with a larger maxStorageBufferBindingSize",
    );
  }
  return {
    gate: gpu.storage("experts", bytes.gateUp * slots, "experts.gate"),
    up: act === "relu" ? null : gpu.storage("experts", bytes.gateUp * slots, "experts.up"),
    down: gpu.storage("experts", bytes.down * slots, "experts.down"),
    table: gpu.storage("experts", experts * 4, "experts.table"),
    dtype: t.gateUp,
    downDtype: t.down,
    slots,
    experts,
    inter,
    hidden,
    bytes,
  };
}
