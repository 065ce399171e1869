/**
 * llama.cpp's "K" super-block formats (256 values a super-block, `QK_K`), as stored in GGUF files:
 * their reference quantisers (`quantize_row_q{4,5,6}_K_ref`, what `llama-quantize` writes without
 * an importance matrix) and dequantisers, in single-precision arithmetic (every step rounded to
 * f32, as the C code computes), so the bytes are ggml's. `quant.ts` is the public face of these;
 * it quantises with their WebAssembly builds (`k_quants_wasm.ts`, the same bytes, faster), for which
 * the quantisers here are the reference.
 *
 * - **Q4_K** (144 bytes): f16 `d`, f16 `dmin`, 12 bytes packing eight 6-bit scales `sc[j]` and mins
 *   `m[j]` (one per 32-value sub-block), 128 bytes of 4-bit quants (bytes `32 c .. 32 c + 31` hold
 *   sub-block `2 c` in their low nibbles, `2 c + 1` in their high ones); value `32 j + l` =
 *   `d * sc[j] * q - dmin * m[j]`.
 * - **Q5_K** (176 bytes): Q4_K's header, then 32 bytes `qh` (bit `j` of `qh[l]`: the fifth bit of
 *   value `32 j + l`), then Q4_K's 128 bytes of low nibbles; `q` runs 0 .. 31.
 * - **Q6_K** (210 bytes, so only 2-byte aligned in a row): 128 bytes `ql` (low 4 bits), 64 bytes
 *   `qh` (high 2 bits), sixteen int8 scales (one per 16 values), f16 `d` last. Value
 *   `128 h + 32 g + l` (half `h`, `g` 0 .. 3, `l` 0 .. 31) has its low bits in nibble `g >> 1` of
 *   `ql[64 h + 32 (g & 1) + l]` and its high bits at bit `2 g` of `qh[32 h + l]`; value =
 *   `d * sc[8 h + 2 g + l / 16] * (q - 32)`.
 *
 * @example
 * ```ts
 * import { dequantizeQ6K, quantizeQ6K } from "./k_quants.ts";
 * const x = Float32Array.from({ length: 256 }, (_, i) => Math.cos(i));
 * const y = dequantizeQ6K(quantizeQ6K(x, 1), 1);
 * console.log(Math.max(...y.map((v, i) => Math.abs(v - x[i]))) < 0.05); // true
 * ```
 * @module
 */
import { f16BitsToF32, f32ToF16Bits } from "../base/dtype.ts";

/** Values per super-block. */
const QK = 256;

/** Rounds to f32 (every step of ggml's float arithmetic). */
export const f = Math.fround;
const nearestF32 = new Float32Array(1);
const nearestU32 = new Uint32Array(nearestF32.buffer);

/** ggml's `nearest_int`: round to nearest, ties to even, by the 1.5 * 2^23 trick in f32. */
export function nearestInt(v: number): number {
  nearestF32[0] = v + 12582912;
  return (nearestU32[0] & 0x7fffff) - 0x400000;
}

/** Writes the f16 of `v` at `out[p]` (little-endian); returns the f16's value. */
export function putF16(out: Uint8Array, p: number, v: number): number {
  const h = f32ToF16Bits(v);
  out[p] = h & 0xff;
  out[p + 1] = h >>> 8;
  return f16BitsToF32(h);
}

/** The little-endian f16 at `b[p]`, as a number. */
export function getF16(b: Uint8Array, p: number): number {
  return f16BitsToF32(b[p] | (b[p + 1] << 8));
}

// --------------------------------------------------------------------------- Q4_K and Q5_K

