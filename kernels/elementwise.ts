/**
 * Elementwise kernels (`elementwise.wgsl`) over f32 vectors: residual add ({@linkcode add},
 * {@linkcode addInPlace}), scaling in place ({@linkcode scale}) and a per-column bias added to every
 * row in place ({@linkcode addBias}).
 *
 * Also home of the argument checks shared by the pointwise kernel families (norm, rope, softmax,
 * activation, embedding): {@linkcode argCount}, {@linkcode argNumber}, {@linkcode argBinding}.
 *
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/gpu/device.ts";
 * import { add, addInPlace, scale } from "./elementwise.ts";
 * const gpu = await openGpu();
 * const a = gpu.storage("activations", new Float32Array([1, 2]));
 * const b = gpu.storage("activations", new Float32Array([3, 4]));
 * const out = gpu.storage("activations", 8);
 * gpu.submit([
 *   await add(gpu, { a, b, out, n: 2 }), // out = [4, 6]
 *   await addInPlace(gpu, { x: a, y: b, n: 2 }), // a = [4, 6]
 *   await scale(gpu, { x: a, n: 2, s: 0.5 }), // a = [2, 3]
 * ]);
 * console.log(await gpu.readF32(out), await gpu.readF32(a)); // [4, 6] [2, 3]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/gpu/device.ts";
import { ArgumentError } from "../runtime/errors.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";

const WG = 256;

/** `out = a + b` over `n` f32 values. */
export const ADD: KernelSpec = defineKernel({
  name: "add",
  file: "elementwise.wgsl",
  entry: "add",
  bindings: ["params", "a", "b", "out"],
  constants: { WG },
});

/** `x += y` over `n` f32 values. */
export const ADD_INPLACE: KernelSpec = defineKernel({
  name: "add_inplace",
  file: "elementwise.wgsl",
  entry: "add_inplace",
  bindings: ["params", "x", "y"],
  constants: { WG },
});

/** `x *= s` over `n` f32 values. */
export const SCALE: KernelSpec = defineKernel({
  name: "scale",
  file: "elementwise.wgsl",
  entry: "scale",
  bindings: ["params", "x"],
  constants: { WG },
});

/** `x[r, c] += bias[c]` over `rows` rows of `n` f32 values. */
export const ADD_BIAS: KernelSpec = defineKernel({
  name: "add_bias",
  file: "elementwise.wgsl",
  entry: "add_bias",
  bindings: ["params", "x", "bias"],
  constants: { WG },
});

/** Builds the dispatch of `out[i] = a[i] + b[i]` for `i < n`. `out` must not alias `a` or `b`. */
export async function add(
  gpu: Gpu,
  args: { a: Binding; b: Binding; out: Binding; n: number },
): Promise<Dispatch> {
  const pipeline = await gpu.pipeline(ADD, { WG });
  const params = gpu.uniform(new ParamWriter().u32(args.n).bytes(), "add.params");
  return gpu.dispatch(
    pipeline,
    [params, args.a, args.b, args.out],
    gpu.grid(Math.ceil(args.n / WG)),
  );
}

/**
 * Builds the dispatch of `x[i] += y[i]` for `i < n` (f32). `y` must not overlap `x`.
 *
 * @example
 * ```ts ignore
 * gpu.submit([await addInPlace(gpu, { x: residual, y: attnOut, n: T * hidden })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (count, binding too small, overlap).
 */
export async function addInPlace(
  gpu: Gpu,
  args: { x: Binding; y: Binding; n: number },
): Promise<Dispatch> {
  argObject(args);
  const n = argCount("n", args.n);
  const x = argBinding(gpu, "x", args.x, n * 4);
  const y = argBinding(gpu, "y", args.y, n * 4);
  argDisjoint("y", y, "x", x);
  const pipeline = await gpu.pipeline(ADD_INPLACE, { WG });
  const params = gpu.uniform(new ParamWriter().u32(n).f32(0).bytes(), "add_inplace.params");
  return gpu.dispatch(pipeline, [params, x, y], gpu.grid(Math.ceil(n / WG)));
}

/**
 * Builds the dispatch of `x[i] *= s` for `i < n` (f32; `s` is rounded to f32).
 *
 * @example
 * ```ts ignore
 * gpu.submit([await scale(gpu, { x: hidden, n: T * dim, s: Math.sqrt(dim) })]);
 * ```
 * @throws {ArgumentError} naming the bad argument.
 */
export async function scale(
  gpu: Gpu,
  args: { x: Binding; n: number; s: number },
): Promise<Dispatch> {
  argObject(args);
  const n = argCount("n", args.n);
  const s = argNumber("s", args.s);
  const x = argBinding(gpu, "x", args.x, n * 4);
  const pipeline = await gpu.pipeline(SCALE, { WG });
  const params = gpu.uniform(new ParamWriter().u32(n).f32(s).bytes(), "scale.params");
  return gpu.dispatch(pipeline, [params, x], gpu.grid(Math.ceil(n / WG)));
}

/** Arguments of {@linkcode addBias}. */
export interface AddBiasArgs {
  /** f32 `[rows, n]` row-major, updated in place. */
  x: Binding;
  /** f32 `[n]` (biases are converted to f32 on the host at load); must not overlap `x`. */
  bias: Binding;
  /** Rows, >= 1. */
  rows: number;
  /** Values per row (the bias length), >= 1. */
  n: number;
}

/**
 * Builds the dispatch of `x[r, c] += bias[c]` for `r < rows`, `c < n` (f32), in place: the q/k/v
 * projection biases of Qwen2-MoE (HF `nn.Linear(bias=True)`), added after the bias-free matmul.
 *
 * @example
 * ```ts ignore
 * gpu.submit([await addBias(gpu, { x: q, bias: qBias, rows: T, n: heads * headDim })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, bindings too small, overlap).
 */
