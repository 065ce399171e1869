enable subgroups;

// Row reductions of the decode GEMVs (matvec.wgsl, moe.wgsl, qkv.wgsl): the subgroup variant, the
// same struct and functions as gemv_tree.wgsl (read its header for the contract). Used only where
// the device has the `subgroups` feature and subgroups of exactly SG lanes (`gemvLayout`); WG must
// be a multiple of SG, TPR a power of two:
//   TPR == SG: subgroupAdd;  TPR < SG: subgroupShuffleXor butterfly over the row's lanes;
//   TPR > SG: subgroupAdd, then the row's TPR / SG subgroup sums added through workgroup memory,
//   ending with a barrier, so the functions can be called repeatedly (a pass per token).
// A row's lanes are assumed to be consecutive lanes of one subgroup (subgroups made of consecutive
// local invocation indices, as on the hardware it was validated on), and a run-time subgroup size
// other than SG gives NaN instead of a wrong sum.

struct Lanes {
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_size) sgs: u32,
  @builtin(subgroup_invocation_id) sgi: u32,
}

// The subgroup size this code is written for.
const SG: u32 = 32u;

// TPR > SG: the subgroup sums of the workgroup (the first WG / SG entries; sized WG because wgpu's
// WGSL compiler, naga 29, panics on override-expression sizes such as WG / SG here).
var<workgroup> gemv_red: array<f32, WG>;
var<workgroup> gemv_red2: array<vec2<f32>, WG>;

// NaN (built from a run-time value) when the subgroup size is not the one the code assumes.
fn sg_checked(v: f32, l: Lanes) -> f32 {
  return select(v, bitcast<f32>(0x7fc00000u | l.sgs), l.sgs != SG);
}

// The sum of v over the row's TPR threads, at the row's lane 0.
fn row_sum(v: f32, l: Lanes) -> f32 {
  if (TPR == SG) {
    return sg_checked(subgroupAdd(v), l);
  }
  if (TPR < SG) {
    var t = v;
    for (var o = TPR / 2u; o > 0u; o >>= 1u) {
      t += subgroupShuffleXor(t, o);
    }
    return sg_checked(t, l);
  }
  let nsg = WG / SG;
  let per = TPR / SG;
  let t = subgroupAdd(v);
  if (l.sgi == 0u) {
    gemv_red[min(l.lid / SG, nsg - 1u)] = t;
  }
  workgroupBarrier();
  var r = 0.0;
  let tr = l.lid / TPR;
  for (var k = 0u; k < per; k++) {
    r += gemv_red[tr * per + k];
  }
  workgroupBarrier(); // gemv_red is written again by the next call
  return sg_checked(r, l);
}

// row_sum of two values at once.
fn row_sum2(v2: vec2<f32>, l: Lanes) -> vec2<f32> {
  let bad = vec2<bool>(l.sgs != SG);
  let nan2 = vec2<f32>(bitcast<f32>(0x7fc00000u | l.sgs));
  if (TPR == SG) {
    return select(subgroupAdd(v2), nan2, bad);
  }
  if (TPR < SG) {
    var t2 = v2;
    for (var o = TPR / 2u; o > 0u; o >>= 1u) {
      t2 += subgroupShuffleXor(t2, o);
    }
    return select(t2, nan2, bad);
  }
  let nsg = WG / SG;
  let per = TPR / SG;
  let t2 = subgroupAdd(v2);
  if (l.sgi == 0u) {
    gemv_red2[min(l.lid / SG, nsg - 1u)] = t2;
  }
  workgroupBarrier();
  var r2 = vec2<f32>(0.0);
  let tr = l.lid / TPR;
  for (var k = 0u; k < per; k++) {
    r2 += gemv_red2[tr * per + k];
  }
  workgroupBarrier();
  return select(r2, nan2, bad);
}