/**
 * ggml's `make_qkx2_quants` for one sub-block of `n` values at `x[o..]` (squared error, no MAD):
 * the scale and (negated) min of an asymmetric `nmax`-level grid fitted by weighted least squares
 * over `nstep + 1` trial scales; the chosen levels go to `L[lo..]`, the scale and negated min to
 * `QKX_OUT[0]` and `QKX_OUT[1]`.
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
): void {
  const xm = XM;
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
    QKX_OUT[0] = 0;
    QKX_OUT[1] = -min;
    return;
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let best = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[o + i], d = f(xi - min);
    xm[i] = d;
    let l = nearestInt(f(iscale * d));
    l = l < 0 ? 0 : l > nmax ? nmax : l;
    L[lo + i] = l;
    const diff = f(f(f(scale * l) + min) - xi);
    best = f(best + f(w[i] * f(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    // min (and with it the range and x - min) is the best fit so far, as in ggml.
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let changed = is === 0;
    for (let i = 0; i < n; i++) {
      let l = nearestInt(f(iscale * xm[i]));
      l = l < 0 ? 0 : l > nmax ? nmax : l;
      if (laux[i] !== l) {
        laux[i] = l;
        changed = true;
      }
    }
    // The previous trial's levels give its sums, fit and error again: no better than the best.
    if (!changed) continue;
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = laux[i];
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
      if (thisMin !== min) {
        min = thisMin;
        for (let i = 0; i < n; i++) xm[i] = f(x[o + i] - min);
      }
    }
  }
  QKX_OUT[0] = scale;
  QKX_OUT[1] = -min;
}

/**
 * Sub-block `j`'s 6-bit scale and min from a Q4_K / Q5_K block's 12 scale bytes at `s[o..]`
 * (ggml's `get_scale_min_k4`): sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7
 * (mins); sub-blocks 4-7 in the nibbles of bytes 8-11 with their top two bits in the high bits of
 * bytes 0-7.
 */
export function q4kScaleMin(s: Uint8Array, o: number, j: number): [number, number] {
  if (j < 4) return [s[o + j] & 63, s[o + j + 4] & 63];
  return [
    (s[o + j + 4] & 0xf) | ((s[o + j - 4] >> 6) << 4),
    (s[o + j + 4] >> 4) | ((s[o + j] >> 6) << 4),
  ];
}

const RDELTA = f(0.1);
// Scratch of fitScaleMin (one module instance per thread).
const LAUX = new Uint8Array(32), WEIGHTS = new Float32Array(32), XM = new Float32Array(32);
/** makeQkx2's result: the scale and the negated min. */
const QKX_OUT = new Float64Array(2);
const SCALES = new Float32Array(8), MINS = new Float32Array(8);

/** The search parameters of `make_qkx2_quants` per format: levels, rmin, steps. */
const QKX = { q4_k: [15, -1, 20], q5_k: [31, -0.5, 15] } as const;

/**
 * Fits the super-block at `x[xo..]` (Q4_K or Q5_K): writes `d`, `dmin` and the 12 scale bytes at
 * `out[p..]` and the final level of each value to `L` (ggml's `quantize_row_q{4,5}_K_ref` up to the
 * packing).
 */
function fitScaleMin(
  x: Float32Array,
  xo: number,
  kind: "q4_k" | "q5_k",
  out: Uint8Array,
  p: number,
  L: Uint8Array,
): void {
  const [nmax, rmin, nstep] = QKX[kind];
  const laux = LAUX, w = WEIGHTS, scales = SCALES, mins = MINS;
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const o = xo + 32 * j;
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(x[o + l] * x[o + l]));
    const avX = f(Math.sqrt(f(sumX2 / 32)));
    for (let l = 0; l < 32; l++) w[l] = f(avX + Math.abs(x[o + l]));
    makeQkx2(32, nmax, x, o, w, L, 32 * j, laux, rmin, RDELTA, nstep);
    const scale = QKX_OUT[0], min = QKX_OUT[1];
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
  const dAll = putF16(out, p, f(maxScale / 63));
  const mAll = putF16(out, p + 2, f(maxMin / 63));
  for (let j = 0; j < 8; j++) {
    const [sc, m] = q4kScaleMin(s, 0, j);
    const d = f(dAll * sc);
    if (!d) continue;
    const dm = f(mAll * m);
    for (let i = 0; i < 32; i++) {
      const l = nearestInt(f(f(x[xo + 32 * j + i] + dm) / d));
      L[32 * j + i] = Math.max(0, Math.min(nmax, l));
    }
  }
}

