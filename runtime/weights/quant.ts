/**
 * ggml tensor types and the two block-quantised formats Pregate computes with, Q8_0 and Q4_K, in
 * exactly llama.cpp's layouts as stored in GGUF files (little-endian, blocks back to back, a row of
 * `K` values = `K / block values` blocks):
 *
 * - **Q8_0**: blocks of 32 values in 34 bytes: an f16 scale `d`, then 32 int8 quants `q`;
 *   value `i` = `q[i] * d`. Blocks are only 2-byte aligned in a row.
 * - **Q4_K**: super-blocks of 256 values in 144 bytes: f16 `d`, f16 `dmin`, 12 bytes packing eight
 *   6-bit scales `sc[j]` and eight 6-bit mins `m[j]` (one per 32-value sub-block `j`), then 128
 *   bytes of 4-bit quants; value `32 j + l` = `d * sc[j] * q - dmin * m[j]`, where the 32 bytes
 *   `32 p .. 32 p + 31` hold sub-block `2 p` in their low nibbles and sub-block `2 p + 1` in their
 *   high nibbles.
 *
 * The quantisers are llama.cpp's reference ones (`quantize_row_q8_0_ref`, and
 * `quantize_row_q4_K_ref` with its weighted least-squares search `make_qkx2_quants`), reimplemented
 * here in single-precision arithmetic (every step rounded to f32, as the C code computes), so they
 * give the bytes `llama-quantize` writes without an importance matrix.
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
import { f16BitsToF32, f32ToF16Bits } from "../base/dtype.ts";

/** A block-quantised format Pregate quantises to and computes with. */
export type QuantType = "q8_0" | "q4_k";

/** All supported quantised formats. */
export const QUANT_TYPES: readonly QuantType[] = ["q8_0", "q4_k"];

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
  q4_k: Object.freeze({ values: 256, bytes: 144 }),
});

/** The ggml type name of each supported quantised format (as GGUF files and llama.cpp name them). */
export const QUANT_GGML_NAME: Readonly<Record<QuantType, string>> = Object.freeze({
  q8_0: "Q8_0",
  q4_k: "Q4_K",
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
 * file's sizes can be validated whatever its types; Pregate computes with F32, F16, BF16, Q8_0 and
 * Q4_K.
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

const f = Math.fround;
const nearestF32 = new Float32Array(1);
const nearestU32 = new Uint32Array(nearestF32.buffer);

/** ggml's `nearest_int`: round to nearest, ties to even, by the 1.5 * 2^23 trick in f32. */
function nearestInt(v: number): number {
  nearestF32[0] = v + 12582912;
  return (nearestU32[0] & 0x7fffff) - 0x400000;
}

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

// --------------------------------------------------------------------------- Q8_0

/** Quantises `x` (a multiple of 32 values) to Q8_0 blocks (`quantize_row_q8_0_ref`). */
function quantizeQ8_0(x: Float32Array): Uint8Array {
  const nb = blocksOf(x.length, "q8_0", "values");
  const out = new Uint8Array(nb * 34);
  for (let b = 0; b < nb; b++) {
    const o = b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[o + j]));
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    const h = f32ToF16Bits(d);
    out[b * 34] = h & 0xff;
    out[b * 34 + 1] = h >>> 8;
    for (let j = 0; j < 32; j++) out[b * 34 + 2 + j] = roundHalfAway(f(x[o + j] * id)) & 0xff;
  }
  return out;
}

function dequantizeQ8_0(bytes: Uint8Array, nb: number): Float32Array {
  const out = new Float32Array(nb * 32);
  for (let b = 0; b < nb; b++) {
    const p = b * 34;
    const d = f16BitsToF32(bytes[p] | (bytes[p + 1] << 8));
    for (let j = 0; j < 32; j++) out[b * 32 + j] = f(((bytes[p + 2 + j] << 24) >> 24) * d);
  }
  return out;
}

// --------------------------------------------------------------------------- Q4_K

/**
 * ggml's `make_qkx2_quants` for one sub-block of `n` values at `x[o..]` (squared error, no MAD):
 * the scale and (negated) min of an asymmetric `nmax`-level grid fitted by weighted least squares
 * over `nstep + 1` trial scales; the chosen levels go to `L[lo..]`. Returns `[scale, -min]`.
 */
function makeQkx2(
  n: number,
  nmax: number,
  x: Float32Array,
  o: number,
  w: Float32Array,
  L: Uint8Array,
  lo: number,
  laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
): [number, number] {
  let min = x[o], max = x[o];
  let sumW = w[0];
  let sumX = f(sumW * x[o]);
  for (let i = 1; i < n; i++) {
    const v = x[o + i];
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = f(sumW + w[i]);
    sumX = f(sumX + f(w[i] * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    return [0, -min];
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let best = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(x[o + i] - min)))));
    L[lo + i] = l;
    const diff = f(f(f(scale * l) + min) - x[o + i]);
    best = f(best + f(w[i] * f(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    // min (and with it the range) is the best fit so far, as in ggml.
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(x[o + i] - min)))));
      laux[i] = l;
      const wl = f(w[i] * l);
      sumL = f(sumL + wl);
      sumL2 = f(sumL2 + f(wl * l));
      sumXL = f(sumXL + f(wl * x[o + i]));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (!(D > 0)) continue;
    let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
    let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
    if (thisMin > 0) {
      thisMin = 0;
      thisScale = f(sumXL / sumL2);
    }
    let cur = 0;
    for (let i = 0; i < n; i++) {
      const diff = f(f(f(thisScale * laux[i]) + thisMin) - x[o + i]);
      cur = f(cur + f(w[i] * f(diff * diff)));
    }
    if (cur < best) {
      for (let i = 0; i < n; i++) L[lo + i] = laux[i];
      best = cur;
      scale = thisScale;
      min = thisMin;
    }
  }
  return [scale, -min];
}

