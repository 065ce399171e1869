/**
 * Pregate: run Mixture-of-Experts language models on WebGPU with the experts kept off the GPU and
 * streamed in just before they are needed (Pre-gated MoE, ISCA 2024).
 *
 * This module only re-exports; see the README for a tour.
 *
 * @example
 * ```ts ignore
 * import { generateText, loadModel, loadTokenizer } from "./mod.ts";
 * const model = await loadModel("models/tiny-mixtral", { gpu: "native" });
 * for await (const id of model.generate([5, 77, 301], { maxTokens: 8 })) console.log(id);
 * // text in, text out, with the tokenizer.json of the model's directory:
 * const tokenizer = await loadTokenizer("models/tiny-mixtral");
 * for await (const piece of generateText(model, tokenizer, "Once upon a time")) console.log(piece);
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
export * from "./kernels/mod.ts";
