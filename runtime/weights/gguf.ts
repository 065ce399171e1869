/**
 * Reading GGUF files (llama.cpp's model format), zero-copy through {@linkcode openMapped} like the
 * safetensors reader: {@linkcode openGguf} validates the whole header at open (`./gguf_header.ts`)
 * and gives the metadata (every value type, typed getters that name the key in their errors) and
 * the tensors, each with its ggml type, its dimensions in ggml order (`dims[0]` innermost) and in
 * row-major order (`shape`, as safetensors and PyTorch write them), and views of its bytes.
 *
 * Tensors of any ggml type can be described and viewed; {@linkcode GgufTensor.toF32} converts
 * F32, F16, BF16, Q8_0, Q5_0, Q4_0, Q4_K, Q5_K and Q6_K (the types Pregate computes with).
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "./gguf.ts";
 * const g = openGguf("model-Q4_K_M.gguf");
 * console.log(g.string("general.architecture"), g.uint("qwen3moe.expert_count"));
 * const w = g.tensor("blk.0.ffn_down_exps.weight");
 * console.log(w.type, w.dims, w.shape, w.bytes().byteLength === w.byteLength);
 * g.close();
 * ```
 * @module
 */
import { GgufError } from "../base/errors.ts";
import { halfWordsToF32 } from "../base/dtype.ts";
import { type MapKind, type MappedFile, openMapped, type OpenMappedOptions } from "./mmap.ts";
import { dequantize, QUANT_GGML_NAME, QUANT_TYPES } from "./quant.ts";
import {
  type GgufArray,
  type GgufEntry,
  type GgufValue,
  type GgufValueType,
  type ParsedTensor,
  parseGgufHeader,
} from "./gguf_header.ts";

export {
  GGUF_ALIGNMENT_KEY,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_MAX_DIMS,
  GGUF_VALUE_TYPES,
  type GgufArray,
  type GgufArrayItems,
  type GgufEntry,
  type GgufValue,
  type GgufValueType,
} from "./gguf_header.ts";

/**
 * A tensor's header entry: what {@linkcode GgufFile.describe} returns.
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "./gguf.ts";
 * const g = openGguf("tiny.gguf");
 * const t = g.describe("token_embd.weight");
 * console.log(t.type, t.dims, t.shape); // "F16" [64, 1000] [1000, 64]
 * g.close();
 * ```
 */
export interface GgufTensorInfo {
  /** The tensor's name (`blk.0.attn_q.weight`, ...). */
  readonly name: string;
  /** The ggml type name (`F32`, `F16`, `BF16`, `Q8_0`, `Q4_K`, ...). */
  readonly type: string;
  /** The ggml type id stored in the file. */
  readonly typeId: number;
  /** Dimensions in ggml order: `dims[0]` is the innermost (a row of a matrix). */
  readonly dims: readonly number[];
  /** Dimensions in row-major order (`dims` reversed): `[rows, columns]` for a matrix. */
  readonly shape: readonly number[];
  /** The number of values. */
  readonly elements: number;
  /** The absolute byte offset of the data in the file. */
  readonly offset: number;
  /** Bytes of data. */
  readonly byteLength: number;
}

/** A typed view of a tensor's data (see {@linkcode GgufTensor.view}). */
export type GgufTensorView =
  | Float32Array
  | Float64Array
  | Uint16Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array;

/**
 * A tensor with access to its data: what {@linkcode GgufFile.tensor} returns.
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "./gguf.ts";
 * const g = openGguf("tiny.gguf");
 * const norm = g.tensor("output_norm.weight").toF32();
 * const q = g.tensor("blk.0.ffn_down_exps.weight").bytes(); // Q4_K blocks as stored
 * console.log(norm.length, q.byteLength);
 * g.close();
 * ```
 */
