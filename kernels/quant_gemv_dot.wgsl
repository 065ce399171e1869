// The decode GEMVs' products of Q4_K / Q5_K units and Q8_0 words with f32 x (matvec.wgsl, moe.wgsl;
// after quant_gemv.wgsl, which has the layouts). The including kernel defines
// `q_x(vec4 index) -> vec4<f32>` and `q_x2(value index) -> vec2<f32>` over its row-major x: qk_dot /
// qk_dot2 read a unit's x through q_x, q8_word_dot a word's through q_x2.

// Group c of a unit (quant words q0 (h = 0) and q1 (h = 1)) times its x values: low nibbles xl0,
// xl1, high nibbles xh0, xh1.
fn qk_group(
  w: QkUnit,
  c: u32,
  q0: u32,
  q1: u32,
  xl0: vec4<f32>,
  xl1: vec4<f32>,
  xh0: vec4<f32>,
  xh1: vec4<f32>,
) -> f32 {
  let s = qk_scales(w.hdr, c);
  let one = vec4<f32>(1.0);
  let lo = dot(qk_vals(q0, 0u, w.qh.x, 2u * c), xl0) + dot(qk_vals(q1, 0u, w.qh.y, 2u * c), xl1);
  let hi = dot(qk_vals(q0, 4u, w.qh.x, 2u * c + 1u), xh0) +
    dot(qk_vals(q1, 4u, w.qh.y, 2u * c + 1u), xh1);
  return s.x * lo + s.y * hi - s.z * dot(xl0 + xl1, one) - s.w * dot(xh0 + xh1, one);
}

// Group c of unit w (quant words q0, q1) times x from vec4 xi + 16 c (xi: qk_xvec of the unit, in
// the row of x), read through the kernel's q_x.
fn qk_group_x(w: QkUnit, c: u32, q0: u32, q1: u32, xi: u32) -> f32 {
  let i = xi + 16u * c;
  return qk_group(w, c, q0, q1, q_x(i), q_x(i + 4u), q_x(i + 8u), q_x(i + 12u));
}

// Unit w times x from vec4 xi.
fn qk_dot(w: QkUnit, xi: u32) -> f32 {
  return qk_group_x(w, 0u, w.q01.x, w.q01.y, xi) + qk_group_x(w, 1u, w.q01.z, w.q01.w, xi) +
    qk_group_x(w, 2u, w.q23.x, w.q23.y, xi) + qk_group_x(w, 3u, w.q23.z, w.q23.w, xi);
}

// Group c of units a (quant words a0, a1) and b (b0, b1) times the same x values, read once.
fn qk_group2_x(
  a: QkUnit,
  b: QkUnit,
  c: u32,
  a0: u32,
  a1: u32,
  b0: u32,
  b1: u32,
  xi: u32,
) -> vec2<f32> {
  let i = xi + 16u * c;
  let xl0 = q_x(i);
  let xl1 = q_x(i + 4u);
  let xh0 = q_x(i + 8u);
  let xh1 = q_x(i + 12u);
  return vec2<f32>(
    qk_group(a, c, a0, a1, xl0, xl1, xh0, xh1),
    qk_group(b, c, b0, b1, xl0, xl1, xh0, xh1),
  );
}

// Units a and b (the same positions of two matrices) times x from vec4 xi: (a · x, b · x).
fn qk_dot2(a: QkUnit, b: QkUnit, xi: u32) -> vec2<f32> {
  return qk_group2_x(a, b, 0u, a.q01.x, a.q01.y, b.q01.x, b.q01.y, xi) +
    qk_group2_x(a, b, 1u, a.q01.z, a.q01.w, b.q01.z, b.q01.w, xi) +
    qk_group2_x(a, b, 2u, a.q23.x, a.q23.y, b.q23.x, b.q23.y, xi) +
    qk_group2_x(a, b, 3u, a.q23.z, a.q23.w, b.q23.z, b.q23.w, xi);
}

// Word k (q) of the row starting at byte rb times x from value xo; d is the d of its block
// q8_block(rb, k).
fn q8_word_dot(q: u32, rb: u32, k: u32, d: f32, xo: u32) -> f32 {
  let b = q8_block(rb, k);
  let o0 = q8_first_byte(rb, k) - i32(34u * b);
  var acc = 0.0;
  for (var h = 0u; h < 2u; h++) {
    let o = o0 + i32(2u * h); // the half's offset in block b: quants at 2 .. 33
    if (o >= 2 && o < 34) {
      let v = (vec2<u32>(q >> (16u * h)) >> vec2<u32>(0u, 8u)) & vec2<u32>(0xffu);
      // int8 as exact f32: (byte ^ 0x80) = value + 128 under 2^23's exponent.
      let f = bitcast<vec2<f32>>((v ^ vec2<u32>(0x80u)) | vec2<u32>(0x4b000000u)) -
        vec2<f32>(8388736.0);
      acc += dot(f, q_x2(xo + 32u * b + u32(o) - 2u));
    }
  }
  return d * acc;
}
