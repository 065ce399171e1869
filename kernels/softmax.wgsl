// Row-wise softmax of f32 rows of p.cols values (row r at r * p.cols), numerically stable
// (max-subtracted), one workgroup per row on a 2-D grid of workgroups (linear index
// wid.x + wid.y * nwg.x), in f32. Every thread reads and writes only the elements c = lid, lid + WG,
// ... of its row, so the in-place entry point (x read and written at binding 1) is race-free.
struct Params {
  rows: u32,
  cols: u32,
}

// Threads per workgroup (one row each); a power of two.
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// In-place entry point: x read and written at binding 1.
@group(0) @binding(1) var<storage, read_write> xio: array<f32>;

var<workgroup> red: array<f32, WG>;

// The maximum (MAX true) or the sum of v over the workgroup, for every thread. Call from uniform
// control flow.
fn wg_reduce(v: f32, lid: u32, MAX: bool) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let o = red[lid + s];
      red[lid] = select(red[lid] + o, max(red[lid], o), MAX);
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// The most negative finite f32: the identity of max for threads without a column.
const LOWEST: f32 = -3.40282346638528859812e+38;

@compute @workgroup_size(WG)
fn softmax(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) {
    return;
  }
  let base = row * p.cols;
  var m = LOWEST;
  for (var c = lid; c < p.cols; c += WG) {
    m = max(m, x[base + c]);
  }
  m = wg_reduce(m, lid, true);
  var s = 0.0;
  for (var c = lid; c < p.cols; c += WG) {
    s += exp(x[base + c] - m);
  }
  let inv = 1.0 / wg_reduce(s, lid, false);
  for (var c = lid; c < p.cols; c += WG) {
    out[base + c] = exp(x[base + c] - m) * inv;
  }
}

@compute @workgroup_size(WG)
fn softmax_inplace(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) {
    return;
  }
  let base = row * p.cols;
  var m = LOWEST;
  for (var c = lid; c < p.cols; c += WG) {
    m = max(m, xio[base + c]);
  }
  m = wg_reduce(m, lid, true);
  var s = 0.0;
  for (var c = lid; c < p.cols; c += WG) {
    s += exp(xio[base + c] - m);
  }
  let inv = 1.0 / wg_reduce(s, lid, false);
  for (var c = lid; c < p.cols; c += WG) {
    xio[base + c] = exp(xio[base + c] - m) * inv;
  }
}
