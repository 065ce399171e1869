// MoE router: per row of E logits, softmax over E and the top-k experts (ties: lower index first),
// written in descending probability order as ids [T, k] (u32) and weights [T, k] (f32). With
// p.renormalize = 1 the k weights are rescaled to sum to 1. A row with a NaN or +inf logit has no
// softmax: its ids are still valid (NaN ranks last) but its weights are NaN, so the MoE output is
// NaN as in the reference model (renormalising over the finite top k would hide the fault).
//
// One workgroup per row (2-D grid); WG threads (a power of two), E <= EMAX, k <= KMAX.
struct Params {
  T: u32,
  E: u32,
  k: u32,
  renormalize: u32,
}

override WG: u32 = 128u;
// Largest expert count (a multiple of 4).
override EMAX: u32 = 512u;
const KMAX: u32 = 16u;
// Finite stand-in for -infinity.
const NEG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;

// vec4 elements: a quarter of the elements for llvmpipe to zero-initialise. Logit e is lg[e/4][e%4].
var<workgroup> lg: array<vec4<f32>, EMAX / 4u>;
var<workgroup> red_v: array<f32, WG>;
var<workgroup> sel: array<u32, KMAX>;
// Set when a thread saw a NaN or +inf logit (zero-initialised per workgroup).
var<workgroup> not_finite: atomic<u32>;

fn logit(e: u32) -> f32 {
  return lg[e >> 2u][e & 3u];
}

// NaN test on the bits (x != x may be folded away by fast-math compilers).
fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Whether expert (av, ai) ranks before (bv, bi): larger logit, then lower index; NaN logits rank
// after every number (a strict total order, so every expert has a distinct rank).
fn before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
  let an = is_nan(av);
  let bn = is_nan(bv);
  if (an || bn) {
    return !an || (bn && ai < bi);
  }
  return av > bv || (av == bv && ai < bi);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= p.T) {
    return;
  }
  let E = p.E;
  let base = t * E;
  var lm = NEG;
  for (var e = lid; e < E; e += WG) {
    let x = logits[base + e];
    lg[e >> 2u][e & 3u] = x;
    lm = max(lm, x);
    if (is_nan(x) || bitcast<u32>(x) == 0x7f800000u) {
      atomicOr(&not_finite, 1u);
    }
  }
  red_v[lid] = lm;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st /= 2u) {
    if (lid < st) {
      red_v[lid] = max(red_v[lid], red_v[lid + st]);
    }
    workgroupBarrier();
  }
  let mx = red_v[0];
  workgroupBarrier();
  var ls = 0.0;
  for (var e = lid; e < E; e += WG) {
    ls += exp(logit(e) - mx);
  }
  red_v[lid] = ls;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st /= 2u) {
    if (lid < st) {
      red_v[lid] += red_v[lid + st];
    }
    workgroupBarrier();
  }
  let total = red_v[0];
  workgroupBarrier();

  // The top k by rank: each thread counts, for each of its experts, the experts that rank before it
  // (compared on logits, which order like the probabilities but cannot tie where the probabilities
  // round to equal values); ranks are distinct, so rank r < k is the r-th choice. One barrier, not k
  // rounds of a workgroup reduction (k = 8 of 128 experts: 8 x 9 barriers before).
  for (var e = lid; e < E; e += WG) {
    let x = logit(e);
    var rank = 0u;
    for (var j = 0u; j < E; j++) {
      if (before(logit(j), j, x, e)) {
        rank++;
        if (rank >= p.k) {
          break;
        }
      }
    }
    if (rank < p.k) {
      sel[rank] = e;
    }
  }
  workgroupBarrier();

  if (lid == 0u) {
    var chosen = 0.0;
    for (var r = 0u; r < p.k; r++) {
      chosen += exp(logit(sel[r]) - mx);
    }
    let denom = select(total, chosen, p.renormalize != 0u);
    let flag = atomicLoad(&not_finite);
    // A quiet NaN built from a runtime value: a constant NaN is a shader-creation error in Tint.
    let nan = bitcast<f32>(0x7fc00000u | flag);
    for (var r = 0u; r < p.k; r++) {
      ids[t * p.k + r] = sel[r];
      weights[t * p.k + r] = select(exp(logit(sel[r]) - mx) / denom, nan, flag != 0u);
    }
  }
}
