/**
 * The GGUF header: its value types and the parser behind `openGguf` (`./gguf.ts`), which reads
 * and validates the whole header of a file at open.
 *
 * Layout (little-endian; versions 2 and 3 are the same on little-endian hosts):
 * `"GGUF"`, u32 version, u64 tensor count, u64 key-value count, the key-value pairs (a string key,
 * a u32 value type, the value), the tensor infos (a string name, u32 dimension count, that many u64
 * dimensions with `ne[0]` the innermost, u32 ggml type, u64 offset into the data section), padding
 * to `general.alignment` (default 32), then the data section. A string is a u64 byte length and
 * UTF-8 bytes; an array is a u32 item type, a u64 count and the items (arrays may nest).
 *
 * Every malformed header gives a {@linkcode GgufError} naming the file and the key or tensor; the
 * parser never reads past the end of the file, never allocates more than the file could hold, and
 * limits array nesting, so no input makes it crash or hang.
 * @module
 */
import { GgufError } from "../base/errors.ts";
import type { MappedFile } from "./mmap.ts";
import { type GgmlType, ggmlTypeById } from "./quant.ts";

/** The type of a GGUF metadata value, by its id in the file (the index in this list). */
export const GGUF_VALUE_TYPES = [
  "u8",
  "i8",
  "u16",
  "i16",
  "u32",
  "i32",
  "f32",
  "bool",
  "string",
  "array",
  "u64",
  "i64",
  "f64",
] as const;

/** A GGUF metadata value type. */
export type GgufValueType = typeof GGUF_VALUE_TYPES[number];

/**
 * The items of a GGUF array: a typed array for numeric item types (`u64` / `i64`: bigint arrays),
 * booleans, strings, or nested arrays.
 */
export type GgufArrayItems =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array
  | readonly boolean[]
  | readonly string[]
  | readonly GgufArray[];

/** A GGUF array value. */
export interface GgufArray {
  /** The type of every item. */
  readonly itemType: GgufValueType;
  /** The items. */
  readonly items: GgufArrayItems;
}

/**
 * A GGUF metadata value: a number (8- to 32-bit integers, f32, f64), a bigint (u64, i64), a
 * boolean, a string or an array.
 */
export type GgufValue = number | bigint | boolean | string | GgufArray;

/**
 * One metadata key-value pair.
 *
 * @example
 * ```ts
 * import type { GgufEntry } from "./gguf_header.ts";
 * const e: GgufEntry = { key: "general.architecture", type: "string", value: "llama" };
 * console.log(e.key);
 * ```
 */
export interface GgufEntry {
  /** The key, e.g. `general.architecture`. */
  readonly key: string;
  /** The value's type. */
  readonly type: GgufValueType;
  /** The value (an {@linkcode GgufArray} when `type` is `array`). */
  readonly value: GgufValue;
}

/** A tensor info as parsed from the header (offsets absolute in the file). */
export interface ParsedTensor {
  readonly name: string;
  readonly type: GgmlType;
  /** Dimensions in ggml order: `dims[0]` is the innermost (contiguous) one. */
  readonly dims: readonly number[];
  readonly elements: number;
  /** Absolute byte offset of the data in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

/** A parsed, validated header. */
export interface ParsedGguf {
  readonly version: number;
  readonly alignment: number;
  readonly dataOffset: number;
  readonly entries: readonly GgufEntry[];
  readonly tensors: readonly ParsedTensor[];
}

/** The four bytes every GGUF file starts with. */
export const GGUF_MAGIC = "GGUF";
/** The data alignment when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** The alignment key. */
export const GGUF_ALIGNMENT_KEY = "general.alignment";
/** The most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`). */
export const GGUF_MAX_DIMS = 4;
/** The deepest array nesting the parser accepts. */
export const GGUF_MAX_NESTING = 8;

/** Bytes of one item of each fixed-size type; the least bytes a string (8) or array (12) takes. */
const ITEM_BYTES: Readonly<Record<GgufValueType, number>> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  bool: 1,
  string: 8,
  array: 12,
  u64: 8,
  i64: 8,
  f64: 8,
};
/** The least bytes of a key-value pair (a 1-byte key, the type, a 1-byte value). */
const MIN_KV_BYTES = 8 + 1 + 4 + 1;
/** The least bytes of a tensor info (a 1-byte name, no dimensions, the type and the offset). */
const MIN_TENSOR_BYTES = 8 + 1 + 4 + 4 + 8;
const CHUNK = 1 << 20;

