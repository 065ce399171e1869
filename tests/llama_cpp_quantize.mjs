// llama.cpp's own quantiser (`llama_model_quantize`, what `llama-quantize` runs) for
// `llama_cpp_test.ts`: rewrites a GGUF file in a llama.cpp file type, through Deno's FFI into the
// libllama of a node-llama-cpp install (its CPU prebuilt binaries). Runs in its own Deno process:
//   deno run -A --no-config tests/llama_cpp_quantize.mjs INSTALL_DIR IN.gguf OUT.gguf FTYPE
// FTYPE is a llama_ftype number (15: MOSTLY_Q4_K_M). One thread, no importance matrix. Prints one
// JSON line: {ftype, out}.
const [dir, input, output, ftype] = Deno.args;
const bins = `${dir}/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64`;
const lib = [...Deno.readDirSync(bins)].find((e) => /^libllama\..*so$/.test(e.name));
if (!lib) throw new Error(`no libllama*.so in ${bins}`);
const llama = Deno.dlopen(`${bins}/${lib.name}`, {
  llama_model_quantize_default_params: {
    parameters: [],
    // nthread, ftype, output_tensor_type, token_embedding_type, 6 bools, 4 pointers, max_buf_size
    result: {
      struct: [
        "i32",
        "i32",
        "i32",
        "i32",
        "u8",
        "u8",
        "u8",
        "u8",
        "u8",
        "u8",
        "pointer",
        "pointer",
        "pointer",
        "pointer",
        "usize",
      ],
    },
  },
  llama_model_quantize: { parameters: ["buffer", "buffer", "buffer"], result: "u32" },
});
const params = new Uint8Array(llama.symbols.llama_model_quantize_default_params());
if (params.byteLength !== 64) {
  throw new Error(`llama_model_quantize_params: ${params.byteLength} bytes`);
}
const view = new DataView(params.buffer);
view.setInt32(0, 1, true); // nthread
view.setInt32(4, Number(ftype), true);
const cstr = (s) => new TextEncoder().encode(`${s}\0`);
const rc = llama.symbols.llama_model_quantize(cstr(input), cstr(output), params);
llama.close();
if (rc !== 0) throw new Error(`llama_model_quantize returned ${rc}`);
console.log(JSON.stringify({ ftype: Number(ftype), out: output }));
