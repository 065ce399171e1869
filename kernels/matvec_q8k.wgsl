// Decode GEMV of Q4_K / Q5_K weights with Q8_K activations (quantize_q8k.wgsl), as llama.cpp's dot
// products take them: y[t, n] = sum over super-blocks s of xd[t, s] · (d · isum - dmin · msum)
// (+ y[t, n] when ACC = 1), where isum = sum_j scale_j · sum_i q_i · xq_i and msum = sum_j min_j ·
// sum_i xq_i over the super-block's sub-blocks j, exact in 32-bit integers (dot4I8Packed: 4-bit
// or 5-bit quants times int8 activations, four at a time).
//
// The lanes of a row take its 64-value units as matvec.wgsl's Q4_K / Q5_K path does (the unit layout
// of quant_gemv.wgsl): lane slot r of super-block s holds quant words 8 c + 4 h + r, whose low
// nibbles are values 64 c + 16 h + 4 r + k and high nibbles those + 32; their activations are words
// 64 s + 16 c + 4 h + r (+ 8) of the row of xq, contiguous across the four lanes of a super-block.
// A lane's partial isum and msum of a unit become f32 with the super-block's scales, and the row's
// lanes are reduced by `row_sum` (gemv_tree.wgsl or gemv_subgroup.wgsl, before this file).
//
// Dispatch: ceil(N / (WG / TPR)) workgroups as a 2-D grid (linear index wid.x + wid.y * nwg.x).
struct Params {
  T: u32,
  K: u32,
  N: u32,
  _pad: u32,
}

// Threads per weight row (a power of two) and per workgroup (TPR * rows per workgroup).
override TPR: u32 = 32u;
override WG: u32 = 128u;
// 1: add the product to the existing y; 0: overwrite y.
override ACC: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> xd: array<f32>;
@group(0) @binding(3) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> wu: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const NIBBLES: u32 = 0x0f0f0f0fu;
const ONES: u32 = 0x01010101u;

// The four quants of word q as bytes: its low (shift 0) or high (shift 4) nibbles, with Q5_K's bit
// `bit` of each byte of qh as their fifth bit.
fn qk_bytes(q: u32, shift: u32, qh: u32, bit: u32) -> u32 {
  var b = (q >> shift) & NIBBLES;
  if (WDTYPE == WQ5_K) {
    b |= ((qh >> bit) & ONES) << 4u;
  }
  return b;
}

// Group c of unit w (quant words q0, q1) times the activations from word xi + 16 c of xq:
// (isum, msum) of its 16 values.
fn qk_igroup(w: QkUnit, c: u32, q0: u32, q1: u32, xi: u32) -> vec2<i32> {
  let i = xi + 16u * c;
  let xl0 = xq[i];
  let xl1 = xq[i + 4u];
  let xh0 = xq[i + 8u];
  let xh1 = xq[i + 12u];
  let sm = vec4<i32>(qk_scale_min(w.hdr, c));
  let lo = dot4I8Packed(qk_bytes(q0, 0u, w.qh.x, 2u * c), xl0) +
    dot4I8Packed(qk_bytes(q1, 0u, w.qh.y, 2u * c), xl1);
  let hi = dot4I8Packed(qk_bytes(q0, 4u, w.qh.x, 2u * c + 1u), xh0) +
    dot4I8Packed(qk_bytes(q1, 4u, w.qh.y, 2u * c + 1u), xh1);
  let bl = dot4I8Packed(ONES, xl0) + dot4I8Packed(ONES, xl1);
  let bh = dot4I8Packed(ONES, xh0) + dot4I8Packed(ONES, xh1);
  return vec2<i32>(sm.x * lo + sm.y * hi, sm.z * bl + sm.w * bh);
}

// Unit w times the activations from word xi of xq, whose block scale is dx.
fn qk_idot(w: QkUnit, xi: u32, dx: f32) -> f32 {
  let s = qk_igroup(w, 0u, w.q01.x, w.q01.y, xi) + qk_igroup(w, 1u, w.q01.z, w.q01.w, xi) +
    qk_igroup(w, 2u, w.q23.x, w.q23.y, xi) + qk_igroup(w, 3u, w.q23.z, w.q23.w, xi);
  let dm = unpack2x16float(w.hdr.x);
  return (dx * dm.x) * f32(s.x) - (dx * dm.y) * f32(s.y);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  l: Lanes,
) {
  let row0 = (wid.x + wid.y * nwg.x) * (WG / TPR);
  if (row0 >= p.N) {
    return;
  }
  let lane = l.lid % TPR;
  let n = row0 + l.lid / TPR;
  let rw = n * q_row_bytes(p.K) / 4u;
  let units = select(0u, p.K / 64u, n < p.N); // rows past N are empty (but join the reductions)
  for (var t = 0u; t < p.T; t++) {
    let xw = t * p.K / 4u;
    let xs = t * p.K / 256u;
    var acc = 0.0;
    // Every TPR-th unit, two units' loads in flight before their math.
    for (var u = lane; u < units; u += 2u * TPR) {
      let w0 = qk_load(rw, u);
      let u1 = u + TPR;
      let more = u1 < units;
      var w1 = w0;
      if (more) {
        w1 = qk_load(rw, u1);
      }
      acc += qk_idot(w0, xw + qk_xvec(u), xd[xs + u / 4u]);
      if (more) {
        acc += qk_idot(w1, xw + qk_xvec(u1), xd[xs + u1 / 4u]);
      }
    }
    let r = row_sum(acc, l);
    if (lane == 0u && n < p.N) {
      let idx = t * p.N + n;
      var out = r;
      if (ACC != 0u) {
        out += y[idx];
      }
      y[idx] = out;
    }
  }
}
