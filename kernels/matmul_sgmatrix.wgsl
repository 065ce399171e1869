// Prefill GEMM on subgroup matrices (tensor cores): y[T, N] = x[T, K] · W[N, K]^T (+ y when ACC = 1).
//
// Needs the device features shader-f16 and chromium-experimental-subgroup-matrix (Dawn, with the
// allow_unsafe_apis toggle), the subgroup-matrix configuration f16 x f16 -> f32 at M = N = K = 16
// and 32-wide subgroups (lanes 32s .. 32s+31 of the workgroup form subgroup s); linear.ts checks
// all of it (sgmatrixUnsupported) before it builds this kernel, and matmul.wgsl is the portable one.
//
// Numerics: x (f32, or f16 with XDTYPE = 1) and W are rounded to f16 when staged into workgroup
// memory (f16 values are copied); products and sums
// are f32 (the accumulators are f32 result matrices). bf16 and f32 weights are converted to f16 on
// staging: bf16 has 8 exponent bits, f16 only 5, so values beyond +-65504 become inf and values below
// 6.1e-5 lose precision (f16 subnormals) or flush to 0. Activations have the same f16 range.
//
// Tiling: a workgroup of SGM x SGN subgroups (WG = 32 * SGM * SGN threads) computes a BM x BN block
// of y (BM = 16 * SGM * TM rows of x, BN = 16 * SGN * TN outputs); each subgroup owns TM x TN result
// tiles of 16 x 16 (f32 subgroup matrices, kept for the whole K loop). K is walked in steps of BK (a
// multiple of 16): the x and W slices of a step are read with 16-byte loads (coalesced: consecutive
// threads read consecutive 16-byte pieces of a row), converted, and stored in workgroup memory as f16
// rows of BK + PAD values (the pad staggers rows across memory banks). The loads of step k+1 are
// issued before the products of step k (prefetch into registers); with STAGES = 2 the workgroup
// tiles are double-buffered and a K step costs one barrier, with STAGES = 1 two.
// Both tiles are stored "row = output index, column = k": the x tile is the row-major left matrix;
// the W tile, read column-major, is the right matrix W^T (K rows x N columns), so no transposition
// is needed anywhere.
//
// Edges: rows past T, outputs past N and K values past K are staged as zeros and never stored, so
// any T and N work; K must be a multiple of 8 (every 16-byte load then lies wholly inside or outside
// a row). Results go through a per-subgroup 16 x 16 f32 scratch tile in workgroup memory to y, which
// masks the edges and adds the old y when ACC = 1.
//
// Workgroup memory: 2 * STAGES * (BM + BN) * (BK + PAD) + 4 * 256 * SGM * SGN bytes.
// Dispatch: (ceil(N / BN), ceil(T / BM), 1) workgroups.
//
// Entry points: `main` walks the tiles, loads and 16-wide K steps in loops over arrays; the
// generated `main_unrolled` (kernels/sgmatrix_unroll.ts, appended per tiling) writes those loops out
// with a variable per matrix and load, which a driver can keep in registers (docs/decisions.md).
// SgmatrixTuning.UNROLLED picks it.
//
// Source: the staging head (matmul_sgmatrix_head.wgsl: the enable directives, the matrix types), one
// tile layout and the staging tail (matmul_sgmatrix_tail.wgsl: the epilogue's scratch tiles cs and
// the primitives get_c, mma, store_c and f16x2), then this file (and the generated entry):
// - matmul_sgmatrix_scalar.wgsl: the tiles are array<f16>, written one f16 at a time;
// - matmul_sgmatrix_vec4.wgsl: the tiles are array<vec4<f16>>, written 4 values per store (the
//   subgroup-matrix loads then count offsets and strides in vec4s).
// A layout declares the workgroup arrays xs and ws and the primitives put_x4, put_x4h, put_w4,
// load_a and load_b (matmul_sgmatrix_test.ts swaps all three for an emulated include).


struct Params {
  T: u32,
  K: u32,
  N: u32,
}

// Subgroups along T (rows of x) and along N (outputs).
override SGM: u32 = 2u;
override SGN: u32 = 2u;
// 16 x 16 result tiles per subgroup along T and along N (each <= 4).
override TM: u32 = 4u;
override TN: u32 = 4u;
// K step (a multiple of 16).
override BK: u32 = 32u;
// Workgroup tile buffers: 1 or 2.
override STAGES: u32 = 2u;
// Threads per workgroup; must be 32 * SGM * SGN.
override WG: u32 = 128u;
// Weight dtype: 0 = f32, 1 = f16, 2 = bf16 (as dtype.wgsl; 16-bit values two per word, low first).
override WDTYPE: u32 = 1u;
// Activation dtype: 0 = f32, 1 = f16 (two per word, low first).
override XDTYPE: u32 = 0u;
// 1: add the product to the existing y; 0: overwrite y.
override ACC: u32 = 0u;
// Subgroup width the lane layout assumes.
const SG: u32 = 32u;
// f16 values of padding after each staged row of BK values.
const PAD: u32 = 8u;
// Most 16-byte global loads per thread and K step, for x and for W.
const MAX_XV: u32 = 16u;
const MAX_WV: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;


