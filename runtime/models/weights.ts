/**
 * GPU residency of a checkpoint's weights. Matrices are uploaded unchanged in their file dtype (the
 * kernels unpack f16/bf16 words), small vectors (norms, biases) as f32. Every tensor's presence, shape
 * and dtype is validated at load (`weight_upload.ts`), so the forward pass never meets a surprise. Tensor names come
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
 * import { openGpu } from "../base/gpu/device.ts";
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
import type { Gpu } from "../base/gpu/device.ts";
import { ConfigError } from "../base/errors.ts";
import type { TensorStore } from "../weights/safetensors.ts";
import type { ModelConfig } from "./model_config.ts";
import { layerNames, modelNames, pregateName } from "./names.ts";
import type { LayerWeights, ModelWeights } from "./gpu_weights.ts";
import { type UploadOptions, WeightUpload } from "./weight_upload.ts";

export {
  type ExpertPool,
  expertPool,
  expertProjectionBytes,
  expertSlotBytes,
  type ExpertTypes,
  type GpuMatrix,
  type GpuMlp,
  type LayerWeights,
  type ModelWeights,
  uploadTensor,
} from "./gpu_weights.ts";
export { type UploadOptions, WeightUpload } from "./weight_upload.ts";

/**
 * Queues the weights of layer `i` of `cfg` (named by its architecture): norms, attention
 * projections (+ biases, q/k norms), and the dense MLP or the MoE block (router, its bias, a
 * trained pre-gate if the checkpoint has one, the shared expert, and every expert when
 * `experts` is `resident`).
 *
 * @example
 * ```ts ignore
 * const up = new WeightUpload(gpu, store);
 * const layers = cfg.layers.map((_, i) => uploadLayer(up, cfg, i, "resident"));
 * up.run();
 * ```
 */
export function uploadLayer(
  up: WeightUpload,
  cfg: ModelConfig,
  i: number,
  experts: UploadOptions["experts"],
): LayerWeights {
  const H = cfg.hidden, qDim = cfg.heads * cfg.headDim, kvDim = cfg.kvHeads * cfg.headDim;
  const n = layerNames(cfg, i), lc = cfg.layers[i];
  let ffn: LayerWeights["ffn"];
  if (n.ffn.kind === "dense" && lc.ffn.kind === "dense") {
    ffn = { kind: "dense", ...up.mlp(n.ffn, lc.ffn.inter, H) };
  } else if (n.ffn.kind === "moe" && lc.ffn.kind === "moe") {
    const f = lc.ffn, nf = n.ffn, next = nextMoe(cfg, i);
    ffn = {
      kind: "moe",
      router: up.matrix(nf.router, f.experts, H),
      routerBias: nf.routerBias === undefined ? undefined : up.vector(nf.routerBias, f.experts),
      pregate: next !== undefined && up.store.has(pregateName(cfg, i))
        ? up.matrix(pregateName(cfg, i), next.experts, H)
        : undefined,
      pool: experts === "resident" ? up.experts(nf.expert, f, H) : null,
      shared: nf.shared
        ? {
          ...up.mlp(nf.shared, f.sharedInter, H),
          gateWeight: up.matrix(nf.shared.gateWeight, 1, H),
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
    inputNorm: up.vector(n.inputNorm, H),
    postNorm: up.vector(n.postNorm, H),
    q: up.matrix(n.q, qDim, H),
    k: up.matrix(n.k, kvDim, H),
    v: up.matrix(n.v, kvDim, H),
    o: up.matrix(n.o, H, qDim),
    bias: n.bias
      ? {
        q: up.vector(n.bias.q, qDim),
        k: up.vector(n.bias.k, kvDim),
        v: up.vector(n.bias.v, kvDim),
      }
      : undefined,
    qkNorm: n.qkNorm
      ? cfg.qkNorm === "head"
        ? { q: up.vector(n.qkNorm.q, cfg.headDim), k: up.vector(n.qkNorm.k, cfg.headDim) }
        : { q: up.vector(n.qkNorm.q, qDim), k: up.vector(n.qkNorm.k, kvDim) }
      : undefined,
    ffn,
  };
}

/**
 * Uploads the weights of the decoder `cfg` from `store` to the GPU, validating every tensor. Throws
 * {@linkcode WeightFileError} for a missing or misshapen tensor, {@linkcode BudgetError} when a
 * matrix exceeds the device's storage binding limit. (An architecture with other weights uploads
 * its own: see `uploadModelWeights` in `build.ts`.)
 */
export function uploadWeights(
  gpu: Gpu,
  cfg: ModelConfig,
  store: TensorStore,
  opts: UploadOptions,
): ModelWeights {
  const up = new WeightUpload(gpu, store);
  const H = cfg.hidden;
  const mn = modelNames(cfg);
  const embed = up.matrix(mn.embed, cfg.vocabSize, H);
  const lmHead = cfg.tieEmbeddings ? embed : up.matrix(mn.lmHead, cfg.vocabSize, H);
  const finalNorm = up.vector(mn.finalNorm, H);
  const layers = cfg.layers.map((_, i) => uploadLayer(up, cfg, i, opts.experts));
  up.run(opts.onProgress);
  return { embed, lmHead, finalNorm, layers };
}

/** The config of the MoE layer after layer `i` in its stack, if any. */
function nextMoe(cfg: ModelConfig, i: number) {
  const stack = cfg.stacks?.find((s) => i >= s.first && i < s.first + s.count);
  const end = stack ? stack.first + stack.count : cfg.layers.length;
  for (let j = i + 1; j < end; j++) {
    const f = cfg.layers[j].ffn;
    if (f.kind === "moe") return f;
  }
  return undefined;
}
