// Mixture-of-experts GEMVs that read expert weights through a slot table. For each (token, choice)
// pair p = t * topK + j, expert e = ids[p] lives in slot table[e] of a stacked pool
// [slots, rows, K] (packed words, see dtype.wgsl; slot stride p.slotWords words). One workgroup
// computes ROWS = WG / TPR output rows of one pair; TPR threads share a row and reduce it with
// `row_sum` / `row_sum2` (gemv_tree.wgsl, or gemv_subgroup.wgsl on devices with subgroups, before
// this file in the source; linear.ts `gemvLayout` picks TPR, WG, UNROLL and the reduction).
//   gate_up: out[p, r] = silu(Wgate[slot] . x[t])[r] * (Wup[slot] . x[t])[r]   (r < p.rows = inter)
//            or, with ACT = 1 (Switch / T5 experts: one input matrix wi, bound as w0; w1 not read),
//            out[p, r] = relu(Wi[slot] . x[t])[r]
//   down:    out[p, r] = (Wdown[slot] . x[p])[r]                                (r < p.rows = hidden)
// A pair whose expert has no slot (table[e] >= p.slots) writes NaN, so a missing upload shows, or,
// when p.missing_skip is set, is left untouched (the offloading engine's rounds: a layer whose experts
// do not all fit the slots at once runs in several rounds, each computing the pairs of the experts it
// holds, so after the last round every pair was written exactly once).
//
//
// down_combine (one workgroup per few output rows of one token t, computing the token's topK pairs
// P at a time, each pair's row exactly as `down` computes it) has three modes (p.mode):
//   0 combine: out[t, r] += sum_j cw[t * topK + j] * (Wdown[slot_j] . x[t * topK + j])[r]
//              (+ sigmoid(shared_gate[t]) * shared_out[t, r])   -- down + moe_combine in one pass
//   1 round:   out[pair, r] = (Wdown[slot] . x[pair])[r] for the pairs whose expert has a slot (the
//              others are left as they are): one round of a layer computed in rounds
//   2 finish:  as combine, with the expert outputs read from x ([T * topK, hidden], the rounds'
//              outputs) instead of computed
// All three run the same pipeline and the same code for the row dot products and for the combine, so
// a layer computed in rounds (round..., finish) gives bit for bit what combine gives in one pass. The
// combine arithmetic is moe_combine.wgsl's: the expert sum in pair order, then the shared expert,
// then the residual.
//
// Block-quantised pools (WDTYPE Q8_0, Q5_0, Q4_0, Q4_K, Q5_K, Q6_K: quant.wgsl) hold each expert's rows as
// stored in GGUF files from the slot's first byte (slot * p.slotWords * 4); a lane takes every
// TPR-th unit of a row (Q4_K / Q5_K: coalesced 64-value units, Q8_0: words; quant_gemv.wgsl), and
// gate_up shares each unit's x values between the two matrices (Q8_0 reads them twice, from cache).
//
// x and the weight pools are bound as vec4 arrays. When every row starts on a 16-byte boundary
// (p.aligned: the row length in words is a multiple of 4) a lane reads 4 words (4 or 8 weights) and the
// matching x values per load and does its math on vectors: the row's
// blocks in steps of TPR * UNROLL, each lane issuing its UNROLL loads (per matrix) before their math,
// then the rest one block per lane, per-component accumulators added up at the end. Otherwise it
// reads word by word (vector components indexed at run time), which works for any shape (the dot
// products: vec4_dot.wgsl).
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
  // down_combine only: its mode (above) and whether the shared expert is added.
  mode: u32,
  has_shared: u32,
}

override WG: u32 = 256u;
override TPR: u32 = 32u;
// 16-byte weight loads in flight per lane and matrix in the aligned path: 1 or 2.
override UNROLL: u32 = 2u;
// down_combine: pairs computed side by side (a power of two, TPR * P <= WG).
override P: u32 = 1u;
// gate_up: the expert's input activation: 0 SwiGLU (gate w0, up w1), 1 ReLU of w0 alone.
override ACT: u32 = 0u;
const ACT_SWIGLU: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> w0: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> w1: array<vec4<u32>>;