// Weight values per 16-byte load: 8 for the 16-bit dtypes, 4 for f32.
fn w_per_load() -> u32 {
  return select(8u, 4u, WDTYPE == 0u);
}

// Activation values per 16-byte load: 4 for f32, 8 for f16.
fn x_per_load() -> u32 {
  return select(4u, 8u, XDTYPE == 1u);
}

// Load e (= lid + i * WG for the thread's i-th) of the x slice x[t0 .. t0+BM, k0 .. k0+BK], as
// words: 4 values of one row for f32, 8 for f16; zeros past T and K and for e past the slice.
fn fetch_x1(t0: u32, k0: u32, e: u32) -> vec4<u32> {
  let vals = x_per_load();
  let per_row = BK / vals;
  let t = t0 + e / per_row;
  let k = k0 + (e % per_row) * vals;
  // Words per x row: K for f32, K / 2 for f16.
  let row_words = select(p.K, p.K / 2u, XDTYPE == 1u);
  let word_vals = select(1u, 2u, XDTYPE == 1u);
  if (e < SGM * TM * 16u * per_row && t < p.T && k < p.K) {
    return x[(t * row_words + k / word_vals) / 4u];
  }
  return vec4<u32>(0u);
}

// Stores load e of fetch_x1 into stage `stage` of xs as f16 (nothing for e past the slice).
fn put_x1(stage: u32, e: u32, v: vec4<u32>) {
  let vals = x_per_load();
  let per_row = BK / vals;
  if (e < SGM * TM * 16u * per_row) {
    let lds = BK + PAD;
    let o = stage * SGM * TM * 16u * lds + (e / per_row) * lds + (e % per_row) * vals;
    if (XDTYPE == 0u) {
      put_x4(o, bitcast<vec4<f32>>(v));
    } else {
      put_x4h(o, vec4<h16>(f16x2(v.x), f16x2(v.y)));
      put_x4h(o + 4u, vec4<h16>(f16x2(v.z), f16x2(v.w)));
    }
  }
}

// Load e of the W slice W[n0 .. n0+BN, k0 .. k0+BK] as packed words: 8 values of one row for the
// 16-bit dtypes, 4 for f32; zeros past N and K and for e past the slice.
fn fetch_w1(n0: u32, k0: u32, e: u32) -> vec4<u32> {
  let vals = w_per_load();
  let per_row = BK / vals;
  let n = n0 + e / per_row;
  let k = k0 + (e % per_row) * vals;
  // Words per W row: K for f32, K / 2 for 16-bit dtypes.
  let row_words = select(p.K / 2u, p.K, WDTYPE == 0u);
  let word_vals = select(2u, 1u, WDTYPE == 0u);
  if (e < SGN * TN * 16u * per_row && n < p.N && k < p.K) {
    return w[(n * row_words + k / word_vals) / 4u];
  }
  return vec4<u32>(0u);
}

// The two weights of a 16-bit word as f16 (low half first).
fn w_pair(word: u32) -> vec2<h16> {
  if (WDTYPE == 2u) {
    let f = vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
    return vec2<h16>(f);
  }
  return f16x2(word);
}

// Stores load e of fetch_w1 into stage `stage` of ws as f16 (nothing for e past the slice).
fn put_w1(stage: u32, e: u32, v: vec4<u32>) {
  let vals = w_per_load();
  let per_row = BK / vals;
  if (e < SGN * TN * 16u * per_row) {
    let lds = BK + PAD;
    let o = stage * SGN * TN * 16u * lds + (e / per_row) * lds + (e % per_row) * vals;
    if (WDTYPE == 0u) {
      put_w4(o, vec4<h16>(bitcast<vec4<f32>>(v)));
    } else {
      put_w4(o, vec4<h16>(w_pair(v.x), w_pair(v.y)));
      put_w4(o + 4u, vec4<h16>(w_pair(v.z), w_pair(v.w)));
    }
  }
}

// 16-byte loads per thread and K step: of x, of W.
fn x_loads() -> u32 {
  return (SGM * TM * 16u * (BK / x_per_load()) + WG - 1u) / WG;
}
fn w_loads() -> u32 {
  return (SGN * TN * 16u * (BK / w_per_load()) + WG - 1u) / WG;
}