/**
 * Sub-block `j`'s 6-bit scale and min from a Q4_K block's 12 scale bytes at `s[o..]` (ggml's
 * `get_scale_min_k4`): sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins);
 * sub-blocks 4-7 in the nibbles of bytes 8-11 with their top two bits in the high bits of bytes 0-7.
 */
export function q4kScaleMin(s: Uint8Array, o: number, j: number): [number, number] {
  if (j < 4) return [s[o + j] & 63, s[o + j + 4] & 63];
  return [
    (s[o + j + 4] & 0xf) | ((s[o + j - 4] >> 6) << 4),
    (s[o + j + 4] >> 4) | ((s[o + j] >> 6) << 4),
  ];
}

const RDELTA = f(0.1);

/** Quantises `x` (a multiple of 256 values) to Q4_K super-blocks (`quantize_row_q4_K_ref`). */
function quantizeQ4K(x: Float32Array): Uint8Array {
  const nb = blocksOf(x.length, "q4_k", "values");
  const out = new Uint8Array(nb * 144);
  const L = new Uint8Array(256), laux = new Uint8Array(32), w = new Float32Array(32);
  const scales = new Float32Array(8), mins = new Float32Array(8);
  for (let b = 0; b < nb; b++) {
    const xo = b * 256, p = b * 144;
    let maxScale = 0, maxMin = 0;
    for (let j = 0; j < 8; j++) {
      const o = xo + 32 * j;
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(x[o + l] * x[o + l]));
      const avX = f(Math.sqrt(f(sumX2 / 32)));
      for (let l = 0; l < 32; l++) w[l] = f(avX + Math.abs(x[o + l]));
      const [scale, min] = makeQkx2(32, 15, x, o, w, L, 32 * j, laux, -1, RDELTA, 20);
      scales[j] = scale;
      mins[j] = min;
      if (scale > maxScale) maxScale = scale;
      if (min > maxMin) maxMin = min;
    }
    const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
    const s = out.subarray(p + 4, p + 16);
    for (let j = 0; j < 8; j++) {
      const ls = Math.min(63, nearestInt(f(invScale * scales[j])) & 0xff);
      const lm = Math.min(63, nearestInt(f(invMin * mins[j])) & 0xff);
      if (j < 4) {
        s[j] = ls;
        s[j + 4] = lm;
      } else {
        s[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        s[j - 4] |= (ls >> 4) << 6;
        s[j] |= (lm >> 4) << 6;
      }
    }
    const dBits = f32ToF16Bits(f(maxScale / 63));
    const mBits = f32ToF16Bits(f(maxMin / 63));
    out[p] = dBits & 0xff;
    out[p + 1] = dBits >>> 8;
    out[p + 2] = mBits & 0xff;
    out[p + 3] = mBits >>> 8;
    const dAll = f16BitsToF32(dBits), mAll = f16BitsToF32(mBits);
    for (let j = 0; j < 8; j++) {
      const [sc, m] = q4kScaleMin(s, 0, j);
      const d = f(dAll * sc);
      if (!d) continue;
      const dm = f(mAll * m);
      for (let i = 0; i < 32; i++) {
        const l = nearestInt(f(f(x[xo + 32 * j + i] + dm) / d));
        L[32 * j + i] = Math.max(0, Math.min(15, l));
      }
    }
    for (let q = 0; q < 4; q++) {
      for (let l = 0; l < 32; l++) {
        out[p + 16 + 32 * q + l] = L[64 * q + l] | (L[64 * q + 32 + l] << 4);
      }
    }
  }
  return out;
}

function dequantizeQ4K(bytes: Uint8Array, nb: number): Float32Array {
  const out = new Float32Array(nb * 256);
  for (let b = 0; b < nb; b++) {
    const p = b * 144;
    const d = f16BitsToF32(bytes[p] | (bytes[p + 1] << 8));
    const dmin = f16BitsToF32(bytes[p + 2] | (bytes[p + 3] << 8));
    for (let j = 0; j < 8; j++) {
      const [sc, m] = q4kScaleMin(bytes, p + 4, j);
      const d1 = f(d * sc), m1 = f(dmin * m);
      const q = p + 16 + 32 * (j >> 1), shift = (j & 1) * 4;
      for (let l = 0; l < 32; l++) {
        out[b * 256 + 32 * j + l] = f(f(d1 * ((bytes[q + l] >> shift) & 0xf)) - m1);
      }
    }
  }
  return out;
}

// --------------------------------------------------------------------------- public API

/**
 * Quantises `values` (a whole number of blocks: a multiple of 32 for `q8_0`, 256 for `q4_k`) with
 * llama.cpp's reference quantiser, returning the blocks as stored in a GGUF file. A matrix is
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
  return type === "q8_0" ? quantizeQ8_0(x) : quantizeQ4K(x);
}

/**
 * Decodes quantised blocks to f32 (llama.cpp's `dequantize_row_q8_0` / `dequantize_row_q4_K`,
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
  return type === "q8_0" ? dequantizeQ8_0(bytes, nb) : dequantizeQ4K(bytes, nb);
}

/**
 * Parses a quantised format name (`q8_0`, `Q4_K`, ...), throwing an error naming `argument`
 * otherwise.
 */
export function parseQuantType(name: string, argument = "type"): QuantType {
  const t = String(name).toLowerCase();
  if (t === "q8_0" || t === "q4_k") return t;
  throw new ArgumentError(argument, `unsupported quantised format '${name}'`, `use q8_0 or q4_k`);
}
