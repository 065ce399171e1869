// The layouts of the decode GEMVs' own paths for Q4_K / Q5_K and Q8_0 weights (matvec.wgsl,
// moe.wgsl, matvec_q8k.wgsl; after quant.wgsl, which has the block layouts); the products with f32
// x are quant_gemv_dot.wgsl's.
//
// Q4_K and Q5_K (q_kquant) have their own unit of 64 values, laid out so that the lanes of a row
// read both the weights and x coalesced: unit u is lane slot r = u % 4 of super-block s = u / 4 and
// takes quant words 8 c + 4 h + r (c = 0 .. 3, h = 0 .. 1; byte k holds value 64 c + 16 h + 4 r + k
// in its low nibble, sub-block 2 c, and that value + 32 in its high nibble, sub-block 2 c + 1),
// so the four lanes of a super-block read 16 contiguous bytes per load and 64 contiguous bytes of x
// per vec4 load; Q5_K adds its fifth-bit words 4 h + r (bits 2 c, 2 c + 1 of byte k). The kernel
// loads a unit into a QkUnit (qk_sb_word, qk_quant_word, qk_qh_word: the super-block header as one
// 16-byte load, as Q4_K / Q5_K super-blocks and rows are 16-byte aligned).
//
// Q8_0: see q_q8 below.

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

// The 6-bit (scale, scale, min, min) of sub-blocks 2 c and 2 c + 1 (ggml's get_scale_min_k4 on two
// bytes at once).
fn qk_scale_min(hdr: vec4<u32>, c: u32) -> vec4<u32> {
  let sh = 16u * (c & 1u);
  let a = hdr.y >> sh; // scale bytes 2 c, 2 c + 1 (c < 2); high bits of 2 c - 4, 2 c - 3
  let b = hdr.z >> sh; // min bytes (c < 2); high bits of the mins
  let z = hdr.w >> sh; // low nibbles: scales, high nibbles: mins (c >= 2)
  let lo = c < 2u;
  let sc = select((z & 0x0f0fu) | ((a >> 2u) & 0x3030u), a & 0x3f3fu, lo);
  let m = select(((z >> 4u) & 0x0f0fu) | ((b >> 2u) & 0x3030u), b & 0x3f3fu, lo);
  return vec4<u32>(sc, sc >> 8u, m, m >> 8u) & vec4<u32>(0xffu);
}

// (d·scale, d·scale, dmin·min, dmin·min) of sub-blocks 2 c and 2 c + 1.
fn qk_scales(hdr: vec4<u32>, c: u32) -> vec4<f32> {
  let dm = unpack2x16float(hdr.x);
  return q_u2f(qk_scale_min(hdr, c)) * vec4<f32>(dm.x, dm.x, dm.y, dm.y);
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

// Q8_0 (its own path, q_q8): a row of nb 34-byte blocks, starting at byte rb (2-byte aligned), is
// read word by word, the lanes of a row taking consecutive words (coalesced; word k of the row is
// word rb / 4 + k, q8_words of them). A word's 16-bit halves are each two quants, a d, or bytes
// outside the row; its quants all belong to the block its first byte falls in (q8_block: a block's
// d takes a whole half), so the kernel loads the word and that block's d (q8_d_word, q8_d) and
// quant_gemv_dot.wgsl's q8_word_dot dots the quants with x.

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

