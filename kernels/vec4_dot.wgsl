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

// acc + four words (4 or 8 weights) times the x values from vec4 number xi, per component: the step
// of the GEMVs' aligned path (the components are added up at the end).
fn quad_fma(acc: vec4<f32>, q: vec4<u32>, xi: u32) -> vec4<f32> {
  if (WDTYPE == 0u) {
    return fma(bitcast<vec4<f32>>(q), x[xi], acc);
  }
  let xa = x[xi];
  let xb = x[xi + 1u];
  if (WDTYPE == 2u) {
    let a = fma(bitcast<vec4<f32>>(q << vec4<u32>(16u)), vec4<f32>(xa.x, xa.z, xb.x, xb.z), acc);
    return fma(bitcast<vec4<f32>>(q & vec4<u32>(0xffff0000u)), vec4<f32>(xa.y, xa.w, xb.y, xb.w), a);
  }
  let a = fma(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), xa, acc);
  return fma(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), xb, a);
}
