/**
 * The argument checks every kernel dispatch builder uses. Each check returns the validated value and
 * throws an {@linkcode ArgumentError} whose `argument` is the builder's argument name and whose
 * message says what was expected and what was found (and, where there is one, a hint).
 *
 * - Scalars: {@linkcode argObject}, {@linkcode argCount}, {@linkcode argNumber},
 *   {@linkcode argBoolean}, {@linkcode argOneOf}, {@linkcode argDType}, {@linkcode argEvenRow}.
 * - Storage bindings: {@linkcode argBinding} (shape, alignment, size and device limits) and the
 *   aliasing rules of one dispatch: {@linkcode argDistinct} (a written binding may not share its
 *   buffer with a binding the kernel reads, as WebGPU requires), {@linkcode argDisjoint} (two written
 *   bindings: byte ranges) and {@linkcode argInPlace} (kernels with an in-place variant);
 *   {@linkcode vec4View} for a binding a kernel reads as a `vec4` array.
 *
 * @example
 * ```ts ignore
 * import { argBinding, argCount, argDistinct, argObject } from "./args.ts";
 * async function myKernel(gpu: Gpu, args: { x: Binding; out: Binding; n: number }) {
 *   argObject(args);
 *   const n = argCount("n", args.n);
 *   const x = argBinding(gpu, "x", args.x, n * 4, `f32 [n=${n}]`);
 *   const out = argBinding(gpu, "out", args.out, n * 4, `f32 [n=${n}]`);
 *   argDistinct("out", out, { x });
 *   // ... gpu.pipeline, ParamWriter, gpu.dispatch(pipeline, [params, x, out], ...)
 * }
 * ```
 * @module
 */
import type { Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { type DType, DTYPES } from "../runtime/base/dtype.ts";
import { QUANT_BLOCK } from "../runtime/weights/quant.ts";
import { isQuantType, WEIGHT_TYPES, type WeightType } from "../runtime/weights/weight_type.ts";

/** The largest u32, the default upper bound of {@linkcode argCount}. */
export const U32_MAX = 0xffffffff;

/** A validated storage binding: a buffer and a byte range of it (itself a valid `Binding`). */
export interface BindingRange {
  /** The buffer. */
  buffer: GPUBuffer;
  /** First byte. */
  offset: number;
  /** Bytes bound. */
  size: number;
}

/** How a bad value is shown in a message: numbers as they print, other values with their type. */
function found(value: unknown): string {
  if (typeof value === "number" || value === undefined || value === null) return String(value);
  if (typeof value === "string") return `'${value}' (a string)`;
  if (typeof value === "boolean") return `${value} (a boolean)`;
  return `a value of type ${typeof value}`;
}

/** Throws unless `args` is an object (so a missing argument object gets a clear error). */
export function argObject(args: unknown): void {
  if (!args || typeof args !== "object") {
    throw new ArgumentError("args", `expected an object of named arguments, got ${found(args)}`);
  }
}

/**
 * Checks an integer argument in `[min, max]` (default `[1, 2^32 - 1]`: a count that fits a u32
 * kernel parameter) and returns it.
 *
 * @throws {ArgumentError} `expected an integer in [min, max], got ...`.
 */
export function argCount(argument: string, value: unknown, min = 1, max = U32_MAX): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ArgumentError(
      argument,
      `expected an integer in [${min}, ${max}], got ${found(value)}`,
    );
  }
  return value;
}

/** The most threads a workgroup may have along x on this device. */
function threadLimit(gpu: Gpu): number {
  return Math.min(
    gpu.limits.maxComputeInvocationsPerWorkgroup,
    gpu.limits.maxComputeWorkgroupSizeX,
  );
}

/**
 * Checks a `threads` option (threads per workgroup): a power of two from 32 to the device's limit.
 *
 * @throws {ArgumentError} `expected a power of two from 32 to N (this device's limit), got ...`.
 */
export function argThreads(gpu: Gpu, value: unknown): number {
  const lim = threadLimit(gpu);
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 32 || value > lim ||
    (value & (value - 1))
  ) {
    throw new ArgumentError(
      "threads",
      `expected a power of two from 32 to ${lim} (this device's limit), got ${found(value)}`,
    );
  }
  return value;
}

/**
 * The widest workgroup a one-row reduction kernel uses by default: the largest power of two up to
 * 1024 that the device allows on a GPU (such rows are latency-bound: more threads, more loads in
 * flight), 256 on a software adapter (whose threads are emulated).
 */
export function wideThreads(gpu: Gpu): number {
  return gpu.isFallback ? 256 : 2 ** Math.floor(Math.log2(Math.min(1024, threadLimit(gpu))));
}

