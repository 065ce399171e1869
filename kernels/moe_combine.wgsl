// Combines expert outputs into the residual stream, one thread per (token, column):
//   out[t, n] += sum_j weights[t, j] * y[t * topK + j, n]  (+ sigmoid(sharedGate[t]) * shared[t, n])
// The expert sum (and the shared expert) is formed first and added to the residual last, as HF does.
struct Params {
  T: u32,
  topK: u32,
  hidden: u32,
  has_shared: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> shared_out: array<f32>;
@group(0) @binding(5) var<storage, read> shared_gate: array<f32>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.T * p.hidden) {
    return;
  }
  let t = i / p.hidden;
  let n = i % p.hidden;
  var acc = 0.0;
  for (var j = 0u; j < p.topK; j++) {
    let pair = t * p.topK + j;
    acc += weights[pair] * y[pair * p.hidden + n];
  }
  if (p.has_shared != 0u) {
    let g = 1.0 / (1.0 + exp(-shared_gate[t]));
    acc += g * shared_out[i];
  }
  out[i] = out[i] + acc;
}
