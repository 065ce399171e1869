// Row-wise argmax: out[r] = index of the largest of the p.cols values of row r (u32), the lowest
// index on ties; or NONE (0xffffffff) when the row has no finite maximum: a NaN, a +inf, or only
// -inf values (-inf alone is a masked entry, never chosen). The reduction ranks NaN above every
// number, so the winning value itself tells: the row is valid exactly when it is finite (no extra
// pass). One workgroup per row (2-D grid), WG threads (a power of two, up to 1024 on GPUs) scan
// strided columns, then a tree reduction.
struct Params {
  rows: u32,
  cols: u32,
}

override WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

// NaN test on the bits (x != x may be folded away by fast-math compilers).
fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Whether (av, ai) ranks before (bv, bi): NaN first, then larger value, then lower index; NONE last.
fn before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
  if (ai == NONE) {
    return false;
  }
  if (bi == NONE) {
    return true;
  }
  let an = is_nan(av);
  let bn = is_nan(bv);
  if (an || bn) {
    return an && (!bn || ai < bi);
  }
  return av > bv || (av == bv && ai < bi);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) {
    return;
  }
  let base = r * p.cols;
  var bv = 0.0;
  var bi = NONE;
  // Four columns per thread per step, loaded before they are compared: four loads in flight (a
  // vocabulary of 150k is a long scan for one workgroup; its speed is load latency).
  let last = p.cols - 1u;
  for (var c0 = lid; c0 < p.cols; c0 += 4u * WG) {
    var v: array<f32, 4>;
    for (var u = 0u; u < 4u; u++) {
      v[u] = x[base + min(c0 + u * WG, last)];
    }
    for (var u = 0u; u < 4u; u++) {
      let c = c0 + u * WG;
      if (c < p.cols && before(v[u], c, bv, bi)) {
        bv = v[u];
        bi = c;
      }
    }
  }
  red_v[lid] = bv;
  red_i[lid] = bi;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st /= 2u) {
    if (lid < st && before(red_v[lid + st], red_i[lid + st], red_v[lid], red_i[lid])) {
      red_v[lid] = red_v[lid + st];
      red_i[lid] = red_i[lid + st];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    // Finite exactly when the exponent bits are not all ones (not NaN, not +-inf).
    let finite = (bitcast<u32>(red_v[0]) & 0x7f800000u) != 0x7f800000u;
    out[r] = select(NONE, red_i[0], finite);
  }
}
