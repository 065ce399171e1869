/**
 * The host expert store: for every (MoE layer, expert) the three projection tensors of its MLP as
 * zero-copy views of the memory-mapped checkpoint, validated once, and the upload of one expert into a
 * GPU slot without copying the file into JS memory first.
 *
 * @example
 * ```ts ignore
 * const host = new HostExpertStore(cfg, openCheckpoint(dir));
 * const bytes = await host.upload(createUploader(gpu), 3, 7, pool, 0); // layer 3, expert 7 -> slot 0
 * ```
 * @module
 */
import { ArgumentError, ConfigError, WeightFileError } from "../base/errors.ts";
import { weightRowBytes, type WeightType } from "../weights/weight_type.ts";
import type { Tensor, TensorStore } from "../weights/safetensors.ts";
import type { FfnActivation, ModelConfig } from "../models/config.ts";
import { layerNames } from "../models/names.ts";
import type { ExpertPool, ExpertTypes } from "../models/gpu_weights.ts";
import type { Uploader, UploadItem, UploadSource } from "./uploader.ts";

/** The tensors of one expert: gate (a ReLU expert's `wi`), up (none for ReLU) and down (`wo`). */
export interface ExpertTensors {
  readonly gate: Tensor;
  readonly up?: Tensor;
  readonly down: Tensor;
}

function expertBytes(t: ExpertTensors): number {
  return t.gate.byteLength + (t.up?.byteLength ?? 0) + t.down.byteLength;
}

/** The expert tensors of a model, by layer and expert. */
export class HostExpertStore {
  /** Experts per MoE layer (equal in every MoE layer). */
  readonly experts: number;
  /** Expert intermediate size. */
  readonly inter: number;
  /** Model width. */
  readonly hidden: number;
  /**
   * The weight types of the experts' projections that take the most bytes over the MoE layers
   * (what a slot shared by every layer must hold); {@linkcode typesOf} gives a layer's own.
   */
  readonly types: ExpertTypes;
  /** Bytes of the largest expert (gate + up + down) as stored. */
  readonly bytesPerExpert: number;
  /** The experts' activation: `relu` experts (Switch) have no up projection. */
  readonly act: FfnActivation;
  #tensors = new Map<number, ExpertTensors[]>();
  #types = new Map<number, ExpertTypes>();
  #store: TensorStore;