// down_combine only: the combine weights [T, topK] and the shared expert's output [T, hidden] and gate
// logit [T] (read only when p.has_shared = 1).
@group(0) @binding(6) var<storage, read> cw: array<f32>;
@group(0) @binding(7) var<storage, read> shared_out: array<f32>;
@group(0) @binding(8) var<storage, read> shared_gate: array<f32>;

const MODE_COMBINE: u32 = 0u;
const MODE_ROUND: u32 = 1u;
const MODE_FINISH: u32 = 2u;

// down_combine: the value of each TPR-thread segment's (pair, row), for the row's owner to combine
// (the first WG / TPR entries; sized WG as naga 29 can panic on override-expression sizes).
var<workgroup> seg_val: array<f32, WG>;

// Word i of pool w0 / w1.
fn w0_word(i: u32) -> u32 {
  return w0[i >> 2u][i & 3u];
}
fn w1_word(i: u32) -> u32 {
  return w1[i >> 2u][i & 3u];
}

// The words of unit u of the quantised row starting at byte rb of pool w0 (quant.wgsl).
fn q_load0(rb: u32, u: u32) -> array<u32, QUNIT_WORDS> {
  var w: array<u32, QUNIT_WORDS>;
  for (var i = 0u; i < q_unit_words(); i++) {
    w[i] = w0_word(q_unit_word(rb, u, i));
  }
  return w;
}

// The same from pool w1.
fn q_load1(rb: u32, u: u32) -> array<u32, QUNIT_WORDS> {
  var w: array<u32, QUNIT_WORDS>;
  for (var i = 0u; i < q_unit_words(); i++) {
    w[i] = w1_word(q_unit_word(rb, u, i));
  }
  return w;
}

// Q4_K / Q5_K unit u of the row whose first word is rw (a multiple of 4: slots and rows start on
// 16-byte boundaries) of pool w0.
fn qk_load0(rw: u32, u: u32) -> QkUnit {
  let b = rw + qk_sb_word(u);
  var w: QkUnit;
  w.hdr = w0[b / 4u];
  w.q01 = vec4<u32>(
    w0_word(b + qk_quant_word(u, 0u)),
    w0_word(b + qk_quant_word(u, 1u)),
    w0_word(b + qk_quant_word(u, 2u)),
    w0_word(b + qk_quant_word(u, 3u)),
  );
  w.q23 = vec4<u32>(
    w0_word(b + qk_quant_word(u, 4u)),
    w0_word(b + qk_quant_word(u, 5u)),
    w0_word(b + qk_quant_word(u, 6u)),
    w0_word(b + qk_quant_word(u, 7u)),
  );
  if (WDTYPE == WQ5_K) {
    w.qh = vec2<u32>(w0_word(b + qk_qh_word(u, 0u)), w0_word(b + qk_qh_word(u, 1u)));
  }
  return w;
}

// The same from pool w1 (separate: down_combine binds other data at w1's binding).
fn qk_load1(rw: u32, u: u32) -> QkUnit {
  let b = rw + qk_sb_word(u);
  var w: QkUnit;
  w.hdr = w1[b / 4u];
  w.q01 = vec4<u32>(
    w1_word(b + qk_quant_word(u, 0u)),
    w1_word(b + qk_quant_word(u, 1u)),
    w1_word(b + qk_quant_word(u, 2u)),
    w1_word(b + qk_quant_word(u, 3u)),
  );
  w.q23 = vec4<u32>(
    w1_word(b + qk_quant_word(u, 4u)),
    w1_word(b + qk_quant_word(u, 5u)),
    w1_word(b + qk_quant_word(u, 6u)),
    w1_word(b + qk_quant_word(u, 7u)),
  );
  if (WDTYPE == WQ5_K) {
    w.qh = vec2<u32>(w1_word(b + qk_qh_word(u, 0u)), w1_word(b + qk_qh_word(u, 1u)));
  }
  return w;
}

// x vec4 i (quant.wgsl's qk_dot reads x through it).
fn q_x(i: u32) -> vec4<f32> {
  return x[i];
}

// x values i, i + 1 (i even; quant.wgsl's q8_word_dot reads x through it).
fn q_x2(i: u32) -> vec2<f32> {
  let v = x[i / 4u];
  return select(v.xy, v.zw, (i & 2u) != 0u);
}

