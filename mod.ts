/**
 * Pregate: run Mixture-of-Experts language models on WebGPU with the experts kept off the GPU and
 * streamed in just before they are needed (Pre-gated MoE, ISCA 2024).
 *
 * The user-facing API: {@linkcode loadModel} and {@linkcode Model} (logits, generation, stats),
 * {@linkcode openGpu}, {@linkcode makeModel} (random checkpoints of real shapes),
 * {@linkcode inspectModel}, the expert trace helpers and the typed errors. The WGSL kernels and
 * their dispatch builders are the `./kernels` export (`kernels/mod.ts`). See the README for a tour.
 *
 * @example
 * ```ts
 * import { loadModel, makeModel } from "./mod.ts";
 * const dir = await Deno.makeTempDir();
 * await makeModel({ arch: "mixtral", preset: "tiny", out: dir, force: true });
 * const model = await loadModel(dir, { gpu: "native" });
 * const ids: number[] = [];
 * for await (const id of model.generate([5, 77, 201], { maxTokens: 4 })) ids.push(id);
 * console.log(ids.length, model.lastStats?.mode); // 4 "resident"
 * await model.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 * @module
 */
export {
  type GenerateOptions,
  type GenerateStats,
  loadModel,
  type LoadOptions,
  Model,
} from "./runtime/model.ts";
export { EXPERT_MODES, type ExpertMode, type PregatePolicy } from "./runtime/experts/engine.ts";
export {
  ArgumentError,
  BudgetError,
  ConfigError,
  GpuError,
  GpuUnavailableError,
  InternalError,
  PregateError,
  WeightFileError,
} from "./runtime/errors.ts";
export {
  type AdapterInfoSnapshot,
  type BufferPurpose,
  DAWN_FLAGS,
  Gpu,
  type GpuChoice,
  type GpuCounters,
  type GpuFeatures,
  type GpuImpl,
  type MemoryReport,
  openGpu,
  type OpenGpuOptions,
} from "./runtime/gpu/device.ts";
export { loadConfig, type ModelConfig } from "./runtime/models/config.ts";
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
export {
  type ExpertTrace,
  formatTraceSummary,
  type LayerTraceSummary,
  type SummarizeOptions,
  summarizeTrace,
  type TraceCounts,
  type TraceRecord,
  type TraceSummary,
  type TraceSvgOptions,
  traceToSvg,
} from "./runtime/experts/trace.ts";