export interface GgufTensor extends GgufTensorInfo {
  /**
   * The data as stored: zero-copy and **read-only** when mapped (copy with `slice()` to write), a
   * fresh copy in read mode. Must not be used after the file is closed.
   */
  bytes(): Uint8Array;
  /**
   * The data as a typed array of its elements: `Float32Array` (F32), `Uint16Array` (F16 and BF16
   * bits), `Float64Array`, `Int8Array`, `Int16Array`, `Int32Array`, `BigInt64Array`, or the raw
   * `Uint8Array` of blocks for block-quantised types. Zero-copy when mapped and aligned.
   */
  view(): GgufTensorView;
  /**
   * The values converted to a new `Float32Array` (F32, F16, BF16, Q8_0, Q5_0, Q4_0, Q4_K, Q5_K,
   * Q6_K).
   */
  toF32(): Float32Array;
}

/**
 * An open GGUF file: its metadata and tensors.
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "./gguf.ts";
 * const g = openGguf("tiny.gguf");
 * const tokens = g.strings("tokenizer.ggml.tokens");
 * const heads = g.uint("llama.attention.head_count");
 * const eps = g.float("llama.attention.layer_norm_rms_epsilon", 1e-6);
 * console.log(g.version, g.alignment, tokens.length, heads, eps, g.names().length);
 * g.close();
 * ```
 */
export interface GgufFile {
  /** The file. */
  readonly path: string;
  /** The GGUF version (2 or 3). */
  readonly version: number;
  /** The data alignment (`general.alignment`, default 32). */
  readonly alignment: number;
  /** The absolute offset of the data section. */
  readonly dataOffset: number;
  /** How the file is accessed (`mmap` zero-copy, or `read`). */
  readonly kind: MapKind;
  /** The mapped file (page residency, access hints, truncation checks over tensors' bytes). */
  readonly mapping: MappedFile;
  /** Every metadata entry, in file order. */
  entries(): readonly GgufEntry[];
  /** Whether a metadata key exists. */
  has(key: string): boolean;
  /** A metadata entry; throws {@linkcode GgufError} naming a missing key. */
  entry(key: string): GgufEntry;
  /** A metadata value, or `undefined` when the key is missing. */
  value(key: string): GgufValue | undefined;
  /** A string value (or `fallback` when the key is missing and a fallback is given). */
  string(key: string, fallback?: string): string;
  /** A non-negative integer value of any integer type, as a number. */
  uint(key: string, fallback?: number): number;
  /** An integer value of any integer type, as a number. */
  int(key: string, fallback?: number): number;
  /** A number of any numeric type (f32, f64 or an integer). */
  float(key: string, fallback?: number): number;
  /** A bool value. */
  bool(key: string, fallback?: boolean): boolean;
  /** An array of strings. */
  strings(key: string): readonly string[];
  /** An array of numbers of any numeric item type (64-bit integers must be safe integers). */
  numbers(key: string): readonly number[];
  /** Every tensor name, in file order. */
  names(): string[];
  /** Whether a tensor exists. */
  hasTensor(name: string): boolean;
  /** A tensor's header entry; throws {@linkcode GgufError} naming a missing tensor. */
  describe(name: string): GgufTensorInfo;
  /** A tensor with its data; throws {@linkcode GgufError} naming a missing tensor. */
  tensor(name: string): GgufTensor;
  /** Closes (unmaps) the file. Idempotent; tensor views must not be used afterwards. */
  close(): void;
}

const VIEW: Readonly<
  Record<string, [new (b: ArrayBuffer, o: number, n: number) => GgufTensorView, number]>
> = {
  F32: [Float32Array, 4],
  F64: [Float64Array, 8],
  F16: [Uint16Array, 2],
  BF16: [Uint16Array, 2],
  I8: [Int8Array, 1],
  I16: [Int16Array, 2],
  I32: [Int32Array, 4],
  I64: [BigInt64Array, 8],
};

function describeType(v: GgufValue | undefined, type: GgufValueType | undefined): string {
  if (type === undefined) return "nothing";
  if (type === "array") {
    const a = v as GgufArray;
    return `an array of ${a.items.length} ${a.itemType}`;
  }
  const shown = typeof v === "string"
    ? JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v)
    : String(v);
  return `${type} ${shown}`;
}

const INT_TYPES = new Set<GgufValueType>(["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64"]);

class Gguf implements GgufFile {
  readonly path: string;
  readonly kind: MapKind;
  #closed = false;
  readonly #entries: Map<string, GgufEntry>;
  readonly #tensors: Map<string, ParsedTensor>;

