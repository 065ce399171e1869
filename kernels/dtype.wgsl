// Shared by kernels that read packed weights. Weights are bound as array<u32> whatever their dtype;
// WDTYPE selects how a word unpacks: 0 = f32 (one value per word), 1 = f16 and 2 = bf16 (two values
// per word, the lower-addressed element in the low half, as in a little-endian file); 3 = Q8_0,
// 4 = Q4_K, 5 = Q5_K, 6 = Q6_K, 7 = Q5_0 and 8 = Q4_0 are block-quantised (quant.wgsl decodes them; the functions below
// do not apply).
override WDTYPE: u32 = 0u;

// Values per u32 word: 1 for f32, 2 for the 16-bit dtypes.
fn w_per_word() -> u32 {
  return select(2u, 1u, WDTYPE == 0u);
}

// The (up to) two values held in one word; .y is 0 for f32.
fn unpack_word(w: u32) -> vec2<f32> {
  if (WDTYPE == 1u) {
    return unpack2x16float(w);
  }
  if (WDTYPE == 2u) {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
  }
  return vec2<f32>(bitcast<f32>(w), 0.0);
}