export async function addBias(gpu: Gpu, args: AddBiasArgs): Promise<Dispatch> {
  argObject(args);
  const rows = argCount("rows", args.rows);
  const n = argCount("n", args.n);
  const total = rows * n; // the binding check below bounds it by the binding size limit
  const x = argBinding(gpu, "x", args.x, total * 4);
  const bias = argBinding(gpu, "bias", args.bias, n * 4);
  argDisjoint("bias", bias, "x", x);
  const pipeline = await gpu.pipeline(ADD_BIAS, { WG });
  const params = gpu.uniform(new ParamWriter().u32(total).f32(0).u32(n).bytes(), "add_bias.params");
  return gpu.dispatch(pipeline, [params, x, bias], gpu.grid(Math.ceil(total / WG)));
}

// ------------------------------------------------------------------------------ argument checks

const U32_MAX = 0xffffffff;

/** A validated storage binding: a buffer and a byte range of it. */
export interface BindingRange {
  /** The buffer. */
  buffer: GPUBuffer;
  /** First byte. */
  offset: number;
  /** Bytes bound. */
  size: number;
}

/** Throws unless `args` is an object (so a missing argument object gets a clear error). */
export function argObject(args: unknown): void {
  if (!args || typeof args !== "object") {
    throw new ArgumentError("args", `expected an object of named arguments, got ${args}`);
  }
}

/** Checks an integer argument in `[min, max]` (default `[1, 2^32 - 1]`) and returns it. */
export function argCount(argument: string, value: unknown, min = 1, max = U32_MAX): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ArgumentError(
      argument,
      `expected an integer in [${min}, ${max}], got ${
        typeof value === "number" ? value : typeof value
      }`,
    );
  }
  return value;
}

/** Checks a finite number argument (optionally `> 0` or `>= min`) and returns it. */
export function argNumber(
  argument: string,
  value: unknown,
  opts: { min?: number; positive?: boolean } = {},
): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new ArgumentError(argument, `expected a finite number, got ${value}`);
  }
  if (opts.positive && !(value > 0)) {
    throw new ArgumentError(argument, `expected a number > 0, got ${value}`);
  }
  if (opts.min !== undefined && value < opts.min) {
    throw new ArgumentError(argument, `expected a number >= ${opts.min}, got ${value}`);
  }
  return value;
}

/**
 * Checks a storage binding (a `GPUBuffer` or `{buffer, offset?, size?}`) holds at least `need` bytes,
 * has an offset aligned to `minStorageBufferOffsetAlignment` and fits the device's binding limit.
 */
export function argBinding(gpu: Gpu, argument: string, b: unknown, need: number): BindingRange {
  const shape = "expected a GPUBuffer or {buffer, offset?, size?}";
  if (!b || typeof b !== "object") throw new ArgumentError(argument, `${shape}, got ${b}`);
  const isRange = "buffer" in b;
  const buffer = (isRange ? (b as { buffer: GPUBuffer }).buffer : b) as GPUBuffer;
  if (!buffer || typeof buffer !== "object" || typeof buffer.size !== "number") {
    throw new ArgumentError(argument, shape);
  }
  const r = b as { offset?: number; size?: number };
  const offset = isRange ? r.offset ?? 0 : 0;
  const size = isRange ? r.size ?? buffer.size - offset : buffer.size;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  if (!Number.isInteger(offset) || offset < 0 || offset % align !== 0) {
    throw new ArgumentError(
      argument,
      `binding offset ${offset} is not a multiple of ${align} (minStorageBufferOffsetAlignment)`,
    );
  }
  if (!Number.isInteger(size) || size < 0 || size % 4 !== 0 || offset + size > buffer.size) {
    throw new ArgumentError(
      argument,
      `binding range [${offset}, ${offset + size}) is not a multiple of 4 bytes inside the ` +
        `buffer's ${buffer.size} bytes`,
    );
  }
  if (size < need) {
    throw new ArgumentError(argument, `needs at least ${need} bytes, the binding has ${size}`);
  }
  const max = gpu.limits.maxStorageBufferBindingSize;
  if (size > max) {
    throw new ArgumentError(
      argument,
      `binding of ${size} bytes exceeds this device's maxStorageBufferBindingSize of ${max}`,
      "bind a range ({buffer, offset, size}) or split the tensor",
    );
  }
  return { buffer, offset, size };
}

/** Whether two bindings share bytes. */
export function rangesOverlap(a: BindingRange, b: BindingRange): boolean {
  return a.buffer === b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size;
}

/** Throws unless `a` and `b` share no bytes. */
export function argDisjoint(
  argument: string,
  a: BindingRange,
  other: string,
  b: BindingRange,
): void {
  if (rangesOverlap(a, b)) {
    throw new ArgumentError(
      argument,
      `overlaps ${other} (bytes [${a.offset}, ${a.offset + a.size}) and [${b.offset}, ${
        b.offset + b.size
      }) of the same buffer)`,
      "use a separate buffer",
    );
  }
}

/**
 * For kernels that may run in place: `"inplace"` when `out` starts where `x` starts in the same
 * buffer, `"separate"` when they share no bytes; throws on a partial overlap.
 */
export function argInPlace(
  out: BindingRange,
  x: BindingRange,
  outName = "out",
  xName = "x",
): "inplace" | "separate" {
  if (out.buffer === x.buffer && out.offset === x.offset) return "inplace";
  argDisjoint(outName, out, xName, x);
  return "separate";
}
