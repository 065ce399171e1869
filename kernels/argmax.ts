/**
 * Row-wise argmax kernel (`argmax.wgsl`): greedy sampling over vocabulary logits ({@linkcode argmax}).
 *
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { argmax } from "./argmax.ts";
 * const gpu = await openGpu();
 * const x = gpu.storage("activations", new Float32Array([0.5, 2, 2, -1, 7, 1]));
 * const out = gpu.storage("activations", 8);
 * gpu.submit([await argmax(gpu, { x, out, rows: 2, cols: 3 })]);
 * console.log(await gpu.readU32(out)); // Uint32Array [1, 1]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/gpu/device.ts";
import { ArgumentError } from "../runtime/errors.ts";
import { defineKernel, ParamWriter } from "./registry.ts";

const WG = 256;

/** Row-wise argmax, one workgroup per row. */
export const ARGMAX = defineKernel({
  name: "argmax",
  file: "argmax.wgsl",
  entry: "main",
  bindings: ["params", "x", "out"],
  constants: { WG },
});

function checkInt(name: string, value: unknown, min: number, max = 0xffffffff): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    const range = max === 0xffffffff ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new ArgumentError(name, `expected an integer ${range}, got ${String(value)}`);
  }
  return value;
}

function checkBinding(name: string, b: unknown, bytes: number, shape: string): Binding {
  if (!b || typeof b !== "object") {
    throw new ArgumentError(name, `expected a GPU buffer of ${bytes} bytes (${shape}), got ${b}`);
  }
  const bb = b as Binding;
  const have = "buffer" in bb ? bb.size ?? bb.buffer.size - (bb.offset ?? 0) : bb.size;
  if (!(have >= bytes)) {
    throw new ArgumentError(
      name,
      `expected at least ${bytes} bytes (${shape}), got a binding of ${have} bytes`,
    );
  }
  return bb;
}

/** Arguments of {@linkcode argmax}. */
export interface ArgmaxArgs {
  /** Values, f32 `[rows, cols]`. */
  x: Binding;
  /** Indices, u32 `[rows]` (written). */
  out: Binding;
  /** Rows. */
  rows: number;
  /** Columns (e.g. the vocabulary size), at most 2^32 - 2. */
  cols: number;
}

/**
 * Builds the dispatch of `out[r] = argmax_c x[r, c]` (u32): the lowest index among equal maxima, and
 * the first NaN if the row has one (as `torch.argmax`).
 *
 * @example
 * ```ts ignore
 * gpu.submit([await argmax(gpu, { x: logits, out: tokens, rows: 1, cols: 151_936 })]);
 * ```
 * @throws {ArgumentError} naming the first bad argument.
 */
export async function argmax(gpu: Gpu, args: ArgmaxArgs): Promise<Dispatch> {
  const rows = checkInt("rows", args.rows, 1);
  const cols = checkInt("cols", args.cols, 1, 0xfffffffe);
  const x = checkBinding("x", args.x, rows * cols * 4, `f32 [rows=${rows}, cols=${cols}]`);
  const out = checkBinding("out", args.out, rows * 4, `u32 [rows=${rows}]`);
  if (("buffer" in x ? x.buffer : x) === ("buffer" in out ? out.buffer : out)) {
    throw new ArgumentError("out", "expected a buffer distinct from x, got the same one");
  }
  const pipeline = await gpu.pipeline(ARGMAX, { WG });
  const params = gpu.uniform(new ParamWriter().u32(rows, cols).bytes(), "argmax.params");
  return gpu.dispatch(pipeline, [params, x, out], gpu.grid(rows));
}