// This thread's share of the x slice at (t0, k0), into r.
fn fetch_x(t0: u32, k0: u32, lid: u32, r: ptr<function, array<vec4<u32>, MAX_XV>>) {
  for (var i = 0u; i < x_loads(); i++) {
    (*r)[i] = fetch_x1(t0, k0, lid + i * WG);
  }
}

// Stores r (from fetch_x) into stage `stage` of xs.
fn put_x(stage: u32, lid: u32, r: ptr<function, array<vec4<u32>, MAX_XV>>) {
  for (var i = 0u; i < x_loads(); i++) {
    put_x1(stage, lid + i * WG, (*r)[i]);
  }
}

// This thread's share of the W slice at (n0, k0), into r.
fn fetch_w(n0: u32, k0: u32, lid: u32, r: ptr<function, array<vec4<u32>, MAX_WV>>) {
  for (var i = 0u; i < w_loads(); i++) {
    (*r)[i] = fetch_w1(n0, k0, lid + i * WG);
  }
}

// Stores r (from fetch_w) into stage `stage` of ws.
fn put_w(stage: u32, lid: u32, r: ptr<function, array<vec4<u32>, MAX_WV>>) {
  for (var i = 0u; i < w_loads(); i++) {
    put_w1(stage, lid + i * WG, (*r)[i]);
  }
}

// Writes the 16 x 16 result tile c at rows t .., outputs n .. of y through this subgroup's scratch
// tile cs[cso ..]: lane l writes column l % 16 of rows l / 16, l / 16 + 2, ... (two 64-byte row
// pieces per store), masked at the edges, adding the old y when ACC = 1.
fn store_tile(cso: u32, lane: u32, t: u32, n: u32, c: mat_c) {
  store_c(cso, c);
  workgroupBarrier();
  let col = lane % 16u;
  for (var s = 0u; s < 8u; s++) {
    let r = lane / 16u + 2u * s;
    if (t + r < p.T && n + col < p.N) {
      let idx = (t + r) * p.N + n + col;
      var v = get_c(cso + r * 16u + col);
      if (ACC != 0u) {
        v += y[idx];
      }
      y[idx] = v;
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let lds = BK + PAD;
  let bm = SGM * TM * 16u;
  let bn = SGN * TN * 16u;
  let t0 = wid.y * bm;
  let n0 = wid.x * bn;
  let sg = lid / SG;
  let lane = lid % SG;
  let sgm = sg % SGM;
  let sgn = sg / SGM;
  // This subgroup's first x row and first W row within a stage.
  let a_base = sgm * TM * 16u * lds;
  let b_base = sgn * TN * 16u * lds;

  var acc: array<mat_c, MAX_TM * MAX_TN>;
  for (var i = 0u; i < TM * TN; i++) {
    acc[i] = mat_c();
  }
  var a: array<mat_a, MAX_TM>;
  var xr: array<vec4<u32>, MAX_XV>;
  var wr: array<vec4<u32>, MAX_WV>;

  let nk = (p.K + BK - 1u) / BK;
  fetch_x(t0, 0u, lid, &xr);
  fetch_w(n0, 0u, lid, &wr);
  put_x(0u, lid, &xr);
  put_w(0u, lid, &wr);
  workgroupBarrier();

  for (var kt = 0u; kt < nk; kt++) {
    let cur = select(0u, kt % 2u, STAGES == 2u);
    let more = kt + 1u < nk;
    if (more) {
      fetch_x(t0, (kt + 1u) * BK, lid, &xr);
      fetch_w(n0, (kt + 1u) * BK, lid, &wr);
    }
    let xo = cur * bm * lds + a_base;
    let wo = cur * bn * lds + b_base;
    for (var kk = 0u; kk < BK; kk += 16u) {
      for (var i = 0u; i < TM; i++) {
        a[i] = load_a(xo + i * 16u * lds + kk);
      }
      for (var j = 0u; j < TN; j++) {
        let b = load_b(wo + j * 16u * lds + kk);
        for (var i = 0u; i < TM; i++) {
          acc[i * TN + j] = mma(a[i], b, acc[i * TN + j]);
        }
      }
    }
    if (STAGES == 1u) {
      workgroupBarrier(); // everyone is done reading the only stage
    }
    if (more) {
      let nxt = select(0u, 1u - cur, STAGES == 2u);
      put_x(nxt, lid, &xr);
      put_w(nxt, lid, &wr);
    }
    workgroupBarrier();
  }

  // Epilogue, one result tile at a time.
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) {
      store_tile(sg * 256u, lane, t0 + (sgm * TM + i) * 16u, n0 + (sgn * TN + j) * 16u, acc[i * TN + j]);
    }
  }
}
