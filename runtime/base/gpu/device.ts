/**
 * The GPU layer: one function, {@linkcode openGpu}, that returns a ready {@linkcode Gpu} from a chosen
 * WebGPU implementation (Deno's native `navigator.gpu`, or Dawn from the npm package `webgpu`).
 *
 * The {@linkcode Gpu} object is the only thing the rest of Pregate talks to. It
 * - requests the adapter's limits explicitly (WebGPU's defaults cap buffers at 256 MiB),
 * - records the optional features kernels may specialise on,
 * - accounts every buffer it creates (current and peak bytes, by purpose),
 * - caches compute pipelines by (kernel, constants) and turns compile errors into thrown errors,
 * - funnels every GPU->CPU readback through {@linkcode Gpu.read}, which counts syncs (each costs
 *   >= 10 ms on Deno's native implementation).
 *
 * This module gathers the layer's parts: `types.ts` (the types), `gpu.ts` (the `Gpu` class),
 * `memory.ts` (buffer accounting) and `open.ts` (`openGpu`, `DAWN_FLAGS`).
 *
 * @example
 * ```ts
 * import { openGpu } from "./device.ts";
 * const gpu = await openGpu({ gpu: "native" });
 * const buf = gpu.createBuffer({ size: 1024, usage: GPUBufferUsage.STORAGE, purpose: "activations" });
 * console.log(gpu.memory().current); // 1024
 * gpu.destroy();
 * ```
 * @module
 */
export type * from "./types.ts";
export { Gpu } from "./gpu.ts";
export { DAWN_FLAGS, openGpu } from "./open.ts";
