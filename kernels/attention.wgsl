// Attention kernels over f32 activations and an f32 KV cache.
//
//   kv_append  writes T new tokens' k and v ([T, nKvHeads, headDim]) into the caches
//              ([nKvHeads, maxSeq, headDim]) at positions pos[0] .. pos[0] + T - 1.
//   prefill    flash-style attention: one workgroup per (block of BQ query rows, head); key/value
//              tiles of BK rows go through workgroup memory; online softmax in registers.
//   decode     one workgroup per (query row, head): the keys are split across the threads in chunks
//              of CH, with workgroup reductions for the softmax max and sum.
//   llama_cpp  as decode, but the arithmetic of llama.cpp's CPU flash attention over an f16 cache
//              (ggml's one-chunk path: fewer than 64 queries in the batch, fewer than 512 keys
//              or one thread): q rounded to f16; scores as decode; then the keys in order, with a
//              running max M and sum S in f32 and each output value accumulated in f16, rounded
//              after every rescale and every key: for key j with score s, if s > M the
//              accumulator is scaled by exp(M - s) and M = s, else the key's weight is
//              exp(s - M); S = S * scale + weight; out = acc * (1 / S).
//
// Query t (0 <= t < T) of the batch sits at absolute position pos[0] + t. With p.causal = 1 it attends
// to cache positions [0, pos[0] + t]; with p.causal = 0 to [0, p.kvLen). Key ranges are clipped to
// maxSeq so that no kernel reads or writes outside the caches. Grouped-query attention: head h reads
// kv head h / (nHeads / nKvHeads). scores = (q . k) * p.scale + score_bias: none (p.hasBias = 0), a
// dense bias[h, t, key] (1), or T5's relative position bias (2): a [nHeads, 2 * relMax + 1] table
// indexed by the clamped distance key - (pos0 + t) (pos0 = pos[0] when causal, else 0).
struct Params {
  T: u32,
  nHeads: u32,
  nKvHeads: u32,
  headDim: u32,
  maxSeq: u32,
  causal: u32,
  kvLen: u32,
  hasBias: u32,
  scale: f32,
  biasKeys: u32,
  relMax: u32,
}

// Threads per workgroup (all entry points).
override WG: u32 = 64u;
// Row stride bound of the workgroup tiles: headDim <= DMAX.
override DMAX: u32 = 128u;
// prefill: threads per query row.
override TPR: u32 = 4u;
// prefill: keys per tile.
override BK: u32 = 16u;
// prefill: query rows per workgroup.
override BQ: u32 = WG / TPR;
// decode: keys per chunk.
override CH: u32 = 256u;

// Most head dims one prefill thread owns (headDim <= TPR * DPT).
const DPT: u32 = 32u;
// Most head dims one decode thread owns (headDim <= WG * DPTD).
const DPTD: u32 = 4u;
// Finite stand-in for -infinity (WGSL has no infinite literals).
const NEG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;

// kv_append bindings.
@group(0) @binding(1) var<storage, read> k_new: array<f32>;
@group(0) @binding(2) var<storage, read> v_new: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_dst: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_dst: array<f32>;

// prefill / decode bindings.
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Shared by all entry points.
@group(0) @binding(5) var<storage, read> pos: array<u32>;
// prefill / decode: additive score bias [nHeads, T, biasKeys] (p.hasBias = 1) or relative bias
// table [nHeads, 2 * relMax + 1] (p.hasBias = 2); not read otherwise.
@group(0) @binding(6) var<storage, read> bias: array<f32>;

// One thread per element of k_new / v_new; 2-D grid of workgroups.
@compute @workgroup_size(WG)
fn kv_append(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let D = p.headDim;
  let rowLen = p.nKvHeads * D;
  if (i >= p.T * rowLen) {
    return;
  }
  let t = i / rowLen;
  let rem = i - t * rowLen;
  let kvh = rem / D;
  let d = rem - kvh * D;
  let at = pos[0] + t;
  if (at >= p.maxSeq) {
    return;
  }
  let dst = (kvh * p.maxSeq + at) * D + d;
  k_dst[dst] = k_new[i];
  v_dst[dst] = v_new[i];
}

