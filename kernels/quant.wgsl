// Block-quantised weights, read as stored in GGUF files and dequantised in registers inside the
// GEMV kernels (matvec.wgsl, moe.wgsl): WDTYPE (dtype.wgsl) 3 = Q8_0, 4 = Q4_K, 5 = Q5_K, 6 = Q6_K,
// 7 = Q5_0, 8 = Q4_0. A row of K values is K / 32 blocks, Q8_0 (34 bytes: f16 d, 32 int8), Q5_0
// (22: f16 d, 32 fifth bits, 16 bytes of nibbles) or Q4_0 (18: f16 d, 16 bytes of nibbles), only
// 2-byte aligned, or K / 256 super-blocks: Q4_K (144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit
// scales and mins, 128 bytes of 4-bit quants), Q5_K (176: Q4_K's header, 32 bytes of fifth bits,
// the 4-bit quants) or Q6_K (210, so only 2-byte aligned: 128 bytes of low nibbles, 64 of high bit
// pairs, 16 int8 scales, f16 d), back to back; the weights are bound as array<u32> and addressed by
// byte (runtime/weights/quant.ts and k_quants.ts describe the layouts).
//
// The decode GEMVs (matvec.wgsl, moe.wgsl) take Q4_K, Q5_K and Q8_0 on their own paths
// (quant_gemv.wgsl, which needs this file). For Q5_0, Q4_0 and Q6_K their unit of work is 32 values
// (a Q5_0 or Q4_0 block) or 64 (Q6_K: values 32 g .. 32 g + 31 and 32 g + 64 .. 32 g + 95 of half h
// of a super-block, g = 0 or 1, whose quants share 32 bytes of low nibbles and 32 bytes of high
// bits). A kernel gives each lane of a row every TPR-th unit; per unit it loads the unit's words
// (q_unit_words of them, at the indices q_unit_word gives, from its own binding) and the unit's x
// values (q_unit_values / 4 vec4s, vec4 i at q_unit_xvec(u, i) of the row), and q_unit_dot returns
// their dot product. Needs dtype.wgsl.

const WQ8_0: u32 = 3u;
const WQ4_K: u32 = 4u;
const WQ5_K: u32 = 5u;
const WQ6_K: u32 = 6u;
const WQ5_0: u32 = 7u;
const WQ4_0: u32 = 8u;
// The most words and x vec4s a q_unit_dot unit uses (Q6_K: 9 + 9 words of quants, 3 of scales, 1
// of d, at 2 mod 4 bytes; 64 values).
const QUNIT_WORDS: u32 = 22u;
const QUNIT_VEC4: u32 = 16u;

// Whether the weights are block-quantised.
fn q_quantised() -> bool {
  return WDTYPE >= WQ8_0;
}

// Whether the weights are Q4_K or Q5_K (quant_gemv.wgsl's QkUnit path).
fn q_kquant() -> bool {
  return WDTYPE == WQ4_K || WDTYPE == WQ5_K;
}

// Whether the weights come in blocks of 32 values (Q8_0, Q5_0, Q4_0) rather than super-blocks.
fn q_block32() -> bool {
  return WDTYPE == WQ8_0 || WDTYPE == WQ5_0 || WDTYPE == WQ4_0;
}

// Values per unit.
fn q_unit_values() -> u32 {
  return select(64u, 32u, q_block32());
}

// Bytes of a block (Q8_0) or super-block.
fn q_block_bytes() -> u32 {
  switch (WDTYPE) {
    case 3u: { return 34u; }
    case 7u: { return 22u; }
    case 8u: { return 18u; }
    case 5u: { return 176u; }
    case 6u: { return 210u; }
    default: { return 144u; }
  }
}

// Bytes of a row of K values (K a multiple of the block size).
fn q_row_bytes(K: u32) -> u32 {
  return K / select(256u, 32u, q_block32()) * q_block_bytes();
}

// Words a q_unit_dot unit loads: a Q5_0 block spans 6 words whatever its alignment, a Q4_0 block
// 5, Q6_K 22 (see q_unit_word).
fn q_unit_words() -> u32 {
  switch (WDTYPE) {
    case 7u: { return 6u; }
    case 8u: { return 5u; }
    default: { return 22u; }
  }
}

// The index of the i-th word unit u of the row that starts at byte rb loads.
fn q_unit_word(rb: u32, u: u32, i: u32) -> u32 {
  if (WDTYPE == WQ5_0 || WDTYPE == WQ4_0) {
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

// Byte k (0 .. 11) of a Q4_K super-block's scales (quant_values.wgsl).
fn q4k_sbyte(s: vec3<u32>, k: u32) -> u32 {
  let w = select(select(s.z, s.y, k < 8u), s.x, k < 4u);
  return (w >> ((k & 3u) * 8u)) & 0xffu;
}

// Sub-block j's 6-bit scale and min (ggml's get_scale_min_k4; quant_values.wgsl).
fn q4k_scale_min(s: vec3<u32>, j: u32) -> vec2<f32> {
  if (j < 4u) {
    return vec2<f32>(f32(q4k_sbyte(s, j) & 63u), f32(q4k_sbyte(s, j + 4u) & 63u));
  }
  let lo = q4k_sbyte(s, j + 4u);
  let sc = (lo & 15u) | ((q4k_sbyte(s, j - 4u) >> 6u) << 4u);
  let m = (lo >> 4u) | ((q4k_sbyte(s, j) >> 6u) << 4u);
  return vec2<f32>(f32(sc), f32(m));
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
  if (WDTYPE == WQ4_0) {
    // d, then 16 bytes of nibbles (byte j: values j and j + 16); at 2 mod 4 d is the high half of
    // word 0 and the nibbles fill words 1 .. 4, at 0 mod 4 they straddle words 0 .. 4.
    let odd = ((rb + u * 18u) & 2u) != 0u;
    let d = unpack2x16float(select(w[0] & 0xffffu, w[0] >> 16u, odd)).x;
    let byte = vec4<u32>(0u, 8u, 16u, 24u);
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
      let qw = vec4<u32>(select((w[j] >> 16u) | (w[j + 1u] << 16u), w[j + 1u], odd));
      let a = (qw >> byte) & vec4<u32>(15u);
      let b = (qw >> (byte + vec4<u32>(4u))) & vec4<u32>(15u);
      acc = fma(vec4<f32>(a) - vec4<f32>(8.0), xs[j], acc);
      acc = fma(vec4<f32>(b) - vec4<f32>(8.0), xs[4u + j], acc);
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
