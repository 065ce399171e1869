// Staging include of matmul_sgmatrix.wgsl (see there), after matmul_sgmatrix_head.wgsl: workgroup
// tiles as array<vec4<f16>>, written four f16 per store. The kernel computes offsets in f16 values
// (always multiples of 4 here: BK and PAD are, and so are the column offsets); subgroup-matrix
// loads count offsets and strides in array elements, so they get them divided by 4.
// STAGES tiles of x: BM rows of BK (+ PAD) values each, 4 per element.
var<workgroup> xs: array<vec4<f16>, STAGES * SGM * TM * 4u * (BK + PAD)>;
// STAGES tiles of W: BN rows of BK (+ PAD) values each, 4 per element.
var<workgroup> ws: array<vec4<f16>, STAGES * SGN * TN * 4u * (BK + PAD)>;

// Stores 4 x values (rounded to f16) at f16 offset o (a multiple of 4).
fn put_x4(o: u32, v: vec4<f32>) {
  xs[o / 4u] = vec4<f16>(v);
}

// Stores 4 x values (already f16) at f16 offset o (a multiple of 4).
fn put_x4h(o: u32, v: vec4<f16>) {
  xs[o / 4u] = v;
}

// Stores 4 W values at f16 offset o (a multiple of 4).
fn put_w4(o: u32, v: vec4<f16>) {
  ws[o / 4u] = v;
}

// The left matrix whose element (r, c) is the f16 at offset off + r * (BK + PAD) + c of xs.
fn load_a(off: u32) -> mat_a {
  return subgroupMatrixLoad<mat_a, row_major>(&xs, off / 4u, (BK + PAD) / 4u);
}

// The right matrix whose element (k, n) is the f16 at offset off + n * (BK + PAD) + k of ws (W^T).
fn load_b(off: u32) -> mat_b {
  return subgroupMatrixLoad<mat_b, col_major>(&ws, off / 4u, (BK + PAD) / 4u);
}
