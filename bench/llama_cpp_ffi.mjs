// llama.cpp's greedy decode through Deno's FFI into the libllama of a node-llama-cpp 3.21.1 install
// (its prebuilt CPU, Vulkan or CUDA binaries), for the tensor placements node-llama-cpp's API does
// not offer. `--experts host` is llama.cpp's `--cpu-moe`: every expert tensor (the model params'
// `tensor_buft_overrides`, pattern `\.ffn_(up|down|gate|gate_up)_(ch|)exps` -> the CPU buffer type)
// stays in host memory and the CPU computes the expert products, the rest of the model on the GPU;
// `--experts gpu` keeps every layer on the GPU (resident). Runs in its own Deno process, outside the
// project's configuration:
//   deno run -A --no-config bench/llama_cpp_ffi.mjs --install DIR --model F.gguf \
//     [--gpu vulkan|cuda|cpu] [--experts gpu|host] [--prompt-ids 1,2,3|offload] [--tokens 16] \
//     [--runs 3] [--threads N] [--logits FILE]
// DIR holds node_modules/@node-llama-cpp/linux-x64[-vulkan|-cuda] (bench/llama_cpp_pack.sh).
// `--prompt-ids offload` is bench/offload.ts's prompt: (i * 7919 + 13) % vocab for i < 16. One
// untimed warm-up run, then `--runs` timed runs; all must give the same tokens. Prints one JSON line
// in llama_cpp_peer.mjs's form (plus the placement and the threads); `--logits FILE` also writes
// the warm-up run's logits, one row of `vocab` little-endian f32 per generated token (row i: the
// logits ids[i] was chosen from);
// llama.cpp's own log goes to stderr.
//
// The structs below follow include/llama.h of llama.cpp as node-llama-cpp 3.21.1 bundles it
// (release v0.4.0, node_modules/node-llama-cpp/llama/gitRelease.bundle); their sizes are checked
// against what the library's default-params functions return. Context as llama.cpp's defaults
// (flash attention `auto`, f16 KV cache, `op_offload` on), sized like llama_cpp_peer.mjs's; decode
// threads: `--threads` or every logical CPU. Greedy sampling is llama.cpp's own sampler.
import { peerArgs, peerRun, promptIds, runFigures } from "./llama_cpp_args.ts";

const { args, steps, runs, fail, ...parsed } = peerArgs("llama_cpp_ffi", {
  experts: { type: "string", default: "gpu" },
  logits: { type: "string" },
});
const log = (m) => console.error(`[llama.cpp ffi] ${m}`);
if (!["gpu", "host"].includes(args.experts)) fail(`--experts: gpu or host, got '${args.experts}'`);
const threads = parsed.threads ?? navigator.hardwareConcurrency;
try {
  Deno.statSync(args.model);
} catch (e) {
  fail(`--model ${args.model}: ${e.message}`);
}

/** The folder of the build's shared libraries and the one file in it whose name matches `re`. */
function buildFolder() {
  const pkg = `${args.install.replace(/\/$/, "")}/node_modules/@node-llama-cpp/linux-x64` +
    (args.gpu === "cpu" ? "" : `-${args.gpu}`);
  let dir;
  try {
    dir = [...Deno.readDirSync(`${pkg}/bins`)].find((e) => e.isDirectory);
  } catch (e) {
    fail(`${pkg}/bins: ${e.message} (the ${args.gpu} build of node-llama-cpp 3.21.1)`);
  }
  if (!dir) fail(`${pkg}/bins: no build folder`);
  return `${pkg}/bins/${dir.name}`;
}
const bins = buildFolder();
const libNamed = (re) => {
  const hit = [...Deno.readDirSync(bins)].find((e) => re.test(e.name));
  if (!hit) fail(`${bins}: no file matching ${re}`);
  return `${bins}/${hit.name}`;
};

const PTR = "pointer";
/** struct llama_model_params: 80 bytes. */
const MODEL_PARAMS = {
  struct: [PTR, PTR, "i32", "i32", "i32", "i32", "i32", PTR, PTR, PTR, PTR, ...Array(6).fill("u8")],
};
const MODEL_PARAMS_AT = { tensorBuftOverrides: 8, nGpuLayers: 16 };
/** struct llama_context_params: 160 bytes. */
const CONTEXT_PARAMS = {
  struct: [
    ...Array(7).fill("u32"), // n_ctx, n_batch, n_ubatch, n_seq_max, n_rs_seq, n_outputs_max(_per_seq)
    ...Array(7).fill("i32"), // n_threads, n_threads_batch, 5 enums
    ...Array(6).fill("f32"), // rope and yarn factors
    "u32", // yarn_orig_ctx
    "f32", // defrag_thold
    PTR, // cb_eval
    PTR,
    "i32", // type_k
    "i32",
    PTR, // abort_callback
    PTR,
    ...Array(6).fill("u8"), // embeddings, offload_kqv, no_perf, op_offload, swa_full, kv_unified
    PTR, // samplers
    "usize",
    PTR, // ctx_other
  ],
};
const CONTEXT_AT = { nCtx: 0, nBatch: 4, nUbatch: 8, nSeqMax: 12, nThreads: 28, nThreadsBatch: 32 };
const CONTEXT_FLASH_ATTN_AT = 52;
/** struct llama_batch: 56 bytes. */
const BATCH = { struct: ["i32", PTR, PTR, PTR, PTR, PTR, PTR] };

