/**
 * Weight types: what a weight matrix can be stored as on the GPU and in a file. A plain
 * {@linkcode DType} (f32, f16, bf16: `dtype.ts`) or a block-quantised {@linkcode QuantType} (Q8_0,
 * Q5_0, Q4_0, Q4_K, Q5_K, Q6_K in llama.cpp's layouts: `quant.ts`). The kernels read every one of them as
 * stored (`kernels/dtype.wgsl`, `kernels/quant.wgsl`), so a matrix's bytes on the GPU are its bytes
 * in the file.
 *
 * @example
 * ```ts
 * import { isQuantType, weightRowBytes } from "./weight_type.ts";
 * console.log(weightRowBytes(256, "bf16"), weightRowBytes(256, "q4_k"), isQuantType("q8_0")); // 512 144 true
 * ```
 * @module
 */
import { ArgumentError } from "../base/errors.ts";
import { type DType, DTYPE_BYTES, DTYPES, halfWordsToF32 } from "../base/dtype.ts";
import { dequantize, QUANT_BLOCK, QUANT_TYPES, type QuantType } from "./quant.ts";

/** A weight type the kernels read: a plain dtype or a block-quantised format. */
export type WeightType = DType | QuantType;

/** Every {@linkcode WeightType}. */
export const WEIGHT_TYPES: readonly WeightType[] = [...DTYPES, ...QUANT_TYPES];

/**
 * Whether a weight type is block-quantised.
 *
 * @example
 * ```ts
 * import { isQuantType } from "./weight_type.ts";
 * console.log(isQuantType("q4_k"), isQuantType("bf16")); // true false
 * ```
 */
export function isQuantType(t: WeightType): t is QuantType {
  return Object.hasOwn(QUANT_BLOCK, t);
}

/**
 * Bytes of a row of `K` weights of type `t` (whole blocks for the quantised types).
 *
 * @example
 * ```ts
 * import { weightRowBytes } from "./weight_type.ts";
 * console.log(weightRowBytes(64, "q8_0")); // 68
 * ```
 */
export function weightRowBytes(K: number, t: WeightType): number {
  if (isQuantType(t)) return (K / QUANT_BLOCK[t].values) * QUANT_BLOCK[t].bytes;
  return K * DTYPE_BYTES[t];
}

/**
 * Values per block of `t` (1 for the plain dtypes): a row's length must be a multiple of it.
 *
 * @example
 * ```ts
 * import { weightBlockValues } from "./weight_type.ts";
 * console.log(weightBlockValues("q4_k"), weightBlockValues("f16")); // 256 1
 * ```
 */
export function weightBlockValues(t: WeightType): number {
  return isQuantType(t) ? QUANT_BLOCK[t].values : 1;
}

/**
 * Parses a weight type name (`f16`, `BF16`, `q8_0`, `Q4_K`, ...), throwing an
 * {@linkcode ArgumentError} naming `argument` otherwise.
 *
 * @example
 * ```ts
 * import { parseWeightType } from "./weight_type.ts";
 * console.log(parseWeightType("Q4_K")); // q4_k
 * ```
 */
export function parseWeightType(name: string, argument = "type"): WeightType {
  const t = String(name).toLowerCase();
  if ((WEIGHT_TYPES as readonly string[]).includes(t)) return t as WeightType;
  throw new ArgumentError(
    argument,
    `unsupported weight type '${name}'`,
    `use one of ${WEIGHT_TYPES.join(", ")}`,
  );
}

/**
 * `n` weights of type `t` stored in `bytes` (as a file holds them), as a new Float32Array.
 *
 * @example
 * ```ts
 * import { weightsToF32 } from "./weight_type.ts";
 * console.log(weightsToF32(new Uint8Array([0x80, 0x3f, 0, 0xc0]), "bf16", 2)); // Float32Array [1, -2]
 * ```
 */
export function weightsToF32(bytes: Uint8Array, t: WeightType, n: number): Float32Array {
  if (isQuantType(t)) return dequantize(bytes, t, n);
  const b = bytes.byteOffset % DTYPE_BYTES[t] === 0 ? bytes : bytes.slice();
  if (t === "f32") return new Float32Array(b.buffer, b.byteOffset, n).slice();
  return halfWordsToF32(new Uint16Array(b.buffer, b.byteOffset, n), t);
}
