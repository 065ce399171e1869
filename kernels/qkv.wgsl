// An attention block's q, k and v projections in one dispatch (decode GEMV): for the p.T rows t of
// x (a few tokens),
//   q[t, n] = Wq[n, :] . x[t, :]  (n < p.nq),   k[t, n] = Wk[n, :] . x[t, :],
//   v[t, n] = Wv[n, :] . x[t, :]  (n < p.nkv)
// Weights [N, K] in their file layout, packed words of WDTYPE (dtype.wgsl), bound as vec4<u32>
// arrays; x is bound as a vec4<f32> array (dot products: vec4_dot.wgsl).
//
// A workgroup owns ROWS = WG / TPR consecutive rows of one matrix: workgroups [0, gq) rows of Wq,
// [gq, gq + gkv) rows of Wk, [gq + gkv, gq + 2 gkv) rows of Wv (2-D grid, linear index
// wid.x + wid.y * nwg.x). TPR threads share a row: when every row starts on a 16-byte boundary
// (p.aligned) each lane reads 4 words (4 or 8 weights) per load, UNROLL loads in flight (as
// matvec.wgsl's aligned path), else word by word; then `row_sum` (gemv_tree.wgsl, or
// gemv_subgroup.wgsl on devices with subgroups, before this file in the source; linear.ts
// `gemvLayout` picks TPR, WG, UNROLL and the reduction). The tokens are taken one pass each (later
// passes re-read the workgroup's rows from cache).
//
// qkv_bias: q[t] += bq, k[t] += bk, v[t] += bv (Qwen2-MoE's projection biases) in one dispatch, one
// thread per element.
//
// qkv_clamp: q, k and v clamped to [-p.clip, p.clip] in place (OLMoE's clip_qkv) in one dispatch, one
// thread per element.
struct Params {
  T: u32,
  K: u32,
  nq: u32,
  nkv: u32,
  gq: u32,
  gkv: u32,
  aligned: u32,
  // qkv_clamp: the bound.
  clip: f32,
}

override WG: u32 = 256u;
override TPR: u32 = 32u;
// 16-byte weight loads in flight per lane in the aligned path: 1 or 2.
override UNROLL: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> wk: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> q: array<f32>;
@group(0) @binding(6) var<storage, read_write> k: array<f32>;
@group(0) @binding(7) var<storage, read_write> v: array<f32>;

// qkv_bias bindings.
@group(0) @binding(1) var<storage, read_write> q_io: array<f32>;
@group(0) @binding(2) var<storage, read_write> k_io: array<f32>;
@group(0) @binding(3) var<storage, read_write> v_io: array<f32>;
@group(0) @binding(4) var<storage, read> bq: array<f32>;
@group(0) @binding(5) var<storage, read> bk: array<f32>;
@group(0) @binding(6) var<storage, read> bv: array<f32>;

// Four words of matrix m (0 q, 1 k, 2 v) at vec4 index i.
fn wload(m: u32, i: u32) -> vec4<u32> {
  var w: vec4<u32>;
  switch m {
    case 0u: {
      w = wq[i];
    }
    case 1u: {
      w = wk[i];
    }
    default: {
      w = wv[i];
    }
  }
  return w;
}

fn store(m: u32, i: u32, value: f32) {
  switch m {
    case 0u: {
      q[i] = value;
    }
    case 1u: {
      k[i] = value;
    }
    default: {
      v[i] = value;
    }
  }
}

@compute @workgroup_size(WG)
fn qkv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  l: Lanes,
) {
  let lid = l.lid;
  let g = wid.x + wid.y * nwg.x;
  if (g >= p.gq + 2u * p.gkv) {
    return;
  }
  var m = 0u;
  var g0 = 0u;
  var n = p.nq;
  if (g >= p.gq) {
    m = 1u;
    g0 = p.gq;
    n = p.nkv;
  }
  if (g >= p.gq + p.gkv) {
    m = 2u;
    g0 = p.gq + p.gkv;
  }
  let row = (g - g0) * (WG / TPR) + lid / TPR;
  let lane = lid % TPR;
  let live = row < n;
  let wpw = w_per_word();
  let rowWords = p.K / wpw;
  let base = row * rowWords;
  for (var t = 0u; t < p.T; t++) {
    var acc = 0.0;
    if (live) {
      let xb = t * p.K;
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
          let q0 = wload(m, v0 + o);
          var q1 = vec4<u32>();
          if (UNROLL > 1u) {
            q1 = wload(m, v0 + o + TPR);
          }
          a0 = quad_fma(a0, q0, xo + o * wpw);
          if (UNROLL > 1u) {
            a1 = quad_fma(a1, q1, xo + (o + TPR) * wpw);
          }
        }
        for (var b = full * step + lane; b < nv; b += TPR) {
          a0 = quad_fma(a0, wload(m, v0 + b), xo + b * wpw);
        }
        acc = dot(a0 + a1, vec4<f32>(1.0));
      } else {
        for (var j = lane; j < rowWords; j += TPR) {
          let i = base + j;
          acc += dot_word(wload(m, i >> 2u)[i & 3u], xb + j * wpw);
        }
      }
    }
    let r = row_sum(acc, l);
    if (lane == 0u && live) {
      store(m, t * n + row, r);
    }
  }
}

@compute @workgroup_size(WG)
fn qkv_bias(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let per = p.nq + 2u * p.nkv;
  if (i >= p.T * per) {
    return;
  }
  let t = i / per;
  let c = i - t * per;
  if (c < p.nq) {
    let j = t * p.nq + c;
    q_io[j] = q_io[j] + bq[c];
  } else if (c < p.nq + p.nkv) {
    let e = c - p.nq;
    let j = t * p.nkv + e;
    k_io[j] = k_io[j] + bk[e];
  } else {
    let e = c - p.nq - p.nkv;
    let j = t * p.nkv + e;
    v_io[j] = v_io[j] + bv[e];
  }
}

@compute @workgroup_size(WG)
fn qkv_clamp(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let nq = p.T * p.nq;
  let nkv = p.T * p.nkv;
  if (i < nq) {
    q_io[i] = clamp(q_io[i], -p.clip, p.clip);
  } else if (i < nq + nkv) {
    let j = i - nq;
    k_io[j] = clamp(k_io[j], -p.clip, p.clip);
  } else if (i < nq + 2u * nkv) {
    let j = i - nq - nkv;
    v_io[j] = clamp(v_io[j], -p.clip, p.clip);
  }
}
