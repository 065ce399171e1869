/**
 * Writing GGUF files (version 3, little-endian) as llama.cpp writes and reads them, streaming: the
 * header (metadata and tensor infos) is encoded first, then each tensor's data is written straight
 * to the file, padded to the alignment, so a multi-GB model never has to be in memory at once.
 * Tensor offsets are contiguous up to padding (llama.cpp's loader requires it). The file is written
 * to `<path>.partial`, flushed to disk and renamed into place when complete.
 *
 * Metadata values carry their GGUF type: build them with {@linkcode ggufValue}.
 *
 * @example
 * ```ts
 * import { ggufValue as v, writeGguf } from "./gguf_writer.ts";
 * import { quantize } from "./quant.ts";
 * const w = Float32Array.from({ length: 8 * 256 }, (_, i) => Math.sin(i));
 * await writeGguf("/tmp/tiny.gguf", {
 *   "general.architecture": v.string("llama"),
 *   "llama.block_count": v.u32(1),
 *   "tokenizer.ggml.tokens": v.strings(["a", "b"]),
 * }, [
 *   { name: "blk.0.ffn_down.weight", type: "Q4_K", shape: [8, 256], data: () => quantize(w, "q4_k") },
 * ]);
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { asWriteError } from "../output_files.ts";
import {
  GGUF_ALIGNMENT_KEY,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAX_DIMS,
  GGUF_VALUE_TYPES,
  type GgufArray,
  type GgufArrayItems,
  type GgufValue,
  type GgufValueType,
} from "./gguf_header.ts";
import { type GgmlType, ggmlTypeByName } from "./quant.ts";
import type { TensorDataSource } from "./safetensors_writer.ts";

/** A typed metadata value to write (see {@linkcode ggufValue}). */
export interface GgufValueToWrite {
  /** The GGUF type. */
  readonly type: GgufValueType;
  /** The value (an {@linkcode GgufArray} for `array`). */
  readonly value: GgufValue;
}

/** Metadata to write: key-value pairs in order, or an object (its key order is the file order). */
export type GgufMetadataToWrite =
  | Iterable<readonly [string, GgufValueToWrite]>
  | Readonly<Record<string, GgufValueToWrite>>;

/**
 * One tensor to write. `shape` is row-major (`[rows, columns]`, as safetensors writes it); the file
 * stores it reversed (ggml order). The data must be exactly the bytes of the type for that shape.
 */
export interface GgufTensorToWrite {
  /** The name (1 to 63 UTF-8 bytes, as llama.cpp's `GGML_MAX_NAME` requires; unique). */
  name: string;
  /** The ggml type name: `F32`, `F16`, `BF16`, `Q8_0`, `Q4_K`, ... (case-insensitive). */
  type: string;
  /** Row-major shape, 1 to 4 dimensions; the last (a row) must be a whole number of blocks. */
  shape: readonly number[];
  /** The data, eager or lazy (a function called once, when the tensor is written). */
  data: TensorDataSource;
}

/** Options of {@linkcode writeGguf}. */
export interface WriteGgufOptions {
  /** The data alignment (a power of two; default 32). Other values write `general.alignment`. */
  alignment?: number;
}

/**
 * What {@linkcode writeGguf} wrote.
 *
 * @example
 * ```ts
 * import { writeGguf } from "./gguf_writer.ts";
 * const w = await writeGguf("/tmp/empty.gguf", {}, []);
 * console.log(w.byteLength, w.dataOffset); // 24 24
 * ```
 */
export interface WrittenGguf {
  /** The file written. */
  path: string;
  /** Its size in bytes. */
  byteLength: number;
  /** The absolute offset of the data section. */
  dataOffset: number;
  /** The alignment used. */
  alignment: number;
  /** Each tensor's ggml type, absolute offset and length, in order. */
  tensors: { name: string; type: string; offset: number; byteLength: number }[];
}

type NumericItems = ArrayLike<number> | ArrayLike<bigint>;

/**
 * Builders of typed metadata values.
 *
 * @example
 * ```ts
 * import { ggufValue as v } from "./gguf_writer.ts";
 * const meta = {
 *   "general.architecture": v.string("qwen3moe"),
 *   "qwen3moe.expert_count": v.u32(128),
 *   "qwen3moe.rope.freq_base": v.f32(1e6),
 *   "tokenizer.ggml.token_type": v.array("i32", [1, 1, 3]),
 *   "nested": v.array("array", [{ itemType: "string", items: ["a"] }]),
 * };
 * console.log(Object.keys(meta).length); // 5
 * ```
 */
