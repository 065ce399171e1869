// Elementwise kernels over f32 vectors of length p.n, one thread per element, 2-D grid of workgroups.
struct Params {
  n: u32,
  // scale: the factor.
  s: f32,
  // add_bias: the bias length (elements per row); p.n is rows * cols.
  cols: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// In-place entry points: x read and written at binding 1 (y, when there is one, is `b`).
@group(0) @binding(1) var<storage, read_write> xio: array<f32>;

// out = a + b (residual add).
@compute @workgroup_size(WG)
fn add(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  out[i] = a[i] + b[i];
}

// x += y (residual add into the residual stream).
@compute @workgroup_size(WG)
fn add_inplace(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  xio[i] = xio[i] + b[i];
}

// x *= s.
@compute @workgroup_size(WG)
fn scale(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  xio[i] = xio[i] * p.s;
}

// x[r, c] += bias[c] over rows of p.cols values (p.n = rows * p.cols elements); bias is `b`.
@compute @workgroup_size(WG)
fn add_bias(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  xio[i] = xio[i] + b[i % p.cols];
}
