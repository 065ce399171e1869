// Tail of the staging includes of matmul_sgmatrix.wgsl (see there), after the tile layout (so the
// workgroup arrays keep the order xs, ws, cs): the epilogue's scratch tiles and the primitives both
// layouts share.
// One 16 x 16 f32 scratch tile per subgroup (the epilogue).
var<workgroup> cs: array<f32, SGM * SGN * 256u>;

// Element i of the scratch tiles.
fn get_c(i: u32) -> f32 {
  return cs[i];
}

// a · b + c.
fn mma(a: mat_a, b: mat_b, c: mat_c) -> mat_c {
  return subgroupMatrixMultiplyAccumulate(a, b, c);
}

// Stores c row-major at cs[off ..], stride 16.
fn store_c(off: u32, c: mat_c) {
  subgroupMatrixStore<row_major>(&cs, off, c, 16u);
}

// The two f16 values of a word, low half first.
fn f16x2(word: u32) -> vec2<f16> {
  return bitcast<vec2<f16>>(word);
}