/**
 * Checks a finite number argument (optionally `> 0` with `positive`, `>= min` with `min`) and
 * returns it.
 */
export function argNumber(
  argument: string,
  value: unknown,
  opts: { min?: number; positive?: boolean } = {},
): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new ArgumentError(argument, `expected a finite number, got ${found(value)}`);
  }
  if (opts.positive && !(value > 0)) {
    throw new ArgumentError(argument, `expected a number > 0, got ${value}`);
  }
  if (opts.min !== undefined && value < opts.min) {
    throw new ArgumentError(argument, `expected a number >= ${opts.min}, got ${value}`);
  }
  return value;
}

/** Checks a boolean argument (`true` or `false`, nothing truthy) and returns it. */
export function argBoolean(argument: string, value: unknown): boolean {
  if (typeof value !== "boolean") {
    throw new ArgumentError(argument, `expected true or false, got ${found(value)}`);
  }
  return value;
}

/**
 * Checks that `value` is one of `allowed` and returns it. `what` names the kind of value in the
 * message (`unsupported <what> '<value>'`); the hint lists the allowed values.
 */
export function argOneOf<T extends string>(
  argument: string,
  value: unknown,
  allowed: readonly T[],
  what: string = argument,
): T {
  if (typeof value !== "string" || !allowed.includes(value as T)) {
    throw new ArgumentError(
      argument,
      `unsupported ${what} '${String(value)}'`,
      `use one of ${allowed.join(", ")}`,
    );
  }
  return value as T;
}

/** Checks a weight dtype (`f32`, `f16` or `bf16`) and returns it. */
export function argDType(argument: string, value: unknown): DType {
  return argOneOf(argument, value, DTYPES, "dtype");
}

/**
 * Checks that a row of `value` weights of `dtype` starts and ends on a u32 word: any length for
 * `f32`, an even one for the 16-bit dtypes (packed two per word). `what` names the rows' owner in the
 * message (`bf16 <what> need an even row length, got K=5`).
 */
export function argEvenRow(argument: string, value: number, dtype: DType, what: string): number {
  if (dtype !== "f32" && value % 2 !== 0) {
    throw new ArgumentError(
      argument,
      `${dtype} ${what} need an even row length, got ${argument}=${value}`,
      "16-bit weights are packed two per u32 word; every row must start on a word",
    );
  }
  return value;
}

/** Checks a weight type argument (`dtype`) and returns it. */
export function argWeightType(argument: string, value: unknown): WeightType {
  return argOneOf(argument, value, WEIGHT_TYPES, "weight type");
}

/**
 * Checks that rows of `K` weights of `t` are whole words (16-bit dtypes: even) or whole blocks
 * (Q8_0: a multiple of 32, Q4_K: of 256). `what` names the rows' owner in the message.
 */
export function argWeightRow(argument: string, K: number, t: WeightType, what: string): number {
  if (!isQuantType(t)) return argEvenRow(argument, K, t, what);
  const values = QUANT_BLOCK[t].values;
  if (K % values !== 0) {
    throw new ArgumentError(
      argument,
      `${t} ${what} need rows of whole ${values}-value blocks, got ${argument}=${K}`,
      `${t} stores blocks of ${values} values; pad the rows or use another type`,
    );
  }
  return K;
}

/**
 * Checks a storage binding (a `GPUBuffer` or `{buffer, offset?, size?}`): an offset aligned to
 * `minStorageBufferOffsetAlignment`, a whole number of 4-byte words inside the buffer, at least
 * `need` bytes and at most the device's `maxStorageBufferBindingSize`. `what` (optional) describes
 * what the binding must hold, e.g. `f32 [T=4, E=64]`, for the messages. Returns the resolved range.
 */
