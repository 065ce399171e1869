/**
 * Pregate: run Mixture-of-Experts language models on WebGPU with the experts kept off the GPU and
 * streamed in just before they are needed (Pre-gated MoE, ISCA 2024).
 *
 * This module only re-exports; see the README for a tour.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "./mod.ts";
 * const model = await loadModel("models/tiny-mixtral", { gpu: "native" });
 * for await (const id of model.generate([5, 77, 301], { maxTokens: 8 })) console.log(id);
 * await model.dispose();
 * ```
 * @module
 */
export * from "./runtime/errors.ts";
export * from "./runtime/gpu/device.ts";
export * from "./runtime/weights/mod.ts";
export * from "./runtime/model.ts";
export * from "./runtime/models/config.ts";
export {
  type MadeModel,
  makeModel,
  type MakeModelOptions,
  type ModelDims,
  presetNames,
} from "./runtime/models/make_model.ts";
export {
  formatInspect,
  inspectModel,
  type InspectOptions,
  type InspectReport,
} from "./runtime/models/inspect.ts";
export * from "./runtime/experts/allocator.ts";
export { EXPERT_MODES, type ExpertMode, type PregatePolicy } from "./runtime/experts/engine.ts";
export * from "./runtime/experts/trace.ts";
export * from "./runtime/experts/trace_svg.ts";
export * from "./kernels/mod.ts";
