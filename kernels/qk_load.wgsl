// Loading a Q4_K / Q5_K unit (quant_gemv.wgsl's layout) in the GEMV kernels whose weights are bound
// as `wv` (vec4<u32>) and `wu` (u32) over the same range: matvec.wgsl and matvec_q8k.wgsl.

// Q4_K / Q5_K unit u of the row whose first word is rw (a multiple of 4: the header is one 16-byte
// load through `wv`).
fn qk_load(rw: u32, u: u32) -> QkUnit {
  let b = rw + qk_sb_word(u);
  var w: QkUnit;
  w.hdr = wv[b / 4u];
  w.q01 = vec4<u32>(
    wu[b + qk_quant_word(u, 0u)],
    wu[b + qk_quant_word(u, 1u)],
    wu[b + qk_quant_word(u, 2u)],
    wu[b + qk_quant_word(u, 3u)],
  );
  w.q23 = vec4<u32>(
    wu[b + qk_quant_word(u, 4u)],
    wu[b + qk_quant_word(u, 5u)],
    wu[b + qk_quant_word(u, 6u)],
    wu[b + qk_quant_word(u, 7u)],
  );
  if (WDTYPE == WQ5_K) {
    w.qh = vec2<u32>(wu[b + qk_qh_word(u, 0u)], wu[b + qk_qh_word(u, 1u)]);
  }
  return w;
}
