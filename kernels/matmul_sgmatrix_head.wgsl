// Shared head of the staging includes of matmul_sgmatrix.wgsl (see there), prepended before
// matmul_sgmatrix_scalar.wgsl or matmul_sgmatrix_vec4.wgsl: the enable directives, the matrix types,
// the epilogue's scratch tiles and the primitives both tile layouts share.
enable f16;
enable chromium_experimental_subgroup_matrix;
// Subgroup-matrix calls must be subgroup-uniform. Offsets here depend on the subgroup index
// (local_invocation_index / 32), which the analysis cannot prove uniform; they are uniform per
// subgroup by construction.
diagnostic(off, chromium.subgroup_matrix_uniformity);

// The staging type of x and W.
alias h16 = f16;
// Left (x rows), right (W^T) and result matrices, 16 x 16 each.
alias mat_a = subgroup_matrix_left<f16, 16, 16>;
alias mat_b = subgroup_matrix_right<f16, 16, 16>;
alias mat_c = subgroup_matrix_result<f32, 16, 16>;
// Largest TM and TN (arrays of matrices in registers need constant sizes).
const MAX_TM: u32 = 4u;
const MAX_TN: u32 = 4u;

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
