// Block-quantised weights, read as stored in GGUF files and dequantised in registers inside the GEMV
// kernels (matvec.wgsl, moe.wgsl): WDTYPE (dtype.wgsl) 3 = Q8_0, 4 = Q4_K. A row of K values is
// K / 32 Q8_0 blocks (34 bytes: f16 d, 32 int8; only 2-byte aligned) or K / 256 Q4_K super-blocks
// (144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of 4-bit quants), back
// to back; the weights are bound as array<u32> and addressed by byte (runtime/weights/quant.ts
// describes the layouts).
//
// The unit of work is 32 values (a Q8_0 block) or 64 (a quarter of a Q4_K super-block: sub-blocks
// 2q and 2q + 1, whose quants share 32 bytes, low and high nibbles). A kernel gives each lane of a
// row every TPR-th unit; per unit it loads the unit's words (q_unit_words of them, at the indices
// q_unit_word gives, from its own binding) and the unit's x values (q_unit_values / 4 vec4s, from
// value q_unit_values * u of the row), and q_unit_dot returns their dot product. Needs dtype.wgsl.

const WQ8_0: u32 = 3u;
const WQ4_K: u32 = 4u;
// The most words and x vec4s a unit uses (Q4_K: 4 header words + 8 quant words; 64 values).
const QUNIT_WORDS: u32 = 12u;
const QUNIT_VEC4: u32 = 16u;

// Whether the weights are block-quantised.
fn q_quantised() -> bool {
  return WDTYPE >= WQ8_0;
}

// Values per unit.
fn q_unit_values() -> u32 {
  return select(64u, 32u, WDTYPE == WQ8_0);
}

// Bytes of a row of K values (K a multiple of the block size).
fn q_row_bytes(K: u32) -> u32 {
  return select(K / 256u * 144u, K / 32u * 34u, WDTYPE == WQ8_0);
}

// Words a unit loads: a Q8_0 block spans 9 words whatever its alignment; Q4_K: 4 + 8.
fn q_unit_words() -> u32 {
  return select(QUNIT_WORDS, 9u, WDTYPE == WQ8_0);
}

// The index of the i-th word unit u of the row that starts at byte rb loads.
fn q_unit_word(rb: u32, u: u32, i: u32) -> u32 {
  if (WDTYPE == WQ8_0) {
    return (rb + u * 34u) / 4u + i;
  }
  let sb = rb / 4u + (u / 4u) * 36u;
  return select(sb + 4u + (u % 4u) * 8u + (i - 4u), sb + i, i < 4u);
}

// The four int8 of a word, as f32 (lowest byte first).
fn q_i8x4(w: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Byte k (0 .. 11) of a Q4_K super-block's scales.
fn q4k_sbyte(s: vec3<u32>, k: u32) -> u32 {
  let w = select(select(s.z, s.y, k < 8u), s.x, k < 4u);
  return (w >> ((k & 3u) * 8u)) & 0xffu;
}

// Sub-block j's 6-bit scale and min (ggml's get_scale_min_k4).
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
  if (WDTYPE == WQ8_0) {
    // A block at 2 mod 4: d is the high half of word 0 and the quants are words 1 .. 8; at 0 mod 4:
    // d is the low half and each quant word straddles two loaded words.
    let odd = ((rb + u * 34u) & 2u) != 0u;
    let d = unpack2x16float(select(w[0] & 0xffffu, w[0] >> 16u, odd)).x;
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < 8u; j++) {
      let q = select((w[j] >> 16u) | (w[j + 1u] << 16u), w[j + 1u], odd);
      acc = fma(q_i8x4(q), xs[j], acc);
    }
    return d * dot(acc, one);
  }
  let dm = unpack2x16float(w[0]);
  let s = vec3<u32>(w[1], w[2], w[3]);
  let q = u % 4u;
  let a = q4k_scale_min(s, 2u * q);
  let b = q4k_scale_min(s, 2u * q + 1u);
  var lo = vec4<f32>(0.0);
  var hi = vec4<f32>(0.0);
  var xlo = vec4<f32>(0.0);
  var xhi = vec4<f32>(0.0);
  for (var j = 0u; j < 8u; j++) {
    let qw = vec4<u32>(w[4u + j]);
    lo = fma(vec4<f32>((qw >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u)), xs[j], lo);
    hi = fma(vec4<f32>((qw >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u)), xs[8u + j], hi);
    xlo += xs[j];
    xhi += xs[8u + j];
  }
  return dm.x * (a.x * dot(lo, one) + b.x * dot(hi, one)) -
    dm.y * (a.y * dot(xlo, one) + b.y * dot(xhi, one));
}
