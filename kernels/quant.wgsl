// Block-quantised weights, read as stored in GGUF files and dequantised in registers inside the GEMV
// kernels (matvec.wgsl, moe.wgsl): WDTYPE (dtype.wgsl) 3 = Q8_0, 4 = Q4_K, 5 = Q5_K, 6 = Q6_K,
// 7 = Q5_0. A row of K values is K / 32 blocks, Q8_0 (34 bytes: f16 d, 32 int8) or Q5_0 (22: f16 d,
// 32 fifth bits, 16 bytes of nibbles), only 2-byte aligned, or K / 256 super-blocks: Q4_K (144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of
// 4-bit quants), Q5_K (176: Q4_K's header, 32 bytes of fifth bits, the 4-bit quants) or Q6_K (210,
// so only 2-byte aligned: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, f16 d),
// back to back; the weights are bound as array<u32> and addressed by byte
// (runtime/weights/quant.ts and k_quants.ts describe the layouts).
//
// The unit of work is 32 values (a Q5_0 block) or 64 (Q6_K: values 32 g .. 32 g + 31 and
// 32 g + 64 .. 32 g + 95 of half h of a super-block, g = 0 or 1, whose quants share 32 bytes of low
// nibbles and 32 bytes of high bits). A kernel gives each lane of a row every TPR-th unit; per unit
// it loads the unit's words (q_unit_words of them, at the indices q_unit_word gives, from its own
// binding) and the unit's x values (q_unit_values / 4 vec4s, vec4 i at q_unit_xvec(u, i) of the
// row), and q_unit_dot returns their dot product.
//
// Q4_K and Q5_K (q_kquant) have their own unit of 64 values, laid out so that the lanes of a row
// read both the weights and x coalesced: unit u is lane slot r = u % 4 of super-block s = u / 4 and
// takes quant words 8 c + 4 h + r (c = 0 .. 3, h = 0 .. 1; byte k holds value 64 c + 16 h + 4 r + k
// in its low nibble, sub-block 2 c, and that value + 32 in its high nibble, sub-block 2 c + 1),
// so the four lanes of a super-block read 16 contiguous bytes per load and 64 contiguous bytes of x
// per vec4 load; Q5_K adds its fifth-bit words 4 h + r (bits 2 c, 2 c + 1 of byte k). The kernel
// loads a unit into a QkUnit (qk_sb_word, qk_quant_word, qk_qh_word: the super-block header as one
// 16-byte load, as Q4_K / Q5_K super-blocks and rows are 16-byte aligned) and qk_dot / qk_dot2 dot
// it with x, read through the kernel's `q_x(vec4 index)`. Needs dtype.wgsl.

const WQ8_0: u32 = 3u;
const WQ4_K: u32 = 4u;
const WQ5_K: u32 = 5u;
const WQ6_K: u32 = 6u;
const WQ5_0: u32 = 7u;
// The most words and x vec4s a q_unit_dot unit uses (Q6_K: 9 + 9 words of quants, 3 of scales, 1
// of d, at 2 mod 4 bytes; 64 values).
const QUNIT_WORDS: u32 = 22u;
const QUNIT_VEC4: u32 = 16u;

// Whether the weights are block-quantised.
fn q_quantised() -> bool {
  return WDTYPE >= WQ8_0;
}

// Whether the weights are Q4_K or Q5_K (the QkUnit path).
fn q_kquant() -> bool {
  return WDTYPE == WQ4_K || WDTYPE == WQ5_K;
}

// Values per unit.
fn q_unit_values() -> u32 {
  return select(64u, 32u, WDTYPE == WQ8_0 || WDTYPE == WQ5_0);
}

// Bytes of a block (Q8_0) or super-block.
fn q_block_bytes() -> u32 {
  switch (WDTYPE) {
    case 3u: { return 34u; }
    case 7u: { return 22u; }
    case 5u: { return 176u; }
    case 6u: { return 210u; }
    default: { return 144u; }
  }
}

// Bytes of a row of K values (K a multiple of the block size).
fn q_row_bytes(K: u32) -> u32 {
  return K / select(256u, 32u, WDTYPE == WQ8_0 || WDTYPE == WQ5_0) * q_block_bytes();
}

// Words a q_unit_dot unit loads: a Q5_0 block spans 6 words whatever its alignment, Q6_K 22 (see
// q_unit_word).
fn q_unit_words() -> u32 {
  return select(22u, 6u, WDTYPE == WQ5_0);
}

// The index of the i-th word unit u of the row that starts at byte rb loads.
fn q_unit_word(rb: u32, u: u32, i: u32) -> u32 {
  if (WDTYPE == WQ5_0) {
    return (rb + u * q_block_bytes()) / 4u + i;
  }
  if (WDTYPE == WQ6_K) {
    // From the super-block's first word B (its byte offset may be 2 mod 4; every field sits at a
    // multiple of 4 from it, so 8 words of a field span 9): 0 .. 8 low nibbles (bytes 64 h + 32 g),
    // 9 .. 17 high bits (128 + 32 h), 18 .. 20 scales (192 + 8 h), 21 d (208).
    let b = (rb + (u / 4u) * 210u) / 4u;
    let h = (u % 4u) / 2u;
    if (i < 9u) {
      return b + h * 16u + (u % 2u) * 8u + i;
    }
    if (i < 18u) {
      return b + 32u + h * 8u + (i - 9u);
    }
    return select(b + 48u + h * 2u + (i - 18u), b + 52u, i == 21u);
  }
  return 0u;
}

