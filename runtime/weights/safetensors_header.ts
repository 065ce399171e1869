/**
 * The header of one safetensors file: the format's constants, and parsing and validating the header
 * before any tensor is read ({@linkcode parseHeader}).
 *
 * A safetensors file is an 8-byte little-endian header length `N`, `N` bytes of UTF-8 JSON
 * (`{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__":
 * {..}}`), then the data section; `data_offsets` are relative to the start of the data section,
 * which is byte `8 + N` of the file. {@linkcode HeaderEntry.offset} is the absolute offset in the
 * file.
 *
 * Everything that can be checked is checked here (header, every entry's types, offsets in range, no
 * overlaps, element count times dtype size equal to the byte length), and every failure is a
 * {@linkcode WeightFileError} naming the file and the tensor. A tensor of a dtype Pregate does not
 * compute with (I64, U8, F8_E4M3, ...) is validated like any other and kept with `dtype: null`;
 * the store rejects it only when it is asked for.
 *
 * @example
 * ```ts
 * import { openMapped } from "./mmap.ts";
 * import { parseHeader, SAFETENSORS_DTYPE_BYTES } from "./safetensors_header.ts";
 * const mapped = openMapped("tests/fixtures/hf/olmoe/model.safetensors");
 * for (const e of parseHeader(mapped).entries.slice(0, 3)) {
 *   console.log(e.name, e.byteLength === e.elements * (SAFETENSORS_DTYPE_BYTES[e.fileDType] ?? 0));
 * }
 * mapped.close();
 * ```
 * @module
 */
import { WeightFileError } from "../base/errors.ts";
import type { DType } from "../base/dtype.ts";
import type { MappedFile } from "./mmap.ts";

/**
 * Bytes per element of the safetensors dtypes whose size is a whole number of bytes (sub-byte types
 * such as `F4` are not listed; their byte lengths are not checked).
 *
 * @example
 * ```ts
 * import { SAFETENSORS_DTYPE_BYTES } from "./safetensors_header.ts";
 * console.log(SAFETENSORS_DTYPE_BYTES.BF16, SAFETENSORS_DTYPE_BYTES.I64); // 2 8
 * ```
 */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<string, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  C64: 8,
};

/**
 * The safetensors dtype names Pregate computes with, and their {@linkcode DType}.
 *
 * @example
 * ```ts
 * import { SAFETENSORS_DTYPES } from "./safetensors_header.ts";
 * console.log(SAFETENSORS_DTYPES.BF16, SAFETENSORS_DTYPES.I64); // bf16 undefined
 * ```
 */
export const SAFETENSORS_DTYPES: Readonly<Record<string, DType>> = {
  F32: "f32",
  F16: "f16",
  BF16: "bf16",
};

/**
 * The safetensors name of each {@linkcode DType}.
 *
 * @example
 * ```ts
 * import { DTYPE_TO_SAFETENSORS } from "./safetensors_header.ts";
 * console.log(DTYPE_TO_SAFETENSORS.f16); // F16
 * ```
 */
export const DTYPE_TO_SAFETENSORS: Readonly<Record<DType, string>> = {
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
};

/**
 * The largest JSON header accepted, in bytes (the reference implementation's limit).
 *
 * @example
 * ```ts
 * import { MAX_HEADER_BYTES } from "./safetensors_header.ts";
 * console.log(MAX_HEADER_BYTES); // 100000000
 * ```
 */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * One validated tensor entry of a header, whatever its dtype (the store's internal record; the
 * public view is `TensorEntry` in `./safetensors.ts`).
 *
 * @example
 * ```ts
 * import { openMapped } from "./mmap.ts";
 * import { type HeaderEntry, parseHeader } from "./safetensors_header.ts";
 * const mapped = openMapped("tests/fixtures/hf/olmoe/model.safetensors");
 * const e: HeaderEntry = parseHeader(mapped).entries[0];
 * console.log(e.name, e.fileDType, e.offset, e.begin, e.end);
 * mapped.close();
 * ```
 */
export interface HeaderEntry {
  /** The tensor's name. */
  name: string;
  /** The dtype as written in the file (`F32`, `BF16`, `I64`, ...). */
  fileDType: string;
  /** The {@linkcode DType} Pregate computes with, or `null` when the file dtype is unsupported. */
  dtype: DType | null;
  /** The shape. */
  shape: number[];
  /** The number of elements (1 for a scalar). */
  elements: number;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  /** Bytes of data. */
  byteLength: number;
  /** data_offsets as in the file, for messages. */
  begin: number;
  /** data_offsets as in the file, for messages. */
  end: number;
  /** The file holding the tensor. */
  mapped: MappedFile;
}

/**
 * A validated header: what {@linkcode parseHeader} returns.
 *
 * @example
 * ```ts
 * import { openMapped } from "./mmap.ts";
 * import { type ParsedHeader, parseHeader } from "./safetensors_header.ts";
 * const mapped = openMapped("tests/fixtures/hf/olmoe/model.safetensors");
 * const h: ParsedHeader = parseHeader(mapped);
 * console.log(h.entries.length, h.metadata.format);
 * mapped.close();
 * ```
 */
export interface ParsedHeader {
  /** The tensor entries, in header order. */
  entries: HeaderEntry[];
  /** The file's `__metadata__` (non-string values JSON-encoded). */
  metadata: Record<string, string>;
}

const HEADER_HINT = "the file is not a safetensors file, or it is truncated or corrupt";