// Number of cache positions query t attends to (clipped to the cache).
fn key_count(pos0: u32, t: u32) -> u32 {
  if (p.causal != 0u) {
    return min(pos0 + t + 1u, p.maxSeq);
  }
  return min(p.kvLen, p.maxSeq);
}

// The additive bias of (head h, query t at position pos0 + t, key position j), 0 without bias.
fn score_bias(h: u32, t: u32, j: u32, pos0: u32) -> f32 {
  if (p.hasBias == 1u && j < p.biasKeys) {
    return bias[(h * p.T + t) * p.biasKeys + j];
  }
  if (p.hasBias == 2u) {
    let m = i32(p.relMax);
    let d = clamp(i32(j) - i32(pos0 + t), -m, m);
    return bias[h * (2u * p.relMax + 1u) + u32(d + m)];
  }
  return 0.0;
}

// Workgroup arrays hold vec4s: the same bytes as f32 arrays, but a quarter of the elements to
// zero-initialise (llvmpipe's compile time grows steeply with that count). Element e of a logical
// f32 array x lives at x[e / 4][e % 4].
var<workgroup> tile: array<vec4<f32>, BK * DMAX / 4u>;
var<workgroup> scores: array<vec4<f32>, (BQ * BK + 3u) / 4u>;

fn tile_at(e: u32) -> f32 {
  return tile[e >> 2u][e & 3u];
}

fn score_at(e: u32) -> f32 {
  return scores[e >> 2u][e & 3u];
}

// Loads cache rows kb .. kb + nk - 1 of one kv head (f32 offset base of row 0) into the tile as
// BK * D contiguous values, zero past nk rows.
fn load_tile(lid: u32, base: u32, nk: u32, useK: bool) {
  let D = p.headDim;
  let n = nk * D;
  for (var e4 = lid; e4 < (BK * D + 3u) / 4u; e4 += WG) {
    var x = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
      let e = e4 * 4u + c;
      if (e < n) {
        if (useK) {
          x[c] = k_cache[base + e];
        } else {
          x[c] = v_cache[base + e];
        }
      }
    }
    tile[e4] = x;
  }
}

// Workgroups: (ceil(T / BQ), nHeads). Thread lid serves query row lid / TPR of the block: it scores
// keys sub, sub + TPR, ... of each tile (sub = lid % TPR) and accumulates head dims
// d = sub + TPR * i of the output.
@compute @workgroup_size(WG)
fn prefill(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let D = p.headDim;
  let h = wid.y;
  let kvh = h / (p.nHeads / p.nKvHeads);
  let row = lid / TPR;
  let sub = lid % TPR;
  let t0 = wid.x * BQ;
  let t = t0 + row;
  let live = t < p.T;
  let pos0 = select(0u, pos[0], p.causal != 0u);
  // Keys this row attends to, and keys any row of the block attends to.
  let nRow = select(0u, key_count(pos0, t), live);
  let nBlock = key_count(pos0, min(t0 + BQ, p.T) - 1u);
  let kvBase = kvh * p.maxSeq * D;
  let qBase = (t * p.nHeads + h) * D;

  var acc: array<f32, DPT>;
  for (var i = 0u; i < DPT; i++) {
    acc[i] = 0.0;
  }
  var m = NEG;
  var l = 0.0;

  for (var kb = 0u; kb < nBlock; kb += BK) {
    // K tile: keys kb .. kb + BK - 1 are contiguous in the cache.
    let nk = min(BK, nBlock - kb);
    load_tile(lid, kvBase + kb * D, nk, true);
    workgroupBarrier();
    // Scores of this thread's keys of the tile.
    for (var j = sub; j < BK; j += TPR) {
      var s = 0.0;
      if (live && kb + j < nRow) {
        for (var d = 0u; d < D; d++) {
          s += q[qBase + d] * tile_at(j * D + d);
        }
        s = s * p.scale + score_bias(h, t, kb + j, pos0);
      }
      let e = row * BK + j;
      scores[e >> 2u][e & 3u] = s;
    }
    workgroupBarrier();
    // V tile (the K tile is no longer read).
    load_tile(lid, kvBase + kb * D, nk, false);
    workgroupBarrier();
    // Online softmax update of this row over the tile's valid keys.
    let nValid = min(BK, select(0u, nRow - kb, nRow > kb));
    var mt = m;
    for (var j = 0u; j < nValid; j++) {
      mt = max(mt, score_at(row * BK + j));
    }
    let alpha = exp(m - mt);
    l *= alpha;
    for (var i = 0u; i < DPT; i++) {
      acc[i] *= alpha;
    }
    for (var j = 0u; j < nValid; j++) {
      let pj = exp(score_at(row * BK + j) - mt);
      l += pj;
      for (var i = 0u; i < DPT; i++) {
        let d = sub + TPR * i;
        if (d >= D) {
          break;
        }
        acc[i] += pj * tile_at(j * D + d);
      }
    }
    m = mt;
    workgroupBarrier();
  }

  if (!live) {
    return;
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var i = 0u; i < DPT; i++) {
    let d = sub + TPR * i;
    if (d >= D) {
      break;
    }
    out[qBase + d] = acc[i] * inv;
  }
}

