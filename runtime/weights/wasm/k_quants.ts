// AssemblyScript source of `k_quants_wasm.ts`'s module: llama.cpp's Q4_K, Q5_K and Q6_K reference
// quantisers (`quantize_row_q{4,5,6}_K_ref`: weighted least-squares searches over 21 / 16 / 19
// trial scales per sub-block) in WebAssembly's f32 arithmetic, byte for byte what the TypeScript
// reference in `../k_quants.ts` writes, 2.5-3x faster. Built by `tools/build_wasm.sh` (npm
// assemblyscript, pinned), which writes the module into `../k_quants_wasm_module.ts`; deno's
// formatter, linter and type checker skip this folder (AssemblyScript is not TypeScript).
//
// Memory: the caller places the f32 values and room for the blocks in linear memory past
// `heapBase()` and passes their addresses; scratch lives in static data.
const LAUX: usize = memory.data(32);
const W: usize = memory.data(32 * 4);
const XM: usize = memory.data(32 * 4);
const L: usize = memory.data(256);
const SCALES: usize = memory.data(8 * 4);
const MINS: usize = memory.data(8 * 4);
const SCALES16: usize = memory.data(16 * 4);
let outScale: f32 = 0;
let outMin: f32 = 0;

@inline function nearestInt(v: f32): i32 {
  const val: f32 = v + 12582912.0;
  return (reinterpret<i32>(val) & 0x7fffff) - 0x400000;
}

@inline function ldx(x: usize, i: i32): f32 { return load<f32>(x + (<usize>i << 2)); }
@inline function ldw(i: i32): f32 { return load<f32>(W + (<usize>i << 2)); }
@inline function ldxm(i: i32): f32 { return load<f32>(XM + (<usize>i << 2)); }
@inline function stxm(i: i32, v: f32): void { store<f32>(XM + (<usize>i << 2), v); }

