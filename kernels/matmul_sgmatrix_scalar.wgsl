// Staging include of matmul_sgmatrix.wgsl (see there), after matmul_sgmatrix_head.wgsl: workgroup
// tiles as array<f16>, written one f16 per store; subgroup-matrix offsets and strides count f16
// values.

// STAGES tiles of x: BM rows of BK (+ PAD) values each.
var<workgroup> xs: array<f16, STAGES * SGM * TM * 16u * (BK + PAD)>;
// STAGES tiles of W: BN rows of BK (+ PAD) values each.
var<workgroup> ws: array<f16, STAGES * SGN * TN * 16u * (BK + PAD)>;

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

// The left matrix whose element (r, c) is xs[off + r * (BK + PAD) + c].
fn load_a(off: u32) -> mat_a {
  return subgroupMatrixLoad<mat_a, row_major>(&xs, off, BK + PAD);
}

// The right matrix whose element (k, n) is ws[off + n * (BK + PAD) + k] (W^T).
fn load_b(off: u32) -> mat_b {
  return subgroupMatrixLoad<mat_b, col_major>(&ws, off, BK + PAD);
}
