// Greedy tokens from llama.cpp (npm node-llama-cpp, CPU) for `llama_cpp_test.ts`. Runs in its own
// Deno process, outside the project's configuration, against a separate node-llama-cpp install:
//   deno run -A --no-config --node-modules-dir=manual tests/llama_cpp_greedy.mjs \
//     INSTALL_DIR MODEL.gguf PROMPT N
// INSTALL_DIR holds node_modules/node-llama-cpp. PROMPT is text (tokenized with the file's
// vocabulary) or `ids:1,2,3` (token ids as they are). Prints one JSON line: {prompt, tokens, version}.
const [dir, modelPath, text, n] = Deno.args;
const root = `file://${dir}/node_modules/node-llama-cpp/`;
const { getLlama } = await import(new URL("dist/index.js", root).href);
const pkg = JSON.parse(await Deno.readTextFile(new URL("package.json", root)));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error", maxThreads: 1 });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: 256, threads: 1 });
const prompt = text.startsWith("ids:")
  ? text.slice(4).split(",").map(Number)
  : model.tokenize(text);
const tokens = [];
for await (const t of context.getSequence().evaluate(prompt, { temperature: 0 })) {
  tokens.push(t);
  if (tokens.length >= Number(n)) break;
}
console.log(JSON.stringify({ prompt, tokens, version: pkg.version }));
await context.dispose();
await model.dispose();
await llama.dispose();
