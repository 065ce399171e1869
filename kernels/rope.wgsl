// Rotary position embedding, in place on f32 x. Token t (< p.T), head h (< p.heads) starts at element
// p.offset + t * p.stride + h * p.head_stride; its first rotary_dim = 2 * p.half dims are rotated,
// pair i (< p.half) by the angle fround(f32(pos[0] + t) * inv_freq[i]) (HF's f32 arithmetic):
//   (x1, x2) <- (x1 cos - x2 sin, x2 cos + x1 sin)
// with (x1, x2) = dims (i, i + half) for NEOX (HF rotate_half) or (2i, 2i + 1) otherwise (GPT-J
// rotate_every_two). One thread per (token, head, pair), 2-D grid of workgroups.
//
// cos and sin are computed here rather than with WGSL's cos/sin, whose accuracy is only specified on
// [-pi, pi] (angles reach pos * 1 rad): exact reduction by pi/2 with a 96-bit 2/pi in integer
// arithmetic (Payne-Hanek style), then f32 minimax polynomials on [-pi/4, pi/4]; absolute error
// ~1e-7 for every angle below 2^60.
//
// rope_kv: the attention block's RoPE and KV-cache append in one pass over a batch laid out
// [T, heads, headDim] (q) and [T, kvHeads, headDim] (k, v): q is rotated in place; k is rotated and
// written, with v, into the caches [kvHeads, maxSeq, headDim] at position pos[0] + t (tokens at or
// past maxSeq are not written; k itself is left as it is). The rotation is the same code as rope's.
// Per token one thread per q pair and one per k/v element (the thread of a rotated pair's first
// element writes both of the pair's k values).
struct Params {
  T: u32,
  heads: u32,
  half: u32,
  stride: u32,
  head_stride: u32,
  offset: u32,
}

override WG: u32 = 256u;
// 1: pairs (i, i + half) (GPT-NeoX / Llama / HF rotate_half); 0: pairs (2i, 2i + 1) (GPT-J).
override NEOX: bool = true;
// rope_kv: store keys and values rounded to f16 (to nearest), as an f16 KV cache holds them.
override F16_CACHE: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

// rope_kv's parameters and bindings (x at binding 3 is its q).
struct KvParams {
  T: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  half: u32,
  max_seq: u32,
}

@group(0) @binding(0) var<uniform> pk: KvParams;
@group(0) @binding(4) var<storage, read> k_new: array<f32>;
@group(0) @binding(5) var<storage, read> v_new: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<f32>;

// The 64-bit product a * b as (low, high) words.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let ll = al * bl;
  let lh = al * bh;
  let hl = ah * bl;
  let hh = ah * bh;
  let mid = lh + hl;
  let mid_carry = select(0u, 0x10000u, mid < lh);
  let lo = ll + (mid << 16u);
  let lo_carry = select(0u, 1u, lo < ll);
  return vec2<u32>(lo, hh + (mid >> 16u) + mid_carry + lo_carry);
}