// Q8_0: word k of the row starting at byte rb (of q8_words = words) of pool w0 / w1 and the word
// holding its block's d (k clamped into the row: q8_apply drops the product of a k past it).
fn q8_load0(rb: u32, words: u32, k: u32) -> vec2<u32> {
  let kk = min(k, words - 1u);
  return vec2<u32>(w0_word(rb / 4u + kk), w0_word(q8_d_word(rb, q8_block(rb, kk))));
}
fn q8_load1(rb: u32, words: u32, k: u32) -> vec2<u32> {
  let kk = min(k, words - 1u);
  return vec2<u32>(w1_word(rb / 4u + kk), w1_word(q8_d_word(rb, q8_block(rb, kk))));
}

// Q8_0: word k (loaded as w) times x from value xo, 0 past the row's words.
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
    a[i] = x[xo + q_unit_xvec(u, i)];
  }
  return a;
}

// A quiet NaN built from a runtime value: Tint rejects a constant NaN.
fn nan_of(slot: u32) -> f32 {
  return bitcast<f32>(0x7fc00000u | (slot & 1u));
}

fn slot_of(pair: u32) -> u32 {
  let e = ids[pair];
  if (e >= p.experts) {
    return 0xffffffffu;
  }
  return table[e];
}

@compute @workgroup_size(WG)
fn gate_up(@builtin(workgroup_id) wid: vec3<u32>, l: Lanes) {
  let lid = l.lid;
  let pair = wid.y;
  let t = pair / p.topK;
  let row = wid.x * (WG / TPR) + lid / TPR;
  let lane = lid % TPR;
  let slot = slot_of(pair);
  let wpw = w_per_word();
  let rowWords = p.K / wpw;
  var ag = 0.0;
  var au = 0.0;
  if (row < p.rows && slot < p.slots && q_kquant()) {
    let rw = slot * p.slotWords + row * q_row_bytes(p.K) / 4u;
    let xo = t * p.K / 4u;
    for (var u = lane; u < p.K / 64u; u += TPR) {
      let g = qk_load0(rw, u);
      if (ACT == ACT_SWIGLU) {
        let r = qk_dot2(g, qk_load1(rw, u), xo + qk_xvec(u));
        ag += r.x;
        au += r.y;
      } else {
        ag += qk_dot(g, xo + qk_xvec(u));
      }
    }
  } else if (row < p.rows && slot < p.slots && q_q8()) {
    let rb = slot * p.slotWords * 4u + row * q_row_bytes(p.K);
    let xo = t * p.K;
    let words = q8_words(rb, p.K / 32u);
    for (var k = lane; k < words; k += 2u * TPR) {
      let g0 = q8_load0(rb, words, k);
      let g1 = q8_load0(rb, words, k + TPR);
      var u0 = vec2<u32>();
      var u1 = vec2<u32>();
      if (ACT == ACT_SWIGLU) {
        u0 = q8_load1(rb, words, k);
        u1 = q8_load1(rb, words, k + TPR);
      }
      ag += q8_apply(g0, rb, words, k, xo) + q8_apply(g1, rb, words, k + TPR, xo);
      if (ACT == ACT_SWIGLU) {
        au += q8_apply(u0, rb, words, k, xo) + q8_apply(u1, rb, words, k + TPR, xo);
      }
    }
  } else if (row < p.rows && slot < p.slots && q_quantised()) {
    let rb = slot * p.slotWords * 4u + row * q_row_bytes(p.K);
    let qv = q_unit_values();
    for (var u = lane; u < p.K / qv; u += TPR) {
      let xq = q_xs(t * p.K / 4u, u);
      ag += q_unit_dot(q_load0(rb, u), rb, u, xq);
      au += q_unit_dot(q_load1(rb, u), rb, u, xq);
    }
  } else if (row < p.rows && slot < p.slots) {
    let base = slot * p.slotWords + row * rowWords;
    let xb = t * p.K;
    if (p.aligned != 0u) {
      let v0 = base / 4u;
      let nv = rowWords / 4u;
      let xo = xb / 4u;
      let step = TPR * UNROLL;
      let full = nv / step;
      var g0 = vec4<f32>(0.0);
      var g1 = vec4<f32>(0.0);
      var u0 = vec4<f32>(0.0);
      var u1 = vec4<f32>(0.0);
      let gated = ACT == ACT_SWIGLU;
      for (var i = 0u; i < full; i++) {
        let o = i * step + lane;
        let qg0 = w0[v0 + o];
        var qu0 = vec4<u32>();
        var qg1 = vec4<u32>();
        var qu1 = vec4<u32>();
        if (gated) {
          qu0 = w1[v0 + o];
        }
        if (UNROLL > 1u) {
          qg1 = w0[v0 + o + TPR];
          if (gated) {
            qu1 = w1[v0 + o + TPR];
          }
        }
        g0 = quad_fma(g0, qg0, xo + o * wpw);
        if (gated) {
          u0 = quad_fma(u0, qu0, xo + o * wpw);
        }
        if (UNROLL > 1u) {
          g1 = quad_fma(g1, qg1, xo + (o + TPR) * wpw);
          if (gated) {
            u1 = quad_fma(u1, qu1, xo + (o + TPR) * wpw);
          }
        }
      }
      for (var b = full * step + lane; b < nv; b += TPR) {
        g0 = quad_fma(g0, w0[v0 + b], xo + b * wpw);
        if (gated) {
          u0 = quad_fma(u0, w1[v0 + b], xo + b * wpw);
        }
      }
      ag = dot(g0 + g1, vec4<f32>(1.0));
      au = dot(u0 + u1, vec4<f32>(1.0));
    } else {
      for (var j = lane; j < rowWords; j += TPR) {
        let i = base + j;
        ag += dot_word(w0[i >> 2u][i & 3u], xb + j * wpw);
        if (ACT == ACT_SWIGLU) {
          au += dot_word(w1[i >> 2u][i & 3u], xb + j * wpw);
        }
      }
    }
  }
  let r = row_sum2(vec2<f32>(ag, au), l);
  if (lane == 0u && row < p.rows && (slot < p.slots || p.missing_skip == 0u)) {
    let g = r.x;
    var v = max(g, 0.0);
    if (ACT == ACT_SWIGLU) {
      v = g / (1.0 + exp(-g)) * r.y;
    }
    if (slot >= p.slots) {
      v = nan_of(slot);
    }
    out[pair * p.rows + row] = v;
  }
}

