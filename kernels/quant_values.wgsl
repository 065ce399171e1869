// Element access to block-quantised weights (Q8_0, Q5_0, Q4_0, Q4_K, Q5_K, Q6_K; quant.wgsl) for
// kernels that stage or copy values rather than stream rows through a GEMV: the prefill GEMM
// (matmul.wgsl) and the embedding lookup (embedding.wgsl). q_values4 decodes four consecutive
// values of a row from the word(s) of quants that hold them, exactly as llama.cpp's
// dequantize_row_* compute them in f32. The including kernel defines q_word(i), the i-th u32 word
// of its weight binding. Needs dtype.wgsl and quant.wgsl.

// W[k .. k + 3] (k a multiple of 4) of the row that starts at byte rb.
fn q_values4(rb: u32, k: u32) -> vec4<f32> {
  if (WDTYPE == WQ8_0) {
    // Block of 34 bytes (2-byte aligned): f16 d, then 32 int8; the four quants start 2 + k % 32 in.
    let b = rb + (k / 32u) * 34u;
    let d = q_block_d(b);
    let qb = b + 2u + (k % 32u);
    let o = qb / 4u;
    let q = select((q_word(o) >> 16u) | (q_word(o + 1u) << 16u), q_word(o), (qb & 3u) == 0u);
    return q_i8x4(q) * d;
  }
  if (WDTYPE == WQ6_K) {
    return q6k_values4(rb + (k / 256u) * 210u, k % 256u);
  }
  if (WDTYPE == WQ5_0) {
    // Block of 22 bytes (2-byte aligned): f16 d, 4 bytes of fifth bits (bit i: value i), 16 bytes
    // of nibbles (byte j: value j low, j + 16 high).
    let b = rb + (k / 32u) * 22u;
    let r = k % 32u;
    let hi = (vec4<u32>(q_bytes4(b + 2u)) >> (vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(r))) & vec4<u32>(1u);
    return (vec4<f32>(q_nibbles4(b + 6u, r) | (hi << vec4<u32>(4u))) - vec4<f32>(16.0)) * q_block_d(b);
  }
  if (WDTYPE == WQ4_0) {
    // Block of 18 bytes (2-byte aligned): f16 d, 16 bytes of nibbles (byte j: value j low, j + 16
    // high).
    let b = rb + (k / 32u) * 18u;
    return (vec4<f32>(q_nibbles4(b + 2u, k % 32u)) - vec4<f32>(8.0)) * q_block_d(b);
  }
  // Super-block of 144 (Q4_K) or 176 (Q5_K) bytes (4-byte aligned): f16 d and dmin, 12 bytes of
  // scales and mins, (Q5_K) 32 bytes of fifth bits, then 4 chunks of 32 bytes, chunk c holding
  // sub-block 2c in its low nibbles and sub-block 2c + 1 in its high nibbles.
  let s0 = (rb + (k / 256u) * q_block_bytes()) / 4u;
  let dm = unpack2x16float(q_word(s0));
  let s = vec3<u32>(q_word(s0 + 1u), q_word(s0 + 2u), q_word(s0 + 3u));
  let r = k % 256u;
  let chunk = r / 64u;
  let high = (r % 64u) >= 32u;
  let sm = q4k_scale_min(s, 2u * chunk + select(0u, 1u, high));
  let five = WDTYPE == WQ5_K;
  let w = q_word(s0 + select(4u, 12u, five) + chunk * 8u + (r % 32u) / 4u);
  let byte = vec4<u32>(0u, 8u, 16u, 24u);
  var q = (vec4<u32>(w) >> (byte + vec4<u32>(select(0u, 4u, high)))) & vec4<u32>(15u);
  if (five) {
    let j = 2u * chunk + select(0u, 1u, high); // the sub-block: its fifth bits are bit j
    q |= ((vec4<u32>(q_word(s0 + 4u + (r % 32u) / 4u)) >> (byte + vec4<u32>(j))) & vec4<u32>(1u)) <<
      vec4<u32>(4u);
  }
  return (dm.x * sm.x) * vec4<f32>(q) - vec4<f32>(dm.y * sm.y);
}

// The f16 at the even byte b (the scale of a Q8_0, Q5_0 or Q4_0 block, Q6_K's d), as f32.
fn q_block_d(b: u32) -> f32 {
  let dw = q_word(b / 4u);
  return unpack2x16float(select(dw & 0xffffu, dw >> 16u, (b & 2u) != 0u)).x;
}

// Values r .. r + 3 (r a multiple of 4, < 32) of a block's 16 bytes of nibbles at byte at (byte j:
// value j in the low nibble, value j + 16 in the high one), as integers.
fn q_nibbles4(at: u32, r: u32) -> vec4<u32> {
  let shift = vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(select(0u, 4u, r >= 16u));
  return (vec4<u32>(q_bytes4(at + r % 16u)) >> shift) & vec4<u32>(15u);
}

// The 4 bytes at byte b (even) of the weights.
fn q_bytes4(b: u32) -> u32 {
  let i = b / 4u;
  return select(q_word(i), (q_word(i) >> 16u) | (q_word(i + 1u) << 16u), (b & 2u) != 0u);
}

// Values r .. r + 3 (r a multiple of 4) of the Q6_K super-block at byte sb (even): value
// 128 h + 32 g + l has its low bits in nibble g / 2 of ql[64 h + 32 (g % 2) + l], its high bits at
// bit 2 g of qh[32 h + l] (byte 128 + ...), its scale in int8 192 + 8 h + 2 g + l / 16; d at 208.
fn q6k_values4(sb: u32, r: u32) -> vec4<f32> {
  let h = r / 128u;
  let g = (r % 128u) / 32u;
  let l = r % 32u;
  let byte = vec4<u32>(0u, 8u, 16u, 24u);
  let qlw = q_bytes4(sb + 64u * h + 32u * (g % 2u) + l);
  let ql = vec4<u32>(qlw) >> (byte + vec4<u32>(4u * (g / 2u)));
  let qh = vec4<u32>(q_bytes4(sb + 128u + 32u * h + l)) >> (byte + vec4<u32>(2u * g));
  let q = (ql & vec4<u32>(15u)) | ((qh & vec4<u32>(3u)) << vec4<u32>(4u));
  let sc = sb + 192u + 8u * h + 2u * g + l / 16u;
  let sw = q_word(sc / 4u);
  let scale = f32(bitcast<i32>(sw << (24u - 8u * (sc % 4u))) >> 24u);
  return (q_block_d(sb + 208u) * scale) * (vec4<f32>(q) - vec4<f32>(32.0));
}
