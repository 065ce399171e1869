/**
 * A model's parts, built by its architecture (`arch/mod.ts` finds it): the forward plan of a pass,
 * the GPU weights and the run state. A decoder's weights and state are the shared ones
 * (`weights.ts`, `state.ts`); an encoder-decoder architecture builds its own.
 *
 * @example
 * ```ts ignore
 * const weights = uploadModelWeights(gpu, cfg, store, { experts: "resident" });
 * const state = allocModelState(gpu, cfg, { maxT: 16, maxSeq: 64, maxEncoder: 0 });
 * const plan = await buildForward(gpu, cfg, weights, state, { T: 1, logits: "last" });
 * ```
 * @module
 */
import type { Gpu } from "../base/gpu/device.ts";
import { archOf } from "./arch/mod.ts";
import type { ModelWeights } from "./gpu_weights.ts";
import type { ModelConfig } from "./model_config.ts";
import type { ForwardOptions, ForwardPlan } from "./plan.ts";
import { allocState, type RunState, type StateSizes } from "./state.ts";
import type { TensorStore } from "../weights/safetensors.ts";
import { uploadLayer, type UploadOptions, uploadWeights, WeightUpload } from "./weights.ts";

/**
 * Builds the forward plan of `cfg` over `opts.T` tokens at positions state.pos[0]..., with the
 * architecture's own forward definition.
 *
 * @example
 * ```ts ignore
 * const plan = await buildForward(gpu, cfg, weights, state, { T: ids.length, logits: "all" });
 * await new Executor(gpu, RESIDENT).run(plan); // runtime/executor.ts
 * ```
 */
export function buildForward(
  gpu: Gpu,
  cfg: ModelConfig,
  weights: ModelWeights,
  state: RunState,
  opts: ForwardOptions,
): Promise<ForwardPlan> {
  return archOf(cfg).buildForward(gpu, cfg, weights, state, opts);
}

/**
 * Uploads the weights of `cfg` from `store`: the decoder's (`weights.ts`), or what an
 * encoder-decoder architecture uploads itself.
 *
 * @example
 * ```ts ignore
 * const weights = uploadModelWeights(gpu, cfg, store, { experts: "resident" });
 * ```
 */
export function uploadModelWeights(
  gpu: Gpu,
  cfg: ModelConfig,
  store: TensorStore,
  opts: UploadOptions,
): ModelWeights {
  const ed = archOf(cfg).encoderDecoder;
  if (!ed) return uploadWeights(gpu, cfg, store, opts);
  const up = new WeightUpload(gpu, store);
  return ed.uploadWeights(up, cfg, store, opts, (i) => uploadLayer(up, cfg, i, opts.experts));
}

/**
 * Allocates the run state of `cfg` (an encoder-decoder's with room for `maxEncoder` encoder tokens).
 *
 * @example
 * ```ts ignore
 * const state = allocModelState(gpu, cfg, { maxT: 128, maxSeq: 2048, maxEncoder: 512 });
 * ```
 */
export function allocModelState(
  gpu: Gpu,
  cfg: ModelConfig,
  sizes: StateSizes & { maxEncoder: number },
): RunState {
  const ed = archOf(cfg).encoderDecoder;
  return ed ? ed.allocState(gpu, cfg, sizes) : allocState(gpu, cfg, sizes);
}
