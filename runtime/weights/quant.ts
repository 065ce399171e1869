/**
 * ggml tensor types and the block-quantised formats Pregate computes with, Q8_0, Q5_0, Q4_0, Q4_K,
 * Q5_K and Q6_K, in exactly llama.cpp's layouts as stored in GGUF files (little-endian, blocks back to
 * back, a row of `K` values = `K / block values` blocks):
 *
 * - **Q8_0**: blocks of 32 values in 34 bytes: an f16 scale `d`, then 32 int8 quants `q`;
 *   value `i` = `q[i] * d`. Blocks are only 2-byte aligned in a row.
 * - **Q5_0**: blocks of 32 values in 22 bytes: f16 `d`, 4 bytes `qh` (bit `i`: the fifth bit of
 *   value `i`), 16 bytes of low nibbles (byte `j`: value `j` low, value `j + 16` high); value =
 *   `(q - 16) * d`. llama-quantize's stand-in for Q4_K where rows are not whole 256-value blocks.
 * - **Q4_0**: blocks of 32 values in 18 bytes: f16 `d`, 16 bytes of nibbles (byte `j`: value `j`
 *   low, value `j + 16` high); value = `(q - 8) * d`. The older 4-bit format many hub files use.
 * - **Q4_K**, **Q5_K**, **Q6_K**: super-blocks of 256 values in 144, 176 and 210 bytes (4, 5 and 6
 *   bits a value plus scales; `k_quants.ts` describes them). Hub "Q4_K_M" files mix Q4_K with Q6_K
 *   (the output matrix, some `ffn_down` and `attn_v`), Q5_K (`attn_output` of 8-expert models) and
 *   Q5_0 / Q8_0 (in place of Q4_K / Q6_K for rows that are not whole super-blocks).
 *
 * The quantisers are llama.cpp's reference ones (`quantize_row_q8_0_ref`, `quantize_row_q5_0_ref`,
 * `quantize_row_q4_0_ref`, `quantize_row_q{4,5,6}_K_ref` with their least-squares searches),
 * reimplemented in single-precision arithmetic (every step rounded to f32, as the C code computes),
 * so they give the bytes `llama-quantize` writes without an importance matrix.
 *
 * @example
 * ```ts
 * import { dequantize, quantize } from "./quant.ts";
 * const x = Float32Array.from({ length: 256 }, (_, i) => Math.sin(i));
 * const q = quantize(x, "q4_k"); // 144 bytes
 * const y = dequantize(q, "q4_k");
 * console.log(q.byteLength, Math.max(...y.map((v, i) => Math.abs(v - x[i]))) < 0.1); // 144 true
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { dequantizeQ4K, dequantizeQ5K, dequantizeQ6K, f, getF16, putF16 } from "./k_quants.ts";
import { quantizeQ4KWasm, quantizeQ5KWasm, quantizeQ6KWasm } from "./k_quants_wasm.ts";

export { q4kScaleMin } from "./k_quants.ts";

/** A block-quantised format Pregate quantises to and computes with. */
export type QuantType = "q8_0" | "q5_0" | "q4_0" | "q4_k" | "q5_k" | "q6_k";

/** All supported quantised formats. */
export const QUANT_TYPES: readonly QuantType[] = ["q8_0", "q5_0", "q4_0", "q4_k", "q5_k", "q6_k"];

/** Values and bytes per block of a ggml type (1 value per "block" for plain types). */
export interface BlockSize {
  /** Values per block. */
  readonly values: number;
  /** Bytes per block. */
  readonly bytes: number;
}

/** Block sizes of the supported quantised formats. */
export const QUANT_BLOCK: Readonly<Record<QuantType, BlockSize>> = Object.freeze({
  q8_0: Object.freeze({ values: 32, bytes: 34 }),
  q5_0: Object.freeze({ values: 32, bytes: 22 }),
  q4_0: Object.freeze({ values: 32, bytes: 18 }),
  q4_k: Object.freeze({ values: 256, bytes: 144 }),
  q5_k: Object.freeze({ values: 256, bytes: 176 }),
  q6_k: Object.freeze({ values: 256, bytes: 210 }),
});

/** The ggml type name of each supported quantised format (as GGUF files and llama.cpp name them). */
export const QUANT_GGML_NAME: Readonly<Record<QuantType, string>> = Object.freeze({
  q8_0: "Q8_0",
  q5_0: "Q5_0",
  q4_0: "Q4_0",
  q4_k: "Q4_K",
  q5_k: "Q5_K",
  q6_k: "Q6_K",
});

