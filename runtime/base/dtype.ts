/**
 * Weight dtypes and conversions. On the GPU, weights of every dtype are stored packed in `u32` words
 * and unpacked in the kernel (f16: `unpack2x16float`, bf16: the high half of an f32), so no optional
 * WebGPU feature is needed. Two 16-bit values share a word, the lower-addressed one in the low half,
 * which is exactly the byte layout of a little-endian safetensors file: files upload unchanged.
 *
 * @example
 * ```ts
 * import { packWeights, unpackWeights } from "./dtype.ts";
 * const words = packWeights(new Float32Array([1, -2.5]), "bf16");
 * console.log(words.length, unpackWeights(words, "bf16", 2)); // 1 Float32Array [1, -2.5]
 * ```
 * @module
 */
import { ArgumentError } from "./errors.ts";

/** A weight dtype Pregate computes with. */
export type DType = "f32" | "f16" | "bf16";

/** All supported dtypes. */
export const DTYPES: readonly DType[] = ["f32", "f16", "bf16"];

/** The `WDTYPE` override value kernels specialise on. */
export const DTYPE_CODE: Readonly<Record<DType, number>> = { f32: 0, f16: 1, bf16: 2 };

/** Bytes per element. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { f32: 4, f16: 2, bf16: 2 };

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** Rounds an f32 to IEEE half precision (round to nearest even), returning its 16 bits. */
export function f32ToF16Bits(value: number): number {
  f32buf[0] = value;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> 0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half; // a carry into the exponent is the correct rounding (up to inf)
}

/** Converts IEEE half bits to a number. */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Rounds an f32 to bfloat16 (round to nearest even), returning its 16 bits. */
export function f32ToBf16Bits(value: number): number {
  f32buf[0] = value;
  const x = u32buf[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40; // nan
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}

/** Converts bfloat16 bits to a number. */
export function bf16BitsToF32(b: number): number {
  u32buf[0] = (b & 0xffff) << 16;
  return f32buf[0];
}

/**
 * The values of 16-bit words of `dtype` as f32 (bf16 is the top half of an f32: widened by a shift).
 *
 * @example
 * ```ts
 * import { halfWordsToF32 } from "./dtype.ts";
 * console.log(halfWordsToF32(new Uint16Array([0x3f80, 0xc000]), "bf16")); // Float32Array [1, -2]
 * ```
 */
export function halfWordsToF32(words: Uint16Array, dtype: "f16" | "bf16"): Float32Array {
  const out = new Float32Array(words.length);
  if (dtype === "bf16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < words.length; i++) bits[i] = words[i] << 16;
  } else {
    for (let i = 0; i < words.length; i++) out[i] = f16BitsToF32(words[i]);
  }
  return out;
}

/**
 * Packs f32 values into u32 words of `dtype` (16-bit dtypes: two per word, low half first; an odd
 * count leaves the last high half zero).
 */
export function packWeights(values: ArrayLike<number>, dtype: DType): Uint32Array {
  if (dtype === "f32") return new Uint32Array(Float32Array.from(values).buffer);
  const conv = dtype === "f16" ? f32ToF16Bits : f32ToBf16Bits;
  const out = new Uint32Array(Math.ceil(values.length / 2));
  for (let i = 0; i < values.length; i++) {
    out[i >> 1] |= conv(values[i]) << ((i & 1) * 16);
  }
  return out;
}

/** Unpacks `count` values of `dtype` from u32 words (the inverse of {@linkcode packWeights}). */
export function unpackWeights(words: Uint32Array, dtype: DType, count: number): Float32Array {
  if (dtype === "f32") return new Float32Array(words.buffer, words.byteOffset, count).slice();
  const conv = dtype === "f16" ? f16BitsToF32 : bf16BitsToF32;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = conv((words[i >> 1] >>> ((i & 1) * 16)) & 0xffff);
  return out;
}

/** Rounds f32 values through `dtype` and back (what the GPU will see after packing). */
export function roundTo(values: Float32Array, dtype: DType): Float32Array {
  return unpackWeights(packWeights(values, dtype), dtype, values.length);
}

/** Parses a dtype name, throwing a clear error naming `argument` otherwise. */
export function parseDType(name: string, argument = "dtype"): DType {
  const d = name.toLowerCase();
  if (d === "f32" || d === "f16" || d === "bf16") return d;
  throw new ArgumentError(
    argument,
    `unsupported dtype '${name}'`,
    `use one of ${DTYPES.join(", ")}`,
  );
}