const ggml = Deno.dlopen(libNamed(/^libggml\.[a-z0-9.]*\.so$/), {
  ggml_backend_load_all_from_path: { parameters: ["buffer"], result: "void" },
  ggml_backend_dev_by_type: { parameters: ["i32"], result: PTR },
  ggml_backend_dev_count: { parameters: [], result: "usize" },
  ggml_backend_dev_get: { parameters: ["usize"], result: PTR },
});
const base = Deno.dlopen(libNamed(/^libggml-base\.so$/), {
  ggml_backend_dev_name: { parameters: [PTR], result: PTR },
  ggml_backend_dev_description: { parameters: [PTR], result: PTR },
  ggml_backend_dev_type: { parameters: [PTR], result: "i32" },
  ggml_backend_dev_buffer_type: { parameters: [PTR], result: PTR },
  ggml_backend_buft_name: { parameters: [PTR], result: PTR },
});
const llama = Deno.dlopen(libNamed(/^libllama\.[a-z0-9.]*\.so$/), {
  llama_backend_init: { parameters: [], result: "void" },
  llama_model_default_params: { parameters: [], result: MODEL_PARAMS },
  llama_context_default_params: { parameters: [], result: CONTEXT_PARAMS },
  llama_model_load_from_file: { parameters: ["buffer", MODEL_PARAMS], result: PTR },
  llama_init_from_model: { parameters: [PTR, CONTEXT_PARAMS], result: PTR },
  llama_model_n_layer: { parameters: [PTR], result: "i32" },
  llama_model_size: { parameters: [PTR], result: "u64" },
  llama_model_get_vocab: { parameters: [PTR], result: PTR },
  llama_vocab_n_tokens: { parameters: [PTR], result: "i32" },
  llama_get_memory: { parameters: [PTR], result: PTR },
  llama_memory_clear: { parameters: [PTR, "bool"], result: "void" },
  llama_batch_get_one: { parameters: ["buffer", "i32"], result: BATCH },
  llama_decode: { parameters: [PTR, BATCH], result: "i32" },
  llama_sampler_init_greedy: { parameters: [], result: PTR },
  llama_sampler_sample: { parameters: [PTR, PTR, "i32"], result: "i32" },
  llama_sampler_free: { parameters: [PTR], result: "void" },
  llama_get_logits_ith: { parameters: [PTR, "i32"], result: PTR },
  llama_free: { parameters: [PTR], result: "void" },
  llama_model_free: { parameters: [PTR], result: "void" },
  llama_backend_free: { parameters: [], result: "void" },
});
const L = llama.symbols;
const cstr = (s) => new TextEncoder().encode(`${s}\0`);
const str = (p) => (p ? Deno.UnsafePointerView.getCString(p) : "");

/** A struct returned by value, as a copy, with its size checked against llama.h's. */
function defaults(fn, name, bytes) {
  const out = new Uint8Array(fn());
  if (out.byteLength !== bytes) fail(`${name}: ${out.byteLength} bytes, llama.h says ${bytes}`);
  return out;
}

const t0 = performance.now();
ggml.symbols.ggml_backend_load_all_from_path(cstr(bins));
L.llama_backend_init();
const devices = [];
for (let i = 0n; i < ggml.symbols.ggml_backend_dev_count(); i++) {
  const d = ggml.symbols.ggml_backend_dev_get(i);
  const type = base.symbols.ggml_backend_dev_type(d);
  if (type === 1 || type === 2) {
    devices.push(
      `${str(base.symbols.ggml_backend_dev_name(d))}: ` +
        str(base.symbols.ggml_backend_dev_description(d)),
    );
  }
}
const onGpu = args.gpu !== "cpu";
if (onGpu && devices.length !== 1) {
  // ggml-vulkan skips CPU-type devices (Mesa lavapipe) unless GGML_VK_VISIBLE_DEVICES names them,
  // and splits the layers over every device it uses.
  fail(
    `${args.gpu}: expected one GPU device, found ${devices.length} (${devices.join("; ")}); ` +
      "choose one with GGML_VK_VISIBLE_DEVICES=i or CUDA_VISIBLE_DEVICES=i",
  );
}
if (!onGpu && args.experts === "host") fail("--experts host needs a GPU build (--gpu vulkan|cuda)");

