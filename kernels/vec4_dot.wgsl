// Dot products of packed weight words with f32 activations read through a vec4 array, shared by the
// GEMV kernels that bind their input as `x: array<vec4<f32>>` (moe.wgsl, qkv.wgsl; the including
// file declares x). Needs dtype.wgsl (WDTYPE, unpack_word) before it.

// Element i of x.
fn xs(i: u32) -> f32 {
  return x[i >> 2u][i & 3u];
}

// Word i (weight i for f32) of a row times x, scalar path: w is the word, xi the first x index.
fn dot_word(w: u32, xi: u32) -> f32 {
  let v = unpack_word(w);
  if (WDTYPE == 0u) {
    return v.x * xs(xi);
  }
  return v.x * xs(xi) + v.y * xs(xi + 1u);
}

// Four words (4 or 8 weights) times the x values from element xk (a multiple of 4), vector path.
fn dot_quad(q: vec4<u32>, xk: u32) -> f32 {
  let xa = x[xk >> 2u];
  if (WDTYPE == 0u) {
    return dot(bitcast<vec4<f32>>(q), xa);
  }
  let xb = x[(xk >> 2u) + 1u];
  if (WDTYPE == 2u) {
    // bf16: the low halves are weights 0, 2, 4, 6 and the high halves 1, 3, 5, 7.
    let lo = bitcast<vec4<f32>>(q << vec4<u32>(16u));
    let hi = bitcast<vec4<f32>>(q & vec4<u32>(0xffff0000u));
    return dot(lo, vec4<f32>(xa.x, xa.z, xb.x, xb.z)) + dot(hi, vec4<f32>(xa.y, xa.w, xb.y, xb.w));
  }
  let wa = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
  let wb = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
  return dot(wa, xa) + dot(wb, xb);
}
