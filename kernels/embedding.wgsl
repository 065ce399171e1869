// Embedding lookup: out[t, :] = table[ids[t], :] * p.scale for t < T. The table [vocab, dim] is bound
// as array<u32> in its file dtype (WDTYPE, dtype.wgsl): one thread per u32 word of an output row
// (one value for f32, two for f16/bf16), 2-D grid of workgroups. A block-quantised table (Q8_0,
// Q4_K: rows of whole blocks, quant_values.wgsl) takes one thread per four values. out is written as
// raw f32 bits; an id >= vocab writes NaN over its whole row (a visible failure instead of another
// token's row).
struct Params {
  // Tokens.
  T: u32,
  // Values per row.
  dim: u32,
  // Threads per row: u32 words per table row (dim for f32, dim / 2 for 16-bit dtypes), or dim / 4
  // for the quantised types.
  words: u32,
  vocab: u32,
  scale: f32,
  // Bytes per table row (the quantised types).
  row_bytes: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

// Word i of the table, for quant_values.wgsl.
fn q_word(i: u32) -> u32 {
  return table[i];
}

@compute @workgroup_size(WG)
fn embed(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let e = (wid.x + wid.y * nwg.x) * WG + lid;
  if (e >= p.T * p.words) {
    return;
  }
  let t = e / p.words;
  let w = e - t * p.words;
  let id = ids[t];
  if (q_quantised()) {
    let o = t * p.dim + w * 4u;
    var v = vec4<u32>(0x7fc00000u); // NaN bits (Tint rejects a constant NaN f32)
    if (id < p.vocab) {
      v = bitcast<vec4<u32>>(q_values4(id * p.row_bytes, w * 4u) * p.scale);
    }
    for (var i = 0u; i < 4u; i++) {
      out[o + i] = v[i];
    }
    return;
  }
  let per = w_per_word();
  let o = t * p.dim + w * per;
  if (id >= p.vocab) {
    out[o] = 0x7fc00000u;
    if (per == 2u) {
      out[o + 1u] = 0x7fc00000u;
    }
    return;
  }
  let v = unpack_word(table[id * p.words + w]) * p.scale;
  out[o] = bitcast<u32>(v.x);
  if (per == 2u) {
    out[o + 1u] = bitcast<u32>(v.y);
  }
}
