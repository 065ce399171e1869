/**
 * GPU residency of a checkpoint's weights. Matrices are uploaded unchanged in their file dtype (the
 * kernels unpack f16/bf16 words), small vectors (norms, biases) as f32. Every tensor's presence, shape
 * and dtype is validated here, at load, so the forward pass never meets a surprise. Tensor names come
 * from the model's architecture file (through `names.ts`); the shapes uploaded into are those of
 * `gpu_weights.ts`, re-exported here.
 *
 * Experts are uploaded into an {@linkcode ExpertPool} per MoE layer: one stacked buffer per projection
 * (`[slots, rows, cols]`) plus a slot table (`u32[experts]`, expert -> slot) that the MoE kernels read.
 * In resident mode every expert has its own slot (identity table); the offloading engine uses the same
 * pool layout with fewer slots.
 *
 * @example
 * ```ts ignore
 * import { openGpu } from "../gpu/device.ts";
 * import { loadConfig } from "./config.ts";
 * import { openCheckpoint } from "../weights/safetensors.ts";
 * import { uploadWeights } from "./weights.ts";
 * const gpu = await openGpu();
 * const cfg = await loadConfig("model");
 * const w = uploadWeights(gpu, cfg, openCheckpoint("model"), { experts: "resident" });
 * console.log(w.layers.length, gpu.memory().byPurpose.experts);
 * ```
 * @module
 */
import type { BufferPurpose, Gpu } from "../gpu/device.ts";
import { BudgetError, ConfigError, WeightFileError } from "../errors.ts";
import type { Tensor, TensorStore } from "../weights/safetensors.ts";
import type { ModelConfig } from "./model_config.ts";
import { layerNames, type MlpNames, modelNames, pregateName } from "./names.ts";
import {
  type ExpertPool,
  expertPool,
  type GpuMatrix,
  type GpuMlp,
  type LayerWeights,
  type ModelWeights,
  uploadTensor,
} from "./gpu_weights.ts";

export {
  type ExpertPool,
  expertPool,
  expertSlotBytes,
  type GpuMatrix,
  type GpuMlp,
  type LayerWeights,
  type ModelWeights,
  uploadTensor,
} from "./gpu_weights.ts";

/** Options of {@linkcode uploadWeights}. */
export interface UploadOptions {
  /** `resident`: every expert on the GPU; `none`: leave experts to the offloading engine. */
  experts: "resident" | "none";
  /** Progress callback: bytes uploaded so far, total bytes to upload. */
  onProgress?: (done: number, total: number) => void;
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
  if (t.dtype !== "f32" && cols % 2) {
    throw new WeightFileError(
      t.file,
      `${t.dtype} matrices need an even number of columns, found ${cols}`,
      { tensor: t.name },
    );
  }
}

/**
 * Uploads the weights of `cfg` from `store` to the GPU, validating every tensor. Throws
 * {@linkcode WeightFileError} for a missing or misshapen tensor, {@linkcode BudgetError} when a matrix
 * exceeds the device's storage binding limit.
 */
