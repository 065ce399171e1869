// Decode GEMV of a linear layer: y[t, n] = sum_k W[n, k] · x[t, k] (+ y[t, n] when ACC = 1) for the
// p.T rows t of x (a few tokens).
//
// x and y are f32, row-major ([T, K] and [T, N]). W is [N, K] in its file layout, packed in u32
// words of dtype WDTYPE (dtype.wgsl); 16-bit dtypes need an even K. Block-quantised weights (Q8_0,
// Q5_0, Q4_0, Q4_K, Q5_K, Q6_K: quant.wgsl, quant_gemv.wgsl) take their own paths: each lane of a row
// takes every TPR-th unit (Q4_K / Q5_K: coalesced 64-value units, Q8_0: words) of it, loads its
// words through `wu` (Q4_K / Q5_K headers through `wv`) and its x values through `xv` (p.xvec is 1:
// K is a multiple of 32).
//
// Layout (linear.ts `gemvLayout` chooses it per device and row length): a workgroup of WG threads
// owns ROWS = WG / TPR consecutive rows of W, TPR threads per row. The rows' partial sums are
// reduced by `row_sum`, from gemv_tree.wgsl (portable) or gemv_subgroup.wgsl (subgroups), which
// comes before this file in the kernel's source.
//
// When every row starts on a 16-byte boundary (p.xvec: K / values-per-word is a multiple of 4) a
// row is read as whole vec4<u32> blocks (`wv`) and x as vec4 (`xv`): the
// row's blocks in steps of TPR * UNROLL, each thread issuing its UNROLL 16-byte loads before their
// math (a uniform trip count for the workgroup), then the rest one block per thread; per-component
// f32 accumulators (fma), added up at the end. Otherwise each row is split into an unaligned head
// (< 4 words), an aligned body read as vec4 and a tail (< 4 words); head and tail are read word by
// word through `wu`, which binds the same buffer range (`wv` covers its whole 16-byte blocks only).
// No load ever leaves the row, whatever K is.
//
// The rows of x are taken TB at a time (one pass over the weight rows per TB rows of x; later passes
// re-read the workgroup's weight rows from cache), and each pass ends with TB row reductions.
//
// Dispatch: ceil(N / ROWS) workgroups as a 2-D grid (linear index wid.x + wid.y * nwg.x).
struct Params {
  T: u32,
  K: u32,
  N: u32,
  // 1 when every row starts on a 16-byte boundary (K / values-per-word is a multiple of 4): the
  // aligned path above.
  xvec: u32,
}

// Threads per weight row (a power of two) and per workgroup (TPR * rows per workgroup).
override TPR: u32 = 32u;
override WG: u32 = 128u;
// 16-byte weight loads in flight per thread in the aligned path: 1 or 2.
override UNROLL: u32 = 2u;
// Rows of x per pass over the weights (1 .. MAX_TB). Larger values read W once for more tokens but
// unroll more code (llvmpipe compiles TB > 1 very slowly).
override TB: u32 = 1u;
// 1: add the product to the existing y; 0: overwrite y.
override ACC: u32 = 0u;
// Weight rows per lane group on the Q4_K / Q5_K path: 1, or 2 (qk_rows2: a lane reads each x
// value once for the same unit of two rows, and a workgroup covers 2 * WG / TPR rows).
override RPL: u32 = 1u;

const MAX_TB: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> wu: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> xv: array<vec4<f32>>;

// One packed word (W[n, k], and W[n, k + 1] for 16-bit dtypes) times x[xi] (and x[xi + 1]).
fn dot_word(word: u32, xi: u32) -> f32 {
  let v = unpack_word(word);
  if (WDTYPE == 0u) {
    return v.x * x[xi];
  }
  return v.x * x[xi] + v.y * x[xi + 1u];
}

// The words of unit u of the quantised row starting at byte rb (quant.wgsl).
fn q_load(rb: u32, u: u32) -> array<u32, QUNIT_WORDS> {
  var w: array<u32, QUNIT_WORDS>;
  for (var i = 0u; i < q_unit_words(); i++) {
    w[i] = wu[q_unit_word(rb, u, i)];
  }
  return w;
}