export const ggufValue = {
  u8: (value: number): GgufValueToWrite => ({ type: "u8", value }),
  i8: (value: number): GgufValueToWrite => ({ type: "i8", value }),
  u16: (value: number): GgufValueToWrite => ({ type: "u16", value }),
  i16: (value: number): GgufValueToWrite => ({ type: "i16", value }),
  u32: (value: number): GgufValueToWrite => ({ type: "u32", value }),
  i32: (value: number): GgufValueToWrite => ({ type: "i32", value }),
  u64: (value: number | bigint): GgufValueToWrite => ({ type: "u64", value: BigInt(value) }),
  i64: (value: number | bigint): GgufValueToWrite => ({ type: "i64", value: BigInt(value) }),
  f32: (value: number): GgufValueToWrite => ({ type: "f32", value }),
  f64: (value: number): GgufValueToWrite => ({ type: "f64", value }),
  bool: (value: boolean): GgufValueToWrite => ({ type: "bool", value }),
  string: (value: string): GgufValueToWrite => ({ type: "string", value }),
  /** An array of strings. */
  strings: (items: readonly string[]): GgufValueToWrite => ggufValue.array("string", items),
  /** An array of `itemType` items (numbers, bigints, booleans, strings or nested arrays). */
  array: (
    itemType: GgufValueType,
    items: NumericItems | readonly boolean[] | readonly string[] | readonly GgufArray[],
  ): GgufValueToWrite => ({
    type: "array",
    value: { itemType, items: items as GgufArrayItems },
  }),
} as const;

const RANGES: Partial<Record<GgufValueType, [number, number]>> = {
  u8: [0, 0xff],
  i8: [-0x80, 0x7f],
  u16: [0, 0xffff],
  i16: [-0x8000, 0x7fff],
  u32: [0, 0xffffffff],
  i32: [-0x80000000, 0x7fffffff],
};
const BIG_RANGES: Partial<Record<GgufValueType, [bigint, bigint]>> = {
  u64: [0n, 2n ** 64n - 1n],
  i64: [-(2n ** 63n), 2n ** 63n - 1n],
};
const SIZE: Partial<Record<GgufValueType, number>> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  bool: 1,
  u64: 8,
  i64: 8,
  f64: 8,
};

const enc = new TextEncoder();

/** A growable little-endian byte buffer. */
class Bytes {
  #buf = new Uint8Array(4096);
  #dv = new DataView(this.#buf.buffer);
  length = 0;

