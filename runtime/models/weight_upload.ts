/**
 * The upload of a checkpoint's tensors to the GPU, checked as it is planned: {@linkcode WeightUpload}
 * validates each tensor's presence, shape and dtype and the device's binding limit, allocates its
 * buffer and queues its copy; {@linkcode WeightUpload.run} copies them all. `weights.ts` builds the
 * decoder's weights with it; architecture files with weights beyond the decoder's use it too. It
 * knows nothing of tensor names beyond the ones it is given.
 *
 * @example
 * ```ts ignore
 * import { WeightUpload } from "./weight_upload.ts";
 * const up = new WeightUpload(gpu, store);
 * const norm = up.vector("model.norm.weight", 64);
 * up.run();
 * ```
 * @module
 */
import type { BufferPurpose, Gpu } from "../base/gpu/device.ts";
import { BudgetError, ConfigError, WeightFileError } from "../base/errors.ts";
import type { Tensor, TensorStore } from "../weights/safetensors.ts";
import { weightBlockValues } from "../weights/weight_type.ts";
import type { MoeFfn } from "./model_config.ts";
import type { MlpNames } from "./tensor_names.ts";
import {
  type ExpertPool,
  expertPool,
  type GpuMatrix,
  type GpuMlp,
  uploadTensor,
} from "./gpu_weights.ts";

/** Options of a model's weight upload (`uploadWeights` in `weights.ts`). */
export interface UploadOptions {
  /** `resident`: every expert on the GPU; `none`: leave experts to the offloading engine. */
  experts: "resident" | "none";
  /** Progress callback: bytes uploaded so far, total bytes to upload. */
  onProgress?: (done: number, total: number) => void;
  /**
   * T5-style relative position bias (Switch): from the first layer of each stack into every layer
   * (`shared`, the default: how T5 and the Switch checkpoints were trained) or into the first layer
   * only (`first_layer_only`: what transformers 5 computes). Other architectures have none.
   */
  positionBias?: "shared" | "first_layer_only";
}

function expectShape(t: Tensor, shape: readonly number[]): void {
  const ok = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
  // A [n] vector may be stored as [1, n] (e.g. Qwen2's shared_expert_gate is [1, hidden]).
  if (!ok) {
    throw new WeightFileError(
      t.file,
      `expected shape [${shape.join(", ")}], found [${t.shape.join(", ")}]`,
      { tensor: t.name, hint: "the checkpoint does not match its config.json" },
    );
  }
}

function matrixOk(t: Tensor, cols: number): void {
  const block = weightBlockValues(t.dtype);
  if (block > 1 && cols % block) {
    throw new WeightFileError(
      t.file,
      `${t.dtype} matrices need rows of whole ${block}-value blocks, found ${cols} columns`,
      { tensor: t.name },
    );
  }
  if ((t.dtype === "f16" || t.dtype === "bf16") && cols % 2) {
    throw new WeightFileError(
      t.file,
      `${t.dtype} matrices need an even number of columns, found ${cols}`,
      { tensor: t.name },
    );
  }
}

/**
 * The uploads of one checkpoint, planned first and run last: each call validates a tensor
 * (presence, shape, dtype, the device's binding limit), allocates its GPU buffer and queues its
 * copy; {@linkcode WeightUpload.run} copies them all, reporting progress. Architecture files with
 * weights beyond the decoder's (an encoder-decoder's cross-attention, its relative position bias)
 * use it beside {@linkcode uploadLayer}.
 *
 * @example
 * ```ts ignore
 * const up = new WeightUpload(gpu, store);
 * const norm = up.vector("model.norm.weight", 64);
 * const embed = up.matrix("model.embed_tokens.weight", 256, 64);
 * up.run((done, total) => console.log(done, total));
 * ```
 */
export class WeightUpload {
  readonly #jobs: { bytes: number; copy: () => void }[] = [];

  /** Uploads from `store` to `gpu` (nothing is copied before {@linkcode WeightUpload.run}). */
  constructor(readonly gpu: Gpu, readonly store: TensorStore) {}