// x vec4 i (quant.wgsl's qk_dot reads x through it).
fn q_x(i: u32) -> vec4<f32> {
  return xv[i];
}

// x values i, i + 1 (i even; quant.wgsl's q8_word_dot reads x through it).
fn q_x2(i: u32) -> vec2<f32> {
  let v = xv[i / 4u];
  return select(v.xy, v.zw, (i & 2u) != 0u);
}

// Q8_0: word k of the row starting at byte rb (of q8_words(rb, nb) = words) and the word holding
// its block's d (k clamped into the row: the caller drops the product of a k past it).
fn q8_load(rb: u32, words: u32, k: u32) -> vec2<u32> {
  let kk = min(k, words - 1u);
  return vec2<u32>(wu[rb / 4u + kk], wu[q8_d_word(rb, q8_block(rb, kk))]);
}

// Q8_0: word k (loaded by q8_load as w) times the row of x from value xo, 0 past the row's words.
fn q8_apply(w: vec2<u32>, rb: u32, words: u32, k: u32, xo: u32) -> f32 {
  if (k >= words) {
    return 0.0;
  }
  return q8_word_dot(w.x, rb, k, q8_d(rb, q8_block(rb, k), w.y), xo);
}

// The x values of quantised unit u of the row of x that starts at vec4 number xo.
fn q_xs(xo: u32, u: u32) -> array<vec4<f32>, QUNIT_VEC4> {
  var a: array<vec4<f32>, QUNIT_VEC4>;
  for (var i = 0u; i < q_unit_values() / 4u; i++) {
    a[i] = xv[xo + q_unit_xvec(u, i)];
  }
  return a;
}

// acc + four packed words (4 or 8 weights) times the x values from vec4 number xi, per component
// (the aligned path's step).
fn quad_fma(acc: vec4<f32>, q: vec4<u32>, xi: u32) -> vec4<f32> {
  if (WDTYPE == 0u) {
    return fma(bitcast<vec4<f32>>(q), xv[xi], acc);
  }
  let xa = xv[xi];
  let xb = xv[xi + 1u];
  if (WDTYPE == 2u) {
    let a = fma(bitcast<vec4<f32>>(q << vec4<u32>(16u)), vec4<f32>(xa.x, xa.z, xb.x, xb.z), acc);
    return fma(bitcast<vec4<f32>>(q & vec4<u32>(0xffff0000u)), vec4<f32>(xa.y, xa.w, xb.y, xb.w), a);
  }
  let a = fma(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), xa, acc);
  return fma(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), xb, a);
}

// Aligned path, one row of x: this lane's part of the row of nv blocks from block v0 of W, times x
// from vec4 number xo.
fn aligned_row(v0: u32, nv: u32, xo: u32, lane: u32) -> f32 {
  let ppw = w_per_word();
  let step = TPR * UNROLL;
  let full = nv / step;
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  for (var i = 0u; i < full; i++) {
    let o = i * step + lane;
    let q0 = wv[v0 + o];
    var q1 = vec4<u32>();
    if (UNROLL > 1u) {
      q1 = wv[v0 + o + TPR];
    }
    a0 = quad_fma(a0, q0, xo + o * ppw);
    if (UNROLL > 1u) {
      a1 = quad_fma(a1, q1, xo + (o + TPR) * ppw);
    }
  }
  for (var b = full * step + lane; b < nv; b += TPR) {
    a0 = quad_fma(a0, wv[v0 + b], xo + b * ppw);
  }
  return dot(a0 + a1, vec4<f32>(1.0));
}