/** A ggml tensor type: its GGUF id, name and block size. */
export interface GgmlType extends BlockSize {
  /** The id stored in GGUF tensor infos (`enum ggml_type`). */
  readonly id: number;
  /** The ggml name (`F32`, `Q4_K`, ...). */
  readonly name: string;
}

const QK = 256;
/**
 * Every ggml tensor type a GGUF file may hold (llama.cpp's `enum ggml_type` and block sizes), so a
 * file's sizes can be validated whatever its types; Pregate computes with F32, F16, BF16, Q8_0,
 * Q5_0, Q4_0, Q4_K, Q5_K and Q6_K.
 */
export const GGML_TYPES: readonly GgmlType[] = Object.freeze(
  ([
    [0, "F32", 1, 4],
    [1, "F16", 1, 2],
    [2, "Q4_0", 32, 18],
    [3, "Q4_1", 32, 20],
    [6, "Q5_0", 32, 22],
    [7, "Q5_1", 32, 24],
    [8, "Q8_0", 32, 34],
    [9, "Q8_1", 32, 40],
    [10, "Q2_K", QK, 4 + QK / 16 + QK / 4],
    [11, "Q3_K", QK, 2 + QK / 4 + QK / 8 + 12],
    [12, "Q4_K", QK, 4 + QK / 2 + 12],
    [13, "Q5_K", QK, 4 + QK / 2 + QK / 8 + 12],
    [14, "Q6_K", QK, 2 + QK / 2 + QK / 4 + QK / 16],
    [15, "Q8_K", QK, 4 + QK + QK / 8],
    [16, "IQ2_XXS", QK, 2 + QK / 4],
    [17, "IQ2_XS", QK, 2 + QK / 4 + QK / 32],
    [18, "IQ3_XXS", QK, 2 + QK / 4 + QK / 8],
    [19, "IQ1_S", QK, 2 + QK / 8 + QK / 16],
    [20, "IQ4_NL", 32, 18],
    [21, "IQ3_S", QK, 2 + QK / 4 + QK / 8 + QK / 32 + 4],
    [22, "IQ2_S", QK, 2 + QK / 4 + QK / 16],
    [23, "IQ4_XS", QK, 4 + QK / 2 + QK / 64],
    [24, "I8", 1, 1],
    [25, "I16", 1, 2],
    [26, "I32", 1, 4],
    [27, "I64", 1, 8],
    [28, "F64", 1, 8],
    [29, "IQ1_M", QK, QK / 8 + QK / 16 + QK / 32],
    [30, "BF16", 1, 2],
    [34, "TQ1_0", QK, 2 + 4 * 13],
    [35, "TQ2_0", QK, 2 + 64],
    [39, "MXFP4", 32, 17],
    [40, "NVFP4", 64, 36],
    [41, "Q1_0", 128, 18],
    [42, "Q2_0", 64, 18],
  ] as const).map(([id, name, values, bytes]) => Object.freeze({ id, name, values, bytes })),
);

const BY_ID = new Map(GGML_TYPES.map((t) => [t.id, t]));
const BY_NAME = new Map(GGML_TYPES.map((t) => [t.name, t]));

/** The ggml type of a GGUF type id, or `undefined` for an unknown id. */
export function ggmlTypeById(id: number): GgmlType | undefined {
  return BY_ID.get(id);
}

/** The ggml type of a name (`Q4_K`, case-insensitive), or `undefined` for an unknown name. */
export function ggmlTypeByName(name: string): GgmlType | undefined {
  return BY_NAME.get(name.toUpperCase());
}

/** Bytes of `count` values of a quantised format; `count` must be a whole number of blocks. */
export function quantizedBytes(count: number, type: QuantType): number {
  return blocksOf(count, type, "count") * QUANT_BLOCK[type].bytes;
}

function blocksOf(count: number, type: QuantType, argument: string): number {
  const b = QUANT_BLOCK[type];
  if (!b) {
    throw new ArgumentError("type", `unknown quantised format '${type}'`, `use ${QUANT_TYPES}`);
  }
  if (!Number.isSafeInteger(count) || count < 0 || count % b.values !== 0) {
    throw new ArgumentError(
      argument,
      `${type} stores blocks of ${b.values} values; got ${count} values`,
      `pad or choose rows whose length is a multiple of ${b.values}`,
    );
  }
  return count / b.values;
}

