/**
 * Pregate: run Mixture-of-Experts language models on WebGPU with the experts kept off the GPU and
 * streamed in just before they are needed (Pre-gated MoE, ISCA 2024).
 *
 * This module only re-exports; see the README for a tour.
 *
 * @example
 * ```ts ignore
 * import { add, openGpu } from "./mod.ts";
 * const gpu = await openGpu({ gpu: "native" });
 * const a = gpu.storage("activations", new Float32Array([1, 2]));
 * const b = gpu.storage("activations", new Float32Array([3, 4]));
 * const out = gpu.storage("activations", 8);
 * gpu.submit([await add(gpu, { a, b, out, n: 2 })]);
 * console.log(await gpu.readF32(out)); // Float32Array [4, 6]
 * gpu.destroy();
 * ```
 * @module
 */
export * from "./runtime/errors.ts";
export * from "./runtime/gpu/device.ts";
export * from "./runtime/weights/dtype.ts";
export * from "./kernels/mod.ts";
