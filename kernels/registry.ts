/**
 * The kernel registry's building blocks: a {@linkcode KernelSpec} names a `.wgsl` file in this folder
 * (plus shared WGSL it includes), its entry point, its bindings in order and its override constants.
 *
 * WGSL is loaded relative to `import.meta.url` with `fetch`, so the same code works when Pregate is
 * imported from disk (`file:`) or from a web server (`https:`): nothing reads the file system directly.
 *
 * Binding convention: binding 0 is the kernel's uniform parameter block (`Params` in WGSL, built with
 * {@linkcode ParamWriter}), bindings 1.. are storage buffers in the order listed in `bindings`.
 *
 * @example
 * ```ts
 * import { defineKernel, ParamWriter } from "./registry.ts";
 * const add = defineKernel({ name: "add", file: "elementwise.wgsl", entry: "add",
 *   bindings: ["params", "a", "b", "out"] });
 * const params = new ParamWriter().u32(1024).bytes();
 * console.log(add.name, params.byteLength); // add 16
 * ```
 * @module
 */
import type { PipelineSource } from "../runtime/base/gpu/device.ts";
import { ArgumentError, GpuError } from "../runtime/base/errors.ts";

/** A WGSL kernel: where its source is and how it is bound. */
export interface KernelSpec extends PipelineSource {
  /** The `.wgsl` file in `kernels/` holding the entry point. */
  readonly file: string;
  /** Shared `.wgsl` files prepended to `file` (WGSL has no `#include`). */
  readonly includes: readonly string[];
  /** Binding names, in binding order (0 = params). Documentation and validation only. */
  readonly bindings: readonly string[];
  /** Default values of the kernel's override constants. */
  readonly constants: Readonly<Record<string, number>>;
}

const sourceCache = new Map<string, Promise<string>>();

/** Fetches one `.wgsl` file of this folder (cached), from disk or from the server Pregate came from. */
export function wgslFile(file: string): Promise<string> {
  let p = sourceCache.get(file);
  if (!p) {
    const url = new URL(file, import.meta.url);
    p = (async () => {
      let res: Response;
      try {
        res = await fetch(url);
      } catch (e) {
        throw new GpuError(
          `could not load kernel source ${url.href}: ${(e as Error).message}`,
          url.protocol === "file:"
            ? "run with --allow-read (Pregate reads its WGSL kernels next to its modules)"
            : `run with --allow-net=${url.host} (Pregate fetches its WGSL kernels next to its modules)`,
          { cause: e },
        );
      }
      if (!res.ok) {
        throw new GpuError(`could not load kernel source ${url.href}: HTTP ${res.status}`);
      }
      return await res.text();
    })();
    p.catch(() => sourceCache.delete(file));
    sourceCache.set(file, p);
  }
  return p;
}

/** Declares a kernel. `entry` defaults to `main`, `includes` to none. */
export function defineKernel(def: {
  name: string;
  file: string;
  entry?: string;
  includes?: readonly string[];
  bindings: readonly string[];
  constants?: Record<string, number>;
}): KernelSpec {
  const includes = def.includes ?? [];
  return Object.freeze({
    name: def.name,
    file: def.file,
    entry: def.entry ?? "main",
    includes,
    bindings: Object.freeze([...def.bindings]),
    constants: Object.freeze({ ...(def.constants ?? {}) }),
    async source() {
      const parts = await Promise.all([...includes, def.file].map(wgslFile));
      return parts.join("\n");
    },
  });
}

/**
 * Packs a kernel's uniform `Params` struct: 4-byte fields in declaration order, padded to 16 bytes.
 * Use only scalar `u32`, `i32` and `f32` fields in WGSL `Params` structs so the layout is this one.
 */
export class ParamWriter {
  #words: number[] = [];
  #kinds: ("u" | "i" | "f")[] = [];
  /**
   * Appends u32 fields.
   * @throws {ArgumentError} naming `params` when a value is not an integer in [0, 2^32).
   */
  u32(...v: number[]): this {
    for (const x of v) {
      if (!Number.isInteger(x) || x < 0 || x > 0xffffffff) {
        throw new ArgumentError("params", `kernel parameter ${x} is not a u32`);
      }
      this.#words.push(x);
      this.#kinds.push("u");
    }
    return this;
  }
  /** Appends i32 fields. */
  i32(...v: number[]): this {
    for (const x of v) {
      this.#words.push(x);
      this.#kinds.push("i");
    }
    return this;
  }
  /** Appends f32 fields. */
  f32(...v: number[]): this {
    for (const x of v) {
      this.#words.push(x);
      this.#kinds.push("f");
    }
    return this;
  }
  /** The packed bytes (a multiple of 16). */
  bytes(): Uint8Array {
    const n = Math.max(4, Math.ceil(this.#words.length / 4) * 4);
    const buf = new ArrayBuffer(n * 4);
    const dv = new DataView(buf);
    this.#words.forEach((w, i) => {
      const k = this.#kinds[i];
      if (k === "f") dv.setFloat32(i * 4, w, true);
      else if (k === "i") dv.setInt32(i * 4, w, true);
      else dv.setUint32(i * 4, w, true);
    });
    return new Uint8Array(buf);
  }
}
