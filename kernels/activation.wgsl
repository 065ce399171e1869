// Activations over f32 values, one thread per element, 2-D grid of workgroups (linear index
// wid.x + wid.y * nwg.x). ACT selects the function:
//   0 silu       x * sigmoid(x)                                   (HF "silu"/"swish")
//   1 gelu       x/2 * (1 + erf(x / sqrt(2)))                     (HF "gelu", exact)
//   2 gelu_tanh  x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) (HF "gelu_new", "gelu_pytorch_tanh")
//   3 relu       max(x, 0)
// Entry points: `act` (out = act(x)), `act_inplace` (x = act(x)) and `gated`
// (out = act(gate) * up, where gate and up are rows of their own strides and offsets: separate
// buffers, or the two halves of a fused [rows, 2 * inter] gate_up buffer bound twice).
struct Params {
  // Elements (act, act_inplace) or outputs rows * inter (gated).
  n: u32,
  // gated: outputs per row.
  inter: u32,
  // gated: elements between rows of gate / up, and the element of row 0's first value.
  gate_stride: u32,
  gate_offset: u32,
  up_stride: u32,
  up_offset: u32,
}

override WG: u32 = 256u;
override ACT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
// act: x -> out.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// act_inplace: x read and written at binding 1.
@group(0) @binding(1) var<storage, read_write> xio: array<f32>;
// gated: gate, up -> gout.
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> gout: array<f32>;

// erfcx(z) = erfc(z) * exp(z^2) for z >= 0: on [0, 6) 12 pieces of width 1/2, each a degree-7
// polynomial in t = z - centre fitted at Chebyshev nodes; beyond, the asymptotic series
// 1/(z sqrt(pi)) (1 - 1/(2z^2) + 3/(4z^4) - 15/(8z^6) + 105/(16z^8) - 945/(32z^10)).
// Relative error < 2e-7 in f32 everywhere.
const ERFCX_C = array<f32, 96>(
  7.703465e-1, -7.432059e-1, 5.84546e-1, -3.9804682e-1, 2.4244052e-1, -1.34934e-1, 7.153362e-2, -3.442969e-2,
  5.069376e-1, -3.679727e-1, 2.3095828e-1, -1.2983613e-1, 6.677845e-2, -3.1892613e-2, 1.4597662e-2, -6.1701825e-3,
  3.6782292e-1, -2.0882188e-1, 1.067956e-1, -5.0218284e-2, 2.200902e-2, -9.080823e-3, 3.6129411e-3, -1.3463405e-3,
  2.8497222e-1, -1.3097635e-1, 5.5763636e-2, -2.2259997e-2, 8.403779e-3, -3.0208083e-3, 1.0530016e-3, -3.477843e-4,
  2.3108725e-1, -8.84865e-2, 3.199263e-2, -1.1002061e-2, 3.6188508e-3, -1.1436883e-3, 3.5222835e-4, -1.037461e-4,
  1.9366209e-1, -6.323764e-2, 1.9758593e-2, -5.934338e-3, 1.7195379e-3, -4.8218403e-4, 1.3230527e-4, -3.4980974e-5,
  1.6633534e-1, -4.7199402e-2, 1.29372915e-2, -3.4354713e-3, 8.8598963e-4, -2.2237917e-4, 5.480194e-5, -1.3091858e-5,
  1.4558972e-1, -3.6456257e-2, 8.878755e-3, -2.1072829e-3, 4.882168e-4, -1.1057842e-4, 2.4658768e-5, -5.3564336e-6,
  1.2934527e-1, -2.8944332e-2, 6.331866e-3, -1.3559331e-3, 2.845729e-4, -5.859507e-5, 1.1905806e-5, -2.365684e-6,
  1.1630271e-1, -2.3503449e-2, 4.6613263e-3, -9.080989e-4, 1.7392733e-4, -3.277561e-5, 6.106217e-6, -1.1160021e-6,
  1.0561273e-1, -1.9445445e-2, 3.524151e-3, -6.291015e-4, 1.106836e-4, -1.9204006e-5, 3.299167e-6, -5.5744835e-7,
  9.6698776e-2, -1.6343217e-2, 2.7252738e-3, -4.485957e-4, 7.2924064e-5, -1.171238e-5, 1.8649762e-6, -2.9271231e-7,
);

fn erfcx(z: f32) -> f32 {
  if (z >= 6.0) {
    let r = 1.0 / (z * z);
    let s = 1.0 + r * (-0.5 + r * (0.75 + r * (-1.875 + r * (6.5625 + r * -29.53125))));
    return 0.5641895835477563 / z * s;
  }
  let k = min(u32(z * 2.0), 11u);
  let t = z - (f32(k) * 0.5 + 0.25);
  let base = k * 8u;
  var q = ERFCX_C[base + 7u];
  for (var j = 6i; j >= 0i; j--) {
    q = q * t + ERFCX_C[base + u32(j)];
  }
  return q;
}

// gelu(x) = x * Phi(x), Phi(x) = erfc(-x / sqrt(2)) / 2 (= (1 + erf(x / sqrt(2))) / 2, HF "gelu").
// With h = erfc(|x| / sqrt(2)) / 2 = exp(-x^2 / 2) erfcx(|x| / sqrt(2)) / 2, Phi is h for x < 0 and
// 1 - h otherwise: no cancellation in the negative tail, where the textbook f32 (1 + erf) loses
// most digits below x = -4 and all of them by x = -5.7. Relative error: erfcx's 2e-7 plus exp's
// (WGSL allows 3 + 2 |x^2 / 2| ulp; ~5e-6 at |x| = 10 on llvmpipe).
fn gelu_erf(v: f32) -> f32 {
  let h = 0.5 * exp(-0.5 * v * v) * erfcx(abs(v) * 0.70710678118654752);
  return v * select(1.0 - h, h, v < 0.0);
}

fn act_fn(v: f32) -> f32 {
  switch ACT {
    // x * sigmoid(x); exp overflow for very negative x gives x / inf = -0, as it should.
    case 0u: {
      return v / (1.0 + exp(-v));
    }
    case 1u: {
      return gelu_erf(v);
    }
    // x/2 * (1 + tanh(u)) == x * sigmoid(2u): no tanh (whose WGSL accuracy is loose), no overflow.
    case 2u: {
      let u = 0.7978845608028654 * v * (1.0 + 0.044715 * v * v);
      return v / (1.0 + exp(-2.0 * u));
    }
    default: {
      return max(v, 0.0);
    }
  }
}

@compute @workgroup_size(WG)
fn act(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  out[i] = act_fn(x[i]);
}

@compute @workgroup_size(WG)
fn act_inplace(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  xio[i] = act_fn(xio[i]);
}

@compute @workgroup_size(WG)
fn gated(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  let r = i / p.inter;
  let c = i - r * p.inter;
  let g = gate[r * p.gate_stride + p.gate_offset + c];
  let u = up[r * p.up_stride + p.up_offset + c];
  gout[i] = act_fn(g) * u;
}