// f32 -> f16 -> f32 (round to nearest).
fn f16_round(x: f32) -> f32 {
  return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

var<workgroup> dq: array<vec4<f32>, DMAX / 4u>;
var<workgroup> ds: array<vec4<f32>, CH / 4u>;
var<workgroup> dred: array<f32, WG>;

// What decode and llama_cpp's workgroup (query row wid.x, head wid.y) works on; the query row is
// loaded into dq (rounded to f16 when `half`), behind a barrier.
struct OneQuery {
  t: u32,
  pos0: u32,
  // Keys attended.
  n: u32,
  kvBase: u32,
  qBase: u32,
}

fn one_query(wid: vec3<u32>, lid: u32, half: bool) -> OneQuery {
  let D = p.headDim;
  let t = wid.x;
  let h = wid.y;
  let kvh = h / (p.nHeads / p.nKvHeads);
  let pos0 = select(0u, pos[0], p.causal != 0u);
  let qBase = (t * p.nHeads + h) * D;
  for (var d = lid; d < D; d += WG) {
    let x = q[qBase + d];
    dq[d >> 2u][d & 3u] = select(x, f16_round(x), half);
  }
  workgroupBarrier();
  return OneQuery(t, pos0, key_count(pos0, t), kvh * p.maxSeq * D, qBase);
}

// out[qBase + d] = acc[i] / l for this thread's head dims d = lid + WG * i.
fn write_row(qBase: u32, lid: u32, acc: array<f32, DPTD>, l: f32) {
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var i = 0u; i < DPTD; i++) {
    let d = lid + WG * i;
    if (d >= p.headDim) {
      break;
    }
    out[qBase + d] = acc[i] * inv;
  }
}