/** Quantises `nb` super-blocks of `x` to Q4_K (`quantize_row_q4_K_ref`). */
export function quantizeQ4K(x: Float32Array, nb: number): Uint8Array {
  const out = new Uint8Array(nb * 144);
  const L = new Uint8Array(QK);
  for (let b = 0; b < nb; b++) {
    const p = b * 144;
    fitScaleMin(x, b * QK, "q4_k", out, p, L);
    for (let q = 0; q < 4; q++) {
      for (let l = 0; l < 32; l++) {
        out[p + 16 + 32 * q + l] = L[64 * q + l] | (L[64 * q + 32 + l] << 4);
      }
    }
  }
  return out;
}

/** Quantises `nb` super-blocks of `x` to Q5_K (`quantize_row_q5_K_ref`). */
export function quantizeQ5K(x: Float32Array, nb: number): Uint8Array {
  const out = new Uint8Array(nb * 176);
  const L = new Uint8Array(QK);
  for (let b = 0; b < nb; b++) {
    const p = b * 176;
    fitScaleMin(x, b * QK, "q5_k", out, p, L);
    for (let q = 0; q < 4; q++) {
      for (let l = 0; l < 32; l++) {
        const l1 = L[64 * q + l], l2 = L[64 * q + 32 + l];
        out[p + 16 + l] |= ((l1 >> 4) << (2 * q)) | ((l2 >> 4) << (2 * q + 1));
        out[p + 48 + 32 * q + l] = (l1 & 15) | ((l2 & 15) << 4);
      }
    }
  }
  return out;
}

/** Decodes `nb` Q4_K (`bits` 4) or Q5_K (`bits` 5) super-blocks (`dequantize_row_q{4,5}_K`). */
function dequantizeScaleMin(bytes: Uint8Array, nb: number, bits: 4 | 5): Float32Array {
  const size = bits === 4 ? 144 : 176, qs = bits === 4 ? 16 : 48;
  const out = new Float32Array(nb * QK);
  for (let b = 0; b < nb; b++) {
    const p = b * size;
    const d = getF16(bytes, p), dmin = getF16(bytes, p + 2);
    for (let j = 0; j < 8; j++) {
      const [sc, m] = q4kScaleMin(bytes, p + 4, j);
      const d1 = f(d * sc), m1 = f(dmin * m);
      const q = p + qs + 32 * (j >> 1), shift = (j & 1) * 4;
      for (let l = 0; l < 32; l++) {
        const hi = bits === 5 ? ((bytes[p + 16 + l] >> j) & 1) << 4 : 0;
        out[b * QK + 32 * j + l] = f(f(d1 * (((bytes[q + l] >> shift) & 0xf) | hi)) - m1);
      }
    }
  }
  return out;
}

/** Decodes `nb` Q4_K super-blocks (`dequantize_row_q4_K`). */
export function dequantizeQ4K(bytes: Uint8Array, nb: number): Float32Array {
  return dequantizeScaleMin(bytes, nb, 4);
}

/** Decodes `nb` Q5_K super-blocks (`dequantize_row_q5_K`). */
export function dequantizeQ5K(bytes: Uint8Array, nb: number): Float32Array {
  return dequantizeScaleMin(bytes, nb, 5);
}

// --------------------------------------------------------------------------- Q6_K

/** ggml's GROUP_MAX_EPS: a group whose largest magnitude is below it is all zero. */
const GROUP_MAX_EPS = f(1e-15);
const TENTH = f(0.1);

/**
 * ggml's `make_qx_quants` with `rmse_type` 1 and no importance weights, for `n` values at `x[o..]`:
 * a symmetric grid of levels `-nmax .. nmax - 1` whose scale is fitted by least squares weighted by
 * `x^2` over 19 trial scales; the levels (offset by `nmax`) go to `L[o..]`. Returns the scale.
 */