type TypedArrayCtor = new (buffer: ArrayBuffer) => GgufArrayItems;
const TYPED: Partial<Record<GgufValueType, TypedArrayCtor>> = {
  u8: Uint8Array,
  i8: Int8Array,
  u16: Uint16Array,
  i16: Int16Array,
  u32: Uint32Array,
  i32: Int32Array,
  f32: Float32Array,
  u64: BigUint64Array,
  i64: BigInt64Array,
  f64: Float64Array,
};

const SCALAR_READERS: Partial<
  Record<GgufValueType, (dv: DataView, o: number) => number | bigint>
> = {
  u8: (dv, o) => dv.getUint8(o),
  i8: (dv, o) => dv.getInt8(o),
  u16: (dv, o) => dv.getUint16(o, true),
  i16: (dv, o) => dv.getInt16(o, true),
  u32: (dv, o) => dv.getUint32(o, true),
  i32: (dv, o) => dv.getInt32(o, true),
  f32: (dv, o) => dv.getFloat32(o, true),
  u64: (dv, o) => dv.getBigUint64(o, true),
  i64: (dv, o) => dv.getBigInt64(o, true),
  f64: (dv, o) => dv.getFloat64(o, true),
  bool: (dv, o) => dv.getUint8(o),
};

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Sequential little-endian reads of a mapped (or read-on-demand) file, bounds-checked. */
class Cursor {
  pos = 0;
  /** What is being read, for errors: the key or tensor. */
  ctx: { key?: string; tensor?: string } = {};
  #win: Uint8Array;
  #dv: DataView;
  #winStart = 0;

  constructor(readonly file: MappedFile) {
    this.#win = file.kind === "mmap" ? new Uint8Array(file.arrayBuffer()) : new Uint8Array(0);
    this.#dv = new DataView(this.#win.buffer, this.#win.byteOffset, this.#win.byteLength);
  }

  get left(): number {
    return this.file.byteLength - this.pos;
  }

  fail(message: string, hint?: string): never {
    throw new GgufError(this.file.path, message, { ...this.ctx, hint });
  }