export function argBinding(
  gpu: Gpu,
  argument: string,
  b: unknown,
  need: number,
  what?: string,
): BindingRange {
  const holding = what ? ` (${what})` : "";
  const shape = `expected a GPUBuffer or {buffer, offset?, size?} of at least ${need} bytes` +
    holding;
  if (!b || typeof b !== "object") throw new ArgumentError(argument, `${shape}, got ${found(b)}`);
  const isRange = "buffer" in b;
  const buffer = (isRange ? (b as { buffer: GPUBuffer }).buffer : b) as GPUBuffer;
  if (!buffer || typeof buffer !== "object" || typeof buffer.size !== "number") {
    throw new ArgumentError(argument, `${shape}, got an object that is neither`);
  }
  const r = b as { offset?: number; size?: number };
  const offset = isRange ? r.offset ?? 0 : 0;
  // Whole buffers count with the size they were asked for (allocations are rounded up to 16 bytes).
  const length = gpu.byteLength(buffer);
  const size = isRange ? r.size ?? length - offset : length;
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
      `binding range [${offset}, ${offset + size}) is not a whole number of 4-byte words inside ` +
        `the buffer's ${buffer.size} bytes`,
    );
  }
  if (size < need) {
    throw new ArgumentError(
      argument,
      `expected at least ${need} bytes${holding}, got a binding of ${size} bytes`,
    );
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

function bytes(r: BindingRange): string {
  return `[${r.offset}, ${r.offset + r.size})`;
}

/**
 * Throws if `a` and `b` share bytes. Enough for two bindings that a kernel both writes (WebGPU
 * allows writable bindings of one buffer on disjoint ranges); a binding that is only read must not
 * share a written binding's buffer at all: use {@linkcode argDistinct} for those.
 */
export function argDisjoint(
  argument: string,
  a: BindingRange,
  other: string,
  b: BindingRange,
): void {
  if (rangesOverlap(a, b)) {
    throw new ArgumentError(
      argument,
      `overlaps ${other} (bytes ${bytes(a)} and ${bytes(b)} of the same buffer)`,
      "use a separate buffer",
    );
  }
}

/**
 * Throws if the binding `argument` (`b`) lies in the same `GPUBuffer` as any binding of `others`
 * (name -> binding; `undefined` entries are skipped). Call it for every pair of a binding the kernel
 * writes and another binding of the same dispatch, naming the one the caller should change (usually
 * the written one). WebGPU rejects a dispatch that binds one buffer both writable and read-only,
 * even on disjoint ranges, so this is checked per buffer, not per byte range (two writable bindings
 * may share a buffer on disjoint ranges: {@linkcode argDisjoint} is enough for those).
 */
export function argDistinct(
  argument: string,
  b: BindingRange,
  others: Readonly<Record<string, BindingRange | undefined>>,
): void {
  for (const [other, o] of Object.entries(others)) {
    if (o && o.buffer === b.buffer) {
      const how = rangesOverlap(b, o) ? "overlapping" : "disjoint";
      throw new ArgumentError(
        argument,
        `expected a buffer distinct from ${other}, got the same GPU buffer (${how} bytes ` +
          `${bytes(b)} and ${bytes(o)})`,
        "use a separate buffer (WebGPU rejects a dispatch that binds a buffer it writes a second " +
          "time, even as a disjoint range)",
      );
    }
  }
}

/**
 * For kernels with an in-place variant: `"inplace"` when `out` starts where `x` starts in the same
 * buffer, `"separate"` when they are in different buffers; throws (on `outName`, as
 * {@linkcode argDistinct}) when they share a buffer at different offsets.
 */
export function argInPlace(
  out: BindingRange,
  x: BindingRange,
  outName = "out",
  xName = "x",
): "inplace" | "separate" {
  if (out.buffer === x.buffer && out.offset === x.offset) return "inplace";
  argDistinct(outName, out, { [xName]: x });
  return "separate";
}

const placeholders = new WeakMap<Gpu, GPUBuffer>();

/**
 * A 16-byte buffer (one per device) that stands in for a binding a kernel declares but does not read
 * in the variant being dispatched (WGSL's static use requires every declared binding to be bound).
 */
export function placeholder(gpu: Gpu): GPUBuffer {
  let b = placeholders.get(gpu);
  if (!b) {
    b = gpu.storage("other", 16, "placeholder");
    placeholders.set(gpu, b);
  }
  return b;
}

/**
 * A storage binding as seen through a `vec4` array (`array<vec4<f32>>`, `array<vec4<u32>>`): its
 * size rounded up to whole 16-byte vectors when the buffer has room (Pregate's buffers are 16-byte
 * multiples), else down, if that still covers `need` bytes.
 *
 * @throws {ArgumentError} on `argument` when neither covers `need`.
 */
export function vec4View(argument: string, r: BindingRange, need: number): BindingRange {
  const up = Math.ceil(r.size / 16) * 16;
  if (r.offset + up <= r.buffer.size) return { ...r, size: up };
  const down = r.size - (r.size % 16);
  if (down < need) {
    throw new ArgumentError(
      argument,
      `is read as vec4 and needs a binding of whole 16-byte vectors covering ${need} bytes; ` +
        `the buffer ends ${r.buffer.size - r.offset} bytes after the offset`,
      "allocate buffers in multiples of 16 bytes (gpu.storage does)",
    );
  }
  return { ...r, size: down };
}
