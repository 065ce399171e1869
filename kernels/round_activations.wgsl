// Activations rounded as llama.cpp's CPU backend rounds them before a product with weights of a
// given type (its `vec_dot_type`), written back as f32: x [rows, K] -> out [rows, K], one thread
// per block of a row (FORMAT):
//   0 q8_0  blocks of 32: d = amax / 127, q = round(x * 127 / amax) (half to even, as its AVX2
//           code), and the value is f16(d) * q (the block scale is stored as f16).
//   1 q8_k  blocks of 256: max = the value of largest magnitude, iscale = -127 / max,
//           q = min(127, round(iscale * x)) (half to even), and the value is (1 / iscale) * q.
//   2 f16   each value rounded to f16 (to nearest even).
//   3 bf16  each value rounded to bf16 (to nearest even; NaN stays NaN).
// A block of zeros stays zeros. 2-D grid of workgroups (linear index wid.x + wid.y * nwg.x).
struct Params {
  // Blocks in all rows (rows * K / B).
  blocks: u32,
}

override WG: u32 = 64u;
override FORMAT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Values per block of each format (f16 and bf16: one value).
fn block_size() -> u32 {
  return select(select(1u, 32u, FORMAT == 0u), 256u, FORMAT == 1u);
}

fn round_bf16(v: f32) -> f32 {
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) {
    return v;
  }
  return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let blk = gid.x + gid.y * nwg.x * WG;
  if (blk >= p.blocks) {
    return;
  }
  let n = block_size();
  let o = blk * n;
  if (FORMAT == 2u) {
    for (var j = 0u; j < n; j++) {
      out[o + j] = unpack2x16float(pack2x16float(vec2<f32>(x[o + j], 0.0))).x;
    }
    return;
  }
  if (FORMAT == 3u) {
    for (var j = 0u; j < n; j++) {
      out[o + j] = round_bf16(x[o + j]);
    }
    return;
  }
  var amax = 0.0;
  var vmax = 0.0;
  for (var j = 0u; j < n; j++) {
    let v = x[o + j];
    if (abs(v) > amax) {
      amax = abs(v);
      vmax = v;
    }
  }
  if (amax == 0.0) {
    for (var j = 0u; j < n; j++) {
      out[o + j] = 0.0;
    }
    return;
  }
  if (FORMAT == 0u) {
    let d = amax / 127.0;
    let id = 127.0 / amax;
    let dh = unpack2x16float(pack2x16float(vec2<f32>(d, 0.0))).x;
    for (var j = 0u; j < n; j++) {
      out[o + j] = dh * round(x[o + j] * id);
    }
    return;
  }
  let iscale = -127.0 / vmax;
  let d = 1.0 / iscale;
  for (var j = 0u; j < n; j++) {
    out[o + j] = d * min(127.0, round(iscale * x[o + j]));
  }
}