  /** The window offset of `n` bytes at the cursor (refilled in read mode); advances past them. */
  #take(n: number, what: string): number {
    if (n > this.left) {
      this.fail(
        `truncated: ${what} needs ${n} bytes at byte ${this.pos}, but the file ends at byte ` +
          `${this.file.byteLength}`,
        "the file is incomplete (an interrupted download or copy?)",
      );
    }
    let o = this.pos - this.#winStart;
    if (o < 0 || o + n > this.#win.byteLength) {
      this.#win = this.file.bytes(this.pos, Math.min(this.left, Math.max(n, CHUNK)));
      this.#dv = new DataView(this.#win.buffer, this.#win.byteOffset, this.#win.byteLength);
      this.#winStart = this.pos;
      o = 0;
    }
    this.pos += n;
    return o;
  }

  bytes(n: number, what: string): Uint8Array {
    const o = this.#take(n, what);
    return this.#win.subarray(o, o + n);
  }
  u32(what: string): number {
    const o = this.#take(4, what);
    return this.#dv.getUint32(o, true);
  }
  u64(what: string): bigint {
    const o = this.#take(8, what);
    return this.#dv.getBigUint64(o, true);
  }
  /** A u64 that must be a safe integer no larger than `max`. */
  count(what: string, max = Number.MAX_SAFE_INTEGER): number {
    const at = this.pos;
    const v = this.u64(what);
    if (v > BigInt(max)) {
      this.fail(`${what} is ${v} (at byte ${at}), more than the file could hold (at most ${max})`);
    }
    return Number(v);
  }

  scalar(type: GgufValueType, what: string): number | bigint | boolean {
    const read = SCALAR_READERS[type];
    if (!read) return this.fail(`internal: ${type} is not a scalar type`);
    const at = this.pos;
    const o = this.#take(ITEM_BYTES[type], what); // (may replace the window: before #dv)
    const v = read(this.#dv, o);
    if (type !== "bool") return v;
    if (v !== 0 && v !== 1) this.fail(`${what}: a bool must be 0 or 1, found ${v} (at byte ${at})`);
    return v === 1;
  }

  string(what: string): string {
    const at = this.pos;
    const n = this.count(`the length of ${what}`);
    if (n > this.left) {
      this.fail(
        `${what}: a string of ${n} bytes (length at byte ${at}) runs past the end of the file ` +
          `(${this.left} bytes left)`,
        "the file is truncated or corrupt",
      );
    }
    try {
      return utf8.decode(this.bytes(n, what));
    } catch {
      return this.fail(`${what} (at byte ${at + 8}) is not valid UTF-8`);
    }
  }

  valueType(what: string): GgufValueType {
    const at = this.pos;
    const id = this.u32(what);
    const t = GGUF_VALUE_TYPES[id];
    if (t === undefined) {
      this.fail(
        `unknown value type ${id} (at byte ${at}; known: 0 to ${GGUF_VALUE_TYPES.length - 1})`,
      );
    }
    return t;
  }

  value(type: GgufValueType, depth: number): GgufValue {
    if (type === "string") return this.string("the value");
    if (type === "array") return this.array(depth + 1);
    return this.scalar(type, "the value");
  }

  array(depth: number): GgufArray {
    if (depth > GGUF_MAX_NESTING) this.fail(`arrays nested deeper than ${GGUF_MAX_NESTING} levels`);
    const itemType = this.valueType("the array's item type");
    const at = this.pos;
    const n = this.count("the array's item count");
    if (n * ITEM_BYTES[itemType] > this.left) {
      this.fail(
        `an array of ${n} ${itemType} items (count at byte ${at}) cannot fit in the ${this.left} ` +
          `bytes left in the file`,
        "the file is truncated or corrupt",
      );
    }
    const typed = TYPED[itemType];
    if (typed) {
      const raw = this.bytes(n * ITEM_BYTES[itemType], "the array's items");
      return { itemType, items: new typed(raw.slice().buffer) };
    }
    if (itemType === "bool") {
      const items = Array.from({ length: n }, () => this.scalar("bool", "an item") as boolean);
      return { itemType, items };
    }
    if (itemType === "string") {
      const items: string[] = new Array(n);
      for (let i = 0; i < n; i++) items[i] = this.string(`item ${i}`);
      return { itemType, items };
    }
    const items: GgufArray[] = new Array(n);
    for (let i = 0; i < n; i++) items[i] = this.array(depth + 1);
    return { itemType, items };
  }
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function readEntries(c: Cursor, count: number): GgufEntry[] {
  const entries: GgufEntry[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    c.ctx = {};
    const key = c.string(`the key of metadata entry ${i}`);
    if (key === "") c.fail(`metadata entry ${i} has an empty key`);
    c.ctx = { key };
    if (seen.has(key)) c.fail(`duplicate metadata key (entry ${i})`);
    seen.add(key);
    const type = c.valueType("the value type");
    entries.push({ key, type, value: c.value(type, 0) });
  }
  c.ctx = {};
  return entries;
}

function alignmentOf(c: Cursor, entries: GgufEntry[]): number {
  const e = entries.find((x) => x.key === GGUF_ALIGNMENT_KEY);
  if (!e) return GGUF_DEFAULT_ALIGNMENT;
  c.ctx = { key: GGUF_ALIGNMENT_KEY };
  if (e.type !== "u32") c.fail(`must be a u32, found ${e.type}`);
  const a = e.value as number;
  if (a === 0 || (a & (a - 1)) !== 0) c.fail(`must be a power of two, found ${a}`);
  c.ctx = {};
  return a;
}

function readTensorInfo(c: Cursor, i: number, alignment: number, seen: Set<string>) {
  c.ctx = {};
  const name = c.string(`the name of tensor ${i}`);
  if (name === "") c.fail(`tensor ${i} has an empty name`);
  c.ctx = { tensor: name };
  if (seen.has(name)) c.fail(`duplicate tensor name (tensor ${i})`);
  seen.add(name);
  const nDims = c.u32("the dimension count");
  if (nDims > GGUF_MAX_DIMS) c.fail(`${nDims} dimensions, more than ggml's ${GGUF_MAX_DIMS}`);
  const dims: number[] = [];
  let elements = 1;
  for (let d = 0; d < nDims; d++) {
    dims.push(c.count(`dimension ${d}`));
    elements *= dims[d];
    if (!Number.isSafeInteger(elements)) c.fail(`shape [${dims}...] has too many elements`);
  }
  const at = c.pos;
  const typeId = c.u32("the tensor type");
  const type = ggmlTypeById(typeId);
  if (!type) {
    c.fail(
      `unknown ggml tensor type ${typeId} (at byte ${at})`,
      "the file may come from a newer llama.cpp than Pregate knows",
    );
  }
  const row = dims[0] ?? 1;
  if (row % type.values !== 0) {
    c.fail(
      `shape/size mismatch: ne[0] = ${row} values per row is not a whole number of ${type.name} ` +
        `blocks of ${type.values}`,
    );
  }
  const rel = c.count("the data offset");
  if (rel % alignment !== 0) {
    c.fail(`data offset ${rel} is not a multiple of the alignment ${alignment}`);
  }
  return { name, type, dims, elements, rel, byteLength: (elements / type.values) * type.bytes };
}

/**
 * Parses and validates the header of a GGUF file: magic, version (2 or 3), every metadata value,
 * `general.alignment`, the tensor infos (known ggml type, rows of whole blocks, aligned offsets,
 * data inside the file, no two tensors overlapping, no duplicate names or keys).
 *
 * @throws {GgufError} naming the file and the key or tensor.
 */
export function parseGgufHeader(file: MappedFile): ParsedGguf {
  const c = new Cursor(file);
  const magic = c.bytes(4, "the magic");
  const text = String.fromCharCode(...magic);
  if (text !== GGUF_MAGIC) {
    c.fail(
      `not a GGUF file: it starts with ${JSON.stringify(text)} (bytes ${
        [...magic].map((b) => b.toString(16).padStart(2, "0")).join(" ")
      }), expected "GGUF"`,
    );
  }
  const version = c.u32("the version");
  if (version !== 2 && version !== 3) {
    c.fail(
      `unsupported GGUF version ${version}${
        (version & 0xffff) === 0 ? " (a big-endian file?)" : version === 1 ? " (GGUF v1)" : ""
      }; Pregate reads versions 2 and 3`,
      version === 1 ? "convert the file again with a current llama.cpp" : undefined,
    );
  }
  const nTensors = c.count("the tensor count");
  const nKv = c.count("the metadata count");
  if (nTensors * MIN_TENSOR_BYTES + nKv * MIN_KV_BYTES > c.left) {
    c.fail(
      `the header claims ${nTensors} tensors and ${nKv} metadata entries, which cannot fit in the ` +
        `${c.left} bytes left in the file`,
      "the file is truncated or corrupt",
    );
  }
  const entries = readEntries(c, nKv);
  const alignment = alignmentOf(c, entries);
  const seen = new Set<string>();
  const infos = Array.from({ length: nTensors }, (_, i) => readTensorInfo(c, i, alignment, seen));
  const dataOffset = nTensors > 0 ? alignUp(c.pos, alignment) : c.pos;
  const tensors = infos.map((t): ParsedTensor => {
    c.ctx = { tensor: t.name };
    const offset = dataOffset + t.rel;
    if (offset + t.byteLength > file.byteLength) {
      c.fail(
        `data [${offset}, ${offset + t.byteLength}) (offset ${t.rel} in the data section at ` +
          `${dataOffset}) runs past the end of the file (${file.byteLength} bytes)`,
        "the file is truncated",
      );
    }
    return {
      name: t.name,
      type: t.type,
      dims: t.dims,
      elements: t.elements,
      offset,
      byteLength: t.byteLength,
    };
  });
  const byOffset = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const [a, b] = [byOffset[i - 1], byOffset[i]];
    if (a.offset + a.byteLength > b.offset) {
      c.ctx = { tensor: b.name };
      c.fail(
        `data [${b.offset}, ${b.offset + b.byteLength}) overlaps tensor ${a.name} ` +
          `[${a.offset}, ${a.offset + a.byteLength})`,
      );
    }
  }
  return { version, alignment, dataOffset, entries, tensors };
}