  /** A `[rows, cols]` matrix in its file dtype. */
  matrix(name: string, rows: number, cols: number, purpose: BufferPurpose = "dense"): GpuMatrix {
    const t = this.store.get(name);
    expectShape(t, [rows, cols]);
    matrixOk(t, cols);
    const maxBind = this.gpu.limits.maxStorageBufferBindingSize;
    if (t.byteLength > maxBind) {
      throw new BudgetError(
        `${name}: ${t.byteLength} bytes exceed this GPU's storage binding limit (${maxBind} bytes)`,
      );
    }
    const buffer = this.gpu.storage(purpose, t.byteLength, name);
    this.#queue(t.byteLength, () => uploadTensor(this.gpu, t, buffer));
    return { buffer, dtype: t.dtype, rows, cols };
  }

  /**
   * A small tensor as f32 `[n]` on the GPU (stored as `[n]` or one of `shapes`), or, with `derive`,
   * the `n` values `derive` makes of it on the host (a norm weight times a constant, a bias table).
   */
  vector(
    name: string,
    n: number,
    opts: { shapes?: number[][]; derive?: (values: Float32Array) => Float32Array } = {},
  ): GPUBuffer {
    const t = this.store.get(name);
    const shapes = opts.shapes ?? [[n]];
    if (!shapes.some((s) => s.length === t.shape.length && s.every((d, i) => d === t.shape[i]))) {
      expectShape(t, shapes[0]);
    }
    const buffer = this.gpu.storage("dense", n * 4, name);
    this.#queue(n * 4, () => {
      const values = this.store.tensorF32(name);
      const data = opts.derive ? opts.derive(values) : values;
      if (data.length !== n) {
        throw new WeightFileError(t.file, `derived ${data.length} values, expected ${n}`, {
          tensor: name,
        });
      }
      this.gpu.write(buffer, data);
    });
    return buffer;
  }

  /** An MLP's projections (no up projection when `names` has none: a ReLU MLP). */
  mlp(names: MlpNames, inter: number, hidden: number): GpuMlp {
    return {
      gate: this.matrix(names.gate, inter, hidden),
      up: names.up === undefined ? undefined : this.matrix(names.up, inter, hidden),
      down: this.matrix(names.down, hidden, inter),
    };
  }

  /**
   * Every expert of a MoE layer in a pool of its own (a slot each, identity slot table), each
   * tensor checked against expert 0's dtype; ReLU experts (`f.act`) have no up projection.
   */
  experts(names: (e: number) => MlpNames, f: MoeFfn, hidden: number): ExpertPool {
    const types = {
      gateUp: this.store.get(names(0).gate).dtype,
      down: this.store.get(names(0).down).dtype,
    };
    const pool = expertPool(this.gpu, f.experts, f.experts, f.inter, hidden, types, f.act);
    for (let e = 0; e < f.experts; e++) {
      const en = names(e);
      if ((en.up === undefined) !== (pool.up === null)) {
        throw new ConfigError(
          `${en.gate}: a ${f.act ?? "swiglu"} expert ${
            en.up ? "has no" : "needs an"
          } up projection`,
          "the architecture's expert names must follow its activation",
        );
      }
      for (const [role, nm] of [["gate", en.gate], ["up", en.up], ["down", en.down]] as const) {
        const dst = pool[role];
        if (nm === undefined || !dst) continue;
        const t = this.store.get(nm);
        expectShape(t, role === "down" ? [hidden, f.inter] : [f.inter, hidden]);
        const want = role === "down" ? pool.downDtype : pool.dtype;
        if (t.dtype !== want) {
          throw new WeightFileError(
            t.file,
            `expected dtype ${want} like expert 0, found ${t.dtype}`,
            { tensor: nm },
          );
        }
        matrixOk(t, role === "down" ? f.inter : hidden);
        const off = e * (role === "down" ? pool.bytes.down : pool.bytes.gateUp);
        this.#queue(t.byteLength, () => uploadTensor(this.gpu, t, dst, off));
      }
    }
    const table = Uint32Array.from({ length: f.experts }, (_, e) => e);
    this.#queue(0, () => this.gpu.write(pool.table, table));
    return pool;
  }

  #queue(bytes: number, copy: () => void): void {
    this.#jobs.push({ bytes, copy });
  }

  /** Runs the queued copies, reporting bytes done of the total (first `(0, total)`). */
  run(onProgress?: (done: number, total: number) => void): void {
    const total = this.#jobs.reduce((a, j) => a + j.bytes, 0);
    let done = 0;
    onProgress?.(0, total);
    for (const job of this.#jobs.splice(0)) {
      job.copy();
      done += job.bytes;
      if (job.bytes) onProgress?.(done, total);
    }
  }
}