const modelParams = defaults(L.llama_model_default_params, "llama_model_params", 80);
const mp = new DataView(modelParams.buffer);
mp.setInt32(MODEL_PARAMS_AT.nGpuLayers, onGpu ? -1 : 0, true);
let overrides = null, cpuBuft = "";
const pattern = cstr("\\.ffn_(up|down|gate|gate_up)_(ch|)exps");
if (args.experts === "host") {
  const cpu = ggml.symbols.ggml_backend_dev_by_type(0);
  const buft = cpu && base.symbols.ggml_backend_dev_buffer_type(cpu);
  if (!buft) fail("no CPU device or buffer type in this build");
  cpuBuft = str(base.symbols.ggml_backend_buft_name(buft));
  // { pattern, buft }, then the { NULL, NULL } that ends the list.
  overrides = new BigUint64Array([
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(pattern))),
    BigInt(Deno.UnsafePointer.value(buft)),
    0n,
    0n,
  ]);
  mp.setBigUint64(
    MODEL_PARAMS_AT.tensorBuftOverrides,
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(overrides))),
    true,
  );
}
log(
  `${bins}: ${devices.join("; ") || "CPU only"}; experts on ${args.experts}` +
    (cpuBuft ? ` (buffer type ${cpuBuft})` : ""),
);
const model = L.llama_model_load_from_file(cstr(args.model), modelParams);
if (!model) fail(`llama.cpp could not load ${args.model} (its log above says why)`);
const vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model));
const totalLayers = L.llama_model_n_layer(model);

const prompt = promptIds(args["prompt-ids"], vocab, fail);

const contextParams = defaults(L.llama_context_default_params, "llama_context_params", 160);
const cp = new DataView(contextParams.buffer);
cp.setUint32(CONTEXT_AT.nCtx, Math.ceil((prompt.length + steps + 1) / 256) * 256, true);
cp.setUint32(CONTEXT_AT.nBatch, Math.max(prompt.length, 32), true);
cp.setUint32(CONTEXT_AT.nUbatch, Math.max(prompt.length, 32), true);
cp.setUint32(CONTEXT_AT.nSeqMax, 1, true);
cp.setInt32(CONTEXT_AT.nThreads, threads, true);
cp.setInt32(CONTEXT_AT.nThreadsBatch, threads, true);
const flashAttention = ["auto", "off", "on"][cp.getInt32(CONTEXT_FLASH_ATTN_AT, true) + 1];
const context = L.llama_init_from_model(model, contextParams);
if (!context) fail(`llama.cpp could not make a context for ${args.model} (its log above says why)`);
const loadSeconds = (performance.now() - t0) / 1e3;
log(`loaded ${args.model} in ${loadSeconds.toFixed(1)} s, ${totalLayers} layers`);
const sampler = L.llama_sampler_init_greedy();

/** Decodes `ids` (the prompt, or the last token) after what the context already holds. */
function decode(ids) {
  const tokens = Int32Array.from(ids);
  const rc = L.llama_decode(context, L.llama_batch_get_one(tokens, tokens.length));
  if (rc !== 0) fail(`llama_decode returned ${rc} after ${ids.length} tokens`);
}

/** The logits of the last decoded token, copied (for `--logits`). */
function lastLogits() {
  const p = L.llama_get_logits_ith(context, -1);
  if (!p) fail("llama_get_logits_ith returned no logits");
  return new Float32Array(Deno.UnsafePointerView.getArrayBuffer(p, vocab * 4).slice(0));
}

/**
 * One greedy generation from an empty context: ids and the prefill / decode split; with `rows`,
 * each step's logits are pushed onto it (outside the timed runs).
 */
function once(rows) {
  L.llama_memory_clear(L.llama_get_memory(context), true);
  const ids = [];
  const start = performance.now();
  decode(prompt);
  rows?.push(lastLogits());
  ids.push(L.llama_sampler_sample(sampler, context, -1));
  const first = performance.now();
  while (ids.length < steps) {
    decode([ids.at(-1)]);
    rows?.push(lastLogits());
    ids.push(L.llama_sampler_sample(sampler, context, -1));
  }
  return peerRun(ids, start, first, performance.now());
}

const rows = args.logits ? [] : undefined;
const warm = once(rows);
if (rows) {
  const all = new Float32Array(rows.length * vocab);
  rows.forEach((r, i) => all.set(r, i * vocab));
  Deno.writeFileSync(args.logits, new Uint8Array(all.buffer));
}
const timed = [];
for (let r = 0; r < runs; r++) timed.push(once());
const figures = runFigures(prompt, warm, timed, fail, log);
const pkg = JSON.parse(
  Deno.readTextFileSync(`${args.install}/node_modules/node-llama-cpp/package.json`),
);
console.log(JSON.stringify({
  peer: "llama.cpp",
  via: "ffi",
  node_llama_cpp: pkg.version,
  backend: args.gpu,
  gpu_devices: devices,
  experts: args.experts,
  gpu_layers: onGpu ? totalLayers : 0,
  total_layers: totalLayers,
  flash_attention: flashAttention,
  threads,
  model: args.model,
  model_bytes: Number(L.llama_model_size(model)),
  vocab,
  load_seconds: loadSeconds,
  ...figures,
}));
L.llama_sampler_free(sampler);
L.llama_free(context);
L.llama_model_free(model);
L.llama_backend_free();
