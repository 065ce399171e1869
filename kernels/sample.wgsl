// Temperature + nucleus (top-p) sampling of one token per row of f32 logits [rows, V], entirely on
// the GPU, one workgroup per row on a 2-D grid of workgroups (linear index wid.x + wid.y * nwg.x).
// No sort: the top-p threshold is found by a search on the f32 bit pattern of the probability.
//
// Per row, with m = max logit and e(l) = exp((l - m) * inv_t) in (0, 1] (e = 1 for the maximum; this
// one expression is evaluated identically wherever e is needed, so every pass sees the same bits):
//
// 1. m: max-reduction over the row (threads take columns lid, lid + WG, ...).
// 2. S = M(0), where M(t) = sum of e(l_c) over tokens with e(l_c) >= t (same column order, same
//    reduction tree as every later M(t), so the f32 values are consistent; M is non-increasing in t
//    also after rounding, since f32 addition of non-negative terms is monotone).
// 3. Threshold tau: with top_p >= 1, tau = 0 (keep every token). Otherwise goal = top_p * S and tau
//    = the largest f32 t in [0, e_max] with M(t) >= goal. M only changes at the e values, so tau
//    is exactly the e of the smallest kept token: the kept set {c : e_c >= tau} is the smallest set
//    of highest-probability tokens whose mass reaches top_p, where tokens tied with the boundary
//    value are all kept. Positive f32 values order like their u32 bit patterns, so the search runs
//    on bits in [lo, hi) = [0, bits(e_max) + 1) with the invariant M(lo) >= goal: each pass
//    evaluates M at 7 equally spaced bit patterns in one sweep over the row (two vec4 reductions)
//    and keeps the eighth of the interval that holds the answer; 10 passes cover the 2^30 patterns
//    of [0, 1].
// 4. Draw: the uniform u = (bits >> 8) * 2^-24 in [0, 1) with bits = mix32(mix32(mix32(seed ^
//    0x9e3779b9) ^ counter) ^ (seed_offset + row)) (mix32 = Wellons' triple32, a u32 bijection),
//    seed = rng[0], counter = rng[1].
// 5. Token: the first kept token, in index order, whose inclusive cumulative kept mass exceeds
//    x = u * K (K = kept mass). Chunked prefix scan: thread i owns columns [i*C, (i+1)*C),
//    C = ceil(V / WG), and sums its kept e; a two-level sequential scan of the WG chunk sums (groups
//    of GS = 16: monotone, so the chunk intervals [P_{i-1}, P_i) tile [0, K = P_{WG-1}) without gap or
//    overlap) gives the one thread with P_{i-1} <= x < P_i (x is clamped below K); it rescans its
//    chunk from P_{i-1} and picks the first kept token where the running sum exceeds x (the last
//    kept token of its chunk should rounding leave it short) and writes it to out[row].
// 6. RNG advance: every workgroup counts itself in rng[2] (atomic) after it has read rng[1]; the
//    last of the p.rows workgroups resets rng[2] to 0 and increments rng[1], so the next call (or
//    the next replay of a recorded plan) draws fresh numbers without any CPU write.
//
// A row without a valid distribution (a NaN, a +inf, or only -inf logits) gets NONE (0xffffffff),
// which is no token id, so the caller's token readback tells it the logits were broken. The check
// rides on step 1's reduction (its second lane, otherwise a copy of the max): each thread flags a
// NaN or +inf it saw, and whether it saw a finite value; -inf alone is a masked token, never drawn.
struct Params {
  rows: u32,
  V: u32,
  // 1 / temperature.
  inv_t: f32,
  // Nucleus mass in (0, 1]; >= 1 disables the search.
  top_p: f32,
  // Added to the row index to form the hash's stream.
  seed_offset: u32,
}

// Threads per workgroup; a power of two in [32, 256] (sample.ts uses 64 and 256).
override WG: u32 = 256u;
// Reduction slots: WG values are folded into R slots (WG / R rounds), then a tree over the R slots.
// Kept small on purpose: workgroup memory is zero-initialised per WebGPU, and llvmpipe's compile
// time grows steeply with the element count of workgroup arrays.
const R: u32 = 32u;
// Scan group size (WG / GS <= 16 groups).
const GS: u32 = 16u;
// The token of a row without a valid distribution.
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
// [seed, counter, arrivals, reserved]
@group(0) @binding(3) var<storage, read_write> rng: array<atomic<u32>, 4>;

