/**
 * Pregate: run Mixture-of-Experts language models on WebGPU with the experts kept off the GPU and
 * streamed in just before they are needed (Pre-gated MoE, ISCA 2024).
 *
 * The user-facing API: {@linkcode loadModel} and {@linkcode Model} (logits, generation, stats),
 * text in and out ({@linkcode loadTokenizer}, {@linkcode generateText}, {@linkcode renderChat},
 * {@linkcode DecodeStream}), perplexity ({@linkcode evaluatePerplexity}), the OpenAI-compatible
 * server ({@linkcode startServer}), {@linkcode openGpu}, {@linkcode makeModel} (random checkpoints
 * of real shapes), {@linkcode inspectModel}, the expert trace helpers and the typed errors. The
 * WGSL kernels and their dispatch builders are the `./kernels` export (`kernels/mod.ts`); the
 * weight file formats (safetensors, GGUF, the Q8_0 / Q4_K blocks) the `./weights` export
 * (`runtime/weights/mod.ts`). See the README for a tour.
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
 *
 * @example Text in, text out, with the tokenizer.json of the model's directory
 * ```ts ignore
 * import { generateText, loadModel, loadTokenizer } from "./mod.ts";
 * const model = await loadModel("models/my-moe", { gpu: "native" });
 * const tokenizer = await loadTokenizer("models/my-moe");
 * for await (const piece of generateText(model, tokenizer, "Once upon a time")) console.log(piece);
 * await model.dispose();
 * ```
 * @module
 */
export {
  type ActivationRounding,
  type GenerateOptions,
  type GenerateStats,
  loadModel,
  type LoadOptions,
  Model,
  type OffloadCounters,
  type SequenceOptions,
} from "./runtime/model.ts";
export { EXPERT_MODES, type ExpertMode, type PregatePolicy } from "./runtime/experts/engine.ts";
export {
  ArgumentError,
  BudgetError,
  ConfigError,
  FileWriteError,
  GgufError,
  GpuError,
  GpuUnavailableError,
  InternalError,
  NumericError,
  PregateError,
  TokenizerError,
  WeightFileError,
} from "./runtime/base/errors.ts";
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
} from "./runtime/base/gpu/device.ts";
export { loadConfig, type ModelConfig } from "./runtime/models/config.ts";
export { loadModelConfig } from "./runtime/models/gguf_model.ts";
export {
  type ConvertOptions,
  type ConvertResult,
  convertToGguf,
} from "./runtime/models/gguf_convert.ts";
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
} from "./runtime/experts/trace.ts";
export {
  type CellState,
  TRACE_COLORS,
  type TraceSvgOptions,
  traceToSvg,
} from "./runtime/experts/trace_svg.ts";
export {
  type DecodeOptions,
  type EncodeOptions,
  loadTokenizer,
  type SpecialTokens,
  Tokenizer,
} from "./runtime/text/tokenizer.ts";
export { DecodeStream, type DecodeStreamOptions } from "./runtime/text/detokenize.ts";
export { type ChatMessage, type ChatOptions, renderChat } from "./runtime/text/chat.ts";
export {
  generateText,
  type StopReason,
  type TextGenerateOptions,
  TextGeneration,
} from "./runtime/text/generate_text.ts";
export {
  EVAL_CONTEXT,
  type EvalOptions,
  type EvalResult,
  evaluateIds,
  evaluatePerplexity,
  evalWindows,
} from "./runtime/eval.ts";
export { type PregateServer, type ServeOptions, startServer } from "./runtime/serve/server.ts";