// --------------------------------------------------------------------------- f32 arithmetic

/** C's `roundf`: round half away from zero. */
function roundHalfAway(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

function checkFinite(values: ArrayLike<number>): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new ArgumentError(
        "values",
        `value ${i} is ${values[i]}; only finite values can be quantised`,
      );
    }
  }
}

/** The value of largest magnitude among `x[o .. o + 31]` (the first such; 0 for a zero block). */
function signedAbsMax32(x: Float32Array, o: number): number {
  let amax = 0, max = 0;
  for (let j = 0; j < 32; j++) {
    if (amax < Math.abs(x[o + j])) {
      amax = Math.abs(x[o + j]);
      max = x[o + j];
    }
  }
  return max;
}

// --------------------------------------------------------------------------- Q8_0

/** Quantises `nb` blocks of `x` to Q8_0 (`quantize_row_q8_0_ref`). */
function quantizeQ8_0(x: Float32Array, nb: number): Uint8Array {
  const out = new Uint8Array(nb * 34);
  for (let b = 0; b < nb; b++) {
    const o = b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[o + j]));
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    putF16(out, b * 34, d);
    for (let j = 0; j < 32; j++) out[b * 34 + 2 + j] = roundHalfAway(f(x[o + j] * id)) & 0xff;
  }
  return out;
}

function dequantizeQ8_0(bytes: Uint8Array, nb: number): Float32Array {
  const out = new Float32Array(nb * 32);
  for (let b = 0; b < nb; b++) {
    const p = b * 34;
    const d = getF16(bytes, p);
    for (let j = 0; j < 32; j++) out[b * 32 + j] = f(((bytes[p + 2 + j] << 24) >> 24) * d);
  }
  return out;
}

// --------------------------------------------------------------------------- Q4_0