  #room(n: number): number {
    if (this.length + n > this.#buf.byteLength) {
      const next = new Uint8Array(Math.max(this.#buf.byteLength * 2, this.length + n));
      next.set(this.#buf.subarray(0, this.length));
      this.#buf = next;
      this.#dv = new DataView(next.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  raw(b: Uint8Array): void {
    const at = this.#room(b.byteLength); // (may replace the buffer)
    this.#buf.set(b, at);
  }
  u32(v: number): void {
    const at = this.#room(4);
    this.#dv.setUint32(at, v, true);
  }
  u64(v: number | bigint): void {
    const at = this.#room(8);
    this.#dv.setBigUint64(at, BigInt(v), true);
  }
  string(s: string): void {
    const b = enc.encode(s);
    this.u64(b.byteLength);
    this.raw(b);
  }
  scalar(type: GgufValueType, v: number | bigint | boolean): void {
    const at = this.#room(SIZE[type]!);
    const dv = this.#dv;
    switch (type) {
      case "u8":
        return dv.setUint8(at, v as number);
      case "i8":
        return dv.setInt8(at, v as number);
      case "u16":
        return dv.setUint16(at, v as number, true);
      case "i16":
        return dv.setInt16(at, v as number, true);
      case "u32":
        return dv.setUint32(at, v as number, true);
      case "i32":
        return dv.setInt32(at, v as number, true);
      case "f32":
        return dv.setFloat32(at, v as number, true);
      case "f64":
        return dv.setFloat64(at, v as number, true);
      case "u64":
        return dv.setBigUint64(at, v as bigint, true);
      case "i64":
        return dv.setBigInt64(at, v as bigint, true);
      case "bool":
        return dv.setUint8(at, v ? 1 : 0);
    }
  }
  bytes(): Uint8Array {
    return this.#buf.subarray(0, this.length);
  }
}

function checkScalar(where: string, type: GgufValueType, v: unknown): void {
  const bad = (expected: string): never => {
    throw new ArgumentError(where, `expected ${expected} for a ${type} value, got ${String(v)}`);
  };
  const range = RANGES[type], big = BIG_RANGES[type];
  if (range) {
    if (typeof v !== "number" || !Number.isInteger(v) || v < range[0] || v > range[1]) {
      bad(`an integer in [${range[0]}, ${range[1]}]`);
    }
  } else if (big) {
    if (typeof v !== "bigint" || v < big[0] || v > big[1]) {
      bad(`a bigint in [${big[0]}, ${big[1]}]`);
    }
  } else if (type === "f32" || type === "f64") {
    if (typeof v !== "number") bad("a number");
  } else if (type === "bool") {
    if (typeof v !== "boolean") bad("a boolean");
  } else if (type === "string") {
    if (typeof v !== "string") bad("a string");
  }
}

function encodeValue(
  out: Bytes,
  where: string,
  type: GgufValueType,
  v: unknown,
  depth: number,
): void {
  if (!GGUF_VALUE_TYPES.includes(type)) {
    throw new ArgumentError(where, `unknown GGUF value type '${type}'`, `use ${GGUF_VALUE_TYPES}`);
  }
  if (type === "array") {
    const a = v as GgufArray;
    if (!a || typeof a !== "object" || !("items" in a) || !GGUF_VALUE_TYPES.includes(a.itemType)) {
      throw new ArgumentError(where, "expected an array value {itemType, items}");
    }
    if (depth >= 8) throw new ArgumentError(where, "arrays nested deeper than 8 levels");
    out.u32(GGUF_VALUE_TYPES.indexOf(a.itemType));
    out.u64(a.items.length);
    for (let i = 0; i < a.items.length; i++) {
      let item: unknown = a.items[i];
      if (a.itemType === "u64" || a.itemType === "i64") {
        item = typeof item === "number" && Number.isSafeInteger(item) ? BigInt(item) : item;
      }
      encodeValue(out, `${where}[${i}]`, a.itemType, item, depth + 1);
    }
    return;
  }
  checkScalar(where, type, v);
  if (type === "string") out.string(v as string);
  else out.scalar(type, v as number | bigint | boolean);
}

interface Planned {
  name: string;
  type: GgmlType;
  dims: number[];
  byteLength: number;
  rel: number;
  data: TensorDataSource;
}

function planTensor(t: GgufTensorToWrite, seen: Set<string>): Omit<Planned, "rel"> {
  const name = t?.name;
  const nameBytes = typeof name === "string" ? enc.encode(name).byteLength : 0;
  if (nameBytes === 0 || nameBytes > 63) {
    throw new ArgumentError(
      "name",
      `invalid tensor name ${JSON.stringify(name)}`,
      "names are 1 to 63 UTF-8 bytes (llama.cpp's GGML_MAX_NAME)",
    );
  }
  if (seen.has(name)) throw new ArgumentError("name", `duplicate tensor name '${name}'`);
  seen.add(name);
  const type = typeof t.type === "string" ? ggmlTypeByName(t.type) : undefined;
  if (!type) throw new ArgumentError(`type of tensor '${name}'`, `unknown ggml type '${t.type}'`);
  const shape = t.shape;
  if (
    !Array.isArray(shape) || shape.length < 1 || shape.length > GGUF_MAX_DIMS ||
    !shape.every((d) => Number.isSafeInteger(d) && d >= 0)
  ) {
    throw new ArgumentError(
      `shape of tensor '${name}'`,
      `expected 1 to ${GGUF_MAX_DIMS} non-negative integers, got ${JSON.stringify(shape)}`,
    );
  }
  const row = shape[shape.length - 1];
  if (row % type.values !== 0) {
    throw new ArgumentError(
      `shape of tensor '${name}'`,
      `rows of ${row} values are not a whole number of ${type.name} blocks of ${type.values}`,
    );
  }
  const elements = shape.reduce((a, b) => a * b, 1);
  const byteLength = (elements / type.values) * type.bytes;
  if (!Number.isSafeInteger(byteLength)) {
    throw new ArgumentError(`shape of tensor '${name}'`, `${JSON.stringify(shape)} is too large`);
  }
  if (ArrayBuffer.isView(t.data)) checkLength(name, byteLength, t.data.byteLength);
  else if (typeof t.data !== "function") {
    throw new ArgumentError(`data of tensor '${name}'`, "expected a typed array or a function");
  }
  return { name, type, dims: [...shape].reverse(), byteLength, data: t.data };
}

function checkLength(name: string, expected: number, found: number): void {
  if (found !== expected) {
    throw new ArgumentError(
      `data of tensor '${name}'`,
      `expected ${expected} bytes, found ${found}${found > expected ? " or more" : ""}`,
    );
  }
}

function metadataPairs(metadata: GgufMetadataToWrite): [string, GgufValueToWrite][] {
  if (metadata && typeof (metadata as Iterable<unknown>)[Symbol.iterator] === "function") {
    return [...(metadata as Iterable<readonly [string, GgufValueToWrite]>)].map(([k, v]) => [k, v]);
  }
  return Object.entries(metadata as Record<string, GgufValueToWrite>);
}

function resolveAlignment(pairs: [string, GgufValueToWrite][], asked?: number): number {
  const stored = pairs.find(([k]) => k === GGUF_ALIGNMENT_KEY)?.[1];
  if (stored && (stored.type !== "u32" || typeof stored.value !== "number")) {
    throw new ArgumentError(GGUF_ALIGNMENT_KEY, `must be a u32 value, got ${stored.type}`);
  }
  const a = asked ?? (stored?.value as number | undefined) ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isSafeInteger(a) || a < 1 || (a & (a - 1)) !== 0 || a > 2 ** 30) {
    throw new ArgumentError("alignment", `must be a power of two, got ${a}`);
  }
  if (stored && stored.value !== a) {
    throw new ArgumentError(
      "alignment",
      `${a} disagrees with the metadata's ${GGUF_ALIGNMENT_KEY} = ${stored.value}`,
    );
  }
  if (!stored && a !== GGUF_DEFAULT_ALIGNMENT) pairs.push([GGUF_ALIGNMENT_KEY, ggufValue.u32(a)]);
  return a;
}

function asBytes(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

async function* chunksOf(source: TensorDataSource): AsyncGenerator<Uint8Array> {
  if (ArrayBuffer.isView(source)) {
    yield asBytes(source);
    return;
  }
  const produced = await source();
  if (ArrayBuffer.isView(produced)) yield asBytes(produced);
  else if (Symbol.asyncIterator in produced) { for await (const c of produced) yield asBytes(c); }
  else for (const c of produced) yield asBytes(c);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) done += await file.write(bytes.subarray(done));
}

/**
 * Writes a GGUF file: the metadata in order (with `general.alignment` added when the alignment is
 * not 32), the tensor infos, then the tensors' data in order, each padded with zeros to the
 * alignment (lazy data functions are called one at a time, in order). Throws
 * {@linkcode ArgumentError} for a bad key, value, name, type, shape or data length (naming it);
 * nothing is left under `path` on failure.
 *
 * @example
 * ```ts
 * import { ggufValue, writeGguf } from "./gguf_writer.ts";
 * const w = await writeGguf("/tmp/one.gguf", { "general.name": ggufValue.string("one") }, [
 *   { name: "w", type: "F32", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
 * ]);
 * console.log(w.tensors[0].offset % 32); // 0
 * ```
 */
export async function writeGguf(
  path: string,
  metadata: GgufMetadataToWrite,
  tensors: Iterable<GgufTensorToWrite>,
  options: WriteGgufOptions = {},
): Promise<WrittenGguf> {
  const pairs = metadataPairs(metadata);
  const alignment = resolveAlignment(pairs, options.alignment);
  const seenNames = new Set<string>();
  let rel = 0;
  const planned: Planned[] = [];
  for (const t of tensors) {
    const p = planTensor(t, seenNames);
    planned.push({ ...p, rel });
    rel += Math.ceil(p.byteLength / alignment) * alignment;
  }
  const head = new Bytes();
  head.raw(enc.encode("GGUF"));
  head.u32(3);
  head.u64(planned.length);
  head.u64(pairs.length);
  const keys = new Set<string>();
  for (const [key, v] of pairs) {
    if (typeof key !== "string" || key === "") throw new ArgumentError("metadata", "empty key");
    if (keys.has(key)) throw new ArgumentError(key, "duplicate metadata key");
    keys.add(key);
    if (!v || typeof v !== "object") throw new ArgumentError(key, "expected a typed value");
    head.string(key);
    head.u32(GGUF_VALUE_TYPES.indexOf(v.type));
    encodeValue(head, key, v.type, v.value, 0);
  }
  for (const t of planned) {
    head.string(t.name);
    head.u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(t.type.id);
    head.u64(t.rel);
  }
  const dataOffset = planned.length ? Math.ceil(head.length / alignment) * alignment : head.length;
  const zeros = new Uint8Array(alignment);
  const tmp = `${path}.partial`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true }).catch((e) => {
    throw asWriteError(e, tmp);
  });
  let closed = false;
  try {
    await writeAll(file, head.bytes());
    await writeAll(file, zeros.subarray(0, dataOffset - head.length));
    const written: WrittenGguf["tensors"] = [];
    for (const t of planned) {
      let n = 0;
      for await (const chunk of chunksOf(t.data)) {
        if (n + chunk.byteLength > t.byteLength) {
          checkLength(t.name, t.byteLength, n + chunk.byteLength);
        }
        await writeAll(file, chunk);
        n += chunk.byteLength;
      }
      checkLength(t.name, t.byteLength, n);
      await writeAll(file, zeros.subarray(0, (alignment - (n % alignment)) % alignment));
      written.push({ name: t.name, type: t.type.name, offset: dataOffset + t.rel, byteLength: n });
    }
    await file.syncData(); // on disk before it takes the name: no dirty pages left behind
    file.close();
    closed = true;
    await Deno.rename(tmp, path);
    return { path, byteLength: dataOffset + rel, dataOffset, alignment, tensors: written };
  } catch (e) {
    if (!closed) file.close();
    await Deno.remove(tmp).catch(() => {});
    throw asWriteError(e, path);
  }
}
