// Row reductions of the decode GEMVs (matvec.wgsl, moe.wgsl, qkv.wgsl): the portable variant, a
// tree in workgroup memory (no optional feature). gemv_subgroup.wgsl defines the same struct and
// functions with subgroup operations; linear.ts `gemvLayout` picks one per device and row length,
// and the kernel's source is this file (or that one) followed by the kernel's own files.
//
// The including kernel declares the overrides TPR (threads per row, a power of two) and WG (threads
// per workgroup, a multiple of TPR), takes `l: Lanes` as an entry-point parameter, and gives each
// row TPR consecutive local invocation indices (lane = lid % TPR). Call the functions from uniform
// control flow, with every thread of the workgroup (they contain barriers); a row's sum is returned
// to its lane 0 (the other lanes get partial sums). Consecutive calls need no barrier in between.

// The invocation builtins the reductions need.
struct Lanes {
  @builtin(local_invocation_index) lid: u32,
}

var<workgroup> gemv_red: array<f32, WG>;
var<workgroup> gemv_red2: array<vec2<f32>, WG>;

// The sum of v over the row's TPR threads, at the row's lane 0.
fn row_sum(v: f32, l: Lanes) -> f32 {
  let lid = l.lid;
  let lane = lid % TPR;
  gemv_red[lid] = v;
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      gemv_red[lid] += gemv_red[lid + s];
    }
    workgroupBarrier();
  }
  return gemv_red[lid];
}

// row_sum of two values at once (one set of barriers).
fn row_sum2(v2: vec2<f32>, l: Lanes) -> vec2<f32> {
  let lid = l.lid;
  let lane = lid % TPR;
  gemv_red2[lid] = v2;
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      gemv_red2[lid] += gemv_red2[lid + s];
    }
    workgroupBarrier();
  }
  return gemv_red2[lid];
}
