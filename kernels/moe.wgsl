// Mixture-of-experts GEMVs that read expert weights through a slot table. For each (token, choice)
// pair p = t * topK + j, expert e = ids[p] lives in slot table[e] of a stacked pool
// [slots, rows, K] (packed words, see dtype.wgsl; slot stride p.slotWords words). One workgroup
// computes ROWS = WG / TPR output rows of one pair; TPR threads share a row and reduce.
//   gate_up: out[p, r] = silu(Wgate[slot] . x[t])[r] * (Wup[slot] . x[t])[r]   (r < p.rows = inter)
//   down:    out[p, r] = (Wdown[slot] . x[p])[r]                                (r < p.rows = hidden)
// A pair whose expert has no slot (table[e] >= p.slots) writes NaN, so a missing upload shows, or,
// when p.missing_skip is set, is left untouched (the offloading engine's rounds: a layer whose experts
// do not all fit the slots at once runs in several rounds, each computing the pairs of the experts it
// holds, so after the last round every pair was written exactly once).
//
// x and the weight pools are bound as vec4 arrays. When every row starts on a 16-byte boundary
// (p.aligned: the row length in words is a multiple of 4) a lane reads 4 words (4 or 8 weights) and the
// matching x values per load and does its math on vectors; otherwise it reads word by word (vector
// components indexed at run time), which works for any shape.
struct Params {
  T: u32,
  topK: u32,
  K: u32,
  rows: u32,
  slotWords: u32,
  slots: u32,
  experts: u32,
  missing_skip: u32,
  aligned: u32,
}

override WG: u32 = 256u;
override TPR: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> w0: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> w1: array<vec4<u32>>;

var<workgroup> red0: array<f32, WG>;
var<workgroup> red1: array<f32, WG>;

// Sums red0 (and red1) over each TPR-thread row segment; the total lands at the segment's lane 0.
fn reduce_rows(lid: u32, lane: u32, both: bool) {
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s = s / 2u) {
    if (lane < s) {
      red0[lid] += red0[lid + s];
      if (both) {
        red1[lid] += red1[lid + s];
      }
    }
    workgroupBarrier();
  }
}

// A quiet NaN built from a runtime value: Tint rejects a constant NaN.
fn nan_of(slot: u32) -> f32 {
  return bitcast<f32>(0x7fc00000u | (slot & 1u));
}

fn xs(i: u32) -> f32 {
  return x[i >> 2u][i & 3u];
}

// Word i (weight i for f32) of a row times x, scalar path: w is the word, xi the first x index.
fn dot_word(w: u32, xi: u32) -> f32 {
  let v = unpack_word(w);
  if (WDTYPE == 0u) {
    return v.x * xs(xi);
  }
  return v.x * xs(xi) + v.y * xs(xi + 1u);
}

// Four words (4 or 8 weights) times the x values from element xk (a multiple of 4), vector path.
fn dot_quad(q: vec4<u32>, xk: u32) -> f32 {
  let xa = x[xk >> 2u];
  if (WDTYPE == 0u) {
    return dot(bitcast<vec4<f32>>(q), xa);
  }
  let xb = x[(xk >> 2u) + 1u];
  if (WDTYPE == 2u) {
    // bf16: the low halves are weights 0, 2, 4, 6 and the high halves 1, 3, 5, 7.
    let lo = bitcast<vec4<f32>>(q << vec4<u32>(16u));
    let hi = bitcast<vec4<f32>>(q & vec4<u32>(0xffff0000u));
    return dot(lo, vec4<f32>(xa.x, xa.z, xb.x, xb.z)) + dot(hi, vec4<f32>(xa.y, xa.w, xb.y, xb.w));
  }
  let wa = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
  let wb = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
  return dot(wa, xa) + dot(wb, xb);
}

fn slot_of(pair: u32) -> u32 {
  let e = ids[pair];
  if (e >= p.experts) {
    return 0xffffffffu;
  }
  return table[e];
}

@compute @workgroup_size(WG)
fn gate_up(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let pair = wid.y;
  let t = pair / p.topK;
  let row = wid.x * (WG / TPR) + lid / TPR;
  let lane = lid % TPR;
  let slot = slot_of(pair);
  let wpw = w_per_word();
  let rowWords = p.K / wpw;
  var ag = 0.0;
  var au = 0.0;
  if (row < p.rows && slot < p.slots) {
    let base = slot * p.slotWords + row * rowWords;
    let xb = t * p.K;
    if (p.aligned != 0u) {
      for (var j = lane; j < rowWords / 4u; j += TPR) {
        let xk = xb + j * 4u * wpw;
        ag += dot_quad(w0[base / 4u + j], xk);
        au += dot_quad(w1[base / 4u + j], xk);
      }
    } else {
      for (var j = lane; j < rowWords; j += TPR) {
        let i = base + j;
        ag += dot_word(w0[i >> 2u][i & 3u], xb + j * wpw);
        au += dot_word(w1[i >> 2u][i & 3u], xb + j * wpw);
      }
    }
  }
  red0[lid] = ag;
  red1[lid] = au;
  reduce_rows(lid, lane, true);
  if (lane == 0u && row < p.rows && (slot < p.slots || p.missing_skip == 0u)) {
    let g = red0[lid];
    var v = g / (1.0 + exp(-g)) * red1[lid];
    if (slot >= p.slots) {
      v = nan_of(slot);
    }
    out[pair * p.rows + row] = v;
  }
}

@compute @workgroup_size(WG)
fn down(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let pair = wid.y;
  let row = wid.x * (WG / TPR) + lid / TPR;
  let lane = lid % TPR;
  let slot = slot_of(pair);
  let wpw = w_per_word();
  let rowWords = p.K / wpw;
  var acc = 0.0;
  if (row < p.rows && slot < p.slots) {
    let base = slot * p.slotWords + row * rowWords;
    let xb = pair * p.K;
    if (p.aligned != 0u) {
      for (var j = lane; j < rowWords / 4u; j += TPR) {
        acc += dot_quad(w0[base / 4u + j], xb + j * 4u * wpw);
      }
    } else {
      for (var j = lane; j < rowWords; j += TPR) {
        let i = base + j;
        acc += dot_word(w0[i >> 2u][i & 3u], xb + j * wpw);
      }
    }
  }
  red0[lid] = acc;
  reduce_rows(lid, lane, false);
  if (lane == 0u && row < p.rows && (slot < p.slots || p.missing_skip == 0u)) {
    var v = red0[lid];
    if (slot >= p.slots) {
      v = nan_of(slot);
    }
    out[pair * p.rows + row] = v;
  }
}