// The vec4 (from the row's first value) holding x values 4 i .. 4 i + 3 of unit u.
fn q_unit_xvec(u: u32, i: u32) -> u32 {
  if (WDTYPE == WQ6_K) {
    return (u / 4u) * 64u + ((u % 4u) / 2u) * 32u + (u % 2u) * 8u + select(i, i + 8u, i >= 8u);
  }
  return u * (q_unit_values() / 4u) + i;
}

// The four int8 of a word, as f32 (lowest byte first).
fn q_i8x4(w: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// The dot product of unit u (of the row starting at byte rb; its words in `words`) with its x
// values `xq`.
fn q_unit_dot(words: array<u32, QUNIT_WORDS>, rb: u32, u: u32, xq: array<vec4<f32>, QUNIT_VEC4>) -> f32 {
  var w = words; // (indexed at run time below)
  var xs = xq;
  let one = vec4<f32>(1.0);
  if (WDTYPE == WQ5_0) {
    // d, then 4 bytes of fifth bits, then 16 bytes of nibbles (byte j: values j and j + 16); at
    // 2 mod 4 d is the high half of word 0, at 0 mod 4 the bits and nibbles straddle words.
    let odd = ((rb + u * 22u) & 2u) != 0u;
    let d = unpack2x16float(select(w[0] & 0xffffu, w[0] >> 16u, odd)).x;
    let qh = select((w[0] >> 16u) | (w[1] << 16u), w[1], odd);
    let byte = vec4<u32>(0u, 8u, 16u, 24u);
    let bit = vec4<u32>(0u, 1u, 2u, 3u);
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
      let qw = vec4<u32>(select((w[1u + j] >> 16u) | (w[2u + j] << 16u), w[2u + j], odd));
      let a = ((qw >> byte) & vec4<u32>(15u)) | (((vec4<u32>(qh) >> (bit + vec4<u32>(4u * j))) &
        vec4<u32>(1u)) << vec4<u32>(4u));
      let b = ((qw >> (byte + vec4<u32>(4u))) & vec4<u32>(15u)) |
        (((vec4<u32>(qh) >> (bit + vec4<u32>(16u + 4u * j))) & vec4<u32>(1u)) << vec4<u32>(4u));
      acc = fma(vec4<f32>(a) - vec4<f32>(16.0), xs[j], acc);
      acc = fma(vec4<f32>(b) - vec4<f32>(16.0), xs[4u + j], acc);
    }
    return d * dot(acc, one);
  }
  // Q6_K (q_unit_dot is not called for Q4_K / Q5_K).
  return q6k_unit_dot(w, rb, u, xs);
}

// Bytes 2 .. 5 of the words lo, hi when odd (a field at 2 mod 4 bytes), else lo.
fn q_join(lo: u32, hi: u32, odd: bool) -> u32 {
  return select(lo, (lo >> 16u) | (hi << 16u), odd);
}

// The int8 at bits `shift` .. `shift` + 7 of w, as f32.
fn q_i8(w: u32, shift: u32) -> f32 {
  return f32(bitcast<i32>(w << (24u - shift)) >> 24u);
}

// Q6_K unit u (values 32 g + l and 32 g + 64 + l of half h, l = 0 .. 31, g = u % 2): the low
// nibbles of 32 bytes of ql (values 32 g + l low, 32 g + 64 + l high), bit pairs 2 g and 2 g + 4 of
// the half's 32 bytes of qh, scales 2 g, 2 g + 1 (first 32 values, by 16) and 2 g + 4, 2 g + 5.
fn q6k_unit_dot(
  w: array<u32, QUNIT_WORDS>,
  rb: u32,
  u: u32,
  xs: array<vec4<f32>, QUNIT_VEC4>,
) -> f32 {
  var v = w;
  let odd = ((rb + (u / 4u) * 210u) & 2u) != 0u;
  let g = u % 2u;
  let d = unpack2x16float(select(v[21] & 0xffffu, v[21] >> 16u, odd)).x;
  let s03 = q_join(v[18], v[19], odd); // scales 8 h + 0 .. 3
  let s47 = q_join(v[19], v[20], odd); // scales 8 h + 4 .. 7
  let byte = vec4<u32>(0u, 8u, 16u, 24u);
  let one = vec4<f32>(1.0);
  var lo = array<vec4<f32>, 2>();
  var hi = array<vec4<f32>, 2>();
  for (var j = 0u; j < 8u; j++) {
    let ql = vec4<u32>(q_join(v[j], v[j + 1u], odd));
    let qh = vec4<u32>(q_join(v[9u + j], v[10u + j], odd)) >> (byte + vec4<u32>(2u * g));
    let a = ((ql >> byte) & vec4<u32>(15u)) | ((qh & vec4<u32>(3u)) << vec4<u32>(4u));
    let b = ((ql >> (byte + vec4<u32>(4u))) & vec4<u32>(15u)) |
      (((qh >> vec4<u32>(4u)) & vec4<u32>(3u)) << vec4<u32>(4u));
    let k = j / 4u; // values 0 .. 15 or 16 .. 31 of the run: scale 2 g + k (+ 4)
    lo[k] = fma(vec4<f32>(a) - vec4<f32>(32.0), xs[j], lo[k]);
    hi[k] = fma(vec4<f32>(b) - vec4<f32>(32.0), xs[8u + j], hi[k]);
  }
  let sl = 16u * g;
  return d * (q_i8(s03, sl) * dot(lo[0], one) + q_i8(s03, sl + 8u) * dot(lo[1], one) +
    q_i8(s47, sl) * dot(hi[0], one) + q_i8(s47, sl + 8u) * dot(hi[1], one));
}

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