function f32ToF16Bits(value: f32): u32 {
  const x = reinterpret<u32>(value);
  const sign = (x >>> 16) & 0x8000;
  const exp = <i32>((x >>> 23) & 0xff);
  let mant = x & 0x7fffff;
  if (exp == 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = <u32>(14 - e);
    let half = mant >>> shift;
    const rem = mant & ((<u32>1 << shift) - 1);
    const mid = <u32>1 << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (<u32>e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
  return sign | half;
}

function f16BitsToF32(h: u32): f32 {
  const sign: f32 = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp == 0) return sign * <f32>mant * <f32>5.9604644775390625e-8;
  if (exp == 0x1f) return mant ? NaN : sign * Infinity;
  return sign * reinterpret<f32>(((exp - 15 + 127) << 23) | (mant << 13));
}

function putF16(out: usize, v: f32): f32 {
  const h = f32ToF16Bits(v);
  store<u8>(out, h & 0xff);
  store<u8>(out + 1, h >>> 8);
  return f16BitsToF32(h);
}

function makeQkx2(nmax: i32, x: usize, lo: i32, rmin: f32, rdelta: f32, nstep: i32): void {
  const n = 32;
  let min = ldx(x, 0), max = ldx(x, 0);
  let sumW = ldw(0);
  let sumX: f32 = sumW * ldx(x, 0);
  for (let i = 1; i < n; i++) {
    const v = ldx(x, i);
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = sumW + ldw(i);
    sumX = sumX + ldw(i) * v;
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (let i = 0; i < n; i++) store<u8>(L + lo + i, 0);
    outScale = 0;
    outMin = -min;
    return;
  }
  let iscale: f32 = <f32>nmax / (max - min);
  let scale: f32 = <f32>1 / iscale;
  let best: f32 = 0;
  for (let i = 0; i < n; i++) {
    const xi = ldx(x, i), d: f32 = xi - min;
    stxm(i, d);
    let l = nearestInt(iscale * d);
    l = l < 0 ? 0 : l > nmax ? nmax : l;
    store<u8>(L + lo + i, <u8>l);
    const diff: f32 = scale * <f32>l + min - xi;
    best = best + ldw(i) * (diff * diff);
  }
  for (let is = 0; is <= nstep; is++) {
    iscale = (rmin + rdelta * <f32>is + <f32>nmax) / (max - min);
    let changed = is == 0;
    for (let i = 0; i < n; i++) {
      let l = nearestInt(iscale * ldxm(i));
      l = l < 0 ? 0 : l > nmax ? nmax : l;
      if (<i32>load<u8>(LAUX + i) != l) {
        store<u8>(LAUX + i, <u8>l);
        changed = true;
      }
    }
    if (!changed) continue;
    let sumL: f32 = 0, sumL2: f32 = 0, sumXL: f32 = 0;
    for (let i = 0; i < n; i++) {
      const l = <f32>load<u8>(LAUX + i);
      const wl: f32 = ldw(i) * l;
      sumL = sumL + wl;
      sumL2 = sumL2 + wl * l;
      sumXL = sumXL + wl * ldx(x, i);
    }
    const D: f32 = sumW * sumL2 - sumL * sumL;
    if (!(D > 0)) continue;
    let thisScale: f32 = (sumW * sumXL - sumX * sumL) / D;
    let thisMin: f32 = (sumL2 * sumX - sumL * sumXL) / D;
    if (thisMin > 0) {
      thisMin = 0;
      thisScale = sumXL / sumL2;
    }
    let cur: f32 = 0;
    for (let i = 0; i < n; i++) {
      const diff: f32 = thisScale * <f32>load<u8>(LAUX + i) + thisMin - ldx(x, i);
      cur = cur + ldw(i) * (diff * diff);
    }
    if (cur < best) {
      for (let i = 0; i < n; i++) store<u8>(L + lo + i, load<u8>(LAUX + i));
      best = cur;
      scale = thisScale;
      if (thisMin != min) {
        min = thisMin;
        for (let i = 0; i < n; i++) stxm(i, ldx(x, i) - min);
      }
    }
  }
  outScale = scale;
  outMin = -min;
}

@inline function scaleMin(s: usize, j: i32, wantMin: bool): i32 {
  if (j < 4) return wantMin ? <i32>load<u8>(s + j + 4) & 63 : <i32>load<u8>(s + j) & 63;
  return wantMin
    ? (<i32>load<u8>(s + j + 4) >> 4) | ((<i32>load<u8>(s + j) >> 6) << 4)
    : (<i32>load<u8>(s + j + 4) & 0xf) | ((<i32>load<u8>(s + j - 4) >> 6) << 4);
}

function fitScaleMin(x: usize, nmax: i32, rmin: f32, nstep: i32, out: usize): void {
  const rdelta: f32 = 0.1;
  let maxScale: f32 = 0, maxMin: f32 = 0;
  for (let j = 0; j < 8; j++) {
    const o = x + (<usize>(32 * j) << 2);
    let sumX2: f32 = 0;
    for (let l = 0; l < 32; l++) sumX2 = sumX2 + ldx(o, l) * ldx(o, l);
    const avX: f32 = Mathf.sqrt(sumX2 / 32);
    for (let l = 0; l < 32; l++) store<f32>(W + (<usize>l << 2), avX + Mathf.abs(ldx(o, l)));
    makeQkx2(nmax, o, 32 * j, rmin, rdelta, nstep);
    store<f32>(SCALES + (<usize>j << 2), outScale);
    store<f32>(MINS + (<usize>j << 2), outMin);
    if (outScale > maxScale) maxScale = outScale;
    if (outMin > maxMin) maxMin = outMin;
  }
  const invScale: f32 = maxScale > 0 ? <f32>63 / maxScale : 0;
  const invMin: f32 = maxMin > 0 ? <f32>63 / maxMin : 0;
  const s = out + 4;
  for (let j = 0; j < 12; j++) store<u8>(s + j, 0);
  for (let j = 0; j < 8; j++) {
    const ls = min(63, nearestInt(invScale * load<f32>(SCALES + (<usize>j << 2))) & 0xff);
    const lm = min(63, nearestInt(invMin * load<f32>(MINS + (<usize>j << 2))) & 0xff);
    if (j < 4) {
      store<u8>(s + j, ls);
      store<u8>(s + j + 4, lm);
    } else {
      store<u8>(s + j + 4, (ls & 0xf) | ((lm & 0xf) << 4));
      store<u8>(s + j - 4, load<u8>(s + j - 4) | ((ls >> 4) << 6));
      store<u8>(s + j, load<u8>(s + j) | ((lm >> 4) << 6));
    }
  }
  const dAll = putF16(out, maxScale / 63);
  const mAll = putF16(out + 2, maxMin / 63);
  for (let j = 0; j < 8; j++) {
    const d: f32 = dAll * <f32>scaleMin(s, j, false);
    if (!d) continue;
    const dm: f32 = mAll * <f32>scaleMin(s, j, true);
    for (let i = 0; i < 32; i++) {
      const l = nearestInt((ldx(x, 32 * j + i) + dm) / d);
      store<u8>(L + 32 * j + i, <u8>max(0, min(nmax, l)));
    }
  }
}

/** The first address free for the caller's values and blocks. */
export function heapBase(): usize {
  return __heap_base;
}

/** `nb` Q4_K super-blocks (144 bytes each) of the f32 values at `x`, written to `out`. */
export function quantizeQ4K(x: usize, nb: i32, out: usize): void {
  for (let b = 0; b < nb; b++) {
    const p = out + <usize>b * 144;
    const xb = x + (<usize>b * 256 << 2);
    fitScaleMin(xb, 15, -1, 20, p);
    for (let q = 0; q < 4; q++) {
      for (let l = 0; l < 32; l++) {
        store<u8>(p + 16 + 32 * q + l,
          load<u8>(L + 64 * q + l) | (load<u8>(L + 64 * q + 32 + l) << 4));
      }
    }
  }
}

/** `nb` Q5_K super-blocks (176 bytes each) of the f32 values at `x`, written to `out`. */
export function quantizeQ5K(x: usize, nb: i32, out: usize): void {
  for (let b = 0; b < nb; b++) {
    const p = out + <usize>b * 176;
    const xb = x + (<usize>b * 256 << 2);
    fitScaleMin(xb, 31, -0.5, 15, p);
    for (let l = 0; l < 32; l++) store<u8>(p + 16 + l, 0);
    for (let q = 0; q < 4; q++) {
      for (let l = 0; l < 32; l++) {
        const l1 = <u32>load<u8>(L + 64 * q + l), l2 = <u32>load<u8>(L + 64 * q + 32 + l);
        store<u8>(p + 16 + l, <u32>load<u8>(p + 16 + l) | ((l1 >> 4) << (2 * q)) | ((l2 >> 4) << (2 * q + 1)));
        store<u8>(p + 48 + 32 * q + l, (l1 & 15) | ((l2 & 15) << 4));
      }
    }
  }
}

// Q6_K: ggml's make_qx_quants (rmse_type 1, weights x^2) per 16 values, then int8 sub-block scales.
const GROUP_MAX_EPS: f32 = 1e-15;
let qxSumlx: f32 = 0;
let qxSuml2: f32 = 0;

/** One trial scale over the 16 values at `x`: the sums of the fit; with `keep`, the levels to L. */
function qxFit(x: usize, lo: i32, iscale: f32, keep: bool): void {
  let sumlx: f32 = 0, suml2: f32 = 0;
  for (let i = 0; i < 16; i++) {
    const v = ldx(x, i);
    const l = max(-32, min(31, nearestInt(iscale * v)));
    if (keep) store<u8>(L + lo + i, <u8>(l + 32));
    const w: f32 = v * v;
    sumlx = sumlx + w * v * <f32>l;
    suml2 = suml2 + w * <f32>l * <f32>l;
  }
  qxSumlx = sumlx;
  qxSuml2 = suml2;
}

/** The scale of the 16 values at `x` (levels -32 .. 31, offset by 32, to L at `lo`). */
function makeQx(x: usize, lo: i32): f32 {
  let mx: f32 = 0, amax: f32 = 0;
  for (let i = 0; i < 16; i++) {
    const ax = Mathf.abs(ldx(x, i));
    if (ax > amax) {
      amax = ax;
      mx = ldx(x, i);
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < 16; i++) store<u8>(L + lo + i, 0);
    return 0;
  }
  qxFit(x, lo, <f32>-32 / mx, true);
  let scale: f32 = qxSuml2 != 0 ? qxSumlx / qxSuml2 : 0;
  let best: f32 = scale * qxSumlx;
  const tenth: f32 = 0.1;
  for (let is = -9; is <= 9; is++) {
    if (is == 0) continue;
    const iscale: f32 = -(<f32>32 + tenth * <f32>is) / mx;
    qxFit(x, lo, iscale, false);
    if (qxSuml2 > 0 && qxSumlx * qxSumlx > best * qxSuml2) {
      qxFit(x, lo, iscale, true);
      scale = qxSumlx / qxSuml2;
      best = scale * qxSumlx;
    }
  }
  return scale;
}

/** `nb` Q6_K super-blocks (210 bytes each) of the f32 values at `x`, written to `out`. */
export function quantizeQ6K(x: usize, nb: i32, out: usize): void {
  for (let b = 0; b < nb; b++) {
    const p = out + <usize>b * 210;
    const xb = x + (<usize>b * 256 << 2);
    for (let i = 0; i < 210; i++) store<u8>(p + i, 0);
    let maxScale: f32 = 0, maxAbsScale: f32 = 0;
    for (let ib = 0; ib < 16; ib++) {
      const scale = makeQx(xb + (<usize>(16 * ib) << 2), 16 * ib);
      store<f32>(SCALES16 + (<usize>ib << 2), scale);
      if (Mathf.abs(scale) > maxAbsScale) {
        maxAbsScale = Mathf.abs(scale);
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) continue;
    const iscale: f32 = <f32>-128 / maxScale;
    const d = putF16(p + 208, <f32>1 / iscale);
    for (let ib = 0; ib < 16; ib++) {
      store<u8>(p + 192 + ib, <u8>min(127, nearestInt(iscale * load<f32>(SCALES16 + (<usize>ib << 2)))));
    }
    for (let j = 0; j < 16; j++) {
      const dj: f32 = d * <f32>load<i8>(p + 192 + j);
      if (!dj) continue;
      for (let i = 0; i < 16; i++) {
        const l = nearestInt(ldx(xb, 16 * j + i) / dj);
        store<u8>(L + 16 * j + i, <u8>(max(-32, min(31, l)) + 32));
      }
    }
    for (let h = 0; h < 2; h++) {
      const j = 128 * h, ql = p + 64 * h, qh = p + 128 + 32 * h;
      for (let l = 0; l < 32; l++) {
        const q1 = <u32>load<u8>(L + j + l), q2 = <u32>load<u8>(L + j + l + 32);
        const q3 = <u32>load<u8>(L + j + l + 64), q4 = <u32>load<u8>(L + j + l + 96);
        store<u8>(ql + l, (q1 & 15) | ((q3 & 15) << 4));
        store<u8>(ql + l + 32, (q2 & 15) | ((q4 & 15) << 4));
        store<u8>(qh + l, (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
      }
    }
  }
}