  constructor(
    readonly mapping: MappedFile,
    readonly version: number,
    readonly alignment: number,
    readonly dataOffset: number,
    entries: readonly GgufEntry[],
    tensors: readonly ParsedTensor[],
  ) {
    this.path = mapping.path;
    this.kind = mapping.kind;
    this.#entries = new Map(entries.map((e) => [e.key, e]));
    this.#tensors = new Map(tensors.map((t) => [t.name, t]));
  }

  #fail(message: string, opts: { key?: string; tensor?: string; hint?: string }): never {
    throw new GgufError(this.path, message, opts);
  }

  entries(): readonly GgufEntry[] {
    return [...this.#entries.values()];
  }
  has(key: string): boolean {
    return this.#entries.has(key);
  }
  entry(key: string): GgufEntry {
    const e = this.#entries.get(key);
    if (!e) {
      this.#fail(`missing metadata key (the file has ${this.#entries.size} keys)`, {
        key,
        hint: "the file may be for another architecture, or written by an incomplete converter",
      });
    }
    return e;
  }
  value(key: string): GgufValue | undefined {
    return this.#entries.get(key)?.value;
  }

  /** The value of `key` if its type passes `ok`, the fallback if missing, else a typed error. */
  #typed<T>(key: string, what: string, ok: (e: GgufEntry) => boolean, fallback?: T): GgufEntry | T {
    const e = this.#entries.get(key);
    if (!e && fallback !== undefined) return fallback;
    const found = this.entry(key);
    if (!ok(found)) {
      this.#fail(`expected ${what}, found ${describeType(found.value, found.type)}`, { key });
    }
    return found;
  }

  string(key: string, fallback?: string): string {
    const e = this.#typed(key, "a string", (x) => x.type === "string", fallback);
    return typeof e === "string" ? e : e.value as string;
  }
  #integer(key: string, fallback: number | undefined, min: number): number {
    const e = this.#typed(
      key,
      min === 0 ? "a non-negative integer" : "an integer",
      (x) => INT_TYPES.has(x.type),
      fallback,
    );
    if (typeof e === "number") return e;
    const v = Number(e.value as number | bigint);
    if (!Number.isSafeInteger(v) || v < min) {
      this.#fail(
        `expected ${min === 0 ? "a non-negative" : "a safe"} integer, found ${e.type} ${e.value}`,
        { key },
      );
    }
    return v;
  }
  uint(key: string, fallback?: number): number {
    return this.#integer(key, fallback, 0);
  }
  int(key: string, fallback?: number): number {
    return this.#integer(key, fallback, Number.MIN_SAFE_INTEGER);
  }
  float(key: string, fallback?: number): number {
    const e = this.#typed(
      key,
      "a number",
      (x) => INT_TYPES.has(x.type) || x.type === "f32" || x.type === "f64",
      fallback,
    );
    return typeof e === "number" ? e : Number(e.value as number | bigint);
  }
  bool(key: string, fallback?: boolean): boolean {
    const e = this.#typed(key, "a bool", (x) => x.type === "bool", fallback);
    return typeof e === "boolean" ? e : e.value as boolean;
  }
  strings(key: string): readonly string[] {
    const e = this.#typed(
      key,
      "an array of strings",
      (x) => x.type === "array" && (x.value as GgufArray).itemType === "string",
    );
    return ((e as GgufEntry).value as GgufArray).items as readonly string[];
  }
  numbers(key: string): readonly number[] {
    const numeric = (x: GgufEntry) => {
      const t = x.type === "array" ? (x.value as GgufArray).itemType : undefined;
      return t !== undefined && (INT_TYPES.has(t) || t === "f32" || t === "f64");
    };
    const a = (this.#typed(key, "an array of numbers", numeric) as GgufEntry).value as GgufArray;
    const out = Array.from(a.items as ArrayLike<number | bigint>, Number);
    const bad = out.findIndex((v, i) => typeof a.items[i] === "bigint" && !Number.isSafeInteger(v));
    if (bad >= 0) this.#fail(`item ${bad} (${a.items[bad]}) is not a safe integer`, { key });
    return out;
  }

  names(): string[] {
    return [...this.#tensors.keys()];
  }
  hasTensor(name: string): boolean {
    return this.#tensors.has(name);
  }
  #parsed(name: string): ParsedTensor {
    if (this.#closed) this.#fail("the file was used after close()", { tensor: name });
    const t = this.#tensors.get(name);
    if (!t) {
      this.#fail(`missing tensor (the file has ${this.#tensors.size} tensors)`, {
        tensor: name,
        hint: "the file may be for another architecture or a different layer count",
      });
    }
    return t;
  }
  describe(name: string): GgufTensorInfo {
    const t = this.#parsed(name);
    return {
      name,
      type: t.type.name,
      typeId: t.type.id,
      dims: [...t.dims],
      shape: [...t.dims].reverse(),
      elements: t.elements,
      offset: t.offset,
      byteLength: t.byteLength,
    };
  }
  tensor(name: string): GgufTensor {
    const t = this.#parsed(name);
    const bytes = () => this.mapping.bytes(t.offset, t.byteLength);
    const view = (): GgufTensorView => {
      const b = bytes();
      const v = VIEW[t.type.name];
      if (!v) return b;
      const [Ctor, size] = v;
      const a = b.byteOffset % size === 0 ? b : b.slice();
      return new Ctor(a.buffer as ArrayBuffer, a.byteOffset, t.elements);
    };
    const toF32 = (): Float32Array => {
      const kind = t.type.name;
      if (kind === "F32") return (view() as Float32Array).slice();
      if (kind === "F16" || kind === "BF16") {
        return halfWordsToF32(view() as Uint16Array, kind === "F16" ? "f16" : "bf16");
      }
      const quant = QUANT_TYPES.find((q) => QUANT_GGML_NAME[q] === kind);
      if (quant) return dequantize(bytes(), quant, t.elements);
      return this.#fail(
        `cannot convert a ${kind} tensor to f32 (supported: F32, F16, BF16, ` +
          `${Object.values(QUANT_GGML_NAME).join(", ")})`,
        {
          tensor: name,
        },
      );
    };
    return { ...this.describe(name), bytes, view, toF32 };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.mapping.close();
  }
}