export function uploadWeights(
  gpu: Gpu,
  cfg: ModelConfig,
  store: TensorStore,
  opts: UploadOptions,
): ModelWeights {
  // Plan first (validates everything and sums the bytes), then upload.
  const jobs: (() => void)[] = [];
  let total = 0, done = 0;
  const report = (n: number) => {
    done += n;
    opts.onProgress?.(done, total);
  };
  const maxBind = gpu.limits.maxStorageBufferBindingSize;

  const matrix = (name: string, rows: number, cols: number, purpose: BufferPurpose): GpuMatrix => {
    const t = store.get(name);
    expectShape(t, [rows, cols]);
    matrixOk(t, cols);
    if (t.byteLength > maxBind) {
      throw new BudgetError(
        `${name}: ${t.byteLength} bytes exceed this GPU's storage binding limit (${maxBind} bytes)`,
      );
    }
    const buffer = gpu.storage(purpose, t.byteLength, name);
    total += t.byteLength;
    jobs.push(() => {
      uploadTensor(gpu, t, buffer);
      report(t.byteLength);
    });
    return { buffer, dtype: t.dtype, rows, cols };
  };
  const vector = (name: string, n: number, shapes: number[][] = [[n]]): GPUBuffer => {
    const t = store.get(name);
    if (!shapes.some((s) => s.length === t.shape.length && s.every((d, i) => d === t.shape[i]))) {
      expectShape(t, shapes[0]);
    }
    const buffer = gpu.storage("dense", n * 4, name);
    total += n * 4;
    jobs.push(() => {
      gpu.write(buffer, store.tensorF32(name));
      report(n * 4);
    });
    return buffer;
  };
  const mlp = (n: MlpNames, inter: number): GpuMlp => ({
    gate: matrix(n.gate, inter, cfg.hidden, "dense"),
    up: matrix(n.up, inter, cfg.hidden, "dense"),
    down: matrix(n.down, cfg.hidden, inter, "dense"),
  });

  const H = cfg.hidden, qDim = cfg.heads * cfg.headDim, kvDim = cfg.kvHeads * cfg.headDim;
  const mn = modelNames(cfg);
  const embed = matrix(mn.embed, cfg.vocabSize, H, "dense");
  const lmHead = cfg.tieEmbeddings ? embed : matrix(mn.lmHead, cfg.vocabSize, H, "dense");
  const finalNorm = vector(mn.finalNorm, H);
  const layers: LayerWeights[] = cfg.layers.map((lc, i) => {
    const n = layerNames(cfg, i);
    let ffn: LayerWeights["ffn"];
    if (n.ffn.kind === "dense" && lc.ffn.kind === "dense") {
      ffn = { kind: "dense", ...mlp(n.ffn, lc.ffn.inter) };
    } else if (n.ffn.kind === "moe" && lc.ffn.kind === "moe") {
      const f = lc.ffn, nf = n.ffn;
      let pool: ExpertPool | null = null;
      if (opts.experts === "resident") {
        pool = expertPool(
          gpu,
          f.experts,
          f.experts,
          f.inter,
          H,
          store.get(nf.expert(0).gate).dtype,
        );
        for (let e = 0; e < f.experts; e++) {
          const en = nf.expert(e);
          for (const [role, nm] of [["gate", en.gate], ["up", en.up], ["down", en.down]] as const) {
            const t = store.get(nm);
            expectShape(t, role === "down" ? [H, f.inter] : [f.inter, H]);
            if (t.dtype !== pool.dtype) {
              throw new WeightFileError(
                t.file,
                `expected dtype ${pool.dtype} like expert 0, found ${t.dtype}`,
                {
                  tensor: nm,
                },
              );
            }
            matrixOk(t, role === "down" ? f.inter : H);
            const p = pool;
            const off = e * (role === "down" ? p.bytes.down : p.bytes.gateUp);
            total += t.byteLength;
            jobs.push(() => {
              uploadTensor(gpu, t, p[role], off);
              report(t.byteLength);
            });
          }
        }
        const p = pool;
        jobs.push(() => gpu.write(p.table, Uint32Array.from({ length: f.experts }, (_, e) => e)));
      }
      ffn = {
        kind: "moe",
        router: matrix(nf.router, f.experts, H, "dense"),
        pregate: nextMoe(cfg, i) !== undefined && store.has(pregateName(cfg, i))
          ? matrix(pregateName(cfg, i), nextMoe(cfg, i)!.experts, H, "dense")
          : undefined,
        pool,
        shared: nf.shared
          ? {
            ...mlp(nf.shared, f.sharedInter),
            gateWeight: matrix(nf.shared.gateWeight, 1, H, "dense"),
          }
          : undefined,
      };
    } else {
      throw new ConfigError(
        `${cfg.arch}: layer ${i} is ${lc.ffn.kind} in the config but its tensor names are ` +
          `${n.ffn.kind}'s`,
        "the architecture file's layer names must follow the config's layer kinds",
      );
    }
    return {
      inputNorm: vector(n.inputNorm, H),
      postNorm: vector(n.postNorm, H),
      q: matrix(n.q, qDim, H, "dense"),
      k: matrix(n.k, kvDim, H, "dense"),
      v: matrix(n.v, kvDim, H, "dense"),
      o: matrix(n.o, H, qDim, "dense"),
      bias: n.bias
        ? { q: vector(n.bias.q, qDim), k: vector(n.bias.k, kvDim), v: vector(n.bias.v, kvDim) }
        : undefined,
      qkNorm: n.qkNorm
        ? cfg.qkNorm === "head"
          ? { q: vector(n.qkNorm.q, cfg.headDim), k: vector(n.qkNorm.k, cfg.headDim) }
          : { q: vector(n.qkNorm.q, qDim), k: vector(n.qkNorm.k, kvDim) }
        : undefined,
      ffn,
    };
  });
  opts.onProgress?.(0, total);
  for (const job of jobs) job();
  return { embed, lmHead, finalNorm, layers };
}

/** The config of the MoE layer after layer `i`, if any. */
function nextMoe(cfg: ModelConfig, i: number) {
  for (let j = i + 1; j < cfg.layers.length; j++) {
    const f = cfg.layers[j].ffn;
    if (f.kind === "moe") return f;
  }
  return undefined;
}