// (cos a, sin a) for a finite f32 angle a.
fn cos_sin(a: f32) -> vec2<f32> {
  let bits = bitcast<u32>(a) & 0x7fffffffu;
  var r = abs(a);
  var q = 0u;
  if (bits >= 0x3f000000u) {
    // |a| = m * 2^e with a 24-bit integer m. Quarter turns |a| * 2/pi = m * W * 2^(e - 96) with
    // W = floor(2/pi * 2^96) (3 words); the 32 bits of the product at bit 66 - e are the quarter
    // turns mod 4 with 30 fraction bits.
    let m = (bits & 0x7fffffu) | 0x800000u;
    let e = i32(bits >> 23u) - 150;
    let a0 = mul_wide(m, 0xfc2757d1u);
    let b0 = mul_wide(m, 0x4e441529u);
    let c0 = mul_wide(m, 0xa2f9836eu);
    let p1 = a0.y + b0.x;
    let k1 = select(0u, 1u, p1 < a0.y);
    let t = b0.y + c0.x;
    let k2 = select(0u, 1u, t < b0.y);
    let p2 = t + k1;
    let k3 = select(0u, 1u, p2 < t);
    let p3 = c0.y + k2 + k3;
    let words = array<u32, 5>(a0.x, p1, p2, p3, 0u);
    let b = u32(clamp(66 - e, 0, 127));
    let wi = b >> 5u;
    let sh = b & 31u;
    let lo = words[wi] >> sh;
    let hi = select(words[min(wi + 1u, 4u)] << (32u - sh), 0u, sh == 0u);
    let w = lo | hi;
    q = ((w + 0x20000000u) >> 30u) & 3u;
    // The remainder in [-1/2, 1/2) quarter turns, times pi/2 * 2^-30.
    r = f32(bitcast<i32>(w - (q << 30u))) * 1.4629180792671596e-9;
  }
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z +
    z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  var cs: vec2<f32>;
  switch q {
    case 0u: {
      cs = vec2<f32>(c, s);
    }
    case 1u: {
      cs = vec2<f32>(-s, c);
    }
    case 2u: {
      cs = vec2<f32>(-c, -s);
    }
    default: {
      cs = vec2<f32>(s, -c);
    }
  }
  return vec2<f32>(cs.x, select(cs.y, -cs.y, a < 0.0));
}

@compute @workgroup_size(WG)
fn rope(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wid.x + wid.y * nwg.x) * WG + lid;
  let pairs = p.heads * p.half;
  if (idx >= p.T * pairs) {
    return;
  }
  let t = idx / pairs;
  let rem = idx - t * pairs;
  let h = rem / p.half;
  let i = rem - h * p.half;
  let base = p.offset + t * p.stride + h * p.head_stride;
  let i1 = select(base + 2u * i, base + i, NEOX);
  let i2 = select(i1 + 1u, i1 + p.half, NEOX);
  let r = rotated(x[i1], x[i2], pos[0] + t, i);
  x[i1] = r.x;
  x[i2] = r.y;
}

// The pair (x1, x2) of pair index i rotated for position at.
fn rotated(x1: f32, x2: f32, at: u32, i: u32) -> vec2<f32> {
  let angle = f32(at) * inv_freq[i];
  let cs = cos_sin(angle);
  return vec2<f32>(x1 * cs.x - x2 * cs.y, x2 * cs.x + x1 * cs.y);
}

// A value as the cache stores it (F16_CACHE).
fn cached(x: f32) -> f32 {
  return select(x, unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x, F16_CACHE);
}

@compute @workgroup_size(WG)
fn rope_kv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wid.x + wid.y * nwg.x) * WG + lid;
  let D = pk.head_dim;
  let half = pk.half;
  let nq = pk.heads * half;
  let per = nq + pk.kv_heads * D;
  if (idx >= pk.T * per) {
    return;
  }
  let t = idx / per;
  let u = idx - t * per;
  let at = pos[0] + t;
  if (u < nq) {
    // q pair i of head h, in place.
    let h = u / half;
    let i = u - h * half;
    let base = (t * pk.heads + h) * D;
    let i1 = select(base + 2u * i, base + i, NEOX);
    let i2 = select(i1 + 1u, i1 + half, NEOX);
    let r = rotated(x[i1], x[i2], at, i);
    x[i1] = r.x;
    x[i2] = r.y;
    return;
  }
  if (at >= pk.max_seq) {
    return;
  }
  // Element d of kv head g: v copied; k copied past the rotary dims, else rotated by its pair's
  // first element's thread.
  let e = u - nq;
  let g = e / D;
  let d = e - g * D;
  let src = t * pk.kv_heads * D + e;
  let dst = (g * pk.max_seq + at) * D + d;
  v_cache[dst] = cached(v_new[src]);
  if (d >= 2u * half) {
    k_cache[dst] = cached(k_new[src]);
    return;
  }
  let first = select((d & 1u) == 0u, d < half, NEOX);
  if (!first) {
    return;
  }
  let i = select(d / 2u, d, NEOX);
  let step = select(1u, half, NEOX);
  let r = rotated(k_new[src], k_new[src + step], at, i);
  k_cache[dst] = cached(r.x);
  k_cache[dst + step] = cached(r.y);
}