  /** Looks up and validates every expert tensor of `cfg` in `store`. */
  constructor(cfg: ModelConfig, store: TensorStore) {
    this.#store = store;
    const moe = cfg.layers.flatMap((l, i) => (l.ffn.kind === "moe" ? [[i, l.ffn] as const] : []));
    if (!moe.length) throw new ConfigError(`${cfg.arch} model has no MoE layer to offload`);
    const [, f0] = moe[0];
    for (const [i, f] of moe) {
      if (f.experts !== f0.experts || f.inter !== f0.inter || f.act !== f0.act) {
        throw new ConfigError(
          `layer ${i}: ${f.experts} experts of ${f.inter}, layer ${moe[0][0]}: ${f0.experts} of ` +
            `${f0.inter}; offloading needs equally sized experts in every MoE layer`,
        );
      }
    }
    this.experts = f0.experts;
    this.inter = f0.inter;
    this.act = f0.act ?? "swiglu";
    this.hidden = cfg.hidden;
    for (const [i] of moe) {
      const names = layerNames(cfg, i).ffn;
      if (names.kind !== "moe") {
        throw new ConfigError(
          `layer ${i}: the config makes it a MoE layer but its tensor names are a dense MLP's`,
        );
      }
      // One type per projection in a layer; layers may differ (llama.cpp's Q4_K_M stores some
      // layers' down projections in Q6_K, the others in Q4_K).
      const first = names.expert(0);
      const types = { gateUp: store.get(first.gate).dtype, down: store.get(first.down).dtype };
      this.#types.set(i, types);
      const list = [];
      for (let e = 0; e < this.experts; e++) {
        const n = names.expert(e);
        if ((n.up === undefined) !== (this.act === "relu")) {
          throw new ConfigError(
            `layer ${i}: ${this.act} experts ${n.up ? "have no" : "need an"} up projection`,
            "the architecture's expert names must follow its activation",
          );
        }
        const t = {
          gate: this.#check(store.get(n.gate), [this.inter, this.hidden], types.gateUp),
          up: n.up === undefined
            ? undefined
            : this.#check(store.get(n.up), [this.inter, this.hidden], types.gateUp),
          down: this.#check(store.get(n.down), [this.hidden, this.inter], types.down),
        };
        list.push(t);
      }
      this.#tensors.set(i, list);
    }
    this.bytesPerExpert = Math.max(...moe.map(([i]) => expertBytes(this.#tensors.get(i)![0])));
    const all = [...this.#types.values()];
    const largest = (rows: number, pick: (t: ExpertTypes) => WeightType) =>
      all.map(pick).reduce((a, b) => (weightRowBytes(rows, b) > weightRowBytes(rows, a) ? b : a));
    this.types = {
      gateUp: largest(this.hidden, (t) => t.gateUp),
      down: largest(this.inter, (t) => t.down),
    };
  }

  /** The weight types of MoE layer `layer`'s expert projections. */
  typesOf(layer: number): ExpertTypes {
    const t = this.#types.get(layer);
    if (!t) {
      throw new ArgumentError(
        "layer",
        `no MoE layer ${layer}: expected one of ${[...this.#types.keys()].join(", ")}`,
      );
    }
    return t;
  }

  #check(t: Tensor, shape: number[], dtype: WeightType): Tensor {
    if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
      throw new WeightFileError(
        t.file,
        `expected shape [${shape.join(", ")}], found [${t.shape.join(", ")}]`,
        { tensor: t.name },
      );
    }
    if (t.dtype !== dtype) {
      throw new WeightFileError(
        t.file,
        `expected dtype ${dtype} like the other experts of its layer, found ${t.dtype}`,
        {
          tensor: t.name,
        },
      );
    }
    return t;
  }

  /** The tensors of one expert. */
  tensors(layer: number, expert: number): ExpertTensors {
    const l = this.#tensors.get(layer);
    if (!l || !l[expert]) {
      throw new ArgumentError(
        "expert",
        `no expert ${expert} in layer ${layer}: expected an expert in [0, ${this.experts}) of ` +
          `a MoE layer (${[...this.#tensors.keys()].join(", ")})`,
      );
    }
    return l[expert];
  }

  /**
   * Every expert tensor of `layers` (default: every MoE layer) (name, length, bytes): what the
   * `pinned` uploader copies at load.
   */
  sources(layers: readonly number[] = [...this.#tensors.keys()]): UploadSource[] {
    const out: UploadSource[] = [];
    for (const layer of layers) {
      for (let e = 0; e < this.experts; e++) {
        const t = this.tensors(layer, e);
        for (const x of [t.gate, t.up, t.down]) if (x) out.push(x);
      }
    }
    // A file truncated under the process would SIGBUS the copies: one size check per shard.
    this.#store.checkIntact(out.map((t) => t.name));
    return out;
  }

  /**
   * Copies one expert into `slot` of `pool` straight from the mapped file (three copies through
   * `up`); returns the bytes copied. Staged copies are submitted on `up.flush()`.
   */
  async upload(
    up: Uploader,
    layer: number,
    expert: number,
    pool: ExpertPool,
    slot: number,
  ): Promise<number> {
    return await this.uploadMany(up, layer, [{ expert, slot }], pool);
  }

  /**
   * Copies several experts of one layer into their slots in one batch (their fills share the copy
   * threads; see {@linkcode Uploader.uploadMany}); returns the bytes copied.
   */
  async uploadMany(
    up: Uploader,
    layer: number,
    experts: readonly { expert: number; slot: number }[],
    pool: ExpertPool,
  ): Promise<number> {
    const items: UploadItem[] = [];
    const names: string[] = [];
    let bytes = 0;
    for (const { expert, slot } of experts) {
      const t = this.tensors(layer, expert);
      items.push(
        { dst: pool.gate, offset: slot * pool.bytes.gateUp, data: t.gate },
        { dst: pool.down, offset: slot * pool.bytes.down, data: t.down },
      );
      names.push(t.gate.name, t.down.name);
      if (t.up) {
        if (!pool.up) {
          throw new ArgumentError("pool", "a pool without up projections for SwiGLU experts");
        }
        items.push({ dst: pool.up, offset: slot * pool.bytes.gateUp, data: t.up });
        names.push(t.up.name);
      }
      bytes += expertBytes(t);
    }
    // A file truncated under the process would SIGBUS the copy: one size check per shard instead.
    this.#store.checkIntact(names);
    await up.uploadMany(items);
    return bytes;
  }
}