// Workgroups: (T, nHeads). Scores of a chunk: one key per thread; the weighted sum of values: one
// head dim per thread (d = lid, lid + WG, ...). WG must be a power of two.
@compute @workgroup_size(WG)
fn decode(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let w = one_query(wid, lid, false);
  let D = p.headDim;
  let h = wid.y;
  var acc: array<f32, DPTD>;
  var m = NEG;
  var l = 0.0;

  for (var c0 = 0u; c0 < w.n; c0 += CH) {
    let cn = min(CH, w.n - c0);
    // Scores, and this thread's max.
    var lm = NEG;
    for (var j = lid; j < cn; j += WG) {
      let kRow = w.kvBase + (c0 + j) * D;
      // Four independent partial sums: four loads in flight per thread, not one.
      var s4 = vec4<f32>(0.0);
      var d = 0u;
      for (; d + 4u <= D; d += 4u) {
        s4 += dq[d >> 2u] * vec4<f32>(
          k_cache[kRow + d],
          k_cache[kRow + d + 1u],
          k_cache[kRow + d + 2u],
          k_cache[kRow + d + 3u],
        );
      }
      for (; d < D; d++) {
        s4.x += dq[d >> 2u][d & 3u] * k_cache[kRow + d];
      }
      var s = (s4.x + s4.y) + (s4.z + s4.w);
      s = s * p.scale + score_bias(h, w.t, c0 + j, w.pos0);
      ds[j >> 2u][j & 3u] = s;
      lm = max(lm, s);
    }
    dred[lid] = lm;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st /= 2u) {
      if (lid < st) {
        dred[lid] = max(dred[lid], dred[lid + st]);
      }
      workgroupBarrier();
    }
    let mt = max(m, dred[0]);
    workgroupBarrier();
    // Probabilities (relative to mt), and this thread's sum.
    var ls = 0.0;
    for (var j = lid; j < cn; j += WG) {
      let pj = exp(ds[j >> 2u][j & 3u] - mt);
      ds[j >> 2u][j & 3u] = pj;
      ls += pj;
    }
    dred[lid] = ls;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st /= 2u) {
      if (lid < st) {
        dred[lid] += dred[lid + st];
      }
      workgroupBarrier();
    }
    let alpha = exp(m - mt);
    l = l * alpha + dred[0];
    m = mt;
    for (var i = 0u; i < DPTD; i++) {
      let d = lid + WG * i;
      if (d >= D) {
        break;
      }
      // Four keys per step into independent partial sums: four loads in flight, not one.
      var a4 = vec4<f32>(0.0);
      let vBase = w.kvBase + c0 * D + d;
      var j = 0u;
      for (; j + 4u <= cn; j += 4u) {
        a4 += ds[j >> 2u] * vec4<f32>(
          v_cache[vBase + j * D],
          v_cache[vBase + (j + 1u) * D],
          v_cache[vBase + (j + 2u) * D],
          v_cache[vBase + (j + 3u) * D],
        );
      }
      for (; j < cn; j++) {
        a4.x += ds[j >> 2u][j & 3u] * v_cache[vBase + j * D];
      }
      acc[i] = acc[i] * alpha + ((a4.x + a4.y) + (a4.z + a4.w));
    }
    workgroupBarrier();
  }

  write_row(w.qBase, lid, acc, l);
}

// Workgroups: (T, nHeads). Scores of a chunk as decode (one key per thread); then every thread
// walks the chunk's keys in order for its head dims (d = lid, lid + WG, ...), all threads keeping
// the same M and S.
@compute @workgroup_size(WG)
fn llama_cpp(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let w = one_query(wid, lid, true);
  let D = p.headDim;
  let h = wid.y;
  var acc: array<f32, DPTD>;
  var m = NEG;
  var l = 0.0;

  for (var c0 = 0u; c0 < w.n; c0 += CH) {
    let cn = min(CH, w.n - c0);
    for (var j = lid; j < cn; j += WG) {
      let kRow = w.kvBase + (c0 + j) * D;
      var s = 0.0;
      for (var d = 0u; d < D; d++) {
        s += dq[d >> 2u][d & 3u] * k_cache[kRow + d];
      }
      ds[j >> 2u][j & 3u] = s * p.scale + score_bias(h, w.t, c0 + j, w.pos0);
    }
    workgroupBarrier();
    for (var j = 0u; j < cn; j++) {
      let s = ds[j >> 2u][j & 3u];
      var ms = 1.0;
      var vs = 1.0;
      let rescale = s > m;
      if (rescale) {
        ms = exp(m - s);
        m = s;
      } else {
        vs = exp(s - m);
      }
      l = l * ms + vs;
      for (var i = 0u; i < DPTD; i++) {
        let d = lid + WG * i;
        if (d >= D) {
          break;
        }
        var a = acc[i];
        if (rescale) {
          a = f16_round(a * ms);
        }
        acc[i] = f16_round(fma(v_cache[w.kvBase + (c0 + j) * D + d], vs, a));
      }
    }
    workgroupBarrier();
  }

  write_row(w.qBase, lid, acc, l);
}
