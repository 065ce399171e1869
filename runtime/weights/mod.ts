/**
 * Weights: dtypes and packing, memory-mapped files, and safetensors reading and writing.
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
export * from "./dtype.ts";
export * from "./mmap.ts";
export * from "./safetensors.ts";
export * from "./safetensors_writer.ts";
export * from "./finite.ts";
