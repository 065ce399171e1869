/**
 * The WGSL kernel library: kernel specs (name -> source file, entry point, bindings, constants) and
 * their dispatch builders. Every kernel has a CPU reference in `reference.ts` and a tolerance test.
 *
 * @example
 * ```ts
 * import { KERNELS } from "./mod.ts";
 * console.log(Object.keys(KERNELS).includes("add")); // true
 * ```
 * @module
 */
import type { KernelSpec } from "./registry.ts";
import { ADD } from "./elementwise.ts";

export * from "./registry.ts";
export * from "./elementwise.ts";

/** Every kernel spec, by name. */
export const KERNELS: Readonly<Record<string, KernelSpec>> = Object.freeze(
  Object.fromEntries([ADD].map((k) => [k.name, k])),
);
