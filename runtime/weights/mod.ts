/**
 * Weights: dtypes and packing, memory-mapped files, safetensors and GGUF reading and writing, the
 * Q8_0 / Q4_K block formats, and the weight types the kernels read.
 *
 * @example
 * ```ts
 * import { encodeTensor, openCheckpoint, writeShardedCheckpoint } from "./mod.ts";
 * await writeShardedCheckpoint("/tmp/tiny", [
 *   { name: "norm.weight", dtype: "bf16", shape: [3], data: encodeTensor([1, 2, 3], "bf16") },
 * ]);
 * const ckpt = openCheckpoint("/tmp/tiny");
 * console.log(ckpt.tensorF32("norm.weight")); // Float32Array [1, 2, 3]
 * ckpt.close();
 * ```
 * @module
 */
export * from "../base/dtype.ts";
export * from "./mmap.ts";
export * from "./safetensors.ts";
export * from "./safetensors_writer.ts";
export * from "./finite.ts";
export * from "./gguf.ts";
export * from "./gguf_writer.ts";
export * from "./quant.ts";
export * from "./weight_type.ts";