// This lane's part of (Wdown[slot] . x[pair])[row] (0 when the row or the slot is out of range).
fn down_partial(pair: u32, row: u32, lane: u32, slot: u32) -> f32 {
  let wpw = w_per_word();
  let rowWords = p.K / wpw;
  var acc = 0.0;
  if (row < p.rows && slot < p.slots && q_kquant()) {
    let rw = slot * p.slotWords + row * q_row_bytes(p.K) / 4u;
    let xo = pair * p.K / 4u;
    for (var u = lane; u < p.K / 64u; u += 2u * TPR) {
      let w0 = qk_load0(rw, u);
      let more = u + TPR < p.K / 64u;
      var w1 = w0;
      if (more) {
        w1 = qk_load0(rw, u + TPR);
      }
      acc += qk_dot(w0, xo + qk_xvec(u));
      if (more) {
        acc += qk_dot(w1, xo + qk_xvec(u + TPR));
      }
    }
  } else if (row < p.rows && slot < p.slots && q_q8()) {
    let rb = slot * p.slotWords * 4u + row * q_row_bytes(p.K);
    let xo = pair * p.K;
    let words = q8_words(rb, p.K / 32u);
    for (var k = lane; k < words; k += 4u * TPR) {
      let w0 = q8_load0(rb, words, k);
      let w1 = q8_load0(rb, words, k + TPR);
      let w2 = q8_load0(rb, words, k + 2u * TPR);
      let w3 = q8_load0(rb, words, k + 3u * TPR);
      acc += q8_apply(w0, rb, words, k, xo) + q8_apply(w1, rb, words, k + TPR, xo) +
        q8_apply(w2, rb, words, k + 2u * TPR, xo) + q8_apply(w3, rb, words, k + 3u * TPR, xo);
    }
  } else if (row < p.rows && slot < p.slots && q_quantised()) {
    let rb = slot * p.slotWords * 4u + row * q_row_bytes(p.K);
    let qv = q_unit_values();
    for (var u = lane; u < p.K / qv; u += TPR) {
      acc += q_unit_dot(q_load0(rb, u), rb, u, q_xs(pair * p.K / 4u, u));
    }
  } else if (row < p.rows && slot < p.slots) {
    let base = slot * p.slotWords + row * rowWords;
    let xb = pair * p.K;
    if (p.aligned != 0u) {
      let v0 = base / 4u;
      let nv = rowWords / 4u;
      let xo = xb / 4u;
      let step = TPR * UNROLL;
      let full = nv / step;
      var a0 = vec4<f32>(0.0);
      var a1 = vec4<f32>(0.0);
      for (var i = 0u; i < full; i++) {
        let o = i * step + lane;
        let q0 = w0[v0 + o];
        var q1 = vec4<u32>();
        if (UNROLL > 1u) {
          q1 = w0[v0 + o + TPR];
        }
        a0 = quad_fma(a0, q0, xo + o * wpw);
        if (UNROLL > 1u) {
          a1 = quad_fma(a1, q1, xo + (o + TPR) * wpw);
        }
      }
      for (var b = full * step + lane; b < nv; b += TPR) {
        a0 = quad_fma(a0, w0[v0 + b], xo + b * wpw);
      }
      acc = dot(a0 + a1, vec4<f32>(1.0));
    } else {
      for (var j = lane; j < rowWords; j += TPR) {
        let i = base + j;
        acc += dot_word(w0[i >> 2u][i & 3u], xb + j * wpw);
      }
    }
  }
  return acc;
}