// Two banks of R vec4 slots (a: red[0..R), b: red[R..2R)); also the WG chunk sums of the scan, as
// 2R * 4 >= WG flat f32 values.
var<workgroup> red: array<vec4<f32>, 2 * R>;
var<workgroup> group_off: array<f32, 16>;
var<workgroup> state: vec2<u32>;

// The most negative finite f32: the identity of max.
const LOWEST: f32 = -3.40282346638528859812e+38;

// Wellons' triple32: a bijection on u32 with near-ideal avalanche.
fn mix32(x: u32) -> u32 {
  var h = x;
  h ^= h >> 17u;
  h *= 0xed5ad4bbu;
  h ^= h >> 11u;
  h *= 0xac4c1b51u;
  h ^= h >> 15u;
  h *= 0x31848babu;
  h ^= h >> 14u;
  return h;
}

struct Pair {
  a: vec4<f32>,
  b: vec4<f32>,
}

// Lane-wise sums (or maxima, MAX true) of va and of vb over the workgroup, for every thread: a fixed
// expression tree of the per-thread values (deterministic; a sum is monotone in every input). Call
// from uniform control flow.
fn reduce2(va: vec4<f32>, vb: vec4<f32>, lid: u32, MAX: bool) -> Pair {
  let slot = lid % R;
  for (var k = 0u; k < WG / R; k++) {
    if (lid / R == k) {
      if (k == 0u) {
        red[slot] = va;
        red[R + slot] = vb;
      } else {
        red[slot] = select(red[slot] + va, max(red[slot], va), MAX);
        red[R + slot] = select(red[R + slot] + vb, max(red[R + slot], vb), MAX);
      }
    }
    workgroupBarrier();
  }
  for (var s = R / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red[lid] = select(red[lid] + red[lid + s], max(red[lid], red[lid + s]), MAX);
      red[R + lid] = select(
        red[R + lid] + red[R + lid + s],
        max(red[R + lid], red[R + lid + s]),
        MAX,
      );
    }
    workgroupBarrier();
  }
  let r = Pair(red[0], red[R]);
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn sample(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) {
    return;
  }
  let V = p.V;
  let base = row * V;
  let inv_t = p.inv_t;

  // The seed and this call's counter, read once before this workgroup counts itself in rng[2].
  if (lid == 0u) {
    state = vec2<u32>(atomicLoad(&rng[0]), atomicLoad(&rng[1]));
  }

  // 1. Row maximum; flags: a NaN or +inf seen (x), a finite value seen (y).
  var m = LOWEST;
  var flags = vec2<f32>(0.0);
  for (var c = lid; c < V; c += WG) {
    let l = logits[base + c];
    let bits = bitcast<u32>(l) & 0x7fffffffu;
    if (bits > 0x7f800000u || bitcast<u32>(l) == 0x7f800000u) {
      flags.x = 1.0;
    } else if (bits < 0x7f800000u) {
      flags.y = 1.0;
      m = max(m, l);
    }
  }
  let row_max = reduce2(vec4<f32>(m), vec4<f32>(flags, 0.0, 0.0), lid, true);
  m = row_max.a.x;
  let valid = row_max.b.x == 0.0 && row_max.b.y > 0.0;

  // 2. S = M(0).
  var s0 = 0.0;
  for (var c = lid; c < V; c += WG) {
    s0 += exp((logits[base + c] - m) * inv_t);
  }
  let S = reduce2(vec4<f32>(s0, 0.0, 0.0, 0.0), vec4<f32>(0.0), lid, false).a.x;

  // 3. Threshold search on bit patterns: invariant M(lo) >= goal; answer in [lo, hi).
  var lo = 0u;
  if (p.top_p < 1.0) {
    let goal = p.top_p * S;
    var hi = bitcast<u32>(exp((m - m) * inv_t)) + 1u;
    for (var sweep = 0u; sweep < 10u; sweep++) {
      let d = (hi - lo + 7u) / 8u;
      let ua = vec4<u32>(lo + d, lo + 2u * d, lo + 3u * d, lo + 4u * d);
      let ub = vec4<u32>(lo + 5u * d, lo + 6u * d, lo + 7u * d, 0x7f800000u);
      let ta = bitcast<vec4<f32>>(ua);
      let tb = bitcast<vec4<f32>>(ub);
      var sa = vec4<f32>(0.0);
      var sb = vec4<f32>(0.0);
      for (var c = lid; c < V; c += WG) {
        let e = vec4<f32>(exp((logits[base + c] - m) * inv_t));
        sa += select(vec4<f32>(0.0), e, e >= ta);
        sb += select(vec4<f32>(0.0), e, e >= tb);
      }
      // Every thread gets the same sums and updates lo/hi identically.
      let sums = reduce2(sa, sb, lid, false);
      let ma = sums.a;
      let mb = sums.b;
      let ok_a = (ma >= vec4<f32>(goal)) & (ua < vec4<u32>(hi));
      let ok_b = (mb >= vec4<f32>(goal)) & (ub < vec4<u32>(hi));
      // M is monotone, so the passing thresholds are a prefix t_1..t_J; lo = t_J, hi = t_{J+1}.
      let J = dot(select(vec4<u32>(0u), vec4<u32>(1u), ok_a), vec4<u32>(1u)) +
        dot(select(vec4<u32>(0u), vec4<u32>(1u), ok_b), vec4<u32>(1u));
      let new_hi = min(hi, lo + (J + 1u) * d);
      lo = lo + J * d;
      hi = new_hi;
    }
  }
  let tau = bitcast<f32>(lo);

  // 5. Chunk sums of the kept mass, then a two-level sequential scan (monotone prefix sums).
  let C = (V + WG - 1u) / WG;
  let c0 = min(lid * C, V);
  let c1 = min(c0 + C, V);
  var chunk = 0.0;
  for (var c = c0; c < c1; c++) {
    let e = exp((logits[base + c] - m) * inv_t);
    if (e >= tau && e > 0.0) {
      chunk += e;
    }
  }
  red[lid / 4u][lid % 4u] = chunk;
  workgroupBarrier();
  if (lid < WG / GS) {
    var acc = 0.0;
    for (var i = lid * GS; i < (lid + 1u) * GS; i++) {
      acc += red[i / 4u][i % 4u];
      red[i / 4u][i % 4u] = acc;
    }
  }
  workgroupBarrier();
  if (lid == 0u) {
    var acc = 0.0;
    for (var g = 0u; g < WG / GS; g++) {
      group_off[g] = acc;
      acc += red[(g * GS + GS - 1u) / 4u][3u];
    }
  }
  workgroupBarrier();
  // The inclusive prefix P_i = group offset + local prefix; the exclusive one is P_{i-1}.
  let inc = group_off[lid / GS] + red[lid / 4u][lid % 4u];
  var exc = 0.0;
  if (lid > 0u) {
    exc = group_off[(lid - 1u) / GS] + red[(lid - 1u) / 4u][(lid - 1u) % 4u];
  }
  let total = group_off[WG / GS - 1u] + red[(WG - 1u) / 4u][3u];
  let st = state;

  // 4. The uniform and the point x in [0, total).
  let stream = p.seed_offset + row;
  let bits = mix32(mix32(mix32(st.x ^ 0x9e3779b9u) ^ st.y) ^ stream);
  let u = f32(bits >> 8u) * (1.0 / 16777216.0);
  if (!valid) {
    if (lid == 0u) {
      out[row] = NONE;
    }
  } else if (total > 0.0 && total < 3.0e38) {
    let x = min(u * total, bitcast<f32>(bitcast<u32>(total) - 1u));
    if (exc <= x && x < inc) {
      var acc = exc;
      var pick = c1;
      var last = c0;
      for (var c = c0; c < c1; c++) {
        let e = exp((logits[base + c] - m) * inv_t);
        if (e >= tau && e > 0.0) {
          acc += e;
          last = c;
          if (acc > x) {
            pick = c;
            break;
          }
        }
      }
      out[row] = select(pick, last, pick >= c1);
    }
  } else if (lid == 0u) {
    out[row] = 0u;
  }

  // 6. Advance the counter once all rows of this call have read it.
  workgroupBarrier();
  if (lid == 0u) {
    if (atomicAdd(&rng[2], 1u) == p.rows - 1u) {
      atomicStore(&rng[2], 0u);
      atomicAdd(&rng[1], 1u);
    }
  }
}
