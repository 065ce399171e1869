/**
 * The WGSL kernel library: kernel specs (name -> source file, entry point, bindings, constants) and
 * their dispatch builders, one module per kernel family, plus the registry's building blocks
 * (`registry.ts`) and the argument checks every builder shares (`args.ts`). Every kernel has a CPU
 * reference in `reference.ts` and a tolerance test.
 *
 * {@linkcode KERNELS} holds every kernel spec the families export, by name. This is the package's
 * `./kernels` export; it re-exports the GPU types its builders take and return (`Gpu`, `Dispatch`,
 * `Binding`, ...) and `openGpu`, so a kernel user needs no other import.
 *
 * @example
 * ```ts
 * import { KERNELS } from "./mod.ts";
 * console.log(Object.keys(KERNELS).includes("add")); // true
 * console.log(KERNELS.matmul.bindings); // ["params", "x", "w", "y"]
 * ```
 * @module
 */
import { InternalError } from "../runtime/base/errors.ts";
import type { KernelSpec } from "./registry.ts";
import * as activation from "./activation.ts";
import * as argmax from "./argmax.ts";
import * as attention from "./attention.ts";
import * as elementwise from "./elementwise.ts";
import * as embedding from "./embedding.ts";
import * as linear from "./linear.ts";
import * as moe from "./moe.ts";
import * as norm from "./norm.ts";
import * as qkv from "./qkv.ts";
import * as rope from "./rope.ts";
import * as router from "./router.ts";
import * as sample from "./sample.ts";
import * as softmax from "./softmax.ts";
import * as step from "./step.ts";

export {
  type Binding,
  type Copy,
  type Dispatch,
  Gpu,
  openGpu,
  type PipelineSource,
  type Step,
} from "../runtime/base/gpu/device.ts";
export * from "./registry.ts";
export * from "./args.ts";
export * from "./activation.ts";
export * from "./argmax.ts";
export * from "./attention.ts";
export * from "./elementwise.ts";
export * from "./embedding.ts";
export * from "./linear.ts";
export * from "./moe.ts";
export * from "./norm.ts";
export * from "./qkv.ts";
export * from "./relative_bias.ts";
export * from "./quant_gemv.ts";
export * from "./rope.ts";
export * from "./router.ts";
export * from "./sample.ts";
export * from "./softmax.ts";
export * from "./step.ts";

/** Every kernel family module, by family name (the `<family>.ts` file it comes from). */
const FAMILIES: Readonly<Record<string, Readonly<Record<string, unknown>>>> = {
  activation,
  argmax,
  attention,
  elementwise,
  embedding,
  linear,
  moe,
  norm,
  qkv,
  rope,
  router,
  sample,
  softmax,
  step,
};

function isKernelSpec(v: unknown): v is KernelSpec {
  if (!v || typeof v !== "object") return false;
  const k = v as Partial<KernelSpec>;
  return typeof k.name === "string" && typeof k.file === "string" &&
    typeof k.entry === "string" && Array.isArray(k.bindings) && typeof k.source === "function";
}

function collectKernels(): Record<string, KernelSpec> {
  const out: Record<string, KernelSpec> = {};
  const from: Record<string, string> = {};
  for (const [family, exports] of Object.entries(FAMILIES)) {
    for (const [exported, value] of Object.entries(exports)) {
      if (!isKernelSpec(value)) continue;
      const where = `${family}.ts (${exported})`;
      if (Object.hasOwn(out, value.name)) {
        if (out[value.name] === value) continue;
        throw new InternalError(
          `kernel name '${value.name}' is declared twice: ${from[value.name]} and ${where}`,
        );
      }
      out[value.name] = value;
      from[value.name] = where;
    }
  }
  return out;
}

/**
 * Every kernel spec exported by a kernel family module, by its `name` (names are unique: a second
 * spec with a taken name fails this module's import).
 */
export const KERNELS: Readonly<Record<string, KernelSpec>> = Object.freeze(collectKernels());