/**
 * Opens a GGUF file (memory-mapped when possible; see {@linkcode openMapped} for `options`) and
 * validates its whole header. Throws {@linkcode GgufError} naming the file and the key or tensor
 * for anything malformed: truncation anywhere, a bad magic or version, counts or lengths larger than
 * the file, an unknown value or tensor type, bad `general.alignment`, rows that are not whole
 * blocks, misaligned, overlapping or out-of-file data, duplicate keys or tensor names.
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "./gguf.ts";
 * const g = openGguf("tiny.gguf", { mode: "read" });
 * for (const name of g.names()) console.log(name, g.describe(name).type);
 * g.close();
 * ```
 */
export function openGguf(path: string, options: OpenMappedOptions = {}): GgufFile {
  const mapped = openMapped(path, options);
  try {
    const h = parseGgufHeader(mapped);
    return new Gguf(mapped, h.version, h.alignment, h.dataOffset, h.entries, h.tensors);
  } catch (e) {
    mapped.close();
    throw e;
  }
}

/**
 * Whether `path` is a GGUF file: named `*.gguf`, or a file starting with the GGUF magic. A
 * directory or a missing path is not.
 *
 * @example
 * ```ts
 * import { isGgufFile } from "./gguf.ts";
 * console.log(isGgufFile("tests/fixtures/hf/olmoe"), isGgufFile("model-q4_k.gguf")); // false true
 * ```
 */
export function isGgufFile(path: string): boolean {
  if (path.toLowerCase().endsWith(".gguf")) return true;
  try {
    if (!Deno.statSync(path).isFile) return false;
    const f = Deno.openSync(path, { read: true });
    try {
      const magic = new Uint8Array(4);
      return f.readSync(magic) === 4 && new TextDecoder().decode(magic) === "GGUF";
    } finally {
      f.close();
    }
  } catch {
    return false;
  }
}
