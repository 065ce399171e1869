// Staging include of matmul_sgmatrix.wgsl (see there): workgroup tiles as array<f16>, written one
// f16 per store; subgroup-matrix offsets and strides count f16 values.
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

// STAGES tiles of x: BM rows of BK (+ PAD) values each.
var<workgroup> xs: array<f16, STAGES * SGM * TM * 16u * (BK + PAD)>;
// STAGES tiles of W: BN rows of BK (+ PAD) values each.
var<workgroup> ws: array<f16, STAGES * SGN * TN * 16u * (BK + PAD)>;
// One 16 x 16 f32 scratch tile per subgroup (the epilogue).
var<workgroup> cs: array<f32, SGM * SGN * 256u>;

// Stores 4 x values (rounded to f16) at xs[o ..] (o is a multiple of 4).
fn put_x4(o: u32, v: vec4<f32>) {
  xs[o] = f16(v.x);
  xs[o + 1u] = f16(v.y);
  xs[o + 2u] = f16(v.z);
  xs[o + 3u] = f16(v.w);
}

// Stores 4 x values (already f16) at xs[o ..] (o is a multiple of 4).
fn put_x4h(o: u32, v: vec4<f16>) {
  xs[o] = v.x;
  xs[o + 1u] = v.y;
  xs[o + 2u] = v.z;
  xs[o + 3u] = v.w;
}

// Stores 4 W values at ws[o ..] (o is a multiple of 4).
fn put_w4(o: u32, v: vec4<f16>) {
  ws[o] = v.x;
  ws[o + 1u] = v.y;
  ws[o + 2u] = v.z;
  ws[o + 3u] = v.w;
}

// Element i of the scratch tiles.
fn get_c(i: u32) -> f32 {
  return cs[i];
}

// The left matrix whose element (r, c) is xs[off + r * (BK + PAD) + c].
fn load_a(off: u32) -> mat_a {
  return subgroupMatrixLoad<mat_a, row_major>(&xs, off, BK + PAD);
}

// The right matrix whose element (k, n) is ws[off + n * (BK + PAD) + k] (W^T).
fn load_b(off: u32) -> mat_b {
  return subgroupMatrixLoad<mat_b, col_major>(&ws, off, BK + PAD);
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