/** Quantises `nb` blocks of `x` to Q4_0 (`quantize_row_q4_0_ref`). */
function quantizeQ4_0(x: Float32Array, nb: number): Uint8Array {
  const out = new Uint8Array(nb * 18);
  for (let b = 0; b < nb; b++) {
    const o = b * 32, p = b * 18;
    const d = f(signedAbsMax32(x, o) / -8);
    const id = d ? f(1 / d) : 0;
    putF16(out, p, d);
    for (let j = 0; j < 16; j++) {
      // (int8_t)(x * id + 8.5f): the sum is at least about 0.5, so truncation is floor.
      const q0 = Math.min(15, Math.trunc(f(f(x[o + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(f(f(x[o + 16 + j] * id) + 8.5)));
      out[p + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

function dequantizeQ4_0(bytes: Uint8Array, nb: number): Float32Array {
  const out = new Float32Array(nb * 32);
  for (let b = 0; b < nb; b++) {
    const p = b * 18;
    const d = getF16(bytes, p);
    for (let j = 0; j < 16; j++) {
      const q = bytes[p + 2 + j];
      out[b * 32 + j] = f(((q & 15) - 8) * d);
      out[b * 32 + 16 + j] = f(((q >> 4) - 8) * d);
    }
  }
  return out;
}

// --------------------------------------------------------------------------- Q5_0

/** Quantises `nb` blocks of `x` to Q5_0 (`quantize_row_q5_0_ref`). */
function quantizeQ5_0(x: Float32Array, nb: number): Uint8Array {
  const out = new Uint8Array(nb * 22);
  for (let b = 0; b < nb; b++) {
    const o = b * 32, p = b * 22;
    const d = f(signedAbsMax32(x, o) / -16);
    const id = d ? f(1 / d) : 0;
    putF16(out, p, d);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      // (int8_t)(x * id + 16.5f): the sum is at least about 0.5, so truncation is floor.
      const q0 = Math.min(31, Math.trunc(f(f(x[o + j] * id) + 16.5)));
      const q1 = Math.min(31, Math.trunc(f(f(x[o + 16 + j] * id) + 16.5)));
      out[p + 6 + j] = (q0 & 15) | ((q1 & 15) << 4);
      qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
    }
    new DataView(out.buffer, p + 2, 4).setUint32(0, qh >>> 0, true);
  }
  return out;
}

function dequantizeQ5_0(bytes: Uint8Array, nb: number): Float32Array {
  const out = new Float32Array(nb * 32);
  for (let b = 0; b < nb; b++) {
    const p = b * 22;
    const d = getF16(bytes, p);
    const qh = bytes[p + 2] | (bytes[p + 3] << 8) | (bytes[p + 4] << 16) | (bytes[p + 5] << 24);
    for (let j = 0; j < 16; j++) {
      const q = bytes[p + 6 + j];
      out[b * 32 + j] = f((((q & 15) | (((qh >>> j) & 1) << 4)) - 16) * d);
      out[b * 32 + 16 + j] = f((((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16) * d);
    }
  }
  return out;
}

// --------------------------------------------------------------------------- public API

const QUANTIZERS: Readonly<Record<QuantType, (x: Float32Array, nb: number) => Uint8Array>> = {
  q8_0: quantizeQ8_0,
  q5_0: quantizeQ5_0,
  q4_0: quantizeQ4_0,
  // The WebAssembly builds of k_quants.ts's quantizeQ4K / Q5K / Q6K (same bytes, faster).
  q4_k: quantizeQ4KWasm,
  q5_k: quantizeQ5KWasm,
  q6_k: quantizeQ6KWasm,
};

const DEQUANTIZERS: Readonly<Record<QuantType, (b: Uint8Array, nb: number) => Float32Array>> = {
  q8_0: dequantizeQ8_0,
  q5_0: dequantizeQ5_0,
  q4_0: dequantizeQ4_0,
  q4_k: dequantizeQ4K,
  q5_k: dequantizeQ5K,
  q6_k: dequantizeQ6K,
};

/**
 * Quantises `values` (a whole number of blocks: a multiple of 32 for `q8_0`, 256 for the K types)
 * with llama.cpp's reference quantiser, returning the blocks as stored in a GGUF file. A matrix is
 * quantised row by row, which for rows of whole blocks is the same as quantising it flat.
 *
 * @throws {ArgumentError} for an unknown type, a count that is not a whole number of blocks, or a
 *   non-finite value (naming its index).
 * @example
 * ```ts
 * import { quantize } from "./quant.ts";
 * const q = quantize(new Float32Array(32).fill(1), "q8_0");
 * console.log(q.byteLength, q[2]); // 34 127
 * ```
 */
export function quantize(values: ArrayLike<number>, type: QuantType): Uint8Array {
  blocksOf(values.length, type, "values");
  checkFinite(values);
  const x = values instanceof Float32Array ? values : Float32Array.from(values);
  return QUANTIZERS[type](x, blocksOf(x.length, type, "values"));
}

/**
 * Decodes quantised blocks to f32 (llama.cpp's `dequantize_row_q8_0` / `dequantize_row_q4_K` / ...,
 * with f32 arithmetic): `count` values (default: every whole block in `bytes`).
 *
 * @throws {ArgumentError} for an unknown type, or `count` not a whole number of blocks or more than
 *   `bytes` holds.
 * @example
 * ```ts
 * import { dequantize, quantize } from "./quant.ts";
 * console.log(dequantize(quantize(new Float32Array(32).fill(0.5), "q8_0"), "q8_0")[0]); // 0.5
 * ```
 */
export function dequantize(bytes: Uint8Array, type: QuantType, count?: number): Float32Array {
  const block = QUANT_BLOCK[type];
  if (!block) blocksOf(0, type, "type");
  const n = count ?? Math.floor(bytes.byteLength / block.bytes) * block.values;
  const nb = blocksOf(n, type, "count");
  if (nb * block.bytes > bytes.byteLength) {
    throw new ArgumentError(
      "bytes",
      `${n} ${type} values need ${nb * block.bytes} bytes, got ${bytes.byteLength}`,
    );
  }
  return DEQUANTIZERS[type](bytes, nb);
}

/**
 * Parses a quantised format name (`q8_0`, `Q4_K`, ...), throwing an error naming `argument`
 * otherwise.
 */
export function parseQuantType(name: string, argument = "type"): QuantType {
  const t = String(name).toLowerCase();
  if ((QUANT_TYPES as readonly string[]).includes(t)) return t as QuantType;
  throw new ArgumentError(
    argument,
    `unsupported quantised format '${name}'`,
    `use one of ${QUANT_TYPES.join(", ")}`,
  );
}