// The Q4_K / Q5_K path with RPL = 2: the lane group of rows n0 = row0 + 2 (lid / TPR) and n0 + 1
// takes every TPR-th unit of both (the same units of both rows in flight), each pair dotted with x
// read once (qk_dot2), and both rows are reduced together (row_sum2).
fn qk_rows2(row0: u32, l: Lanes) {
  let lane = l.lid % TPR;
  let n0 = row0 + 2u * (l.lid / TPR);
  let rows = select(select(0u, 1u, n0 < p.N), 2u, n0 + 1u < p.N); // rows of the pair inside W
  let row_words = q_row_bytes(p.K) / 4u;
  let rw0 = n0 * row_words;
  let rw1 = select(rw0, rw0 + row_words, rows == 2u); // without a second row, the first again
  let units = select(0u, p.K / 64u, rows > 0u);
  for (var t = 0u; t < p.T; t++) {
    let xo = t * p.K / 4u;
    var acc = vec2<f32>(0.0);
    for (var u = lane; u < units; u += TPR) {
      acc += qk_dot2(qk_load(rw0, u), qk_load(rw1, u), xo + qk_xvec(u));
    }
    let r = row_sum2(acc, l);
    if (lane == 0u) {
      for (var i = 0u; i < rows; i++) {
        let idx = t * p.N + n0 + i;
        var out = r[i];
        if (ACC != 0u) {
          out += y[idx];
        }
        y[idx] = out;
      }
    }
  }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  l: Lanes,
) {
  if (RPL == 2u) {
    qk_rows2((wid.x + wid.y * nwg.x) * (WG / TPR) * 2u, l);
    return;
  }
  let lid = l.lid;
  let row0 = (wid.x + wid.y * nwg.x) * (WG / TPR);
  if (row0 >= p.N) {
    return;
  }
  let lane = lid % TPR;
  let n = row0 + lid / TPR;
  let ppw = w_per_word();
  let row_words = select(0u, p.K / ppw, n < p.N); // rows past N are empty (but join barriers)
  let rs = n * row_words; // first word of the row
  let re = rs + row_words; // one past its last word
  let a = min((rs + 3u) & ~3u, re); // end of the head = start of the aligned body
  let b = max(re & ~3u, a); // end of the body = start of the tail
  let nhead = a - rs;
  let nedge = nhead + re - b;

  var acc: array<f32, MAX_TB>;
  var a0: array<vec4<f32>, MAX_TB>;
  var a1: array<vec4<f32>, MAX_TB>;
  for (var t0 = 0u; t0 < p.T; t0 += TB) {
    // Reset explicitly: some WGSL compilers do not re-zero a `var` declared inside a loop.
    acc = array<f32, MAX_TB>();
    if (q_kquant()) {
      // Q4_K / Q5_K rows: every TPR-th unit, two units' loads in flight before their math.
      let rw = n * q_row_bytes(p.K) / 4u;
      let units = select(0u, p.K / 64u, n < p.N);
      for (var u = lane; u < units; u += 2u * TPR) {
        let w0 = qk_load(rw, u);
        let more = u + TPR < units;
        var w1 = w0;
        if (more) {
          w1 = qk_load(rw, u + TPR);
        }
        for (var j = 0u; j < TB; j++) {
          if (t0 + j < p.T) {
            let xo = (t0 + j) * p.K / 4u;
            acc[j] += qk_dot(w0, xo + qk_xvec(u));
            if (more) {
              acc[j] += qk_dot(w1, xo + qk_xvec(u + TPR));
            }
          }
        }
      }
    } else if (q_q8()) {
      // Q8_0 rows: every TPR-th word, four loads in flight before their math.
      let rb = n * q_row_bytes(p.K);
      let words = select(0u, q8_words(rb, p.K / 32u), n < p.N);
      for (var k = lane; k < words; k += 4u * TPR) {
        let w0 = q8_load(rb, words, k);
        let w1 = q8_load(rb, words, k + TPR);
        let w2 = q8_load(rb, words, k + 2u * TPR);
        let w3 = q8_load(rb, words, k + 3u * TPR);
        for (var j = 0u; j < TB; j++) {
          if (t0 + j < p.T) {
            let xo = (t0 + j) * p.K;
            acc[j] += q8_apply(w0, rb, words, k, xo) + q8_apply(w1, rb, words, k + TPR, xo) +
              q8_apply(w2, rb, words, k + 2u * TPR, xo) + q8_apply(w3, rb, words, k + 3u * TPR, xo);
          }
        }
      }
    } else if (q_quantised()) {
      // Block-quantised rows: every TPR-th unit, each applied to the pass's rows of x.
      let rb = n * q_row_bytes(p.K);
      let qv = q_unit_values();
      let units = select(0u, p.K / qv, n < p.N);
      for (var u = lane; u < units; u += TPR) {
        let w = q_load(rb, u);
        for (var j = 0u; j < TB; j++) {
          if (t0 + j < p.T) {
            acc[j] += q_unit_dot(w, rb, u, q_xs((t0 + j) * p.K / 4u, u));
          }
        }
      }
    } else if (p.xvec != 0u && TB == 1u) {
      // Aligned, one row of x per pass (decode).
      acc[0] = aligned_row(rs / 4u, row_words / 4u, t0 * p.K / 4u, lane);
    } else if (p.xvec != 0u) {
      // Aligned, TB rows of x per pass: the same steps, each block applied to every row of x.
      a0 = array<vec4<f32>, MAX_TB>();
      a1 = array<vec4<f32>, MAX_TB>();
      let v0 = rs / 4u;
      let nv = row_words / 4u;
      let step = TPR * UNROLL;
      let full = nv / step;
      for (var i = 0u; i < full; i++) {
        let o = i * step + lane;
        let q0 = wv[v0 + o];
        var q1 = vec4<u32>();
        if (UNROLL > 1u) {
          q1 = wv[v0 + o + TPR];
        }
        for (var j = 0u; j < TB; j++) {
          if (t0 + j < p.T) {
            let xo = (t0 + j) * p.K / 4u;
            a0[j] = quad_fma(a0[j], q0, xo + o * ppw);
            if (UNROLL > 1u) {
              a1[j] = quad_fma(a1[j], q1, xo + (o + TPR) * ppw);
            }
          }
        }
      }
      for (var v = full * step + lane; v < nv; v += TPR) {
        let q = wv[v0 + v];
        for (var j = 0u; j < TB; j++) {
          if (t0 + j < p.T) {
            a0[j] = quad_fma(a0[j], q, (t0 + j) * p.K / 4u + v * ppw);
          }
        }
      }
      for (var j = 0u; j < TB; j++) {
        acc[j] = dot(a0[j] + a1[j], vec4<f32>(1.0));
      }
    } else {
      // Head and tail words (at most 3 each), one per lane.
      for (var i = lane; i < nedge; i += TPR) {
        let wi = select(b + i - nhead, rs + i, i < nhead);
        let word = wu[wi];
        let k = (wi - rs) * ppw;
        for (var j = 0u; j < TB; j++) {
          if (t0 + j < p.T) {
            acc[j] += dot_word(word, (t0 + j) * p.K + k);
          }
        }
      }
      // Body: 4 words (4 or 8 weights) per load, x read word by word (rows are not 16-byte aligned).
      for (var v = a / 4u + lane; v < b / 4u; v += TPR) {
        let q = wv[v];
        let k = (v * 4u - rs) * ppw;
        for (var j = 0u; j < TB; j++) {
          if (t0 + j < p.T) {
            let xi = (t0 + j) * p.K + k;
            acc[j] += dot_word(q.x, xi) + dot_word(q.y, xi + ppw) + dot_word(q.z, xi + 2u * ppw) +
              dot_word(q.w, xi + 3u * ppw);
          }
        }
      }
    }

    for (var j = 0u; j < TB; j++) {
      let r = row_sum(acc[j], l);
      let t = t0 + j;
      if (lane == 0u && n < p.N && t < p.T) {
        let idx = t * p.N + n;
        var out = r;
        if (ACC != 0u) {
          out += y[idx];
        }
        y[idx] = out;
      }
    }
  }
}