@compute @workgroup_size(WG)
fn down(@builtin(workgroup_id) wid: vec3<u32>, l: Lanes) {
  let lid = l.lid;
  let pair = wid.y;
  let row = wid.x * (WG / TPR) + lid / TPR;
  let lane = lid % TPR;
  let slot = slot_of(pair);
  let r = row_sum(down_partial(pair, row, lane, slot), l);
  if (lane == 0u && row < p.rows && (slot < p.slots || p.missing_skip == 0u)) {
    var v = r;
    if (slot >= p.slots) {
      v = nan_of(slot);
    }
    out[pair * p.rows + row] = v;
  }
}

// Workgroups: (ceil(hidden / R), T) with R = WG / (TPR * P) rows each. p.K = inter, p.rows = hidden.
// The workgroup's TPR-thread segments are P pair slots x R rows: segment (q, r) computes pair
// j0 + q of row r for j0 = 0, P, 2P, ... (the same lane striding and reduction as `down`, so the
// same bits); the row's owner (slot 0, lane 0) then adds the group's P values in pair order.
@compute @workgroup_size(WG)
fn down_combine(@builtin(workgroup_id) wid: vec3<u32>, l: Lanes) {
  let lid = l.lid;
  let t = wid.y;
  let rows_per = WG / (TPR * P);
  let seg = lid / TPR;
  let q = seg / rows_per;
  let r = seg - q * rows_per;
  let row = wid.x * rows_per + r;
  let lane = lid % TPR;
  let combine = p.mode != MODE_ROUND;
  let owner = lane == 0u && q == 0u && row < p.rows && combine;
  var acc = 0.0;
  for (var j0 = 0u; j0 < p.topK; j0 += P) {
    let has = j0 + q < p.topK;
    let pair = t * p.topK + j0 + q;
    var slot = 0xffffffffu;
    var part = 0.0;
    if (has) {
      slot = slot_of(pair);
      if (p.mode != MODE_FINISH) {
        part = down_partial(pair, row, lane, slot);
      }
    }
    let sum = row_sum(part, l);
    if (lane == 0u && has && row < p.rows) {
      var v = sum;
      if (slot >= p.slots) {
        v = nan_of(slot);
      }
      if (p.mode == MODE_FINISH) {
        v = xs(pair * p.rows + row);
      }
      if (p.mode == MODE_ROUND && slot < p.slots) {
        out[pair * p.rows + row] = v;
      }
      seg_val[seg] = v;
    }
    workgroupBarrier();
    if (owner) {
      for (var i = 0u; i < P; i++) {
        if (j0 + i < p.topK) {
          acc += cw[t * p.topK + j0 + i] * seg_val[i * rows_per + r];
        }
      }
    }
    workgroupBarrier(); // seg_val is written again by the next group
  }
  if (owner) {
    if (p.has_shared != 0u) {
      let g = 1.0 / (1.0 + exp(-shared_gate[t]));
      acc += g * shared_out[t * p.rows + row];
    }
    let i = t * p.rows + row;
    out[i] = out[i] + acc;
  }
}
