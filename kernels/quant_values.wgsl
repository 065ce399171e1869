// Element access to block-quantised weights (Q8_0, Q4_K; quant.wgsl) for kernels that stage or copy
// values rather than stream rows through a GEMV: the prefill GEMM (matmul.wgsl) and the embedding
// lookup (embedding.wgsl). q_values4 decodes four consecutive values of a row from the one word of
// quants that holds them, exactly as llama.cpp's dequantize_row_q8_0 / dequantize_row_q4_K compute
// them in f32. The including kernel defines q_word(i), the i-th u32 word of its weight binding.
// Needs dtype.wgsl and quant.wgsl.

// W[k .. k + 3] (k a multiple of 4) of the row that starts at byte rb.
fn q_values4(rb: u32, k: u32) -> vec4<f32> {
  if (WDTYPE == WQ8_0) {
    // Block of 34 bytes (2-byte aligned): f16 d, then 32 int8; the four quants start 2 + k % 32 in.
    let b = rb + (k / 32u) * 34u;
    let dw = q_word(b / 4u);
    let d = unpack2x16float(select(dw & 0xffffu, dw >> 16u, (b & 2u) != 0u)).x;
    let qb = b + 2u + (k % 32u);
    let o = qb / 4u;
    let q = select((q_word(o) >> 16u) | (q_word(o + 1u) << 16u), q_word(o), (qb & 3u) == 0u);
    return q_i8x4(q) * d;
  }
  // Super-block of 144 bytes (rows are whole super-blocks, so 4-byte aligned): f16 d and dmin,
  // 12 bytes of scales and mins, then 4 chunks of 32 bytes, chunk c holding sub-block 2c in its low
  // nibbles and sub-block 2c + 1 in its high nibbles.
  let s0 = (rb + (k / 256u) * 144u) / 4u;
  let dm = unpack2x16float(q_word(s0));
  let s = vec3<u32>(q_word(s0 + 1u), q_word(s0 + 2u), q_word(s0 + 3u));
  let r = k % 256u;
  let chunk = r / 64u;
  let high = (r % 64u) >= 32u;
  let sm = q4k_scale_min(s, 2u * chunk + select(0u, 1u, high));
  let w = q_word(s0 + 4u + chunk * 8u + (r % 32u) / 4u);
  let shift = vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(select(0u, 4u, high));
  let q = vec4<f32>((vec4<u32>(w) >> shift) & vec4<u32>(15u));
  return (dm.x * sm.x) * q - vec4<f32>(dm.y * sm.y);
}
