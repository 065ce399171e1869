// Activations quantised to llama.cpp's Q8_K, the form its dot products with Q4_K / Q5_K weights take
// them in: x [rows, K] f32 (K a multiple of 256) -> xq [rows, K / 4] (four int8 values a word, value
// k of a row in byte k % 4 of word k / 4) and xd [rows * K / 256] (each block's d). In a block of
// 256 values: max = the value of largest magnitude (the first of equals), iscale = -127 / max,
// q = min(127, round(iscale * x)) (half to even) and d = 1 / iscale; a block of zeros has q = 0 and
// d = 0. The same rounding as round_activations.wgsl's q8_k, kept as integers.
//
// One workgroup of 64 threads per block, four values a thread; 2-D grid of workgroups (linear index
// wid.x + wid.y * nwg.x).
struct Params {
  // Blocks in all rows (rows * K / 256).
  blocks: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> xv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> xq: array<u32>;
@group(0) @binding(4) var<storage, read_write> xd: array<f32>;

// The block's largest magnitude (as bits: non-negative floats order as their bits) and the first
// index holding it.
var<workgroup> amax_bits: atomic<u32>;
var<workgroup> amax_first: atomic<u32>;

@compute @workgroup_size(64)
fn main(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let blk = wid.x + wid.y * nwg.x;
  if (blk >= p.blocks) {
    return;
  }
  if (lid == 0u) {
    atomicStore(&amax_bits, 0u);
    atomicStore(&amax_first, 256u);
  }
  workgroupBarrier();
  let v = xv[blk * 64u + lid];
  let bits = bitcast<vec4<u32>>(abs(v));
  atomicMax(&amax_bits, max(max(bits.x, bits.y), max(bits.z, bits.w)));
  workgroupBarrier();
  let mb = atomicLoad(&amax_bits);
  var first = 256u;
  for (var k = 3i; k >= 0i; k--) {
    first = select(first, 4u * lid + u32(k), bits[k] == mb);
  }
  atomicMin(&amax_first, first);
  workgroupBarrier();
  let vmax = x[blk * 256u + min(atomicLoad(&amax_first), 255u)];
  var q = vec4<i32>(0);
  var d = 0.0;
  if (mb != 0u) {
    let iscale = -127.0 / vmax;
    q = vec4<i32>(min(vec4<f32>(127.0), round(iscale * v)));
    d = 1.0 / iscale;
  }
  xq[blk * 64u + lid] = pack4xI8(q);
  if (lid == 0u) {
    xd[blk] = d;
  }
}
