// The llama.cpp peer of the offload benchmark: npm node-llama-cpp 3.21.1 with its prebuilt Vulkan,
// CUDA or CPU binaries decodes greedily on a GGUF file and reports decode tokens/s beside the greedy
// token ids, so they can be compared with Pregate's on the same file. Runs in its own Deno process,
// outside the project's configuration, against a separate node-llama-cpp install (see
// bench/llama_cpp_pack.sh, which packs one into .nlc/nlc.tar.xz; the CUDA build comes in pieces,
// bench/llama_cpp_cuda_pack.sh):
//   deno run -A --no-config --node-modules-dir=manual bench/llama_cpp_peer.mjs \
//     --install DIR --model F.gguf [--gpu vulkan|cuda|cpu] [--prompt-ids 1,2,3|offload] \
//     [--tokens 16] [--runs 3] [--threads N]
// DIR holds node_modules/node-llama-cpp. `--prompt-ids offload` is bench/offload.ts's prompt:
// (i * 7919 + 13) % vocab for i < 16, the vocabulary size read from the file's token_embd.weight.
// One untimed warm-up run, then `--runs` timed runs; all must give the same tokens. Prints one JSON
// line (backend, GPU device, layers offloaded, decode tokens/s per run and their median, prefill
// seconds, the greedy ids); progress goes to stderr.
//
// Timing follows Pregate's GenerateStats: prefill is from the start until the first new token is
// on the CPU; decode is the tokens after the first over the time after it (the prompt excluded).
// The context is cleared between runs.
//
// What node-llama-cpp 3.21.1 does not offer (checked in its .d.ts and its addon's C++ source,
// llama/addon/AddonModel.cpp): any placement of tensors other than `gpuLayers` (whole layers on
// the GPU or the CPU). llama.cpp's `--cpu-moe` / `--n-cpu-moe` / `--override-tensor` (the model
// params' `tensor_buft_overrides`) are not exposed; this script measures resident decode
// (`gpuLayers: "max"`) or pure CPU decode only. llama_cpp_ffi.mjs calls the same libllama through
// Deno's FFI with the experts kept in host memory.
//
// GGUF files without a vocabulary (`tokenizer.ggml.model` = `no_vocab`, what Pregate's `convert`
// writes for a checkpoint without tokenizer.json): llama.cpp loads them and evaluates raw token ids,
// but its tokenizer is not initialised and `llama_tokenize` aborts the process (GGML_ASSERT).
// node-llama-cpp tokenizes a test string after every load (LlamaModel.getWarnings, which catches
// JavaScript errors), so for such files LlamaModel.prototype.tokenize is replaced by one that
// throws. Evaluating ids and greedy sampling (temperature 0: llama.cpp's greedy sampler) need no
// vocabulary; nothing here detokenizes.
import { peerArgs, peerRun, promptIds, runFigures } from "./llama_cpp_args.ts";

const { args, steps, runs, threads, fail } = peerArgs("llama_cpp_peer");
const log = (m) => console.error(`[llama.cpp peer] ${m}`);
const onGpu = args.gpu !== "cpu";

const root = new URL(`file://${args.install.replace(/\/$/, "")}/node_modules/node-llama-cpp/`);
const nlc = await import(new URL("dist/index.js", root).href);
const pkg = JSON.parse(await Deno.readTextFile(new URL("package.json", root)));

const info = await nlc.readGgufFileInfo(args.model, { sourceType: "filesystem" });
const embd = info.tensorInfo?.find((t) => t.name === "token_embd.weight");
if (!embd) fail(`${args.model}: no token_embd.weight tensor`);
const vocab = Number(embd.dimensions[1]);
const noVocab = info.metadata?.tokenizer?.ggml?.model === "no_vocab";
const prompt = promptIds(args["prompt-ids"], vocab, fail);
if (noVocab) {
  // llama_tokenize aborts on a file without a vocabulary; getWarnings() catches this error.
  nlc.LlamaModel.prototype.tokenize = () => {
    throw new Error(`${args.model} has no vocabulary (no_vocab): raw token ids only`);
  };
}

const t0 = performance.now();
const llama = await nlc.getLlama({
  gpu: onGpu ? args.gpu : false,
  build: "never",
  skipDownload: true,
  usePrebuiltBinaries: true,
  progressLogs: false,
  logLevel: "error",
  ...(threads === undefined ? {} : { maxThreads: threads }),
});
if (onGpu && llama.gpu !== args.gpu) fail(`asked for ${args.gpu}, got ${llama.gpu}`);
const devices = llama.gpu ? await llama.getGpuDeviceNames() : [];
if (args.gpu === "vulkan" && devices.length !== 1) {
  // ggml-vulkan skips CPU-type devices (Mesa lavapipe) unless GGML_VK_VISIBLE_DEVICES names them,
  // and splits the layers over every device it uses.
  fail(
    `Vulkan: expected one device, found ${devices.length} (${devices.join(", ")}); ` +
      "choose one with GGML_VK_VISIBLE_DEVICES=i (a CPU device such as lavapipe needs it too)",
  );
}
log(`llama.cpp ${llama.llamaCppRelease.release} (${llama.buildType}), gpu ${llama.gpu} ${devices}`);
const model = await llama.loadModel({
  modelPath: args.model,
  gpuLayers: onGpu ? "max" : 0,
});
const loadSeconds = (performance.now() - t0) / 1e3;
const totalLayers = model.fileInsights.totalLayers;
if (onGpu && model.gpuLayers !== totalLayers) {
  fail(`only ${model.gpuLayers} of ${totalLayers} layers fit on ${devices[0]}`);
}
log(`loaded ${args.model} in ${loadSeconds.toFixed(1)} s, ${model.gpuLayers} layers on the GPU`);
const context = await model.createContext({
  contextSize: Math.ceil((prompt.length + steps + 1) / 256) * 256,
  batchSize: Math.max(prompt.length, 32),
  sequences: 1,
  ...(threads === undefined ? {} : { threads }),
});
const sequence = context.getSequence();

/** One greedy generation from an empty context: ids and the prefill / decode split. */
async function once() {
  await sequence.clearHistory();
  const ids = [];
  const start = performance.now();
  let first = start, last = start;
  for await (const id of sequence.evaluate(prompt, { temperature: 0 })) {
    last = performance.now();
    if (ids.length === 0) first = last;
    ids.push(id);
    if (ids.length >= steps) break;
  }
  return peerRun(ids, start, first, last);
}

const warm = await once();
const timed = [];
for (let r = 0; r < runs; r++) timed.push(await once());
const figures = runFigures(prompt, warm, timed, fail, log);
console.log(JSON.stringify({
  peer: "llama.cpp",
  node_llama_cpp: pkg.version,
  llama_cpp_release: llama.llamaCppRelease.release,
  backend: llama.gpu || "cpu",
  gpu_devices: devices,
  gpu_layers: model.gpuLayers,
  total_layers: totalLayers,
  flash_attention: context.flashAttention,
  threads: context.currentThreads,
  model: args.model,
  model_bytes: model.size,
  no_vocab: noVocab,
  vocab,
  load_seconds: loadSeconds,
  ...figures,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
