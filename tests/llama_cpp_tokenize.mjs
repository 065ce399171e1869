// llama.cpp's (npm node-llama-cpp, CPU) tokenization and detokenization of texts with a GGUF
// file's vocabulary, for `llama_cpp_test.ts`. Runs in its own Deno process, outside the project's
// configuration, against a separate node-llama-cpp install:
//   deno run -A --no-config --node-modules-dir=manual tests/llama_cpp_tokenize.mjs \
//     INSTALL_DIR MODEL.gguf TEXTS.json
// TEXTS.json holds an array of strings, tokenized without special tokens (no BOS, `<s>` as text).
// Prints one JSON line: {ids: number[][], decoded: string[], version}.
const [dir, modelPath, textsPath] = Deno.args;
const root = `file://${dir}/node_modules/node-llama-cpp/`;
const { getLlama } = await import(new URL("dist/index.js", root).href);
const pkg = JSON.parse(await Deno.readTextFile(new URL("package.json", root)));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error", maxThreads: 1 });
const model = await llama.loadModel({ modelPath, vocabOnly: true });
const texts = JSON.parse(await Deno.readTextFile(textsPath));
const ids = texts.map((t) => model.tokenize(t));
const decoded = ids.map((t) => model.detokenize(t));
console.log(JSON.stringify({ ids, decoded, version: pkg.version }));
await model.dispose();
await llama.dispose();
