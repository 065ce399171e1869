/**
 * Scanning checkpoint tensors for NaN and infinite values on the CPU (`pregate inspect --check`):
 * a NaN or an infinity in a weight makes a model's answers wrong, and where it sits decides which
 * prompts it corrupts (one expert corrupts only the tokens routed to it), so the scan names every
 * tensor that holds one. F32, F16 and BF16 are tested on their bit patterns (exponent all ones),
 * a few GB/s on one core.
 *
 * @example
 * ```ts ignore
 * import { openCheckpoint } from "./safetensors.ts";
 * import { scanNonFinite } from "./finite.ts";
 * const store = openCheckpoint("models/tiny-mixtral");
 * for (const t of scanNonFinite(store)) console.log(t.tensor, t.nan, t.inf, t.firstIndex);
 * store.close();
 * ```
 * @module
 */
import type { DType } from "../base/dtype.ts";
import { dequantize } from "./quant.ts";
import { isQuantType, type WeightType } from "./weight_type.ts";
import type { TensorStore } from "./safetensors.ts";

/**
 * A tensor holding NaN or infinite values.
 *
 * @example
 * ```ts
 * import type { NonFiniteTensor } from "./finite.ts";
 * const t: NonFiniteTensor = {
 *   tensor: "lm_head.weight", file: "m/model.safetensors", dtype: "f32", nan: 1, inf: 0,
 *   firstIndex: 337,
 * };
 * console.log(t.nan + t.inf);
 * ```
 */
export interface NonFiniteTensor {
  /** The tensor's name. */
  tensor: string;
  /** The file holding it. */
  file: string;
  /** Its weight type. */
  dtype: WeightType;
  /** How many elements are NaN. */
  nan: number;
  /** How many elements are +Infinity or -Infinity. */
  inf: number;
  /** The row-major index of the first non-finite element. */
  firstIndex: number;
}

/** Per dtype: the exponent mask (all ones = Inf or NaN) and the mantissa mask of one element. */
const BITS: Record<DType, { exponent: number; mantissa: number }> = {
  f32: { exponent: 0x7f800000, mantissa: 0x007fffff },
  f16: { exponent: 0x7c00, mantissa: 0x03ff },
  bf16: { exponent: 0x7f80, mantissa: 0x007f },
};

/**
 * Counts the NaN and infinite elements of `bytes` holding `dtype` values (little-endian), and
 * finds the first one (`-1` when every element is finite).
 *
 * @example
 * ```ts
 * import { countNonFinite } from "./finite.ts";
 * const r = countNonFinite(new Uint8Array(new Float32Array([1, NaN, -Infinity]).buffer), "f32");
 * console.log(r); // { nan: 1, inf: 1, firstIndex: 1 }
 * ```
 */
export function countNonFinite(
  bytes: Uint8Array,
  dtype: DType,
): { nan: number; inf: number; firstIndex: number } {
  const size = dtype === "f32" ? 4 : 2;
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const n = Math.floor(aligned.byteLength / size);
  const words = size === 4
    ? new Uint32Array(aligned.buffer, aligned.byteOffset, n)
    : new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  const { exponent, mantissa } = BITS[dtype];
  let nan = 0, inf = 0, firstIndex = -1;
  for (let i = 0; i < n; i++) {
    const w = words[i];
    if ((w & exponent) !== exponent) continue;
    if (firstIndex < 0) firstIndex = i;
    if (w & mantissa) nan++;
    else inf++;
  }
  return { nan, inf, firstIndex };
}

/**
 * Scans the named tensors of `store` (default: every tensor of a supported dtype) and returns those
 * that hold a NaN or an infinity, in the order scanned. Tensors of unsupported dtypes are skipped.
 * `onProgress(done, total)` is called with bytes scanned after each tensor.
 *
 * @example
 * ```ts ignore
 * const bad = scanNonFinite(store, ["lm_head.weight"]);
 * if (bad.length) console.log(`${bad[0].tensor}: ${bad[0].nan} NaN`);
 * ```
 */
export function scanNonFinite(
  store: TensorStore,
  names?: readonly string[],
  onProgress?: (done: number, total: number) => void,
): NonFiniteTensor[] {
  const list = (names ?? store.names()).filter((n) => store.describe(n).dtype !== null);
  const total = list.reduce((a, n) => a + store.describe(n).byteLength, 0);
  const out: NonFiniteTensor[] = [];
  let done = 0;
  for (const name of list) {
    const t = store.get(name);
    // Block-quantised tensors are scanned as their values (a NaN scale spoils a whole block).
    const r = isQuantType(t.dtype)
      ? countNonFinite(new Uint8Array(dequantize(t.bytes(), t.dtype, t.elements).buffer), "f32")
      : countNonFinite(t.bytes(), t.dtype);
    if (r.firstIndex >= 0) out.push({ tensor: name, file: t.file, dtype: t.dtype, ...r });
    done += t.byteLength;
    onProgress?.(done, total);
  }
  return out;
}
