// Greedy tokens from llama.cpp (npm node-llama-cpp) for `llama_cpp_test.ts`. Runs in its own
// Deno process, outside the project's configuration, against a separate node-llama-cpp install:
//   deno run -A --no-config --node-modules-dir=manual tests/llama_cpp_greedy.mjs \
//     INSTALL_DIR MODEL.gguf PROMPT N [cpu|vulkan]
// INSTALL_DIR holds node_modules/node-llama-cpp. PROMPT is text (tokenized with the file's
// vocabulary) or `ids:1,2,3` (token ids as they are). The backend is the CPU build on one thread
// (default) or the Vulkan build with every layer on the GPU. Prints one JSON line: {prompt, tokens,
// version, backend}.
const [dir, modelPath, text, n, backend = "cpu"] = Deno.args;
if (backend !== "cpu" && backend !== "vulkan") {
  throw new Error(`llama_cpp_greedy: backend cpu or vulkan, got '${backend}'`);
}
const root = `file://${dir}/node_modules/node-llama-cpp/`;
const { getLlama } = await import(new URL("dist/index.js", root).href);
const pkg = JSON.parse(await Deno.readTextFile(new URL("package.json", root)));
const llama = await getLlama({
  gpu: backend === "cpu" ? false : backend,
  build: "never",
  logLevel: "error",
  maxThreads: 1,
});
const model = await llama.loadModel({ modelPath, gpuLayers: backend === "cpu" ? 0 : "max" });
const context = await model.createContext({ contextSize: 256, threads: 1 });
const prompt = text.startsWith("ids:")
  ? text.slice(4).split(",").map(Number)
  : model.tokenize(text);
const tokens = [];
for await (const t of context.getSequence().evaluate(prompt, { temperature: 0 })) {
  tokens.push(t);
  if (tokens.length >= Number(n)) break;
}
console.log(JSON.stringify({ prompt, tokens, version: pkg.version, backend: llama.gpu || "cpu" }));
await context.dispose();
await model.dispose();
await llama.dispose();