function makeQx(n: number, nmax: number, x: Float32Array, o: number, L: Uint8Array): number {
  let max = 0, amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[o + i]);
    if (ax > amax) {
      amax = ax;
      max = x[o + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, o, o + n);
    return 0;
  }
  const fit = (iscale: number, store: boolean): [number, number] => {
    let sumlx = 0, suml2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[o + i];
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(f(iscale * v))));
      if (store) L[o + i] = l + nmax;
      const w = f(v * v);
      sumlx = f(sumlx + f(f(w * v) * l));
      suml2 = f(suml2 + f(f(w * l) * l));
    }
    return [sumlx, suml2];
  };
  let [sumlx, suml2] = fit(f(-nmax / max), true);
  let scale = suml2 ? f(sumlx / suml2) : 0;
  let best = f(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    const iscale = f(-f(nmax + f(TENTH * is)) / max);
    [sumlx, suml2] = fit(iscale, false);
    if (suml2 > 0 && f(sumlx * sumlx) > f(best * suml2)) {
      fit(iscale, true);
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}

/** Quantises `nb` super-blocks of `x` to Q6_K (`quantize_row_q6_K_ref`). */
export function quantizeQ6K(x: Float32Array, nb: number): Uint8Array {
  const out = new Uint8Array(nb * 210);
  const L = new Uint8Array(QK);
  const scales = new Float32Array(16);
  for (let b = 0; b < nb; b++) {
    const xo = b * QK, p = b * 210;
    const xb = x.subarray(xo, xo + QK);
    let maxScale = 0, maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const scale = makeQx(16, 32, xb, 16 * ib, L);
      scales[ib] = scale;
      if (Math.abs(scale) > maxAbsScale) {
        maxAbsScale = Math.abs(scale);
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) continue; // an all-zero block (d = 0 too)
    const iscale = f(-128 / maxScale);
    const d = putF16(out, p + 208, f(1 / iscale));
    for (let ib = 0; ib < 16; ib++) {
      out[p + 192 + ib] = Math.min(127, nearestInt(f(iscale * scales[ib]))) & 0xff;
    }
    for (let j = 0; j < 16; j++) {
      const dj = f(d * ((out[p + 192 + j] << 24) >> 24));
      if (!dj) continue;
      for (let i = 0; i < 16; i++) {
        const l = nearestInt(f(xb[16 * j + i] / dj));
        L[16 * j + i] = Math.max(-32, Math.min(31, l)) + 32;
      }
    }
    for (let h = 0; h < 2; h++) {
      const j = 128 * h, ql = p + 64 * h, qh = p + 128 + 32 * h;
      for (let l = 0; l < 32; l++) {
        const [q1, q2, q3, q4] = [L[j + l], L[j + l + 32], L[j + l + 64], L[j + l + 96]];
        out[ql + l] = (q1 & 15) | ((q3 & 15) << 4);
        out[ql + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
        out[qh + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
      }
    }
  }
  return out;
}

/** Decodes `nb` Q6_K super-blocks (`dequantize_row_q6_K`). */
export function dequantizeQ6K(bytes: Uint8Array, nb: number): Float32Array {
  const out = new Float32Array(nb * QK);
  for (let b = 0; b < nb; b++) {
    const p = b * 210;
    const d = getF16(bytes, p + 208);
    for (let h = 0; h < 2; h++) {
      const ql = p + 64 * h, qh = p + 128 + 32 * h, sc = p + 192 + 8 * h;
      for (let g = 0; g < 4; g++) {
        for (let l = 0; l < 32; l++) {
          const lo = (bytes[ql + 32 * (g & 1) + l] >> (4 * (g >> 1))) & 15;
          const q = (lo | (((bytes[qh + l] >> (2 * g)) & 3) << 4)) - 32;
          const s = (bytes[sc + 2 * g + (l >> 4)] << 24) >> 24;
          out[b * QK + 128 * h + 32 * g + l] = f(f(d * s) * q);
        }
      }
    }
  }
  return out;
}
