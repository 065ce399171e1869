// Row normalisations of f32 rows of p.dim values (row r at r * p.dim), one workgroup per row on a 2-D
// grid of workgroups (linear index wid.x + wid.y * nwg.x), statistics in f32 by a workgroup tree
// reduction. Every thread reads and writes only the elements i = lid, lid + WG, ... of its row, so
// the in-place entry points (`*_inplace`, x read and written through one binding) are race-free.
//
//   rmsnorm:   y = x * inverseSqrt(mean(x^2) + eps) * (w + offset)            (HF LlamaRMSNorm, T5)
//   layernorm: y = (x - mean(x)) * inverseSqrt(var(x) + eps) * w (+ b)        (torch LayerNorm)
struct Params {
  rows: u32,
  dim: u32,
  eps: f32,
  // rmsnorm: added to the weight (1.0 for Gemma-style norms); layernorm: unused.
  offset: f32,
}

// Threads per workgroup (one row each); a power of two.
override WG: u32 = 256u;
// layernorm: whether `bias` is added (when false the kernel never reads it).
override BIAS: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
// rmsnorm: out at binding 3.
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;
// layernorm: bias at binding 3 (bind the weight again when BIAS is false), out at binding 4.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<f32>;
// In-place entry points: x read and written at binding 1.
@group(0) @binding(1) var<storage, read_write> xio: array<f32>;

var<workgroup> red: array<f32, WG>;

// The sum of v over the workgroup (every thread gets it). Call from uniform control flow.
fn wg_sum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red[lid] += red[lid + s];
    }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

// This thread's sum of squares of its elements of the row at `base`: four loads in flight per step.
fn sum_sq_x(base: u32, lid: u32) -> f32 {
  var s4 = vec4<f32>(0.0);
  let last = base + p.dim - 1u;
  for (var i = lid; i < p.dim; i += 4u * WG) {
    let v = vec4<f32>(
      x[min(base + i, last)],
      x[min(base + i + WG, last)],
      x[min(base + i + 2u * WG, last)],
      x[min(base + i + 3u * WG, last)],
    );
    let live = vec4<bool>(true, i + WG < p.dim, i + 2u * WG < p.dim, i + 3u * WG < p.dim);
    s4 += select(vec4<f32>(0.0), v * v, live);
  }
  return (s4.x + s4.y) + (s4.z + s4.w);
}

// As sum_sq_x, through the in-place binding.
fn sum_sq_xio(base: u32, lid: u32) -> f32 {
  var s4 = vec4<f32>(0.0);
  let last = base + p.dim - 1u;
  for (var i = lid; i < p.dim; i += 4u * WG) {
    let v = vec4<f32>(
      xio[min(base + i, last)],
      xio[min(base + i + WG, last)],
      xio[min(base + i + 2u * WG, last)],
      xio[min(base + i + 3u * WG, last)],
    );
    let live = vec4<bool>(true, i + WG < p.dim, i + 2u * WG < p.dim, i + 3u * WG < p.dim);
    s4 += select(vec4<f32>(0.0), v * v, live);
  }
  return (s4.x + s4.y) + (s4.z + s4.w);
}

@compute @workgroup_size(WG)
fn rmsnorm(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) {
    return;
  }
  let base = row * p.dim;
  let ss = sum_sq_x(base, lid);
  let r = inverseSqrt(wg_sum(ss, lid) / f32(p.dim) + p.eps);
  for (var i = lid; i < p.dim; i += WG) {
    out3[base + i] = (x[base + i] * r) * (weight[i] + p.offset);
  }
}

@compute @workgroup_size(WG)
fn rmsnorm_inplace(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) {
    return;
  }
  let base = row * p.dim;
  let ss = sum_sq_xio(base, lid);
  let r = inverseSqrt(wg_sum(ss, lid) / f32(p.dim) + p.eps);
  for (var i = lid; i < p.dim; i += WG) {
    xio[base + i] = (xio[base + i] * r) * (weight[i] + p.offset);
  }
}

@compute @workgroup_size(WG)
fn layernorm(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) {
    return;
  }
  let base = row * p.dim;
  let n = f32(p.dim);
  var s = 0.0;
  for (var i = lid; i < p.dim; i += WG) {
    s += x[base + i];
  }
  let mean = wg_sum(s, lid) / n;
  // Two-pass variance (biased, as torch): no cancellation for rows with a large mean.
  var ss = 0.0;
  for (var i = lid; i < p.dim; i += WG) {
    let d = x[base + i] - mean;
    ss += d * d;
  }
  let r = inverseSqrt(wg_sum(ss, lid) / n + p.eps);
  for (var i = lid; i < p.dim; i += WG) {
    var y = ((x[base + i] - mean) * r) * weight[i];
    if (BIAS) {
      y += bias[i];
    }
    out4[base + i] = y;
  }
}

@compute @workgroup_size(WG)
fn layernorm_inplace(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) {
    return;
  }
  let base = row * p.dim;
  let n = f32(p.dim);
  var s = 0.0;
  for (var i = lid; i < p.dim; i += WG) {
    s += xio[base + i];
  }
  let mean = wg_sum(s, lid) / n;
  var ss = 0.0;
  for (var i = lid; i < p.dim; i += WG) {
    let d = xio[base + i] - mean;
    ss += d * d;
  }
  let r = inverseSqrt(wg_sum(ss, lid) / n + p.eps);
  for (var i = lid; i < p.dim; i += WG) {
    var y = ((xio[base + i] - mean) * r) * weight[i];
    if (BIAS) {
      y += bias[i];
    }
    xio[base + i] = y;
  }
}
