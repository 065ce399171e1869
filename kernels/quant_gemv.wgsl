// The decode GEMVs' own paths for Q4_K / Q5_K and Q8_0 weights (matvec.wgsl, moe.wgsl; after
// quant.wgsl, which has the block layouts).
//
// Q4_K and Q5_K (q_kquant) have their own unit of 64 values, laid out so that the lanes of a row
// read both the weights and x coalesced: unit u is lane slot r = u % 4 of super-block s = u / 4 and
// takes quant words 8 c + 4 h + r (c = 0 .. 3, h = 0 .. 1; byte k holds value 64 c + 16 h + 4 r + k
// in its low nibble, sub-block 2 c, and that value + 32 in its high nibble, sub-block 2 c + 1),
// so the four lanes of a super-block read 16 contiguous bytes per load and 64 contiguous bytes of x
// per vec4 load; Q5_K adds its fifth-bit words 4 h + r (bits 2 c, 2 c + 1 of byte k). The kernel
// loads a unit into a QkUnit (qk_sb_word, qk_quant_word, qk_qh_word: the super-block header as one
// 16-byte load, as Q4_K / Q5_K super-blocks and rows are 16-byte aligned) and qk_dot / qk_dot2 dot
// it with x, read through the kernel's `q_x(vec4 index)`.
//
// Q8_0: see q_q8 below. The including kernel defines `q_x(vec4 index) -> vec4<f32>` and
// `q_x2(value index) -> vec2<f32>` over its row-major x.

// A Q4_K / Q5_K unit as loaded (see the header): the super-block's first 16 bytes (f16 d, f16 dmin,
// 12 bytes of scales and mins), quant words i = 2 c + h (q01: c = 0, 1; q23: c = 2, 3) and (Q5_K)
// the fifth-bit words of h = 0, 1.
struct QkUnit {
  hdr: vec4<u32>,
  q01: vec4<u32>,
  q23: vec4<u32>,
  qh: vec2<u32>,
}

// The first word of unit u's super-block, from the row's first word.
fn qk_sb_word(u: u32) -> u32 {
  return (u / 4u) * (q_block_bytes() / 4u);
}

// Quant word i (c = i / 2, h = i % 2) of unit u, from its super-block's first word.
fn qk_quant_word(u: u32, i: u32) -> u32 {
  return select(4u, 12u, WDTYPE == WQ5_K) + 8u * (i / 2u) + 4u * (i % 2u) + u % 4u;
}

// Q5_K: the fifth-bit word of half h of unit u, from its super-block's first word.
fn qk_qh_word(u: u32, h: u32) -> u32 {
  return 4u + 4u * h + u % 4u;
}

// The vec4 of x (from the row's first value) holding unit u's first values (64 s + 4 r ..).
fn qk_xvec(u: u32) -> u32 {
  return (u / 4u) * 64u + u % 4u;
}

// Exact f32 of each component (each < 2^23): its bits under 2^23's exponent, minus 2^23 (cheaper
// than an integer conversion).
fn q_u2f(v: vec4<u32>) -> vec4<f32> {
  return bitcast<vec4<f32>>(v | vec4<u32>(0x4b000000u)) - vec4<f32>(8388608.0);
}

// (d·scale, d·scale, dmin·min, dmin·min) of sub-blocks 2 c and 2 c + 1 (ggml's get_scale_min_k4 on
// two bytes at once).
fn qk_scales(hdr: vec4<u32>, c: u32) -> vec4<f32> {
  let dm = unpack2x16float(hdr.x);
  let sh = 16u * (c & 1u);
  let a = hdr.y >> sh; // scale bytes 2 c, 2 c + 1 (c < 2); high bits of 2 c - 4, 2 c - 3
  let b = hdr.z >> sh; // min bytes (c < 2); high bits of the mins
  let z = hdr.w >> sh; // low nibbles: scales, high nibbles: mins (c >= 2)
  let lo = c < 2u;
  let sc = select((z & 0x0f0fu) | ((a >> 2u) & 0x3030u), a & 0x3f3fu, lo);
  let m = select(((z >> 4u) & 0x0f0fu) | ((b >> 2u) & 0x3030u), b & 0x3f3fu, lo);
  let v = vec4<u32>(sc, sc >> 8u, m, m >> 8u) & vec4<u32>(0xffu);
  return q_u2f(v) * vec4<f32>(dm.x, dm.x, dm.y, dm.y);
}

// The four values of quant word q: low (shift 0) or high (shift 4) nibbles, with Q5_K's bit `bit`
// of each byte of qh as their fifth bit.
fn qk_vals(q: u32, shift: u32, qh: u32, bit: u32) -> vec4<f32> {
  let byte = vec4<u32>(0u, 8u, 16u, 24u);
  var v = (vec4<u32>(q) >> (byte + vec4<u32>(shift))) & vec4<u32>(15u);
  if (WDTYPE == WQ5_K) {
    v |= ((vec4<u32>(qh) >> (byte + vec4<u32>(bit))) & vec4<u32>(1u)) << vec4<u32>(4u);
  }
  return q_u2f(v);
}

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

// Q8_0 (its own path, q_q8): a row of nb 34-byte blocks, starting at byte rb (2-byte aligned), is
// read word by word, the lanes of a row taking consecutive words (coalesced; word k of the row is
// word rb / 4 + k, q8_words of them). A word's 16-bit halves are each two quants, a d, or bytes
// outside the row; its quants all belong to the block its first byte falls in (q8_block: a block's
// d takes a whole half), so the kernel loads the word and that block's d (q8_d_word, q8_d) and
// q8_word_dot dots the quants with x, read in pairs through the kernel's `q_x2(value index)`.

// Whether the weights are Q8_0 (the word-by-word path).
fn q_q8() -> bool {
  return WDTYPE == WQ8_0;
}

// Words spanned by a Q8_0 row of nb blocks starting at byte rb.
fn q8_words(rb: u32, nb: u32) -> u32 {
  return (rb + 34u * nb - 1u) / 4u - rb / 4u + 1u;
}

// The row byte of word k's first byte (-2 for the first word of a row at 2 mod 4).
fn q8_first_byte(rb: u32, k: u32) -> i32 {
  return i32(4u * k) - i32(rb & 3u);
}

// The block word k's first row byte falls in (block 0 for the 2 bytes before the row).
fn q8_block(rb: u32, k: u32) -> u32 {
  return u32(max(q8_first_byte(rb, k), 0)) / 34u;
}

// The word holding block b's d, and that d from it.
fn q8_d_word(rb: u32, b: u32) -> u32 {
  return (rb + 34u * b) / 4u;
}
fn q8_d(rb: u32, b: u32, word: u32) -> f32 {
  return unpack2x16float(select(word & 0xffffu, word >> 16u, ((rb + 34u * b) & 2u) != 0u)).x;
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