function show(value: unknown): string {
  let s: string;
  try {
    s = value === undefined ? "nothing" : JSON.stringify(value);
  } catch {
    s = String(value);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * A short description of a JSON value's type for error messages ("an array", "a number (3)").
 *
 * @example
 * ```ts
 * import { typeName } from "./safetensors_header.ts";
 * console.log(typeName([1]), typeName(3)); // an array a number (3)
 * ```
 */
export function typeName(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value} (${show(value)})`;
}

/**
 * Whether a parsed JSON value is an object (not null, not an array).
 *
 * @example
 * ```ts
 * import { isObject } from "./safetensors_header.ts";
 * console.log(isObject({}), isObject([]), isObject(null)); // true false false
 * ```
 */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Reads and validates the whole header of a safetensors file: the length prefix, the JSON, every
 * entry's types, offsets in range, element count times dtype size equal to the byte length, and no
 * two tensors overlapping. Throws {@linkcode WeightFileError} naming the file (and the tensor, when
 * there is one) for anything malformed. Tensors of unsupported dtypes are kept (`dtype: null`).
 *
 * @example
 * ```ts
 * import { openMapped } from "./mmap.ts";
 * import { parseHeader } from "./safetensors_header.ts";
 * const mapped = openMapped("tests/fixtures/hf/olmoe/model.safetensors");
 * const { entries, metadata } = parseHeader(mapped);
 * for (const e of entries.slice(0, 3)) console.log(e.name, e.fileDType, e.shape, e.byteLength);
 * console.log(metadata);
 * mapped.close();
 * ```
 */
export function parseHeader(mapped: MappedFile): ParsedHeader {
  const path = mapped.path;
  const size = mapped.byteLength;
  if (size < 8) {
    throw new WeightFileError(
      path,
      `file is ${size} bytes, shorter than the 8-byte header length that starts a safetensors file`,
      { hint: HEADER_HINT },
    );
  }
  const prefix = mapped.bytes(0, 8);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n + 8n > BigInt(size)) {
    throw new WeightFileError(
      path,
      `header length ${n} runs past the end of the file (expected at most ${size - 8} bytes of ` +
        `header in a ${size}-byte file${
          n > BigInt(MAX_HEADER_BYTES) ? "; it is also absurdly large" : ""
        })`,
      { hint: HEADER_HINT },
    );
  }
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new WeightFileError(
      path,
      `header length ${n} is absurdly large (limit ${MAX_HEADER_BYTES} bytes)`,
      { hint: HEADER_HINT },
    );
  }
  const headerLength = Number(n);
  const dataStart = 8 + headerLength;
  const dataLength = size - dataStart;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(mapped.bytes(8, headerLength));
  } catch {
    throw new WeightFileError(path, `header (${headerLength} bytes) is not valid UTF-8`, {
      hint: HEADER_HINT,
    });
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new WeightFileError(
      path,
      `header is not valid JSON (${(e as Error).message}); it starts with ${
        show(text.slice(0, 40))
      }`,
      { hint: HEADER_HINT },
    );
  }
  if (!isObject(header)) {
    throw new WeightFileError(
      path,
      `header must be a JSON object of tensor entries, found ${typeName(header)}`,
      { hint: HEADER_HINT },
    );
  }

  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isObject(value)) {
        throw new WeightFileError(
          path,
          `__metadata__ must be an object of strings, found ${typeName(value)}`,
          { hint: HEADER_HINT },
        );
      }
      for (const [k, v] of Object.entries(value)) {
        metadata[k] = typeof v === "string" ? v : JSON.stringify(v);
      }
      continue;
    }
    const bad = (what: string): never => {
      throw new WeightFileError(path, what, { tensor: name, hint: HEADER_HINT });
    };
    if (!isObject(value)) {
      bad(`entry must be an object with dtype, shape and data_offsets, found ${typeName(value)}`);
    }
    const entry = value as Record<string, unknown>;
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== "string") {
      bad(`dtype: expected a string such as "BF16", found ${show(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      bad(`shape: expected an array of non-negative integers, found ${show(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      bad(
        `data_offsets: expected [begin, end] (two non-negative integers), found ${show(offsets)}`,
      );
    }
    const dims = shape as number[];
    const [begin, end] = offsets as [number, number];
    const fileDType = dtype as string;
    if (begin > end) bad(`data_offsets [${begin}, ${end}]: begin is after end`);
    if (end > dataLength) {
      bad(
        `data_offsets [${begin}, ${end}] run past the end of the data section (expected end <= ` +
          `${dataLength}: the data starts at byte ${dataStart} of a ${size}-byte file)`,
      );
    }
    let elements = 1;
    for (const d of dims) elements *= d;
    if (!Number.isSafeInteger(elements)) bad(`shape ${show(dims)} has too many elements`);
    const unit = SAFETENSORS_DTYPE_BYTES[fileDType];
    if (unit !== undefined && elements * unit !== end - begin) {
      bad(
        `shape ${show(dims)} of dtype ${fileDType} needs ${elements} x ${unit} = ${
          elements * unit
        } bytes, but data_offsets [${begin}, ${end}] hold ${end - begin} bytes`,
      );
    }
    entries.push({
      name,
      fileDType,
      dtype: SAFETENSORS_DTYPES[fileDType] ?? null,
      shape: dims.slice(),
      elements,
      offset: dataStart + begin,
      byteLength: end - begin,
      begin,
      end,
      mapped,
    });
  }

  const byBegin = entries.filter((e) => e.byteLength > 0).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byBegin.length; i++) {
    const prev = byBegin[i - 1];
    const cur = byBegin[i];
    if (cur.begin < prev.end) {
      throw new WeightFileError(
        path,
        `data_offsets [${cur.begin}, ${cur.end}] overlap those of tensor ${prev.name} ` +
          `[${prev.begin}, ${prev.end}] (expected begin >= ${prev.end})`,
        { tensor: cur.name, hint: HEADER_HINT },
      );
    }
  }
  return { entries, metadata };
}
